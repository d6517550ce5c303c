"""The data contract on real data: the full table passes, and every rule, broken on purpose in a
small real frame, fails naming its column, its rule and the number of broken rows, never a value."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import NamedTuple

import polars as pl
import pytest
from pandera.config import config_context

import data_contract
from data_contract import (
    CONTRACT_DTYPES,
    FLIGHT_KEY,
    LEAKAGE_COLUMNS,
    RAW_COLUMNS,
    SCORING_INPUT_COLUMNS,
    ContractViolation,
    RuleFailure,
    _coerce,
    _contract,
    _screen,
    describe_contract,
    validate_raw,
    validate_scoring_input,
)
from warehouse import RAW_SCHEMA, connect

VALIDATE = {"raw": validate_raw, "scoring_input": validate_scoring_input}
COLUMNS = {"raw": RAW_COLUMNS, "scoring_input": SCORING_INPUT_COLUMNS}
KEY_LABEL = "(" + ", ".join(FLIGHT_KEY) + ")"
# Rules every column has; they are tested for all columns at once below.
GENERIC_RULES = {"column_present", "not_nullable", "nullable"}


@pytest.fixture(scope="module")
def real(real_warehouse: Path) -> pl.DataFrame:
    with connect(real_warehouse, read_only=True) as con:
        return con.sql("SELECT * FROM flights_raw").pl()


@pytest.fixture(scope="module")
def base(real: pl.DataFrame) -> pl.DataFrame:
    """A small valid real frame with each kind of row the rules distinguish."""
    complete = real.filter(pl.all_horizontal(pl.all().is_not_null())).gather_every(4_000).head(10)
    cancelled = real.filter(pl.col("dep_time").is_null()).gather_every(1_000).head(3)
    diverted = real.filter(pl.col("arr_time").is_not_null() & pl.col("arr_delay").is_null()).head(3)
    unknown_plane = real.filter(pl.col("tailnum").is_not_null() & pl.col("type").is_null()).head(3)
    no_tail = real.filter(pl.col("tailnum").is_null()).head(2)
    return pl.concat([complete, cancelled, diverted, unknown_plane, no_tail])


def put(frame: pl.DataFrame, changes: dict[str, object], where: pl.Expr, n: int = 2) -> pl.DataFrame:
    """Apply ``changes`` (literals or expressions) to the first ``n`` rows matching ``where``."""
    rows = frame.with_row_index("_row").filter(where)["_row"].head(n)
    assert rows.len() == n, "the base frame has too few rows for this case"
    hit = pl.int_range(pl.len()).is_in(rows.implode())
    return frame.with_columns(
        pl.when(hit)
        .then(value if isinstance(value, pl.Expr) else pl.lit(value))
        .otherwise(pl.col(column))
        .cast(frame.schema[column])
        .alias(column)
        for column, value in changes.items()
    )


def failures_of(contract: str, frame: pl.DataFrame) -> list[RuleFailure]:
    with pytest.raises(ContractViolation) as caught:
        VALIDATE[contract](frame)
    return caught.value.failures


class Case(NamedTuple):
    column: str
    rule: str
    changes: dict[str, object]
    where: pl.Expr | None = None  # default: rows where the rule's column is not null


c = pl.col
CASES = [
    Case("year", "equal_to(2013)", {"year": 2014}),
    Case("month", "in_range(1, 12)", {"month": 13}),
    Case("day", "in_range(1, 31)", {"day": 32}),
    Case("day", "day_exists_in_month", {"month": 2, "day": 30}),
    Case("dep_time", "in_range(1, 2400)", {"dep_time": 2401}),
    Case("dep_time", "hhmm_minutes_below_60", {"dep_time": 1275}),
    Case("sched_dep_time", "in_range(0, 2359)", {"sched_dep_time": 2400}),
    Case("sched_dep_time", "hhmm_minutes_below_60", {"sched_dep_time": 1275}),
    Case("dep_delay", "in_range(-1440, 1440)", {"dep_delay": 2000}),
    Case("dep_delay", "null_iff_dep_time_null", {"dep_delay": None}),
    Case("dep_delay", "matches_dep_time_minus_sched_dep_time", {"dep_delay": c("dep_delay") + 7}),
    Case("arr_time", "in_range(1, 2400)", {"arr_time": 2401}),
    Case("arr_time", "hhmm_minutes_below_60", {"arr_time": 1275}),
    Case("arr_time", "null_when_dep_time_null", {"arr_time": 1200}, c("dep_time").is_null()),
    Case("sched_arr_time", "in_range(0, 2359)", {"sched_arr_time": 2400}),
    Case("sched_arr_time", "hhmm_minutes_below_60", {"sched_arr_time": 1275}),
    Case("arr_delay", "in_range(-1440, 1440)", {"arr_delay": -2000}),
    Case(
        "arr_delay",
        "null_when_dep_time_or_arr_time_null",
        {"arr_delay": 10, "air_time": 100},  # air_time too, or its own rule fails as well
        c("dep_time").is_null(),
    ),
    Case("arr_delay", "matches_arr_time_minus_sched_arr_time", {"arr_delay": c("arr_delay") - 7}),
    Case("carrier", "matches(^[A-Z0-9]{2}$)", {"carrier": "ZZZ"}),
    Case("flight", "in_range(1, 9999)", {"flight": c("flight") + 10_000}),
    Case("tailnum", "matches(^[A-Z0-9]{2,7}$)", {"tailnum": "N-1234"}),
    Case("origin", "isin(EWR, JFK, LGA)", {"origin": "BOS"}),
    Case("dest", "matches(^[A-Z]{3}$)", {"dest": "bos"}),
    Case("air_time", "in_range(1, 1440)", {"air_time": 0}),
    Case("air_time", "null_iff_arr_delay_null", {"air_time": None}),
    Case("distance", "in_range(1, 12500)", {"distance": 0}),
    Case("hour", "in_range(0, 23)", {"hour": 24}),
    Case(
        "hour",
        "matches_sched_dep_time",
        # dep_time moves with the schedule so that dep_delay still adds up
        {"sched_dep_time": c("sched_dep_time") + 100, "dep_time": c("dep_time") + 100},
        (c("sched_dep_time") < 2200) & (c("dep_time") < 2200),
    ),
    Case("minute", "in_range(0, 59)", {"minute": 60}),
    Case(
        "minute",
        "matches_sched_dep_time",
        {"sched_dep_time": c("sched_dep_time") + 1, "dep_time": c("dep_time") + 1},
        (c("sched_dep_time") % 100 < 59) & (c("dep_time") % 100 < 59),
    ),
    Case("time_hour", "on_the_hour", {"time_hour": c("time_hour") + pl.duration(minutes=30)}),
    Case("time_hour", "matches_local_date_and_hour", {"time_hour": c("time_hour") + pl.duration(hours=1)}),
    Case("temp", "in_range(-70, 135)", {"temp": 140.0}),
    Case("dewp", "in_range(-70, 135)", {"dewp": -80.0}),
    Case("dewp", "not_above_temp", {"dewp": c("temp") + 5}, c("temp") < 100),
    Case("humid", "in_range(0, 100)", {"humid": 100.5}),
    Case("wind_dir", "in_range(0, 360)", {"wind_dir": 361}),
    Case("wind_speed", "in_range(0, 100)", {"wind_speed": 1048.36058}),  # the source's outlier
    Case("wind_gust", "in_range(0, 150)", {"wind_gust": 151.0}),
    Case(
        "wind_gust",
        "not_below_wind_speed",
        {"wind_gust": c("wind_speed") - 1},
        (c("wind_speed") >= 1) & c("wind_gust").is_not_null(),
    ),
    Case("precip", "in_range(0, 12)", {"precip": -0.01}),
    Case("pressure", "in_range(870, 1085)", {"pressure": 30.1}),  # inHg instead of hPa
    Case("visib", "in_range(0, 10)", {"visib": 10.5}),
    Case("plane_year", "in_range(1930, 2013)", {"plane_year": 2014}),
    Case("plane_year", "null_when_type_null", {"plane_year": 2001}, c("type").is_null()),
    Case("type", "non_blank_trimmed", {"type": "Fixed wing multi engine "}),
    Case("type", "null_when_tailnum_null", {"tailnum": None}, c("type").is_not_null()),
    Case("manufacturer", "non_blank_trimmed", {"manufacturer": ""}),
    Case("manufacturer", "null_iff_type_null", {"manufacturer": None}),
    Case("model", "non_blank_trimmed", {"model": " 737-824"}),
    Case("model", "null_iff_type_null", {"model": "737-824"}, c("type").is_null()),
    Case("engines", "in_range(1, 4)", {"engines": 6}),
    Case("engines", "null_iff_type_null", {"engines": None}),
    Case("seats", "in_range(1, 1000)", {"seats": 0}),
    Case("seats", "null_iff_type_null", {"seats": None}),
    Case("engine", "non_blank_trimmed", {"engine": "\tTurbo-fan"}),
    Case("engine", "null_iff_type_null", {"engine": None}),
    Case("airline_name", "non_blank_trimmed", {"airline_name": "   "}),
]


def cases_for(contract: str) -> list[Case]:
    return [case for case in CASES if case.column in COLUMNS[contract]]


def case_params() -> list:
    return [
        pytest.param(contract, case, id=f"{contract}-{case.column}-{case.rule}")
        for contract in ("raw", "scoring_input")
        for case in cases_for(contract)
    ]


def broken_copy(base: pl.DataFrame, index: int, case: Case) -> pl.DataFrame:
    """Copy ``index`` of the base frame with ``case`` applied. Each copy gets its own flight
    numbers, so the copies are different flights and the raw key stays unique."""
    first = 1 + index * base.height
    renumbered = base.with_columns(pl.int_range(first, first + pl.len(), dtype=pl.Int32).alias("flight"))
    where = case.where if case.where is not None else pl.col(case.column).is_not_null()
    return put(renumbered, case.changes, where)


@pytest.fixture(scope="module")
def case_failures(base: pl.DataFrame) -> dict[str, list[RuleFailure]]:
    """Every case's broken frame, validated together per contract, one block of rows each.

    pandera costs about 90 ms per validation whatever the size of the frame (some 180
    Polars collects), so validating the 105 broken frames one by one would take ten
    seconds. Every rule is row-local, so a block's failures add up independently: each
    case must show up with exactly its two rows, and nothing else may fail.
    """
    failures = {}
    for contract in ("raw", "scoring_input"):
        batch = pl.concat([broken_copy(base, i, case) for i, case in enumerate(cases_for(contract))])
        failures[contract] = failures_of(contract, batch)
    return failures


# --------------------------------------------------------------------------- the real data


def test_constants_follow_the_warehouse_schema(real: pl.DataFrame) -> None:
    assert RAW_COLUMNS == list(RAW_SCHEMA) == real.columns
    assert [name for name in RAW_COLUMNS if name not in LEAKAGE_COLUMNS] == SCORING_INPUT_COLUMNS
    assert LEAKAGE_COLUMNS == ("dep_time", "dep_delay", "arr_time", "air_time", "arr_delay")
    assert dict(real.schema) == CONTRACT_DTYPES


def test_flight_key_is_unique_in_the_real_table_and_needs_origin(real: pl.DataFrame) -> None:
    assert not real.select(FLIGHT_KEY).is_duplicated().any()
    without_origin = [name for name in FLIGHT_KEY if name != "origin"]
    assert real.select(without_origin).is_duplicated().any()


def test_the_real_table_passes_the_raw_contract(real: pl.DataFrame) -> None:
    assert validate_raw(real).equals(real)


def test_its_pre_departure_projection_passes_and_leakage_is_dropped(real: pl.DataFrame) -> None:
    scored = validate_scoring_input(real.lazy())
    assert scored.columns == SCORING_INPUT_COLUMNS
    assert not set(LEAKAGE_COLUMNS) & set(scored.columns)
    assert scored.equals(real.select(SCORING_INPUT_COLUMNS))


def test_the_small_base_frame_is_valid(base: pl.DataFrame) -> None:
    assert validate_raw(base).height == base.height == 21
    assert validate_scoring_input(base).height == base.height


# --------------------------------------------------------------------------- one rule at a time


@pytest.mark.parametrize(("contract", "case"), case_params())
def test_each_rule_fails_with_its_column_and_row_count(
    case_failures: dict[str, list[RuleFailure]], contract: str, case: Case
) -> None:
    assert RuleFailure(case.column, case.rule, 2) in case_failures[contract]


@pytest.mark.parametrize("contract", ["raw", "scoring_input"])
def test_each_broken_frame_fails_no_other_rule(
    case_failures: dict[str, list[RuleFailure]], contract: str
) -> None:
    expected = [RuleFailure(case.column, case.rule, 2) for case in cases_for(contract)]
    assert sorted(case_failures[contract], key=repr) == sorted(expected, key=repr)


# The screen (one Polars pass) lets a clean batch skip pandera; the batched cases above go
# to pandera as soon as any rule trips it, so each rule is checked against the screen alone.
@pytest.mark.parametrize(("contract", "case"), case_params())
def test_the_screen_alone_catches_each_broken_rule(base: pl.DataFrame, contract: str, case: Case) -> None:
    rules = _contract(contract)
    typed, dtype_failures = _coerce(broken_copy(base, 0, case).select(COLUMNS[contract]))
    assert not dtype_failures
    assert _screen(rules, typed) is False


@pytest.mark.parametrize("contract", ["raw", "scoring_input"])
def test_the_screen_catches_a_null_in_each_never_null_column(base: pl.DataFrame, contract: str) -> None:
    rules = _contract(contract)
    never_null = [c for c in COLUMNS[contract] if not rules.schema.columns[c].nullable]
    assert len(never_null) == 14
    for column in never_null:
        typed, _ = _coerce(put(base, {column: None}, pl.lit(True), n=1).select(COLUMNS[contract]))
        assert _screen(rules, typed) is False, column


def test_the_screen_passes_the_real_table_and_a_clean_batch_skips_pandera(
    real: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _screen(_contract("raw"), real) is True
    monkeypatch.setattr(data_contract, "_run_schema", lambda *args: pytest.fail("pandera ran"))
    assert validate_scoring_input(real).height == real.height


def test_a_single_broken_frame_fails_alone(base: pl.DataFrame) -> None:
    """The same, without the batching: one case on its own frame."""
    bad = put(base, {"dep_delay": c("dep_delay") + 7}, c("dep_delay").is_not_null())
    assert failures_of("raw", bad) == [RuleFailure("dep_delay", "matches_dep_time_minus_sched_dep_time", 2)]


@pytest.mark.parametrize("contract", ["raw", "scoring_input"])
def test_every_rule_of_the_contract_has_a_case(contract: str) -> None:
    described = describe_contract(contract)
    specific = {
        (column, rule)
        for column, rule in described.select("column", "rule").iter_rows()
        if rule not in GENERIC_RULES and not rule.startswith("dtype(") and column in COLUMNS[contract]
    }
    covered = {(case.column, case.rule) for case in CASES if case.column in COLUMNS[contract]}
    assert specific == covered


def test_scoring_input_has_the_raw_rules_for_its_columns() -> None:
    raw = describe_contract("raw").filter(pl.col("column").is_in(SCORING_INPUT_COLUMNS))
    scoring = describe_contract("scoring_input").filter(pl.col("column").is_in(SCORING_INPUT_COLUMNS))
    assert raw.equals(scoring)


# --------------------------------------------------------------------------- columns and types


@pytest.mark.parametrize("contract", ["raw", "scoring_input"])
@pytest.mark.parametrize("parity", [0, 1])
def test_missing_columns_are_each_reported(base: pl.DataFrame, contract: str, parity: int) -> None:
    dropped = COLUMNS[contract][parity::2]
    failures = failures_of(contract, base.drop(dropped))
    assert failures == [RuleFailure(column, "column_present", base.height) for column in dropped]


@pytest.mark.parametrize("contract", ["raw", "scoring_input"])
def test_every_null_in_a_never_null_column_is_counted(base: pl.DataFrame, contract: str) -> None:
    spec = describe_contract(contract).filter(pl.col("rule") == "not_nullable")
    never_null = [name for name in COLUMNS[contract] if name in spec["column"]]
    assert len(never_null) == 14
    # Column i gets nulls on rows i .. i + (i % 3), so each has its own count.
    counts = {column: 1 + i % 3 for i, column in enumerate(never_null)}
    bad = base.with_columns(
        pl.when(pl.int_range(pl.len()).is_between(i, i + counts[column] - 1))
        .then(None)
        .otherwise(pl.col(column))
        .alias(column)
        for i, column in enumerate(never_null)
    )
    assert failures_of(contract, bad) == [RuleFailure(name, "not_nullable", n) for name, n in counts.items()]


@pytest.mark.parametrize("contract", ["raw", "scoring_input"])
def test_values_that_do_not_convert_fail_the_dtype_rule(base: pl.DataFrame, contract: str) -> None:
    """Numbers and timestamps sent as text convert, except the garbled ones; a Boolean
    cannot stand for a string at all."""
    expected, columns = [], {}
    for i, column in enumerate(COLUMNS[contract]):
        dtype = CONTRACT_DTYPES[column]
        if dtype == pl.String:
            columns[column] = pl.lit(True)
            expected.append(RuleFailure(column, "dtype(String)", base.height))
            continue
        as_text = (
            pl.col(column).dt.to_string() if dtype == pl.Datetime("us") else pl.col(column).cast(pl.String)
        )
        garbled = 1 + i % 3
        columns[column] = (
            pl.when(pl.int_range(pl.len()) < garbled).then(pl.lit("uncastable-x")).otherwise(as_text)
        )
        rule = "dtype(Datetime(us))" if dtype == pl.Datetime("us") else f"dtype({dtype})"
        expected.append(RuleFailure(column, rule, garbled))
    failures = failures_of(contract, base.with_columns(**columns))
    assert failures == expected


def test_numbers_as_text_are_accepted(base: pl.DataFrame) -> None:
    as_text = base.with_columns(
        pl.col(pl.Int32, pl.Float64).cast(pl.String),
        pl.col("time_hour").dt.strftime("%Y-%m-%dT%H:%M:%SZ"),  # the extract's own format
    )
    assert validate_scoring_input(as_text).equals(base.select(SCORING_INPUT_COLUMNS))


def test_other_widths_and_zones_are_cast_to_the_contract_types(base: pl.DataFrame) -> None:
    odd = ["seats", "flight", "plane_year"]
    wide = base.with_columns(
        pl.col(pl.Int32).exclude(odd).cast(pl.Int64),
        pl.col(pl.Float64).cast(pl.Float32),
        pl.col("seats").cast(pl.Int16),
        pl.col("flight").cast(pl.UInt16),
        # pandas writes a nullable integer as float with NaN for missing
        pl.col("plane_year").cast(pl.Float64).fill_null(float("nan")),
        pl.col("time_hour")
        .cast(pl.Datetime("ns"))
        .dt.replace_time_zone("UTC")
        .dt.convert_time_zone("Asia/Tokyo"),
        pl.col("carrier").cast(pl.Categorical),
    )
    typed = validate_scoring_input(wide)
    expected = base.select(SCORING_INPUT_COLUMNS)
    assert dict(typed.schema) == {name: CONTRACT_DTYPES[name] for name in SCORING_INPUT_COLUMNS}
    floats = [name for name, dtype in typed.schema.items() if dtype == pl.Float64]
    assert typed.drop(floats).equals(expected.drop(floats))
    for column in floats:  # Float32 keeps about 7 digits
        diff = (typed[column] - expected[column]).abs().max()
        assert diff is None or diff < 1e-3


def test_a_value_that_cannot_be_cast_is_a_dtype_failure(base: pl.DataFrame) -> None:
    uncastable = [  # column, its type as sent, the bad value, the failing rule
        ("flight", pl.Float64, 1.5, "dtype(Int32)"),  # would truncate to 1
        ("distance", pl.Int64, 3_000_000_000, "dtype(Int32)"),  # does not fit
        ("month", pl.String, "abc", "dtype(Int32)"),
        ("temp", pl.String, "warm", "dtype(Float64)"),
        ("time_hour", pl.String, "tomorrow", "dtype(Datetime(us))"),
    ]
    bad = base.with_columns(pl.col(column).cast(source) for column, source, _, _ in uncastable)
    bad = put(bad, {column: value for column, _, value, _ in uncastable}, pl.lit(True), n=1)
    expected = [RuleFailure(column, rule, 1) for column, _, _, rule in uncastable]
    assert failures_of("scoring_input", bad) == sorted(
        expected, key=lambda f: SCORING_INPUT_COLUMNS.index(f.column)
    )


# --------------------------------------------------------------------------- frames


def test_extra_and_leakage_columns_are_dropped_in_contract_order(base: pl.DataFrame) -> None:
    shuffled = base.with_columns(pl.lit("note").alias("client_note")).select(
        ["client_note", *reversed(base.columns)]
    )
    assert validate_scoring_input(shuffled).columns == SCORING_INPUT_COLUMNS


def test_an_unexpected_column_fails_the_raw_contract(base: pl.DataFrame) -> None:
    failures = failures_of("raw", base.with_columns(pl.lit(1).alias("surprise")))
    assert failures == [RuleFailure("surprise", "column_in_schema", base.height)]


def test_a_duplicated_flight_fails_the_raw_contract(base: pl.DataFrame) -> None:
    failures = failures_of("raw", pl.concat([base, base.head(2)]))
    assert failures == [RuleFailure(KEY_LABEL, "unique", 4)]


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(lambda base: base.head(0), id="typed"),
        pytest.param(lambda base: pl.DataFrame({name: [] for name in SCORING_INPUT_COLUMNS}), id="untyped"),
    ],
)
def test_an_empty_batch_passes(base: pl.DataFrame, frame) -> None:
    scored = validate_scoring_input(frame(base))
    assert scored.height == 0 and scored.columns == SCORING_INPUT_COLUMNS


def test_every_failure_is_collected_in_one_error(base: pl.DataFrame) -> None:
    bad = put(base, {"month": 13, "origin": "BOS", "temp": 140.0}, pl.col("temp").is_not_null())
    assert failures_of("scoring_input", bad.drop("dest")) == [
        RuleFailure("month", "in_range(1, 12)", 2),
        RuleFailure("origin", "isin(EWR, JFK, LGA)", 2),
        RuleFailure("dest", "column_present", base.height),
        RuleFailure("temp", "in_range(-70, 135)", 2),
    ]


def test_the_error_names_columns_rules_and_counts_but_never_a_value(base: pl.DataFrame) -> None:
    secrets = {
        "dest": "QXZ#9",
        "carrier": "SECRET-CARRIER",
        "tailnum": "TAIL-SECRET-42",
        "airline_name": " Secret Airline ",
        "month": 987_654,
        "temp": 4321.5,
        "distance": -77_777,
    }
    bad = put(base, secrets, pl.lit(True), n=3)
    bad = bad.with_columns(pl.col("flight").cast(pl.String).replace({"1545": "flight-secret"}))
    with pytest.raises(ContractViolation) as caught:
        validate_scoring_input(bad)
    message = str(caught.value) + repr(caught.value.failures)
    for value in [*secrets.values(), "flight-secret"]:
        assert str(value).strip() not in message
    assert "column 'month': rule 'in_range(1, 12)' failed on 3 row(s)" in message
    assert isinstance(caught.value, ValueError)
    # Ray workers and process pools pickle exceptions: the failures survive the trip.
    assert pickle.loads(pickle.dumps(caught.value)).failures == caught.value.failures


def test_pandera_settings_cannot_switch_the_contract_off(base: pl.DataFrame) -> None:
    bad = put(base, {"month": 13}, pl.lit(True))
    with config_context(validation_enabled=False, validation_depth="SCHEMA_ONLY"):
        assert failures_of("scoring_input", bad) == [RuleFailure("month", "in_range(1, 12)", 2)]


# --------------------------------------------------------------------------- documentation


@pytest.mark.parametrize("contract", ["raw", "scoring_input"])
def test_describe_contract_documents_every_rule(contract: str) -> None:
    described = describe_contract(contract)
    assert described.columns == ["column", "rule", "description"]
    assert described["description"].null_count() == 0
    assert not described.select("column", "rule").is_duplicated().any()
    per_column = described.filter(pl.col("column").is_in(COLUMNS[contract]))
    assert per_column["column"].unique(maintain_order=True).to_list() == COLUMNS[contract]
    if contract == "scoring_input":
        assert not described["column"].is_in(list(LEAKAGE_COLUMNS)).any()


def test_describe_contract_refuses_an_unknown_contract() -> None:
    with pytest.raises(ValueError, match="unknown contract"):
        describe_contract("gold")
