"""The distributed path: the same score function on a Ray cluster, through Ray Data.

``score_file_ray`` does what ``model_deploy.score_file`` does (Parquet/CSV in, the
response columns out as one Parquet file, every day persisted exactly once to the lake's
``scored`` dataset), but the scoring runs in a pool of Ray actors::

    read_parquet / read_csv (scoring-input columns only)
      -> groupby(["year", "month", "day"])          a hash shuffle by flight date
      -> map_groups(DayScorer, batch_format="pyarrow", compute=ActorPoolStrategy(size=n))
            each actor loads the model once (Scorer.load in __init__) and calls
            model_deploy.score_and_persist(day, scorer, "<prefix>-<yyyy-mm-dd>") per group
      -> iter_batches on the driver -> one Parquet file (temp name, atomic rename)

Why groups are by flight date. The congestion, rotation and day-weather features are
window functions over the flight date (``ft_engineering.BATCH_RULE``): they are exact only
when a batch holds every flight of each date it contains. ``map_batches`` would hand an
actor whatever rows a block happens to hold, so a day split across two blocks would be
scored twice on half a schedule; ``groupby(date).map_groups`` shuffles every flight of a
date to one place and calls the actor once per date. Unlike ``score_file`` the input need
not be sorted (``split_dates`` is always 0). Within a day the rows are put in flight-key
order before scoring, so what is stored does not depend on the order the shuffle
delivered them in (two runs racing on one batch id store the same content, see ``lake``).

Exactly once, per day. Each day is one lake batch, ``<prefix>-<yyyy-mm-dd>``, the prefix
being the input's name and content hash by default, as in ``score_file``: a re-run of the
same file adds nothing (an actor finds its day stored and returns the stored rows), and a
run that is killed, or fails on a day that breaks the data contract, leaves only whole,
correct days behind; the next run scores just the missing ones. The contract's error
reaches the caller as itself (a ``ContractViolation``, not Ray's wrapper), and no output
file is written.

Output: one Parquet file, not a directory of parts. The response is narrow (flight key,
score, label, model version, unknown flags: about 60 bytes a row), so the driver streams
it into a single file (temp name, atomic rename) one block at a time, and writes it far
faster than the actors score. The driver's memory is bounded by one block (one hash
partition of whole days, about ``model_deploy.DEFAULT_BATCH_ROWS`` rows); the shuffle keeps
the input in Ray's object store, which spills to disk. The wide output that has to scale
is the lake: the actors write each day's scored rows with their features straight to
``<lake>/scored/<batch_id>.parquet``, in parallel, and analysts and monitoring read that.

Running on a real cluster::

    python mlops_pipeline/src/model_deploy.py score IN.parquet OUT.parquet --engine ray \\
        --ray-address ray://head:10001          # or: export RAY_ADDRESS=ray://head:10001

* every node needs the packages of ``requirements.txt`` (same versions as the driver);
  this module's folder is shipped to the workers as the job's ``working_dir`` when this
  function starts the connection (for a connection the caller opened, its runtime_env
  must make these modules importable, e.g. the same ``working_dir``);
* the model artifact folder (``MLOPS_ARTIFACTS_DIR``), the lake (``MLOPS_LAKE_DIR``) and
  the input file must be on storage that every node reads (the lake: reads and writes) at
  the same path, e.g. an NFS/EFS mount. The driver resolves the settings and passes every
  ``MLOPS_*`` variable, with the artifact and lake folders made absolute, to the actors
  (``runtime_env={"env_vars": ...}``), so workers use exactly the driver's folders;
* the driver pins the model version (``LATEST`` is read once, on the driver), so a model
  published mid-run cannot mix versions within one run.

The actors' own log output stays on the workers (``log_to_driver=False``, Ray's session
logs); Ray Data's progress bars and info lines are off for the run, its errors are shown.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import ray
import ray.data

import lake
import model_deploy
from data_contract import CONTRACT_DTYPES, FLIGHT_KEY, SCORING_INPUT_COLUMNS, validate_scoring_input
from model_artifact import latest_version, load_artifact
from settings import get_settings
from warehouse import file_sha256

logger = logging.getLogger(__name__)

DAY_KEYS = list(model_deploy.DAY_COLUMNS)
# Internal column: whether this run stored the row's day in the lake (stripped from the output).
CREATED_COLUMN = "__persisted_by_this_run"
SRC_DIR = Path(__file__).resolve().parent
WORKING_DIR_EXCLUDES = ["*.ipynb", "__pycache__/", ".ipynb_checkpoints/"]
# Ray Data's driver-side chatter (progress bars, "starting execution" lines), switched off per run.
QUIET_DATA_CONTEXT = {
    "enable_progress_bars": False,
    "print_on_execution_start": False,
    "enable_auto_log_stats": False,
    "verbose_stats_logs": False,
}


class DayScorer:
    """A Ray Data actor: loads the model once, then scores one whole flight date per call."""

    def __init__(self, model_version: str, persist: bool, batch_id_prefix: str) -> None:
        self.scorer = model_deploy.Scorer.load(model_version)
        self.persist = persist
        self.batch_id_prefix = batch_id_prefix

    def __call__(self, group: pa.Table) -> pa.Table:
        frame = pl.from_arrow(group)
        # The shuffle delivers a day's rows in no particular order; fix one.
        frame = frame.sort(list(FLIGHT_KEY), nulls_last=True, maintain_order=True)
        created = False
        if self.persist:
            batch_id = f"{self.batch_id_prefix}-{_group_date(frame).isoformat()}"
            scored, created = model_deploy.score_and_persist(frame, self.scorer, batch_id)
            response = scored.select(model_deploy.RESPONSE_COLUMNS)
        else:
            response = model_deploy.score(frame, self.scorer)
        return response.with_columns(pl.lit(created).alias(CREATED_COLUMN)).to_arrow()


def _group_date(frame: pl.DataFrame) -> date:
    try:
        return date(*(frame[column][0] for column in DAY_KEYS))
    except (TypeError, ValueError):  # a null or impossible date: the contract names column and rule
        validate_scoring_input(frame)
        raise


# --------------------------------------------------------------------------- Ray set-up


def worker_env() -> dict[str, str]:
    """The environment that carries the driver's settings to the actors: every ``MLOPS_*``
    variable, plus every path setting (artifacts, lake, warehouse, ...) as the driver
    resolved it, made absolute. Defaults and relative paths are resolved on the driver
    because a worker runs elsewhere: from the job's unpacked ``working_dir``, where the
    repository-relative defaults of ``settings.py`` would point somewhere else."""
    env = {key: value for key, value in os.environ.items() if key.startswith("MLOPS_")}
    settings = get_settings()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, Path):
            env[f"MLOPS_{name.upper()}"] = str(value.absolute())
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
def _quiet_ray_data() -> Iterator[None]:
    """Ray Data's driver-side output off for one run: no progress bars, and its console
    handler shows errors only (everything still goes to the session's ``ray-data.log``)."""
    context = ray.data.DataContext.get_current()
    saved = {name: getattr(context, name) for name in QUIET_DATA_CONTEXT}
    handlers = [h for h in logging.getLogger("ray.data").handlers if isinstance(h, logging.StreamHandler)]
    levels = [h.level for h in handlers]
    for name, value in QUIET_DATA_CONTEXT.items():
        setattr(context, name, value)
    for handler in handlers:
        handler.setLevel(max(handler.level, logging.ERROR))
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(context, name, value)
        for handler, level in zip(handlers, levels):
            handler.setLevel(level)


# --------------------------------------------------------------------------- input


def input_columns(path: Path) -> list[str]:
    """The scoring-input columns the file holds (others, e.g. leakage columns, are never read).

    A file that lacks some is refused here, on the driver, with the contract's message."""
    if model_deploy.input_format(path) == ".parquet":
        names = pq.read_schema(path).names
    else:
        with pacsv.open_csv(path) as reader:
            names = reader.schema.names
    present = [c for c in SCORING_INPUT_COLUMNS if c in names]
    if len(present) < len(SCORING_INPUT_COLUMNS):
        validate_scoring_input(pl.DataFrame(schema={c: CONTRACT_DTYPES[c] for c in present}))
    return present


def read_input(path: Path, columns: list[str]) -> ray.data.Dataset:
    if path.suffix.lower() == ".parquet":
        # select_columns is pushed down into the read: other columns are never read
        return ray.data.read_parquet(str(path.absolute())).select_columns(columns)
    # the same typed CSV reading as model_deploy.read_batches
    convert = model_deploy.csv_convert_options(include=columns)
    return ray.data.read_csv(str(path.absolute()), convert_options=convert)


def shuffle_partitions(path: Path, num_actors: int) -> int:
    """How many hash partitions the day shuffle uses. Ray's default (200) is for large data;
    each partition is one block of whole days handed to one actor call, so aim for
    ``model_deploy.DEFAULT_BATCH_ROWS`` rows a partition and at least two per actor."""
    if path.suffix.lower() == ".parquet":
        rows = pq.read_metadata(path).num_rows
    else:
        rows = path.stat().st_size // 150  # a raw CSV row is ~220 bytes: err towards more partitions
    return max(2 * num_actors, -(-rows // model_deploy.DEFAULT_BATCH_ROWS))


def actor_cpus(num_actors: int) -> float:
    """CPUs reserved per actor: one, but never so many that the pool holds every CPU of the
    cluster. A fixed-size pool starts before the read, and with all CPUs held the read and
    shuffle tasks never get scheduled (seen with 2 actors on a 2-CPU machine: a hang)."""
    total = ray.cluster_resources().get("CPU", 1.0)
    return max(0.1, min(1.0, (total - 1.0) / num_actors))


# --------------------------------------------------------------------------- the run


def score_file_ray(
    input_path: Path,
    output_path: Path,
    *,
    model_version: str | None = None,
    address: str | None = None,
    persist: bool = True,
    batch_id_prefix: str | None = None,
    num_actors: int = 2,
) -> model_deploy.ScoreFileResult:
    """Score a Parquet/CSV file on Ray, one flight date per actor call (see the module docstring).

    Writes ``output_path`` atomically (Parquet, ``model_deploy.RESPONSE_COLUMNS``; days in
    the order the actors finish them, each day in flight-key order) and, with ``persist``,
    each date to the scored table as batch ``<prefix>-<yyyy-mm-dd>``. ``address`` is a Ray
    address (``ray://head:10001``, ``auto``); without it ``RAY_ADDRESS`` or a new local
    cluster is used, and an already initialised Ray is reused as it is. A connection this
    call opened is closed at the end. ``chunks`` in the result counts flight dates.
    """
    if num_actors < 1:
        raise ValueError(f"num_actors must be at least 1, got {num_actors}")
    started = time.perf_counter()
    input_path, output_path = Path(input_path), Path(output_path)
    columns = input_columns(input_path)
    # Pin the version on the driver (and fail fast on a missing or tampered artifact).
    version = load_artifact(model_version or latest_version()).version
    prefix = batch_id_prefix or f"{input_path.stem}-{file_sha256(input_path)[:12]}"
    lake.check_batch_id(f"{prefix}-2013-01-01")  # refuse a bad prefix before starting anything
    started_ray = init_ray(address)
    try:
        with _quiet_ray_data():
            scored = (
                read_input(input_path, columns)
                .groupby(DAY_KEYS, num_partitions=shuffle_partitions(input_path, num_actors))
                .map_groups(
                    DayScorer,
                    batch_format="pyarrow",
                    compute=ray.data.ActorPoolStrategy(size=num_actors),
                    num_cpus=actor_cpus(num_actors),
                    fn_constructor_kwargs={
                        "model_version": version,
                        "persist": persist,
                        "batch_id_prefix": prefix,
                    },
                    runtime_env={"env_vars": worker_env()},
                )
            )
            rows, days, created = _write_response(
                scored.iter_batches(batch_format="pyarrow", batch_size=None), output_path, version
            )
    except ray.exceptions.RayTaskError as error:
        # An error of the scoring code (a ContractViolation, a BatchConflict, ...) reaches the
        # caller as itself, as in score_file; the remote traceback stays attached as its cause.
        if isinstance(error.cause, Exception):
            raise error.cause from error
        raise
    finally:
        if started_ray:
            ray.shutdown()
    return model_deploy.ScoreFileResult(
        rows=rows,
        chunks=days,
        persisted_chunks=created,
        seconds=time.perf_counter() - started,
        split_dates=0,
        output=output_path,
        batch_id_prefix=prefix,
    )


def _write_response(batches: Iterator[pa.Table], output_path: Path, version: str) -> tuple[int, int, int]:
    """Stream the actors' output into one Parquet file (model_deploy.ResponseFile: temp name,
    then atomic rename); returns (rows, flight dates, dates stored by this run)."""
    rows = 0
    days: set[tuple[int, int, int]] = set()
    created: set[tuple[int, int, int]] = set()

    def empty_schema() -> pa.Schema:  # only an input without rows needs a scorer on the driver
        return model_deploy.response_schema(model_deploy.Scorer.load(version, fast=False))

    with model_deploy.ResponseFile(output_path, empty_schema) as out:
        for table in batches:
            if table.num_rows == 0:
                continue
            frame = pl.from_arrow(table)
            day_flags = frame.group_by(DAY_KEYS).agg(pl.col(CREATED_COLUMN).any())
            for year, month, day, new in day_flags.iter_rows():
                days.add((year, month, day))
                if new:
                    created.add((year, month, day))
            response = frame.drop(CREATED_COLUMN).to_arrow()
            out.write(response)
            rows += response.num_rows
    return rows, len(days), len(created)
