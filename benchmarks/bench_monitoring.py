"""Benchmark of the monitoring job on a 10M-row scored table, against Evidently's DataDriftPreset.

    nice -n 10 .venv/bin/python benchmarks/bench_monitoring.py                # after ./setup.sh
    nice -n 10 .venv/bin/python benchmarks/bench_monitoring.py --rows 2000000 --evidently-windows 3

Set-up (not timed): the repository's scored Sep-Dec table (``lake/scored``, from the main
job) and its actuals are replicated k times into ``benchmarks/data/monitoring/lake`` (one
Parquet file per flight date, flight numbers shifted by 10,000 per replica so flight keys
stay unique), and the LATEST model is copied to ``benchmarks/data/monitoring/artifacts``
with its reference profile rebuilt by ``reference_profile.build_reference_profile`` from the
warehouse's training split when the saved one predates format 2 (what training writes now).

Timed, in this order, each with the job's own in-memory DuckDB connection; every job run
``--rounds`` times (default 3), the median reported beside the rounds:

1. the whole job, weekly windows, default sampling, every window (``--full``);
2. an incremental run with nothing changed, then one after a new batch lands in one week;
3. the whole job unsampled (every row of every window);
4. Evidently 0.7.23 ``Report([DataDriftPreset()])`` on the same weekly windows, the same
   features plus the score, against the training rows: first on the rows the sampled job
   measures (its per-window samples), then on whole windows for ``--evidently-full-windows``
   windows (extrapolated per window to all of them, and said so).

Evidently is not a dependency of the project. Install it apart, never into ``.venv``:

    .venv/bin/python -m pip install --target /work/evidently-pkgs evidently==0.7.23 \\
        -c <(grep -E '^(numpy|pandas|scipy|pyarrow|scikit-learn|pydantic)==' requirements.txt)

and point ``--evidently-path`` (default /work/evidently-pkgs) at it: it is appended to
``sys.path`` *behind* .venv's site-packages, so the pinned numpy/pandas/scipy stay the ones
imported. Without it the script says so and reports the rest.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "mlops_pipeline" / "src"
sys.path.insert(0, str(SRC))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

logger = logging.getLogger(__name__)

DATA = ROOT / "benchmarks" / "data" / "monitoring"
RESULTS = (
    ROOT / "benchmarks" / "results_monitoring.md"
)  # results.md is the scoring benchmark's, rewritten whole
FLIGHT_SHIFT = 10_000  # flight numbers are 1..9999, so replica r's flights never collide


def _env(lake_dir: Path, artifacts_dir: Path, warehouse: Path) -> None:
    from settings import get_settings

    os.environ["MLOPS_LAKE_DIR"] = str(lake_dir)
    os.environ["MLOPS_ARTIFACTS_DIR"] = str(artifacts_dir)
    os.environ["MLOPS_WAREHOUSE_PATH"] = str(warehouse)
    get_settings.cache_clear()


def build_lake(source_lake: Path, target: Path, rows: int) -> tuple[int, int]:
    """Replicate every scored and actuals file k times; returns (k, scored rows)."""
    scored_files = sorted((source_lake / "scored").glob("*.parquet"))
    if not scored_files:
        raise SystemExit(f"no scored batches in {source_lake}/scored: run ./setup.sh (the main job) first")
    source_rows = sum(pq.read_metadata(f).num_rows for f in scored_files)
    k = max(1, math.ceil(rows / source_rows))
    marker = target / f"built-{k}x.json"
    if marker.exists():
        return k, json.loads(marker.read_text())["rows"]
    shutil.rmtree(target, ignore_errors=True)
    total = 0
    for dataset, files in (
        ("scored", scored_files),
        ("actuals", sorted((source_lake / "actuals").glob("*.parquet"))),
    ):
        out = target / dataset
        out.mkdir(parents=True)
        for path in tqdm(files, desc=f"replicating {dataset} x{k}"):
            frame = pl.read_parquet(path)
            copies = pl.concat([frame.with_columns(pl.col("flight") + r * FLIGHT_SHIFT) for r in range(k)])
            pq.write_table(copies.to_arrow(), out / path.name, compression="zstd", row_group_size=128 * 1024)
            total += copies.height if dataset == "scored" else 0
    marker.write_text(json.dumps({"k": k, "rows": total}))
    return k, total


def build_artifact(target: Path) -> str:
    """The LATEST model, with a format-2 reference profile (rebuilt from training if needed)."""
    import hashlib

    import ft_engineering as fe
    import model_artifact as ma
    from reference_profile import PROFILE_FORMAT, build_reference_profile

    artifact = ma.load_artifact()
    folder = target / "models" / artifact.version
    if not folder.exists():
        shutil.copytree(artifact.path, folder)
    (target / "models" / "LATEST").write_text(artifact.version + "\n")
    profile = json.loads((folder / ma.PROFILE_FILE).read_text())
    if int(profile.get("format", 1)) < PROFILE_FORMAT:
        data = fe.build_datasets()
        scores = artifact.booster.predict(fe.to_matrix(data.validation))
        profile = build_reference_profile(
            data.train, fe.NUMERIC_FEATURES, data.state.category_levels, scores, score_period="validation"
        )
        (folder / ma.PROFILE_FILE).write_text(json.dumps(profile, indent=2, sort_keys=True))
        sums = "".join(
            f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n"
            for name in ma.ARTIFACT_FILES
        )
        (folder / ma.CHECKSUMS_FILE).write_text(sums)
    return artifact.version


def _fresh_outputs(lake_dir: Path) -> None:
    import model_monitoring as mm

    for dataset in mm.DATASETS.values():
        shutil.rmtree(lake_dir / dataset, ignore_errors=True)


def timed_run(**config) -> tuple[float, object]:
    import model_monitoring as mm

    started = time.perf_counter()
    summary = mm.run_once(mm.MonitorConfig(progress=False, register_views=False, **config))
    return time.perf_counter() - started, summary


# where a run's time goes: the job's own steps, timed in place (a step's time includes the
# steps it calls: drift_rows holds window_drift, _trends_and_alerts holds trend_rows)
PHASES = (
    ("file_date_ranges", None),
    ("window_counts", "Monitor"),
    ("load_group", "Monitor"),
    ("drift_rows", "Monitor"),
    ("window_drift", None),
    ("performance", "Monitor"),
    ("_trends_and_alerts", "Monitor"),
    ("trend_rows", None),
    ("_write", "Monitor"),
)


def phase_run(lake_dir: Path, **config) -> tuple[float, dict[str, float]]:
    """One whole run (fresh outputs) with a timer around each of PHASES; (total, per phase)."""
    import model_monitoring as mm

    spent: dict[str, float] = dict.fromkeys([name for name, _ in PHASES], 0.0)
    saved = []
    for name, owner in PHASES:
        target = mm.Monitor if owner else mm
        original = getattr(target, name)
        saved.append((target, name, original))

        def timed(*args, _f=original, _name=name, **kwargs):
            started = time.perf_counter()
            try:
                return _f(*args, **kwargs)
            finally:
                spent[_name] += time.perf_counter() - started

        setattr(target, name, timed)
    try:
        _fresh_outputs(lake_dir)
        total, _ = timed_run(full=True, **config)
    finally:
        for target, name, original in saved:
            setattr(target, name, original)
    return total, spent


def add_one_batch(lake_dir: Path, k: int) -> Path:
    """A late batch: one more replica of one scored day (new flight numbers), under a new
    name, as the lake publishes batches (a published file is never rewritten)."""
    remove_late_batches(lake_dir)
    last = sorted(p for p in (lake_dir / "scored").glob("*.parquet") if not p.name.startswith("late-"))[-1]
    frame = pl.read_parquet(last).filter(pl.col("flight") < FLIGHT_SHIFT)
    late = frame.with_columns(pl.col("flight") + k * FLIGHT_SHIFT)
    path = lake_dir / "scored" / f"late-{uuid.uuid4().hex[:12]}.parquet"
    pq.write_table(late.to_arrow(), path, compression="zstd")
    return path


def remove_late_batches(lake_dir: Path) -> None:
    """Late batches of an earlier (interrupted) run are not part of the replicated table."""
    for path in (lake_dir / "scored").glob("late-*.parquet"):
        path.unlink()


def import_evidently(path: str) -> object | None:
    if path and path not in sys.path:
        sys.path.append(path)  # behind .venv's site-packages: the pinned libraries win
    try:
        return importlib.import_module("evidently")
    except ImportError:
        return None


def evidently_frames(version: str, sampled: bool, windows: int) -> tuple[object, list[object], list[int]]:
    """The reference (training rows) and the current rows of the first ``windows`` windows as
    the job sees them (its samples, or whole windows), as pandas frames."""
    import ft_engineering as fe
    import model_monitoring as mm
    from model_artifact import load_artifact

    artifact = load_artifact(version)
    data = fe.build_datasets()
    reference = data.train.select(fe.FEATURES).with_columns(
        pl.Series("score", artifact.booster.predict(fe.to_matrix(data.train)))
    )
    # categories as the scored table holds them: carrier and origin as the caller's strings,
    # the others as codes into the model's levels; all as labels for Evidently
    levels = data.state.category_levels
    reference = reference.with_columns(
        pl.col(c).replace_strict(list(range(len(levels[c]))), levels[c], default=None, return_dtype=pl.String)
        for c in ("carrier", "origin")
    ).with_columns(pl.col(c).cast(pl.String) for c in fe.CATEGORICAL_FEATURES)
    monitor = mm.Monitor(
        mm.MonitorConfig(progress=False, sample_rows=mm.DEFAULT_SAMPLE_ROWS if sampled else None)
    )
    paths = mm._paths("scored")
    ranges = mm.file_date_ranges(monitor.con, paths)
    starts, interval = mm.window_start_sql("week"), mm.WINDOW_SQL["week"][1]
    bounds = monitor.con.sql(
        f"SELECT {starts} AS s, CAST({starts} + {interval} AS DATE), count(*) FROM read_parquet({mm._sql_list(paths)}) "
        "GROUP BY ALL ORDER BY 1"
    ).fetchall()
    if not sampled:  # whole windows: the largest (a typical full week), not the partial first one
        bounds = sorted(bounds, key=lambda b: -b[2])
    bounds = bounds[:windows]
    available = set(monitor.con.sql(f"SELECT * FROM read_parquet({mm._sql_list(paths[:1])}) LIMIT 0").columns)
    monitor.reference(version)
    columns = monitor._columns(available, [version])
    frames, sizes = [], []
    for start, end, n in bounds:
        window = mm.Window(
            start, end, mm.overlapping(ranges, start, end), [], "", {version: n}, monitor.config.sample_rows
        )
        # the rows the job measures for this window
        current = monitor.load_group([window], columns).select(*fe.FEATURES, "score")
        current = current.with_columns(pl.col(c).cast(pl.String) for c in fe.CATEGORICAL_FEATURES)
        frames.append(current.to_pandas())
        sizes.append(current.height)
    return reference.to_pandas(), frames, sizes


def time_evidently(reference, frames) -> list[float]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    import ft_engineering as fe

    definition = DataDefinition(
        numerical_columns=[*fe.NUMERIC_FEATURES, "score"], categorical_columns=list(fe.CATEGORICAL_FEATURES)
    )
    ref = Dataset.from_pandas(reference, data_definition=definition)
    seconds = []
    for frame in tqdm(frames, desc="Evidently DataDriftPreset"):
        started = time.perf_counter()
        current = Dataset.from_pandas(frame, data_definition=definition)
        Report([DataDriftPreset()]).run(current_data=current, reference_data=ref)
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--rows", type=int, default=10_000_000, help="scored rows to synthesize (default 10M)"
    )
    parser.add_argument(
        "--evidently-path", default="/work/evidently-pkgs", help="where evidently is installed"
    )
    parser.add_argument(
        "--evidently-windows", type=int, default=0, help="sampled windows for Evidently (0 = all)"
    )
    parser.add_argument("--evidently-full-windows", type=int, default=1, help="whole windows for Evidently")
    parser.add_argument(
        "--rounds", type=int, default=3, help="timed rounds of each job run; the median is reported"
    )
    parser.add_argument(
        "--phases",
        action="store_true",
        help="only time the job's steps in --rounds sampled runs (no Evidently, nothing written)",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="do not append to benchmarks/results_monitoring.md"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from settings import get_settings

    source = get_settings()
    lake_dir, artifacts_dir = DATA / "lake", DATA / "artifacts"
    k, rows = build_lake(source.lake_dir, lake_dir, args.rows)
    version = build_artifact(artifacts_dir)  # reads the repository's LATEST and warehouse
    # the warehouse is only read (the training split); the job's views are not registered
    _env(lake_dir, artifacts_dir, source.warehouse_path)

    import model_monitoring as mm

    if args.phases:
        remove_late_batches(lake_dir)
        for sample_rows in (mm.DEFAULT_SAMPLE_ROWS, None):
            for _ in range(args.rounds):
                total, spent = phase_run(lake_dir, sample_rows=sample_rows)
                steps = "  ".join(f"{name}={seconds:.2f}" for name, seconds in spent.items())
                print(f"{'sampled' if sample_rows else 'unsampled'} run {total:.2f}s: {steps}")
        return

    figures: dict[str, object] = {"rows": rows, "replicas": k, "model": version, "rounds": args.rounds}
    remove_late_batches(lake_dir)

    def rounds(name: str, before, **config) -> object:
        """Times ``args.rounds`` runs (``before`` untimed ahead of each); keeps the median."""
        seconds = []
        for _ in range(args.rounds):
            before()
            elapsed, summary = timed_run(**config)
            seconds.append(elapsed)
        figures[f"{name}_s"] = float(np.median(seconds))
        figures[f"{name}_runs"] = [round(s, 2) for s in seconds]
        return summary

    summary = rounds("full_sampled", lambda: _fresh_outputs(lake_dir), full=True)
    figures["windows"] = summary.windows_total
    rounds("incremental_nochange", lambda: None)
    try:  # each round publishes one more late batch in the same week (the previous one removed)
        late = rounds("incremental_one_batch", lambda: add_one_batch(lake_dir, k))
        figures["incremental_windows"] = late.windows_recomputed
        rounds("full_unsampled", lambda: _fresh_outputs(lake_dir), full=True, sample_rows=None)
    finally:
        remove_late_batches(lake_dir)
    figures["summary"] = summary.line()
    print(json.dumps({k2: v for k2, v in figures.items() if k2 != "summary"}, indent=1, default=str))

    evidently = import_evidently(args.evidently_path)
    if evidently is None:
        print(
            "Evidently is not importable: install it apart with\n  .venv/bin/python -m pip install --target "
            f"{args.evidently_path} evidently==0.7.23 -c <(grep -E '^(numpy|pandas|scipy|pyarrow|scikit-learn|"
            "pydantic)==' requirements.txt)\nand rerun; the figures above are complete without it."
        )
    else:
        windows = args.evidently_windows or figures["windows"]
        reference, frames, sizes = evidently_frames(version, True, windows)
        seconds = time_evidently(reference, frames)
        per_window = float(np.mean(seconds))
        figures["evidently_sampled_windows"] = len(seconds)
        figures["evidently_sampled_rows_per_window"] = int(np.mean(sizes))
        figures["evidently_sampled_s_all_windows"] = per_window * figures["windows"]
        figures["evidently_sampled_measured_s"] = float(np.sum(seconds))
        if args.evidently_full_windows:
            _, full_frames, full_sizes = evidently_frames(version, False, args.evidently_full_windows)
            full_seconds = time_evidently(reference, full_frames)
            figures["evidently_full_rows_per_window"] = int(np.mean(full_sizes))
            figures["evidently_full_s_per_window"] = float(np.mean(full_seconds))
            figures["evidently_full_s_all_windows"] = float(np.mean(full_seconds)) * figures["windows"]
        figures["evidently_version"] = evidently.__version__
        figures["speedup_sampled"] = figures["evidently_sampled_s_all_windows"] / figures["full_sampled_s"]
        if "evidently_full_s_all_windows" in figures:
            figures["speedup_unsampled"] = (
                figures["evidently_full_s_all_windows"] / figures["full_unsampled_s"]
            )
    print(json.dumps({k2: v for k2, v in figures.items() if k2 != "summary"}, indent=1, default=str))
    if not args.no_write:
        write_results(figures, argv)
    del mm


def _row(label: str, f: dict[str, object], name: str) -> str:
    runs = ", ".join(f"{s:.2f}" for s in f[f"{name}_runs"])
    return f"| {label} | {f[f'{name}_s']:.2f} | {runs} |"


def write_results(f: dict[str, object], argv: list[str] | None) -> None:
    load = os.getloadavg()
    commit = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    command = "nice -n 10 .venv/bin/python benchmarks/bench_monitoring.py " + " ".join(argv or sys.argv[1:])
    lines = [
        "",
        f"## Monitoring job ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Command: `{command.strip()}` (docs/monitoring.md) at commit {commit or 'unknown'}. "
        f"Machine: {os.cpu_count()} cores, "
        f"{platform.python_implementation()} {platform.python_version()}, load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end (shared machine).",
        "",
        f"Scored table: {f['rows']:,} rows (the Sep-Dec scored table x{f['replicas']}), model {f['model']}, "
        f"{f['windows']} weekly windows, {len(__import__('ft_engineering').FEATURES)} features + the score.",
        "",
        f"Job runs: the median of {f['rounds']} rounds, the rounds beside it. Evidently: one run per window.",
        "",
        "| run | seconds | rounds |",
        "|---|---:|---|",
        _row("whole job, default sampling (20,000 rows per window), all windows", f, "full_sampled"),
        _row("whole job, unsampled (every row), all windows", f, "full_unsampled"),
        _row("incremental, nothing changed", f, "incremental_nochange"),
        _row(
            f"incremental, one late batch ({f['incremental_windows']} window recomputed)",
            f,
            "incremental_one_batch",
        ),
    ]
    if "evidently_version" in f:
        lines += [
            f"| Evidently {f['evidently_version']} DataDriftPreset on the sampled rows "
            f"({f['evidently_sampled_rows_per_window']:,} per window; {f['evidently_sampled_windows']} windows "
            f"measured, {f['evidently_sampled_measured_s']:.1f} s), all windows | "
            f"{f['evidently_sampled_s_all_windows']:.1f} | |",
        ]
        if "evidently_full_s_all_windows" in f:
            lines.append(
                f"| Evidently on whole windows ({f['evidently_full_rows_per_window']:,} rows; "
                f"{f['evidently_full_s_per_window']:.1f} s per window measured on the largest), "
                f"x{f['windows']} windows | "
                f"{f['evidently_full_s_all_windows']:.0f} | |"
            )
        lines += [
            "",
            f"Speed-up over Evidently: {f['speedup_sampled']:.0f}x with sampling (same sampled rows), "
            + (
                f"{f['speedup_unsampled']:.0f}x unsampled (whole windows)."
                if "speedup_unsampled" in f
                else ""
            ),
        ]
    lines += ["", f"Job summary line: `{f['summary']}`", ""]
    with RESULTS.open("a") as handle:
        handle.write("\n".join(lines))
    print(f"appended to {RESULTS}")


if __name__ == "__main__":
    main()
