"""The scoring core: one score function, the batch identity, and exactly-once persistence.

Every path that scores flights (the file scorer, the production run, Ray workers and the
API) calls :func:`prepare` and :func:`finish` (together: :func:`score`), which

1. validates the batch against the scoring-input contract (a ContractViolation names
   column, rule and row count; leakage and extra columns are dropped),
2. builds ``ft_engineering.features`` with the feature state saved in the model artifact,
3. predicts with the artifact's LightGBM model (or its verified compiled twin, see
   ``fast_predict``) and applies the artifact's threshold,

and returns the caller's flight key, ``score``, ``label``, ``model_version`` and the
``unknown_<column>`` flags (plus the model's features when persisting, for monitoring).

Batch identity (docs/scoring.md, "Exactly once, by content"). What identifies a scored
row is what was scored: its ``row_digest``, a 64-bit digest of the row as the contract
normalised it (every scoring-input column, typed), and the model version. It never
depends on the file, the chunk size, the engine or the row order. :func:`persist` stores
only the rows whose (flight date, row digest) the scored table does not yet hold for
that model version, as one lake batch named by the model version and a digest of those
rows. So the same rows scored again add nothing, a file that overlaps an earlier one
stores only what is new, the same rows under a new model are a visible re-score, and a
flight whose inputs changed (a new departure time) is a new row. The check and the
write hold one lock per dataset folder (``filelock``), so two writers on one machine (or
on one shared file system that honours locks) never store the same row twice.

A client's own name for a request (``--batch-id``, the API's ``Idempotency-Key``) is kept
in the ``requests`` dataset with the request's content digest: reusing a name for other
rows is a :class:`RequestConflict`; reusing it for the same rows is a harmless retry.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from filelock import FileLock

import ft_engineering as fe
import lake
from data_contract import CONTRACT_DTYPES, FLIGHT_KEY, SCORING_INPUT_COLUMNS, validate_scoring_input
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
RESPONSE_COLUMNS = [*KEY_COLUMNS, "score", "label", "model_version", *UNKNOWN_FLAGS]
DIGEST_COLUMN = "row_digest"
# Bump when what the digest covers or how it is computed changes: digests of two schemes
# never match, so rows stored under the old scheme would be stored again.
DIGEST_SCHEME = "row-digest-v1/fnv1a-words/splitmix64/blake2b-8"

Predictor = Callable[[np.ndarray], np.ndarray]


class RequestConflict(ValueError):
    """A client's request name (``--batch-id``, ``Idempotency-Key``) reused for other rows."""


# --------------------------------------------------------------------------- the model


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


# --------------------------------------------------------------------------- row digests


def _splitmix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijective 64-bit mix (numpy uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


_NULL = np.uint64(_blake64("null"))
_SEED = np.uint64(
    _blake64(DIGEST_SCHEME + "|" + "|".join(f"{c}:{CONTRACT_DTYPES[c]}" for c in SCORING_INPUT_COLUMNS))
)


_PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: odd, so multiplying by it is a bijection


def _value_words(column: pl.Series) -> np.ndarray:
    """Each value as a uint64 that depends only on the value (nulls get one fixed word)."""
    dtype = column.dtype
    if dtype == pl.String:
        # each distinct text hashed once (blake2b), gathered through Enum codes
        levels = column.drop_nulls().unique().sort()
        words = np.array([_blake64(v) for v in levels], dtype=np.uint64)
        codes = column.cast(pl.Enum(levels.to_list())).to_physical().fill_null(0).to_numpy()
        values = words[codes] if words.size else np.zeros(column.len(), dtype=np.uint64)
    elif dtype.is_float():
        # -0.0 == 0.0 folds the two zeros into one; the contract turned NaN into null
        floats = column.cast(pl.Float64).fill_null(0.0).to_numpy()
        values = np.where(floats == 0.0, 0.0, floats).view(np.uint64)
    elif dtype.is_temporal():
        values = column.to_physical().cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64)
    else:
        values = column.cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64)
    if column.null_count():
        values = np.where(column.is_null().to_numpy(), _NULL, values)
    return values


def row_digests(valid: pl.DataFrame) -> np.ndarray:
    """The 64-bit digest of each row of a validated batch (see the module docstring).

    FNV-1a over 64-bit words (every scoring-input column in contract order), then the
    splitmix64 finaliser. Each step is a bijection of the running value, so two rows that
    differ in one column never share a digest; the finaliser spreads every input bit."""
    digest = np.full(valid.height, _SEED, dtype=np.uint64)
    for name in SCORING_INPUT_COLUMNS:
        digest ^= _value_words(valid.get_column(name))
        digest *= _PRIME
    return _splitmix(digest)


@dataclass
class ContentDigest:
    """An order-independent digest of a multiset of rows: two sums of re-mixed row digests
    (mod 2**64) and the row count. It streams: chunks can be added in any order."""

    rows: int = 0
    a: int = 0
    b: int = 0

    def add(self, digests: np.ndarray) -> ContentDigest:
        self.rows += int(digests.size)
        mask = (1 << 64) - 1
        self.a = (
            self.a + int(_splitmix(digests ^ np.uint64(0x9E3779B97F4A7C15)).sum(dtype=np.uint64))
        ) & mask
        self.b = (
            self.b + int(_splitmix(digests + np.uint64(0x632BE59BD9B4E019)).sum(dtype=np.uint64))
        ) & mask
        return self

    def merge(self, other: ContentDigest) -> ContentDigest:
        mask = (1 << 64) - 1
        self.rows += other.rows
        self.a, self.b = (self.a + other.a) & mask, (self.b + other.b) & mask
        return self

    def hexdigest(self) -> str:
        return f"{self.a:016x}{self.b:016x}{self.rows:x}"


# --------------------------------------------------------------------------- score


@dataclass
class Prepared:
    """A validated batch with its features and model matrix, ready to predict."""

    keys: pl.DataFrame  # the flight key as the caller sent it
    engineered: pl.DataFrame  # flight_date, the model's features (codes), the unknown flags
    matrix: np.ndarray
    digests: np.ndarray | None  # row digests (persisting or naming a request), else None

    @property
    def rows(self) -> int:
        return self.keys.height


def prepare(
    batch: pa.Table | pl.DataFrame | pl.LazyFrame, scorer: Scorer, *, with_digests: bool = False
) -> Prepared:
    """Steps 1 and 2 of :func:`score`: the contract, the features, the model's matrix."""
    frame = pl.from_arrow(batch) if isinstance(batch, pa.Table) else batch
    valid = validate_scoring_input(frame)
    # only what the response and the scored table use: the batch's other columns (strings
    # among them) are then never carried through the feature joins
    engineered = fe.collect(
        fe.features(valid.lazy(), scorer.state).select("flight_date", *fe.FEATURES, *UNKNOWN_FLAGS)
    )
    digests = row_digests(valid) if with_digests else None
    return Prepared(valid.select(KEY_COLUMNS), engineered, fe.to_matrix(engineered), digests)


def finish(prepared: Prepared, scorer: Scorer, *, with_features: bool = False) -> pl.DataFrame:
    """Step 3 of :func:`score`: predict, apply the threshold, assemble the response.

    ``with_features``: also ``flight_date``, the model's features as the model saw them and
    the row digest, which is what the scored table stores."""
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
        kept = ["flight_date", *features, *UNKNOWN_FLAGS, "score", "label", "model_version"]
        result = result.with_columns(pl.Series(DIGEST_COLUMN, prepared.digests, dtype=pl.UInt64))
        kept.append(DIGEST_COLUMN)
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


class _StoredIndex:
    """(flight_date, row_digest) of every stored row, per model version, read from the
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
                seen[name] = pl.read_parquet(path, columns=["flight_date", DIGEST_COLUMN])
        if not seen:
            return pl.DataFrame(schema={"flight_date": pl.Date, DIGEST_COLUMN: pl.UInt64})
        return pl.concat(list(seen.values()))


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
    key = ["flight_date", DIGEST_COLUMN]
    with writer_lock(SCORED_DATASET):
        stored = _INDEX.lookup(version)
        fresh = scored
        if scored[DIGEST_COLUMN].n_unique() < scored.height:  # a row sent twice counts once
            fresh = scored.unique(key, keep="first", maintain_order=True)
        if stored.height:
            dates = fresh["flight_date"].unique()
            fresh = fresh.join(
                stored.filter(pl.col("flight_date").is_in(dates.implode())), on=key, how="anti"
            )
        if fresh.is_empty():
            return Persisted(None, 0, scored.height)
        content = ContentDigest().add(fresh[DIGEST_COLUMN].to_numpy()).hexdigest()
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
