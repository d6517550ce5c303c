"""Outcome history features: only outcomes known at the run's cut-off reach a feature (docs/history.md).

The point-in-time proof changes every outcome that is not known at day D's cut-off (the
later flights of D-1, all of D and after) and shows that no feature and no score of D
changes; the same change to a *known* outcome does change them, so the proof can fail.
Then the history is taken away: the flights are still scored, with nulls and a flag.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import polars as pl
import pytest

import ft_engineering as fe
import history
import lake
import scoring as sc
from data_contract import SCORING_INPUT_COLUMNS

DAY = date(2013, 10, 15)
KEY = sc.KEY_COLUMNS


def _flight(dest: str, dep: int, arr: int, day: date = DAY, disrupted: int = 0) -> dict:
    return {
        "year": day.year, "month": day.month, "day": day.day, "carrier": "UA", "flight": 1,
        "origin": "EWR", "dest": dest, "sched_dep_time": dep, "sched_arr_time": arr,
        "is_disrupted": disrupted,
    }  # fmt: skip


def _known_at(*flights: dict) -> list[datetime]:
    return history.prepare_outcomes(pl.DataFrame(list(flights)))["known_at"].to_list()


def test_an_outcome_is_known_an_hour_after_its_scheduled_arrival_in_new_york_time() -> None:
    assert _known_at(
        _flight("BOS", 1700, 1815),  # Eastern: 18:15 + 1 h
        _flight("LAX", 1700, 2030),  # Pacific (PDT in October): 23:30 New York time + 1 h
        _flight("ORD", 2200, 2350),  # Central: 00:50 the next day + 1 h
        _flight("SFO", 2100, 2359),  # Pacific, past New York's midnight
        _flight("SJU", 2300, 330),  # overnight: arrives the next day
        _flight("XXX", 1200, 1300),  # a destination not in the table: Honolulu time (6 h behind in October)
    ) == [
        datetime(2013, 10, 15, 19, 15),
        datetime(2013, 10, 16, 0, 30),
        datetime(2013, 10, 16, 1, 50),
        datetime(2013, 10, 16, 3, 59),
        datetime(2013, 10, 16, 4, 30),
        datetime(2013, 10, 15, 20, 0),
    ]


def test_a_local_time_the_dst_change_skips_is_read_later() -> None:
    # 10 March 2013, 02:30 does not exist in Chicago: read as 03:30 CDT = 04:30 New York time
    assert _known_at(_flight("ORD", 100, 230, date(2013, 3, 10))) == [datetime(2013, 3, 10, 5, 30)]


def test_whether_an_outcome_is_known_never_depends_on_the_outcome() -> None:
    on_time, disrupted = _flight("BOS", 1700, 1815), _flight("BOS", 1700, 1815, disrupted=1)
    assert _known_at(on_time) == _known_at(disrupted)


def test_thin_groups_are_shrunk_towards_the_day_and_empty_groups_get_it() -> None:
    """D-1: 100 known EWR flights, 20 disrupted; one JFK flight, disrupted. JFK's rate is
    (1 + 20 x overall) / (1 + 20), not 100 %; LGA (no flight) gets the overall rate."""
    d1 = DAY - timedelta(days=1)
    rows = [_flight("BOS", 800, 915, d1, disrupted=int(i < 20)) for i in range(100)]
    rows.append({**_flight("BOS", 800, 915, d1, disrupted=1), "origin": "JFK"})
    outcomes = history.prepare_outcomes(pl.DataFrame(rows))
    tables = history.history_tables(outcomes, pl.Series([DAY]))
    batch = pl.DataFrame(
        {"flight_date": [DAY] * 3, "origin": ["EWR", "JFK", "LGA"], "carrier": "UA", "dest": "BOS"}
    )
    out = history.add_history(batch.lazy(), tables).collect()
    overall = 21 / 101
    assert out["hist_d1_all_rate"].to_list() == pytest.approx([overall] * 3)
    assert out["hist_d1_origin_rate"].to_list() == pytest.approx(
        [(20 + 20 * overall) / (100 + 20), (1 + 20 * overall) / (1 + 20), overall]
    )
    assert out[history.HISTORY_FLAG].to_list() == [1, 1, 1]  # one of the 8 days has outcomes
    assert out["hist_w7_all_rate"].null_count() == 3  # D-8 .. D-2: nothing known


# --------------------------------------------------------------------------- the point-in-time proof


@pytest.fixture(scope="module")
def warehouse_outcomes(raw_frame) -> pl.DataFrame:
    """The warehouse's flights as published outcomes (what the production run publishes)."""
    return fe.add_target(raw_frame.lazy()).select(history.OUTCOME_COLUMNS).collect()


def _publish(folder, outcomes: pl.DataFrame) -> history.History:
    folder.mkdir(parents=True, exist_ok=True)
    outcomes.write_parquet(folder / "actuals.parquet")
    return history.History(folder)


def _day_scores(scorer: sc.Scorer, raw_frame: pl.DataFrame, outcomes: history.History) -> pl.DataFrame:
    scorer.history = outcomes
    flights = raw_frame.filter(pl.date("year", "month", "day") == DAY).select(SCORING_INPUT_COLUMNS)
    prepared = sc.prepare(flights, scorer, with_digests=True)
    return sc.finish(prepared, scorer, with_features=True)


@pytest.fixture
def scorer(use_trained) -> sc.Scorer:
    return sc.Scorer.load(fast=False)


def _unknown_at_cutoff(outcomes: pl.DataFrame) -> pl.Series:
    prepared = history.prepare_outcomes(outcomes)
    cutoff = datetime.combine(DAY - timedelta(days=1), datetime.min.time()) + timedelta(
        hours=history.CUTOFF_HOUR
    )
    return prepared["known_at"] > cutoff


def _flipped(outcomes: pl.DataFrame, where: pl.Series) -> pl.DataFrame:
    """``outcomes`` with the outcome of every row ``where`` is true turned round."""
    flip = pl.when(where).then(1 - pl.col("is_disrupted")).otherwise(pl.col("is_disrupted"))
    return outcomes.with_columns(flip.alias("is_disrupted"))


def test_no_outcome_unknown_at_the_cut_off_changes_a_feature_or_a_score(
    scorer, raw_frame, warehouse_outcomes, tmp_path
) -> None:
    unknown = _unknown_at_cutoff(warehouse_outcomes)
    dates = warehouse_outcomes.select(pl.date("year", "month", "day")).to_series()
    # the later flights of D-1 are among them, and every flight of D and after
    assert unknown.filter(dates == DAY - timedelta(days=1)).sum() > 100
    assert unknown.filter(dates >= DAY).all()
    flipped = _flipped(warehouse_outcomes, unknown)
    before = _day_scores(scorer, raw_frame, _publish(tmp_path / "a", warehouse_outcomes))
    after = _day_scores(scorer, raw_frame, _publish(tmp_path / "b", flipped))
    assert before["history_days"].unique().to_list() == [8]
    assert after.select(*fe.FEATURES, "score", "context_digest").equals(
        before.select(*fe.FEATURES, "score", "context_digest")
    )
    # the proof can fail: flip the *known* outcomes of D-1 instead and the features move
    d1_known = (dates == DAY - timedelta(days=1)) & ~unknown
    leaked = _flipped(warehouse_outcomes, d1_known)
    moved = _day_scores(scorer, raw_frame, _publish(tmp_path / "c", leaked))
    assert not moved["hist_d1_all_rate"].equals(before["hist_d1_all_rate"])
    assert (moved["context_digest"] != before["context_digest"]).all()  # a visible re-score


def test_without_history_the_flights_are_scored_with_nulls_and_flagged(scorer, raw_frame, tmp_path) -> None:
    bare = _day_scores(scorer, raw_frame, history.History(tmp_path / "no-actuals"))
    assert bare.height == raw_frame.filter(pl.date("year", "month", "day") == DAY).height
    assert bare["history_days"].unique().to_list() == [0]
    assert all(bare[f].null_count() == bare.height for f in history.HISTORY_FEATURES)
    assert bare["score"].is_between(0, 1).all()


def test_a_gap_in_the_actuals_is_counted_in_the_flag(scorer, raw_frame, warehouse_outcomes, tmp_path) -> None:
    dates = warehouse_outcomes.select(pl.date("year", "month", "day")).to_series()
    gap = warehouse_outcomes.filter(~dates.is_between(DAY - timedelta(days=3), DAY - timedelta(days=2)))
    scored = _day_scores(scorer, raw_frame, _publish(tmp_path / "gap", gap))
    assert scored["history_days"].unique().to_list() == [6]
    assert scored["hist_d2_all_rate"].null_count() == scored.height
    assert scored["hist_d1_all_rate"].null_count() == 0


def test_training_and_the_production_run_see_the_same_history(production_lake, real_datasets) -> None:
    """The production run publishes each day's outcomes after scoring it; its stored
    history features are those training computed from the warehouse for the test months."""
    stored = pl.read_parquet(production_lake.folder / "lake" / sc.SCORED_DATASET / "*.parquet")
    test = real_datasets.test
    assert stored.height == test.height
    for feature in history.HISTORY_FEATURES:
        ours, theirs = stored[feature].sort(nulls_last=True), test[feature].sort(nulls_last=True)
        assert ours.equals(theirs), feature
    assert stored["history_days"].unique().to_list() == [8]


def test_late_outcomes_make_a_re_score_visible_and_the_same_history_stores_nothing(
    scorer, raw_frame, warehouse_outcomes, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("MLOPS_LAKE_DIR", str(tmp_path / "lake"))
    from settings import get_settings

    get_settings.cache_clear()
    dates = warehouse_outcomes.select(pl.date("year", "month", "day")).to_series()
    flights = raw_frame.filter(pl.date("year", "month", "day") == DAY).select(SCORING_INPUT_COLUMNS)
    # D-2's outcomes arrive late: tonight's run scored D without them
    partial = warehouse_outcomes.filter(dates != DAY - timedelta(days=2))
    scorer.history = _publish(tmp_path / "partial", partial)
    assert sc.score_and_persist(flights, scorer)[1].new_rows == flights.height
    assert sc.score_and_persist(flights, scorer)[1].new_rows == 0  # the same history: nothing new
    scorer.history = _publish(tmp_path / "complete", warehouse_outcomes)
    rescored, stored = sc.score_and_persist(flights, scorer)
    assert stored.new_rows == flights.height  # a new, visible score of every flight of D
    assert rescored["history_days"].unique().to_list() == [8]
    assert lake.read_dataset(sc.SCORED_DATASET).collect().height == 2 * flights.height
