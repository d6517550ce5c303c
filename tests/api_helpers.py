"""Helpers shared by the API tests: batches in every format, a Uvicorn server in a subprocess."""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import polars as pl

from conftest import SRC_DIR
from data_contract import SCORING_INPUT_COLUMNS

PARQUET = "application/vnd.apache.parquet"


def days(raw: pl.DataFrame, month: int, first: int, last: int) -> pl.DataFrame:
    """Whole flight dates of the real table, scoring-input columns only, date-sorted."""
    return (
        raw.filter(pl.col("month") == month, pl.col("day").is_between(first, last))
        .select(SCORING_INPUT_COLUMNS)
        .sort("month", "day", maintain_order=True)
    )


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


def csv_bytes(frame: pl.DataFrame) -> bytes:
    return frame.write_csv(null_value="NA").encode()


def _json_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """time_hour as ISO-8601 text (JSON has no timestamps)."""
    return frame.with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))


def split_json(frame: pl.DataFrame) -> bytes:
    ready = _json_ready(frame)
    return json.dumps({"dataframe_split": {"columns": ready.columns, "data": ready.rows()}}).encode()


def records_json(frame: pl.DataFrame) -> bytes:
    return json.dumps({"dataframe_records": _json_ready(frame).to_dicts()}).encode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``uvicorn model_deploy:app`` in a subprocess, with the test's settings (env)."""

    def __init__(self, env: dict[str, str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env, "PYTHONPATH": str(SRC_DIR)}
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> Server:
        command = [
            sys.executable,
            "-m",
            "uvicorn",
            "model_deploy:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(command, env=self.env, cwd=SRC_DIR, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"uvicorn exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"uvicorn was not ready within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
