"""The figures behind docs/monitoring.md's "Findings": the monitoring job's current results.

    .venv/bin/python scripts/monitoring_findings.py             # weekly windows (after ./setup.sh)
    .venv/bin/python scripts/monitoring_findings.py --window month

Reads the current rows of the job's outputs (what the ``monitoring_*`` views show) straight
from the lake, through an in-memory DuckDB connection, and prints per window: the overall
status and weighted drift, the realized performance; per feature: how many windows are red
and its largest PSI; and the current alerts grouped by severity, metric and feature.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mlops_pipeline" / "src"))

import duckdb  # noqa: E402
import polars as pl  # noqa: E402

import model_monitoring as mm  # noqa: E402

QUOTED = ("pressure", "wind_dir", "dewp_spread", "precip", "days_to_holiday")  # what the docs quote


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--window", default="week", choices=sorted(mm.WINDOW_SQL))
    parser.add_argument("--top", type=int, default=15, help="features shown, most often red first")
    parser.add_argument(
        "--feature",
        action="append",
        help="a feature whose PSI, KS and out-of-range share are printed per window (repeatable; "
        f"default {', '.join(QUOTED)})",
    )
    args = parser.parse_args(argv)
    pl.Config.set_tbl_rows(60)
    pl.Config.set_tbl_cols(16)
    pl.Config.set_tbl_width_chars(200)
    pl.Config.set_tbl_formatting("ASCII_MARKDOWN")
    pl.Config.set_tbl_column_data_type_inline(True)
    pl.Config.set_tbl_hide_dataframe_shape(True)
    pl.Config.set_float_precision(3)
    pl.Config.set_fmt_str_lengths(110)  # the alerts' reasons in full
    con = duckdb.connect()
    windows, drift, performance, alerts = (
        mm.current_rows(con, kind, args.window) for kind in ("windows", "drift", "performance", "alerts")
    )
    if windows.is_empty():
        raise SystemExit(f"no {args.window} windows in the lake: run the monitoring job first")

    versions = ", ".join(sorted(windows["model_version"].unique()))
    print(f"== {args.window} windows of {versions}: overall status, weighted drift, realized performance")
    per_window = (
        windows.select("window_start", "model_version", "n_sampled", "overall_status", "weighted_drift")
        .join(
            performance.select(
                "window_start", "model_version", "observed_rate", "mean_score",
                "calibration_gap", "roc_auc", "precision", "recall",
            ),
            on=["window_start", "model_version"],
            how="left",
        )
        .sort("window_start")
        .drop("model_version" if len(versions.split(", ")) == 1 else [])
    )  # fmt: skip
    print(per_window)
    print(windows.group_by("overall_status").len().sort("overall_status"))

    status = drift.filter(pl.col("metric") == "status")
    psi = drift.filter(pl.col("metric") == "psi")
    features = (
        status.group_by("feature")
        .agg(
            (pl.col("status") == mm.RED).sum().alias("red_windows"),
            (pl.col("status") == mm.YELLOW).sum().alias("yellow_windows"),
            pl.len().alias("windows"),
        )
        .join(
            psi.sort("value", descending=True)
            .group_by("feature", maintain_order=True)
            .agg(
                pl.col("value").first().alias("max_psi"), pl.col("window_start").first().alias("max_psi_week")
            ),
            on="feature",
            how="left",
        )
        .sort("red_windows", "max_psi", descending=True, nulls_last=True)
    )
    print(f"\n== features, most often red (of {features['windows'].max()} windows)")
    print(features.filter(pl.col("feature") != mm.OVERALL).head(args.top))
    print("\n== the score (prediction drift): PSI per window")
    print(
        psi.filter(pl.col("feature") == mm.SCORE)
        .select("window_start", "value", "status")
        .sort("window_start")
    )

    ks = drift.filter(pl.col("metric") == "ks_statistic", pl.col("feature") != mm.SCORE)
    significant = ks.filter(pl.col("p_value_bh") < 0.01)
    small = significant.filter(pl.col("value") < mm.THRESHOLDS["ks_statistic"].yellow).height
    print(
        f"\n== KS p-values after BH: {significant.height} of {ks.height} below 0.01, {small} of them "
        f"beside a KS statistic under {mm.THRESHOLDS['ks_statistic'].yellow}"
    )
    history = psi.filter(pl.col("feature").is_in(list(mm.HISTORY_FEATURES)))["value"]
    print(
        f"== history rates' PSI: {(history > 0.5).sum()} of {history.len()} (feature, window) values above "
        f"0.5, {(history > 0.3).sum()} above 0.3, from {history.min():.2f} to {history.max():.2f}"
    )
    for feature in args.feature or QUOTED:
        print(f"\n== {feature}: PSI, KS and out-of-range share per window")
        print(
            drift.filter(
                pl.col("feature") == feature, pl.col("metric").is_in(["psi", "ks_statistic", "unseen_share"])
            )
            .pivot("metric", index="window_start", values="value")
            .sort("window_start")
        )

    print(f"\n== current alerts: {alerts.height}")
    print(alerts.group_by("severity", "metric").len().sort("severity", "len", descending=[False, True]))
    print(
        alerts.filter(pl.col("severity") == "critical")
        .select("metric", "feature", "window_start", "reason")
        .sort("metric", "feature", "window_start")
    )


if __name__ == "__main__":
    main()
