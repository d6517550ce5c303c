"""API throughput: Parquet, CSV and JSON uploads to a local Uvicorn beside the in-process
persisting scorer, on the same rows, in one run.

    .venv/bin/python benchmarks/bench_api.py [--rows 1000000]      # after ./setup.sh

The rows are bench_scoring.py's replicated file (``benchmarks/data/flights_<k>x.parquet``,
1,010,328 rows for 1M); the same rows are written once as CSV and as JSON
(``dataframe_split``, timestamps as ISO-8601 text) beside it. Then, each against a fresh,
empty lake so every row is stored:

1. **in-process**: ``file_scoring.score_file(..., persist=True)`` in a fresh process
   (bench_scoring's ``e2e`` child; model loading excluded);
2. **API**: ``uvicorn model_deploy:app`` started per run (start-up and model loading
   excluded), one ``POST /predict`` streaming the file from disk, the answer (Parquet, or
   JSON for one run) streamed back and counted; timed from the first byte sent to the last
   byte received. The server's peak RSS (VmHWM) is read after the request.

Scores of every API answer are compared with the in-process output (max |diff|). Results
go to stdout and ``benchmarks/results_api.md``; target: Parquet upload >= 0.6x in-process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import polars as pl
from bench_scoring import DATA, REPO, context_file, machine_info, run_child, scoring_file

RESULTS = REPO / "benchmarks" / "results_api.md"
PARQUET = "application/vnd.apache.parquet"
SRC = REPO / "mlops_pipeline" / "src"


def same_rows_as(parquet: Path) -> tuple[Path, Path]:
    """The rows of ``parquet`` as CSV and as JSON (dataframe_split), built once."""
    csv_path, json_path = parquet.with_suffix(".csv"), parquet.with_suffix(".json")
    if not csv_path.exists() or csv_path.stat().st_mtime < parquet.stat().st_mtime:
        frame = pl.read_parquet(parquet)
        frame.write_csv(
            csv_path.with_suffix(".csv.tmp"), null_value="NA", datetime_format="%Y-%m-%dT%H:%M:%SZ"
        )
        os.replace(csv_path.with_suffix(".csv.tmp"), csv_path)
    if not json_path.exists() or json_path.stat().st_mtime < parquet.stat().st_mtime:
        frame = pl.read_parquet(parquet).with_columns(pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        temp = json_path.with_suffix(".json.tmp")
        with temp.open("w") as out:
            out.write(json.dumps({"dataframe_split": {"columns": frame.columns, "data": []}})[:-3])
            for start in range(0, frame.height, 50_000):
                rows = frame.slice(start, 50_000).rows()
                out.write(("," if start else "") + ",".join(json.dumps(list(r)) for r in rows))
            out.write("]}}")
        os.replace(temp, json_path)
    return csv_path, json_path


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_server(lake: Path, port: int, log: Path, context: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "MLOPS_LAKE_DIR": str(lake),
        "MLOPS_DAY_CONTEXT_PATH": str(context),
        "MLOPS_API_MAX_JSON_BYTES": str(4 << 30),
        "MLOPS_API_MAX_BODY_BYTES": str(4 << 30),
    }
    command = [sys.executable, "-m", "uvicorn", "model_deploy:app", "--port", str(port), "--no-access-log"]
    server = subprocess.Popen(command, cwd=SRC, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"uvicorn exited; see {log}")
        time.sleep(0.3)
    server.kill()
    raise RuntimeError(f"uvicorn not ready in 300 s; see {log}")


def upload(path: Path, content_type: str, accept: str, port: int, folder: Path, context: Path) -> dict:
    """One POST /predict of ``path`` to a fresh server; the answer is kept as Parquet for the comparison."""
    lake = Path(tempfile.mkdtemp(prefix="bench-api-lake-", dir=folder))
    server = start_server(lake, port, folder / "uvicorn.log", context)
    try:
        started = time.perf_counter()
        received = 0
        answer = io.BytesIO()
        with path.open("rb") as body, httpx.stream(
            "POST", f"http://127.0.0.1:{port}/predict", content=body,
            headers={"Content-Type": content_type, "Accept": accept}, timeout=1800,
        ) as response:  # fmt: skip
            for block in response.iter_bytes(1 << 20):
                received += len(block)
                answer.write(block)
        seconds = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{path.name}: {response.status_code} {answer.getvalue()[:500]!r}")
        rss = peak_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(lake, ignore_errors=True)
    answer.seek(0)
    scores = pl.read_parquet(answer) if accept == PARQUET else pl.DataFrame(json.load(answer)["predictions"])
    return {
        "seconds": seconds,
        "bytes_in": path.stat().st_size,
        "bytes_out": received,
        "rss": rss,
        "scores": scores,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--port", type=int, default=18790)
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    parquet, _ = scoring_file(args.rows)
    # the file's own day context, as bench_scoring reads it: the warehouse holds its schedule
    context = context_file(parquet)
    csv_path, json_path = same_rows_as(parquet)
    folder = Path(tempfile.mkdtemp(prefix="bench-api-", dir=DATA))
    try:
        inproc_out = folder / "in_process.parquet"
        inproc = run_child("e2e", str(parquet), str(inproc_out), "fast", "persist", context=context)
        reference = pl.read_parquet(inproc_out)
        runs = {
            "API, Parquet upload, Parquet answer": (parquet, PARQUET, PARQUET),
            "API, CSV upload, Parquet answer": (csv_path, "text/csv", PARQUET),
            "API, JSON upload (dataframe_split), Parquet answer": (json_path, "application/json", PARQUET),
            "API, Parquet upload, JSON answer": (parquet, PARQUET, "application/json"),
        }
        results = {}
        for label, (path, content_type, accept) in runs.items():
            print(f"[bench_api] {label} ...", flush=True)
            result = upload(path, content_type, accept, args.port, folder, context)
            answer = result.pop("scores")
            assert answer.height == reference.height
            result["max_diff"] = (answer["score"] - reference["score"]).abs().max()
            results[label] = result
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    report = render(args, parquet, inproc, results, load)
    print(report)
    RESULTS.write_text(report)


def render(args, parquet: Path, inproc: dict, results: dict, load: float) -> str:
    rows = inproc["rows"]
    base = rows / inproc["seconds"]
    lines = [
        "# API throughput (last run)",
        "",
        f"`.venv/bin/python benchmarks/bench_api.py --rows {args.rows}` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; "
        f"input `{parquet.relative_to(REPO)}` ({rows:,} rows); load average {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end; {machine_info(load).get('cpu', '')}.",
        "",
        "| run | rows/s | x in-process | seconds | MB in | MB out | server peak RSS MiB | max abs diff |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| in-process `score_file`, persisting (lleaves) | {base:,.0f} | 1.00 | {inproc['seconds']:.1f} | "
        f"{parquet.stat().st_size / 1e6:.0f} | — | {inproc['peak_rss_mib']:.0f} | — |",
    ]
    for label, r in results.items():
        rate = rows / r["seconds"]
        lines.append(
            f"| {label} | {rate:,.0f} | {rate / base:.2f} | {r['seconds']:.1f} | {r['bytes_in'] / 1e6:.0f} | "
            f"{r['bytes_out'] / 1e6:.0f} | {r['rss']:.0f} | {r['max_diff']:.1g} |"
        )
    parquet_ratio = rows / results["API, Parquet upload, Parquet answer"]["seconds"] / base
    verdict = "met" if parquet_ratio >= 0.6 else "not met"
    lines += ["", f"Target: Parquet upload >= 0.6x in-process: **{verdict}** ({parquet_ratio:.2f}x).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
