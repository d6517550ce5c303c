"""The monitoring job: known-answer metrics, SQL binning, windows, alerts, re-scores, recompute.

Unit tests build a small artifact (a real LightGBM model on synthetic columns, its format-2
reference profile) and a small scored lake in the test's own folders; one test runs the job
on the real Sep-Dec production scoring and checks that the seasonal drift is flagged.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

import lake
import model_monitoring as mm
import reference_profile as rp
from conftest import (
    RAW_CSV,
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
from warehouse import connect

# --------------------------------------------------------------------------- known answers


def test_identical_distributions_give_zero() -> None:
    counts = np.array([10.0, 30, 60])
    assert mm.psi(counts, counts) == pytest.approx(0)
    assert mm.js_distance(counts, counts) == pytest.approx(0)
    assert mm.chi_squared(counts, counts) == pytest.approx((0.0, 1.0))
    values = np.array([1.0, 2, 3])
    assert mm.ks_from_counts(values, counts, values, counts)[0] == pytest.approx(0)


def test_disjoint_distributions_give_the_maximum() -> None:
    ref, cur = np.array([50.0, 50, 0, 0]), np.array([0.0, 0, 50, 50])
    assert mm.js_distance(ref, cur) == pytest.approx(1)
    assert mm.psi(ref, cur) > 10  # unbounded; the epsilon floor keeps it finite
    assert mm.chi_squared(ref, cur)[1] < 1e-20
    d, p = mm.ks_from_counts(np.array([1.0, 2]), np.array([50, 50]), np.array([3.0, 4]), np.array([50, 50]))
    assert d == 1 and p < 1e-20


def test_metrics_match_scipy_on_hand_made_tables() -> None:
    ref, cur = np.array([12.0, 30, 41, 17]), np.array([20.0, 25, 35, 20])
    p, q = ref / ref.sum(), cur / cur.sum()
    assert mm.psi(ref, cur) == pytest.approx(float(np.sum(rel_entr(q, p) + rel_entr(p, q))))
    assert mm.js_distance(ref, cur) == pytest.approx(float(jensenshannon(p, q, base=2)))
    expected = stats.chi2_contingency(np.vstack([ref, cur]), correction=False)
    assert mm.chi_squared(ref, cur) == pytest.approx((expected.statistic, expected.pvalue))


@pytest.mark.parametrize("sizes", [(40, 60), (300, 200), (5000, 3000)])
def test_ks_from_count_tables_matches_scipy(sizes: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 30, sizes[0]).astype(float)  # ties on purpose
    b = rng.integers(3, 33, sizes[1]).astype(float)
    av, ac = np.unique(a, return_counts=True)
    bv, bc = np.unique(b, return_counts=True)
    d, p = mm.ks_from_counts(av, ac, bv, bc)
    expected = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(expected.statistic)
    if sizes[0] * sizes[1] / sum(sizes) <= mm.KS_EXACT_EN:
        assert p == pytest.approx(expected.pvalue, rel=1e-9)
    else:  # the limit law above KS_EXACT_EN
        assert p == pytest.approx(stats.kstwobign.sf(d * np.sqrt(sizes[0] * sizes[1] / sum(sizes))))


def test_bh_matches_scipy() -> None:
    raw = [0.01, 0.04, 0.03, float("nan"), 0.5]
    adjusted = mm.bh_adjust(raw)
    assert np.isnan(adjusted[3])
    finite = [x for x in raw if np.isfinite(x)]
    assert [a for a in adjusted if np.isfinite(a)] == pytest.approx(
        list(stats.false_discovery_control(finite))
    )


def test_change_point_finds_a_step_and_not_noise() -> None:
    rng = np.random.default_rng(3)
    step = np.r_[rng.normal(0.05, 0.01, 8), rng.normal(0.4, 0.01, 8)]
    where, p = mm.change_point(step, seed=1)
    assert where == 8 and p < mm.CHANGE_POINT_ALPHA
    _, p_noise = mm.change_point(rng.normal(0.05, 0.01, 16), seed=1)
    assert p_noise > mm.CHANGE_POINT_ALPHA
    # a window without a value (an empty window's metric) is left out, and the shift is
    # still placed at its window in the series as given
    with_gap = np.r_[step[:3], np.nan, step[3:]]
    assert mm.change_point(with_gap, seed=1)[0] == 9
    assert mm.slope([0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.1)


def test_the_sequential_change_point_p_value_decides_as_the_full_permutation_test() -> None:
    """Stopping early never changes a decision: a series significant with all 999
    permutations gets the same p-value; one that stops early has p >= 10/999 > alpha."""

    def full(values: np.ndarray, seed: int) -> float:
        observed = mm._shift_statistics(values[None, :])[0, 0]
        permuted = np.random.default_rng(seed).permuted(
            np.tile(values, (mm.CHANGE_POINT_PERMUTATIONS, 1)), axis=1
        )
        exceed = int(np.sum(mm._shift_statistics(permuted)[:, 0] >= observed))
        return (exceed + 1) / (mm.CHANGE_POINT_PERMUTATIONS + 1)

    rng = np.random.default_rng(11)
    stopped = 0
    for shift in [0.0] * 20 + [0.01, 0.02, 0.03, 0.05, 0.1, 0.3] * 3:
        series = np.r_[rng.normal(0, 0.01, 9), rng.normal(shift, 0.01, 10)]
        _, p = mm.change_point(series, seed=5)
        expected = full(series, seed=5)
        if expected < mm.CHANGE_POINT_ALPHA:
            assert p == expected
        else:
            assert p >= mm.CHANGE_POINT_ALPHA and (p < mm.CHANGE_POINT_ALPHA) == (
                expected < mm.CHANGE_POINT_ALPHA
            )
            stopped += p != expected
    assert stopped > 10  # most noise series stop early


# --------------------------------------------------------------------------- bins


def test_a_point_mass_gets_its_own_bin() -> None:
    values = np.r_[np.zeros(920), np.linspace(0.01, 1.2, 80)]  # like precip: 0 in 92 % of hours
    edges = rp.tie_aware_edges(values)
    assert rp.quantile_edges(pl.Series(values)) == [0.0]  # the decile edges collapse
    zero_bin = rp.bin_index(np.array([0.0]), edges)[0]
    assert rp.bin_index(np.array([-1e-300, 0.01]), edges).tolist() != [zero_bin, zero_bin]
    assert (rp.bin_index(values, edges) == zero_bin).sum() == 920  # exactly the zeros


def test_sql_binning_agrees_with_the_reference_profile_on_edge_values() -> None:
    rng = np.random.default_rng(5)
    values = np.r_[np.zeros(600), np.full(200, 3.0), rng.normal(10, 3, 1200).round(1)]
    bins = rp.numeric_bins(values)
    edges = bins["edges"]
    probes = [bins["min"], bins["max"]]
    for e in edges:
        probes += [e, float(np.nextafter(e, -np.inf)), float(np.nextafter(e, np.inf))]
    probes = [p for p in probes if bins["min"] <= p <= bins["max"]]
    con = duckdb.connect()
    con.execute("CREATE TABLE t (v DOUBLE)")
    con.executemany(
        "INSERT INTO t VALUES (?)", [[p] for p in probes] + [[None], [float("nan")], [-1e9], [1e9]]
    )
    got = con.sql(f"SELECT v, {mm.bin_sql('v', bins)} AS b FROM t").fetchall()
    expected = {p: int(rp.bin_index(np.array([p]), edges)[0]) for p in probes}
    for v, b in got:
        if v is None or np.isnan(v):
            assert b == -1
        elif v < bins["min"] or v > bins["max"]:
            assert b == -2
        else:
            assert b == expected[v], v


# --------------------------------------------------------------------------- a small lake


def _run(**kwargs) -> mm.RunSummary:
    return mm.run_once(mm.MonitorConfig(progress=False, **{"min_rows": 300, **kwargs}))


def _current(kind: str) -> pl.DataFrame:
    return mm.current_rows(duckdb.connect(), kind, "week")


def _metric(drift: pl.DataFrame, feature: str, metric: str) -> pl.DataFrame:
    return drift.filter(pl.col("feature") == feature, pl.col("metric") == metric).sort("window_start")


def test_no_drift_stays_quiet(artifact: str) -> None:
    fill_weeks()
    summary = _run()
    assert summary.windows_total == summary.windows_recomputed == 4
    drift = _current("drift")
    assert set(drift["window_start"].unique()) == {START + timedelta(days=7 * w) for w in range(4)}
    effect = drift.filter(pl.col("metric").is_in(["psi", "js_distance", "ks_statistic"]))
    assert effect["status"].to_list() == [mm.GREEN] * effect.height
    assert _current("alerts").height == 0
    assert set(_current("windows")["overall_status"]) == {mm.GREEN}
    columns = set(drift.columns)
    assert {"window_start", "window_end", "feature", "metric", "value", "p_value", "threshold", "status",
            "n_reference", "n_current", "model_version"} <= columns  # fmt: skip
    perf = _current("performance")
    assert perf.height == 4 and perf["n_with_outcome"].to_list() == [7 * ROWS_PER_DAY] * 4
    assert perf["roc_auc"].min() > 0.5


def test_a_wet_week_is_seen_by_psi_js_chi2_and_ks(artifact: str) -> None:
    fill_weeks(drift_weeks=(2,))
    _run()
    drift = _current("drift")
    wet = START + timedelta(days=14)
    for metric in ("psi", "js_distance", "ks_statistic"):
        rows = _metric(drift, "precip", metric)
        assert rows.filter(pl.col("window_start") == wet)["status"].item() == mm.RED, metric
        assert set(rows.filter(pl.col("window_start") != wet)["status"]) == {mm.GREEN}, metric
    chi2 = _metric(drift, "precip", "chi2_statistic").filter(pl.col("window_start") == wet)
    assert chi2["p_value_bh"].item() < 1e-6 and chi2["p_value_bh"].item() >= chi2["p_value"].item()


def test_alerts_fire_on_constructed_drift(artifact: str) -> None:
    fill_weeks(weeks=4, drift_weeks=(1, 2, 3), new_carrier_week=3)
    _run()
    alerts = _current("alerts")
    retrain = alerts.filter(pl.col("feature") == "precip", pl.col("severity") == "critical")
    assert retrain.height == 1 and "for 3 consecutive weeks" in retrain["reason"].item()
    assert retrain["recommendation"].item() == "retrain"
    mapping = alerts.filter(pl.col("feature") == "carrier", pl.col("metric") == "unseen_share")
    assert mapping.height == 1 and mapping["recommendation"].item() == "review the category mapping"
    assert mapping["window_start"].item() == START + timedelta(days=21)
    unseen = _metric(_current("drift"), "carrier", "unseen_share")
    assert unseen["value"][-1] == pytest.approx(0.2, abs=0.05) and unseen["value"][0] == 0
    trends = mm.current_rows(duckdb.connect(), "trends", "week")
    psi_trend = trends.filter(pl.col("feature") == "precip", pl.col("metric") == "psi")
    assert psi_trend["slope_per_window"].item() > 0


def test_a_rescored_flight_counts_once_with_its_latest_score(artifact: str) -> None:
    fill_weeks(weeks=1)
    day = START + timedelta(days=1)
    original = lake.read_dataset("scored").filter(pl.col("flight_date") == day).collect()
    rescored = original.with_columns(
        pl.col("score") * 0 + 0.9, pl.col("scored_at") + pl.duration(days=30)
    ).drop("batch_id")
    publish_day(day, rescored, tag="r")
    _run()
    windows = _current("windows")
    assert windows["n_rows"].item() == 8 * ROWS_PER_DAY  # scored rows, the re-score included
    assert windows["n_sampled"].item() == 7 * ROWS_PER_DAY  # flights measured: each once
    perf = _current("performance")
    base = lake.read_dataset("scored").filter(pl.col("flight_date") != day).collect()["score"]
    expected = (base.sum() + 0.9 * ROWS_PER_DAY) / (7 * ROWS_PER_DAY)
    assert perf["mean_score"].item() == pytest.approx(expected)


def test_recompute_is_idempotent_and_incremental(artifact: str) -> None:
    fill_weeks(weeks=3)
    first = _run()
    before = _current("drift").drop("run_id", "computed_at").sort("window_start", "feature", "metric")
    again = _run(full=True)
    assert again.windows_recomputed == 3
    after = _current("drift").drop("run_id", "computed_at").sort("window_start", "feature", "metric")
    assert after.equals(before)  # same rows, one set per window, however often it is recomputed
    assert _run().windows_recomputed == 0  # nothing changed
    # a new day in week 2 (flights not seen yet): only that window is recomputed
    day = START + timedelta(days=8)
    publish_day(
        day, scored_day(day, synthetic_frame(np.random.default_rng(99), 50), first_flight=5000), tag="late"
    )
    third = _run()
    assert third.windows_recomputed == 1 and first.run_id != third.run_id
    windows = _current("windows").sort("window_start")
    assert windows["n_sampled"].to_list() == [7 * ROWS_PER_DAY, 7 * ROWS_PER_DAY + 50, 7 * ROWS_PER_DAY]
    assert windows["run_id"].to_list()[1] == third.run_id and windows["run_id"].to_list()[0] != third.run_id


def test_a_polars_upgrade_or_a_new_rule_recomputes_every_window(artifact: str, monkeypatch) -> None:
    """The sample is a Polars hash, stable within a Polars version only; the rules decide
    every status: either changing makes a run recompute every window, not only new ones."""
    fill_weeks(weeks=2)
    _run()
    assert _run().windows_recomputed == 0
    monkeypatch.setattr(pl, "__version__", "0.0.0-other")
    assert _run().windows_recomputed == 2
    monkeypatch.setitem(mm.THRESHOLDS, "psi", mm.Threshold(0.2, 0.3))
    assert _run().windows_recomputed == 2
    assert _run().windows_recomputed == 0


def test_views_in_the_warehouse_show_the_current_rows(artifact: str) -> None:
    fill_weeks(weeks=2)
    _run()
    _run(full=True)
    with connect(read_only=True) as con:
        n = con.sql("SELECT count(*) FROM monitoring_drift").fetchall()[0][0]
        runs = con.sql("SELECT count(DISTINCT run_id) FROM mon_drift").fetchall()[0][0]
    assert runs == 2 and n == _current("drift").height


def test_small_windows_are_reported_not_scored(artifact: str) -> None:
    fill_weeks(weeks=1)
    _run(min_rows=10_000)
    windows = _current("windows")
    assert windows["status"].to_list() == ["too_small"] and _current("drift").height == 0


def test_sampling_is_repeatable_and_bounded(artifact: str) -> None:
    fill_weeks(weeks=1)
    _run(sample_rows=200)
    first = _current("drift").drop("run_id", "computed_at").sort("feature", "metric")
    assert 140 <= _current("windows")["n_sampled"].item() <= 260  # a Bernoulli sample of ~200 flights
    _run(sample_rows=200, full=True)
    assert _current("drift").drop("run_id", "computed_at").sort("feature", "metric").equals(first)


def test_the_sample_does_not_depend_on_file_order_or_threads(artifact: str) -> None:
    """What a user changes between two runs: the thread count (DuckDB's and Polars') and the
    order the lake lists its files in; the sampled flights and the drift rows stay the same."""
    fill_weeks(weeks=2)
    _run(sample_rows=300)
    drift = _current("drift").drop("run_id", "computed_at").sort("window_start", "feature", "metric")
    monitor = mm.Monitor(mm.MonitorConfig(progress=False, sample_rows=300))
    files = mm._paths("scored")
    window = mm.Window(START, START + timedelta(days=7), files, [], "", {VERSION: 7 * ROWS_PER_DAY}, 300)
    columns = [*mm.KEY_COLUMNS, "flight_date", "model_version", "scored_at", "score", "precip"]
    keys = [*mm.KEY_COLUMNS, "model_version"]
    forward = monitor.load_group([window], columns).sort(keys)
    backward = monitor.load_group([dataclasses.replace(window, files=files[::-1])], columns).sort(keys)
    assert forward.equals(backward) and 0 < forward.height < 7 * ROWS_PER_DAY
    # one thread for both engines, in a process of its own (Polars fixes its pool at import)
    env = {**os.environ, "POLARS_MAX_THREADS": "1", "MLOPS_N_THREADS": "1"}
    script = (
        "import model_monitoring as mm; "
        "mm.run_once(mm.MonitorConfig(progress=False, min_rows=300, sample_rows=300, full=True))"
    )
    subprocess.run([sys.executable, "-c", script], env=env, cwd=SRC_DIR, check=True, capture_output=True)
    again = _current("drift").drop("run_id", "computed_at").sort("window_start", "feature", "metric")
    assert again.equals(drift)


@pytest.mark.parametrize("window", ["day", "week", "month"])
def test_window_counts_from_footers_match_a_scan(artifact: str, window: str) -> None:
    """Daily single-version batches count from their footers; a batch that spans two weeks
    (one version) and one that also holds two versions are read; the counts are a full
    scan's either way."""
    fill_weeks(weeks=2)
    days = [START + timedelta(days=6), START + timedelta(days=7)]  # Sunday and Monday
    mixed = pl.concat(
        scored_day(day, synthetic_frame(np.random.default_rng(5), 30), first_flight=7000, version=version)
        for day in days
        for version in (VERSION, "lgbm-other")
    )
    spans = mixed.filter(pl.col("model_version") == VERSION).with_columns(pl.col("flight") + 1000)
    for name, batch in (("mixed-batch", mixed), ("two-weeks", spans)):
        lake.write_batch("scored", name, batch.with_columns(pl.lit(name).alias("batch_id")).to_arrow())
    # a file from a writer that leaves statistics out: its dates are read, its rows scanned
    no_stats = spans.with_columns(pl.col("flight") + 1000, pl.lit("no-stats").alias("batch_id"))
    pq.write_table(
        no_stats.to_arrow(), lake.dataset_dir("scored") / "no-stats.parquet", write_statistics=False
    )
    pq.write_table(no_stats.head(0).to_arrow(), lake.dataset_dir("scored") / "empty.parquet")  # no rows
    monitor = mm.Monitor(mm.MonitorConfig(progress=False, window=window))
    paths = mm._paths("scored")
    files = mm.file_date_ranges(monitor.con, paths)
    by_file = {Path(f).stem: v for f, v in files.select("file", "version").iter_rows()}
    assert by_file["mixed-batch"] is None and by_file[f"{VERSION}.s-{START}"] == VERSION
    assert by_file["two-weeks"] == VERSION  # one version, two day and week windows, one month
    assert by_file["no-stats"] is None and "empty" not in by_file
    no_stats_range = files.filter(pl.col("file").str.ends_with("no-stats.parquet")).select("lo", "hi").row(0)
    assert no_stats_range == tuple(days)
    assert files["rows"].sum() == 14 * ROWS_PER_DAY + 8 * 30
    start, interval = mm.window_start_sql(window), mm.WINDOW_SQL[window][1]
    scanned = monitor.con.sql(
        f"SELECT {start}, CAST({start} + {interval} AS DATE), model_version, count(*) "
        f"FROM read_parquet({mm._sql_list(paths)}, union_by_name = true) GROUP BY ALL ORDER BY 1, 3"
    ).fetchall()
    assert monitor.window_counts(files) == scanned


def test_two_model_versions_in_one_window_are_measured_apart(artifact: str) -> None:
    """A week re-scored by a second model: each version's rows are its own population; the
    first version's drift rows are the ones it has when it is alone in the table."""
    fill_weeks(weeks=1)
    _run()
    alone = _current("drift").drop("run_id", "computed_at").sort("feature", "metric")
    save_synthetic_artifact("lgbm-synthetic0002")
    for offset in range(7):
        day = START + timedelta(days=offset)
        frame = lake.read_dataset("scored").filter(pl.col("flight_date") == day).collect()
        second = frame.with_columns(pl.lit("lgbm-synthetic0002").alias("model_version")).drop("batch_id")
        publish_day(day, second, tag="v2", actuals=False)
    _run()
    drift = _current("drift").drop("run_id", "computed_at").sort("feature", "metric")
    assert set(drift["model_version"]) == {VERSION, "lgbm-synthetic0002"}
    assert drift.filter(pl.col("model_version") == VERSION).equals(alone)
    windows = _current("windows").sort("model_version")
    assert windows["n_sampled"].to_list() == [7 * ROWS_PER_DAY] * 2


def test_day_level_features_are_capped_in_weeks_and_judged_in_months() -> None:
    """A history rate is one value per day and group: red in a week is capped at yellow and
    left out of the weighted drift; a month window judges it in full."""
    feature = next(iter(mm.HISTORY_FEATURES))
    assert feature in mm.DAY_LEVEL_FEATURES

    def rows() -> list[dict]:
        return [
            {**mm._metric(feature, "psi", 0.6, None, 1000, 700), "status": mm.RED},
            {**mm._metric("precip", "psi", 0.01, None, 1000, 700), "status": mm.GREEN},
        ]

    importance = {feature: 0.5, "precip": 0.5}
    week = rows()
    mm.cap_day_level(week)
    weighted, overall = mm.feature_statuses(week, importance, capped=True)
    status = {r["feature"]: r["status"] for r in week if r["metric"] == "status"}
    assert status[feature] == mm.YELLOW and weighted == 0 and overall == mm.GREEN
    month = rows()  # month windows are in FULL_STATUS_WINDOWS: no cap
    assert "month" in mm.FULL_STATUS_WINDOWS
    weighted, overall = mm.feature_statuses(month, importance, capped=False)
    status = {r["feature"]: r["status"] for r in month if r["metric"] == "status"}
    assert status[feature] == mm.RED and weighted == pytest.approx(0.5) and overall == mm.RED


def test_edge_cases_all_null_single_category_empty() -> None:
    spec = rp.build_reference_profile(
        pl.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "c": [0, 1, 0, 1], "unknown_c": [False] * 4}),
        ["x"], {"c": ["A", "B"]}, np.array([0.1, 0.2, 0.3]), score_period="validation",
    )["features"]  # fmt: skip
    all_null = pl.DataFrame(
        {"value": [None], "bin": [-1], "n": [50]},
        schema={"value": pl.Float64, "bin": pl.Int32, "n": pl.Int64},
    )
    rows = {r["metric"]: r for r in mm.numeric_metrics("x", spec["x"], all_null)}
    assert rows["null_rate_change"]["value"] == 1 and rows["null_rate_change"]["status"] == mm.RED
    assert rows["ks_statistic"]["value"] is None
    single = pl.DataFrame({"label": ["0"], "unknown": [False], "n": [40]})
    cat = {r["metric"]: r for r in mm.categorical_metrics("c", spec["c"], single, ["A", "B"])}
    assert cat["js_distance"]["value"] > 0.3 and cat["unseen_share"]["value"] == 0
    new = pl.DataFrame({"label": ["ZZ", "1"], "unknown": [True, False], "n": [30, 10]})
    cat = {r["metric"]: r for r in mm.categorical_metrics("c", spec["c"], new, ["A", "B"])}
    assert cat["unseen_share"]["value"] == pytest.approx(0.75) and cat["unseen_share"]["status"] == mm.RED
    empty = pl.DataFrame(schema={"value": pl.Float64, "bin": pl.Int32, "n": pl.Int64})
    assert all(r["value"] is None for r in mm.numeric_metrics("x", spec["x"], empty))


def test_a_stale_profile_says_retrain(artifact: str) -> None:
    fill_weeks(weeks=1)
    folder = get_settings().artifacts_dir / "models" / VERSION
    profile = json.loads((folder / "reference_profile.json").read_text())
    old = {
        "rows": profile["rows"],
        "score": {k: profile["score"][k] for k in ("edges", "shares", "mean", "period")},
    }
    old["features"] = {
        name: {k: v for k, v in spec.items() if k not in ("bins", "ks_reference", "buckets", "n")}
        for name, spec in profile["features"].items()
    }
    import hashlib

    (folder / "reference_profile.json").write_text(json.dumps(old))
    sums = (folder / "SHA256SUMS").read_text().splitlines()
    digest = hashlib.sha256((folder / "reference_profile.json").read_bytes()).hexdigest()
    (folder / "SHA256SUMS").write_text(
        "".join(
            (f"{digest}  reference_profile.json" if line.endswith("reference_profile.json") else line) + "\n"
            for line in sums
        )  # fmt: skip
    )
    with pytest.raises(mm.StaleProfileError, match="retrain"):
        _run()
    result = subprocess.run(
        [sys.executable, str(SRC_DIR / "model_monitoring.py")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 2 and "retrain" in result.stderr and "Traceback" not in result.stderr


def test_help_has_no_side_effects(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SRC_DIR / "model_monitoring.py"), "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "--every" in result.stdout
    assert not (tmp_path / "lake").exists() and not (tmp_path / "warehouse.duckdb").exists()
    assert mm.parse_every("1h") == 3600 and mm.parse_every("15m") == 900


# --------------------------------------------------------------------------- the real Sep-Dec run


def test_the_real_sep_dec_run_flags_the_seasonal_drift(production_monitored) -> None:
    summary, tables = production_monitored
    assert summary.windows_total >= 17 and not summary.stale_models
    perf = tables["performance"].sort("window_start")
    september = perf.filter(pl.col("window_start") < date(2013, 9, 30))
    december = perf.filter(
        pl.col("window_start") >= date(2013, 12, 2), pl.col("window_start") < date(2013, 12, 23)
    )
    # the disruption rate climbs from ~15 % to ~36 % while the model's mean score stays behind
    assert december["observed_rate"].mean() > september["observed_rate"].mean() + 0.1
    assert (december["calibration_gap"] > 0.05).any()
    drift = tables["drift"]
    red = drift.filter(pl.col("metric") == "status", pl.col("status") == mm.RED)["feature"].unique().to_list()
    assert {"dewp_spread", "pressure"} & set(red)  # the autumn's weather moves away from Jan-Jun
    assert tables["alerts"].filter(pl.col("severity") == "critical").height > 0
    assert RAW_CSV.exists()
