"""A flight's score must not depend on what else is in its batch (docs/scoring.md, "The day context").

The day features of a flight (congestion at its origin, its aircraft's rotation, the day's
weather) come from the warehouse's schedule of its date, merged with the batch. These tests
score the same real flights the ways a client would send them (alone, in a random subset,
one carrier's flights, whole days, shuffled) and compare with the production run's stored
scores; then they change what a client would change (a departure time, a new flight, a date
the warehouse does not hold, a flight sent twice).
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import day_context
import file_scoring as fs
import ft_engineering as fe
import lake
import scoring as sc
from data_contract import (
    SCORING_INPUT_COLUMNS,
    ContractViolation,
    describe_contract,
    validate_raw,
    validate_scoring_input,
)
from settings import get_settings

KEY = sc.KEY_COLUMNS


@pytest.fixture
def in_production(production_lake, use_trained, monkeypatch):
    """Settings pointing at the production run's warehouse, day context and published
    outcomes (its lake is the test's own, empty one: tests here that persist never touch the
    shared run)."""
    folder = production_lake.folder
    monkeypatch.setenv("MLOPS_WAREHOUSE_PATH", str(folder / "warehouse.duckdb"))
    monkeypatch.setenv("MLOPS_DAY_CONTEXT_PATH", str(folder / "lake" / "day_context" / "day_context.parquet"))
    monkeypatch.setenv("MLOPS_ACTUALS_DIR", str(folder / "lake" / "actuals"))  # the history it saw
    get_settings.cache_clear()
    yield folder
    get_settings.cache_clear()


@pytest.fixture
def scorer(in_production) -> sc.Scorer:
    return sc.Scorer.load()


@pytest.fixture(scope="module")
def stored(production_lake) -> pl.DataFrame:
    """The production run's stored scores (Sep-Dec, one batch per day)."""
    files = sorted((production_lake.folder / "lake" / sc.SCORED_DATASET).glob("*.parquet"))
    return pl.concat([pl.read_parquet(f) for f in files])


@pytest.fixture(scope="module")
def sep_dec(raw_frame) -> pl.DataFrame:
    return raw_frame.filter(pl.col("month") >= 9).select(SCORING_INPUT_COLUMNS)


def _against(scored: pl.DataFrame, reference: pl.DataFrame) -> tuple[float, int]:
    """(max |score difference|, label flips) of ``scored`` against ``reference`` per flight."""
    both = scored.join(reference.select(*KEY, "score", "label"), on=KEY, suffix="_ref")
    assert both.height == scored.height
    diff = (both["score"] - both["score_ref"]).abs().max()
    return float(diff), int((both["label"] != both["label_ref"]).sum())


def test_production_run_scored_every_flight_in_its_warehouse_day(stored, sep_dec) -> None:
    assert stored.height == sep_dec.height
    assert stored[fe.CONTEXT].unique().to_list() == ["warehouse"]


@pytest.mark.parametrize(
    "batch",
    [
        "200 random flights",
        "5,000 random flights",
        "every UA flight",
        "30 flights, each alone",
        "3 whole days",
    ],
)
def test_a_flight_scores_the_same_however_it_is_batched(batch, scorer, stored, sep_dec) -> None:
    """The issue's table (median change 0.055-0.080, a quarter to a third of labels flipped
    when the day features came from the batch) goes to 0 flips and < 1e-9."""
    if batch == "200 random flights":
        parts = [sep_dec.sample(200, seed=1)]
    elif batch == "5,000 random flights":
        parts = [sep_dec.sample(5_000, seed=2)]
    elif batch == "every UA flight":
        parts = [sep_dec.filter(pl.col("carrier") == "UA")]
    elif batch == "30 flights, each alone":
        parts = [row for row in sep_dec.sample(30, seed=3).iter_slices(1)]
    else:
        parts = [sep_dec.filter(pl.col("month") == 11, pl.col("day").is_in([1, 2, 3]))]
    scored = pl.concat([sc.score(part, scorer) for part in parts])
    assert scored[fe.CONTEXT].unique().to_list() == ["warehouse"]
    assert _against(scored, stored) == (pytest.approx(0.0, abs=1e-9), 0)


def test_a_shuffled_file_in_small_chunks_scores_as_the_production_run(
    scorer, stored, sep_dec, tmp_path
) -> None:
    """Dates split across chunks no longer see part of their day: the warehouse holds it."""
    october = sep_dec.filter(pl.col("month") == 10).sample(fraction=1.0, shuffle=True, seed=4)
    october.write_parquet(tmp_path / "october.parquet")
    result = fs.score_file(
        tmp_path / "october.parquet",
        tmp_path / "out.parquet",
        scorer=scorer,
        batch_rows=5_000,
        progress=False,
    )
    assert result.split_dates > 0
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out.select(KEY).equals(october.select(KEY))
    assert _against(out, stored) == (pytest.approx(0.0, abs=1e-9), 0)


def _one_day(sep_dec: pl.DataFrame, day: int = 15) -> pl.DataFrame:
    return sep_dec.filter(pl.col("month") == 10, pl.col("day") == day)


def _features(batch: pl.DataFrame, scorer: sc.Scorer) -> pl.DataFrame:
    return sc.prepare(batch, scorer).engineered


WEATHER = [
    "time_hour",
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
]


def _moved_to_1830(day: pl.DataFrame, flight: pl.DataFrame) -> pl.DataFrame:
    """``flight`` rescheduled to 18:30, with the 18:00 weather of its origin (as a client's
    new row would carry it: the contract checks hour, minute and time_hour against the time)."""
    evening = day.filter(pl.col("origin") == flight["origin"][0], pl.col("hour") == 18).head(1)
    return flight.with_columns(
        pl.lit(1830, dtype=pl.Int32).alias("sched_dep_time"),
        pl.lit(18, dtype=pl.Int32).alias("hour"),
        pl.lit(30, dtype=pl.Int32).alias("minute"),
        *[pl.lit(evening[c][0], dtype=evening[c].dtype).alias(c) for c in WEATHER],
    )


def _a_morning_flight(day: pl.DataFrame) -> pl.DataFrame:
    return day.filter(pl.col("sched_dep_time").is_between(900, 959), pl.col("tailnum").is_not_null()).head(1)


def test_a_changed_departure_time_is_scored_with_the_new_time(scorer, sep_dec) -> None:
    day = _one_day(sep_dec)
    flight = _a_morning_flight(day)
    later = _moved_to_1830(day, flight)
    alone = _features(later, scorer)
    assert alone["sched_dep_min"][0] == 18 * 60 + 30
    # alone, it is scored as in its day with its stored row replaced by the new one
    in_day = pl.concat([day.join(flight.select(KEY), on=KEY, how="anti"), later])
    assert alone.select(fe.FEATURES).equals(_features(in_day, scorer).tail(1).select(fe.FEATURES))
    assert sc.score(later, scorer)["score"][0] == pytest.approx(
        sc.score(in_day, scorer)["score"][-1], abs=1e-12
    )
    # it counts in the 18:00 departures of its origin, no longer in the 9:00 ones
    origin = pl.col("origin") == flight["origin"][0]
    assert alone["origin_hour_departures"][0] == in_day.filter(origin, pl.col("hour") == 18).height
    stays = _features(
        day.filter(origin, pl.col("hour") == 9).join(flight.select(KEY), on=KEY, how="anti"), scorer
    )
    assert (stays["origin_hour_departures"] == day.filter(origin, pl.col("hour") == 9).height).all()


def test_a_flight_the_warehouse_does_not_know_joins_its_day(scorer, sep_dec) -> None:
    day = _one_day(sep_dec)
    new = day.head(1).with_columns(pl.lit(9999).alias("flight"))
    assert day.filter(pl.col("flight") == 9999, pl.col("carrier") == new["carrier"][0]).is_empty()
    alone = _features(new, scorer)
    same_origin = day.filter(pl.col("origin") == new["origin"][0]).height
    assert alone["origin_day_departures"][0] == same_origin + 1
    assert alone[fe.CONTEXT][0] == "warehouse"
    expected = _features(pl.concat([day, new]), scorer).tail(1)
    assert alone.select(fe.FEATURES).equals(expected.select(fe.FEATURES))


def test_a_date_the_warehouse_does_not_hold_is_scored_from_the_batch_and_flagged(
    scorer, sep_dec, tmp_path, monkeypatch
) -> None:
    """A warehouse without Oct 15: that day's flights are scored from the batch alone and say so."""
    valid = validate_scoring_input(sep_dec)
    path = tmp_path / "context.parquet"
    day_context.write_context(valid.filter(pl.date("year", "month", "day") != date(2013, 10, 15)), path, "t")
    scorer.context = day_context.DayContext(path)
    batch = pl.concat([_one_day(sep_dec, 15).head(50), _one_day(sep_dec, 16).head(50)])
    out = sc.score(batch, scorer)
    assert out[fe.CONTEXT].to_list() == ["batch_only"] * 50 + ["warehouse"] * 50
    # batch_only: the day features count only the batch's own flights of that day
    engineered = _features(batch.head(50), scorer)
    assert engineered["origin_day_departures"].max() <= 50
    # the same rows with no context file at all: every row batch_only, same scores for Oct 15
    scorer.context = day_context.DayContext(tmp_path / "missing.parquet")
    bare = sc.score(batch, scorer)
    assert bare[fe.CONTEXT].unique().to_list() == ["batch_only"]
    assert bare["score"].head(50).equals(out["score"].head(50))


def test_a_flight_sent_twice_is_a_contract_violation(scorer, sep_dec) -> None:
    day = _one_day(sep_dec)
    twice = pl.concat([day, day.head(50)])
    with pytest.raises(ContractViolation) as caught:
        sc.score(twice, scorer)
    failure = next(f for f in caught.value.failures if f.rule == "unique")
    assert failure.failing_rows == 100  # both rows of each of the 50 flights
    assert "rule 'unique' failed on 100 row(s)" in str(caught.value)
    why = describe_contract("scoring_input").filter(pl.col("rule") == "unique")["description"].to_list()
    assert why == ["one row per flight; a flight sent twice would count twice in its day's context"]


def test_training_features_are_those_of_the_warehouse_alone(raw_frame) -> None:
    """In training the batch is the warehouse: the day context adds no flight and changes no value."""
    checked = validate_raw(raw_frame.filter(pl.col("month") == 3))
    context = fe.context_of(checked)
    lf = checked.lazy().pipe(fe.drop_leakage)
    with_context = fe.collect(
        lf.pipe(fe.in_day_context, context).pipe(fe.engineer).pipe(fe.batch_rows).pipe(fe.with_history, None)
    )
    alone = fe.collect(
        lf.with_columns(pl.lit(True).alias(fe.IN_BATCH))
        .pipe(fe.engineer)
        .pipe(fe.batch_rows)
        .pipe(fe.with_history, None)
    )
    assert with_context.height == checked.height
    assert with_context.select(fe.FEATURES).equals(alone.select(fe.FEATURES))


# --------------------------------------------------------------------------- identity


def _persist_file(frame: pl.DataFrame, folder: Path, scorer: sc.Scorer, name: str) -> fs.ScoreFileResult:
    frame.write_parquet(folder / f"{name}.parquet")
    return fs.score_file(
        folder / f"{name}.parquet", folder / f"{name}.out.parquet", scorer=scorer, progress=False
    )


def test_after_the_production_run_a_subset_of_its_flights_stores_nothing(
    scorer, production_lake, sep_dec, tmp_path
) -> None:
    shutil.copytree(
        production_lake.folder / "lake" / sc.SCORED_DATASET, get_settings().lake_dir / sc.SCORED_DATASET
    )
    subset = sep_dec.sample(3_000, seed=5)
    result = _persist_file(subset, tmp_path, scorer, "subset")
    assert (result.new_rows, result.already_stored) == (0, subset.height)


def test_a_day_whose_schedule_changed_is_a_visible_re_score_of_its_flights(scorer, sep_dec, tmp_path) -> None:
    """One flight's new departure time changes its neighbours' congestion: the day's flights
    are stored again (new context digest), and the latest view keeps one row per flight."""
    day = _one_day(sep_dec)
    first = _persist_file(day, tmp_path, scorer, "day")
    again = _persist_file(day.reverse(), tmp_path, scorer, "day-reversed")
    assert (first.new_rows, again.new_rows) == (day.height, 0)
    flight = _a_morning_flight(day)
    moved = pl.concat([day.join(flight.select(KEY), on=KEY, how="anti"), _moved_to_1830(day, flight)])
    changed = _persist_file(moved, tmp_path, scorer, "day-changed")
    assert changed.new_rows == day.height
    stored = lake.read_dataset(sc.SCORED_DATASET).collect()
    assert stored.height == 2 * day.height
    assert stored.select(*KEY, sc.DIGEST_COLUMN, sc.CONTEXT_DIGEST).is_unique().all()
    assert stored[sc.CONTEXT_DIGEST].n_unique() == 2  # one digest per version of the day
    latest = stored.sort("scored_at").unique(KEY, keep="last")
    assert latest.height == day.height


def test_context_digests_depend_on_the_day_not_on_the_batch() -> None:
    digests = np.array([11, 22, 33, 44], dtype=np.uint64)
    merged = pl.DataFrame(
        {
            "year": [2013] * 4,
            "month": [10] * 4,
            "day": [1, 1, 2, 2],
            sc.DIGEST_COLUMN: digests,
            fe.IN_BATCH: [True, False, True, False],
        }
    )
    swapped = merged.with_columns(pl.col(fe.IN_BATCH).not_())
    a, b = day_context.context_digests(merged), day_context.context_digests(swapped)
    assert a.tolist() == b.tolist()  # the same flights per day, whichever the batch carried
    assert a[0] != a[1]  # two days, two digests
    changed = day_context.context_digests(
        merged.with_columns(pl.Series(sc.DIGEST_COLUMN, [11, 23, 33, 44], dtype=pl.UInt64))
    )
    assert changed[0] != a[0] and changed[1] == a[1]


def test_the_context_is_rebuilt_after_a_new_load_only(small_csv, raw_lines, tmp_path) -> None:
    from warehouse import load_raw_csv

    load_raw_csv(small_csv)
    first = day_context.refresh()
    assert first.rebuilt and first.rows == 300
    assert not day_context.refresh().rebuilt  # the same load: nothing to do
    bigger = tmp_path / "bigger.csv"
    bigger.write_text("".join([raw_lines[0], *raw_lines[1::500][:400]]))
    load_raw_csv(bigger)
    again = day_context.refresh()
    assert again.rebuilt and again.rows == 400
    stored = pl.read_parquet(again.path)
    assert stored["flight_date"].is_sorted()
    assert set(stored.columns) == {*fe.CONTEXT_COLUMNS, "flight_date", sc.DIGEST_COLUMN}


def test_a_batch_that_holds_its_dates_whole_reads_none_of_their_stored_rows(scorer, sep_dec) -> None:
    """A whole day (even with a changed flight) has the stored count and key fingerprint, so
    the scorer reads no stored row for it; a day held in part is read, and both score as in
    the production run."""
    whole, part = _one_day(sep_dec, 15), _one_day(sep_dec, 16)
    flight = _a_morning_flight(whole)
    changed = pl.concat([whole.join(flight.select(KEY), on=KEY, how="anti"), _moved_to_1830(whole, flight)])
    batch = pl.concat([changed, part.head(40)])
    context = scorer.context.for_batch(validate_scoring_input(batch))
    assert sorted(context.known.to_list()) == [date(2013, 10, 15), date(2013, 10, 16)]
    assert context.rows["flight_date"].unique().to_list() == [date(2013, 10, 16)]
    assert context.rows.height == part.height
    # the shortcut changes nothing: the same batch against the stored rows of both dates
    read_all = fe.in_day_context(validate_scoring_input(batch).lazy(), scorer.context.rows_for(context.known))
    shortcut = fe.in_day_context(validate_scoring_input(batch).lazy(), context.rows, context.known)
    engineered = [fe.collect(m.pipe(fe.day_features, scorer.state)) for m in (read_all, shortcut)]
    assert engineered[0].equals(engineered[1])
    assert engineered[1]["sched_dep_min"][changed.height - 1] == 18 * 60 + 30  # the moved flight


def test_a_whole_day_count_with_one_other_flight_is_not_taken_for_the_day(scorer, sep_dec) -> None:
    """Same number of flights, one of them unknown to the warehouse: the fingerprint differs,
    so the stored day is read and the left-out stored flight stays in the context."""
    day = _one_day(sep_dec)
    swapped = pl.concat([day.head(day.height - 1), day.head(1).with_columns(pl.lit(9999).alias("flight"))])
    context = scorer.context.for_batch(validate_scoring_input(swapped))
    assert context.rows.height == day.height
    alone = _features(swapped, scorer)
    assert (alone["origin_day_departures"].max()) == (
        pl.concat([day, swapped.tail(1)]).group_by("origin").len()["len"].max()
    )


def test_fingerprints_of_another_polars_version_are_not_trusted(sep_dec, tmp_path, monkeypatch) -> None:
    """The key hash is stable within one Polars version only: a file written by another
    version has its dates read in full (still correct, only slower)."""
    valid = validate_scoring_input(_one_day(sep_dec))
    path = tmp_path / "context.parquet"
    day_context.write_context(valid, path, "t")
    days = day_context.stored_days(path)
    assert days["flights"].to_list() == [valid.height] and days["key_sum"].null_count() == 0
    assert day_context.DayContext(path).for_batch(valid).rows.is_empty()
    monkeypatch.setattr(pl, "__version__", "0.0.0")
    assert day_context.stored_days(path)["key_sum"].null_count() == 1
    assert day_context.DayContext(path).for_batch(valid).rows.height == valid.height


def test_a_context_file_without_fingerprints_is_rebuilt(small_csv, tmp_path) -> None:
    from warehouse import load_raw_csv

    load_raw_csv(small_csv)
    built = day_context.refresh()
    table = pl.read_parquet(built.path).to_arrow()
    stamp = day_context.file_stamp(built.path)
    import pyarrow.parquet as pq

    pq.write_table(table.replace_schema_metadata({day_context.STAMP_KEY: stamp.encode()}), built.path)
    assert not day_context.is_current(built.path, stamp)
    assert (
        day_context.DayContext(built.path)
        .for_batch(
            validate_scoring_input(
                pl.read_csv(small_csv, null_values="NA", infer_schema_length=None).select(
                    SCORING_INPUT_COLUMNS
                )
            )
        )
        .rows.height
        == built.rows
    )  # no fingerprints: every date is read
    again = day_context.refresh()
    assert again.rebuilt and day_context.is_current(again.path, stamp)
