"""The training report: tables, plots and the readme's model block, from labels and scores only.

Nothing here knows the feature set: every function takes labels, months and a mapping
``model name -> scores`` (or the summary table built from them), so the report covers
whatever features a model has. ``model_training_evaluation.write_reports`` calls it to fill
``artifacts/reports/<version>/``:

* ``summary.csv``     one row per candidate (validation and test metrics, consistency, cost);
* ``monthly.csv``     per candidate and month of Jul-Dec: flights, positive rate, mean score,
                      ROC-AUC, PR-AUC, Brier;
* ``reliability.csv`` per candidate and split: quantile bins of the score, mean score vs
                      observed rate;
* ``summary.md``      the same numbers as a short report a person reads;
* plots: ``roc_pr.png``, ``calibration.png``, ``metric_bars.png``, ``monthly.png``,
  ``feature_importance.png``.

:func:`compare_by_month` is the before/after table for two (or more) models' scores on the
same rows, e.g. a model without and with a feature group.

The readme's model table is generated from a run's ``summary.csv`` (:func:`readme_block`)::

    python mlops_pipeline/src/training_report.py readme           # rewrite it from LATEST's summary
    python mlops_pipeline/src/training_report.py readme --check   # exit 1 if it is not current

and ``tests/test_training_report.py`` retrains on the full data and compares.
"""

from __future__ import annotations

import argparse
import calendar
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

# How the report names the candidates; a name not listed is shown as it is.
DISPLAY_NAMES = {
    "baseline": "baseline (prior)",
    "logistic_regression": "logistic regression",
    "hist_gradient_boosting": "HistGradientBoosting",
    "lightgbm": "LightGBM",
}
MONTHLY_COLUMNS = ["month", "flights", "positive_rate", "mean_score", "roc_auc", "pr_auc", "brier"]
COMPARED_METRICS = ("roc_auc", "pr_auc", "brier", "mean_score")  # brier: lower is better
METRIC_LABELS = {
    "roc_auc": "ROC-AUC",
    "pr_auc": "PR-AUC",
    "brier": "Brier",
    "mean_score": "mean score",
    "positive_rate": "positive rate",
}
README_BEGIN = "<!-- model-table:begin"
README_END = "<!-- model-table:end -->"
README_COMMAND = ".venv/bin/python mlops_pipeline/src/training_report.py readme"


def display_name(name: str) -> str:
    return DISPLAY_NAMES.get(name, name)


def month_label(month) -> str:
    """``9`` -> ``Sep``; anything that is not a month number is shown as it is."""
    if isinstance(month, int | np.integer) and 1 <= int(month) <= 12:
        return calendar.month_abbr[int(month)]
    return str(month)


# --------------------------------------------------------------------------- metrics


def score_metrics(y, score) -> dict[str, float]:
    """Flights, positive rate, mean score, ROC-AUC, PR-AUC (average precision) and Brier of one
    set of scores. ROC-AUC and PR-AUC are NaN when ``y`` holds one class only."""
    y = np.asarray(y).astype(int)
    score = np.asarray(score, dtype=float)
    both = len(np.unique(y)) == 2
    return {
        "flights": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else math.nan,
        "mean_score": float(score.mean()) if len(y) else math.nan,
        "roc_auc": float(roc_auc_score(y, score)) if both else math.nan,
        "pr_auc": float(average_precision_score(y, score)) if both else math.nan,
        "brier": float(brier_score_loss(y, score)) if len(y) else math.nan,
    }


def monthly_metrics(y, months, score) -> pl.DataFrame:
    """One row per month (in order): :data:`MONTHLY_COLUMNS`."""
    y, months, score = np.asarray(y), np.asarray(months), np.asarray(score, dtype=float)
    rows = [
        {"month": m.item(), **score_metrics(y[months == m], score[months == m])} for m in np.unique(months)
    ]
    return pl.DataFrame(rows).select(MONTHLY_COLUMNS)


def compare_by_month(
    y, months, scores: Mapping[str, Sequence[float] | np.ndarray], reference: str | None = None
) -> pl.DataFrame:
    """Before/after table: models' scores on the same rows, month by month and over all months.

    ``scores`` maps a model name to its scores on the rows of ``y`` (same order, same length);
    ``reference`` (default: the first name) is what the others are compared with.

    One row per (month, metric): ``month`` (``Sep``..., then ``all``), ``flights``,
    ``positive_rate``, ``metric`` (:data:`COMPARED_METRICS`: ``roc_auc``, ``pr_auc``, ``brier``,
    ``mean_score``), one column per model with its value, and ``delta_<name>`` = that model's
    value minus the reference's for every other model. Higher is better except for ``brier``;
    ``mean_score`` is to be read against ``positive_rate`` (calibration in the large).
    """
    y, months = np.asarray(y).astype(int), np.asarray(months)
    if not scores:
        raise ValueError("compare_by_month needs at least one model's scores")
    arrays = {name: np.asarray(s, dtype=float) for name, s in scores.items()}
    for name, s in arrays.items():
        if s.shape != y.shape:
            raise ValueError(f"scores of {name!r} have shape {s.shape}, labels {y.shape}: not the same rows")
    if months.shape != y.shape:
        raise ValueError(f"months have shape {months.shape}, labels {y.shape}")
    reference = next(iter(arrays)) if reference is None else reference
    if reference not in arrays:
        raise ValueError(f"reference {reference!r} is not among {list(arrays)}")
    periods = [(month_label(m.item()), months == m) for m in np.unique(months)] + [
        ("all", np.ones_like(y, bool))
    ]
    rows = []
    for label, mask in periods:
        by_model = {name: score_metrics(y[mask], s[mask]) for name, s in arrays.items()}
        first = by_model[reference]
        for metric in COMPARED_METRICS:
            row = {
                "month": label,
                "flights": first["flights"],
                "positive_rate": first["positive_rate"],
                "metric": metric,
            }
            row |= {name: m[metric] for name, m in by_model.items()}
            row |= {
                f"delta_{name}": m[metric] - first[metric]
                for name, m in by_model.items()
                if name != reference
            }
            rows.append(row)
    return pl.DataFrame(rows)


def comparison_markdown(table: pl.DataFrame) -> str:
    """:func:`compare_by_month`'s table as Markdown (rates in %, metrics to 4 decimals, signed deltas)."""
    fixed = {"month", "flights", "positive_rate", "metric"}
    models = [c for c in table.columns if c not in fixed and not c.startswith("delta_")]
    deltas = [c for c in table.columns if c.startswith("delta_")]
    headers = [
        "month",
        "flights",
        "positive rate",
        "metric",
        *models,
        *(f"{c[6:]} − {models[0]}" for c in deltas),
    ]
    rows = [
        [
            r["month"],
            fmt_int(r["flights"]),
            fmt_pct(r["positive_rate"]),
            METRIC_LABELS.get(r["metric"], r["metric"]),
            *(fmt_num(r[c], 4) for c in models),
            *(fmt_num(r[c], 4, signed=True) for c in deltas),
        ]
        for r in table.iter_rows(named=True)
    ]
    return markdown_table(headers, rows, align="lrrl" + "r" * (len(models) + len(deltas)))


def reliability_table(y, score, n_bins: int = 10) -> pl.DataFrame:
    """A reliability curve's points: the scores cut at their quantiles into up to ``n_bins`` bins
    of about equal size (equal scores always share a bin, so a constant score is one bin), each
    with its flights, score range, mean score and observed positive rate."""
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=float)
    edges = np.unique(np.quantile(score, np.linspace(0, 1, n_bins + 1)))
    bins = np.searchsorted(edges[1:-1], score, side="right")
    frame = pl.DataFrame({"bin": bins, "y": y, "score": score})
    return (
        frame.group_by("bin")
        .agg(
            pl.len().alias("flights"),
            pl.col("score").min().alias("score_from"),
            pl.col("score").max().alias("score_to"),
            pl.col("score").mean().alias("mean_score"),
            pl.col("y").mean().alias("observed_rate"),
        )
        .sort("bin")
    )


def pr_curve(y, score) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision of the precision-recall step curve whose area is the average precision.

    scikit-learn appends a point (recall 0, precision 1) that no threshold reaches; drawn, it
    sends a constant score's curve from (0, 1) to (1, positive rate), above every model. Here
    the precision at the highest threshold is held down to recall 0 instead, as average
    precision counts it: a constant score is the horizontal line at the positive rate. Draw with
    ``drawstyle="steps-post"``.
    """
    precision, recall, _ = precision_recall_curve(np.asarray(y).astype(int), np.asarray(score, dtype=float))
    precision, recall = precision[:-1], recall[:-1]  # drop the sentinel
    return np.append(recall, 0.0), np.append(precision, precision[-1])


# --------------------------------------------------------------------------- plots (data in, figure out)


def _colors(names: Sequence[str]) -> dict[str, str]:
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(names)}


def plot_roc_pr(y, scores: Mapping[str, np.ndarray], period: str) -> plt.Figure:
    """ROC and precision-recall curves of every model on the same rows, with chance references
    (the diagonal; the horizontal line at the positive rate)."""
    y = np.asarray(y).astype(int)
    colors = _colors(list(scores))
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(12, 5))
    for name, score in scores.items():
        m = score_metrics(y, score)
        fpr, tpr, _ = roc_curve(y, score)
        roc_ax.plot(fpr, tpr, color=colors[name], label=f"{display_name(name)} (AUC {m['roc_auc']:.3f})")
        recall, precision = pr_curve(y, score)
        pr_ax.plot(recall, precision, color=colors[name], drawstyle="steps-post",
                   label=f"{display_name(name)} (AP {m['pr_auc']:.3f})")  # fmt: skip
    rate = y.mean()
    roc_ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    pr_ax.axhline(rate, color="k", ls=":", lw=1, label=f"chance = positive rate {rate:.3f}")
    roc_ax.set(title=f"ROC, {period}", xlabel="false positive rate", ylabel="true positive rate",
               xlim=(0, 1), ylim=(0, 1.01))  # fmt: skip
    pr_ax.set(
        title=f"Precision-recall, {period}", xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.01)
    )
    for ax in (roc_ax, pr_ax):
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return fig


def plot_reliability(
    panels: Mapping[str, tuple[np.ndarray, Mapping[str, np.ndarray]]], n_bins: int = 10
) -> plt.Figure:
    """Reliability curves, one panel per period (``{"validation (Jul-Aug)": (y, scores)}``): each
    model's mean score against the observed rate in quantile bins of its score. A constant score
    is one point."""
    names = list(next(iter(panels.values()))[1])
    colors = _colors(names)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 5.2), squeeze=False)
    for ax, (period, (y, scores)) in zip(axes[0], panels.items()):
        top = 0.0
        for name, score in scores.items():
            table = reliability_table(y, score, n_bins)
            x, obs = table["mean_score"].to_numpy(), table["observed_rate"].to_numpy()
            top = max(top, x.max(), obs.max())
            brier = score_metrics(y, score)["brier"]
            ax.plot(
                x,
                obs,
                marker="o",
                ms=4,
                color=colors[name],
                label=f"{display_name(name)} (Brier {brier:.4f})",
            )
        lim = min(1.0, top * 1.08 + 0.02)
        ax.plot([0, lim], [0, lim], "k:", lw=1, label="perfectly calibrated")
        ax.axhline(np.mean(y), color="grey", ls="--", lw=0.8, label=f"positive rate {np.mean(y):.3f}")
        ax.set(title=f"Reliability, {period} ({n_bins} quantile bins per model)", xlabel="mean score in the bin",
               ylabel="observed disruption rate in the bin", xlim=(0, lim), ylim=(0, lim))  # fmt: skip
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return fig


def plot_metric_bars(summary: pl.DataFrame) -> plt.Figure:
    """Validation and test ROC-AUC, PR-AUC and Brier per candidate, each metric in its own panel
    with its own reference: chance 0.5 for ROC-AUC, the split's positive rate for PR-AUC (what a
    constant score gets), and the constant score's Brier p(1-p) at the split's positive rate."""
    splits = ("validation", "test")
    names = summary["model"].to_list()
    colors = _colors(names)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.8))
    width = 0.8 / len(names)
    for ax, metric in zip(axes, ("roc_auc", "pr_auc", "brier")):
        for i, row in enumerate(summary.iter_rows(named=True)):
            values = [row[f"{s}_{metric}"] for s in splits]
            bars = ax.bar(np.arange(2) + i * width, values, width, color=colors[row["model"]],
                          label=display_name(row["model"]))  # fmt: skip
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
        for j, split in enumerate(splits):
            rate = summary[f"{split}_base_rate"][0]
            ref = {"roc_auc": 0.5, "pr_auc": rate, "brier": rate * (1 - rate)}[metric]
            ax.hlines(ref, j - width / 2, j + 0.8 - width / 2, colors="k", linestyles=":", lw=1.2,
                      label="constant score at the split's rate" if j == 0 else None)  # fmt: skip
        ax.set_xticks(np.arange(2) + width * (len(names) - 1) / 2, ["validation (Jul-Aug)", "test (Sep-Dec)"])
        better = "lower is better" if metric == "brier" else "higher is better"
        ax.set(title=f"{METRIC_LABELS[metric]} ({better})", ylim=(0, 1 if metric != "brier" else 0.3))
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def plot_monthly(monthly: pl.DataFrame) -> plt.Figure:
    """Per month and candidate (``monthly.csv``'s long table: model, split, month, ...): ROC-AUC,
    PR-AUC against the month's positive rate, Brier, and mean score against the positive rate."""
    names = monthly["model"].unique(maintain_order=True).to_list()
    colors = _colors(names)
    months = sorted(monthly["month"].unique().to_list())
    x = {m: i for i, m in enumerate(months)}
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), sharex=True)
    panels = [("roc_auc", "ROC-AUC"), ("pr_auc", "PR-AUC"), ("brier", "Brier (lower is better)"),
              ("mean_score", "mean score vs positive rate")]  # fmt: skip
    for ax, (metric, title) in zip(axes.flat, panels):
        for name in names:
            rows = monthly.filter(pl.col("model") == name).sort("month")
            ax.plot([x[m] for m in rows["month"]], rows[metric], marker="o", ms=4, color=colors[name],
                    label=display_name(name))  # fmt: skip
        rate = monthly.filter(pl.col("model") == names[0]).sort("month")
        if metric in ("pr_auc", "mean_score"):
            ax.plot([x[m] for m in rate["month"]], rate["positive_rate"], "k--", lw=1.2, marker="s", ms=3,
                    label="positive rate")  # fmt: skip
        if metric == "roc_auc":
            ax.axhline(0.5, color="k", ls=":", lw=1, label="chance")
        ax.set_title(title)
    splits = monthly.filter(pl.col("model") == names[0]).sort("month")["split"].to_list()
    for ax in axes.flat:
        for i in range(1, len(months)):
            if splits[i] != splits[i - 1]:
                ax.axvline(i - 0.5, color="grey", ls=":", lw=1)
        ax.set_xticks(
            range(len(months)), [f"{month_label(m)}\n{s}" for m, s in zip(months, splits)], fontsize=8
        )
    axes[0, 0].legend(fontsize=7)
    axes[0, 1].legend(fontsize=7)
    fig.suptitle("Per month of 2013")
    fig.tight_layout()
    return fig


def plot_feature_importance(names: Sequence[str], gains: np.ndarray, top: int = 25) -> plt.Figure:
    """The ``top`` features by share of the model's total split gain (all features in the
    denominator; the title says how many are shown and how much of the gain they hold)."""
    gains = np.asarray(gains, dtype=float)
    share = gains / gains.sum() if gains.sum() > 0 else gains
    order = np.argsort(-share, kind="stable")[:top][::-1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(order) + 1.5))
    ax.barh([names[i] for i in order], share[order])
    ax.bar_label(ax.containers[0], fmt="%.3f", fontsize=7, padding=2)
    ax.set(title=f"Share of total gain: top {len(order)} of {len(names)} features ({share[order].sum():.0%} of the gain)",
           xlabel="share of the model's total split gain", xlim=(0, share.max() * 1.15 if len(share) else 1))  # fmt: skip
    ax.title.set_fontsize(10)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Markdown


def fmt_num(value, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def fmt_int(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:,.0f}"


def fmt_pct(value, digits: int = 1) -> str:
    return (
        "n/a"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{100 * value:.{digits}f} %"
    )


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str | None = None) -> str:
    align = align or "l" * len(headers)
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = [headers, rule, *rows]
    return "\n".join("| " + " | ".join(str(c) for c in line) + " |" for line in lines)


def parse_markdown_table(text: str) -> list[dict[str, str]]:
    """The first Markdown table in ``text`` as a list of {header: cell} (cells stripped of ``**``)."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        raise ValueError("no Markdown table found")
    cells = [[c.strip().replace("**", "") for c in line.strip("|").split("|")] for line in lines]
    headers, body = cells[0], cells[2:]
    return [dict(zip(headers, row, strict=True)) for row in body]


def _speed(row: Mapping) -> str:
    # a constant predictor's "rows/s" measures an array fill, not a model
    return "(constant)" if row["model"] == "baseline" else fmt_int(row["score_rows_per_s"])


# (header, cell from a summary.csv row): the readme's model table, column by column
README_COLUMNS: list[tuple[str, Callable[[Mapping], str]]] = [
    ("validation ROC-AUC", lambda r: fmt_num(r["validation_roc_auc"], 4)),
    ("test ROC-AUC", lambda r: fmt_num(r["test_roc_auc"], 4)),
    ("validation PR-AUC", lambda r: fmt_num(r["validation_pr_auc"], 4)),
    ("test PR-AUC", lambda r: fmt_num(r["test_pr_auc"], 4)),
    ("test Brier", lambda r: fmt_num(r["test_brier"], 4)),
    (
        "monthly ROC-AUC Jul–Dec: mean / std / worst",
        lambda r: " / ".join(fmt_num(r[f"monthly_auc_{k}"], 3) for k in ("mean", "std", "min")),
    ),  # fmt: skip
    ("fit s", lambda r: fmt_num(r["fit_seconds"], 1)),
    ("scoring rows/s", _speed),
    ("size KB", lambda r: fmt_int(r["size_kb"])),
]
# Columns that depend on the machine's load, not on the data and the code: a retrain
# reproduces every other cell of the readme's table.
TIMING_HEADERS = ("fit s", "scoring rows/s")


def _model_cell(row: Mapping) -> str:
    name = display_name(row["model"])
    return f"**{name}** (selected)" if row.get("selected") else name


def readme_block(summary: pl.DataFrame, version: str) -> str:
    """The readme's model section between its markers, from a run's ``summary.csv``."""
    headers = ["model", *(h for h, _ in README_COLUMNS)]
    rows = [[_model_cell(r), *(f(r) for _, f in README_COLUMNS)] for r in summary.iter_rows(named=True)]
    table = markdown_table(headers, rows, align="l" + "rrrrrlrrr")
    best = summary.filter(pl.col("selected")).row(0, named=True)
    sentence = (
        f"The selected {display_name(best['model'])} at its cost-optimal threshold {best['threshold']:g} "
        f"flags {fmt_pct(best['test_flagged_share'])} of the Sep–Dec flights and catches "
        f"{fmt_pct(best['test_recall'])} of the disruptions (precision {best['test_precision']:.3f}); "
        f"a constant score would have PR-AUC {best['test_base_rate']:.4f} (the test positive rate) and "
        f"Brier {best['test_base_rate'] * (1 - best['test_base_rate']):.4f}."
    )
    return (
        f"{README_BEGIN} generated by `{README_COMMAND}` from "
        f"artifacts/reports/{version}/summary.csv: do not edit by hand -->\n"
        f"Model `{version}` (`artifacts/reports/{version}/summary.csv`):\n\n{table}\n\n{sentence}\n{README_END}"
    )


def readme_section(readme: str) -> tuple[str, int, int]:
    """The readme's current model block and its span."""
    start = readme.find(README_BEGIN)
    end = readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the readme has no '{README_BEGIN} ... {README_END}' block")
    end += len(README_END)
    return readme[start:end], start, end


def readme_version(block: str) -> str:
    found = re.search(r"Model `([^`]+)`", block)
    if not found:
        raise ValueError("the readme's model block names no model version")
    return found.group(1)


def summary_markdown(
    summary: pl.DataFrame,
    monthly: pl.DataFrame,
    version: str,
    selection_rule: str,
    threshold: Mapping[str, float],
    periods: Mapping[str, Mapping[str, object]],
) -> str:
    """``summary.md``: a few narrow tables from the same frames as the CSV files."""
    rows = list(summary.iter_rows(named=True))
    best = next(r for r in rows if r["selected"])
    period_rows = [[name, str(p["months"]), fmt_int(p["flights"]), fmt_pct(p["positive_rate"])]
                   for name, p in periods.items()]  # fmt: skip
    quality = markdown_table(
        ["model", "validation ROC-AUC", "test ROC-AUC", "validation PR-AUC", "test PR-AUC", "validation Brier", "test Brier"],
        [[_model_cell(r), *(fmt_num(r[f"{s}_{m}"], 4) for m in ("roc_auc", "pr_auc") for s in ("validation", "test")),
          fmt_num(r["validation_brier"], 4), fmt_num(r["test_brier"], 4)] for r in rows],
        "lrrrrrr",
    )  # fmt: skip
    reference = (
        f"A constant score gets ROC-AUC 0.5, PR-AUC equal to the positive rate "
        f"({best['validation_base_rate']:.4f} validation, {best['test_base_rate']:.4f} test) and at best "
        f"Brier p(1-p) ({best['validation_base_rate'] * (1 - best['validation_base_rate']):.4f}, "
        f"{best['test_base_rate'] * (1 - best['test_base_rate']):.4f}); lower Brier is better."
    )
    decision = markdown_table(
        ["model", "threshold", "flagged", "recall", "precision", "F1"],
        [[_model_cell(r), f"{r['threshold']:g}", fmt_pct(r["test_flagged_share"]), fmt_pct(r["test_recall"]),
          fmt_num(r["test_precision"], 3), fmt_num(r["test_f1"], 3)] for r in rows],
        "lrrrrr",
    )  # fmt: skip
    consistency = markdown_table(
        ["model", "mean", "std", "worst"],
        [
            [_model_cell(r), *(fmt_num(r[f"monthly_auc_{k}"], 3) for k in ("mean", "std", "min"))]
            for r in rows
        ],
        "lrrr",
    )
    cost = markdown_table(
        ["model", "fit (s)", "scoring (rows/s)", "size (KB)"],
        [[_model_cell(r), fmt_num(r["fit_seconds"], 1), _speed(r), fmt_int(r["size_kb"])] for r in rows],
        "lrrr",
    )
    chosen = monthly.filter(pl.col("model") == best["model"]).sort("month")
    per_month = markdown_table(
        ["month", "split", "flights", "positive rate", "mean score", "ROC-AUC", "PR-AUC", "Brier"],
        [[month_label(r["month"]), r["split"], fmt_int(r["flights"]), fmt_pct(r["positive_rate"]),
          fmt_pct(r["mean_score"]), fmt_num(r["roc_auc"], 4), fmt_num(r["pr_auc"], 4), fmt_num(r["brier"], 4)]
         for r in chosen.iter_rows(named=True)],
        "llrrrrrr",
    )  # fmt: skip
    wide = monthly.pivot(on="model", index="month", values="roc_auc").sort("month")
    month_auc = markdown_table(
        ["month", *(display_name(n) for n in wide.columns[1:])],
        [[month_label(r[0]), *(fmt_num(v, 4) for v in r[1:])] for r in wide.iter_rows()],
        "l" + "r" * (wide.width - 1),
    )
    return f"""# Training report: model `{version}`

Selected: **{display_name(best["model"])}**. Selection rule: {selection_rule}.
Decision threshold {threshold["value"]:g}, the lowest expected cost on validation with a missed
disruption costed at {threshold["cost_missed_disruption"]:g} unneeded buffers
({threshold["expected_cost_per_flight"]:.3f} per flight).

## Data

{markdown_table(["split", "months", "flights", "disrupted"], period_rows, "llrr")}

## Quality (validation = Jul–Aug, test = Sep–Dec)

{quality}

{reference}

## Decisions on the test period, at each model's own threshold

{decision}

## Consistency: ROC-AUC per month over Jul–Dec

{consistency}

## Per month, selected model

Mean score next to the positive rate shows calibration in the large, month by month.

{per_month}

ROC-AUC per month, every candidate:

{month_auc}

## Cost

Fit on this machine; scoring speed on the test matrix (best of 3); size of the saved model
(LightGBM text; the others measured as pickles, never saved).

{cost}

## Plots

- `roc_pr.png`: ROC and precision-recall curves on the test period, with chance references
- `calibration.png`: reliability curves on validation and test (`reliability.csv`)
- `metric_bars.png`: ROC-AUC, PR-AUC and Brier by split, each against a constant score's value
- `monthly.png`: ROC-AUC, PR-AUC, Brier, mean score and positive rate per month (`monthly.csv`)
- `feature_importance.png`: the selected model's share of gain by feature
"""


# --------------------------------------------------------------------------- readme command


def _latest_summary() -> tuple[str, pl.DataFrame]:
    from model_artifact import latest_version
    from settings import get_settings

    version = latest_version()
    path = get_settings().artifacts_dir / "reports" / version / "summary.csv"
    if not path.is_file():
        raise SystemExit(f"training_report: {path.name} of model {version} not found; run the training first")
    return version, pl.read_csv(path)


def comparable(block: str) -> tuple[str, list[dict[str, str]]]:
    """A block's version and table without the machine-dependent timing columns."""
    rows = [{k: v for k, v in row.items() if k not in TIMING_HEADERS} for row in parse_markdown_table(block)]
    return readme_version(block), rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Keep the readme's model table equal to a run's summary.csv."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    readme = sub.add_parser(
        "readme", help="rewrite the readme's model block from the LATEST model's summary.csv"
    )
    readme.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if the block differs (timing columns aside)")  # fmt: skip
    readme.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[2] / "readme.md")
    args = parser.parse_args(argv)
    version, summary = _latest_summary()
    text = args.readme.read_text()
    current, start, end = readme_section(text)
    wanted = readme_block(summary, version)
    if args.check:
        try:
            same = comparable(current) == comparable(wanted)
        except ValueError:  # no table, no version: not the generated block
            same = False
        if not same:
            print(f"readme's model table is not the summary of model {version}; run: {README_COMMAND}")
            return 1
        print(f"readme's model table is the summary of model {version}")
        return 0
    args.readme.write_text(text[:start] + wanted + text[end:])
    print(f"readme's model table rewritten from model {version}'s summary.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
