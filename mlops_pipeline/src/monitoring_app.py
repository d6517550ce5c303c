"""The monitoring app: can we trust tonight's scores, and if not, why.

    .venv/bin/streamlit run mlops_pipeline/src/monitoring_app.py

Six views over the monitoring job's results (``model_monitoring.py``; docs/app.md shows
each): Overview, Feature view, Drift table, Time analysis, Performance, Recommendations.
The sidebar holds the controls (view, window granularity, date range, window, feature,
metric, and the model version when there are several). Every page starts with how fresh
the data is (latest scored batch, latest outcomes, latest monitoring run) and says so when
it is behind, so a stale dashboard never looks like a calm one.

This file is layout only. What it shows comes from ``monitoring_views`` (plain functions,
tested on their own; figures in ``monitoring_figures``), wrapped here in ``st.cache_data`` keyed by the lake's file listing:
an interaction re-reads nothing unless a batch or a monitoring run was published. The app
reads the lake's Parquet files through in-memory DuckDB connections and never opens
``warehouse.duckdb``, so it is never in the main job's way; it never computes monitoring
either: when a granularity has not been computed, it gives the command.
"""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path

SRC = str(Path(__file__).resolve().parent)
if SRC not in sys.path:  # `streamlit run` from any folder
    sys.path.insert(0, SRC)

import pandas as pd  # noqa: E402  (the path above first)
import pandas.io.formats.style  # noqa: E402, F401  (jinja2 at start-up, not at the first drift table)
import polars as pl  # noqa: E402
import streamlit as st  # noqa: E402

import model_monitoring as mm  # noqa: E402
import monitoring_figures as mf  # noqa: E402
import monitoring_views as mv  # noqa: E402
from model_artifact import ArtifactError  # noqa: E402

CACHE_TTL_S = 600  # besides the lake signature: a bound on how long anything is reused
SHOW = {"error": st.error, "warning": st.warning, "info": st.info, "success": st.success}


# =========================================================================== cached reads


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def freshness(signature: tuple) -> mv.Freshness:
    return mv.read_freshness()


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def computed_kinds(signature: tuple) -> list[str]:
    return mv.computed_kinds()


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Reading the monitoring tables...")
def monitoring(kind: str, signature: tuple) -> mv.Monitoring:
    return mv.load_monitoring(kind)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner="Counting the window's flights...")
def distribution(version: str, feature: str, start: date, end: date, signature: tuple) -> mv.Distribution:
    return mv.distribution(version, feature, start, end)


# =========================================================================== page parts


def _when(moment) -> str:
    return "never" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def show_freshness(fresh: mv.Freshness) -> None:
    run = fresh.latest_run
    left, middle, right = st.columns(3)
    left.metric(
        "Latest scored batch",
        _when(fresh.scored_published_at),
        help=f"{fresh.scored_batches} batches; flights up to {fresh.scored_until or '-'}",
    )
    middle.metric(
        "Latest outcomes",
        str(fresh.outcomes_until or "none yet"),
        help=f"{fresh.actuals_batches} batches, the latest published {_when(fresh.actuals_published_at)}",
    )
    right.metric(
        "Latest monitoring run",
        _when(run.finished_at if run else None),
        help=run.summary if run else "no run yet",
    )


def show_messages(messages: list[mv.Message]) -> None:
    for message in messages:
        SHOW[message.level](message.text)


def light(status: str | None) -> str:
    return f"{mv.LIGHTS.get(status or mm.INFO, mv.LIGHTS[mm.INFO])} {status or 'n/a'}"


def for_table(frame: pl.DataFrame) -> pd.DataFrame:
    """A frame for st.dataframe: dates as dates (pandas would show them at midnight)."""
    return frame.with_columns(pl.col(pl.Date).cast(pl.String)).to_pandas()


def chart(fig, key: str) -> None:
    st.plotly_chart(fig, width="stretch", key=f"chart_{key}")


def window_too_small(mon: mv.Monitoring, start: date, version: str) -> bool:
    """Say why a window has no drift rows (too small, stale profile); True when it has none."""
    window = mv.window_status(mon, start, version)
    if window is None:
        st.info(f"Model {version} scored no flight in the {mon.kind} window of {start}.")
        return True
    if window["status"] != "ok":
        hint = " Pick a coarser window granularity." if window["status"] == "too_small" else ""
        st.warning(
            f"The {mon.kind} window of {start} is not scored ({window['status']}): {window['message']}.{hint}"
        )
        return True
    return False


# =========================================================================== the views


def overview(mon: mv.Monitoring, start: date, version: str, first: date, last: date) -> None:
    window = mv.window_status(mon, start, version)
    overall = window["overall_status"] if window else None
    st.subheader(f"Overall: {light(overall)} — {mon.kind} of {start}, model {version}")
    if window_too_small(mon, start, version):
        return
    lights = mv.feature_lights(mon, start, version)
    counts = {s: int((lights["status"] == s).sum()) for s in (mm.RED, mm.YELLOW, mm.GREEN)}
    st.markdown(" · ".join(f"{mv.LIGHTS[s]} {n} {s}" for s, n in counts.items()) + " features")
    columns = st.columns(6)
    for i, row in enumerate(lights.iter_rows(named=True)):
        columns[i % 6].markdown(f"{mv.LIGHTS[row['status']]} {row['feature']}")
    chart(mf.risk_figure(lights, window["weighted_drift"]), "risk")
    recent = mv.in_range(mon.windows.filter(pl.col("model_version") == version), first, last)
    drift_series = recent.select(
        "window_start",
        "model_version",
        pl.col("weighted_drift").alias("value"),
        pl.col("overall_status").alias("status"),
    )
    chart(
        mf.series_figure(
            drift_series,
            "Importance-weighted drift per window",
            "weighted_drift",
            mv.version_changes(mon.windows),
        ),
        "weighted",
    )
    st.subheader("Realized ROC-AUC of the latest windows")
    perf = mv.in_range(mon.performance.filter(pl.col("model_version") == version), first, last).tail(4)
    if perf.is_empty() or perf["roc_auc"].is_null().all():
        st.info("No outcomes yet for these windows: realized ROC-AUC appears when the actuals arrive.")
    else:
        for column, row in zip(st.columns(perf.height), perf.iter_rows(named=True)):
            auc = row["roc_auc"]
            column.metric(
                f"{row['window_start']}",
                "n/a" if auc is None else f"{auc:.3f}",
                help=f"{light(mm.THRESHOLDS['roc_auc'].status(auc))}; {row['n_with_outcome']:,} flights with outcome",
            )
    st.subheader("Latest alerts")
    alerts = mv.in_range(mon.alerts, first, last).sort("window_start", descending=True).head(8)
    if alerts.is_empty():
        st.success("No alert in the selected date range.")
    else:
        st.dataframe(
            for_table(alerts.select("window_start", "severity", "feature", "reason", "recommendation")),
            hide_index=True,
            width="stretch",
        )


def feature_view(
    mon: mv.Monitoring, start: date, version: str, feature: str, metric: str, first: date, last: date
) -> None:
    st.subheader(f"{feature}: reference vs the {mon.kind} of {start}")
    if not window_too_small(mon, start, version):
        end = mv.window_status(mon, start, version)["window_end"]
        try:
            dist = distribution(version, feature, start, end, mv.lake_signature())
        except (ArtifactError, KeyError) as exc:
            st.warning(f"No reference distribution for {feature} of model {version}: {exc}")
        else:
            chart(mf.overlay_figure(dist, str(start)), "overlay")
    series = mv.in_range(mv.metric_series(mon.drift, feature, metric), first, last)
    if series.is_empty():
        st.info(f"No {metric} of {feature} in the selected date range.")
        return
    chart(
        mf.series_figure(
            series, f"{metric} of {feature} per {mon.kind}", metric, mv.version_changes(mon.windows)
        ),
        "metric",
    )


def style_status(frame: pd.DataFrame):
    tint = {mm.RED: "#ffcdd2", mm.YELLOW: "#fff9c4", mm.GREEN: "#c8e6c9"}
    return frame.style.apply(
        lambda row: [
            f"background-color: {tint.get(row['status'], '')}" if c == "status" else "" for c in row.index
        ],
        axis=1,
    ).format(precision=4)


def drift_table_view(mon: mv.Monitoring, start: date, version: str) -> None:
    st.subheader(f"Drift per variable — {mon.kind} of {start}, model {version}")
    if window_too_small(mon, start, version):
        return
    table = mv.drift_table(mon, start, version)
    st.caption(
        "Status comes from the effect sizes (PSI, JS, KS, null-rate change, unseen share); p-values "
        "(raw and Benjamini-Hochberg) sit beside the KS and chi² statistics. Click a header to sort."
    )
    st.dataframe(
        style_status(for_table(table)), hide_index=True, width="stretch", height=600, key="drift_table"
    )


def time_analysis(
    mon: mv.Monitoring, version: str, feature: str, metric: str, first: date, last: date, features: list[str]
) -> None:
    st.subheader(f"{metric} of {feature} over time: trend and change points")
    series = mv.in_range(mv.metric_series(mon.drift, feature, metric), first, last)
    if series.is_empty():
        st.info(f"No {metric} of {feature} in the selected date range.")
    else:
        fig = mf.series_figure(series, f"{metric} of {feature}", metric, mv.version_changes(mon.windows))
        info = mv.trend(mon.trends, feature, metric, version)
        chart(mf.add_trend(fig, series.filter(pl.col("model_version") == version), info), "time_series")
        if info is None:
            st.caption(f"The job computes trends for {', '.join(mm.TREND_METRICS)}; not for {metric}.")
    st.subheader(f"{metric} per window, most important features")
    top = [f for f in features if f != mm.SCORE][:20]
    chart(
        mf.heatmap_figure(
            mv.in_range(mon.drift, first, last).filter(pl.col("model_version") == version), metric, top
        ),
        "heatmap",
    )
    trends = mon.trends.filter(pl.col("metric") == metric, pl.col("model_version") == version)
    if trends.height:
        st.caption(
            "Slope over the last windows and the change point of each feature's whole series (p < 0.01)."
        )
        columns = ["feature", "last_window_start", "last_value", "slope_per_window", "change_point_at",
                   "change_point_p_value"]  # fmt: skip
        st.dataframe(
            for_table(trends.select(columns).sort("slope_per_window", descending=True)),
            hide_index=True,
            width="stretch",
        )


def performance_view(mon: mv.Monitoring, version: str, first: date, last: date) -> None:
    st.subheader("Realized performance")
    perf = mv.in_range(mon.performance, first, last)
    changes = mv.version_changes(mon.windows)
    unscored = mv.in_range(mon.windows, first, last).filter(pl.col("status") != "ok")
    if unscored.height:  # too small or a stale profile: not measured, which is not "no outcomes"
        st.warning(
            f"{unscored.height} {mon.kind} window(s) in the range are not scored ({unscored['message'][0]}): "
            "they have no performance. Pick a coarser window granularity if they are too small."
        )
    if perf.is_empty() and unscored.height:
        st.info("No scored window in the selected date range.")
    elif perf.is_empty() or not perf["n_with_outcome"].sum():
        st.info(
            "No outcomes yet for the selected windows: realized ROC-AUC, precision and recall appear when "
            "the flights' actuals are published (lake/actuals)."
        )
    else:
        chart(mf.performance_figure(perf, changes), "performance")
        chart(mf.calibration_figure(perf, changes), "calibration")
    st.subheader("Score drift (prediction drift against the validation scores)")
    for metric in ("psi", "ks_statistic"):
        series = mv.in_range(mv.metric_series(mon.drift, mm.SCORE, metric), first, last)
        if series.height:
            chart(mf.series_figure(series, f"{metric} of the score", metric, changes), f"score_{metric}")
    if perf.height:
        st.dataframe(
            for_table(
                perf.select(
                    "window_start",
                    "model_version",
                    "n_scored",
                    "n_with_outcome",
                    "roc_auc",
                    "precision",
                    "recall",
                    "observed_rate",
                    "mean_score",
                    "calibration_gap",
                    "status",
                )
            ),
            hide_index=True,
            width="stretch",
        )


def recommendations_view(
    mon: mv.Monitoring, start: date, version: str, fresh_messages: list[mv.Message], first: date, last: date
) -> None:
    st.subheader(f"Recommendations — {mon.kind} of {start}, model {version}")
    show_messages([m for m in fresh_messages if m.level == "error"])
    show_messages(mv.recommendations(mon, start, version))
    st.subheader("Alert log")
    alerts = mv.in_range(mon.alerts, first, last)
    severities = st.multiselect(
        "Severity", ["critical", "warning", "info"], default=["critical", "warning"], key="severity"
    )
    alerts = alerts.filter(pl.col("severity").is_in(severities)).sort("window_start", descending=True)
    if alerts.is_empty():
        st.success("No alert of these severities in the selected date range.")
    else:
        st.dataframe(
            for_table(
                alerts.select(
                    "window_start",
                    "window_end",
                    "model_version",
                    "severity",
                    "feature",
                    "metric",
                    "value",
                    "reason",
                    "recommendation",
                )
            ),
            hide_index=True,
            width="stretch",
        )


# =========================================================================== the page


def controls(kinds: list[str]) -> tuple[str, str]:
    view = st.sidebar.radio("View", mv.VIEWS, key="view")
    default = (
        mv.WINDOW_KINDS.index("week") if "week" in kinds or not kinds else mv.WINDOW_KINDS.index(kinds[0])
    )
    kind = st.sidebar.selectbox("Window granularity", mv.WINDOW_KINDS, index=default, key="granularity")
    return view, kind


def date_range(starts: list[date]) -> tuple[date, date]:
    if len(starts) < 2:
        return starts[0], starts[-1]
    return st.sidebar.select_slider(
        "Date range (window starts)", options=starts, value=(starts[0], starts[-1]), key="date_range"
    )


def main() -> None:
    st.set_page_config(page_title="Flight-disruption model monitoring", page_icon="✈️", layout="wide")
    st.title("Flight-disruption model monitoring")
    signature = mv.lake_signature()
    fresh = freshness(signature)
    show_freshness(fresh)
    if not fresh.scored_batches:
        st.info(
            f"No scored data yet: the lake has no scored batch. Score flights first (`./setup.sh`, or "
            f"`{mv.SCORE_COMMAND}`), then run `{mv.MONITOR_COMMAND}`."
        )
        return
    kinds = computed_kinds(signature)
    view, kind = controls(kinds)
    if not kinds:
        st.warning(
            f"No monitoring run yet: {fresh.scored_batches} scored batches wait. Run `{mv.MONITOR_COMMAND}`."
        )
        return
    if kind not in kinds:
        st.warning(
            f"No {kind} windows have been computed yet (computed: {', '.join(kinds)}). "
            f"Compute them with `{mv.monitor_command(kind)}`; the app only reads results."
        )
        return
    mon = monitoring(kind, signature)
    stale = mv.staleness(fresh, kind, mon)
    show_messages(stale)

    first, last = date_range(mon.window_starts())
    # only the model versions with a window in the range (every window start belongs to one)
    versions = [v for v in mon.versions if any(first <= s <= last for s in mon.window_starts(v))]
    version = versions[-1]
    if len(versions) > 1:
        version = st.sidebar.selectbox("Model version", versions, index=len(versions) - 1, key="version")
    in_range = [s for s in mon.window_starts(version) if first <= s <= last]
    start = st.sidebar.selectbox(
        "Window (feature view, drift table)", in_range, index=len(in_range) - 1, key="window"
    )
    features = mv.features_by_importance(mon.drift.filter(pl.col("model_version") == version))
    feature = metric = None
    if features:
        feature = st.sidebar.selectbox("Feature (by importance)", features, key="feature")
        metrics = mv.metrics_of(mon.drift, feature)
        metric = st.sidebar.selectbox("Metric", metrics, key="metric")

    if view == "Overview":
        overview(mon, start, version, first, last)
    elif view == "Performance":
        performance_view(mon, version, first, last)
    elif view == "Recommendations":
        recommendations_view(mon, start, version, stale, first, last)
    elif view == "Drift table":
        drift_table_view(mon, start, version)
    elif feature is None:
        if not window_too_small(mon, start, version):
            st.info("No drift was measured in any window yet.")
    elif view == "Feature view":
        feature_view(mon, start, version, feature, metric, first, last)
    else:
        time_analysis(mon, version, feature, metric, first, last, features)


main()
