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

The row digests make the context part of a score's identity: a date's *context digest* is
an order-independent digest of the digests of the flights its context held (the batch's
and the stored ones it did not replace). Scoring the same flights against the same day
gives the same digest, so nothing is stored twice; a day that changed (one flight's new
departure time moves its neighbours' congestion) is a visible re-score of its flights.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

import ft_engineering as fe
from atomic import AtomicFile
from data_contract import CONTRACT_DTYPES, SCORING_INPUT_COLUMNS, validate_scoring_input
from digests import DIGEST_COLUMN, group_digests, row_digests
from settings import get_settings
from warehouse import connect

logger = logging.getLogger(__name__)

CONTEXT_FILE = "day_context.parquet"
STAMP_KEY = b"day_context_load_sha256"
ROW_GROUP_ROWS = 16_384  # about two weeks of 2013's flights: a batch of one day reads ~1/25 of the file
CONTEXT_DIGEST = "context_digest"


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


def write_context(valid: pl.DataFrame, path: Path, stamp: str) -> int:
    """Write the context file for ``valid`` (validated scoring-input rows); returns its rows."""
    table = context_rows(valid).to_arrow()
    table = table.replace_schema_metadata({STAMP_KEY: stamp.encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path) as temp:
        pq.write_table(table, temp, row_group_size=ROW_GROUP_ROWS, compression="lz4")
    return table.num_rows


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
        if file_stamp(path) == stamp:
            meta = pq.read_metadata(path)
            dates = pl.scan_parquet(path).select(pl.col("flight_date").n_unique()).collect().item()
            return Refreshed(path, meta.num_rows, dates, False)
        raw = con.sql(f"SELECT {', '.join(SCORING_INPUT_COLUMNS)} FROM {settings.raw_table}").to_arrow_table()
    valid = validate_scoring_input(pl.from_arrow(raw))
    rows = write_context(valid, path, stamp)
    dates = valid.select(pl.date("year", "month", "day").n_unique()).item()
    logger.info("day context: %s flights of %s dates -> %s", rows, dates, path)
    return Refreshed(path, rows, dates, True)


class DayContext:
    """Reads the context of a batch's dates from the context file (re-opened when rebuilt)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or context_path()

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
