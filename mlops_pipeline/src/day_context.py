"""The day context: what the warehouse knows about each flight date, for scoring any batch.

A flight's day features (departures at its origin in its hour and in its day, its carrier's
departures there, its aircraft's legs that day, the day's weather at its origin and across
New York) are computed over the *day*, not over the batch that carries the flight. So a
batch is scored inside its dates' context (``ft_engineering.in_day_context``): the flights
the warehouse holds for those dates, where a flight the batch carries replaces its stored
row (a changed departure time, another aircraft) and a flight the warehouse does not know is
added to its day. A flight then scores the same alone, in a random subset, in its whole day
and in the production run. A date the warehouse does not hold is scored from the batch
alone, and every scored row says which it was (``context``: ``warehouse`` or ``batch_only``).

The context is precomputed once per warehouse load into one Parquet file (the lake's
``day_context/day_context.parquet``): for every stored flight, sorted by date, the few
columns the day features read (``ft_engineering.CONTEXT_COLUMNS``, as the scoring contract
normalises them) and the flight's ``row_digest``. A batch reads only its own dates (row
groups of about two weeks; Parquet statistics skip the rest). The file carries the SHA-256
of the load it was built from, so :func:`refresh` rebuilds it only after a new load.

Beside its rows the file holds, per date, the number of stored flights and an order-free
fingerprint of their flight keys (:func:`key_fingerprints`). A batch that carries a date
whole (the same flights, perhaps with changed values: the daily run, a sorted file) has the
same count and fingerprint, and would replace every stored flight of that date, so its rows
are not read at all; only the dates a batch holds in part are read and merged.

The row digests make the context part of a score's identity: a date's *context digest* is
an order-independent digest of the digests of the flights its context held (the batch's
and the stored ones it did not replace). Scoring the same flights against the same day
gives the same digest, so nothing is stored twice; a day that changed (one flight's new
departure time moves its neighbours' congestion) is a visible re-score of its flights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

import ft_engineering as fe
from atomic import AtomicFile
from data_contract import CONTRACT_DTYPES, FLIGHT_KEY, SCORING_INPUT_COLUMNS, validate_scoring_input
from digests import DIGEST_COLUMN, group_digests, row_digests
from settings import get_settings
from warehouse import connect

logger = logging.getLogger(__name__)

CONTEXT_FILE = "day_context.parquet"
STAMP_KEY = b"day_context_load_sha256"
ROW_GROUP_ROWS = 16_384  # about two weeks of 2013's flights: a batch of one day reads ~1/25 of the file
CONTEXT_DIGEST = "context_digest"
DAYS_KEY = b"day_context_days"  # per date: stored flights and their key fingerprint (JSON)
KEY_HASH_SEED = 2013


def context_path() -> Path:
    settings = get_settings()
    return settings.day_context_path or settings.lake_dir / "day_context" / CONTEXT_FILE


def context_rows(valid: pl.DataFrame) -> pl.DataFrame:
    """The context rows of validated scoring-input rows: ``flight_date``, the context
    columns and each flight's row digest, sorted by date (what the file stores)."""
    return (
        fe.context_of(valid)
        .with_columns(pl.Series(DIGEST_COLUMN, row_digests(valid), dtype=pl.UInt64))
        .sort("flight_date", maintain_order=True)
    )


def key_fingerprints(valid: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Per flight date of validated rows: ``flights`` and ``key_sum``, the wrapping 64-bit
    sum of their flight keys' hashes. Two sets of distinct flight keys of a date agree in
    both only if they are the same set (up to a 2**-64 chance). Polars' hash is stable within
    one Polars version only, so the file records the version its fingerprints came from."""
    return (
        valid.lazy()
        .group_by(pl.date("year", "month", "day").alias("flight_date"))
        .agg(
            pl.len().cast(pl.Int64).alias("flights"),
            pl.struct(list(FLIGHT_KEY)).hash(KEY_HASH_SEED).sum().alias("key_sum"),
        )
        .collect()
    )


def write_context(valid: pl.DataFrame | Iterable[pl.DataFrame], path: Path, stamp: str) -> int:
    """Write the context file from validated scoring-input rows, whole or in parts (each part
    is sorted into the file as it comes: give them in date order); returns its rows."""
    parts = [valid] if isinstance(valid, pl.DataFrame) else valid
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, days, writer = 0, [], None
    with AtomicFile(path) as temp:
        try:
            for valid in parts:
                table = context_rows(valid).to_arrow()
                if writer is None:
                    schema = table.schema.with_metadata({STAMP_KEY: stamp.encode()})
                    writer = pq.ParquetWriter(temp, schema, compression="lz4")
                writer.write_table(table.replace_schema_metadata(writer.schema.metadata), ROW_GROUP_ROWS)
                rows += table.num_rows
                days.append(key_fingerprints(valid))
            if writer is not None:
                summed = pl.concat(days).group_by("flight_date").agg(pl.col("flights", "key_sum").sum())
                writer.add_key_value_metadata({DAYS_KEY: _days_json(summed)})
        finally:
            if writer is not None:
                writer.close()
    return rows


def _days_json(days: pl.DataFrame) -> bytes:
    days = days.sort("flight_date")
    return json.dumps(
        {
            "polars": pl.__version__,
            "flight_date": days.get_column("flight_date").cast(pl.Int32).to_list(),  # days since 1970
            "flights": days.get_column("flights").to_list(),
            "key_sum": days.get_column("key_sum").to_list(),
        }
    ).encode()


def stored_days(path: Path) -> pl.DataFrame:
    """``flight_date``, ``flights`` and ``key_sum`` of every date the file holds; ``key_sum``
    is null when the fingerprints cannot be compared (another Polars version wrote them)."""
    meta = json.loads((pq.read_metadata(path).metadata or {}).get(DAYS_KEY, b"null"))
    if meta is None:  # a file from before the fingerprints: its dates, never taken as whole
        dates = pl.scan_parquet(path).select(pl.col("flight_date").unique()).collect().to_series()
        return pl.DataFrame({"flight_date": dates, "flights": None, "key_sum": None}).cast(
            {"flights": pl.Int64, "key_sum": pl.UInt64}
        )
    comparable = meta["polars"] == pl.__version__
    return pl.DataFrame(
        {
            "flight_date": pl.Series(meta["flight_date"], dtype=pl.Int32).cast(pl.Date),
            "flights": pl.Series(meta["flights"], dtype=pl.Int64),
            "key_sum": pl.Series(
                meta["key_sum"] if comparable else [None] * len(meta["flights"]), dtype=pl.UInt64
            ),
        }
    )


def is_current(path: Path, stamp: str) -> bool:
    """The file exists, was built from the load ``stamp`` and has its per-date fingerprints."""
    return file_stamp(path) == stamp and DAYS_KEY in (pq.read_metadata(path).metadata or {})


def file_stamp(path: Path) -> str | None:
    if not path.exists():
        return None
    metadata = pq.read_schema(path).metadata or {}
    return metadata.get(STAMP_KEY, b"").decode() or None


@dataclass(frozen=True)
class Refreshed:
    path: Path
    rows: int
    dates: int
    rebuilt: bool  # False: the file was already built from the warehouse's latest load


def refresh(warehouse_path: Path | None = None) -> Refreshed:
    """Build the context file from the warehouse's raw table unless it already matches the
    latest load (the load audit's SHA-256). Warehouse rows the scoring contract refuses are
    a ContractViolation here, as they would be in any batch."""
    settings = get_settings()
    path = context_path()
    with connect(warehouse_path, read_only=True) as con:
        latest = con.sql(
            f"SELECT sha256 FROM {settings.load_audit_table} ORDER BY loaded_at DESC LIMIT 1"
        ).fetchall()
        stamp = latest[0][0] if latest else "unaudited"
        if is_current(path, stamp):
            return Refreshed(path, pq.read_metadata(path).num_rows, stored_days(path).height, False)
        raw = con.sql(f"SELECT {', '.join(SCORING_INPUT_COLUMNS)} FROM {settings.raw_table}").to_arrow_table()
    valid = validate_scoring_input(pl.from_arrow(raw))
    rows = write_context(valid, path, stamp)
    dates = valid.select(pl.date("year", "month", "day").n_unique()).item()
    logger.info("day context: %s flights of %s dates -> %s", rows, dates, path)
    return Refreshed(path, rows, dates, True)


@dataclass(frozen=True)
class BatchContext:
    """What a batch is scored in: ``rows``, the stored flights of the dates it holds in part,
    and ``known``, every batch date the file holds (held whole or in part)."""

    rows: pl.DataFrame
    known: pl.Series


class DayContext:
    """Reads the context of a batch's dates from the context file (re-read when rebuilt)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or context_path()
        self._days: tuple[tuple[int, int, int], pl.DataFrame] | None = None

    def days(self) -> pl.DataFrame | None:
        """:func:`stored_days` of the file (None when it is missing), read once per file version."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._days is None or self._days[0] != version:
            self._days = (version, stored_days(self.path))
        return self._days[1]

    def for_batch(self, valid: pl.DataFrame) -> BatchContext:
        """The context of a validated batch: a date it holds whole (the stored count and key
        fingerprint) needs none of its stored rows; the dates it holds in part are read."""
        days = self.days()
        if days is None:
            return BatchContext(empty_context(), pl.Series("flight_date", [], dtype=pl.Date))
        batch = key_fingerprints(valid).join(days, on="flight_date", how="inner", suffix="_stored")
        whole = (pl.col("flights") == pl.col("flights_stored")) & (
            pl.col("key_sum") == pl.col("key_sum_stored")
        )
        partial = batch.filter(~whole.fill_null(False)).get_column("flight_date")
        rows = self.rows_for(partial) if partial.len() else empty_context()
        return BatchContext(rows, batch.get_column("flight_date"))

    def rows_for(self, dates: pl.Series) -> pl.DataFrame:
        """The stored flights of ``dates`` (distinct dates; empty, with the file's columns, when
        the file is missing or holds none of them)."""
        if not self.path.exists():
            return empty_context()
        return pl.scan_parquet(self.path).filter(pl.col("flight_date").is_in(dates.implode())).collect()


def empty_context() -> pl.DataFrame:
    schema = {c: CONTRACT_DTYPES[c] for c in fe.CONTEXT_COLUMNS}
    return pl.DataFrame(schema={**schema, "flight_date": pl.Date, DIGEST_COLUMN: pl.UInt64})


def context_digests(merged: pl.DataFrame) -> np.ndarray:
    """Each batch row's context digest: the digest of every flight its date's context held
    (``merged`` is ``in_day_context``'s output with every row's ``row_digest``)."""
    dates = merged.select(pl.date("year", "month", "day").to_physical()).to_series().to_numpy()
    per_row = group_digests(dates, merged.get_column(DIGEST_COLUMN).to_numpy())
    return per_row[merged.get_column(fe.IN_BATCH).to_numpy()]
