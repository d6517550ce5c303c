"""Compiled tree backend for the scoring fast path: the artifact's LightGBM model compiled
to native code by lleaves, used only once its scores are verified against LightGBM's.

:func:`compiled_predictor` is what ``scoring.Scorer.load`` calls. It returns a
predictor (float64 matrix in, probabilities out) or ``None``, and ``None`` always means
"score with LightGBM": lleaves or llvmlite missing, the fast path switched off, a compile
error, or a compiled model whose scores differ from LightGBM's. Each reason is logged
as a warning; scoring never fails because of this module.

The cache, one pair of files per model (keyed by the SHA-256 of its ``model.txt``)::

    artifacts/compiled/<model_sha256>.o      the native object file lleaves compiled
    artifacts/compiled/<model_sha256>.json   its verification record (below)
    artifacts/compiled/<model_sha256>.lock   serialises compiling between processes

Compiling is slow (9-11 s for the 453-tree, 15-leaf production model on 2 cores, a minute
for a 300-tree, 63-leaf one; it grows with trees and leaves), so it happens once per model
and machine: the first process takes the lock, compiles to a temporary file, verifies,
writes the record and renames the object into place; processes that started at the same time (Ray actors, API workers) wait
on the lock and then load the result in about 0.1 s. A process that waits longer than
:data:`LOCK_TIMEOUT_S` scores with LightGBM instead of hanging.

Verification: the compiled model and ``artifact.booster.predict`` score the same matrix
and must agree within :data:`TOLERANCE` (max absolute difference). The matrix is

* the production period (``ft_engineering.SPLITS["test"]``, Sep-Dec, 111,866 flights)
  built from the warehouse with the artifact's feature state, the rows the scorer serves,
  when the warehouse can be read (not while another process holds it for writing); and always
* a *split probe*: rows whose every value is taken from the model's own split points
  (each threshold and the next float above it, every category a split names plus an
  unseen one, NaN), so every branch direction of every split is exercised. It needs no
  data, which is also what keeps verification possible without a warehouse.

The record (``{model_sha256, object_sha256, verified, max_abs_diff, rows, ...}`` plus the
lleaves/llvmlite versions and host CPU it was compiled for) lets later loads skip the
check, but only for the exact object bytes it names: a record for another model, another
object or another CPU/compiler is not trusted (an object built for another CPU or
compiler version is recompiled, never run). A cached object without a trusted record
(copied in, or left by a crash) is verified before use and refused if it fails; a failed
verification is recorded, so later loads refuse at once (delete the two files to retry).

The compiled objects are native code, so ``artifacts/compiled`` is as trusted as the
model folders next to it (docs/properties.md, property 8): only this module writes there.

Switch: ``MLOPS_FAST_PREDICT=0`` (settings field ``fast_predict``) disables the fast path.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np

from atomic import AtomicFile, write_bytes
from settings import get_settings
from warehouse import file_sha256

logger = logging.getLogger(__name__)

TOLERANCE = 1e-9
RECORD_FORMAT = 1  # bump when what a record certifies changes: older records are then re-checked
SWITCH_ENV = "MLOPS_FAST_PREDICT"  # settings.fast_predict, named in log messages
PROBE_ROWS = 8192
PROBE_SEED = 20130901
# The first probe rows are scored inside a zero-filled buffer this many times their size,
# so a foreign object compiled for a wider model (it reads more columns per row) reads
# zeros, not past the end of the matrix, before its scores are compared.
GUARD_ROWS = 512
GUARD_FACTOR = 16
# How long a process waits for another one compiling the same model (about 0.2 s per tree
# on 2 cores: 20 minutes covers a few thousand trees).
LOCK_TIMEOUT_S = 1200.0
# Fewer rows than this are scored on one thread (thread start-up costs more than it saves).
PARALLEL_MIN_ROWS = 10_000


class VerificationError(RuntimeError):
    """The compiled model does not reproduce LightGBM's scores."""


# --------------------------------------------------------------------------- the predictor


@dataclass
class CompiledPredictor:
    """A verified lleaves model: call it with an (n, n_features) float64 matrix."""

    model: Any  # lleaves.Model, compiled
    threads: int
    record: dict[str, Any]

    @property
    def object_path(self) -> Path:
        return Path(self.record["object_path"])

    def __call__(self, X: np.ndarray) -> np.ndarray:
        # ft_engineering.to_matrix already gives C-contiguous float64: no copy then.
        X = np.ascontiguousarray(X, dtype=np.float64)
        if X.shape[0] == 0:
            return np.empty(0)
        jobs = self.threads if X.shape[0] >= PARALLEL_MIN_ROWS else 1
        return self.model.predict(X, n_jobs=jobs)


# --------------------------------------------------------------------------- entry point


def enabled() -> bool:
    """Whether the fast path is switched on (``settings.fast_predict``)."""
    return get_settings().fast_predict


def compiled_dir() -> Path:
    return get_settings().artifacts_dir / "compiled"


def cache_paths(model_sha256: str) -> tuple[Path, Path, Path]:
    """(object file, verification record, lock file) for a model."""
    folder = compiled_dir()
    return folder / f"{model_sha256}.o", folder / f"{model_sha256}.json", folder / f"{model_sha256}.lock"


def compiled_predictor(artifact) -> CompiledPredictor | None:
    """The verified compiled twin of ``artifact``'s model, or None to score with LightGBM."""
    if not enabled():
        logger.info("fast predict is switched off (%s); scoring with LightGBM", SWITCH_ENV)
        return None
    try:
        import lleaves
    except Exception as exc:  # ImportError, or llvmlite failing to load its library
        logger.warning("lleaves is not usable (%s); scoring model %s with LightGBM", exc, artifact.version)
        return None
    try:
        return _load_or_compile(artifact, lleaves)
    except VerificationError as exc:
        logger.warning("compiled model refused, scoring %s with LightGBM: %s", artifact.version, exc)
    except Exception as exc:
        logger.warning(
            "compiling model %s with lleaves failed (%s: %s); scoring with LightGBM",
            artifact.version,
            type(exc).__name__,
            exc,
        )
    return None


# --------------------------------------------------------------------------- compile, load, cache


def _load_or_compile(artifact, lleaves) -> CompiledPredictor:
    object_path, record_path, lock_path = cache_paths(artifact.model_sha256)
    object_path.parent.mkdir(parents=True, exist_ok=True)
    threads = get_settings().n_threads
    model_file = _checked_model_file(artifact)
    environment = _environment()
    with _exclusive(lock_path):
        record = _read_record(record_path)
        if object_path.exists():
            object_sha = file_sha256(object_path)
            trusted = (
                record is not None
                and record.get("format") == RECORD_FORMAT
                and record.get("model_sha256") == artifact.model_sha256
                and record.get("object_sha256") == object_sha
            )
            if trusted and record.get("environment") == environment:
                if not record.get("verified"):
                    raise VerificationError(_refusal(record, object_path))
                model = lleaves.Model(model_file=str(model_file))
                model.compile(cache=str(object_path))
                logger.info("loaded verified compiled model %s", artifact.version)
                return CompiledPredictor(model, threads, record)
            foreign = record is not None and record.get("environment") not in (None, environment)
            if not trusted and not foreign:
                # An object this module did not certify for this model: verify before any use.
                model = lleaves.Model(model_file=str(model_file))
                model.compile(cache=str(object_path))
                record = _verify(model, artifact, threads, guarded=True)
                record |= {"object_sha256": object_sha, "compile_seconds": None, "source": "unrecorded cache"}
                _write_record(record_path, record, object_path)
                if not record["verified"]:
                    raise VerificationError(_refusal(record, object_path))
                return CompiledPredictor(model, threads, record)
            logger.info(
                "compiled model %s was built for another CPU or compiler; recompiling", artifact.version
            )  # (running it could fault on instructions this CPU lacks)
        return _compile(artifact, lleaves, model_file, object_path, record_path, threads)


def _compile(artifact, lleaves, model_file: Path, object_path: Path, record_path: Path, threads: int):
    with AtomicFile(object_path, suffix=".o.tmp") as temp:
        logger.info(
            "compiling model %s with lleaves (seconds to minutes, with trees and leaves)...", artifact.version
        )
        started = time.perf_counter()
        model = lleaves.Model(model_file=str(model_file))
        model.compile(cache=str(temp))  # lleaves writes the object file once it is built
        compile_seconds = time.perf_counter() - started
        if not temp.exists():
            raise RuntimeError("lleaves did not write the compiled object file")
        record = _verify(model, artifact, threads, guarded=False)
        record |= {
            "object_sha256": file_sha256(temp),
            "compile_seconds": round(compile_seconds, 3),
            "source": "compiled",
        }
        # record first, then the object (published on leaving the block): an object on disk
        # always has its record
        _write_record(record_path, record, object_path)
    logger.info(
        "compiled model %s in %.1fs (%d trees); verified=%s, max |diff| %.3g over %d rows",
        artifact.version,
        compile_seconds,
        model.num_trees(),
        record["verified"],
        record["max_abs_diff"],
        record["rows"],
    )
    if not record["verified"]:
        raise VerificationError(_refusal(record, object_path))
    return CompiledPredictor(model, threads, record)


def _checked_model_file(artifact) -> Path:
    """The artifact's model.txt, re-checked against the SHA-256 it was loaded with."""
    path = Path(artifact.path) / "model.txt"
    if file_sha256(path) != artifact.model_sha256:
        raise VerificationError(f"{path} changed since the artifact was loaded")
    return path


def _refusal(record: dict[str, Any], object_path: Path) -> str:
    reason = record.get("reason") or f"max |diff| {record.get('max_abs_diff')} > {TOLERANCE}"
    return (
        f"the compiled object {object_path.name} does not reproduce LightGBM's scores ({reason}); "
        f"delete {object_path} and its .json record to compile again"
    )


@contextlib.contextmanager
def _exclusive(lock_path: Path, timeout: float | None = None) -> Iterator[None]:
    """An inter-process lock (POSIX flock; the kernel releases it if its holder dies).
    Elsewhere the temp-file + rename keeps the cache whole, and concurrent first loads
    merely compile twice. Waiting longer than ``timeout`` raises TimeoutError (the
    caller then scores with LightGBM rather than hang behind a stuck compile)."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with lock_path.open("a+") as handle:
        timeout = LOCK_TIMEOUT_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"another process has held {lock_path.name} for {timeout:.0f}s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _version(package: str) -> str | None:
    try:
        return package_version(package)
    except PackageNotFoundError:
        return None


def _environment() -> dict[str, Any]:
    """What a compiled object depends on besides the model: compiler versions and host CPU."""
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:
        features = ""
    return {
        "lleaves": _version("lleaves"),
        "llvmlite": _version("llvmlite"),
        "cpu": llvm.get_host_cpu_name(),
        "cpu_features_sha256": hashlib.sha256(features.encode()).hexdigest()[:16],
    }


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(path: Path, record: dict[str, Any], object_path: Path) -> None:
    record = {**record, "object_path": str(object_path), "written_at": datetime.now(UTC).isoformat()}
    write_bytes(path, json.dumps(record, indent=2, sort_keys=True).encode())


# --------------------------------------------------------------------------- verification


def _verify(model, artifact, threads: int, *, guarded: bool) -> dict[str, Any]:
    """Score the verification matrix with both backends; the record of the comparison."""
    started = time.perf_counter()
    booster = artifact.booster
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "model_sha256": artifact.model_sha256,
        "model_version": artifact.version,
        "tolerance": TOLERANCE,
        "environment": _environment(),
        "lightgbm": _version("lightgbm"),
    }
    if model.num_feature() != booster.num_feature():
        return record | _failed(
            f"{model.num_feature()} features compiled, {booster.num_feature()} in the model"
        )
    probe = split_probe_matrix(booster)
    if guarded:
        # a few rows inside a zero-padded buffer first (see GUARD_FACTOR)
        n = min(GUARD_ROWS, probe.shape[0])
        buffer = np.zeros((n * GUARD_FACTOR, probe.shape[1]))
        buffer[:n] = probe[:n]
        diff = _max_abs_diff(model.predict(buffer[:n], n_jobs=1), booster.predict(probe[:n], num_threads=1))
        if not diff <= TOLERANCE:
            return record | _failed(f"max |diff| {diff:.3g} on the first {n} probe rows", diff, n)
    parts = {"split_probe": probe}
    production = production_matrix(artifact)
    if production is not None:
        parts["production_period"] = production
    diffs = {
        name: _max_abs_diff(model.predict(X, n_jobs=threads), booster.predict(X, num_threads=threads))
        for name, X in parts.items()
    }
    worst = float("nan") if any(np.isnan(d) for d in diffs.values()) else max(diffs.values())
    rows = sum(X.shape[0] for X in parts.values())
    record["rows_by_source"] = {name: int(X.shape[0]) for name, X in parts.items()}
    record["max_abs_diff_by_source"] = diffs
    verified = bool(worst <= TOLERANCE)
    record |= {
        "verified": verified,
        "max_abs_diff": worst,
        "rows": rows,
        "verify_seconds": round(time.perf_counter() - started, 3),
        "reason": None if verified else f"max |diff| {worst:.3g} > {TOLERANCE}",
    }
    return record


def _failed(reason: str, diff: float = float("nan"), rows: int = 0) -> dict[str, Any]:
    return {"verified": False, "max_abs_diff": diff, "rows": rows, "reason": reason}


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    diff = np.abs(a - b)
    return float("nan") if np.isnan(diff).any() else float(diff.max())


def production_matrix(artifact) -> np.ndarray | None:
    """The production period's (Sep-Dec) model input from the warehouse, built with the
    artifact's feature state; None when the warehouse cannot be read or the model's
    features are not ``ft_engineering.FEATURES``."""
    import polars as pl

    import ft_engineering as fe
    from data_contract import SCORING_INPUT_COLUMNS

    if list(artifact.card.get("features", [])) != fe.FEATURES:
        return None
    try:
        raw = fe.scan_raw()
    except Exception as exc:  # no warehouse, no table, or a writer holding the file
        logger.info("verification without the production period: the warehouse is not readable (%s)", exc)
        return None
    start, end = fe.SPLITS["test"]
    batch = raw.filter(pl.date("year", "month", "day").is_between(start, end)).select(SCORING_INPUT_COLUMNS)
    frame = fe.features(batch, artifact.feature_state).collect()
    return fe.to_matrix(frame) if frame.height else None


def split_probe_matrix(booster, rows: int = PROBE_ROWS, seed: int = PROBE_SEED) -> np.ndarray:
    """Rows built from the model's split points (see the module docstring), C-contiguous float64.

    Each column draws from: every numeric threshold t and the next float above it (both
    sides of ``x <= t``), every category a categorical split lists plus one no split
    lists, and NaN (the missing-value branch); a feature never split on gets 0 and NaN.
    """
    n_features = booster.num_feature()
    values: list[set[float]] = [set() for _ in range(n_features)]
    categorical = [False] * n_features

    def walk(node: dict[str, Any]) -> None:
        while "split_feature" in node:
            feature = node["split_feature"]
            if node["decision_type"] == "==":
                categorical[feature] = True
                values[feature].update(float(c) for c in str(node["threshold"]).split("||"))
            else:
                threshold = float(node["threshold"])
                values[feature].update((threshold, float(np.nextafter(threshold, np.inf))))
            walk(node["left_child"])
            node = node["right_child"]

    for tree in booster.dump_model()["tree_info"]:
        walk(tree["tree_structure"])
    rng = np.random.default_rng(seed)
    rows = max(rows, 2 * max((len(v) for v in values), default=0))
    X = np.empty((rows, n_features), dtype=np.float64)
    for j, seen in enumerate(values):
        candidates = sorted(seen) or [0.0]
        if categorical[j]:
            candidates.append(max(candidates) + 1)  # a category no split names
        candidates.append(np.nan)
        column = np.array(candidates, dtype=np.float64)
        # every candidate at least once, the rest drawn at random, shuffled
        picks = np.concatenate([column, rng.choice(column, rows - column.size)])
        X[:, j] = rng.permutation(picks)
    return X
