"""ft_engineering: time splits, no leakage, fitted state, batch-exact features."""

from __future__ import annotations

import json
from datetime import date

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import ft_engineering as fe
from data_contract import FLIGHT_KEY, validate_raw


def test_splits_are_in_time_order_without_overlap(real_datasets, raw_frame) -> None:
    splits = real_datasets.splits()
    spans = {name: (f["flight_date"].min(), f["flight_date"].max()) for name, f in splits.items()}
    assert spans["train"] == (date(2013, 1, 1), date(2013, 6, 30))
    assert spans["validation"] == (date(2013, 7, 1), date(2013, 8, 31))
    assert spans["test"] == (date(2013, 9, 1), date(2013, 12, 31))
    assert spans["train"][1] < spans["validation"][0] and spans["validation"][1] < spans["test"][0]
    assert sum(f.height for f in splits.values()) == raw_frame.height == 336_776


def test_no_leakage_column_reaches_the_features(real_datasets) -> None:
    assert not set(fe.LEAKAGE_COLUMNS) & set(fe.FEATURES)
    for frame in real_datasets.splits().values():
        assert not set(fe.LEAKAGE_COLUMNS) & set(frame.columns)


def test_features_do_not_change_when_post_departure_columns_do(raw_frame) -> None:
    day = raw_frame.filter(pl.col("month") == 3, pl.col("day") == 8)  # a storm day
    scrambled = day.with_columns(
        pl.col(c).shuffle(seed=1) for c in fe.LEAKAGE_COLUMNS
    )  # same flights, different outcomes
    state = fe.fit_state(fe.engineer(fe.add_target(day.lazy())).collect())
    a = fe.features(day.lazy(), state).collect()
    b = fe.features(scrambled.lazy(), state).collect()
    assert_frame_equal(a.select(fe.FEATURES), b.select(fe.FEATURES))


def test_target_definition(raw_frame) -> None:
    target = fe.add_target(raw_frame.lazy()).collect()
    cancelled = target.filter(pl.col("dep_time").is_null())
    diverted = target.filter(pl.col("dep_time").is_not_null() & pl.col("arr_delay").is_null())
    assert cancelled.height == 8_255 and diverted.height == 1_175
    assert (cancelled[fe.TARGET] == 1).all() and (diverted[fe.TARGET] == 1).all()
    flown = target.filter(pl.col("arr_delay").is_not_null())
    assert (flown[fe.TARGET] == (flown["arr_delay"] >= 15).cast(pl.Int8)).all()


def test_state_is_fitted_on_training_rows_only(raw_frame, real_datasets) -> None:
    """Changing everything after June changes neither the state nor a single training row."""
    later = pl.col("month") >= 7
    altered = raw_frame.with_columns(
        pl.when(later).then(pl.lit("ZZZ")).otherwise(pl.col("dest")).alias("dest"),
        # every later flight cancelled: all post-departure columns null, target 1
        *(pl.when(later).then(None).otherwise(pl.col(c)).alias(c) for c in fe.LEAKAGE_COLUMNS),
    )
    rebuilt = fe.build_datasets(altered.lazy())
    assert rebuilt.state == real_datasets.state
    assert_frame_equal(rebuilt.train, real_datasets.train)
    assert "ZZZ" not in rebuilt.state.category_levels["dest"]
    assert rebuilt.test["unknown_dest"].all()
    assert (rebuilt.test[fe.TARGET] == 1).all()


def test_state_round_trips_through_json(real_datasets) -> None:
    state = real_datasets.state
    restored = fe.FeatureState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert restored == state
    assert restored.features == fe.FEATURES


def test_one_day_batch_reproduces_the_training_features(raw_frame, real_datasets) -> None:
    """The row-dependent features (congestion, leg number, daily weather) are exact per day."""
    day = raw_frame.filter(pl.col("month") == 11, pl.col("day") == 27)
    outcomes = fe.warehouse_history(validate_raw(raw_frame))  # the history training saw
    scored = fe.features(
        day.drop(fe.LEAKAGE_COLUMNS).lazy(), real_datasets.state, outcomes=outcomes
    ).collect()
    expected = real_datasets.test.filter(pl.col("flight_date") == date(2013, 11, 27))
    key = list(FLIGHT_KEY)
    columns = list(dict.fromkeys(key + fe.FEATURES))
    assert scored.height == expected.height == day.height
    assert_frame_equal(scored.sort(key).select(columns), expected.sort(key).select(columns))


def test_unknown_categories_are_null_codes_and_flagged(raw_frame, real_datasets) -> None:
    day = raw_frame.filter(pl.col("month") == 10, pl.col("day") == 1).head(50)
    day = day.with_columns(pl.lit("XX").alias("carrier"))
    out = fe.features(day.lazy(), real_datasets.state).collect()
    assert out["carrier"].is_null().all()
    assert out["unknown_carrier"].all()
    assert not out["unknown_origin"].any()


@pytest.mark.parametrize(("hhmm", "minutes"), [(517, 317), (0, 0), (2359, 1439), (2400, 0), (100, 60)])
def test_hhmm_to_minutes(hhmm: int, minutes: int) -> None:
    frame = pl.DataFrame({"t": [hhmm]})
    assert frame.select(fe.hhmm_to_minutes("t"))["t"][0] == minutes


def test_model_matrix_is_contiguous_float64(real_datasets) -> None:
    matrix = fe.to_matrix(real_datasets.validation.head(100))
    assert matrix.dtype.name == "float64" and matrix.flags["C_CONTIGUOUS"]
    assert matrix.shape == (100, len(fe.FEATURES))


def test_build_datasets_enforces_the_raw_contract(raw_frame) -> None:
    from data_contract import ContractViolation

    broken = raw_frame.with_columns(
        pl.when(pl.col("day") == 5).then(13).otherwise(pl.col("month")).alias("month")
    )
    with pytest.raises(ContractViolation) as caught:
        fe.build_datasets(broken.lazy())
    failure = next(f for f in caught.value.failures if f.column == "month")
    assert failure.rule == "in_range(1, 12)"
    assert failure.failing_rows == raw_frame.filter(pl.col("day") == 5).height


def test_features_do_not_depend_on_row_order(raw_frame, real_datasets) -> None:
    day = raw_frame.filter(pl.col("month") == 12, pl.col("day") == 17).drop(fe.LEAKAGE_COLUMNS)
    key = list(FLIGHT_KEY)
    in_order = fe.features(day.lazy(), real_datasets.state).collect().sort(key)
    shuffled = fe.features(
        day.sample(fraction=1.0, shuffle=True, seed=3).lazy(), real_datasets.state
    ).collect()
    assert_frame_equal(in_order.select(fe.FEATURES), shuffled.sort(key).select(fe.FEATURES))


def test_flights_without_a_tail_number_look_like_single_leg_aircraft(raw_frame, real_datasets) -> None:
    """Only cancelled flights lack a tail number: a null leg count would leak the outcome."""
    no_tail = fe.features(raw_frame.filter(pl.col("tailnum").is_null()).lazy(), real_datasets.state).collect()
    assert (no_tail["tail_leg_number"] == 1).all() and (no_tail["tail_legs_today"] == 1).all()
