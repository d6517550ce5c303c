"""Shared fixtures.

Every test runs with the settings pointed at its own temporary folder (warehouse, lake,
artifacts), so no test reads or writes the repository's generated files. Unit tests use
small CSVs cut from the real extract; data and pipeline tests load the full
``Base_de_datos.csv`` once per session.

Two scored lakes serve the monitoring job's and the monitoring app's tests:

- a small synthetic one (:func:`fill_weeks`, with the ``artifact`` fixture's model): a few
  weeks of 120 flights a day whose drift, new categories, missing outcomes and model
  versions a test chooses;
- the real one (:func:`production_lake`, :func:`production_monitored`): the main job's
  load and Sep-Dec scoring on the session's model, once per session, then one weekly
  monitoring run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from settings import REPO_ROOT, get_settings
from warehouse import load_raw_csv

RAW_CSV = REPO_ROOT / "Base_de_datos.csv"
SRC_DIR = REPO_ROOT / "mlops_pipeline" / "src"
# `import streamlit` (the app's tests) sets MPLBACKEND=Agg in os.environ for the whole process;
# a notebook kernel started later would inherit it and draw no inline figures. Every test
# gets the variable as the session found it.
MPLBACKEND_AT_START = os.environ.get("MPLBACKEND")


def point_settings_at(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("MLOPS_WAREHOUSE_PATH", str(folder / "warehouse.duckdb"))
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(folder / "artifacts"))
    monkeypatch.setenv("MLOPS_LAKE_DIR", str(folder / "lake"))
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    point_settings_at(monkeypatch, tmp_path)
    if MPLBACKEND_AT_START is None:
        monkeypatch.delenv("MPLBACKEND", raising=False)
    else:
        monkeypatch.setenv("MPLBACKEND", MPLBACKEND_AT_START)
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def raw_lines() -> list[str]:
    """The real extract's lines (header first), read once."""
    return RAW_CSV.read_text().splitlines(keepends=True)


@pytest.fixture
def small_csv(tmp_path: Path, raw_lines: list[str]) -> Path:
    """The header plus 300 real rows spread over the year (every 1,000th flight)."""
    path = tmp_path / "small.csv"
    path.write_text("".join([raw_lines[0], *raw_lines[1::1000][:300]]))
    return path


@pytest.fixture(scope="session")
def real_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse holding the full real extract, loaded once for the session (read it only)."""
    path = tmp_path_factory.mktemp("real") / "warehouse.duckdb"
    load_raw_csv(RAW_CSV, warehouse_path=path)
    return path


@pytest.fixture(scope="session")
def real_datasets(real_warehouse: Path):
    """Train / validation / test features built from the full real warehouse (read only)."""
    import ft_engineering as fe

    return fe.build_datasets(fe.scan_raw(real_warehouse))


@pytest.fixture(scope="session")
def raw_frame(real_warehouse: Path):
    """The full raw table as a Polars DataFrame (read only)."""
    import ft_engineering as fe

    return fe.scan_raw(real_warehouse).collect()


@pytest.fixture(scope="session")
def trained(real_datasets, tmp_path_factory):
    """A real model artifact trained once per session on 10 % of each split (small grid).

    Returns (TrainingRun, sample Datasets, artifacts dir); use the ``use_trained`` fixture
    to point a test's settings at that artifacts dir.
    """
    import ft_engineering as fe
    import model_training_evaluation as mte

    folder = tmp_path_factory.mktemp("trained") / "artifacts"
    sample = fe.Datasets(
        *(s.sample(fraction=0.1, seed=7).sort("flight_date") for s in real_datasets.splits().values()),
        real_datasets.state,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(folder))
        get_settings.cache_clear()
        run = mte.run(sample, [{"n_estimators": 60, "num_leaves": 15}])
    get_settings.cache_clear()
    return run, sample, folder


@pytest.fixture
def use_trained(trained, monkeypatch: pytest.MonkeyPatch):
    """Settings pointing at the session's trained artifact (warehouse and lake stay per test)."""
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(trained[2]))
    get_settings.cache_clear()
    yield trained[0]
    get_settings.cache_clear()


@contextmanager
def settings_at(folder: Path, artifacts: Path) -> Iterator[None]:
    """Settings pointing at ``folder``'s warehouse and lake and at ``artifacts``, for a
    session-scoped fixture (tests get theirs from ``isolated_settings``)."""
    with pytest.MonkeyPatch.context() as mp:
        point_settings_at(mp, folder)
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(artifacts))
        get_settings.cache_clear()
        try:
            yield
        finally:
            get_settings.cache_clear()


# --------------------------------------------------------------------------- the real scored lake


@dataclass(frozen=True)
class ProductionLake:
    """A folder holding ``warehouse.duckdb`` and ``lake/`` after the main job's load and
    scoring stages; ``artifacts`` is the session's model; ``first`` the scoring counts."""

    folder: Path
    artifacts: Path
    first: dict

    @contextmanager
    def settings(self) -> Iterator[None]:
        with settings_at(self.folder, self.artifacts):
            yield


@pytest.fixture(scope="session")
def production_lake(trained, tmp_path_factory) -> ProductionLake:
    """The main job's load and Sep-Dec scoring (daily batches and actuals) on the session's
    model, run once per session. Tests read it; a test that adds to it says so."""
    from model_deploy import Scorer, score_production

    folder = tmp_path_factory.mktemp("production")
    with settings_at(folder, trained[2]):
        load_raw_csv(RAW_CSV)
        first = score_production(Scorer.load(), progress=False)
    return ProductionLake(folder, trained[2], first)


@pytest.fixture(scope="session")
def production_monitored(production_lake: ProductionLake):
    """One weekly monitoring run over the production lake: (RunSummary, current tables)."""
    import duckdb

    import model_monitoring as mm

    with production_lake.settings():
        summary = mm.run_once(mm.MonitorConfig(progress=False))
        con = duckdb.connect()
        tables = {
            kind: mm.current_rows(con, kind, "week") for kind in ("windows", "drift", "performance", "alerts")
        }
        con.close()
    return summary, tables


# --------------------------------------------------------------------------- a small synthetic lake

CARRIERS = ["AA", "B6", "DL", "UA"]
DESTS = ["ATL", "BOS", "LAX", "ORD", "SFO"]
START = date(2013, 9, 2)  # a Monday: four whole ISO weeks follow
ROWS_PER_DAY = 120
VERSION = "lgbm-synthetic0001"
SYNTHETIC_FEATURES = ["precip", "distance", "carrier", "dest"]


def synthetic_frame(
    rng: np.random.Generator, n: int, *, wet: float = 0.08, new_carrier: float = 0.0
) -> pl.DataFrame:
    """Rows drawn like training: precip 0 in 92 % of rows, distance ~ N(1000, 300)."""
    precip = np.where(rng.random(n) < wet, rng.uniform(0.01, 0.5, n).round(2), 0.0)
    carrier = rng.choice(CARRIERS, n, p=[0.4, 0.3, 0.2, 0.1]).astype(object)
    carrier[rng.random(n) < new_carrier] = "ZZ"
    return pl.DataFrame(
        {
            "precip": precip,
            "distance": rng.normal(1000, 300, n).round(),
            "carrier": carrier.tolist(),
            "dest": rng.integers(0, len(DESTS), n).astype(np.int32),
        }
    )


def synthetic_score(frame: pl.DataFrame) -> np.ndarray:
    """The synthetic model's score: the same function for the reference and for production."""
    wet = frame["precip"].to_numpy() > 0
    return np.clip(0.2 + 0.5 * wet + (frame["distance"].to_numpy() - 1000) / 3000, 0.01, 0.99)


def save_synthetic_artifact(version: str = VERSION) -> str:
    """A real LightGBM model on the synthetic columns, saved with a format-2 profile."""
    import lightgbm as lgb

    import ft_engineering as fe
    import reference_profile as rp
    from model_artifact import save_artifact

    rng = np.random.default_rng(11)
    train = synthetic_frame(rng, 6000)
    codes = train.with_columns(
        pl.col("carrier").cast(pl.Enum(CARRIERS), strict=False).to_physical().cast(pl.Int32),
        pl.lit(False).alias("unknown_carrier"),
        pl.lit(False).alias("unknown_dest"),
    )
    X = codes.select(SYNTHETIC_FEATURES).to_numpy().astype(float)
    y = (rng.random(len(X)) < 0.2 + 0.5 * (X[:, 0] > 0)).astype(int)
    booster = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 4, "seed": 1, "deterministic": True},
        lgb.Dataset(X, y, feature_name=SYNTHETIC_FEATURES),
        num_boost_round=5,
    )
    profile = rp.build_reference_profile(
        codes, ["precip", "distance"], {"carrier": CARRIERS, "dest": DESTS}, synthetic_score(train),
        score_period="validation",
    )  # fmt: skip
    state = fe.FeatureState({"carrier": CARRIERS, "dest": DESTS}, 30, SYNTHETIC_FEATURES)
    card = {
        "version": version,
        "threshold": {"value": 0.3},
        "feature_state": state.to_dict(),
        "features": state.features,
    }
    save_artifact(version, booster.model_to_string(), card, profile)
    return version


@pytest.fixture
def artifact(tmp_path: Path) -> str:
    """The synthetic model, saved in the test's own artifacts folder."""
    return save_synthetic_artifact()


def scored_day(
    day: date, frame: pl.DataFrame, *, first_flight: int = 1, version: str = VERSION
) -> pl.DataFrame:
    """A day's scored rows as the scorer stores them (keys, features, flags, score, version)."""
    n = frame.height
    score = synthetic_score(frame)
    return frame.with_columns(
        pl.lit(day.year).alias("year"),
        pl.lit(day.month).alias("month"),
        pl.lit(day.day).alias("day"),
        pl.Series("flight", np.arange(first_flight, first_flight + n, dtype=np.int32)),
        pl.lit("EWR").alias("origin"),
        pl.lit(day).alias("flight_date"),
        (~pl.col("carrier").is_in(CARRIERS)).alias("unknown_carrier"),
        pl.lit(False).alias("unknown_dest"),
        pl.Series("score", score),
        pl.Series("label", (score >= 0.3).astype(np.int8)),
        pl.lit(version).alias("model_version"),
        pl.lit(datetime(2013, 9, 1) + timedelta(days=(day - START).days)).alias("scored_at"),
        pl.lit(0, dtype=pl.UInt64).alias("row_digest"),  # a bookkeeping column the job must ignore
    )


def publish_day(day: date, scored: pl.DataFrame, tag: str = "s", *, actuals: bool = True) -> None:
    """Store a day's scored rows and (once per day, unless ``actuals=False``) its outcomes."""
    import lake

    version = scored["model_version"][0]
    batch = f"{version}.{tag}-{day}"
    lake.write_batch("scored", batch, scored.with_columns(pl.lit(batch).alias("batch_id")).to_arrow())
    if actuals and not lake.has_batch("actuals", f"actuals-{day}"):
        outcomes = scored.select(
            "year", "month", "day", "carrier", "flight", "origin", "flight_date",
            pl.lit(False).alias("cancelled"), pl.lit(False).alias("diverted"),
            pl.lit(0, dtype=pl.Int32).alias("arr_delay"),
            (pl.Series(np.random.default_rng(day.day).random(scored.height)) < pl.col("score")).cast(pl.Int8)
            .alias("is_disrupted"),
        )  # fmt: skip
        lake.write_batch("actuals", f"actuals-{day}", outcomes.to_arrow())


def fill_weeks(
    weeks: int = 4,
    *,
    drift_weeks: tuple[int, ...] = (),
    new_carrier_week: int | None = None,
    actuals: bool = True,
    versions: dict[int, str] | None = None,
) -> None:
    """Publish ``weeks`` whole weeks from START, one batch per day; ``drift_weeks`` are wet
    (precip non-zero in 70 % of rows), ``new_carrier_week`` has 20 % of an unknown carrier,
    ``versions`` maps a week to the model version that scored it (default VERSION)."""
    rng = np.random.default_rng(7)
    for offset in range(7 * weeks):
        day = START + timedelta(days=offset)
        week = offset // 7
        frame = synthetic_frame(
            rng,
            ROWS_PER_DAY,
            wet=0.7 if week in drift_weeks else 0.08,
            new_carrier=0.2 if week == new_carrier_week else 0.0,
        )
        version = (versions or {}).get(week, VERSION)
        publish_day(day, scored_day(day, frame, version=version), actuals=actuals)
