"""The data contract: the validation rules every frame entering the system must pass.

Two contracts, both written as pandera Polars schemas:

* **raw** (:func:`validate_raw`) is the warehouse table ``flights_raw`` as loaded: every
  column of ``warehouse.RAW_SCHEMA`` with its type, range, allowed values, null policy and
  the cross-field rules of the source (``hour``/``minute`` restate ``sched_dep_time``,
  ``time_hour`` is the scheduled hour in UTC, a delay is the difference of its clock times,
  a cancelled flight has no delays, the aircraft metadata is all there or all missing, and
  the flight key is unique). ``ft_engineering`` enforces it on the training data.
* **scoring input** (:func:`validate_scoring_input`) is what a client sends to score a
  flight before it departs: the raw columns minus the post-departure leakage columns
  (:data:`LEAKAGE_COLUMNS`), with the same per-column rules. Leakage columns and any other
  extra column are dropped, never passed on; the result has exactly
  :data:`SCORING_INPUT_COLUMNS`, in that order. The batch scorer and ``/predict`` enforce it.

Every rule was derived from the real 336,776-row table and is confirmed on it by
``tests/test_data_contract.py``; :func:`describe_contract` lists the rules with the reason
for each (for the EDA notebook and the readme).

How a frame is judged:

1. Missing columns fail ``column_present``; for the raw contract an unexpected column
   fails ``column_in_schema``.
2. Types: a column of another integer or float width (``Int64`` from a JSON or CSV reader,
   ``Float32``), numbers sent as strings, timestamps in another unit or time zone, are
   cast to the contract type. Float ``NaN`` counts as missing (pandas writes missing
   numbers that way). A value that does not survive the cast (``"abc"`` or ``1.5`` for an
   integer, an out-of-range ``Int64``) fails ``dtype(...)`` for its column, and that
   column's other rules are not evaluated (their verdict would be about the nulls the
   cast left behind).
3. pandera validates the typed frame lazily, so one call reports every failing rule.
   Cross-field rules are evaluated only on rows whose inputs pass their own value rules,
   so one bad value is reported by its own rule rather than again by every rule that reads it.

A failing frame raises :class:`ContractViolation`, a ``ValueError`` that lists every failing
(column, rule, number of failing rows). Row values never appear in it: client data must not
be echoed in an error, so pandera's failure cases are counted and then discarded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache

import pandera.polars as pa
import polars as pl
from pandera.config import ValidationDepth, config_context
from pandera.constants import CHECK_OUTPUT_KEY
from pandera.errors import SchemaError, SchemaErrorReason, SchemaErrors

from warehouse import RAW_SCHEMA

logger = logging.getLogger(__name__)

LEAKAGE_COLUMNS: tuple[str, ...] = ("dep_time", "dep_delay", "arr_time", "air_time", "arr_delay")
RAW_COLUMNS: list[str] = list(RAW_SCHEMA)
SCORING_INPUT_COLUMNS: list[str] = [c for c in RAW_COLUMNS if c not in LEAKAGE_COLUMNS]
# Unique per flight in the 2013 data; without origin it is not (24 carrier+flight numbers
# fly the same day from two NYC airports).
FLIGHT_KEY: tuple[str, ...] = ("year", "month", "day", "carrier", "flight", "origin")

_POLARS_TYPE: dict[str, pl.DataType] = {
    "INTEGER": pl.Int32(),
    "DOUBLE": pl.Float64(),
    "VARCHAR": pl.String(),
    "TIMESTAMP": pl.Datetime("us"),
}
# Column -> Polars type of the contract (the warehouse types, as DuckDB hands them to Polars).
CONTRACT_DTYPES: dict[str, pl.DataType] = {name: _POLARS_TYPE[kind] for name, kind in RAW_SCHEMA.items()}

# time_hour is stored in UTC; the schedule fields (year .. hour) are New York local time.
LOCAL_TIME_ZONE = "America/New_York"
_CONTRACTS = ("raw", "scoring_input")
_KEY_LABEL = "(" + ", ".join(FLIGHT_KEY) + ")"
_NON_BLANK = r"^\S(?:.*\S)?$"


@dataclass(frozen=True)
class RuleFailure:
    """One rule that failed: which column, which rule, on how many rows (never which values)."""

    column: str
    rule: str
    failing_rows: int


class ContractViolation(ValueError):
    """A frame that breaks the data contract; ``failures`` lists every failing rule."""

    def __init__(self, failures: list[RuleFailure], contract: str = "scoring_input"):
        self.failures = list(failures)
        self.contract = contract
        super().__init__(self._message())

    def _message(self) -> str:
        lines = [f"{self.contract} data contract violated: {len(self.failures)} rule(s) failed"]
        lines += [
            f"  column '{f.column}': rule '{f.rule}' failed on {f.failing_rows} row(s)" for f in self.failures
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self):
        # Ray workers and process pools pickle exceptions; keep the failures, not just the text.
        return (type(self), (self.failures, self.contract))


# --------------------------------------------------------------------------- rules


# A condition, or a function building it from the frame (for rules needing a lookup table).
_Condition = pl.Expr | Callable[[pl.LazyFrame], pl.Expr]


@dataclass(frozen=True)
class _Rule:
    """A rule on one column: the pandera check and the same condition as a Polars
    expression (True: passes, null: not applicable), which guards the cross-field rules.

    ``fails(frame)`` is the rule for the screen (:func:`_screen`): a one-row boolean
    expression, true when any row of ``frame`` breaks the rule (a null verdict does not)."""

    name: str
    passes: pl.Expr | None
    check: pa.Check
    fails: Callable[[pl.LazyFrame], pl.Expr]


def _any_row_fails(condition: _Condition) -> Callable[[pl.LazyFrame], pl.Expr]:
    def fails(frame: pl.LazyFrame) -> pl.Expr:
        return (~(condition(frame) if callable(condition) else condition)).any()

    return fails


def _in_range(column: str, low: float, high: float, why: str) -> _Rule:
    name = f"in_range({low}, {high})"
    check = pa.Check.in_range(low, high, error=name, description=why, n_failure_cases=0)
    condition = pl.col(column).is_between(low, high)
    return _Rule(name, condition, check, _any_row_fails(condition))


def _equal_to(column: str, value: int, why: str) -> _Rule:
    name = f"equal_to({value})"
    check = pa.Check.equal_to(value, error=name, description=why, n_failure_cases=0)
    condition = pl.col(column) == value
    return _Rule(name, condition, check, _any_row_fails(condition))


def _isin(column: str, values: tuple[str, ...], why: str) -> _Rule:
    name = f"isin({', '.join(values)})"
    check = pa.Check.isin(list(values), error=name, description=why, n_failure_cases=0)
    condition = pl.col(column).is_in(list(values))
    return _Rule(name, condition, check, _any_row_fails(condition))


def _distinct_values_check(column: str, condition: pl.Expr) -> Callable[[pa.PolarsData], object]:
    """A check function judging each distinct value once. A regex costs 25-55 ms per million
    strings (pandera's built-in str_matches runs it on every row) while these columns repeat
    a few hundred to a few thousand values, so hashing them first halves the cost."""

    def check(data: pa.PolarsData) -> pl.LazyFrame | bool:
        values = data.lazyframe.select(pl.col(column).unique().drop_nulls()).collect()
        bad = values.filter(~condition)[column]
        if bad.is_empty():
            return True
        return data.lazyframe.select(~pl.col(column).is_in(bad.implode()))

    return check


def _matches(column: str, pattern: str, why: str, name: str | None = None) -> _Rule:
    name = name or f"matches({pattern})"
    condition = pl.col(column).str.contains(pattern)
    check = pa.Check(
        _distinct_values_check(column, condition), error=name, description=why, n_failure_cases=0
    )
    distinct_fails = (~pl.col(column).drop_nulls().unique().str.contains(pattern)).any()
    return _Rule(name, condition, check, lambda frame: distinct_fails)


def _expression_check(condition: _Condition, needs: tuple[str, ...]) -> Callable[[pa.PolarsData], object]:
    """A vectorised pandera check function evaluating ``condition`` over the whole frame."""

    def check(data: pa.PolarsData) -> pl.LazyFrame | bool:
        present = data.lazyframe.collect_schema()
        if any(name not in present for name in needs):
            # A missing or mistyped input is already reported by its own rule.
            return True
        expr = condition if isinstance(condition, pl.Expr) else condition(data.lazyframe)
        return data.lazyframe.select(expr.alias(CHECK_OUTPUT_KEY))

    return check


def _expression_rule(name: str, why: str, needs: tuple[str, ...], condition: _Condition) -> _Rule:
    """A rule with no pandera built-in: a modulo, a comparison of columns, a null pattern."""
    check = pa.Check(_expression_check(condition, needs), error=name, description=why, n_failure_cases=0)
    return _Rule(
        name, condition if isinstance(condition, pl.Expr) else None, check, _any_row_fails(condition)
    )


def _hhmm_minutes(column: str) -> _Rule:
    return _expression_rule(
        "hhmm_minutes_below_60",
        "HHMM clock time: the last two digits are minutes",
        (),
        pl.col(column) % 100 < 60,
    )


def _clock_minutes(column: str) -> pl.Expr:
    return (pl.col(column) // 100) * 60 + pl.col(column) % 100


def _days_since_epoch() -> pl.Expr:
    """Days from 1970-01-01 to year-month-day, in Int32 arithmetic (H. Hinnant's
    days_from_civil): building a datetime per row costs six times as much."""
    month = pl.col("month")
    year = pl.col("year") - (month <= 2).cast(pl.Int32)
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * ((month + 9) % 12) + 2) // 5 + pl.col("day") - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


_US_PER_HOUR = 3_600_000_000


def _local_hour_matches(frame: pl.LazyFrame) -> pl.Expr:
    """time_hour, shifted to New York time, is the row's year-month-day hour. The UTC offset
    depends only on the instant, so it is looked up once per distinct hour (a few thousand)
    instead of converting a million timestamps."""
    utc_hour = pl.col("time_hour").cast(pl.Int64) // _US_PER_HOUR
    hours = frame.select(utc_hour.unique().drop_nulls().alias("utc_hour")).collect()
    local = (pl.col("utc_hour") * _US_PER_HOUR).cast(pl.Datetime("us", "UTC"))
    shifted = local.dt.convert_time_zone(LOCAL_TIME_ZONE).dt.replace_time_zone(None).cast(pl.Int64)
    offsets = hours.select("utc_hour", (shifted // _US_PER_HOUR - pl.col("utc_hour")).alias("offset"))
    offset = utc_hour.replace_strict(offsets["utc_hour"], offsets["offset"], return_dtype=pl.Int64)
    return utc_hour + offset == _days_since_epoch() * 24 + pl.col("hour")


def _days_in_month() -> pl.Expr:
    year, month = pl.col("year"), pl.col("month")
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    return (
        pl.when(month == 2)
        .then(28 + leap.cast(pl.Int32))
        .when(month.is_in([4, 6, 9, 11]))
        .then(30)
        .otherwise(31)
    )


@dataclass(frozen=True)
class _ColumnSpec:
    nullable: bool
    null_policy: str
    values: tuple[_Rule, ...] = ()


_NEVER_NULL = "never null: every scheduled flight has it"
_WEATHER_NULL = (
    "null when the origin had no weather observation for the hour (1,556 flights) or the sensor gave none"
)
_PLANE_NULL = "null when the flight has no tail number or the FAA registry extract lacks it (52,606 flights)"
_TEMP_RANGE = "degrees F; beyond the contiguous-US records (-70 F, 134 F) a value is a unit or sensor error"


def _value_specs() -> dict[str, _ColumnSpec]:
    """Column -> type-independent value rules and null policy, in raw column order."""
    hhmm_sched = "scheduled HHMM clock time, 0000..2359"
    hhmm_actual = "actual HHMM clock time; the source writes midnight as 2400, never 0000"
    delay_range = "minutes; a delay beyond a day cannot be told apart from a rescheduled flight"
    return {
        "year": _ColumnSpec(
            False, _NEVER_NULL, (_equal_to("year", 2013, "the model covers the 2013 schedule"),)
        ),
        "month": _ColumnSpec(False, _NEVER_NULL, (_in_range("month", 1, 12, "calendar month"),)),
        "day": _ColumnSpec(False, _NEVER_NULL, (_in_range("day", 1, 31, "day of month"),)),
        "dep_time": _ColumnSpec(
            True,
            "null when the flight did not depart (cancelled: 8,255 flights)",
            (_in_range("dep_time", 1, 2400, hhmm_actual), _hhmm_minutes("dep_time")),
        ),
        "sched_dep_time": _ColumnSpec(
            False,
            _NEVER_NULL,
            (_in_range("sched_dep_time", 0, 2359, hhmm_sched), _hhmm_minutes("sched_dep_time")),
        ),
        "dep_delay": _ColumnSpec(
            True,
            "null exactly when dep_time is null",
            (_in_range("dep_delay", -1440, 1440, delay_range),),
        ),
        "arr_time": _ColumnSpec(
            True,
            "null when the flight did not depart or did not arrive (8,713 flights)",
            (_in_range("arr_time", 1, 2400, hhmm_actual), _hhmm_minutes("arr_time")),
        ),
        "sched_arr_time": _ColumnSpec(
            False,
            _NEVER_NULL,
            (_in_range("sched_arr_time", 0, 2359, hhmm_sched), _hhmm_minutes("sched_arr_time")),
        ),
        "arr_delay": _ColumnSpec(
            True,
            "null when the flight was cancelled or diverted (9,430 flights)",
            (_in_range("arr_delay", -1440, 1440, delay_range),),
        ),
        "carrier": _ColumnSpec(
            False,
            _NEVER_NULL,
            (
                _matches(
                    "carrier", r"^[A-Z0-9]{2}$", "two-character IATA airline code; new airlines are allowed"
                ),
            ),
        ),
        "flight": _ColumnSpec(
            False, _NEVER_NULL, (_in_range("flight", 1, 9999, "flight numbers have 1-4 digits"),)
        ),
        "tailnum": _ColumnSpec(
            True,
            "null when the carrier reported no aircraft (2,512 flights)",
            (
                _matches(
                    "tailnum",
                    r"^[A-Z0-9]{2,7}$",
                    "aircraft registration without dashes (N-numbers, and the one foreign-looking D942DN)",
                ),
            ),
        ),
        "origin": _ColumnSpec(
            False,
            _NEVER_NULL,
            (
                _isin(
                    "origin",
                    ("EWR", "JFK", "LGA"),
                    "the system scores departures from the three NYC airports",
                ),
            ),
        ),
        "dest": _ColumnSpec(
            False,
            _NEVER_NULL,
            (
                _matches(
                    "dest", r"^[A-Z]{3}$", "three-letter IATA airport code; new destinations are allowed"
                ),
            ),
        ),
        "air_time": _ColumnSpec(
            True,
            "null exactly when arr_delay is null",
            (_in_range("air_time", 1, 1440, "minutes in the air; a nonstop flight lasts less than a day"),),
        ),
        "distance": _ColumnSpec(
            False,
            _NEVER_NULL,
            (
                _in_range(
                    "distance",
                    1,
                    12500,
                    "great-circle miles; no two airports are farther apart than half the Earth around",
                ),
            ),
        ),
        "hour": _ColumnSpec(
            False, _NEVER_NULL, (_in_range("hour", 0, 23, "hour of the scheduled departure"),)
        ),
        "minute": _ColumnSpec(
            False, _NEVER_NULL, (_in_range("minute", 0, 59, "minute of the scheduled departure"),)
        ),
        "time_hour": _ColumnSpec(
            False,
            _NEVER_NULL,
            (
                _expression_rule(
                    "on_the_hour",
                    "the scheduled hour, truncated: no minutes or seconds",
                    (),
                    pl.col("time_hour").cast(pl.Int64) % _US_PER_HOUR == 0,
                ),
            ),
        ),
        "temp": _ColumnSpec(True, _WEATHER_NULL, (_in_range("temp", -70, 135, _TEMP_RANGE),)),
        "dewp": _ColumnSpec(True, _WEATHER_NULL, (_in_range("dewp", -70, 135, _TEMP_RANGE),)),
        "humid": _ColumnSpec(
            True, _WEATHER_NULL, (_in_range("humid", 0, 100, "relative humidity, percent"),)
        ),
        "wind_dir": _ColumnSpec(True, _WEATHER_NULL, (_in_range("wind_dir", 0, 360, "compass degrees"),)),
        "wind_speed": _ColumnSpec(
            True,
            _WEATHER_NULL,
            (
                _in_range(
                    "wind_speed",
                    0,
                    100,
                    "mph; the weather source has one 1,048 mph sensor error (EWR, 12 Feb 03:00 local; no flight then)",
                ),
            ),
        ),
        "wind_gust": _ColumnSpec(
            True,
            "null when no gusts were reported (most hours)",
            (
                _in_range(
                    "wind_gust",
                    0,
                    150,
                    "mph; looser than wind_speed because gusts exceed it (the data peaks at 67)",
                ),
            ),
        ),
        "precip": _ColumnSpec(
            True,
            _WEATHER_NULL,
            (_in_range("precip", 0, 12, "inches in the hour; the world one-hour record is about 12"),),
        ),
        "pressure": _ColumnSpec(
            True,
            _WEATHER_NULL,
            (
                _in_range(
                    "pressure",
                    870,
                    1085,
                    "sea-level hPa within the world records (870-1084); catches inHg or kPa",
                ),
            ),
        ),
        "visib": _ColumnSpec(
            True, _WEATHER_NULL, (_in_range("visib", 0, 10, "statute miles; ASOS caps visibility at 10"),)
        ),
        "plane_year": _ColumnSpec(
            True,
            _PLANE_NULL + " or has no build year (5,306 more)",
            (
                _in_range(
                    "plane_year",
                    1930,
                    2013,
                    "build year: not after the flight, not before airliners (the oldest here: 1956)",
                ),
            ),
        ),
        "type": _ColumnSpec(True, _PLANE_NULL, (_non_blank("type"),)),
        "manufacturer": _ColumnSpec(True, _PLANE_NULL, (_non_blank("manufacturer"),)),
        "model": _ColumnSpec(True, _PLANE_NULL, (_non_blank("model"),)),
        "engines": _ColumnSpec(True, _PLANE_NULL, (_in_range("engines", 1, 4, "engines on an aircraft"),)),
        "seats": _ColumnSpec(
            True,
            _PLANE_NULL,
            (_in_range("seats", 1, 1000, "seats; the largest airliner has fewer than 900"),),
        ),
        "engine": _ColumnSpec(True, _PLANE_NULL, (_non_blank("engine"),)),
        "airline_name": _ColumnSpec(False, _NEVER_NULL, (_non_blank("airline_name"),)),
    }


def _non_blank(column: str) -> _Rule:
    why = "open category (new values allowed): not empty, no leading or trailing whitespace"
    return _matches(column, _NON_BLANK, why, name="non_blank_trimmed")


def _cross_field_rules(valid: Callable[..., pl.Expr]) -> dict[str, tuple[_Rule, ...]]:
    """Column -> rules that read other columns. ``valid(*columns)`` is the guard: the
    rule is only judged where its inputs pass their own value rules."""

    def guarded(columns: tuple[str, ...], condition: pl.Expr) -> pl.Expr:
        return pl.when(valid(*columns)).then(condition)

    def null_iff(column: str, other: str) -> _Rule:
        return _expression_rule(
            f"null_iff_{other}_null",
            f"{column} is null exactly when {other} is null",
            (other,),
            pl.col(column).is_null() == pl.col(other).is_null(),
        )

    def null_when(column: str, *others: str) -> _Rule:
        any_null = pl.any_horizontal(pl.col(o).is_null() for o in others)
        return _expression_rule(
            f"null_when_{'_or_'.join(others)}_null",
            f"{column} is null whenever {' or '.join(others)} is null",
            others,
            ~any_null | pl.col(column).is_null(),
        )

    def delay_matches(delay: str, actual: str, scheduled: str) -> _Rule:
        inputs = (delay, actual, scheduled)
        drift = _clock_minutes(actual) - _clock_minutes(scheduled) - pl.col(delay)
        return _expression_rule(
            f"matches_{actual}_minus_{scheduled}",
            f"{delay} = {actual} - {scheduled} in minutes, modulo a day (flights that cross midnight)",
            (actual, scheduled),
            guarded(inputs, drift % 1440 == 0),
        )

    schedule = ("year", "month", "day", "hour")
    day_exists = pl.col("day") <= _days_in_month()
    plane = ("manufacturer", "model", "engines", "seats", "engine")
    return {
        "day": (
            _expression_rule(
                "day_exists_in_month",
                "a real calendar date (no 31 April, no 29 February 2013)",
                ("year", "month"),
                guarded(("year", "month", "day"), day_exists),
            ),
        ),
        "dep_delay": (
            null_iff("dep_delay", "dep_time"),
            delay_matches("dep_delay", "dep_time", "sched_dep_time"),
        ),
        "arr_time": (null_when("arr_time", "dep_time"),),
        "arr_delay": (
            null_when("arr_delay", "dep_time", "arr_time"),
            delay_matches("arr_delay", "arr_time", "sched_arr_time"),
        ),
        "air_time": (null_iff("air_time", "arr_delay"),),
        "hour": (
            _expression_rule(
                "matches_sched_dep_time",
                "hour = sched_dep_time // 100",
                ("sched_dep_time",),
                guarded(("hour", "sched_dep_time"), pl.col("hour") == pl.col("sched_dep_time") // 100),
            ),
        ),
        "minute": (
            _expression_rule(
                "matches_sched_dep_time",
                "minute = sched_dep_time % 100",
                ("sched_dep_time",),
                guarded(("minute", "sched_dep_time"), pl.col("minute") == pl.col("sched_dep_time") % 100),
            ),
        ),
        "time_hour": (
            _expression_rule(
                "matches_local_date_and_hour",
                f"time_hour is UTC; in {LOCAL_TIME_ZONE} time it is year-month-day hour:00",
                schedule,
                lambda frame: guarded(
                    (*schedule, "time_hour"), pl.when(day_exists).then(_local_hour_matches(frame))
                ),
            ),
        ),
        "dewp": (
            _expression_rule(
                "not_above_temp",
                "the dew point never exceeds the air temperature (0.01 F tolerance for rounding)",
                ("temp",),
                guarded(("dewp", "temp"), pl.col("dewp") <= pl.col("temp") + 0.01),
            ),
        ),
        "wind_gust": (
            _expression_rule(
                "not_below_wind_speed",
                "a gust is at least the sustained wind speed",
                ("wind_speed",),
                guarded(("wind_gust", "wind_speed"), pl.col("wind_gust") >= pl.col("wind_speed")),
            ),
        ),
        "plane_year": (null_when("plane_year", "type"),),
        "type": (null_when("type", "tailnum"),),
        **{column: (null_iff(column, "type"),) for column in plane},
    }


# --------------------------------------------------------------------------- schemas


@dataclass(frozen=True)
class _Contract:
    name: str
    columns: tuple[str, ...]
    schema: pa.DataFrameSchema
    keep_extra: bool  # False: an unexpected column is a failure (raw); True: it is dropped
    frame_rules: dict[str, tuple[str, str]]  # rule -> (column label, why)
    screens: tuple[Callable[[pl.LazyFrame], pl.Expr], ...]  # every rule as "does any row fail?"


def _dtype_description(dtype: pl.DataType) -> str:
    if dtype.is_integer():
        return (
            "integer; other widths, whole floats and numeric text are cast; 1.5, 'abc' or out of range fail"
        )
    if dtype.is_float():
        return "float; other numeric types and numeric text are cast; NaN counts as missing"
    if isinstance(dtype, pl.Datetime):
        return "timestamp without zone, meaning UTC; other units, zoned timestamps and ISO-8601 text are cast"
    return "text; Categorical and Enum are cast, any other type fails"


def _dtype_rule(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return f"dtype(Datetime({dtype.time_unit}))"
    return f"dtype({dtype})"


def _unique_key_rule(why: str) -> _Rule:
    condition = ~pl.struct(list(FLIGHT_KEY)).is_duplicated()
    # n_failure_cases=0: pandera would otherwise keep and JSON-encode every duplicated row.
    check = pa.Check(
        _expression_check(condition, FLIGHT_KEY), error="unique", description=why, n_failure_cases=0
    )
    return _Rule("unique", None, check, _any_row_fails(condition))


def _null_fails(column: str) -> Callable[[pl.LazyFrame], pl.Expr]:
    return lambda frame: pl.col(column).is_null().any()


@cache
def _contract(name: str) -> _Contract:
    specs = _value_specs()

    def valid(*columns: str) -> pl.Expr:
        return pl.all_horizontal(rule.passes for c in columns for rule in specs[c].values)

    relations = _cross_field_rules(valid)
    columns = tuple(RAW_COLUMNS if name == "raw" else SCORING_INPUT_COLUMNS)
    schema_columns = {
        c: pa.Column(
            CONTRACT_DTYPES[c],
            checks=[r.check for r in (*specs[c].values, *relations.get(c, ()))],
            nullable=specs[c].nullable,
            description=specs[c].null_policy,
            name=c,
        )
        for c in columns
    }
    rules = [r for c in columns for r in (*specs[c].values, *relations.get(c, ()))]
    # one row per flight in the warehouse and in every batch: in a batch, a flight sent twice
    # would count twice in its day's congestion and shift the other flights' scores
    unique = _unique_key_rule(
        "one row per flight; a duplicate means the same flight was loaded twice"
        if name == "raw"
        else "one row per flight; a flight sent twice would count twice in its day's context"
    )
    rules.append(unique)
    frame_checks = [unique.check]
    frame_rules = {"unique": (_KEY_LABEL, unique.check.description)}
    schema = pa.DataFrameSchema(schema_columns, checks=frame_checks, name=name)
    screens = (*(_null_fails(c) for c in columns if not specs[c].nullable), *(r.fails for r in rules))
    return _Contract(name, columns, schema, name != "raw", frame_rules, screens)


# --------------------------------------------------------------------------- types


def _is_float(dtype: pl.DataType) -> bool:
    return dtype.is_float() or isinstance(dtype, pl.Decimal)


def _cast_expr(name: str, source: pl.DataType, target: pl.DataType) -> pl.Expr | None:
    """The cast of one column to its contract type, or None when the source type cannot hold
    such values at all (a Boolean, a List, ...). Casts are non-strict: a value that does not
    convert becomes null and is counted as a dtype failure."""
    col = pl.col(name)
    if source == pl.Null:
        return col.cast(target)
    if target.is_integer():
        if source.is_integer() or source == pl.String:
            return col.cast(target, strict=False)
        if _is_float(source):
            number = col.cast(pl.Float64)
            # A non-strict cast would truncate 1.5 to 1; only whole numbers convert.
            return pl.when(number == number.floor()).then(number).cast(target, strict=False)
        return None
    if target.is_float():
        if source.is_numeric() or source == pl.String:
            return col.cast(target, strict=False).fill_nan(None)
        return None
    if target == pl.String:
        return col.cast(pl.String) if source in (pl.String, pl.Categorical, pl.Enum) else None
    if isinstance(target, pl.Datetime):
        if isinstance(source, pl.Datetime):
            # time_hour is UTC without a zone; a zoned timestamp is the same instant.
            utc = col.dt.convert_time_zone("UTC").dt.replace_time_zone(None) if source.time_zone else col
            return utc.cast(target)
        if source == pl.String:
            parsed = col.str.to_datetime(time_unit=target.time_unit, time_zone="UTC", strict=False)
            return parsed.dt.replace_time_zone(None)
        return None
    return None


def _coerce(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[RuleFailure]]:
    """Cast every column to its contract type; columns with values that do not convert are
    reported and dropped (their other rules would only see the nulls the cast left)."""
    failures: list[RuleFailure] = []
    casts: dict[str, pl.Expr] = {}
    lost: dict[str, pl.Expr] = {}
    for name, source in frame.schema.items():
        target = CONTRACT_DTYPES[name]
        if source == target:
            if target.is_float():
                casts[name] = pl.col(name).fill_nan(None)
            continue
        cast = _cast_expr(name, source, target)
        if cast is None:
            failures.append(RuleFailure(name, _dtype_rule(target), frame.height))
            continue
        present = pl.col(name).is_not_null()
        if _is_float(source):
            present &= pl.col(name).cast(pl.Float64).is_not_nan()
        casts[name] = cast
        lost[name] = (present & pl.col(_staged(name)).is_null()).sum()
    # Cast once into staging columns, then count what the casts lost against the originals.
    staged = frame.with_columns(e.alias(_staged(c)) for c, e in casts.items())
    if lost:
        counts = staged.select(**lost).row(0, named=True)
        failures += [RuleFailure(c, _dtype_rule(CONTRACT_DTYPES[c]), n) for c, n in counts.items() if n]
    broken = {f.column for f in failures}
    kept = [c for c in frame.columns if c not in broken]
    return staged.select(pl.col(_staged(c) if c in casts else c).alias(c) for c in kept), failures


def _staged(name: str) -> str:
    return f"__contract_cast__{name}"


# --------------------------------------------------------------------------- validation


def _failing_rows(error: SchemaError, height: int) -> int:
    output = error.check_output
    if isinstance(output, pl.DataFrame) and CHECK_OUTPUT_KEY in output.columns and output.height == height:
        return height - int(output[CHECK_OUTPUT_KEY].fill_null(True).sum())
    if isinstance(error.failure_cases, pl.DataFrame) and error.failure_cases.height:
        return error.failure_cases.height
    # A schema-level failure (a missing column, a check that raised) concerns every row.
    return height


def _to_failure(error: SchemaError, contract: _Contract, height: int) -> RuleFailure:
    check = error.check
    rule = check if isinstance(check, str) else (check.error or check.name or str(check))
    if isinstance(error.schema, pa.Column):
        column = error.schema.name
    elif rule in contract.frame_rules:
        column = contract.frame_rules[rule][0]
    elif rule == "column_in_dataframe" and isinstance(error.failure_cases, str):
        column = error.failure_cases  # pandera puts the missing column's name here
    else:
        column = "*"  # never str(failure_cases): that could hold row values
    if rule == "column_in_dataframe":
        rule = "column_present"
    elif rule.startswith("dtype("):
        rule = _dtype_rule(CONTRACT_DTYPES[column])
    if error.reason_code == SchemaErrorReason.CHECK_ERROR:
        logger.error("rule %s on column %s raised instead of returning a verdict", rule, column)
    return RuleFailure(column, rule, _failing_rows(error, height))


def _run_schema(contract: _Contract, frame: pl.DataFrame, skip: set[str]) -> list[RuleFailure]:
    schema = contract.schema.remove_columns(sorted(skip)) if skip else contract.schema
    # The contract is not optional: PANDERA_VALIDATION_ENABLED / _DEPTH must not turn it off.
    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors as exc:
            return [_to_failure(e, contract, frame.height) for e in exc.schema_errors]
        except SchemaError as exc:
            return [_to_failure(exc, contract, frame.height)]
    return []


def _screen(contract: _Contract, frame: pl.DataFrame) -> bool:
    """True when ``frame`` (typed, every contract column present) certainly passes: every rule
    evaluated as "does any row fail?" in one parallel Polars pass. pandera runs one query per
    check (about 0.6 s per million rows, over half of it fixed cost), so the screen lets a
    clean batch skip it; a batch the screen flags goes to pandera, which names column, rule
    and row count. The screen evaluates the same conditions as the pandera checks, and the
    contract tests break every rule on purpose, so a rule the screen missed would fail them."""
    lazy = frame.lazy()
    verdicts = lazy.select(fails(lazy).alias(f"rule_{i}") for i, fails in enumerate(contract.screens))
    return not any(verdicts.collect().row(0))


def _ordered(failures: list[RuleFailure], contract: _Contract) -> list[RuleFailure]:
    position = {c: i for i, c in enumerate(contract.columns)}
    return sorted(failures, key=lambda f: position.get(f.column, len(position)))


def _validate(frame: pl.DataFrame | pl.LazyFrame, contract: _Contract) -> pl.DataFrame:
    df = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    failures: list[RuleFailure] = []
    if not contract.keep_extra:
        failures += [
            RuleFailure(c, "column_in_schema", df.height) for c in df.columns if c not in contract.columns
        ]
    typed, dtype_failures = _coerce(df.select(c for c in contract.columns if c in df.columns))
    failures += dtype_failures
    complete = not failures and len(typed.columns) == len(contract.columns)
    if not (complete and _screen(contract, typed)):
        failures += _run_schema(contract, typed, {f.column for f in dtype_failures})
    if failures:
        failures = _ordered(failures, contract)
        logger.warning(
            "%s contract: %d rule(s) failed on a %d-row frame", contract.name, len(failures), df.height
        )
        raise ContractViolation(failures, contract.name)
    return typed.select(contract.columns)


def validate_raw(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Validate the raw table (all of ``RAW_COLUMNS``, nothing else); returns it typed and in
    column order, or raises :class:`ContractViolation` listing every failing rule."""
    return _validate(frame, _contract("raw"))


def validate_scoring_input(frame: pl.DataFrame | pl.LazyFrame) -> pl.DataFrame:
    """Validate a client batch; returns exactly ``SCORING_INPUT_COLUMNS`` (leakage and other
    extra columns dropped), typed, or raises :class:`ContractViolation`."""
    return _validate(frame, _contract("scoring_input"))


def describe_contract(which: str = "scoring_input") -> pl.DataFrame:
    """One row per (column, rule) with the reason for it: for the EDA notebook and the readme."""
    if which not in _CONTRACTS:
        raise ValueError(f"unknown contract {which!r}; expected one of {_CONTRACTS}")
    contract = _contract(which)
    rows: list[tuple[str, str, str]] = []
    for column in contract.columns:
        spec = contract.schema.columns[column]
        dtype = CONTRACT_DTYPES[column]
        rows.append((column, "column_present", "required: a frame without this column is refused"))
        rows.append((column, _dtype_rule(dtype), _dtype_description(dtype)))
        rows.append((column, "nullable" if spec.nullable else "not_nullable", spec.description))
        rows += [(column, check.error, check.description) for check in spec.checks]
    if contract.keep_extra:
        dropped = ", ".join(LEAKAGE_COLUMNS)
        rows.append(
            ("*", "extra_columns_dropped", f"post-departure columns ({dropped}) and any other are dropped")
        )
    else:
        rows.append(("*", "column_in_schema", "no column beyond the raw schema"))
    rows += [(label, rule, why) for rule, (label, why) in contract.frame_rules.items()]
    return pl.DataFrame(rows, schema=["column", "rule", "description"], orient="row")
