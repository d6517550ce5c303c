"""The command lines as a new user meets them: --help everywhere, one-line errors, CSVs as tools write them."""

from __future__ import annotations

import os
import subprocess
import sys

import polars as pl
import pytest

from conftest import SRC_DIR
from data_contract import SCORING_INPUT_COLUMNS

ENTRY_POINTS = [
    "pipeline.py",
    "model_training_evaluation.py",
    "ft_engineering.py",
    "model_deploy.py",
    "notebook_runner.py",
    "build_extract.py",
    "model_monitoring.py",
]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=SRC_DIR
    )


@pytest.mark.parametrize("script", ENTRY_POINTS)
def test_every_entry_point_answers_help_and_does_nothing_else(script, isolated_settings) -> None:
    run = run_cli(script, "--help")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage:") and "Traceback" not in run.stderr
    for path in (
        isolated_settings.warehouse_path,
        isolated_settings.lake_dir,
        isolated_settings.artifacts_dir,
    ):
        assert not path.exists(), f"{script} --help created {path}"


@pytest.fixture
def day(raw_frame) -> pl.DataFrame:
    return raw_frame.filter(pl.col("month") == 10, pl.col("day") == 1).select(SCORING_INPUT_COLUMNS)


def test_a_csv_written_by_pandas_scores_like_its_parquet_twin(use_trained, day, tmp_path) -> None:
    # pandas writes an integer column holding nulls as floats (1990.0): still integers
    day.to_pandas().to_csv(tmp_path / "pandas.csv", index=False)
    assert "1990.0" in (tmp_path / "pandas.csv").read_text() or ".0," in (tmp_path / "pandas.csv").read_text()
    day.write_parquet(tmp_path / "twin.parquet")
    for name in ("pandas.csv", "twin.parquet"):
        run = run_cli("model_deploy.py", "score", str(tmp_path / name), str(tmp_path / f"{name}.out.parquet"))
        assert run.returncode == 0, run.stderr
    csv_scores = pl.read_parquet(tmp_path / "pandas.csv.out.parquet")
    assert csv_scores.equals(pl.read_parquet(tmp_path / "twin.parquet.out.parquet"))


def test_a_non_integral_value_in_an_integer_column_is_one_clear_line(use_trained, day, tmp_path) -> None:
    frame = day.to_pandas()
    frame["plane_year"] = frame["plane_year"].astype("float64")
    frame.loc[frame.index[:3], "plane_year"] = 1990.5
    frame.to_csv(tmp_path / "fractional.csv", index=False)
    run = run_cli("model_deploy.py", "score", str(tmp_path / "fractional.csv"), str(tmp_path / "out.parquet"))
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "column 'plane_year' holds 3 value(s) that are not Int32" in run.stderr
    assert "1990.5" not in run.stderr and not (tmp_path / "out.parquet").exists()


def test_a_semicolon_separated_csv_is_one_line_that_says_so(use_trained, day, tmp_path) -> None:
    day.write_csv(tmp_path / "semicolon.csv", separator=";", null_value="NA")
    run = run_cli("model_deploy.py", "score", str(tmp_path / "semicolon.csv"), str(tmp_path / "out.parquet"))
    errors = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.returncode == 2 and len(errors) == 1, run.stderr
    assert "the header parses as a single column" in errors[0] and "';'-separated" in errors[0]


def test_a_missing_input_is_refused_before_the_model_loads(isolated_settings, tmp_path) -> None:
    # no model is trained in this test's settings: the input check must come first
    run = run_cli(
        "model_deploy.py", "score", str(tmp_path / "missing.parquet"), str(tmp_path / "out.parquet")
    )
    assert run.returncode == 2 and "missing.parquet: no such file" in run.stderr
    assert "no trained model" not in run.stderr
