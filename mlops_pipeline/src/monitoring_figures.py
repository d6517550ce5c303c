"""The monitoring app's Plotly figures: each takes what ``monitoring_views`` returns and
draws it, computing nothing.

Every time series marks where a later model version starts (:func:`add_version_markers`)
and, when the job has a rule for the metric, shows the green / yellow / red bands of
``model_monitoring.THRESHOLDS`` (:func:`add_threshold_bands`).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl

import model_monitoring as mm
from monitoring_views import Distribution

COLOURS = {mm.GREEN: "#2e7d32", mm.YELLOW: "#f9a825", mm.RED: "#c62828", mm.INFO: "#9e9e9e"}
BAND_COLOURS = {
    mm.GREEN: "rgba(46,125,50,0.08)",
    mm.YELLOW: "rgba(249,168,37,0.15)",
    mm.RED: "rgba(198,40,40,0.12)",
}
PERFORMANCE_METRICS = ("roc_auc", "precision", "recall")


def _layout(fig: go.Figure, title: str, yaxis: str = "") -> go.Figure:
    fig.update_layout(
        title=title,
        yaxis_title=yaxis,
        height=360,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def add_version_markers(fig: go.Figure, changes: list[tuple[date, str]]) -> go.Figure:
    """A dotted vertical line where each later model version first appears."""
    for start, version in changes:
        fig.add_vline(x=start, line_dash="dot", line_color="#455a64")
        fig.add_annotation(
            x=start,
            y=1,
            yref="paper",
            text=f"model → {version}",
            showarrow=False,
            xanchor="left",
            yanchor="bottom",
            font={"size": 10},
        )
    return fig


def add_threshold_bands(fig: go.Figure, metric: str, values: list[float]) -> go.Figure:
    """Green, yellow and red bands from the job's THRESHOLDS (mirrored for |value| rules)."""
    rule = mm.THRESHOLDS.get(metric)
    if rule is None:
        return fig
    finite = [abs(v) for v in values if v is not None and np.isfinite(v)]
    top = max([*finite, rule.red * 1.3, rule.yellow * 1.3])
    if rule.below:
        bands = [(0, rule.red, mm.RED), (rule.red, rule.yellow, mm.YELLOW), (rule.yellow, 1, mm.GREEN)]
    else:
        bands = [
            (0, rule.yellow, mm.GREEN),
            (rule.yellow, rule.red, mm.YELLOW),
            (rule.red, top * 1.05, mm.RED),
        ]
        if rule.absolute:
            bands += [(-hi, -lo, status) for lo, hi, status in bands]
    for lo, hi, status in bands:
        fig.add_hrect(y0=lo, y1=hi, fillcolor=BAND_COLOURS[status], line_width=0, layer="below")
    return fig


def series_figure(
    series: pl.DataFrame,
    title: str,
    metric: str,
    changes: list[tuple[date, str]],
    value: str = "value",
) -> go.Figure:
    """One line per model version of a metric over windows, with threshold bands and the
    model-change markers; points coloured by their status when the series has one."""
    fig = go.Figure()
    for (version,), group in series.group_by("model_version", maintain_order=True):
        colours = (
            [COLOURS.get(s, COLOURS[mm.INFO]) for s in group["status"]] if "status" in group.columns else None
        )
        fig.add_trace(
            go.Scatter(
                x=group["window_start"].to_list(),
                y=group[value].to_list(),
                mode="lines+markers",
                name=f"{metric} ({version})",
                marker={"color": colours, "size": 9},
                line={"color": "#37474f"},
            )
        )
    add_threshold_bands(fig, metric, series[value].to_list() if series.height else [])
    add_version_markers(fig, changes)
    return _layout(fig, title, metric)


def add_trend(fig: go.Figure, series: pl.DataFrame, info: dict[str, Any] | None) -> go.Figure:
    """The job's least-squares slope over its last k windows, drawn through their mean, and
    its change point (a vertical marker) when the permutation test found one."""
    if not info:
        return fig
    k = int(info["trend_windows"] or 0)
    tail = series.drop_nulls("value").tail(k)
    if k >= 2 and tail.height == k and info["slope_per_window"] is not None:
        centre = (k - 1) / 2
        mean = float(tail["value"].mean())
        ys = [mean + info["slope_per_window"] * (i - centre) for i in range(k)]
        fig.add_trace(
            go.Scatter(
                x=tail["window_start"].to_list(),
                y=ys,
                mode="lines",
                name=f"trend over last {k} ({info['slope_per_window']:+.3f}/window)",
                line={"dash": "dash", "color": "#1565c0"},
            )
        )
    if info["change_point_at"] is not None:
        fig.add_vline(x=info["change_point_at"], line_color="#6a1b9a", line_width=2)
        fig.add_annotation(
            x=info["change_point_at"],
            y=0.92,
            yref="paper",
            showarrow=False,
            xanchor="left",
            text=f"change point (p={info['change_point_p_value']:.3f})",
            font={"color": "#6a1b9a"},
        )
    return fig


def overlay_figure(dist: Distribution, window: str) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Bar(x=dist.labels, y=dist.reference, name="reference", marker_color="#90a4ae"))
    fig.add_trace(
        go.Bar(x=dist.labels, y=dist.current, name=f"window {window}", marker_color="#ef6c00", opacity=0.75)
    )
    fig.update_layout(barmode="overlay")
    reference = "validation scores" if dist.feature == mm.SCORE else "training"
    return _layout(
        fig, f"{dist.feature}: {reference} vs window of {window} ({dist.n_current:,} flights)", "share"
    )


def risk_figure(lights: pl.DataFrame, weighted: float | None, top: int = 15) -> go.Figure:
    """Each feature's share of the importance-weighted drift (bar = importance x status weight)."""
    shown = lights.sort("contribution", "importance", descending=True).head(top).reverse()
    fig = go.Figure(
        go.Bar(
            x=shown["contribution"].to_list(),
            y=shown["feature"].to_list(),
            orientation="h",
            marker_color=[COLOURS[s] for s in shown["status"]],
            name="contribution",
            customdata=shown["importance"].to_list(),
            hovertemplate="%{y}: %{x:.3f} (importance %{customdata:.3f})<extra></extra>",
        )
    )
    rule = mm.THRESHOLDS["weighted_drift"]
    total = "n/a" if weighted is None else f"{weighted:.3f}"
    title = f"Importance-weighted drift {total} (yellow > {rule.yellow}, red > {rule.red})"
    fig = _layout(fig, title, "")
    fig.update_layout(height=max(300, 24 * shown.height + 90), xaxis_title="importance × status weight")
    return fig


def heatmap_figure(drift: pl.DataFrame, metric: str, features: list[str]) -> go.Figure:
    rows = drift.filter(pl.col("metric") == metric, pl.col("feature").is_in(features))
    grid = rows.pivot(on="window_start", index="feature", values="value", aggregate_function="max")
    grid = grid.join(pl.DataFrame({"feature": features}).with_row_index("_o"), on="feature").sort(
        "_o", descending=True
    )
    columns = [c for c in grid.columns if c not in ("feature", "_o")]
    fig = go.Figure(
        go.Heatmap(
            z=grid.select(columns).to_numpy(),
            x=columns,
            y=grid["feature"].to_list(),
            colorscale="YlOrRd",
            colorbar={"title": metric},
        )
    )
    fig = _layout(fig, f"{metric} per window, most important features", "")
    fig.update_layout(height=max(320, 20 * len(features) + 100))
    return fig


def performance_figure(perf: pl.DataFrame, changes: list[tuple[date, str]]) -> go.Figure:
    fig = go.Figure()
    for (version,), group in perf.group_by("model_version", maintain_order=True):
        for metric in PERFORMANCE_METRICS:
            fig.add_trace(
                go.Scatter(
                    x=group["window_start"].to_list(),
                    y=group[metric].to_list(),
                    mode="lines+markers",
                    name=f"{metric} ({version})",
                )
            )
    add_threshold_bands(fig, "roc_auc", [])
    add_version_markers(fig, changes)
    fig = _layout(fig, "Realized ROC-AUC, precision and recall (bands: the ROC-AUC rule)", "")
    fig.update_yaxes(range=[0, 1])
    return fig


def calibration_figure(perf: pl.DataFrame, changes: list[tuple[date, str]]) -> go.Figure:
    fig = go.Figure()
    for (version,), group in perf.group_by("model_version", maintain_order=True):
        fig.add_trace(
            go.Scatter(
                x=group["window_start"].to_list(),
                y=group["observed_rate"].to_list(),
                mode="lines+markers",
                name=f"observed disruption rate ({version})",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=group["window_start"].to_list(),
                y=group["mean_score"].to_list(),
                mode="lines+markers",
                name=f"mean score ({version})",
                line={"dash": "dash"},
            )
        )
    add_version_markers(fig, changes)
    return _layout(fig, "Observed disruption rate vs mean score", "share of flights")
