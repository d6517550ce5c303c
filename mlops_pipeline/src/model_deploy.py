"""Scoring: one score function, the streaming batch scorer and the daily production run.

Every path that scores flights (this module's CLI, the main job's daily batches, Ray
Data workers, and the API) calls :func:`score`, which

1. validates the batch against the scoring-input contract (a ContractViolation names
   column, rule and row count; leakage and extra columns are dropped),
2. builds ``ft_engineering.features`` with the feature state saved in the model artifact,
3. predicts with the artifact's LightGBM model (or its verified compiled twin, see
   ``fast_predict``) and applies the artifact's threshold,

and returns the caller's flight key, ``score``, ``label``, ``model_version`` and the
``unknown_<column>`` flags (plus the model's features when persisting, for monitoring).

The scored table is the lake dataset ``scored``: one Parquet file per batch, written
exactly once (lake.py), exposed in ``warehouse.duckdb`` as the view ``scored``. The
flights' outcomes go to the dataset/view ``actuals`` and join on the flight key.

    python mlops_pipeline/src/model_deploy.py score INPUT.parquet OUTPUT.parquet [--engine local|ray]
    python mlops_pipeline/src/model_deploy.py production      # score Sep-Dec as daily batches
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from tqdm.auto import tqdm

import ft_engineering as fe
import lake
from data_contract import (
    CONTRACT_DTYPES,
    FLIGHT_KEY,
    SCORING_INPUT_COLUMNS,
    ContractViolation,
    validate_scoring_input,
)
from model_artifact import ArtifactError, ModelArtifact, load_artifact
from settings import get_settings
from warehouse import connect, file_sha256

logger = logging.getLogger(__name__)

SCORED_DATASET = "scored"
ACTUALS_DATASET = "actuals"
UNKNOWN_FLAGS = [f"unknown_{c}" for c in fe.CATEGORICAL_FEATURES]
KEY_COLUMNS = list(FLIGHT_KEY)
RESPONSE_COLUMNS = [*KEY_COLUMNS, "score", "label", "model_version", *UNKNOWN_FLAGS]
DEFAULT_BATCH_ROWS = 250_000

Predictor = Callable[[np.ndarray], np.ndarray]


class InputError(ValueError):
    """An input file the scorer cannot read: missing, of another format, or not parseable."""


# --------------------------------------------------------------------------- the score function


@dataclass
class Scorer:
    """A loaded model artifact and the predictor used for it (loaded once, reused per batch)."""

    artifact: ModelArtifact
    predict: Predictor
    backend: str = "lightgbm"
    state: fe.FeatureState = field(init=False)

    def __post_init__(self) -> None:
        self.state = self.artifact.feature_state
        if self.state.feature_version != fe.FEATURE_VERSION or self.state.features != fe.FEATURES:
            raise ArtifactError(
                f"model {self.artifact.version} was trained with feature definition v{self.state.feature_version} "
                f"({len(self.state.features)} features); this code builds v{fe.FEATURE_VERSION} "
                f"({len(fe.FEATURES)} features): retrain it (model_training_evaluation.py)"
            )

    @classmethod
    def load(cls, version: str | None = None, *, fast: bool = True) -> Scorer:
        artifact = load_artifact(version)
        threads = get_settings().n_threads
        if fast:
            from fast_predict import compiled_predictor

            compiled = compiled_predictor(artifact)
            if compiled is not None:
                return cls(artifact, compiled, "lleaves")
        return cls(artifact, lambda X: artifact.booster.predict(X, num_threads=threads), "lightgbm")


@dataclass
class Prepared:
    """A validated batch with its features and model matrix, ready to predict."""

    keys: pl.DataFrame  # the flight key as the caller sent it
    engineered: pl.DataFrame  # flight_date, the model's features (codes), the unknown flags
    matrix: np.ndarray
    with_features: bool


def prepare(
    batch: pa.Table | pl.DataFrame | pl.LazyFrame, scorer: Scorer, *, with_features: bool
) -> Prepared:
    """Steps 1 and 2 of :func:`score`: the contract, the features, the model's matrix."""
    frame = pl.from_arrow(batch) if isinstance(batch, pa.Table) else batch
    valid = validate_scoring_input(frame)
    # only what the response and the scored table use: the batch's other columns (strings
    # among them) are then never carried through the feature joins
    engineered = fe.collect(
        fe.features(valid.lazy(), scorer.state).select("flight_date", *fe.FEATURES, *UNKNOWN_FLAGS)
    )
    return Prepared(valid.select(KEY_COLUMNS), engineered, fe.to_matrix(engineered), with_features)


def finish(prepared: Prepared, scorer: Scorer) -> pl.DataFrame:
    """Step 3 of :func:`score`: predict, apply the threshold, assemble the response."""
    scores = pl.Series(
        "score", scorer.predict(prepared.matrix) if prepared.matrix.shape[0] else [], dtype=pl.Float64
    )
    result = prepared.engineered.with_columns(
        scores,
        (scores >= scorer.artifact.threshold).cast(pl.Int8).alias("label"),
        pl.lit(scorer.artifact.version, dtype=pl.String).alias("model_version"),
    )
    # the key columns as the caller sent them, not the model's category codes
    if prepared.with_features:
        features = [c for c in fe.FEATURES if c not in KEY_COLUMNS]
        kept = ["flight_date", *features, *UNKNOWN_FLAGS, "score", "label", "model_version"]
    else:
        kept = RESPONSE_COLUMNS[len(KEY_COLUMNS) :]
    return pl.concat([prepared.keys, result.select(kept)], how="horizontal")


def score(
    batch: pa.Table | pl.DataFrame | pl.LazyFrame, scorer: Scorer, *, with_features: bool = False
) -> pl.DataFrame:
    """Score a batch of scoring-input rows (see the module docstring).

    With ``with_features`` the result also holds ``flight_date`` and the model's features
    (as the model saw them), which is what the scored table stores for monitoring.
    """
    return finish(prepare(batch, scorer, with_features=with_features), scorer)


def persist_scored(batch_id: str, scored: pl.DataFrame) -> lake.WriteResult:
    """Append one scored batch to the scored table, exactly once (see lake.write_batch)."""
    table = scored.with_columns(
        pl.lit(batch_id).alias("batch_id"),
        pl.lit(datetime.now(UTC).replace(tzinfo=None)).cast(pl.Datetime("us")).alias("scored_at"),
    ).to_arrow()
    return lake.write_batch(SCORED_DATASET, batch_id, table)


def stored_batch(batch_id: str) -> pl.DataFrame | None:
    """The rows stored under ``batch_id`` (as ``score(..., with_features=True)`` returned
    them), or None when no such batch is stored."""
    if not lake.has_batch(SCORED_DATASET, batch_id):
        return None
    return lake.read_dataset(SCORED_DATASET, only=[batch_id]).drop("batch_id", "scored_at").collect()


def finish_and_persist(prepared: Prepared, scorer: Scorer, batch_id: str) -> tuple[pl.DataFrame, bool]:
    scored = finish(prepared, scorer)
    return scored, persist_scored(batch_id, scored).created


def score_and_persist(batch, scorer: Scorer, batch_id: str) -> tuple[pl.DataFrame, bool]:
    """Score a batch and store it under ``batch_id``; a batch id already stored is not scored
    again (its stored rows are returned), so re-sending a batch never duplicates rows.
    Returns (scored rows with features, whether this call stored them)."""
    stored = stored_batch(batch_id)
    if stored is not None:
        return stored, False
    return finish_and_persist(prepare(batch, scorer, with_features=True), scorer, batch_id)


# --------------------------------------------------------------------------- streaming batch scorer


def csv_convert_options(include: list[str] | None = None) -> pacsv.ConvertOptions:
    """Read CSV columns as the contract types, ``NA`` and empty as null (text columns too);
    ``time_hour`` stays text for the contract to parse. ``include``: read only these columns."""
    arrow_types = (
        pl.DataFrame(schema={c: CONTRACT_DTYPES[c] for c in SCORING_INPUT_COLUMNS}).to_arrow().schema
    )
    return pacsv.ConvertOptions(
        column_types={f.name: f.type for f in arrow_types if f.name != "time_hour"},
        null_values=["NA", ""],
        strings_can_be_null=True,
        include_columns=include or [],
    )


def input_format(path: Path) -> str:
    """The input file's format, ``.parquet`` or ``.csv`` (by its suffix); another suffix or a
    missing file is an InputError. Both engines (this module and ray_scoring) ask here."""
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise InputError(f"{path.name}: unsupported input format {suffix!r}; use .parquet or .csv")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return suffix


def read_batches(path: Path, batch_rows: int) -> tuple[Iterator[pl.DataFrame], int | None]:
    """Stream a Parquet or CSV file as frames of at most ``batch_rows`` rows (CSV: of its
    16 MiB blocks); returns (frames, total rows if known). Only the scoring-input columns
    are read. Parquet is read by Polars, one row range at a time: it decodes a quarter of
    the CPU time pyarrow's ``iter_batches`` takes, and each range reads only its row groups."""
    if input_format(path) == ".parquet":
        try:
            metadata = pq.read_metadata(path)
        except (pa.ArrowException, OSError) as exc:
            raise InputError(f"{path.name}: not a readable Parquet file ({exc})") from None
        present = set(metadata.schema.to_arrow_schema().names)
        scan = pl.scan_parquet(path).select(c for c in SCORING_INPUT_COLUMNS if c in present)
        return _parquet_frames(path, scan, metadata.num_rows, batch_rows), metadata.num_rows
    return _csv_frames(path), None


def _parquet_frames(path: Path, scan: pl.LazyFrame, total: int, batch_rows: int) -> Iterator[pl.DataFrame]:
    for start in range(0, total, batch_rows):
        try:
            frame = scan.slice(start, batch_rows).collect()
        except pl.exceptions.PolarsError as exc:  # a damaged page: say where, not what it held
            reason = str(exc).splitlines()[0][:200]
            raise InputError(
                f"{path.name}: rows {start:,} to {start + batch_rows:,} cannot be read ({reason})"
            ) from None
        yield frame


def _csv_frames(path: Path) -> Iterator[pl.DataFrame]:
    try:
        reader = pacsv.open_csv(
            path, read_options=pacsv.ReadOptions(block_size=16 << 20), convert_options=csv_convert_options()
        )
        for batch in reader:
            if batch.num_rows:
                yield pl.from_arrow(batch)
    except pa.ArrowInvalid as exc:
        raise InputError(_csv_error(path, exc)) from None


def _csv_error(path: Path, exc: pa.ArrowInvalid) -> str:
    """pyarrow's CSV error, without the offending value (client data is never echoed)."""
    found = re.match(r"In CSV column #(\d+): CSV conversion error to (\w+)", str(exc))
    if found is None:
        return f"{path.name}: not a readable CSV file ({str(exc).splitlines()[0][:200]})"
    with path.open(newline="") as handle:
        header = next(csv.reader(handle), [])
    index = int(found.group(1))
    column = header[index] if index < len(header) else f"#{index}"
    return (
        f"{path.name}: column '{column}' holds a value that is not {found.group(2)} "
        f"(CSV type conversion failed; rule 'dtype({CONTRACT_DTYPES[column]})')"
        if column in CONTRACT_DTYPES
        else f"{path.name}: column '{column}' holds a value that is not {found.group(2)}"
    )


DAY_COLUMNS = ("year", "month", "day")


@dataclass
class DayChunks:
    """Re-cut a stream of frames into chunks of whole flight dates (>= batch_rows rows).

    The features are exact only when a chunk holds every flight of its dates
    (``ft_engineering.BATCH_RULE``). For input sorted by date this holds by construction;
    for unsorted input a date that reappears after it was scored is counted in
    ``split_dates`` and reported, since its congestion features saw a partial schedule.

    The cut compares year/month/day as sent, before validation: a null, a text or an
    impossible date (month 13) is carried to the contract, which names it; a frame without
    these columns passes through as it is, for the contract to report the missing column.
    """

    batch_rows: int
    split_dates: set[tuple] = field(default_factory=set)
    _emitted: set[tuple] = field(default_factory=set)

    def __call__(self, frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        carry: list[pl.DataFrame] = []
        carried = 0
        for frame in frames:
            if not set(DAY_COLUMNS) <= set(frame.columns):
                yield frame
                continue
            carry.append(frame)
            carried += frame.height
            if carried < self.batch_rows:
                continue
            combined = pl.concat(carry, how="vertical_relaxed") if len(carry) > 1 else carry[0]
            # the last row's date may go on in the next frame: hold its rows back
            last = combined.select(DAY_COLUMNS).row(-1)
            held_back = combined.select(
                pl.all_horizontal(pl.col(c).eq_missing(pl.lit(v)) for c, v in zip(DAY_COLUMNS, last))
            ).to_series()
            n_held = int(held_back.sum())
            if held_back.tail(n_held).all():  # sorted input: the last date is a tail, slice it off
                ready, rest = combined.head(combined.height - n_held), combined.tail(n_held)
            else:
                ready, rest = combined.filter(~held_back), combined.filter(held_back)
            carry, carried = [rest], n_held
            if ready.height:
                yield self._emit(ready)
        if carried:
            yield self._emit(pl.concat(carry, how="vertical_relaxed"))

    def _emit(self, chunk: pl.DataFrame) -> pl.DataFrame:
        dates = set(chunk.select(DAY_COLUMNS).unique().rows())
        self.split_dates |= dates & self._emitted
        self._emitted |= dates
        return chunk


def response_schema(scorer: Scorer) -> pa.Schema:
    """The response's Arrow schema (what ``score`` returns for an empty batch)."""
    return score(pl.DataFrame(schema=CONTRACT_DTYPES), scorer).to_arrow().schema


class ResponseFile:
    """A scored output file, streamed under a temp name and renamed into place only when
    every table is written, so nobody sees a half-written file and a failure leaves none.
    An input without rows still gets a typed, empty file (schema from ``empty_schema``)."""

    def __init__(self, path: Path, empty_schema: Callable[[], pa.Schema]):
        self.path = path
        self.empty_schema = empty_schema
        self.temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self.writer: pq.ParquetWriter | None = None

    def __enter__(self) -> ResponseFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.temp, table.schema, compression="zstd")
        self.writer.write_table(table)

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None:
                if self.writer is None:
                    self.writer = pq.ParquetWriter(self.temp, self.empty_schema(), compression="zstd")
                self.writer.close()
                self.writer = None
                os.replace(self.temp, self.path)
        finally:
            if self.writer is not None:
                self.writer.close()
            self.temp.unlink(missing_ok=True)


@dataclass
class ScoreFileResult:
    rows: int
    chunks: int
    persisted_chunks: int
    seconds: float
    split_dates: int
    output: Path
    batch_id_prefix: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")


def score_file(
    input_path: Path,
    output_path: Path,
    *,
    scorer: Scorer | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    persist: bool = True,
    batch_id_prefix: str | None = None,
    progress: bool = True,
    overlap: bool = True,
) -> ScoreFileResult:
    """Score a Parquet/CSV file in bounded chunks of whole flight dates.

    Writes ``output_path`` (Parquet: the response columns) atomically, and, with
    ``persist``, each chunk to the scored table as batch ``<prefix>-<chunk number>``
    where the prefix defaults to the input's name and content hash: re-running the same
    file adds nothing, and a run killed midway leaves only whole chunks behind.
    ``overlap=False`` runs every stage in this thread, one chunk after the other (for
    profiling the stages; the results are the same).
    """
    started = time.perf_counter()
    scorer = scorer or Scorer.load()
    frames, total = read_batches(input_path, batch_rows)  # refuses a missing or unreadable file
    prefix = batch_id_prefix or f"{input_path.stem}-{file_sha256(input_path)[:12]}"
    chunker = DayChunks(batch_rows)
    bar = tqdm(
        total=total, unit="rows", unit_scale=True, desc=f"scoring {input_path.name}", disable=not progress
    )
    rows = chunks = persisted = 0

    def finish_chunk(prepared: Prepared | pl.DataFrame, batch_id: str) -> None:
        """Predict, store and write one chunk (in the worker thread, chunks in order)."""
        nonlocal rows, chunks, persisted
        if isinstance(prepared, pl.DataFrame):  # stored by an earlier run
            scored = prepared
        elif persist:
            scored, created = finish_and_persist(prepared, scorer, batch_id)
            persisted += created
        else:
            scored = finish(prepared, scorer)
        response = scored.select(RESPONSE_COLUMNS)
        out.write(response.to_arrow())
        rows += response.height
        chunks += 1
        bar.update(response.height)

    # Chunk i is predicted and written in a worker thread while this thread reads, checks and
    # builds the features of chunk i+1 (Polars, lleaves and Arrow release the GIL): two
    # chunks in memory at most. Leaving the block waits for the worker's chunk, so a failure
    # in chunk i+1 still leaves chunk i whole in the scored table and no output file.
    with (
        bar,
        ResponseFile(output_path, lambda: response_schema(scorer)) as out,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-worker") as worker,
    ):
        pending: Future | None = None
        for i, chunk in enumerate(chunker(frames)):
            batch_id = f"{prefix}-{i:05d}"
            work = stored_batch(batch_id) if persist else None
            if work is None:
                work = prepare(chunk, scorer, with_features=persist)
            if pending is not None:
                pending.result()  # the previous chunk is written (or its error raised here)
            if overlap:
                pending = worker.submit(finish_chunk, work, batch_id)
            else:
                finish_chunk(work, batch_id)
        if pending is not None:
            pending.result()
    if chunker.split_dates:
        logger.warning(
            "%s is not sorted by flight date: %d dates were scored in more than one chunk, so their "
            "congestion and rotation features saw part of the day; sort the input by date for exact features",
            input_path.name,
            len(chunker.split_dates),
        )
    return ScoreFileResult(
        rows, chunks, persisted, time.perf_counter() - started, len(chunker.split_dates), output_path, prefix
    )


# --------------------------------------------------------------------------- the production period


def _flight_date(frame: pl.DataFrame) -> pl.Series:
    return frame.select(pl.date("year", "month", "day").alias("d"))["d"]


def production_days(dates: pl.Series) -> list[date]:
    """The distinct flight dates of the production period (Sep-Dec), in order."""
    start, end = fe.SPLITS["test"]
    return sorted(dates.filter(dates.is_between(start, end)).unique().to_list())


def write_actuals(raw: pl.DataFrame, day: date) -> lake.WriteResult:
    """The outcomes of one day's flights (labels arrive after the flights), keyed by flight."""
    outcomes = (
        fe.add_target(raw.lazy())
        .select(
            *KEY_COLUMNS,
            pl.date("year", "month", "day").alias("flight_date"),
            pl.col("dep_time").is_null().alias("cancelled"),
            (pl.col("dep_time").is_not_null() & pl.col("arr_delay").is_null()).alias("diverted"),
            "arr_delay",
            fe.TARGET,
        )
        .collect()
    )
    return lake.write_batch(ACTUALS_DATASET, f"actuals-{day}", outcomes.to_arrow())


def score_production(scorer: Scorer | None = None, progress: bool = True) -> dict[str, int]:
    """Score Sep-Dec from the warehouse as one batch per flight date, store the actuals,
    and (re)register the ``scored`` and ``actuals`` views in the warehouse."""
    scorer = scorer or Scorer.load()
    raw = fe.scan_raw().collect()
    dates = _flight_date(raw)
    counts = {"days": 0, "rows": 0, "new_batches": 0}
    for day in tqdm(production_days(dates), desc="daily batches", disable=not progress):
        flights = raw.filter(dates == day)
        _, created = score_and_persist(
            flights.select(SCORING_INPUT_COLUMNS), scorer, f"daily-{day}-{scorer.artifact.version}"
        )
        if not lake.has_batch(ACTUALS_DATASET, f"actuals-{day}"):
            write_actuals(flights, day)
        counts["days"] += 1
        counts["rows"] += flights.height
        counts["new_batches"] += created
    register_views()
    return counts


def register_views() -> None:
    """Create the ``scored`` and ``actuals`` views in the warehouse (they re-glob the lake at
    every query, so this is needed once). DuckDB allows no writer while another process
    reads the file; then the views from an earlier run stay and this run's batches are
    still visible through them."""
    try:
        with connect() as con:
            lake.register_views(con, [SCORED_DATASET, ACTUALS_DATASET])
    except duckdb.IOException as exc:
        logger.warning("views not (re)registered, the warehouse is in use by another process: %s", exc)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score flights with the saved model.")
    commands = parser.add_subparsers(dest="command", required=True)
    score_cmd = commands.add_parser("score", help="score a Parquet or CSV file")
    score_cmd.add_argument("input", type=Path)
    score_cmd.add_argument("output", type=Path)
    score_cmd.add_argument("--engine", choices=["local", "ray"], default="local")
    score_cmd.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS)
    score_cmd.add_argument("--batch-id", default=None, help="batch id prefix (default: input name + hash)")
    score_cmd.add_argument("--no-persist", action="store_true", help="do not append to the scored table")
    score_cmd.add_argument("--model-version", default=None)
    score_cmd.add_argument("--ray-address", default=None, help="Ray cluster address (default: local)")
    commands.add_parser("production", help="score the Sep-Dec production period as daily batches")
    args = parser.parse_args(argv)

    if args.command == "production":
        counts = score_production()
        print(
            f"[score] {counts['rows']:,} flights in {counts['days']} daily batches ({counts['new_batches']} new)"
        )
        return
    try:
        if args.engine == "ray":
            from ray_scoring import score_file_ray

            result = score_file_ray(
                args.input, args.output, model_version=args.model_version, address=args.ray_address,
                persist=not args.no_persist, batch_id_prefix=args.batch_id,
            )  # fmt: skip
        else:
            result = score_file(
                args.input, args.output, scorer=Scorer.load(args.model_version), batch_rows=args.batch_rows,
                persist=not args.no_persist, batch_id_prefix=args.batch_id,
            )  # fmt: skip
    except (ContractViolation, ArtifactError, InputError) as exc:
        # bad input or no usable model: say what is wrong, no traceback; nothing was written
        # to OUTPUT, and the scored table holds only the whole chunks scored before
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"scored {result.rows:,} rows in {result.chunks} chunks ({result.persisted_chunks} newly persisted) "
        f"in {result.seconds:.1f}s = {result.rows_per_second:,.0f} rows/s -> {result.output}"
    )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
