"""Shared fixtures.

Every test runs with the settings pointed at its own temporary folder (warehouse, lake,
artifacts), so no test reads or writes the repository's generated files. Unit tests use
small CSVs cut from the real extract; data and pipeline tests load the full
``Base_de_datos.csv`` once per session.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from settings import REPO_ROOT, get_settings
from warehouse import load_raw_csv

RAW_CSV = REPO_ROOT / "Base_de_datos.csv"
SRC_DIR = REPO_ROOT / "mlops_pipeline" / "src"


def point_settings_at(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv("MLOPS_WAREHOUSE_PATH", str(folder / "warehouse.duckdb"))
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(folder / "artifacts"))
    monkeypatch.setenv("MLOPS_LAKE_DIR", str(folder / "lake"))
    get_settings.cache_clear()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    point_settings_at(monkeypatch, tmp_path)
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


@pytest.fixture(scope="session")
def production_lake(trained, tmp_path_factory) -> Path:
    """The main job's scoring stage on the session's model, run once: a folder with the
    loaded warehouse and the lake (Sep-Dec as daily batches, the actuals, the day context).
    Read it only; a test that writes copies what it needs."""
    import production

    folder = tmp_path_factory.mktemp("production")
    with pytest.MonkeyPatch.context() as mp:
        point_settings_at(mp, folder)
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(trained[2]))
        get_settings.cache_clear()
        load_raw_csv(RAW_CSV)
        production.score_production(progress=False)
    get_settings.cache_clear()
    return folder
