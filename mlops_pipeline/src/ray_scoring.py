"""The distributed path: the same scorer on a Ray cluster, through Ray Data.

``score_file_ray`` does what ``file_scoring.score_file`` does (Parquet/CSV in, the
response columns out as one Parquet file in the input's order, the new rows stored in the
lake's ``scored`` dataset through ``scoring.persist``), with the scoring in a pool of Ray
actors::

    driver: plan the chunks (file_scoring.DayChunks over the year/month/day columns only,
            so the chunks are the local engine's chunks: whole flight dates, same scores)
      -> ray.data.from_items(chunks)                      no shuffle, no data on the driver
      -> map_batches(ChunkScorer, batch_size=1, compute=ActorPoolStrategy(size=n))
            each actor loads the model once and, per chunk, reads its row range of the
            Parquet file, scores it and stores what is new (scoring.persist)
      -> iter_batches on the driver, in order -> one Parquet file (temp name, atomic rename)

Why chunks and not ``groupby(date)``: a hash shuffle of every row by flight date, then one
actor call and one ~900-row lake batch per date, made Ray ten times slower than one
process. Chunks of ``batch_rows`` rows of whole dates cost one actor call each, and each
actor reads its own rows from storage: the driver ships only (start, length) pairs. A CSV
input is first converted to Parquet beside the output (one streaming pass on the driver),
so that actors can read row ranges.

Exactly once, by content: each chunk goes through ``scoring.persist`` under the dataset's
writer lock, so a re-run of the same file, by either engine and with any chunk size, adds
nothing; a run killed midway leaves whole chunks, and the next run stores the rest. An
error of the scoring code (a ContractViolation, ...) reaches the caller as itself, not as
Ray's wrapper, and no output file is written.

Running on a real cluster::

    python mlops_pipeline/src/model_deploy.py score IN.parquet OUT.parquet --engine ray \\
        --ray-address ray://head:10001          # or: export RAY_ADDRESS=ray://head:10001

* every node needs the packages of ``requirements.txt`` (same versions as the driver);
  this module's folder is shipped to the workers as the job's ``working_dir`` when this
  function starts the connection;
* the model artifact folder (``MLOPS_ARTIFACTS_DIR``), the lake (``MLOPS_LAKE_DIR``) and
  the input file must be on storage that every node reads (the lake: reads and writes) at
  the same path, e.g. an NFS/EFS mount that honours file locks. The driver passes every
  ``MLOPS_*`` variable, with the folders made absolute, to the actors;
* the driver pins the model version (``LATEST`` is read once, on the driver), so a model
  published mid-run cannot mix versions within one run.

The actors' own log output stays on the workers (``log_to_driver=False``, Ray's session
logs); Ray Data's progress bars and info lines are off for the run, its errors are shown.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import ray.data
from ray.util.annotations import RayDeprecationWarning

import scoring
from atomic import temp_name
from batch_io import ResponseFile, input_format, parquet_rows, read_file, read_parquet_range
from data_contract import CONTRACT_DTYPES, SCORING_INPUT_COLUMNS, validate_scoring_input
from file_scoring import (
    DAY_COLUMNS,
    DEFAULT_BATCH_ROWS,
    DayChunks,
    ScoreFileResult,
    check_request_name,
    response_schema,
)
from model_artifact import latest_version, load_artifact
from settings import get_settings

logger = logging.getLogger(__name__)

# Per-chunk figures that ride along with the response rows (stripped from the output).
STATS = {
    "__chunk": pl.Int64,
    "__new_rows": pl.Int64,
    "__already": pl.Int64,
    "__a": pl.UInt64,
    "__b": pl.UInt64,
}
SRC_DIR = Path(__file__).resolve().parent
WORKING_DIR_EXCLUDES = ["*.ipynb", "__pycache__/", ".ipynb_checkpoints/"]
# Ray Data's driver-side chatter (progress bars, "starting execution" lines), switched off per run.
QUIET_DATA_CONTEXT = {
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    "enable_auto_log_stats": False,
    "verbose_stats_logs": False,
}


class ChunkScorer:
    """A Ray Data actor: loads the model once, then scores one planned chunk per call."""

    def __init__(self, model_version: str, path: str, columns: list[str], persist: bool, digests: bool):
        self.scorer = scoring.Scorer.load(model_version)
        self.path = Path(path)
        self.columns = columns
        self.persist = persist
        self.digests = digests

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        chunk, start, length = (int(batch[name][0]) for name in ("chunk", "start", "length"))
        frame = read_parquet_range(self.path, self.columns, start, length)
        prepared = scoring.prepare(frame, self.scorer, with_digests=self.digests)
        scored = scoring.finish(prepared, self.scorer, with_features=self.persist)
        stored = scoring.persist(scored) if self.persist else scoring.Persisted(None, 0, 0)
        content = scoring.ContentDigest()
        if prepared.digests is not None:
            content.add(prepared.digests)
        values = {"__chunk": chunk, "__new_rows": stored.new_rows, "__already": stored.already_stored}
        values |= {"__a": content.a, "__b": content.b}
        stats = [pl.lit(values[name], dtype=dtype).alias(name) for name, dtype in STATS.items()]
        return scored.select(scoring.RESPONSE_COLUMNS).with_columns(stats).to_arrow()


# --------------------------------------------------------------------------- Ray set-up


def worker_env(threads: int | None = None) -> dict[str, str]:
    """The environment that carries the driver's settings to the actors: every ``MLOPS_*``
    variable, plus every path setting (artifacts, lake, warehouse, ...) as the driver
    resolved it, made absolute (a worker runs from the job's unpacked ``working_dir``, where
    the repository-relative defaults would point elsewhere). ``threads``: the threads each
    actor may use (predict and Polars), so that the actors together do not oversubscribe."""
    env = {key: value for key, value in os.environ.items() if key.startswith("MLOPS_")}
    settings = get_settings()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, Path):
            env[f"MLOPS_{name.upper()}"] = str(value.absolute())
    if threads is not None:
        env["MLOPS_N_THREADS"] = str(threads)
        env["POLARS_MAX_THREADS"] = str(threads)
    return env


def init_ray(address: str | None = None) -> bool:
    """Connect to ``address`` (``None``: ``RAY_ADDRESS`` if set, else a new local cluster)
    unless Ray is already initialised; returns whether this call started the connection.

    The job's runtime_env ships this module's folder (``working_dir``) so every worker can
    import the scoring code. For a local cluster, token authentication is disabled unless
    ``RAY_AUTH_MODE`` says otherwise (no token file is written to ``~/.ray``).
    """
    if ray.is_initialized():
        if address:
            logger.info("Ray is already initialised; using that connection, not %s", address)
        return False
    if not address and not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(
        address=address,
        include_dashboard=False,
        logging_level=logging.WARNING,
        log_to_driver=False,
        runtime_env={"working_dir": str(SRC_DIR), "excludes": WORKING_DIR_EXCLUDES},
    )
    return True


@contextmanager
def _quiet_ordered_ray_data() -> Iterator[None]:
    """For one run: Ray Data's output in input order, no progress bars, and its console
    handler showing errors only (everything still goes to the session's ``ray-data.log``)."""
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in QUIET_DATA_CONTEXT}
    saved_order = context.execution_options.preserve_order
    handlers = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in handlers]
    for name, value in QUIET_DATA_CONTEXT.items():
        setattr(context, name, value)
    context.execution_options.preserve_order = True
    for handler in handlers:
        handler.setLevel(max(handler.level, logging.ERROR))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        context.execution_options.preserve_order = saved_order
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)


# --------------------------------------------------------------------------- input and plan


def input_columns(path: Path) -> list[str]:
    """The scoring-input columns a Parquet file holds; a file that lacks some is refused
    here, on the driver, with the contract's message."""
    _, present = parquet_rows(path)
    if len(present) < len(SCORING_INPUT_COLUMNS):
        validate_scoring_input(pl.DataFrame(schema={c: CONTRACT_DTYPES[c] for c in present}))
    return present


def as_parquet(path: Path, folder: Path) -> Path | None:
    """A CSV converted to a temp Parquet file in ``folder`` (typed as the contract's columns,
    one streaming pass), for actors to read row ranges of; None for an input that is
    Parquet. The caller removes the file."""
    if input_format(path) == ".parquet":
        return None
    folder.mkdir(parents=True, exist_ok=True)
    converted = temp_name(folder / f"{path.stem}.parquet", ".from-csv.parquet")
    writer: pq.ParquetWriter | None = None
    frames, _ = read_file(path, DEFAULT_BATCH_ROWS)
    try:
        for frame in frames:
            table = frame.to_arrow()
            writer = writer or pq.ParquetWriter(converted, table.schema, compression="zstd")
            writer.write_table(table)
        if writer is None:  # a header without rows
            pl.DataFrame(schema={c: CONTRACT_DTYPES[c] for c in SCORING_INPUT_COLUMNS}).write_parquet(
                converted
            )
    except BaseException:
        if writer is not None:
            writer.close()
        converted.unlink(missing_ok=True)
        raise
    if writer is not None:
        writer.close()
    return converted


def plan_chunks(path: Path, batch_rows: int) -> tuple[list[dict[str, int]], int]:
    """The local engine's chunks of a Parquet file as row ranges, from its date columns
    only; returns (chunks, dates split over more than one chunk)."""
    chunker = DayChunks(batch_rows)
    frames, _ = read_file(path, batch_rows, columns=list(DAY_COLUMNS))
    chunks, start = [], 0
    for index, frame in enumerate(chunker(frames)):
        chunks.append({"chunk": index, "start": start, "length": frame.height})
        start += frame.height
    return chunks, len(chunker.split_dates)


def actor_cpus(num_actors: int) -> float:
    """CPUs reserved per actor: one, but never so many that the pool holds every CPU of the
    cluster (Ray Data's own tasks then never get scheduled: seen as a hang)."""
    total = ray.cluster_resources().get("CPU", 1.0)
    return max(0.1, min(1.0, (total - 1.0) / num_actors))


# --------------------------------------------------------------------------- the run


@scoring.one_request_per_name
def score_file_ray(
    input_path: Path,
    output_path: Path,
    *,
    model_version: str | None = None,
    address: str | None = None,
    persist: bool = True,
    request_name: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    num_actors: int = 2,
) -> ScoreFileResult:
    """Score a Parquet/CSV file on Ray, one planned chunk per actor call (module docstring).

    ``address`` is a Ray address (``ray://head:10001``, ``auto``); without it ``RAY_ADDRESS``
    or a new local cluster is used, and an already initialised Ray is reused as it is. A
    connection this call opened is closed at the end. ``startup_seconds`` in the result is
    the time to start or connect to the cluster, which ``seconds`` includes.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be at least 1, got {num_actors}")
    started = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    input_format(input_path)
    # Pin the version on the driver (and fail fast on a missing or tampered artifact).
    version = load_artifact(model_version or latest_version()).version
    converted = as_parquet(input_path, output_path.parent)
    source = converted or input_path
    try:
        columns = input_columns(source)
        if request_name is not None:
            check_request_name(source, request_name, batch_rows)
        chunks, split_dates = plan_chunks(source, batch_rows)
        ray_started = time.perf_counter()
        started_ray = init_ray(address)
        startup = time.perf_counter() - ray_started
        try:
            result = _run(source, output_path, chunks, columns, version, persist, request_name, num_actors)
        finally:
            if started_ray:
                ray.shutdown()
    finally:
        if converted is not None:
            converted.unlink(missing_ok=True)
    rows, new_rows, already, batches, content = result
    if request_name is not None:
        scoring.register_request(request_name, content)
    return ScoreFileResult(
        rows=rows, chunks=len(chunks), new_rows=new_rows, new_batches=batches, already_stored=already,
        seconds=time.perf_counter() - started, split_dates=split_dates, output=output_path,
        model_version=version, request_name=request_name, startup_seconds=startup,
    )  # fmt: skip


def _run(source, output_path, chunks, columns, version, persist, request_name, num_actors):
    if not chunks:  # an input without rows: nothing for the actors, a typed empty output
        return _write_response(iter([]), output_path, version)
    threads = max(1, int(ray.cluster_resources().get("CPU", 1.0) // num_actors))
    config = {
        "model_version": version,
        "path": str(Path(source).absolute()),
        "columns": columns,
        "persist": persist,
        "digests": persist or request_name is not None,
    }
    try:
        with _quiet_ordered_ray_data(), warnings.catch_warnings():
            # max_restarts has no named parameter yet; the generic one warns
            warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated", RayDeprecationWarning)
            # one block per chunk: the actor pool gets as many inputs as there are chunks
            plan = ray.data.from_items(chunks, override_num_blocks=max(1, len(chunks)))
            scored = plan.map_batches(
                ChunkScorer,
                batch_size=1,
                batch_format="numpy",
                compute=ray.data.ActorPoolStrategy(size=max(1, min(num_actors, len(chunks)))),
                num_cpus=actor_cpus(num_actors),
                fn_constructor_kwargs=config,
                runtime_env={"env_vars": worker_env(threads)},
                # No actor restarts: with them Ray prints an error line on every run (the
                # actors' constructor arguments live in the object store). A failed chunk
                # fails the run, and a rerun stores just the chunks that are missing.
                max_restarts=0,
            )
            return _write_response(
                scored.iter_batches(batch_format="pyarrow", batch_size=None), output_path, version
            )
    except ray.exceptions.RayTaskError as error:
        # An error of the scoring code (a ContractViolation, ...) reaches the caller as
        # itself, as in score_file; the remote traceback stays attached as its cause.
        if isinstance(error.cause, Exception):
            raise error.cause from error
        raise


def _write_response(batches: Iterator[pa.Table], output_path: Path, version: str):
    """Stream the actors' output into one Parquet file (batch_io.ResponseFile); returns
    (rows, new rows stored, rows already stored, new batches, the content digest)."""
    rows = new_rows = already = new_batches = 0
    content = scoring.ContentDigest()
    seen: set[int] = set()

    def empty_schema() -> pa.Schema:  # only an input without rows needs a scorer on the driver
        return response_schema(scoring.Scorer.load(version, fast=False))

    with ResponseFile(output_path, empty_schema) as out:
        for table in batches:
            if table.num_rows == 0:
                continue
            frame = pl.from_arrow(table)
            for chunk, new, old, a, b in frame.select(list(STATS)).unique("__chunk").iter_rows():
                if chunk in seen:
                    continue
                seen.add(chunk)
                new_rows, already, new_batches = new_rows + new, already + old, new_batches + (new > 0)
                content.merge(scoring.ContentDigest(0, a, b))
            response = frame.drop(list(STATS)).to_arrow()
            out.write(response)
            rows += response.num_rows
    content.rows = rows
    return rows, new_rows, already, new_batches, content
