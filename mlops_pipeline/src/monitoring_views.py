"""What the monitoring app shows, as plain functions of the lake (no Streamlit here).

The app (``monitoring_app.py``) only *shows* what the monitoring job
(``model_monitoring.py``) computed: it reads the job's current rows (the same SQL as the
``monitoring_*`` warehouse views, :func:`model_monitoring.current_rows`) straight from the
lake's Parquet files through a short-lived in-memory DuckDB connection. It never opens
``warehouse.duckdb``: DuckDB lets no writer in while another process holds the file, so a
dashboard left open all day would stop the main job's load.

Raw scored rows are read for one thing only: the distribution of one feature in one window
against the reference profile (:func:`distribution`), a small aggregate over the files
whose flight dates overlap that window, binned with the profile's own edges by the job's
own SQL (:func:`model_monitoring.bin_sql`).

Thresholds, dataset names, status rules and the bucket mapping are imported from
``model_monitoring``, never restated, so the app cannot disagree with the job. Everything
here is cheap to call and deterministic, so the app wraps it in ``st.cache_data`` keyed by
:func:`lake_signature`, and the tests call it directly. The figures are in
``monitoring_figures``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl

import lake
import model_monitoring as mm
from model_artifact import load_artifact

# The commands the app tells people to run (it never computes monitoring itself).
MONITOR_COMMAND = ".venv/bin/python mlops_pipeline/src/model_monitoring.py"
SCORE_COMMAND = ".venv/bin/python mlops_pipeline/src/model_deploy.py production"
APP_COMMAND = ".venv/bin/streamlit run mlops_pipeline/src/monitoring_app.py"

VIEWS = ("Overview", "Feature view", "Drift table", "Time analysis", "Performance", "Recommendations")
WINDOW_KINDS = tuple(mm.WINDOW_SQL)  # day, week, month
OUTPUT_KINDS = ("windows", "drift", "performance", "trends", "alerts")
LAKE_DATASETS = (mm.SCORED_DATASET, mm.ACTUALS_DATASET, *mm.DATASETS.values())
# A daily job plus slack: an older monitoring run makes the app say so on every view.
STALE_RUN_AFTER = timedelta(hours=26)

# Traffic lights as Streamlit markdown (a coloured disc; no emoji font needed in the browser)
LIGHTS = {mm.GREEN: ":green[●]", mm.YELLOW: ":orange[●]", mm.RED: ":red[●]", mm.INFO: ":gray[●]"}
SEVERITY_RANK = {"critical": 2, "warning": 1, "info": 0}


# =========================================================================== reading the lake


def _files(dataset: str) -> list[Path]:
    folder = lake.dataset_dir(dataset)
    return [folder / f"{batch}.parquet" for batch in lake.batch_ids(dataset)]


def lake_signature() -> tuple:
    """What changes whenever a batch is published to any dataset the app reads: the lake's
    folder and, per dataset, its number of files, newest mtime and total size. The app's
    cache key, so a new batch or monitoring run shows at the next interaction; one
    ``stat`` per file, no file is opened."""
    parts: list[Any] = [str(lake.dataset_dir(mm.SCORED_DATASET).parent)]
    for dataset in LAKE_DATASETS:
        stats = [path.stat() for path in _files(dataset)]
        parts.append(
            (
                dataset,
                len(stats),
                max((s.st_mtime_ns for s in stats), default=0),
                sum(s.st_size for s in stats),
            )
        )
    return tuple(parts)


@dataclass(frozen=True)
class Monitoring:
    """The monitoring job's current rows for one window kind (what its views show)."""

    kind: str
    windows: pl.DataFrame
    drift: pl.DataFrame
    performance: pl.DataFrame
    trends: pl.DataFrame
    alerts: pl.DataFrame

    @property
    def empty(self) -> bool:
        return self.windows.is_empty()

    @property
    def versions(self) -> list[str]:
        """Model versions, in the order they first appear (the latest last)."""
        firsts = self.windows.group_by("model_version").agg(pl.col("window_start").min())
        return firsts.sort("window_start", "model_version")["model_version"].to_list()

    def window_starts(self, version: str | None = None) -> list[date]:
        frame = self.windows if version is None else self.windows.filter(pl.col("model_version") == version)
        return sorted(frame["window_start"].unique().to_list())


def load_monitoring(kind: str) -> Monitoring:
    """The current windows, drift, performance, trends and alerts of one window kind."""
    con = duckdb.connect()  # in memory: the lake's files are read directly, the warehouse never
    try:
        frames = {name: mm.current_rows(con, name, kind) for name in OUTPUT_KINDS}
    finally:
        con.close()
    return Monitoring(
        kind,
        **{
            name: frame.sort("window_start") if "window_start" in frame.columns else frame
            for name, frame in frames.items()
        },
    )


def computed_kinds() -> list[str]:
    """The window kinds the monitoring job has computed at least once."""
    try:
        kinds = lake.read_dataset(mm.DATASETS["windows"]).select("window_kind").unique().collect()
    except FileNotFoundError:
        return []
    return [kind for kind in WINDOW_KINDS if kind in set(kinds["window_kind"].to_list())]


def monitor_command(kind: str) -> str:
    return MONITOR_COMMAND if kind == "week" else f"{MONITOR_COMMAND} --window {kind}"


# =========================================================================== freshness


@dataclass(frozen=True)
class Run:
    """One monitoring run (from ``mon_runs``): when it started and finished, what it said."""

    kind: str
    started_at: datetime
    finished_at: datetime
    summary: str


@dataclass(frozen=True)
class Freshness:
    """How recent each input of the dashboard is (times in UTC, naive like the job's)."""

    scored_published: tuple[datetime, ...]  # when each scored batch was published (file mtime)
    scored_until: date | None  # the latest scored flight date
    actuals_batches: int
    actuals_published_at: datetime | None
    outcomes_until: date | None  # the latest flight date with an outcome
    latest_runs: dict[str, Run]  # per window kind, its latest monitoring run

    @property
    def scored_batches(self) -> int:
        return len(self.scored_published)

    @property
    def scored_published_at(self) -> datetime | None:
        return max(self.scored_published, default=None)

    @property
    def latest_run(self) -> Run | None:
        return max(self.latest_runs.values(), key=lambda r: r.finished_at, default=None)

    def scored_since(self, kind: str) -> int:
        """Scored batches published after the latest run of ``kind`` started (it listed the
        files at its start, so these are not in its windows)."""
        run = self.latest_runs.get(kind)
        return (
            len(self.scored_published)
            if run is None
            else sum(t > run.started_at for t in self.scored_published)
        )


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.stat().st_mtime, UTC).replace(tzinfo=None)


def _latest_flight_date(con: duckdb.DuckDBPyConnection, paths: list[Path]) -> date | None:
    ranges = mm.file_date_ranges(con, [p.as_posix() for p in paths])  # Parquet footers only
    return ranges["hi"].max() if ranges.height else None


def read_freshness() -> Freshness:
    scored, actuals = _files(mm.SCORED_DATASET), _files(mm.ACTUALS_DATASET)
    con = duckdb.connect()
    try:
        scored_until = _latest_flight_date(con, scored)
        outcomes_until = _latest_flight_date(con, actuals)
    finally:
        con.close()
    runs: dict[str, Run] = {}
    if _files(mm.DATASETS["runs"]):
        latest = (
            lake.read_dataset(mm.DATASETS["runs"])
            .sort("finished_at")
            .group_by("window_kind")
            .last()
            .collect()
        )
        for row in latest.iter_rows(named=True):
            runs[row["window_kind"]] = Run(
                row["window_kind"], row["started_at"], row["finished_at"], row["summary"]
            )
    return Freshness(
        scored_published=tuple(_mtime(p) for p in scored),
        scored_until=scored_until,
        actuals_batches=len(actuals),
        actuals_published_at=max((_mtime(p) for p in actuals), default=None),
        outcomes_until=outcomes_until,
        latest_runs=runs,
    )


@dataclass(frozen=True)
class Message:
    """One line for the people watching the model; ``level``: error | warning | info | success."""

    level: str
    text: str


def staleness(
    fresh: Freshness, kind: str, monitoring: Monitoring | None, now: datetime | None = None
) -> list[Message]:
    """Why the dashboard may not show today's situation for ``kind`` windows; empty when it does."""
    now = now or datetime.now(UTC).replace(tzinfo=None)
    run = fresh.latest_runs.get(kind)
    if run is None:
        return [Message("error", f"No {kind} monitoring run yet: run `{monitor_command(kind)}`.")]
    messages = []
    if since := fresh.scored_since(kind):
        messages.append(
            Message(
                "error",
                f"{since} scored batch(es) were published after the latest {kind} monitoring run "
                f"({run.started_at:%Y-%m-%d %H:%M} UTC): they are not in these charts. "
                f"Run `{monitor_command(kind)}`.",
            )
        )
    if now - run.finished_at > STALE_RUN_AFTER:
        hours = (now - run.finished_at).total_seconds() / 3600
        messages.append(Message("warning", f"The latest {kind} monitoring run is {hours:,.0f} hours old."))
    if monitoring is not None and not monitoring.empty and fresh.scored_until is not None:
        covered = monitoring.windows["window_end"].max()
        if covered <= fresh.scored_until:
            messages.append(
                Message(
                    "error",
                    f"Scored flights reach {fresh.scored_until} but the latest {kind} window ends "
                    f"{covered}: run `{monitor_command(kind)}`.",
                )
            )
    if fresh.scored_until is not None and (
        fresh.outcomes_until is None or fresh.outcomes_until < fresh.scored_until
    ):
        until = "no flight yet" if fresh.outcomes_until is None else f"flights up to {fresh.outcomes_until}"
        messages.append(
            Message(
                "warning",
                f"Outcomes cover {until}; flights scored up to {fresh.scored_until} have none yet, so the "
                "realized performance of the latest windows is partial or missing.",
            )
        )
    return messages


# =========================================================================== per-window tables


def version_changes(windows: pl.DataFrame) -> list[tuple[date, str]]:
    """(first window, version) of every model version after the first one."""
    firsts = (
        windows.group_by("model_version")
        .agg(pl.col("window_start").min())
        .sort("window_start", "model_version")
    )
    return [(start, version) for version, start in firsts.iter_rows()][1:]


def window_status(monitoring: Monitoring, start: date, version: str) -> dict[str, Any] | None:
    """The window row (status ok | too_small | stale_profile, overall status, message)."""
    rows = monitoring.windows.filter(pl.col("window_start") == start, pl.col("model_version") == version)
    return rows.row(0, named=True) if rows.height else None


def features_by_importance(drift: pl.DataFrame) -> list[str]:
    """Features (most important first), then the score; empty when nothing was measured."""
    status = drift.filter(pl.col("metric") == "status", pl.col("feature") != mm.SCORE)
    order = (
        status.group_by("feature")
        .agg(pl.col("value").max())
        .sort("value", "feature", descending=[True, False])
    )
    features = order["feature"].to_list()
    return [*features, mm.SCORE] if drift.filter(pl.col("feature") == mm.SCORE).height else features


def metrics_of(drift: pl.DataFrame, feature: str) -> list[str]:
    """The drift metrics the job computed for a feature (KS first for numerics, then PSI...)."""
    present = set(drift.filter(pl.col("feature") == feature)["metric"].unique().to_list())
    order = [
        "psi",
        "js_distance",
        "ks_statistic",
        "chi2_statistic",
        "null_rate_change",
        "unseen_share",
        "mean_score_change",
    ]
    return [m for m in order if m in present]


def feature_lights(monitoring: Monitoring, start: date, version: str) -> pl.DataFrame:
    """Per feature of a window (red first, then by importance): status, importance and its
    share of the weighted drift (the job's rule: red counts 1, yellow 0.5; day-level features
    count only in month windows)."""
    rows = monitoring.drift.filter(
        pl.col("window_start") == start,
        pl.col("model_version") == version,
        pl.col("metric") == "status",
        pl.col("feature") != mm.SCORE,
    )
    capped = monitoring.kind not in mm.FULL_STATUS_WINDOWS
    counted = ~pl.col("feature").is_in(list(mm.DAY_LEVEL_FEATURES)) if capped else pl.lit(True)
    weight = pl.col("status").replace_strict(mm.STATUS_WEIGHT, default=0.0, return_dtype=pl.Float64)
    return (
        rows.select(
            "feature",
            "status",
            pl.col("value").alias("importance"),
            pl.when(counted).then(pl.col("value") * weight).otherwise(0.0).alias("contribution"),
            pl.col("status").replace_strict(mm.STATUS_RANK, default=0, return_dtype=pl.Int8).alias("_rank"),
        )
        .sort(["_rank", "importance"], descending=True)
        .drop("_rank")
    )


def drift_table(monitoring: Monitoring, start: date, version: str) -> pl.DataFrame:
    """One row per feature of a window: status, importance, every effect size and, beside
    the KS and chi-squared statistics, their raw and BH-adjusted p-values."""
    rows = monitoring.drift.filter(pl.col("window_start") == start, pl.col("model_version") == version)
    if rows.is_empty():
        return pl.DataFrame()
    status = rows.filter(pl.col("metric") == "status").select(
        "feature", "status", pl.col("value").alias("importance")
    )
    values = rows.filter(pl.col("metric") != "status").pivot(on="metric", index="feature", values="value")
    tests = rows.filter(pl.col("metric").is_in(["ks_statistic", "chi2_statistic"]))
    p_values = tests.select(
        "feature",
        pl.col("metric").str.replace("_statistic", "").alias("test"),
        "p_value",
        "p_value_bh",
    ).pivot(on="test", index="feature", values=["p_value", "p_value_bh"])
    table = status.join(values, on="feature", how="left").join(p_values, on="feature", how="left")
    order = [
        "feature",
        "status",
        "importance",
        "psi",
        "js_distance",
        "ks_statistic",
        "p_value_ks",
        "p_value_bh_ks",
        "chi2_statistic",
        "p_value_chi2",
        "p_value_bh_chi2",
        "null_rate_change",
        "unseen_share",
        "mean_score_change",
    ]
    rank = pl.col("status").replace_strict(mm.STATUS_RANK, default=0, return_dtype=pl.Int8)
    return (
        table.select([c for c in order if c in table.columns])
        .with_columns(rank.alias("_rank"))
        .sort(["_rank", "importance"], descending=True)
        .drop("_rank")
    )


def metric_series(drift: pl.DataFrame, feature: str, metric: str) -> pl.DataFrame:
    return drift.filter(pl.col("feature") == feature, pl.col("metric") == metric).sort("window_start")


def trend(trends: pl.DataFrame, feature: str, metric: str, version: str) -> dict[str, Any] | None:
    rows = trends.filter(
        pl.col("feature") == feature, pl.col("metric") == metric, pl.col("model_version") == version
    )
    return rows.row(0, named=True) if rows.height else None


def in_range(frame: pl.DataFrame, first: date, last: date) -> pl.DataFrame:
    return frame.filter(pl.col("window_start") >= first, pl.col("window_start") <= last)


# =========================================================================== recommendations


def recommendations(monitoring: Monitoring, start: date, version: str) -> list[Message]:
    """The job's alerts of one window, one message per recommendation (retrain, review a
    variable's mapping, investigate, recalibrate...), the most severe first."""
    alerts = monitoring.alerts.filter(pl.col("window_start") == start, pl.col("model_version") == version)
    window = window_status(monitoring, start, version)
    if window is not None and window["status"] != "ok":
        return [Message("warning", f"Window of {start} not scored: {window['message']}")]
    messages = []
    for (recommendation,), group in alerts.group_by("recommendation", maintain_order=True):
        severity = max(group["severity"].to_list(), key=lambda s: SEVERITY_RANK.get(s, 0))
        reasons = group["reason"].to_list()
        shown = "; ".join(reasons[:5]) + (f"; and {len(reasons) - 5} more" if len(reasons) > 5 else "")
        level = "error" if severity == "critical" else "warning"
        messages.append(Message(level, f"**{recommendation[:1].upper()}{recommendation[1:]}**: {shown}."))
    messages.sort(key=lambda m: m.level != "error")
    perf = monitoring.performance.filter(pl.col("window_start") == start, pl.col("model_version") == version)
    if perf.height and not perf["n_with_outcome"].item():
        messages.append(
            Message(
                "info", f"No outcomes yet for the window of {start}: its realized performance is unknown."
            )
        )
    if not messages:
        messages.append(Message("success", f"No alert in the window of {start} for model {version}."))
    return messages


# =========================================================================== the distribution overlay


@dataclass(frozen=True)
class Distribution:
    """Reference (training; validation scores for ``score``) and current shares per bin."""

    feature: str
    kind: str  # numeric | categorical
    labels: list[str]
    reference: list[float]
    current: list[float]
    n_current: int


def bin_labels(bins: dict[str, Any]) -> list[str]:
    """Labels of the profile's right-closed bins, after the null and out-of-range bins:
    ``<= e1``, ``(e1, e2]``, ..., ``> ek``; a point-mass bin ``(nextafter(m), m]``, or a first
    bin whose edge is the training minimum, reads ``= m``."""
    edges = [float(e) for e in bins.get("edges") or []]
    low = bins.get("min")  # below it is out of range, so a first edge equal to it holds one value
    labels = []
    for i in range(len(edges) + 1):
        if not edges:
            labels.append("all values")
        elif i == 0:
            labels.append(
                f"= {edges[0]:.4g}" if low is not None and float(low) == edges[0] else f"≤ {edges[0]:.4g}"
            )
        elif i == len(edges):
            labels.append(f"> {edges[-1]:.4g}")
        elif np.nextafter(edges[i], -np.inf) == edges[i - 1]:
            labels.append(f"= {edges[i]:.4g}")
        else:
            labels.append(f"({edges[i - 1]:.4g}, {edges[i]:.4g}]")
    return ["null", "out of training range", *labels]


def _window_rows(version: str, start: date, end: date, columns: list[str]) -> pl.DataFrame:
    """The window's flights of one model version, each once with its latest score (the job's
    rule), only the given columns; the files' footers let Polars skip other dates."""
    keep = [*mm.KEY_COLUMNS, "scored_at", mm.SCORE, *[c for c in columns if c not in (mm.SCORE,)]]
    frame = (
        lake.read_dataset(mm.SCORED_DATASET)
        .filter(
            pl.col("model_version") == version, pl.col("flight_date") >= start, pl.col("flight_date") < end
        )
        .select(list(dict.fromkeys(keep)))
        .collect()
    )
    return frame.sort("scored_at", mm.SCORE, descending=True).unique(subset=mm.KEY_COLUMNS, keep="first")


def distribution(version: str, feature: str, start: date, end: date) -> Distribution:
    """One feature's (or the score's) distribution in a window against the reference profile.

    Raises ArtifactError when the model's artifact cannot be read and KeyError when the
    profile does not know the feature."""
    artifact = load_artifact(version)
    profile = artifact.profile
    spec = profile["score"] if feature == mm.SCORE else profile["features"][feature]
    kind = "numeric" if feature == mm.SCORE else spec["kind"]
    flag = f"unknown_{feature}"
    con = duckdb.connect()
    try:
        if kind == "numeric":
            rows = _window_rows(version, start, end, [feature])
            con.register("w", rows.select(pl.col(feature).cast(pl.Float64).alias("v")).to_arrow())
            counts = con.sql(
                f"SELECT {mm.bin_sql('v', spec['bins'])} AS bin, count(*) AS n FROM w GROUP BY 1"
            ).pl()
            reference, current, _ = mm.numeric_distributions(spec, counts)
            labels = bin_labels(spec["bins"])
        else:
            rows = _window_rows(version, start, end, [feature, flag])
            unknown = pl.col(flag) if flag in rows.columns else pl.lit(False)
            counts = (
                rows.select(
                    pl.col(feature).cast(pl.String).alias("label"), unknown.fill_null(False).alias("unknown")
                )
                .group_by("label", "unknown")
                .len("n")
            )
            labels, reference, current = mm.categorical_distributions(
                spec, counts, artifact.feature_state.category_levels.get(feature, [])
            )
    finally:
        con.close()
    reference, current_shares = mm.shares(reference), mm.shares(current)
    keep = [i for i in range(len(labels)) if reference[i] > 0 or current_shares[i] > 0]
    return Distribution(
        feature,
        kind,
        [labels[i] for i in keep],
        [float(reference[i]) for i in keep],
        [float(current_shares[i]) for i in keep],
        int(current.sum()),
    )
