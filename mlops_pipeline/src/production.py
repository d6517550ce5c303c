"""The production period: Sep-Dec scored from the warehouse as one batch per flight date.

This is what tonight's run does for tomorrow's schedule, replayed over the four months the
model never saw: each date's flights are scored and stored through the scoring core
(exactly once by content, so a rerun of the main job adds nothing, and a rerun after
retraining is a visible re-score under the new model version), then that date's outcomes
are published to the ``actuals`` dataset (labels arrive hours after the flights).
"""

from __future__ import annotations

from datetime import date

import polars as pl
from tqdm.auto import tqdm

import day_context
import ft_engineering as fe
import lake
import scoring
from data_contract import SCORING_INPUT_COLUMNS
from scoring import ACTUALS_DATASET, KEY_COLUMNS, Scorer


def flight_dates(frame: pl.DataFrame) -> pl.Series:
    return frame.select(pl.date("year", "month", "day").alias("d"))["d"]


def production_days(dates: pl.Series) -> list[date]:
    """The distinct flight dates of the production period (Sep-Dec), in order."""
    start, end = fe.SPLITS["test"]
    return sorted(dates.filter(dates.is_between(start, end)).unique().to_list())


def write_actuals(raw: pl.DataFrame, name: str) -> lake.WriteResult:
    """The outcomes of flights (labels arrive after the flights), keyed by flight, with the
    route and schedule the outcome history needs (``history.OUTCOME_COLUMNS``)."""
    outcomes = (
        fe.add_target(raw.lazy())
        .select(
            *KEY_COLUMNS,
            "dest",
            "sched_dep_time",
            "sched_arr_time",
            pl.date("year", "month", "day").alias("flight_date"),
            pl.col("dep_time").is_null().alias("cancelled"),
            (pl.col("dep_time").is_not_null() & pl.col("arr_delay").is_null()).alias("diverted"),
            "arr_delay",
            fe.TARGET,
        )
        .collect()
    )
    return lake.write_batch(ACTUALS_DATASET, name, outcomes.to_arrow())


def publish_warehouse_outcomes() -> lake.WriteResult:
    """Publish the outcomes of every warehouse flight as one actuals batch: the outcome
    history an image that serves the model carries (the Dockerfile), as the day context."""
    return write_actuals(fe.scan_raw().collect(), "actuals-warehouse")


def score_production(scorer: Scorer | None = None, progress: bool = True) -> dict[str, int]:
    """Score Sep-Dec from the warehouse as one batch per flight date, store the actuals,
    and (re)register the views in the warehouse. Returns counts of days, rows, new rows
    stored and new batches."""
    scorer = scorer or Scorer.load()
    day_context.refresh()  # the context of the days scored below is the warehouse's latest load
    raw = fe.scan_raw().collect()
    dates = flight_dates(raw)
    counts = {"days": 0, "rows": 0, "new_rows": 0, "new_batches": 0}
    days = production_days(dates)
    # the outcomes of every flight before the period are in when it starts (its first day's
    # history); after that, each day's outcomes are published once it is scored
    before = f"actuals-before-{days[0]}" if days else None
    if before and not lake.has_batch(ACTUALS_DATASET, before):
        write_actuals(raw.filter(dates < days[0]), before)
    for day in tqdm(days, desc="daily batches", disable=not progress):
        flights = raw.filter(dates == day)
        _, stored = scoring.score_and_persist(flights.select(SCORING_INPUT_COLUMNS), scorer)
        if not lake.has_batch(ACTUALS_DATASET, f"actuals-{day}"):
            write_actuals(flights, f"actuals-{day}")
        counts["days"] += 1
        counts["rows"] += flights.height
        counts["new_rows"] += stored.new_rows
        counts["new_batches"] += stored.batch_id is not None
    scoring.register_views()
    return counts
