"""The scoring core: one score function, the batch identity, and exactly-once persistence.

Every path that scores flights (the file scorer, the production run, Ray workers and the
API) calls :func:`prepare` and :func:`finish` (together: :func:`score`), which

1. validates the batch against the scoring-input contract (a ContractViolation names
   column, rule and row count; leakage and extra columns are dropped),
2. builds ``ft_engineering.features`` with the feature state saved in the model artifact,
   inside the day context of the batch's dates (``day_context``: the warehouse's flights of
   those dates, the batch's rows replacing the stored ones), so a flight's score does not
   depend on what else the batch holds,
3. predicts with the artifact's LightGBM model (or its verified compiled twin, see
   ``fast_predict``) and applies the artifact's threshold,

and returns the caller's flight key, ``score``, ``label``, ``model_version``, ``context``
(``warehouse``, or ``batch_only`` for a date the warehouse does not hold) and the
``unknown_<column>`` flags (plus the model's features when persisting, for monitoring).

Batch identity (docs/scoring.md, "Exactly once, by content"). What identifies a scored
row is what was scored: its ``row_digest``, a 64-bit digest of the row as the contract
normalised it (every scoring-input column, typed), its ``context_digest`` (the digest of
every flight its day's context held) and the model version. It never depends on the
file, the chunk size, the engine or the row order. :func:`persist` stores only the rows
whose (flight date, row digest, context digest) the scored table does not yet hold for
that model version, as one lake batch named by the model version and a digest of those
rows. So the same rows scored again add nothing, a file that overlaps an earlier one
stores only what is new, the same rows under a new model are a visible re-score, and a
flight whose inputs changed (a new departure time) is a new row, as are the other
flights of its day in that batch (their context changed). The check and the
write hold one lock per dataset folder (``filelock``), so two writers on one machine (or
on one shared file system that honours locks) never store the same row twice.

A client's own name for a request (``--batch-id``, the API's ``Idempotency-Key``) is kept
in the ``requests`` dataset with the request's content digest: reusing a name for other
rows is a :class:`RequestConflict`; reusing it for the same rows is a harmless retry.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from filelock import FileLock

import day_context
import ft_engineering as fe
import history
import lake
from data_contract import FLIGHT_KEY, validate_scoring_input
from digests import DIGEST_COLUMN, DIGEST_SCHEME, ContentDigest, combine_digests, row_digests
from history import HISTORY_FLAG, History
from model_artifact import ArtifactError, ModelArtifact, load_artifact
from settings import get_settings
from warehouse import connect

logger = logging.getLogger(__name__)

SCORED_DATASET = "scored"
ACTUALS_DATASET = "actuals"
REQUESTS_DATASET = "requests"
LATEST_VIEW = "scored_latest"
UNKNOWN_FLAGS = [f"unknown_{c}" for c in fe.CATEGORICAL_FEATURES]
KEY_COLUMNS = list(FLIGHT_KEY)
RESPONSE_COLUMNS = [*KEY_COLUMNS, "score", "label", "model_version", fe.CONTEXT, HISTORY_FLAG, *UNKNOWN_FLAGS]
CONTEXT_DIGEST = day_context.CONTEXT_DIGEST

Predictor = Callable[[np.ndarray], np.ndarray]
T = TypeVar("T")


class RequestConflict(ValueError):
    """A client's request name (``--batch-id``, ``Idempotency-Key``) reused for other rows."""


# --------------------------------------------------------------------------- the model


@dataclass
class Scorer:
    """A loaded model artifact and the predictor used for it (loaded once, reused per batch)."""

    artifact: ModelArtifact
    predict: Predictor
    backend: str = "lightgbm"
    context: day_context.DayContext = field(default_factory=day_context.DayContext)
    history: History = field(default_factory=History)
    state: fe.FeatureState = field(init=False)

    def __post_init__(self) -> None:
        self.state = self.artifact.feature_state
        if self.state.feature_version != fe.FEATURE_VERSION or self.state.features != fe.FEATURES:
            raise ArtifactError(
                f"model {self.artifact.version} was trained with feature definition v{self.state.feature_version} "
                f"({len(self.state.features)} features); this code builds v{fe.FEATURE_VERSION} "
                f"({len(fe.FEATURES)} features): retrain it (model_training_evaluation.py)"
            )
        if self.state.history != history.definition():
            raise ArtifactError(
                f"model {self.artifact.version} was trained with the history cut-off {self.state.history}; "
                f"this code builds {history.definition()}: retrain it (model_training_evaluation.py)"
            )

    @property
    def version(self) -> str:
        return self.artifact.version

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


# --------------------------------------------------------------------------- score


@dataclass
class Prepared:
    """A validated batch with its features and model matrix, ready to predict."""

    keys: pl.DataFrame  # the flight key as the caller sent it
    engineered: pl.DataFrame  # flight_date, the model's features (codes), context, the unknown flags
    matrix: np.ndarray
    digests: np.ndarray | None  # row digests (persisting or naming a request), else None
    context_digests: np.ndarray | None = None  # each row's day-context digest, with ``digests``

    @property
    def rows(self) -> int:
        return self.keys.height


def prepare(
    batch: pa.Table | pl.DataFrame | pl.LazyFrame, scorer: Scorer, *, with_digests: bool = False
) -> Prepared:
    """Steps 1 and 2 of :func:`score`: the contract, the features in the day context of the
    batch's dates (``day_context``), the model's matrix."""
    frame = pl.from_arrow(batch) if isinstance(batch, pa.Table) else batch
    valid = validate_scoring_input(frame)
    context = scorer.context.for_batch(valid)
    digests = context_digests = None
    if with_digests:
        digests = row_digests(valid)
        valid = valid.with_columns(pl.Series(DIGEST_COLUMN, digests, dtype=pl.UInt64))
    merged = fe.in_day_context(valid.lazy(), context.rows, context.known)
    if with_digests:  # every flight of the merged day carries its row digest (the stored ones from the file)
        merged_rows = merged.collect()
        context_digests = day_context.context_digests(merged_rows)
        merged = merged_rows.lazy()
    outcomes = scorer.history.tables_for(valid.select(pl.date("year", "month", "day").unique()).to_series())
    # only what the response and the scored table use: the batch's other columns (strings
    # among them) are then never carried through the feature joins
    engineered = fe.collect(
        fe.day_features(merged, scorer.state, outcomes).select(
            "flight_date", *fe.FEATURES, fe.CONTEXT, HISTORY_FLAG, *UNKNOWN_FLAGS
        )
    )
    if with_digests:  # a score depends on the day it was scored in and the history it saw
        history_digests = history.digests_of(outcomes, engineered.get_column("flight_date"))
        context_digests = combine_digests(context_digests, history_digests)
    return Prepared(valid.select(KEY_COLUMNS), engineered, fe.to_matrix(engineered), digests, context_digests)


def finish(prepared: Prepared, scorer: Scorer, *, with_features: bool = False) -> pl.DataFrame:
    """Step 3 of :func:`score`: predict, apply the threshold, assemble the response.

    ``with_features``: also ``flight_date``, the model's features as the model saw them, the
    row digest and the day-context digest, which is what the scored table stores."""
    scores = pl.Series(
        "score", scorer.predict(prepared.matrix) if prepared.matrix.shape[0] else [], dtype=pl.Float64
    )
    result = prepared.engineered.with_columns(
        scores,
        (scores >= scorer.artifact.threshold).cast(pl.Int8).alias("label"),
        pl.lit(scorer.version, dtype=pl.String).alias("model_version"),
    )
    # the key columns as the caller sent them, not the model's category codes
    if with_features:
        if prepared.digests is None:
            raise ValueError("prepare(..., with_digests=True) is needed to keep the row digests")
        features = [c for c in fe.FEATURES if c not in KEY_COLUMNS]
        kept = [
            "flight_date",
            *features,
            *UNKNOWN_FLAGS,
            "score",
            "label",
            "model_version",
            fe.CONTEXT,
            HISTORY_FLAG,
        ]
        result = result.with_columns(
            pl.Series(DIGEST_COLUMN, prepared.digests, dtype=pl.UInt64),
            pl.Series(CONTEXT_DIGEST, prepared.context_digests, dtype=pl.UInt64),
        )
        kept += [DIGEST_COLUMN, CONTEXT_DIGEST]
    else:
        kept = RESPONSE_COLUMNS[len(KEY_COLUMNS) :]
    return pl.concat([prepared.keys, result.select(kept)], how="horizontal")


def score(
    batch: pa.Table | pl.DataFrame | pl.LazyFrame, scorer: Scorer, *, with_features: bool = False
) -> pl.DataFrame:
    """Score a batch of scoring-input rows (see the module docstring).

    With ``with_features`` the result also holds ``flight_date``, the model's features (as
    the model saw them) and ``row_digest``: what the scored table stores for monitoring.
    """
    prepared = prepare(batch, scorer, with_digests=with_features)
    return finish(prepared, scorer, with_features=with_features)


# --------------------------------------------------------------------------- persistence


@dataclass(frozen=True)
class Persisted:
    """What :func:`persist` stored: ``new_rows`` under ``batch_id`` (None when every row was
    already stored for this model version), and how many rows were already there."""

    batch_id: str | None
    new_rows: int
    already_stored: int


# What identifies a stored score: the row, the day context it was scored in (per model version).
IDENTITY = ["flight_date", DIGEST_COLUMN, CONTEXT_DIGEST]


def _identities(scored: pl.DataFrame) -> np.ndarray:
    """One 64-bit identity per row from its row digest and its day's context digest."""
    return combine_digests(scored[DIGEST_COLUMN].to_numpy(), scored[CONTEXT_DIGEST].to_numpy())


class _StoredIndex:
    """(flight_date, row_digest, context_digest) of every stored row, per model version, read from the
    scored dataset's files. Published files never change, so each is read once per process;
    every lookup lists the folder again and reads only files it has not seen."""

    def __init__(self) -> None:
        self._files: dict[tuple[str, str], dict[str, pl.DataFrame]] = {}

    def lookup(self, model_version: str) -> pl.DataFrame:
        folder = lake.dataset_dir(SCORED_DATASET)
        seen = self._files.setdefault((str(folder), model_version), {})
        pattern = re.compile(re.escape(_batch_prefix(model_version)) + r"[0-9a-f]{32}")
        present = {path.name: path for path in folder.glob("*.parquet") if pattern.fullmatch(path.stem)}
        for name in set(seen) - set(present):  # removed by hand (or, later, by compaction)
            del seen[name]
        for name, path in present.items():
            if name not in seen:
                seen[name] = _read_identities(path)
        if not seen:
            return pl.DataFrame(
                schema={"flight_date": pl.Date, DIGEST_COLUMN: pl.UInt64, CONTEXT_DIGEST: pl.UInt64}
            )
        return pl.concat(list(seen.values()))


def _read_identities(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path, columns=IDENTITY)
    except pl.exceptions.ColumnNotFoundError:
        raise lake.SchemaMismatch(
            f"scored table file {path.name} predates the day context (it has no {CONTEXT_DIGEST}); "
            f"move {path.parent} aside and score again"
        ) from None


_INDEX = _StoredIndex()


def _batch_prefix(model_version: str) -> str:
    return f"{model_version}.s"


def writer_lock(dataset: str) -> FileLock:
    """The lock that makes check-then-write atomic for one dataset's writers."""
    folder = lake.dataset_dir(dataset)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / ".writers.lock"))


def persist(scored: pl.DataFrame) -> Persisted:
    """Store the rows of ``scored`` (``score(..., with_features=True)`` of one model) that
    the scored table does not hold yet for that model version; see the module docstring."""
    if scored.is_empty():
        return Persisted(None, 0, 0)
    version = scored["model_version"][0]
    with writer_lock(SCORED_DATASET):
        stored = _INDEX.lookup(version)
        fresh = scored  # one row per flight: the contract refuses a flight sent twice
        if stored.height:
            dates = fresh["flight_date"].unique()
            fresh = fresh.join(
                stored.filter(pl.col("flight_date").is_in(dates.implode())), on=IDENTITY, how="anti"
            )
        if fresh.is_empty():
            return Persisted(None, 0, scored.height)
        content = ContentDigest().add(_identities(fresh)).hexdigest()
        batch_id = f"{_batch_prefix(version)}{content[:32]}"
        table = fresh.with_columns(
            pl.lit(datetime.now(UTC).replace(tzinfo=None)).cast(pl.Datetime("us")).alias("scored_at"),
            pl.lit(batch_id).alias("batch_id"),
        ).to_arrow()
        # the rows' digest is their identity: the lake need not hash the stored bytes again
        # lz4: the scored table is written on every scoring run, on the scorer's critical
        # path; zstd costs 40 % more CPU for files half the size (docs/scoring.md)
        lake.write_batch(
            SCORED_DATASET,
            batch_id,
            table,
            content_id=f"{version}/{DIGEST_SCHEME}/{content}",
            compression="lz4",
        )
    return Persisted(batch_id, fresh.height, scored.height - fresh.height)


def score_and_persist(
    batch: pa.Table | pl.DataFrame | pl.LazyFrame, scorer: Scorer
) -> tuple[pl.DataFrame, Persisted]:
    """Score a batch and store what is new in it; returns (the response rows, what was stored)."""
    scored = score(batch, scorer, with_features=True)
    return scored.select(RESPONSE_COLUMNS), persist(scored)


# --------------------------------------------------------------------------- request names


def valid_request_name(name: str) -> str:
    try:
        return lake.check_batch_id(name)
    except ValueError as exc:
        raise RequestConflict(str(exc).replace("batch_id", "request name")) from None


def registered_content(name: str) -> str | None:
    """The content digest a request name was first used for, or None for a new name."""
    if not lake.has_batch(REQUESTS_DATASET, valid_request_name(name)):
        return None
    return lake.read_dataset(REQUESTS_DATASET, only=[name]).collect()["content_digest"][0]


def register_request(name: str, content: ContentDigest) -> None:
    """Bind a request name to its rows' content digest, once; other rows under a used name
    are a :class:`RequestConflict` (the first binding stays)."""
    digest = content.hexdigest()
    table = pa.table({"request_name": [name], "content_digest": [digest], "rows": [content.rows]})
    try:
        lake.write_batch(REQUESTS_DATASET, valid_request_name(name), table)
    except lake.BatchConflict:
        raise request_conflict(name, registered_content(name) or "?", digest) from None


def request_lock(name: str) -> FileLock:
    """The lock one request name is used under, from its content check to its binding."""
    folder = lake.dataset_dir(REQUESTS_DATASET)
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(str(folder / f".{valid_request_name(name)}.lock"))


def one_request_per_name(score: Callable[..., T]) -> Callable[..., T]:
    """Run a scorer with a ``request_name`` keyword under that name's lock (any process on
    this file system): two requests under one name run one after the other, so the second
    sees the first's binding and, with other rows, is refused before it scores or stores
    anything. Without the lock both would pass the check, both would store their rows, and
    only then would one of them be refused."""

    @functools.wraps(score)
    def locked(*args: Any, request_name: str | None = None, **kwargs: Any) -> T:
        if request_name is None:
            return score(*args, request_name=None, **kwargs)
        with request_lock(request_name):
            return score(*args, request_name=request_name, **kwargs)

    return locked


def request_conflict(name: str, stored: str, digest: str) -> RequestConflict:
    return RequestConflict(
        f"request name {name!r} was already used for other rows (content {stored[:12]}, "
        f"these rows {digest[:12]}); use a new name for new content"
    )


# --------------------------------------------------------------------------- views


VIEW_SQL = {
    # One row per flight and model version: the latest score of that flight under that
    # model. Re-sending the same rows adds nothing, so this view's answer changes only when
    # a flight's inputs change (a new departure time) or a model scores it for the first time.
    LATEST_VIEW: (
        f"SELECT * FROM {SCORED_DATASET} QUALIFY row_number() OVER ("
        f"PARTITION BY {', '.join(KEY_COLUMNS)}, model_version ORDER BY scored_at DESC, batch_id DESC) = 1"
    ),
}


def register_views(warehouse_path: Path | None = None) -> None:
    """Create the lake views (``scored``, ``actuals``, ``requests``) and ``scored_latest`` in the
    warehouse (they re-glob the lake at every query, so this is needed once). DuckDB allows
    no writer while another process reads the file; then the views from an earlier run stay
    and this run's batches are still visible through them."""
    try:
        with connect(warehouse_path) as con:
            registered = lake.register_views(con, [SCORED_DATASET, ACTUALS_DATASET, REQUESTS_DATASET])
            if SCORED_DATASET in registered.registered:
                for name, sql in VIEW_SQL.items():
                    con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {sql}')
    except duckdb.IOException as exc:
        logger.warning("views not (re)registered, the warehouse is in use by another process: %s", exc)
