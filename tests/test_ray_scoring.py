"""ray_scoring: the same score function on a real local Ray cluster (Ray Data actors).

One local cluster is started for the module (``ray_scoring.init_ray``, the set-up the CLI
uses) and shut down at the end. The model is a real artifact trained and saved by
``model_training_evaluation.run`` into the module's own artifacts folder, on 10 % of the
real data with LightGBM as the only candidate (the other candidates are not needed here,
and sparing them keeps the module's time for Ray). The input is four real production days,
in date order but each day's rows shuffled. LightGBM's own predict is used on both sides
(``MLOPS_FAST_PREDICT=0``, set on the driver: it reaches the actors with the other
``MLOPS_*`` settings); the compiled fast path has its own parity tests.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import polars as pl
import pytest
import ray
from polars.testing import assert_frame_equal

import file_scoring as fs
import ft_engineering as fe
import lake
import model_deploy as md
import model_training_evaluation as mte
import production
import ray_scoring
import scoring as sc
from data_contract import SCORING_INPUT_COLUMNS, ContractViolation
from settings import get_settings

pytestmark = [
    pytest.mark.slow,
    # Ray Data's own DataContext copies touch its deprecated attributes
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),
]

DAYS = [date(2013, 9, d) for d in (3, 4, 5, 6)]
BATCH_ROWS = 1_500  # about one day a chunk: several chunks, two actors busy


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
    shuffled = days.sample(fraction=1.0, shuffle=True, seed=13).sort("day", maintain_order=True)
    shuffled.write_parquet(folder / "flights.parquet")
    space = {
        "folder": folder,
        "artifacts": model_folder,
        "input": folder / "flights.parquet",
        "rows": shuffled,
    }
    # the outcomes of the eight days before the first scored day, and of the scored days
    # themselves, in the lake: every engine builds the same outcome history from them
    known = raw_frame.filter(pl.date("year", "month", "day").is_between(date(2013, 8, 26), DAYS[-1]))
    with pytest.MonkeyPatch.context() as mp:
        _point_settings(mp, space)
        production.write_actuals(known, "actuals-history")
    get_settings.cache_clear()
    return space


def _point_settings(mp: pytest.MonkeyPatch, workspace: dict) -> None:
    mp.setenv("MLOPS_ARTIFACTS_DIR", str(workspace["artifacts"]))
    mp.setenv("MLOPS_LAKE_DIR", str(workspace["folder"] / "lake"))
    mp.setenv("MLOPS_FAST_PREDICT", "0")
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def first_run(workspace, ray_cluster) -> fs.ScoreFileResult:
    """The file scored once on Ray, storing every row in the module's lake."""
    with pytest.MonkeyPatch.context() as mp:
        _point_settings(mp, workspace)
        result = ray_scoring.score_file_ray(
            workspace["input"], workspace["folder"] / "ray.parquet", batch_rows=BATCH_ROWS
        )
    get_settings.cache_clear()
    return result


@pytest.fixture
def shared_settings(workspace, monkeypatch):
    """This test's settings pointed at the module's artifact and lake."""
    _point_settings(monkeypatch, workspace)
    yield get_settings()
    get_settings.cache_clear()


def _stored() -> pl.DataFrame:
    return lake.read_dataset(sc.SCORED_DATASET).collect()


def test_ray_stores_every_row_once_and_answers_in_input_order(first_run, workspace, shared_settings) -> None:
    rows = workspace["rows"]
    assert (first_run.rows, first_run.new_rows, first_run.already_stored) == (rows.height, rows.height, 0)
    assert first_run.chunks >= 3 and first_run.new_batches == first_run.chunks
    output = pl.read_parquet(first_run.output)
    assert output.columns == sc.RESPONSE_COLUMNS
    assert output.select(sc.KEY_COLUMNS).equals(rows.select(sc.KEY_COLUMNS))  # the input's order
    stored = _stored()
    assert stored.height == rows.height and stored.select(sc.KEY_COLUMNS).is_unique().all()


def test_ray_and_the_local_engine_score_alike_and_share_one_identity(
    first_run, workspace, shared_settings
) -> None:
    """The local engine on the file Ray stored, with another chunk size: identical scores,
    nothing stored again (engine switch and chunk-size change at once)."""
    local = fs.score_file(
        workspace["input"], workspace["folder"] / "local.parquet", scorer=sc.Scorer.load(fast=False),
        batch_rows=BATCH_ROWS * 3, progress=False,
    )  # fmt: skip
    assert (local.new_rows, local.already_stored) == (0, workspace["rows"].height)
    assert_frame_equal(
        pl.read_parquet(first_run.output), pl.read_parquet(local.output), check_exact=False, rel_tol=0,
        abs_tol=1e-12,
    )  # fmt: skip
    stored = _stored()
    assert stored.height == workspace["rows"].height
    # the outcome history was there for both engines (complete for every scored day)
    assert stored["history_days"].min() == 8 and stored["hist_d1_all_rate"].null_count() == 0


def test_cli_rerun_on_the_running_cluster_adds_nothing(first_run, workspace, shared_settings, capsys) -> None:
    batches = lake.batch_ids(sc.SCORED_DATASET)
    output = workspace["folder"] / "cli.parquet"
    # Ray is initialised by this module, so the CLI's score_file_ray reuses that cluster
    # (no address needed) and must leave it running.
    md.main(["score", str(workspace["input"]), str(output), "--engine", "ray", "--batch-rows", "2500"])
    assert (
        f"0 new rows stored in 0 batch(es), {workspace['rows'].height:,} already stored"
        in capsys.readouterr().out
    )
    assert ray.is_initialized()
    assert lake.batch_ids(sc.SCORED_DATASET) == batches
    assert pl.read_parquet(output).equals(pl.read_parquet(first_run.output))


def test_csv_input_scores_as_its_parquet_twin(first_run, workspace, shared_settings, tmp_path: Path) -> None:
    csv = tmp_path / "flights.csv"
    workspace["rows"].write_csv(csv, null_value="NA", datetime_format="%Y-%m-%dT%H:%M:%SZ")  # as the extract
    result = ray_scoring.score_file_ray(csv, tmp_path / "from_csv.parquet", batch_rows=BATCH_ROWS)
    assert (result.new_rows, result.already_stored) == (0, workspace["rows"].height)
    assert pl.read_parquet(result.output).equals(pl.read_parquet(first_run.output))
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # the converted file is gone


def test_an_input_without_a_contract_column_is_refused_before_any_work(workspace, shared_settings) -> None:
    bad = workspace["folder"] / "no_distance.parquet"
    workspace["rows"].drop("distance").write_parquet(bad)
    before = lake.batch_ids(sc.SCORED_DATASET)
    with pytest.raises(ContractViolation, match="distance"):
        ray_scoring.score_file_ray(bad, workspace["folder"] / "never.parquet")
    assert not (workspace["folder"] / "never.parquet").exists()
    assert lake.batch_ids(sc.SCORED_DATASET) == before


def test_ray_scores_a_random_subset_in_its_warehouse_day(
    workspace, shared_settings, raw_frame, tmp_path: Path, monkeypatch
) -> None:
    """The day context reaches the actors: a random subset of the days, scored on Ray, scores
    as those days scored whole by the local engine (docs/scoring.md, "The day context")."""
    import day_context
    from data_contract import validate_scoring_input

    days = workspace["rows"]
    context = tmp_path / "day_context.parquet"
    day_context.write_context(validate_scoring_input(days), context, "test")
    monkeypatch.setenv("MLOPS_DAY_CONTEXT_PATH", str(context))
    get_settings.cache_clear()
    subset = days.sample(300, seed=21)
    subset.write_parquet(tmp_path / "subset.parquet")
    result = ray_scoring.score_file_ray(
        tmp_path / "subset.parquet", tmp_path / "out.parquet", batch_rows=100, persist=False
    )
    assert result.rows == 300
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert out[fe.CONTEXT].unique().to_list() == ["warehouse"]
    whole = sc.score(days, sc.Scorer.load(fast=False))
    both = out.join(whole.select(*sc.KEY_COLUMNS, "score"), on=sc.KEY_COLUMNS, suffix="_whole")
    assert both.height == 300
    assert (both["score"] - both["score_whole"]).abs().max() < 1e-9
