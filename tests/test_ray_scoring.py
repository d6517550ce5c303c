"""ray_scoring: the same score function on a real local Ray cluster (Ray Data actors).

One local cluster is started for the module (``ray_scoring.init_ray``, the set-up the CLI
uses) and shut down at the end. The model is a real artifact trained and saved by
``model_training_evaluation.run`` into the module's own artifacts folder, on 10 % of the
real data with LightGBM as the only candidate (the other candidates are not needed here,
and sparing them keeps the module's time for Ray). The input is four real production days
with their rows shuffled, so every day's flights are spread over the whole file and only
the grouping by flight date can make the features exact. LightGBM's own predict is used on
both sides (``MLOPS_FAST_PREDICT=0``, set on the driver: it reaches the actors with the
other ``MLOPS_*`` settings); the compiled fast path has its own parity tests.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
import ray
from polars.testing import assert_frame_equal

import ft_engineering as fe
import lake
import model_deploy as md
import model_training_evaluation as mte
import ray_scoring
from data_contract import SCORING_INPUT_COLUMNS, ContractViolation, validate_scoring_input
from settings import get_settings
from warehouse import file_sha256

pytestmark = [
    pytest.mark.slow,
    # Ray Data's own DataContext copies touch its deprecated attributes
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]

DAYS = [date(2013, 9, d) for d in (3, 4, 5, 6)]


@pytest.fixture(scope="module")
def ray_cluster():
    started = ray_scoring.init_ray()
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_folder(real_datasets, tmp_path_factory) -> Path:
    """A real artifact (LightGBM, 10 % of each split, one grid point) in a module folder."""
    folder = tmp_path_factory.mktemp("ray_model") / "artifacts"
    sample = fe.Datasets(
        *(s.sample(fraction=0.1, seed=7).sort("flight_date") for s in real_datasets.splits().values()),
        real_datasets.state,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(folder))
        mp.setattr(mte, "CANDIDATES", ("lightgbm",))
        get_settings.cache_clear()
        mte.run(sample, [{"n_estimators": 40, "num_leaves": 15}])
    get_settings.cache_clear()
    return folder


@pytest.fixture(scope="module")
def workspace(model_folder, raw_frame, tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("ray_scoring")
    days = raw_frame.filter(pl.date("year", "month", "day").is_in(DAYS)).select(SCORING_INPUT_COLUMNS)
    shuffled = days.sample(fraction=1.0, shuffle=True, seed=13)
    assert not shuffled["day"].is_sorted()  # every day's flights are spread over the file
    shuffled.write_parquet(folder / "flights.parquet")
    return {
        "folder": folder,
        "artifacts": model_folder,
        "input": folder / "flights.parquet",
        "rows": shuffled,
    }


def _point_settings(mp: pytest.MonkeyPatch, workspace: dict) -> None:
    mp.setenv("MLOPS_ARTIFACTS_DIR", str(workspace["artifacts"]))
    mp.setenv("MLOPS_LAKE_DIR", str(workspace["folder"] / "lake"))
    mp.setenv("MLOPS_FAST_PREDICT", "0")
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def first_run(workspace, ray_cluster) -> md.ScoreFileResult:
    """The shuffled file scored once on Ray, persisting every day to the module's lake."""
    with pytest.MonkeyPatch.context() as mp:
        _point_settings(mp, workspace)
        result = ray_scoring.score_file_ray(workspace["input"], workspace["folder"] / "ray.parquet")
    get_settings.cache_clear()
    return result


@pytest.fixture
def shared_settings(workspace, monkeypatch):
    """This test's settings pointed at the module's artifact and lake."""
    _point_settings(monkeypatch, workspace)
    yield get_settings()
    get_settings.cache_clear()


def _by_key(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.sort(md.KEY_COLUMNS)


def test_each_flight_date_is_one_batch_scored_and_stored_once(first_run, workspace, shared_settings) -> None:
    rows = workspace["rows"]
    prefix = f"flights-{file_sha256(workspace['input'])[:12]}"
    assert (first_run.rows, first_run.chunks, first_run.persisted_chunks) == (rows.height, 4, 4)
    assert first_run.split_dates == 0 and first_run.batch_id_prefix == prefix
    output = pl.read_parquet(first_run.output)
    assert output.columns == md.RESPONSE_COLUMNS
    assert _by_key(output.select(md.KEY_COLUMNS)).equals(_by_key(rows.select(md.KEY_COLUMNS)))
    # one lake batch per day, named by the date, holding exactly that day's flights
    assert lake.batch_ids(md.SCORED_DATASET) == [f"{prefix}-{day}" for day in DAYS]
    for day in DAYS:
        stored = lake.read_dataset(md.SCORED_DATASET, only=[f"{prefix}-{day}"]).collect()
        assert stored.height == rows.filter(pl.col("day") == day.day).height
        assert stored["flight_date"].unique().to_list() == [day]


def test_ray_scores_equal_whole_day_scores_in_process(first_run, workspace, shared_settings) -> None:
    rows = workspace["rows"]
    scorer = md.Scorer.load(fast=False)
    whole_days = pl.concat([md.score(rows.filter(pl.col("day") == d.day), scorer) for d in DAYS])
    output = pl.read_parquet(first_run.output)
    assert output.height == whole_days.height
    assert_frame_equal(_by_key(output), _by_key(whole_days), check_exact=False, rel_tol=0, abs_tol=1e-12)
    # What makes it exact: the same rows scored in file-order chunks (what map_batches would
    # hand an actor) see partial days, and their congestion features, hence scores, differ.
    chunks = pl.concat([md.score(chunk, scorer) for chunk in rows.iter_slices(1_000)])
    assert (_by_key(chunks)["score"] - _by_key(output)["score"]).abs().max() > 1e-6


def test_ray_equals_the_local_file_scorer_on_date_sorted_input(first_run, workspace, shared_settings) -> None:
    by_date = workspace["folder"] / "flights_by_date.parquet"
    workspace["rows"].sort("year", "month", "day").write_parquet(by_date)
    local = md.score_file(
        by_date, workspace["folder"] / "local.parquet", scorer=md.Scorer.load(fast=False),
        persist=False, progress=False,
    )  # fmt: skip
    assert local.split_dates == 0
    assert_frame_equal(
        _by_key(pl.read_parquet(first_run.output)),
        _by_key(pl.read_parquet(local.output)),
        check_exact=False,
        rel_tol=0,
        abs_tol=1e-12,
    )


def test_cli_rerun_on_the_running_cluster_adds_nothing(first_run, workspace, shared_settings, capsys) -> None:
    stored_rows = lake.read_dataset(md.SCORED_DATASET).select(pl.len()).collect().item()
    output = workspace["folder"] / "cli.parquet"
    # Ray is initialised by this module, so the CLI's score_file_ray reuses that cluster
    # (no address needed) and must leave it running.
    md.main(["score", str(workspace["input"]), str(output), "--engine", "ray"])
    assert "in 4 chunks (0 newly persisted)" in capsys.readouterr().out
    assert ray.is_initialized()
    assert lake.batch_ids(md.SCORED_DATASET) == [f"{first_run.batch_id_prefix}-{day}" for day in DAYS]
    assert lake.read_dataset(md.SCORED_DATASET).select(pl.len()).collect().item() == stored_rows
    assert _by_key(pl.read_parquet(output)).equals(_by_key(pl.read_parquet(first_run.output)))


def test_csv_input_is_read_with_the_contract_types(workspace, ray_cluster, tmp_path: Path) -> None:
    rows = workspace["rows"]
    csv = tmp_path / "flights.csv"
    rows.write_csv(csv, null_value="NA", datetime_format="%Y-%m-%dT%H:%M:%SZ")  # as the raw extract
    assert ray_scoring.input_columns(csv) == SCORING_INPUT_COLUMNS
    dataset = ray_scoring.read_input(csv, SCORING_INPUT_COLUMNS)
    read = pl.from_arrow(pa.concat_tables(dataset.iter_batches(batch_format="pyarrow", batch_size=None)))
    assert _by_key(validate_scoring_input(read)).equals(_by_key(validate_scoring_input(rows)))


def test_an_input_without_a_contract_column_is_refused_before_any_work(workspace, shared_settings) -> None:
    bad = workspace["folder"] / "no_distance.parquet"
    workspace["rows"].drop("distance").write_parquet(bad)
    with pytest.raises(ContractViolation, match="distance"):
        ray_scoring.score_file_ray(bad, workspace["folder"] / "never.parquet")
    assert not (workspace["folder"] / "never.parquet").exists()
    assert not any(batch.startswith("no_distance") for batch in lake.batch_ids(md.SCORED_DATASET))
