"""The monitoring app (monitoring_app.py) through Streamlit's AppTest, and its data layer.

AppTest runs the script in this process against the test's own lake: the synthetic one
from conftest (a few weeks whose drift, new categories, missing outcomes and model
versions each test chooses, monitored by the real job) or the session's real Sep-Dec
production lake. Every view and control is exercised; the empty states (nothing scored,
no monitoring run, no outcomes, a window too small, a granularity not computed) must give
a message, never a traceback; and the main job's load must run while the app has read.
"""

from __future__ import annotations

import json
import os
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from streamlit.testing.v1 import AppTest

import ft_engineering as fe
import lake
import model_monitoring as mm
import monitoring_views as mv
from conftest import (
    ROWS_PER_DAY,
    SRC_DIR,
    START,
    VERSION,
    fill_weeks,
    publish_day,
    save_synthetic_artifact,
    scored_day,
    synthetic_frame,
)
from settings import get_settings
from warehouse import load_raw_csv

APP = str(SRC_DIR / "monitoring_app.py")
VERSION_2 = "lgbm-synthetic0002"
WEEK = timedelta(days=7)


def run_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def choose(at: AppTest, **controls) -> AppTest:
    """Set sidebar controls by key (view, granularity, date_range, window, feature, metric,
    version) and rerun; fails on any exception the script raised."""
    for key, value in controls.items():  # one rerun each: a window's options depend on the version
        if key == "view":
            at.sidebar.radio(key=key).set_value(value)
        elif key == "date_range":
            at.select_slider(key=key).set_value(value)
        else:
            at.selectbox(key=key).set_value(value)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(e.value) for e in getattr(at, kind))


def figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def monitor(**kwargs) -> mm.RunSummary:
    return mm.run_once(mm.MonitorConfig(progress=False, **{"min_rows": 300, **kwargs}))


@pytest.fixture
def monitored(artifact: str) -> None:
    """Five weeks: wet (drifted precip) in weeks 1-3 under the first model, week 4 scored by a
    second model with 20 % of an unknown carrier; week and month windows monitored."""
    save_synthetic_artifact(VERSION_2)
    fill_weeks(5, drift_weeks=(1, 2, 3), new_carrier_week=4, versions={4: VERSION_2})
    monitor()
    monitor(window="month")


# --------------------------------------------------------------------------- empty states


def test_an_empty_lake_says_nothing_is_scored_yet() -> None:
    at = run_app()
    assert "No scored data yet" in texts(at, "info")
    assert "never" in " ".join(str(m.value) for m in at.metric)  # freshness: no batch, no run


def test_scored_but_never_monitored_gives_the_command(artifact: str) -> None:
    fill_weeks(1)
    at = run_app()
    assert "No monitoring run yet" in texts(at, "warning") and mv.MONITOR_COMMAND in texts(at, "warning")


def test_no_outcomes_yet_is_said_not_drawn_as_zero(artifact: str) -> None:
    fill_weeks(2, actuals=False)
    monitor()
    at = run_app()
    assert "Outcomes cover no flight yet" in texts(at, "warning")
    assert "No outcomes yet" in texts(at, "info")  # the overview's ROC-AUC tiles
    choose(at, view="Performance")
    assert "No outcomes yet for the selected windows" in texts(at, "info")
    assert [f["layout"]["title"]["text"] for f in figures(at)] == [
        "psi of the score",
        "ks_statistic of the score",
    ]
    choose(at, view="Recommendations")
    assert "No outcomes yet for the window of" in texts(at, "info")


def test_a_window_too_small_is_explained_in_every_view(artifact: str) -> None:
    fill_weeks(1)
    monitor(min_rows=10_000)
    at = run_app()
    for view in mv.VIEWS:
        choose(at, view=view)
        shown = texts(at, "warning") + texts(at, "info")
        assert "too_small" in shown or "too small" in shown, view


def test_a_granularity_not_computed_gives_its_command(monitored: None) -> None:
    at = choose(run_app(), granularity="day")
    assert f"{mv.MONITOR_COMMAND} --window day" in texts(at, "warning")
    assert not at.get("plotly_chart")


def test_a_stale_dashboard_says_so(monitored: None) -> None:
    day = START + 5 * WEEK  # a new week, scored after the latest monitoring run
    publish_day(day, scored_day(day, synthetic_frame(np.random.default_rng(3), ROWS_PER_DAY)))
    at = run_app()
    errors = texts(at, "error")
    assert "1 scored batch(es) were published after the latest week monitoring run" in errors
    assert f"latest week window ends {day}" in errors and mv.MONITOR_COMMAND in errors


# --------------------------------------------------------------------------- every view and control


def test_overview_lights_risk_bars_alerts_and_auc(monitored: None) -> None:
    at = choose(run_app(), version=VERSION, window=START + 3 * WEEK)
    assert at.subheader[0].value.startswith("Overall: :red[●] red — week of 2013-09-23")
    summary, *lights = [m.value for m in at.markdown if m.value.startswith(":")]
    assert summary == ":red[●] 1 red · :orange[●] 0 yellow · :green[●] 3 green features"
    assert lights[0] == ":red[●] precip"  # red first
    risk, weighted = figures(at)
    window = mv.window_status(mv.load_monitoring("week"), START + 3 * WEEK, VERSION)
    assert sum(risk["data"][0]["x"]) == pytest.approx(
        window["weighted_drift"]
    )  # bars add up to the job's figure
    assert weighted["data"][0]["y"] == pytest.approx([w["weighted_drift"] for w in mv.load_monitoring(
        "week").windows.filter(pl.col("model_version") == VERSION).iter_rows(named=True)])  # fmt: skip
    assert len(at.metric) == 3 + 4  # freshness, then the ROC-AUC of the last four windows
    assert 0.5 < float(at.metric[-1].value) <= 1
    alerts = at.dataframe[0].value
    assert "retrain" in set(alerts["recommendation"])


def test_feature_view_overlays_the_reference_and_bands_the_metric(monitored: None) -> None:
    at = choose(run_app(), view="Feature view", version=VERSION, window=START + 2 * WEEK, feature="precip")
    overlay, series = figures(at)
    reference, current = overlay["data"]
    zero = reference["x"].index("= 0")
    assert reference["y"][zero] == pytest.approx(0.92, abs=0.02)  # dry in ~92 % of training rows
    assert current["y"][zero] == pytest.approx(0.3, abs=0.05)  # a wet week (70 % wet)
    assert sum(current["y"]) == pytest.approx(1)
    assert (
        len([s for s in series["layout"]["shapes"] if s["type"] == "rect"]) == 3
    )  # green, yellow, red bands
    marker = [s for s in series["layout"]["shapes"] if s["type"] == "line"]
    assert [s["x0"] for s in marker] == [str(START + 4 * WEEK)]  # where the second model starts
    assert any(VERSION_2 in a["text"] for a in series["layout"]["annotations"])
    choose(at, metric="ks_statistic")
    assert figures(at)[1]["layout"]["title"]["text"] == "ks_statistic of precip per week"
    choose(at, feature="carrier")
    labels = figures(at)[0]["data"][0]["x"]
    assert {"AA", "B6"} <= set(labels)


def test_drift_table_is_sorted_by_status_with_p_values_beside(monitored: None) -> None:
    at = choose(run_app(), view="Drift table", version=VERSION, window=START + 2 * WEEK)
    table = at.dataframe[0].value
    columns = list(table.columns)
    assert columns.index("p_value_ks") == columns.index("ks_statistic") + 1
    assert columns.index("p_value_bh_chi2") == columns.index("chi2_statistic") + 2
    assert table["status"].iloc[0] == mm.RED and table["feature"].iloc[0] == "precip"
    ranks = [mm.STATUS_RANK[s] for s in table["status"]]
    assert ranks == sorted(ranks, reverse=True)


def test_time_analysis_draws_trend_and_heatmap(monitored: None) -> None:
    at = choose(run_app(), view="Time analysis", version=VERSION, feature="precip", metric="psi")
    series, heatmap = figures(at)
    assert any(t["name"].startswith("trend over last") for t in series["data"])
    assert heatmap["data"][0]["type"] == "heatmap" and "precip" in heatmap["data"][0]["y"]
    assert "slope_per_window" in at.dataframe[0].value.columns


def test_performance_over_time_calibration_and_score_drift(monitored: None) -> None:
    at = choose(run_app(), view="Performance")
    titles = [f["layout"]["title"]["text"] for f in figures(at)]
    assert titles[:2] == [
        "Realized ROC-AUC, precision and recall (bands: the ROC-AUC rule)",
        "Observed disruption rate vs mean score",
    ]
    performance = figures(at)[0]
    names = {t["name"] for t in performance["data"]}
    assert {f"{m} ({v})" for m in ("roc_auc", "precision", "recall") for v in (VERSION, VERSION_2)} == names
    assert at.dataframe[0].value["n_with_outcome"].tolist() == [7 * ROWS_PER_DAY] * 5


def test_recommendations_and_the_alert_log(monitored: None) -> None:
    at = choose(run_app(), view="Recommendations")  # the latest window: the second model, a new carrier
    assert "**Review the category mapping**: unseen categories in carrier" in texts(at, "error")
    choose(at, version=VERSION, window=START + 3 * WEEK)
    assert "**Retrain**: PSI of precip > 0.25 for 3 consecutive weeks" in texts(at, "error")
    log = at.dataframe[0].value
    assert set(log["severity"]) <= {"critical", "warning"} and len(log)
    at.multiselect(key="severity").set_value(["info"]).run()
    assert "No alert of these severities" in texts(at, "success")


def test_granularity_and_date_range_change_what_is_shown(monitored: None) -> None:
    at = choose(run_app(), view="Performance")
    assert len(at.dataframe[0].value) == 5
    choose(at, date_range=(START + WEEK, START + 3 * WEEK))
    assert at.dataframe[0].value["window_start"].astype(str).tolist() == [
        str(START + w * WEEK) for w in (1, 2, 3)
    ]
    choose(at, granularity="month")
    months = at.dataframe[0].value
    assert set(months["window_start"].astype(str)) == {"2013-09-01", "2013-10-01"}
    assert at.select_slider(key="date_range").options == ["2013-09-01", "2013-10-01"]


# --------------------------------------------------------------------------- read-only, never in the way


def _open_files() -> list[str]:
    folder = Path("/proc/self/fd")
    return [os.readlink(fd) for fd in folder.iterdir() if fd.exists()] if folder.is_dir() else []


def test_the_main_jobs_load_runs_while_the_app_has_read(monitored: None, small_csv: Path) -> None:
    load_raw_csv(small_csv)  # the warehouse exists, with monitoring views registered by the job
    mm.register_monitoring_views()
    at = run_app()
    for view in mv.VIEWS:
        choose(at, view=view)
    warehouse = str(get_settings().warehouse_path)
    assert not [f for f in _open_files() if f.startswith(warehouse)]  # nothing holds the file
    result = load_raw_csv(small_csv)  # would raise if the app held the warehouse
    assert result.row_count == 300
    choose(at, view="Overview")  # and the app still answers


# --------------------------------------------------------------------------- the data layer


def test_feature_contributions_add_up_to_the_jobs_weighted_drift(monitored: None) -> None:
    for kind in ("week", "month"):
        mon = mv.load_monitoring(kind)
        for row in mon.windows.filter(pl.col("status") == "ok").iter_rows(named=True):
            lights = mv.feature_lights(mon, row["window_start"], row["model_version"])
            assert lights["contribution"].sum() == pytest.approx(row["weighted_drift"]), (kind, row)


def test_the_overlay_counts_the_windows_flights_once(monitored: None) -> None:
    start = START + 2 * WEEK
    rows = (
        lake.read_dataset("scored")
        .filter(pl.col("flight_date") >= start, pl.col("flight_date") < start + WEEK)
        .collect()
    )
    dist = mv.distribution(VERSION, "precip", start, start + WEEK)
    assert dist.n_current == rows.height == 7 * ROWS_PER_DAY
    assert dist.current[dist.labels.index("= 0")] == pytest.approx((rows["precip"] == 0).mean())
    day = start + timedelta(days=1)  # the same flights re-scored later: still counted once
    again = rows.filter(pl.col("flight_date") == day).drop("batch_id")
    publish_day(day, again.with_columns(pl.col("scored_at") + pl.duration(days=30)), tag="r")
    assert mv.distribution(VERSION, "precip", start, start + WEEK).n_current == dist.n_current
    score = mv.distribution(VERSION, mm.SCORE, start, start + WEEK)
    assert sum(score.reference) == pytest.approx(1) and score.n_current == dist.n_current


def test_bin_labels_name_point_masses_and_open_ends() -> None:
    bins = {"edges": [float(np.nextafter(0.0, -np.inf)), 0.0, 0.25]}
    assert mv.bin_labels(bins) == [
        "null",
        "out of training range",
        "≤ -4.941e-324",
        "= 0",
        "(0, 0.25]",
        "> 0.25",
    ]


def test_staleness_rules(monitored: None) -> None:
    fresh = mv.read_freshness()
    mon = mv.load_monitoring("week")
    assert mv.staleness(fresh, "week", mon) == []  # just computed: nothing to say
    later = fresh.latest_runs["week"].finished_at + timedelta(hours=30)
    assert [m.text for m in mv.staleness(fresh, "week", mon, now=later)] == [
        "The latest week monitoring run is 30 hours old."
    ]
    assert mv.staleness(fresh, "day", None)[0].text.endswith("--window day`.")
    assert mv.version_changes(mon.windows) == [(START + 4 * WEEK, VERSION_2)]


def test_the_lake_signature_changes_with_any_new_batch(monitored: None) -> None:
    before = mv.lake_signature()
    assert mv.lake_signature() == before
    monitor(full=True)
    assert mv.lake_signature() != before


# --------------------------------------------------------------------------- the real Sep-Dec lake


def test_the_real_lake_in_every_view_under_two_seconds(production_monitored, production_lake) -> None:
    """The session's Sep-Dec production lake (122 daily batches, 19 weekly windows): every
    view and control answers, and, once a view's data is cached, within 2 s."""
    with production_lake.settings():
        at = run_app()
        assert not texts(at, "error"), texts(at, "error")  # fresh: no staleness
        assert at.subheader[0].value.startswith("Overall:") and "week of 2013-12-30" in at.subheader[0].value
        timings = {}
        for view in mv.VIEWS:
            choose(at, view=view)  # first visit: reads and caches
            started = time.perf_counter()
            choose(at, view="Overview")
            choose(at, view=view)
            timings[view] = (time.perf_counter() - started) / 2
        choose(at, view="Feature view")
        for control, value in [
            ("feature", "pressure"),
            ("metric", "ks_statistic"),
            ("window", date(2013, 12, 9)),
        ]:
            choose(at, **{control: value})  # first time: the overlay's aggregate query
            started = time.perf_counter()
            at.selectbox(key=control).select_index(0).run()
            choose(at, **{control: value})
            timings[control] = (time.perf_counter() - started) / 2
        table = choose(at, view="Drift table").dataframe[0].value
        assert len(table) == len(fe.FEATURES) + 1 and table["status"].iloc[0] == mm.RED  # and the score
        assert "2013-09-02" in at.select_slider(key="date_range").options
        choose(at, granularity="month")
        assert "--window month" in texts(at, "warning")
    print("cached interaction seconds:", {k: round(v, 2) for k, v in timings.items()})
    assert max(timings.values()) < 2.0, timings
