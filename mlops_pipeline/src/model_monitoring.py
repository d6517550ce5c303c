"""The monitoring job: windowed drift and realized performance of the scored table.

    python mlops_pipeline/src/model_monitoring.py                 # one incremental run, weekly windows
    python mlops_pipeline/src/model_monitoring.py --window month --full
    python mlops_pipeline/src/model_monitoring.py --every 1h       # run periodically until stopped

What it does (docs/monitoring.md has the metrics, bins, thresholds and the figures):

1. **Windows** by flight date (day, week (ISO, Monday first) or month), defined in SQL over
   the scored lake dataset. Inside a window, each flight counts once per model version: the
   latest score (by ``scored_at``) of each flight key and model version, so a re-scored
   flight never weighs twice. A window with fewer than ``min_rows`` flights is recorded as
   ``too_small`` and not scored.
2. **Sample**: each window is sampled in SQL by flight: a flight is measured when a hash of
   its key and the seed falls below ``sample_rows / rows`` of the hash range (a fixed-seed
   Bernoulli sample of ~``--sample-rows`` flights, default :data:`DEFAULT_SAMPLE_ROWS`), or
   the window is taken whole when it is smaller. Sampling by flight commutes with "latest
   score per flight", so that rule runs on the sample only (docs/monitoring.md says why
   this and not a reservoir sample).
3. **Counts in DuckDB, metrics in Python**: one GROUP BY per group of windows bins every feature with
   the edges stored in the model's reference profile (never re-derived) and counts
   categories; only those small count tables reach Python, which computes KS, PSI, JS
   distance, chi-squared, null-rate change and unseen share per feature, the same for the
   score, and realized performance from a join with the ``actuals`` dataset.
4. **Status** from effect sizes (:data:`THRESHOLDS`, the one place for rules), p-values
   beside them adjusted per window with Benjamini-Hochberg; overall status weighted by the
   model's gain importance; trends, change points and alerts over the window series.
5. **Outputs** are lake datasets (append-only: one batch per run), exposed in the warehouse
   as views that show, per window, the rows of the latest run that computed it.

The job never holds ``warehouse.duckdb`` open while it works: it reads the lake's Parquet
files through its own in-memory DuckDB connection and opens the warehouse only at the end,
for a moment, to (re)create its views.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
from scipy import special, stats
from tqdm.auto import tqdm

import ft_engineering as fe
import lake
from history import HISTORY_FEATURES
from model_artifact import ArtifactError, load_artifact
from reference_profile import NULL_BUCKET, PROFILE_FORMAT, UNSEEN_BUCKET
from settings import get_settings
from warehouse import connect

logger = logging.getLogger(__name__)

SCORED_DATASET = "scored"
ACTUALS_DATASET = "actuals"
KEY_COLUMNS = ["year", "month", "day", "carrier", "flight", "origin"]
SCORE = "score"
OVERALL = "__overall__"

# Bump when a metric, a bin or a rule changes: every window's fingerprint changes with it,
# so the next incremental run recomputes everything under the new definition.
MONITOR_VERSION = "monitor-v2"

# The default sample per window. A real week holds ~6,500 flights, so it is taken whole;
# the default only bites on larger volumes, where it bounds the job's cost while keeping
# sampling noise far below the thresholds: with 20,000 flights the expected PSI of an
# unchanged population over ~12 bins is about 12/20,000 = 0.0006 (threshold 0.1), and the
# 95 % KS critical value against a 5,000-value reference is 0.021 (threshold 0.1).
DEFAULT_SAMPLE_ROWS = 20_000
DEFAULT_MIN_ROWS = 500  # a day has 700-1,000 flights, so daily windows are scored too
DEFAULT_TREND_WINDOWS = 4
# Sampled rows held in memory before their windows are counted in one query (one plan per
# flush, not per window; bounded memory when every row is kept).
FLUSH_ROWS = 2_000_000
PSI_EPSILON = 1e-4
KS_EXACT_EN = 500  # above this effective sample size, the KS p-value uses the limit law  # share floor for PSI: a bin empty on one side would make it infinite

# The mean score of a window as an exact decimal sum: a double sum depends on the order in
# which DuckDB's threads add it up, so recomputing a window could change its last digit.
EXACT_MEAN_SCORE = "avg(CAST(score AS DECIMAL(38, 17)))"

WINDOW_SQL = {  # the window's first day of a date column {d}, and its length
    "day": ("{d}", "INTERVAL 1 DAY"),
    "week": ("CAST(date_trunc('week', {d}) AS DATE)", "INTERVAL 7 DAY"),
    "month": ("CAST(date_trunc('month', {d}) AS DATE)", "INTERVAL 1 MONTH"),
}


def window_start_sql(kind: str, column: str = "flight_date") -> str:
    """SQL for the first day of the ``kind`` window that holds the date in ``column``."""
    return WINDOW_SQL[kind][0].format(d=column)


GREEN, YELLOW, RED, INFO = "green", "yellow", "red", "info"
STATUS_RANK = {GREEN: 0, INFO: 0, YELLOW: 1, RED: 2}


@dataclass(frozen=True)
class Threshold:
    """A warning (yellow) and a critical (red) level; ``below``: low values are bad."""

    yellow: float
    red: float
    below: bool = False
    absolute: bool = False

    def status(self, value: float | None) -> str:
        if value is None or not np.isfinite(value):
            return INFO
        v = abs(value) if self.absolute else value
        if self.below:
            return RED if v < self.red else YELLOW if v < self.yellow else GREEN
        return RED if v > self.red else YELLOW if v > self.yellow else GREEN


# Every rule and threshold of the job (docs/monitoring.md, "Status and thresholds").
# Effect sizes decide the status; p-values (KS, chi-squared) are reported beside them,
# BH-adjusted, because on thousands of rows they flag differences too small to matter.
THRESHOLDS: dict[str, Threshold] = {
    "psi": Threshold(0.10, 0.25),  # the industry's rule of thumb: < 0.1 stable, > 0.25 shifted
    "js_distance": Threshold(0.10, 0.20),  # base 2, 0..1; ~PSI 0.1 / 0.25 on typical shifts
    "ks_statistic": Threshold(0.10, 0.20),  # largest gap between the two CDFs
    "null_rate_change": Threshold(0.02, 0.05, absolute=True),
    "unseen_share": Threshold(0.01, 0.05),  # out-of-range values (numeric) or unknown levels
    "mean_score_change": Threshold(0.05, 0.10, absolute=True),
    "roc_auc": Threshold(0.70, 0.68, below=True),  # validation 0.754, worst test month 0.694
    "calibration_gap": Threshold(0.05, 0.10, absolute=True),  # observed rate - mean score
    "weighted_drift": Threshold(0.10, 0.25),  # importance-weighted share of drifted features
}
# Features with one value per day (and origin, or group): a week holds 7 days x 3 airports
# of them, so a weekly window compares ~21 values with six months of days and reads
# "shifted" for any ordinary week of weather (the expected PSI of 21 draws over 10 bins is
# ~0.4). The history features are the same kind: one disruption rate per day and group, so
# a week is 7 draws of the recent disruption regime (a stormy week moves all of them at
# once, by construction). In day and week windows their status is capped at yellow and they
# do not count in the overall status; month windows (~30-90 values) judge them fully.
DAY_LEVEL_FEATURES = frozenset(
    [c for c in fe.NUMERIC_FEATURES if c.startswith(("day_", "nyc_"))]
    + ["origin_day_departures", "days_to_holiday", "day_of_week", "is_weekend"]
    + list(HISTORY_FEATURES)
)
FULL_STATUS_WINDOWS = frozenset({"month"})
EFFECT_METRICS = (
    "psi",
    "js_distance",
    "ks_statistic",
    "null_rate_change",
    "unseen_share",
    "mean_score_change",
)
STATUS_WEIGHT = {GREEN: 0.0, INFO: 0.0, YELLOW: 0.5, RED: 1.0}
CONSECUTIVE_RED_FOR_RETRAIN = 3
CHANGE_POINT_ALPHA = 0.01
CHANGE_POINT_PERMUTATIONS = 999
# Besag & Clifford's sequential p-value: permutations stop once this many reach the observed
# statistic (then p = STOP / permutations drawn >= 10 / 999 > CHANGE_POINT_ALPHA), so only a
# series that may be significant pays for all 999; those get the same draws and p-value.
CHANGE_POINT_STOP = 10
CHANGE_POINT_BLOCK = 99

# Lake datasets (append-only, one batch per run) and the warehouse views over them.
DATASETS = {
    "windows": "mon_windows",
    "drift": "mon_drift",
    "performance": "mon_performance",
    "trends": "mon_trends",
    "alerts": "mon_alerts",
    "runs": "mon_runs",
}
WINDOW_IDENTITY = ["window_kind", "window_start", "model_version"]

DRIFT_SCHEMA = {
    "window_kind": pl.String,
    "window_start": pl.Date,
    "window_end": pl.Date,
    "model_version": pl.String,
    "feature": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "p_value": pl.Float64,
    "p_value_bh": pl.Float64,
    "threshold": pl.Float64,
    "warn_threshold": pl.Float64,
    "status": pl.String,
    "n_reference": pl.Int64,
    "n_current": pl.Int64,
    "run_id": pl.String,
    "computed_at": pl.Datetime("us"),
}
WINDOWS_SCHEMA = {
    "window_kind": pl.String,
    "window_start": pl.Date,
    "window_end": pl.Date,
    "model_version": pl.String,
    "status": pl.String,  # ok | too_small | stale_profile | no_artifact
    "overall_status": pl.String,
    "weighted_drift": pl.Float64,
    "n_rows": pl.Int64,
    "n_sampled": pl.Int64,
    "fingerprint": pl.String,
    "message": pl.String,
    "run_id": pl.String,
    "computed_at": pl.Datetime("us"),
}
PERFORMANCE_SCHEMA = {
    "window_kind": pl.String,
    "window_start": pl.Date,
    "window_end": pl.Date,
    "model_version": pl.String,
    "n_scored": pl.Int64,
    "n_with_outcome": pl.Int64,
    "roc_auc": pl.Float64,
    "precision": pl.Float64,
    "recall": pl.Float64,
    "threshold": pl.Float64,
    "flagged_share": pl.Float64,
    "observed_rate": pl.Float64,
    "mean_score": pl.Float64,
    "calibration_gap": pl.Float64,
    "status": pl.String,
    "run_id": pl.String,
    "computed_at": pl.Datetime("us"),
}
TRENDS_SCHEMA = {
    "window_kind": pl.String,
    "model_version": pl.String,
    "feature": pl.String,
    "metric": pl.String,
    "last_window_start": pl.Date,
    "last_value": pl.Float64,
    "slope_per_window": pl.Float64,
    "trend_windows": pl.Int64,
    "change_point_at": pl.Date,
    "change_point_p_value": pl.Float64,
    "run_id": pl.String,
    "computed_at": pl.Datetime("us"),
}
ALERTS_SCHEMA = {
    "window_kind": pl.String,
    "window_start": pl.Date,
    "window_end": pl.Date,
    "model_version": pl.String,
    "severity": pl.String,  # critical | warning | info
    "feature": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "reason": pl.String,
    "recommendation": pl.String,
    "run_id": pl.String,
    "computed_at": pl.Datetime("us"),
}
RUNS_SCHEMA = {
    "run_id": pl.String,
    "window_kind": pl.String,
    "started_at": pl.Datetime("us"),
    "finished_at": pl.Datetime("us"),
    "full": pl.Boolean,
    "windows_total": pl.Int64,
    "windows_recomputed": pl.Int64,
    "summary": pl.String,
}


class MonitoringError(Exception):
    """A monitoring run that cannot proceed (no scored data, unusable arguments, stale profile)."""


class StaleProfileError(MonitoringError):
    """A model artifact whose reference profile predates the fields monitoring needs."""


# =========================================================================== metrics
# Pure functions over count vectors; the tests compare them with scipy.


def shares(counts: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(counts, dtype=np.float64)
    total = array.sum()
    return array / total if total > 0 else np.zeros_like(array)


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """Population stability index, sum (q - p) ln(q / p), on shares floored at ``epsilon``."""
    p = np.maximum(shares(reference), epsilon)
    q = np.maximum(shares(current), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2 (0 = identical, 1 = disjoint supports)."""
    p, q = shares(reference), shares(current)
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        mask = a > 0
        return float(np.sum(a[mask] * np.log2(a[mask] / m[mask])))

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def chi_squared(reference_counts: np.ndarray, current_counts: np.ndarray) -> tuple[float, float]:
    """Chi-squared test of homogeneity on the 2 x k table (reference, current) of counts."""
    table = np.vstack([np.asarray(reference_counts, float), np.asarray(current_counts, float)])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 0.0, 1.0
    # scipy.stats.chi2_contingency(table, correction=False), without its per-call overhead
    # (a millisecond, times every feature of every window)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    return statistic, float(special.chdtrc(table.shape[1] - 1, statistic))  # = stats.chi2.sf


def ks_from_counts(
    reference_values: np.ndarray,
    reference_counts: np.ndarray,
    current_values: np.ndarray,
    current_counts: np.ndarray,
) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value from (distinct value, count) tables.

    Both ECDFs are right-continuous step functions, so the largest gap is at one of the
    values. The p-value is scipy's ``ks_2samp(method="asymp")`` formula up to an effective
    size n*m/(n+m) of KS_EXACT_EN, and the Kolmogorov limit distribution above it."""
    n, m = float(np.sum(reference_counts)), float(np.sum(current_counts))
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    r_order, c_order = np.argsort(reference_values), np.argsort(current_values)
    rv, rc = (
        np.asarray(reference_values, float)[r_order],
        np.cumsum(np.asarray(reference_counts, float)[r_order]),
    )
    cv, cc = np.asarray(current_values, float)[c_order], np.cumsum(np.asarray(current_counts, float)[c_order])
    points = np.union1d(rv, cv)

    def ecdf(values: np.ndarray, cumulative: np.ndarray, total: float) -> np.ndarray:
        index = np.searchsorted(values, points, side="right")
        return np.where(index > 0, cumulative[np.maximum(index - 1, 0)], 0.0) / total

    d = float(np.max(np.abs(ecdf(rv, rc, n) - ecdf(cv, cc, m))))
    en = n * m / (n + m)
    # kstwo's exact sum costs milliseconds at large n, where the limit law is as good
    # (special.kolmogorov is stats.kstwobign.sf without the distribution object's overhead)
    p = stats.kstwo.sf(d, np.round(en)) if en <= KS_EXACT_EN else special.kolmogorov(d * np.sqrt(en))
    p = float(np.clip(p, 0.0, 1.0))
    return d, p


def bh_adjust(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (NaN stays NaN)."""
    array = np.asarray(p_values, dtype=np.float64)
    out = np.full(array.shape, np.nan)
    mask = np.isfinite(array)
    if mask.any():
        out[mask] = stats.false_discovery_control(array[mask], method="bh")
    return out.tolist()


def slope(values: Sequence[float]) -> float:
    """Least-squares slope per window of the last values (NaN with fewer than two)."""
    y = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if y.size < 2:
        return float("nan")
    return float(np.polyfit(np.arange(y.size, dtype=np.float64), y, 1)[0])


def _shift_statistics(series: np.ndarray) -> np.ndarray:
    """For each row of ``series`` (permutations x windows), the best split's |t| and where.

    Returns an array (rows, 2): the largest |mean(before) - mean(after)| / pooled standard
    error over splits leaving at least two windows each side, and that split."""
    n = series.shape[1]
    splits = np.arange(2, n - 1)
    csum = np.cumsum(series, axis=1)
    csq = np.cumsum(series**2, axis=1)
    total, total_sq = csum[:, -1:], csq[:, -1:]
    a_n, b_n = splits.astype(float), (n - splits).astype(float)
    a_sum, a_sq = csum[:, splits - 1], csq[:, splits - 1]
    b_sum, b_sq = total - a_sum, total_sq - a_sq
    a_mean, b_mean = a_sum / a_n, b_sum / b_n
    ss = (a_sq - a_n * a_mean**2) + (b_sq - b_n * b_mean**2)  # within-segment sum of squares
    pooled = np.sqrt(np.maximum(ss, 0) / (n - 2))
    se = pooled * np.sqrt(1 / a_n + 1 / b_n)
    diff = np.abs(a_mean - b_mean)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 1e-12, diff / se, np.where(diff > 1e-12, np.inf, 0.0))
    best = np.argmax(t, axis=1)
    return np.column_stack([t[np.arange(t.shape[0]), best], splits[best]])


def change_point(values: Sequence[float], seed: int) -> tuple[int | None, float]:
    """The most likely single shift in mean and its permutation p-value.

    The statistic is the largest |t| of a mean shift over every split leaving at least two
    windows each side; its p-value comes from ``CHANGE_POINT_PERMUTATIONS`` fixed-seed
    permutations of the series (exchangeable when nothing changed), drawn sequentially and
    stopped early once the series cannot be significant (``CHANGE_POINT_STOP``). Returns (index of the
    first window after the shift in ``values``, p-value)."""
    y = np.asarray(values, dtype=np.float64)
    kept = np.flatnonzero(np.isfinite(y))  # missing windows are left out
    y = y[kept]
    if y.size < 4:
        return None, float("nan")
    observed, where = _shift_statistics(y[None, :])[0]
    if observed == 0:
        return None, 1.0
    rng = np.random.default_rng(seed)
    exceed, drawn = 0, 0
    while drawn < CHANGE_POINT_PERMUTATIONS:  # blocks of the one fixed-seed stream of permutations
        block = min(CHANGE_POINT_BLOCK, CHANGE_POINT_PERMUTATIONS - drawn)
        hits = np.flatnonzero(
            _shift_statistics(rng.permuted(np.tile(y, (block, 1)), axis=1))[:, 0] >= observed
        )
        if exceed + hits.size >= CHANGE_POINT_STOP:  # not significant: stop at the STOP-th hit
            at = drawn + int(hits[CHANGE_POINT_STOP - exceed - 1]) + 1
            return int(kept[int(where)]), CHANGE_POINT_STOP / at
        exceed, drawn = exceed + hits.size, drawn + block
    return int(kept[int(where)]), (exceed + 1) / (CHANGE_POINT_PERMUTATIONS + 1)


def worst(statuses: Iterable[str]) -> str:
    ranked = [s for s in statuses if s in STATUS_RANK]
    top = max(ranked, key=lambda s: STATUS_RANK[s], default=GREEN)
    return GREEN if top == INFO else top


# =========================================================================== reference


@dataclass(frozen=True)
class Reference:
    """What one model version's artifact gives the job: profile, threshold, importance."""

    version: str
    profile: dict[str, Any]
    threshold: float
    importance: dict[str, float]
    levels: dict[str, list[str]]
    digest: str
    # each numeric feature's (and the score's) KS reference as arrays, converted once per run
    # rather than once per feature and window (5,000-value lists)
    ks_arrays: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def check_profile(version: str, profile: dict[str, Any]) -> None:
    """Refuse a profile without the format-2 fields (tie-aware bins, KS reference, buckets)."""
    missing = []
    if int(profile.get("format", 1)) < PROFILE_FORMAT:
        missing.append(f"format {profile.get('format', 1)} < {PROFILE_FORMAT}")
    for name, spec in {**profile.get("features", {}), SCORE: profile.get("score", {})}.items():
        need = ("buckets",) if spec.get("kind") == "categorical" else ("bins", "ks_reference")
        if any(key not in spec for key in need):
            missing.append(name)
    if missing:
        raise StaleProfileError(
            f"model {version}: its reference profile lacks what monitoring needs ({', '.join(missing[:4])}"
            f"{', ...' if len(missing) > 4 else ''}): retrain. The version is the model's content hash and "
            f"training keeps an existing version folder, so remove artifacts/models/{version} first, then run "
            "model_training_evaluation.py"
        )


def load_reference(version: str) -> Reference:
    artifact = load_artifact(version)
    check_profile(version, artifact.profile)
    digest = hashlib.sha256(json.dumps(artifact.profile, sort_keys=True).encode()).hexdigest()
    return Reference(
        version=version,
        profile=artifact.profile,
        threshold=artifact.threshold,
        importance=artifact.importance,
        levels=artifact.feature_state.category_levels,
        digest=f"{artifact.model_sha256[:16]}/{digest[:16]}",
        ks_arrays={
            name: ks_arrays(spec)
            for name, spec in {**artifact.profile["features"], SCORE: artifact.profile["score"]}.items()
            if "ks_reference" in spec
        },
    )


def ks_arrays(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(values, counts) of a numeric profile entry's ``ks_reference``, as float arrays."""
    ks = spec["ks_reference"]
    return np.asarray(ks["values"], dtype=np.float64), np.asarray(ks["counts"], dtype=np.float64)


# =========================================================================== SQL


def _literal(value: float) -> str:
    # repr round-trips a double exactly; with an exponent DuckDB reads the literal as a
    # DOUBLE (without one, 0.1 would be a DECIMAL and an edge such as nextafter(0, -inf)
    # would round to 0). A string cast would be exact too, but costs plan time per edge.
    text = repr(float(value))
    if not np.isfinite(value):
        raise MonitoringError(f"a bin edge must be finite, not {value}")
    return text if "e" in text else f"{text}e0"


def _ident(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise MonitoringError(f"unexpected column name {name!r}")
    return f'"{name}"'


def bin_sql(expr: str, bins: dict[str, Any]) -> str:
    """SQL for the bin of ``expr``: -1 null/NaN, -2 outside the training range, else the
    number of edges below the value (the reference profile's right-closed bins)."""
    edges = bins.get("edges") or []
    inner = " + ".join(f"CAST({expr} > {_literal(e)} AS INTEGER)" for e in edges) or "0"
    out = ""
    if bins.get("min") is not None:
        out = f"WHEN {expr} < {_literal(bins['min'])} OR {expr} > {_literal(bins['max'])} THEN -2 "
    return f"CASE WHEN {expr} IS NULL OR isnan({expr}) THEN -1 {out}ELSE {inner} END"


def counts_sql(table: str, reference: Reference, columns: set[str]) -> str:
    """One query: (window_start, feature, value, label, unknown, bin, n) for every feature
    and the score of one model version, over every window in ``table`` (that version's rows).

    Numeric features are grouped by value first and binned per distinct value (exact, as
    the value is the group); the score, nearly unique per row, is binned per row and its
    values rounded to 1e-4 for the KS table (the KS statistic moves by at most the
    reference's mass within 5e-5 of a value)."""
    parts = []
    for name, spec in reference.profile["features"].items():
        col = _ident(name)
        if spec["kind"] == "numeric":
            parts.append(
                f"SELECT window_start, '{name}' AS feature, v AS value, NULL::VARCHAR AS label, "
                f"NULL::BOOLEAN AS unknown, {bin_sql('v', spec['bins'])} AS bin, n FROM "
                f"(SELECT window_start, CAST({col} AS DOUBLE) AS v, count(*) AS n FROM {table} GROUP BY ALL)"
            )
        else:
            flag = f"unknown_{name}"
            unknown = _ident(flag) if flag in columns else "FALSE"
            parts.append(
                f"SELECT window_start, '{name}' AS feature, NULL::DOUBLE AS value, CAST({col} AS VARCHAR) AS label, "
                f"coalesce({unknown}, FALSE) AS unknown, NULL::INTEGER AS bin, count(*) AS n "
                f"FROM {table} GROUP BY ALL"
            )
    score_bins = reference.profile["score"]["bins"]
    parts.append(
        f"SELECT window_start, '{SCORE}' AS feature, round(score, 4) AS value, NULL::VARCHAR, NULL::BOOLEAN, "
        f"b AS bin, count(*) AS n FROM (SELECT window_start, score, {bin_sql('score', score_bins)} AS b "
        f"FROM {table}) GROUP BY ALL"
    )
    return "\nUNION ALL\n".join(parts)


def _paths(dataset: str) -> list[str]:
    folder = Path(lake.dataset_glob(dataset)).parent
    return [(folder / f"{batch}.parquet").as_posix() for batch in lake.batch_ids(dataset)]


def _scan(paths: Sequence[str]) -> pl.LazyFrame:
    """A Polars scan of lake files; a column missing from older files reads as null."""
    return pl.scan_parquet(list(paths), missing_columns="insert", extra_columns="ignore")


def _sql_list(paths: Sequence[str]) -> str:
    return "[" + ", ".join("'" + p.replace("'", "''") + "'" for p in paths) + "]"


# a footer's string statistics this short are whole values (writers truncate long ones only)
EXACT_STATISTICS_CHARS = 64


def _footer(path: str) -> tuple[str, Any, Any, int, str | None] | None:
    """(file, lo, hi, rows, version) from one Parquet footer; None for a file without rows."""
    meta = pq.read_metadata(path)
    if meta.num_row_groups == 0 or meta.num_rows == 0:
        return None
    names = meta.schema.names
    groups = [meta.row_group(g) for g in range(meta.num_row_groups)]

    def stats(column: str) -> list[Any] | None:
        if column not in names:
            return None
        found = [g.column(names.index(column)).statistics for g in groups]
        return found if all(st is not None and st.has_min_max for st in found) else None

    dates, versions = stats("flight_date"), stats("model_version")
    lo = min(st.min for st in dates) if dates else None
    hi = max(st.max for st in dates) if dates else None
    version = None
    if versions and all(st.has_null_count and st.null_count == 0 for st in versions):
        values = {st.min for st in versions} | {st.max for st in versions}
        if len(values) == 1 and len(only := values.pop()) < EXACT_STATISTICS_CHARS:
            version = only
    return path, lo, hi, meta.num_rows, version


def file_date_ranges(con: duckdb.DuckDBPyConnection, paths: Sequence[str]) -> pl.DataFrame:
    """(file, lo, hi, rows, version) of every file with rows, from its Parquet footer only:
    the first and last flight_date, the row count, and the model version when the footer's
    statistics prove every row has the same one (null otherwise, or without the column).
    A file whose footer has no flight_date statistics is read for them."""
    schema = {"file": pl.String, "lo": pl.Date, "hi": pl.Date, "rows": pl.Int64, "version": pl.String}
    rows = [row for path in paths if (row := _footer(path)) is not None]
    meta = pl.DataFrame(rows, schema=schema, orient="row")
    unknown = meta.filter(pl.col("lo").is_null() | pl.col("hi").is_null())["file"].to_list()
    if unknown:  # no statistics in the footer: read the dates themselves
        read = con.sql(
            f"SELECT filename AS file, min(flight_date) AS lo, max(flight_date) AS hi "
            f"FROM read_parquet({_sql_list(unknown)}, filename = true) GROUP BY 1"
        ).pl()
        meta = meta.update(read, on="file")
    return meta.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def overlapping(ranges: pl.DataFrame, start: date, end: date) -> list[str]:
    return sorted(ranges.filter((pl.col("lo") < end) & (pl.col("hi") >= start))["file"].to_list())


# =========================================================================== the job


@dataclass(frozen=True)
class MonitorConfig:
    window: str = "week"
    sample_rows: int | None = DEFAULT_SAMPLE_ROWS  # None: every row
    min_rows: int = DEFAULT_MIN_ROWS
    trend_windows: int = DEFAULT_TREND_WINDOWS
    seed: int | None = None  # None: settings.seed
    full: bool = False
    register_views: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.window not in WINDOW_SQL:
            raise MonitoringError(f"window must be one of {sorted(WINDOW_SQL)}, not {self.window!r}")
        if self.sample_rows is not None and self.sample_rows < 1:
            raise MonitoringError(
                f"sample_rows must be at least 1 (or None for every row), not {self.sample_rows}"
            )
        if self.min_rows < 1 or self.trend_windows < 2:
            raise MonitoringError("min_rows must be >= 1 and trend_windows >= 2")

    def key(self) -> str:
        """What the results of a window depend on besides its data (part of its fingerprint)."""
        thresholds = {k: asdict(v) for k, v in THRESHOLDS.items()}
        return json.dumps(
            # the sample's hash is Polars' (stable within a version, not across versions)
            [
                MONITOR_VERSION,
                pl.__version__,
                self.window,
                self.sample_rows,
                self.min_rows,
                self.seed,
                thresholds,
            ],
            sort_keys=True,
        )


@dataclass(frozen=True)
class Window:
    """One window to (re)compute: its dates, files, fingerprint and scored rows per version."""

    start: date
    end: date
    files: list[str]
    actual_files: list[str]
    fingerprint: str
    rows: dict[str, int]
    sample_rows: int | None

    @property
    def fraction(self) -> float:
        """The share of flights measured: 1 when the window is small or sampling is off."""
        largest = max(self.rows.values())
        if self.sample_rows is None or largest <= self.sample_rows:
            return 1.0
        return self.sample_rows / largest

    @property
    def hash_limit(self) -> int:
        return 2**64 - 1 if self.fraction >= 1 else int(self.fraction * 2**64)

    @property
    def expected_rows(self) -> int:
        return int(sum(self.rows.values()) * self.fraction)


@dataclass
class RunSummary:
    run_id: str
    window: str
    windows_total: int
    windows_recomputed: int
    overall: dict[str, str] = field(default_factory=dict)  # model version -> status of its last window
    alerts: dict[str, int] = field(default_factory=dict)  # severity -> count (current alerts)
    stale_models: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        overall = ", ".join(f"{v}: {s}" for v, s in self.overall.items()) or "no window scored"
        alerts = ", ".join(f"{n} {s}" for s, n in sorted(self.alerts.items())) or "none"
        stale = f"; STALE PROFILE (retrain): {', '.join(self.stale_models)}" if self.stale_models else ""
        return (
            f"{self.windows_recomputed}/{self.windows_total} {self.window} windows recomputed; "
            f"latest window {overall}; alerts {alerts}{stale}; run {self.run_id} in {self.seconds:.1f}s"
        )


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Monitor:
    """One run of the job over an in-memory DuckDB connection (never the warehouse file)."""

    def __init__(self, config: MonitorConfig) -> None:
        self.config = config
        settings = get_settings()
        self.seed = settings.seed if config.seed is None else config.seed
        self.con = duckdb.connect(config={"threads": settings.n_threads})
        self.con.execute("SET enable_progress_bar = false")  # the job draws its own (tqdm)
        self.run_id = f"run-{_now():%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
        self.computed_at = _now()
        self.references: dict[str, Reference | None] = {}
        self.stale: dict[str, str] = {}

    # ------------------------------------------------------------------ inputs

    def reference(self, version: str) -> Reference | None:
        if version not in self.references:
            try:
                self.references[version] = load_reference(version)
            except StaleProfileError as exc:
                self.stale[version] = str(exc)
                self.references[version] = None
            except ArtifactError as exc:
                self.stale[version] = f"model {version}: {exc}"
                self.references[version] = None
        return self.references[version]

    def previous_fingerprints(self) -> dict[date, str]:
        """The fingerprint each window of this kind had in the run that last computed it."""
        paths = _paths(DATASETS["windows"])
        if not paths:
            return {}
        rows = self.con.sql(
            f"SELECT window_start, fingerprint FROM read_parquet({_sql_list(paths)}, union_by_name = true) "
            f"WHERE window_kind = '{self.config.window}' "
            "QUALIFY row_number() OVER (PARTITION BY window_start ORDER BY computed_at DESC, run_id DESC) = 1"
        ).fetchall()
        return {start: fingerprint for start, fingerprint in rows}

    # ------------------------------------------------------------------ one window

    def load_group(self, group: list[Window], columns: list[str]) -> pl.DataFrame:
        """The rows measured for a group of windows, each flight once per model version (its
        latest score), all of them or a fixed-seed sample of flights; registered in the job's
        DuckDB connection as ``cur`` for the counting SQL.

        The sample is drawn by a hash of the flight key and the seed: a flight is in it when
        ``hash(key, seed) <= fraction * 2^64``, so each flight is kept with probability
        ``fraction``, independently of the others (a Bernoulli sample of flights). Because
        every score of a flight has the same key, the sample commutes with keeping the latest
        score: the deduplication runs on the sample, not on every row (the keyed pass over
        10M rows is what would cost seconds), and the same seed gives the same sample whatever
        the thread count or file order.

        The read is a Polars scan with the sample as its predicate: Polars decodes the key
        columns first and the other ~70 columns only for the sampled rows, where a DuckDB
        scan decodes every row of every column before filtering (docs/monitoring.md,
        "Windows and samples", has the measurement)."""
        files = sorted({f for w in group for f in w.files})
        predicate, window_start = self._sample(group)
        frame = _scan(files).filter(predicate).select(window_start, *columns).collect()
        identity = [*KEY_COLUMNS, "model_version"]
        if frame.select(pl.struct(identity).is_duplicated().any()).item():
            # re-scored flights: keep each one's latest score (ties: the higher score), chosen
            # on the narrow columns and gathered once (sorting ~75 wide columns costs more)
            latest = (
                frame.select(*identity, "scored_at", SCORE)
                .with_row_index("row")
                .sort("scored_at", SCORE, descending=True, nulls_last=True, maintain_order=True)
                .unique(identity, keep="first", maintain_order=True)
                .get_column("row")
                .sort()
            )
            frame = frame[latest]
        self.con.register("cur", frame)
        return frame

    def _sample(self, group: list[Window]) -> tuple[pl.Expr, pl.Expr]:
        """(predicate, window_start) of a group: the flight's date in one of the group's
        windows (their bounds as the windows' SQL defined them) and the flight in its
        window's sample; the window each flight date belongs to."""
        dates: list[date] = []
        starts: list[date] = []
        limits: list[int] = []
        for window in group:
            for offset in range((window.end - window.start).days):
                dates.append(window.start + timedelta(days=offset))
                starts.append(window.start)
                limits.append(window.hash_limit)
        day = pl.col("flight_date")
        if any(window.fraction < 1 for window in group):
            # a date outside the group has no limit (null), so its rows fail the comparison
            limit = day.replace_strict(dates, limits, default=None, return_dtype=pl.UInt64)
            predicate = pl.struct(KEY_COLUMNS).hash(self.seed) <= limit
        else:
            predicate = day.is_in(dates)
        return predicate, day.replace_strict(dates, starts, default=None, return_dtype=pl.Date).alias(
            "window_start"
        )

    def drift_rows(
        self, reference: Reference, frame: pl.DataFrame, columns: set[str]
    ) -> dict[tuple[date, str], list[dict[str, Any]]]:
        """Drift rows of every window of one model version in the loaded ``frame``, by
        (window, version). The version's rows are counted as a table of their own (``cur``
        itself when it holds no other version), so the counting groups by window and value only."""
        versions = frame.get_column("model_version").unique()
        table = "cur" if versions.to_list() == [reference.version] else "cur_version"
        if table == "cur_version":
            self.con.register(table, frame.filter(pl.col("model_version") == reference.version))
        counts = self.con.sql(counts_sql(table, reference, columns)).pl()
        means = dict(
            self.con.sql(f"SELECT window_start, {EXACT_MEAN_SCORE} FROM {table} GROUP BY ALL").fetchall()
        )
        if table == "cur_version":
            self.con.unregister(table)
        return {
            (start, reference.version): window_drift(reference, part, means.get(start))
            for (start,), part in counts.partition_by("window_start", as_dict=True).items()
        }

    def performance(self, group: list[Window], thresholds: dict[str, float]) -> dict[tuple[date, str], dict]:
        """Realized performance of every (window, version) in ``cur`` whose outcomes have arrived:
        the measured flights (all of them, or the window's sample) joined with ``actuals``."""
        files = sorted({f for w in group for f in w.actual_files})
        measured = {
            (start, version): n
            for start, version, n in self.con.sql(
                "SELECT window_start, model_version, count(*) FROM cur GROUP BY ALL"
            ).fetchall()
        }
        result: dict[tuple[date, str], dict] = {
            k: {"n_scored": n, "n_with_outcome": 0} for k, n in measured.items()
        }
        if not files or not thresholds:
            return result
        keys = ", ".join(KEY_COLUMNS)
        predicate, _ = self._sample(group)  # the same flights as the scored sample
        self.con.register(
            "act", _scan(files).filter(predicate).select(*KEY_COLUMNS, "is_disrupted").collect()
        )
        values = ", ".join(f"('{v}', {float(t)!r}e0)" for v, t in thresholds.items())
        query = f"""
            WITH a AS (
                SELECT {keys}, any_value(is_disrupted) AS y FROM act GROUP BY ALL
            ), t AS (SELECT * FROM (VALUES {values}) t(model_version, thr)
            ), j AS (
                SELECT c.window_start, c.model_version, c.score, a.y, (c.score >= t.thr)::INT AS flagged
                FROM cur c JOIN a USING ({keys}) JOIN t USING (model_version) WHERE a.y IS NOT NULL
            ), g AS (  -- one row per distinct score: ties get the average rank (Mann-Whitney)
                SELECT window_start, model_version, score, sum(y) AS pos, count(*) - sum(y) AS neg, count(*) AS n
                FROM j GROUP BY ALL
            ), r AS (
                SELECT *, sum(n) OVER (PARTITION BY window_start, model_version ORDER BY score
                                       ROWS UNBOUNDED PRECEDING) - n + (n + 1) / 2.0 AS rank
                FROM g
            ), auc AS (
                SELECT window_start, model_version,
                       (sum(pos * rank) - sum(pos) * (sum(pos) + 1) / 2.0) / nullif(sum(pos) * sum(neg), 0) AS roc_auc
                FROM r GROUP BY ALL
            )
            SELECT window_start, model_version, count(*) AS n_with_outcome, any_value(auc.roc_auc) AS roc_auc,
                   sum(y * flagged) / nullif(sum(flagged), 0) AS precision,
                   sum(y * flagged) / nullif(sum(y), 0) AS recall,
                   avg(flagged) AS flagged_share, avg(y) AS observed_rate, {EXACT_MEAN_SCORE} AS mean_score
            FROM j JOIN auc USING (window_start, model_version) GROUP BY ALL
        """
        cursor = self.con.execute(query)
        names = [column[0] for column in cursor.description]
        rows = cursor.fetchall()
        self.con.unregister("act")
        for row in rows:
            record = dict(zip(names, row, strict=True))
            key = (record.pop("window_start"), record.pop("model_version"))
            result[key] = {**result.get(key, {"n_scored": 0}), **record}
        return result

    # ------------------------------------------------------------------ the run

    def run(self) -> RunSummary:
        started = time.perf_counter()
        config = self.config
        scored_paths = _paths(SCORED_DATASET)
        if not scored_paths:
            raise MonitoringError(
                f"nothing to monitor: the scored dataset has no batches ({lake.dataset_glob('scored')})"
            )
        actual_paths = _paths(ACTUALS_DATASET)
        scored_ranges = file_date_ranges(self.con, scored_paths)
        actual_ranges = file_date_ranges(self.con, actual_paths)
        available = set(
            self.con.sql(f"SELECT * FROM read_parquet({_sql_list(scored_paths[:1])}) LIMIT 0").columns
        )
        counts = self.window_counts(scored_ranges)
        per_window: dict[tuple[date, date], dict[str, int]] = {}
        for start, end, version, n in counts:
            per_window.setdefault((start, end), {})[version] = n
        versions = sorted({version for _, _, version, _ in counts})
        if versions and all(self.reference(v) is None for v in versions):
            raise StaleProfileError("; ".join(self.stale[v] for v in versions))
        profiles = "|".join(
            f"{v}={ref.digest if (ref := self.reference(v)) else 'unusable'}" for v in versions
        )
        previous = {} if config.full else self.previous_fingerprints()
        todo: list[Window] = []
        for (start, end), rows in per_window.items():
            files = overlapping(scored_ranges, start, end)
            # outcomes of the dates the window's scored files cover (a partial first week
            # does not read the outcome history published before the scored period)
            held = scored_ranges.filter(pl.col("file").is_in(files))
            first = max(start, held["lo"].min())
            last = min(end, held["hi"].max() + timedelta(days=1))
            actuals = overlapping(actual_ranges, first, last)
            fingerprint = hashlib.sha256(
                "\n".join([config.key(), profiles, *files, "--", *actuals]).encode()
            ).hexdigest()
            if previous.get(start) != fingerprint:
                todo.append(Window(start, end, files, actuals, fingerprint, rows, config.sample_rows))
        windows_total = len(per_window)

        columns = self._columns(available, versions)
        out: dict[str, list[dict[str, Any]]] = {k: [] for k in DATASETS}
        groups: list[list[Window]] = []
        for window in todo:  # groups of windows whose measured rows fit FLUSH_ROWS
            if not groups or sum(w.expected_rows for w in groups[-1]) + window.expected_rows > FLUSH_ROWS:
                groups.append([])
            groups[-1].append(window)
        for group in tqdm(groups, desc=f"{config.window} windows ({len(todo)})", disable=not config.progress):
            frame = self.load_group(group, columns)
            self._measure(out, group, frame, set(columns))
            self.con.unregister("cur")

        self._write(out, ("windows", "drift", "performance"))
        summary = RunSummary(
            self.run_id, config.window, windows_total, len(todo), stale_models=sorted(self.stale)
        )
        if todo or not _paths(DATASETS["trends"]):
            self._trends_and_alerts(summary)
        else:
            self._current_summary(summary)
        summary.seconds = time.perf_counter() - started
        self._write_run(summary)
        if config.register_views:
            register_monitoring_views()
        return summary

    def window_counts(self, files: pl.DataFrame) -> list[tuple[date, date, str, int]]:
        """(window_start, window_end, model_version, scored rows) of every window that holds a
        scored flight, defined in SQL over the flight dates. A file whose footer shows one
        window and one model version (``file_date_ranges``; a daily batch) counts from its
        footer; the others are read (two narrow columns)."""
        kind, interval = self.config.window, WINDOW_SQL[self.config.window][1]
        starts, first, last = (window_start_sql(kind, c) for c in ("flight_date", "lo", "hi"))
        self.con.register("scored_files", files)
        whole = (
            f"SELECT {first} AS window_start, version AS model_version, rows AS n FROM scored_files "
            f"WHERE version IS NOT NULL AND {first} = {last}"
        )
        mixed = self.con.sql(
            f"SELECT file FROM scored_files WHERE version IS NULL OR {first} <> {last}"
        ).fetchall()
        parts = [whole]
        if mixed:
            parts.append(
                f"SELECT {starts} AS window_start, model_version, count(*) AS n "
                f"FROM read_parquet({_sql_list([f for (f,) in mixed])}, union_by_name = true) GROUP BY ALL"
            )
        counts = self.con.sql(
            f"SELECT window_start, CAST(window_start + {interval} AS DATE) AS window_end, model_version, "
            f"CAST(sum(n) AS BIGINT) AS n FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL ORDER BY 1, 3"
        ).fetchall()
        self.con.unregister("scored_files")
        return counts

    def _columns(self, available: set[str], versions: list[str]) -> list[str]:
        needed = [*KEY_COLUMNS, "flight_date", "model_version", "scored_at", SCORE]
        for version in versions:
            reference = self.references.get(version)
            if reference is not None:
                needed += list(reference.profile["features"])
        needed += [f"unknown_{c}" for c in fe.CATEGORICAL_FEATURES]
        wanted = list(dict.fromkeys(needed))
        missing = [c for c in wanted if c not in available and not c.startswith("unknown_")]
        if missing:
            raise MonitoringError(f"the scored dataset lacks column(s) {missing} that monitoring needs")
        return [c for c in wanted if c in available]

    def _measure(
        self,
        out: dict[str, list[dict[str, Any]]],
        group: list[Window],
        frame: pl.DataFrame,
        columns: set[str],
    ) -> None:
        """Drift, performance and window rows of every (window, version) of a loaded group."""
        stamp = {"run_id": self.run_id, "computed_at": self.computed_at}
        usable = {v: r for v, r in self.references.items() if r is not None}
        perf = self.performance(group, {v: r.threshold for v, r in usable.items()})
        drift: dict[tuple[date, str], list[dict[str, Any]]] = {}
        for version in sorted({v for w in group for v in w.rows} & set(usable)):
            drift.update(self.drift_rows(usable[version], frame, columns))
        capped = self.config.window not in FULL_STATUS_WINDOWS
        for window in group:
            for version, n_rows in sorted(window.rows.items()):
                base = {
                    "window_kind": self.config.window,
                    "window_start": window.start,
                    "window_end": window.end,
                    "model_version": version,
                }
                record = {
                    **base,
                    "n_rows": n_rows,
                    "n_sampled": 0,
                    "fingerprint": window.fingerprint,
                    **stamp,
                }
                reference = usable.get(version)
                if reference is None:
                    out["windows"].append(
                        {**record, "status": "stale_profile", "message": self.stale[version]}
                    )
                    continue
                if n_rows < self.config.min_rows:
                    message = f"{n_rows} scored rows < min_rows {self.config.min_rows}: too small to score"
                    out["windows"].append({**record, "status": "too_small", "message": message})
                    continue
                rows = drift.get((window.start, version), [])
                if capped:
                    cap_day_level(rows)
                weighted, overall = feature_statuses(rows, reference.importance, capped)
                out["drift"] += [{**base, **row, **stamp} for row in rows]
                measured = perf.get((window.start, version), {"n_scored": 0, "n_with_outcome": 0})
                out["performance"].append({**base, **performance_row(measured, reference.threshold), **stamp})
                record["n_sampled"] = measured["n_scored"]
                out["windows"].append(
                    {
                        **record,
                        "status": "ok",
                        "overall_status": overall,
                        "weighted_drift": weighted,
                        "message": None,
                    }
                )

    # ------------------------------------------------------------------ outputs

    def _write(self, out: dict[str, list[dict[str, Any]]], kinds: Iterable[str]) -> None:
        schemas = SCHEMAS
        for kind in kinds:
            if not out[kind]:
                continue
            frame = pl.DataFrame(
                [{k: row.get(k) for k in schemas[kind]} for row in out[kind]], schema=schemas[kind]
            )
            lake.write_batch(DATASETS[kind], self.run_id, frame.to_arrow())

    def current(self, kind: str) -> pl.DataFrame:
        """The current rows of an output dataset (the view's definition, on the lake directly)."""
        return current_rows(self.con, kind, self.config.window)

    def _trends_and_alerts(self, summary: RunSummary) -> None:
        drift = self.current("drift").sort("window_start")
        windows = self.current("windows").sort("window_start")
        performance = self.current("performance").sort("window_start")
        stamp = {"window_kind": self.config.window, "run_id": self.run_id, "computed_at": self.computed_at}
        trends = trend_rows(drift, self.config.trend_windows, self.seed)
        alerts = alert_rows(drift, windows, performance, self.config.window)
        out = {"trends": [{**r, **stamp} for r in trends], "alerts": [{**r, **stamp} for r in alerts]}
        self._write(out, ("trends", "alerts"))
        self._summarise(summary, windows, alerts)

    def _current_summary(self, summary: RunSummary) -> None:
        self._summarise(summary, self.current("windows"), self.current("alerts").to_dicts())

    @staticmethod
    def _summarise(summary: RunSummary, windows: pl.DataFrame, alerts: list[dict[str, Any]]) -> None:
        ok = windows.filter(pl.col("status") == "ok").sort("window_start")
        for version, group in ok.group_by("model_version", maintain_order=True):
            summary.overall[str(version[0])] = f"{group['overall_status'][-1]} ({group['window_start'][-1]})"
        for alert in alerts:
            summary.alerts[alert["severity"]] = summary.alerts.get(alert["severity"], 0) + 1

    def _write_run(self, summary: RunSummary) -> None:
        row = {
            "run_id": self.run_id,
            "window_kind": self.config.window,
            "started_at": self.computed_at,
            "finished_at": _now(),
            "full": self.config.full,
            "windows_total": summary.windows_total,
            "windows_recomputed": summary.windows_recomputed,
            "summary": summary.line(),
        }
        self._write({"runs": [row]}, ("runs",))


# =========================================================================== per-feature metrics


def _metric(
    feature: str,
    metric: str,
    value: float | None,
    p_value: float | None,
    n_reference: int,
    n_current: int,
) -> dict[str, Any]:
    threshold = THRESHOLDS.get(metric)
    value = None if value is None or not np.isfinite(value) else float(value)
    return {
        "feature": feature,
        "metric": metric,
        "value": value,
        "p_value": None if p_value is None or not np.isfinite(p_value) else float(p_value),
        "p_value_bh": None,
        "threshold": threshold.red if threshold else None,
        "warn_threshold": threshold.yellow if threshold else None,
        "status": threshold.status(value) if threshold else INFO,
        "n_reference": int(n_reference),
        "n_current": int(n_current),
    }


def numeric_distributions(spec: dict[str, Any], counts: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """Reference shares and current counts over [null, out of range, bin 0..k]."""
    bins = spec["bins"]
    k = len(bins["shares"])
    null = float(spec.get("null_rate") or 0.0)
    reference = np.concatenate([[null, 0.0], (1 - null) * np.asarray(bins["shares"], dtype=np.float64)])
    # numpy on the table's columns: this runs for every feature of every window
    b = counts.get_column("bin").to_numpy().astype(np.int64)
    index = np.where(b == -1, 0, np.where(b == -2, 1, b + 2))
    weights = counts.get_column("n").to_numpy().astype(np.float64)
    current = np.bincount(index, weights=weights, minlength=k + 2)
    return reference, current, int(spec.get("n") or 0)


def numeric_metrics(
    name: str,
    spec: dict[str, Any],
    counts: pl.DataFrame,
    reference_ks: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[dict[str, Any]]:
    """The numeric rows of one feature and window; ``reference_ks`` is ``ks_arrays(spec)``
    when the caller has it already."""
    reference, current, n_ref = numeric_distributions(spec, counts)
    n_cur = int(current.sum())
    if n_cur == 0:  # an empty window: nothing to compare
        return [_metric(name, m, None, None, n_ref, 0) for m in ("psi", "js_distance", "ks_statistic")]
    rows = [
        _metric(name, "psi", psi(reference, current), None, n_ref, n_cur),
        _metric(name, "js_distance", js_distance(reference, current), None, n_ref, n_cur),
    ]
    chi2, chi2_p = chi_squared(reference * n_ref, current)
    rows.append(_metric(name, "chi2_statistic", chi2, chi2_p, n_ref, n_cur))
    ks = spec["ks_reference"]
    value = counts.get_column("value").cast(pl.Float64).to_numpy()  # null -> NaN
    known = ~np.isnan(value)
    if known.any() and ks["n"]:
        n_values = counts.get_column("n").to_numpy()[known]
        d, p = ks_from_counts(*(reference_ks or ks_arrays(spec)), value[known], n_values)
        rows.append(_metric(name, "ks_statistic", d, p, ks["n"], int(n_values.sum())))
    else:  # an all-null window: no values to compare, the null rate says it
        rows.append(_metric(name, "ks_statistic", None, None, ks["n"], 0))
    rows.append(_metric(name, "null_rate_change", current[0] / n_cur - reference[0], None, n_ref, n_cur))
    rows.append(_metric(name, "unseen_share", current[1] / n_cur, None, n_ref, n_cur))
    return rows


def categorical_distributions(
    spec: dict[str, Any], counts: pl.DataFrame, levels: list[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Bucket names, reference shares and current counts (levels, ``__unseen__``, ``__null__``)
    of a (label, unknown, n) count table."""
    buckets: dict[str, float] = spec["buckets"]
    names = list(buckets)
    index = {bucket: i for i, bucket in enumerate(names)}
    known = set(levels)
    current = np.zeros(len(names))
    for label, unknown, n in counts.select("label", "unknown", "n").iter_rows():
        if unknown:
            bucket = UNSEEN_BUCKET
        elif label is None:
            bucket = NULL_BUCKET
        elif label in known:  # carrier / origin: the string as sent
            bucket = label
        elif label.lstrip("-").isdigit() and 0 <= int(label) < len(
            levels
        ):  # dest etc.: a code into the levels
            bucket = levels[int(label)]
        else:
            bucket = UNSEEN_BUCKET
        current[index[bucket]] += n
    return names, np.asarray([buckets[b] for b in names], dtype=np.float64), current


def categorical_metrics(
    name: str, spec: dict[str, Any], counts: pl.DataFrame, levels: list[str]
) -> list[dict[str, Any]]:
    buckets: dict[str, float] = spec["buckets"]
    names, reference, current = categorical_distributions(spec, counts, levels)
    index = {bucket: i for i, bucket in enumerate(names)}
    n_ref, n_cur = int(spec.get("n") or 0), int(current.sum())
    if n_cur == 0:
        return [_metric(name, m, None, None, n_ref, 0) for m in ("psi", "js_distance", "chi2_statistic")]
    chi2, chi2_p = chi_squared(reference * n_ref, current)
    return [
        _metric(name, "psi", psi(reference, current), None, n_ref, n_cur),
        _metric(name, "js_distance", js_distance(reference, current), None, n_ref, n_cur),
        _metric(name, "chi2_statistic", chi2, chi2_p, n_ref, n_cur),
        _metric(
            name,
            "null_rate_change",
            current[index[NULL_BUCKET]] / n_cur - buckets[NULL_BUCKET],
            None,
            n_ref,
            n_cur,
        ),  # fmt: skip
        _metric(name, "unseen_share", current[index[UNSEEN_BUCKET]] / n_cur, None, n_ref, n_cur),
    ]


def window_drift(
    reference: Reference, counts: pl.DataFrame, current_mean: float | None
) -> list[dict[str, Any]]:
    """Every drift row of one (window, model version) from its count table."""
    parts = counts.partition_by("feature", as_dict=True)
    empty = counts.clear()
    rows: list[dict[str, Any]] = []
    for name, spec in reference.profile["features"].items():
        part = parts.get((name,), empty)
        if spec["kind"] == "numeric":
            rows += numeric_metrics(name, spec, part, reference.ks_arrays.get(name))
        else:
            rows += categorical_metrics(name, spec, part, reference.levels.get(name, spec.get("levels", [])))
    score_spec = reference.profile["score"]
    score_part = parts.get((SCORE,), empty)
    rows += numeric_metrics(SCORE, score_spec, score_part, reference.ks_arrays.get(SCORE))
    if current_mean is not None:
        rows.append(
            _metric(SCORE, "mean_score_change", current_mean - score_spec["mean"], None, score_spec["n"], 0)
        )
    n_current = int(score_part["n"].sum())
    for row in rows:
        row["n_current"] = row["n_current"] or n_current
    # BH per window and test family (KS over the numeric features, chi-squared over all)
    for metric in ("ks_statistic", "chi2_statistic"):
        family = [r for r in rows if r["metric"] == metric and r["feature"] != SCORE]
        for row, adjusted in zip(family, bh_adjust([r["p_value"] for r in family]), strict=True):
            row["p_value_bh"] = adjusted
    return rows


def cap_day_level(rows: list[dict[str, Any]]) -> None:
    """Day-level features in short windows: red becomes yellow (see DAY_LEVEL_FEATURES)."""
    for row in rows:
        if row["feature"] in DAY_LEVEL_FEATURES and row["status"] == RED:
            row["status"] = YELLOW


def feature_statuses(
    rows: list[dict[str, Any]], importance: dict[str, float], capped: bool = False
) -> tuple[float, str]:
    """Append a ``status`` row per feature (worst effect metric; value = its importance) and
    the overall row (importance-weighted drift: red counts 1, yellow 0.5); returns the latter."""
    by_feature: dict[str, list[str]] = {}
    n_ref_cur: dict[str, tuple[int, int]] = {}
    for row in rows:
        if row["metric"] in EFFECT_METRICS:
            by_feature.setdefault(row["feature"], []).append(row["status"])
            n_ref_cur[row["feature"]] = (row["n_reference"], row["n_current"])
    weighted = 0.0
    for feature, statuses in by_feature.items():
        status = worst(statuses)
        weight = importance.get(feature, 0.0)
        if feature != SCORE and not (capped and feature in DAY_LEVEL_FEATURES):
            weighted += weight * STATUS_WEIGHT[status]
        row = _metric(feature, "status", weight, None, *n_ref_cur[feature])
        row["status"] = status
        rows.append(row)
    overall = _metric(OVERALL, "weighted_drift", weighted, None, *next(iter(n_ref_cur.values()), (0, 0)))
    rows.append(overall)
    return weighted, overall["status"]


def performance_row(perf: dict[str, Any], threshold: float) -> dict[str, Any]:
    row = dict(perf)
    row["threshold"] = threshold
    gap = None
    if row.get("observed_rate") is not None and row.get("mean_score") is not None:
        gap = float(row["observed_rate"]) - float(row["mean_score"])
    row["calibration_gap"] = gap
    statuses = [THRESHOLDS["roc_auc"].status(row.get("roc_auc")), THRESHOLDS["calibration_gap"].status(gap)]
    row["status"] = worst(statuses) if row.get("n_with_outcome") else INFO
    for k in ("roc_auc", "precision", "recall", "flagged_share", "observed_rate", "mean_score"):
        row[k] = None if row.get(k) is None else float(row[k])
    return row


# =========================================================================== trends and alerts

TREND_METRICS = ("psi", "js_distance", "ks_statistic", "unseen_share", "weighted_drift")


def trend_rows(drift: pl.DataFrame, k: int, seed: int) -> list[dict[str, Any]]:
    """Per (model, feature, metric): slope over the last k windows and a change-point test."""
    rows: list[dict[str, Any]] = []
    series = drift.filter(pl.col("metric").is_in(TREND_METRICS)).sort("window_start")
    for (version, feature, metric), group in series.group_by(
        "model_version", "feature", "metric", maintain_order=True
    ):
        values = group["value"].to_list()
        starts = group["window_start"].to_list()
        where, p = change_point([np.nan if v is None else v for v in values], seed)
        rows.append(
            {
                "model_version": version,
                "feature": feature,
                "metric": metric,
                "last_window_start": starts[-1],
                "last_value": values[-1],
                "slope_per_window": slope(values[-k:]),
                "trend_windows": min(k, len(values)),
                "change_point_at": starts[where] if where is not None and p < CHANGE_POINT_ALPHA else None,
                "change_point_p_value": None if not np.isfinite(p) else p,
            }
        )
    return rows


def _streak_ends(flags: list[bool], minimum: int) -> list[tuple[int, int]]:
    """(index of the last window, length) of every run of True at least ``minimum`` long."""
    ends, length = [], 0
    for i, flag in enumerate([*flags, False]):
        if flag:
            length += 1
            continue
        if length >= minimum:
            ends.append((i - 1, length))
        length = 0
    return ends


def alert_rows(
    drift: pl.DataFrame, windows: pl.DataFrame, performance: pl.DataFrame, kind: str
) -> list[dict[str, Any]]:
    """The alert rules (docs/monitoring.md, "Alerts") over the current window series."""
    alerts: list[dict[str, Any]] = []

    def add(row: dict[str, Any], severity: str, feature: str, metric: str, value: float | None,
            reason: str, recommendation: str) -> None:  # fmt: skip
        alerts.append(
            {"window_start": row["window_start"], "window_end": row["window_end"], "model_version": row["model_version"],
             "severity": severity, "feature": feature, "metric": metric, "value": value, "reason": reason,
             "recommendation": recommendation}
        )  # fmt: skip

    for row in windows.filter(pl.col("status") == "stale_profile").to_dicts():
        add(row, "critical", OVERALL, "profile", None, row["message"], "retrain")

    psi_rows = drift.filter(pl.col("metric") == "psi").sort("window_start")
    for (_version, feature), group in psi_rows.group_by("model_version", "feature", maintain_order=True):
        records = group.to_dicts()
        red = [r["status"] == RED for r in records]
        for end, length in _streak_ends(red, CONSECUTIVE_RED_FOR_RETRAIN):
            r = records[end]
            add(r, "critical", feature, "psi", r["value"],
                f"PSI of {feature} > {THRESHOLDS['psi'].red} for {length} consecutive {kind}s "
                f"(latest {r['value']:.3f})", "retrain")  # fmt: skip

    for r in drift.filter((pl.col("metric") == "unseen_share") & (pl.col("status") != GREEN)).to_dicts():
        if r["feature"] in fe.CATEGORICAL_FEATURES:
            add(r, "warning" if r["status"] == YELLOW else "critical", r["feature"], "unseen_share", r["value"],
                f"unseen categories in {r['feature']}: {r['value']:.1%} of the {kind}'s flights",
                "review the category mapping")  # fmt: skip
        else:
            add(r, "warning", r["feature"], "unseen_share", r["value"],
                f"{r['value']:.1%} of {r['feature']} outside the training range",
                "check the feature's source; retrain if the new range persists")  # fmt: skip

    for r in drift.filter(
        (pl.col("feature") == SCORE) & (pl.col("metric") == "psi") & (pl.col("status") == RED)
    ).to_dicts():
        add(r, "warning", SCORE, "psi", r["value"], f"prediction drift: PSI of the score {r['value']:.3f}",
            "check the inputs that moved; the flagged share moves with it")  # fmt: skip

    for r in drift.filter((pl.col("metric") == "weighted_drift") & (pl.col("status") == RED)).to_dicts():
        add(r, "critical", OVERALL, "weighted_drift", r["value"],
            f"importance-weighted drift {r['value']:.2f} > {THRESHOLDS['weighted_drift'].red}", "retrain")  # fmt: skip

    for r in performance.to_dicts():
        auc = r.get("roc_auc")
        if auc is not None and THRESHOLDS["roc_auc"].status(auc) == RED:
            add(r, "critical", SCORE, "roc_auc", auc,
                f"realized ROC-AUC fell below {THRESHOLDS['roc_auc'].red} ({auc:.3f})",
                "investigate before trusting the scores")  # fmt: skip
        gap = r.get("calibration_gap")
        if gap is not None and THRESHOLDS["calibration_gap"].status(gap) == RED:
            add(r, "warning", SCORE, "calibration_gap", gap,
                f"observed disruption rate {r['observed_rate']:.1%} vs mean score {r['mean_score']:.1%}",
                "recalibrate or retrain: the threshold's cost trade-off no longer holds")  # fmt: skip
    return alerts


# =========================================================================== views

# Which rows are current. Windows: the latest run that computed each window; drift and
# performance: that run's rows for the window; trends and alerts: the latest run that
# wrote them, per window kind (they are recomputed over the whole series every run).
CURRENT_SQL = {
    "windows": (
        "SELECT * FROM {windows} QUALIFY row_number() OVER "
        f"(PARTITION BY {', '.join(WINDOW_IDENTITY)} ORDER BY computed_at DESC, run_id DESC) = 1"
    ),
    "drift": (
        "SELECT d.* FROM {drift} d SEMI JOIN (SELECT * FROM {windows} QUALIFY row_number() OVER "
        f"(PARTITION BY {', '.join(WINDOW_IDENTITY)} ORDER BY computed_at DESC, run_id DESC) = 1) w "
        f"USING (run_id, {', '.join(WINDOW_IDENTITY)})"
    ),
    "performance": (
        "SELECT d.* FROM {performance} d SEMI JOIN (SELECT * FROM {windows} QUALIFY row_number() OVER "
        f"(PARTITION BY {', '.join(WINDOW_IDENTITY)} ORDER BY computed_at DESC, run_id DESC) = 1) w "
        f"USING (run_id, {', '.join(WINDOW_IDENTITY)})"
    ),
    "trends": (
        "SELECT * FROM {trends} QUALIFY run_id = "
        "first(run_id ORDER BY computed_at DESC, run_id DESC) OVER (PARTITION BY window_kind)"
    ),
    "alerts": (
        "SELECT * FROM {alerts} QUALIFY run_id = "
        "first(run_id ORDER BY computed_at DESC, run_id DESC) OVER (PARTITION BY window_kind)"
    ),
}
VIEW_NAMES = {kind: f"monitoring_{kind}" for kind in CURRENT_SQL}
SCHEMAS = {
    "windows": WINDOWS_SCHEMA,
    "drift": DRIFT_SCHEMA,
    "performance": PERFORMANCE_SCHEMA,
    "trends": TRENDS_SCHEMA,
    "alerts": ALERTS_SCHEMA,
    "runs": RUNS_SCHEMA,
}


def current_rows(con: duckdb.DuckDBPyConnection, kind: str, window: str | None = None) -> pl.DataFrame:
    """The current rows of an output (what its ``monitoring_*`` view shows), read from the lake."""
    needed = set(re.findall(r"\{(\w+)\}", CURRENT_SQL[kind]))
    paths = {name: _paths(DATASETS[name]) for name in needed}
    if not all(paths.values()):
        return pl.DataFrame(schema=SCHEMAS[kind])
    sources = {name: f"read_parquet({_sql_list(p)}, union_by_name = true)" for name, p in paths.items()}
    where = "" if window is None else f" WHERE window_kind = '{window}'"
    return con.sql(f"SELECT * FROM ({CURRENT_SQL[kind].format(**sources)}){where}").pl()


def register_monitoring_views(warehouse_path: Path | None = None) -> list[str]:
    """(Re)create the raw ``mon_*`` views and the current ``monitoring_*`` views.

    The warehouse is opened read-write for this moment only; when another process holds it,
    the views of an earlier run stay (they re-glob the lake, so they already show this run)."""
    try:
        with connect(warehouse_path) as con:
            registered = set(lake.register_views(con, DATASETS.values()).registered)
            created = []
            for kind, sql in CURRENT_SQL.items():
                needed = set(re.findall(r"\{(\w+)\}", sql))
                if all(DATASETS[n] in registered for n in needed):
                    con.execute(
                        f'CREATE OR REPLACE VIEW "{VIEW_NAMES[kind]}" AS '
                        + sql.format(**{n: DATASETS[n] for n in needed})
                    )
                    created.append(VIEW_NAMES[kind])
            return created
    except duckdb.IOException as exc:
        logger.warning("warehouse busy, monitoring views not refreshed (%s); the lake holds this run", exc)
        return []


# =========================================================================== CLI


def run_once(config: MonitorConfig | None = None) -> RunSummary:
    return Monitor(config or MonitorConfig()).run()


def parse_every(text: str) -> float:
    """'90s', '15m', '1h', '1d' -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text or "")
    if not match:
        raise argparse.ArgumentTypeError(f"--every takes a duration like 30s, 15m, 1h or 1d, not {text!r}")
    seconds = float(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds <= 0:
        raise argparse.ArgumentTypeError("--every must be positive")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Windowed drift (KS, PSI, JS, chi-squared) and realized performance of the scored table, "
        "against the model's stored reference profile; results as lake datasets and warehouse views.",
        epilog="Settings come from MLOPS_* environment variables (settings.py); see docs/monitoring.md.",
    )
    parser.add_argument("--window", choices=sorted(WINDOW_SQL), default="week", help="window by flight date")
    parser.add_argument("--sample-rows", type=int, default=DEFAULT_SAMPLE_ROWS,
                        help=f"flights sampled per window (default {DEFAULT_SAMPLE_ROWS:,}); 0 = every flight")  # fmt: skip
    parser.add_argument(
        "--min-rows", type=int, default=DEFAULT_MIN_ROWS, help="smaller windows are 'too small'"
    )
    parser.add_argument(
        "--trend-windows", type=int, default=DEFAULT_TREND_WINDOWS, help="k for the trend slope"
    )
    parser.add_argument("--full", action="store_true", help="recompute every window, not only changed ones")
    parser.add_argument("--every", type=parse_every, metavar="DURATION", help="run periodically (e.g. 1h)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = MonitorConfig(
            window=args.window,
            sample_rows=args.sample_rows or None,
            min_rows=args.min_rows,
            trend_windows=args.trend_windows,
            full=args.full,
        )
        while True:
            summary = run_once(config)
            print(f"[monitor] {summary.line()}", flush=True)
            if args.every is None:
                return 0
            config = MonitorConfig(**{**asdict(config), "full": False})  # later runs: changed windows only
            time.sleep(args.every)
    except (MonitoringError, ArtifactError, lake.SchemaMismatch) as exc:
        print(f"model_monitoring: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
