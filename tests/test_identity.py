"""Exactly once, by content: what a user changes between two runs must not store rows twice.

Each test varies one thing a user would vary (chunk size, file name, row order, format,
an overlapping file, the model, a request name) and then checks the invariant of
docs/scoring.md: the scored table never holds the same rows (same flight, same inputs,
same day context) twice for one model version, and every output file holds exactly its input's rows, in
order, with the model's scores. The engine switch (local and Ray) is in test_ray_scoring.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import file_scoring as fs
import lake
import scoring as sc
from conftest import SRC_DIR
from data_contract import SCORING_INPUT_COLUMNS, ContractViolation, validate_scoring_input
from model_artifact import CARD_FILE, MODEL_FILE, PROFILE_FILE, models_dir, save_artifact
from settings import get_settings
from warehouse import connect


@pytest.fixture
def scorer(use_trained) -> sc.Scorer:
    return sc.Scorer.load()


@pytest.fixture(scope="module")
def october(raw_frame) -> pl.DataFrame:
    """Five real production days (Oct 1-5), date-sorted, scoring-input columns only."""
    return raw_frame.filter(pl.col("month") == 10, pl.col("day") <= 5).select(SCORING_INPUT_COLUMNS)


def _stored() -> pl.DataFrame:
    return lake.read_dataset(sc.SCORED_DATASET).collect()


def _assert_no_row_twice() -> None:
    stored = _stored()
    assert (
        stored.select(*sc.KEY_COLUMNS, sc.DIGEST_COLUMN, sc.CONTEXT_DIGEST, "model_version").is_unique().all()
    )


def _score(source: Path, out: Path, scorer: sc.Scorer, **options) -> fs.ScoreFileResult:
    result = fs.score_file(source, out, scorer=scorer, progress=False, **options)
    _assert_no_row_twice()
    return result


def _assert_output_is_the_input(out: Path, rows: pl.DataFrame) -> pl.DataFrame:
    frame = pl.read_parquet(out)
    assert frame.select(sc.KEY_COLUMNS).equals(rows.select(sc.KEY_COLUMNS))
    return frame


# --------------------------------------------------------------------------- the row digest


def test_the_digest_is_the_normalised_content_not_its_encoding(october) -> None:
    rows = validate_scoring_input(october)
    digests = sc.row_digests(rows)
    assert np.unique(digests).size == rows.height  # distinct flights, distinct digests
    # the same rows typed otherwise (Int64 instead of Int32, Float32 weather) normalise alike
    wider = october.with_columns(pl.col("distance").cast(pl.Int64), pl.col("flight").cast(pl.Int64))
    assert np.array_equal(sc.row_digests(validate_scoring_input(wider)), digests)
    # -0.0 is 0.0; a null is not a zero
    zero = rows.head(1).with_columns(pl.lit(0.0).alias("precip"))
    assert sc.row_digests(zero) == sc.row_digests(zero.with_columns(pl.lit(-0.0).alias("precip")))
    assert sc.row_digests(zero) != sc.row_digests(zero.with_columns(pl.lit(None, pl.Float64).alias("precip")))


def _other_value(column: pl.Series) -> pl.Series:
    """The column with its first value replaced by another value of the same type."""
    if column.dtype == pl.String:
        first = pl.lit((column[0] or "") + "X")
    elif column.dtype.is_temporal():
        first = pl.lit(column[0]) + pl.duration(hours=1)
    else:
        first = pl.lit((column[0] or 0) + 1).cast(column.dtype)
    changed = pl.when(pl.int_range(pl.len()) == 0).then(first).otherwise(pl.col(column.name))
    return column.to_frame().select(changed.alias(column.name)).to_series()


@pytest.mark.parametrize("column", SCORING_INPUT_COLUMNS)
def test_changing_any_one_input_changes_that_rows_digest_only(october, column: str) -> None:
    rows = validate_scoring_input(october).head(50)
    other = rows.with_columns(_other_value(rows[column]))
    before, after = sc.row_digests(rows), sc.row_digests(other)
    assert before[0] != after[0]
    assert np.array_equal(before[1:], after[1:])


def test_the_content_digest_ignores_order_and_chunking(october) -> None:
    digests = sc.row_digests(validate_scoring_input(october))
    whole = sc.ContentDigest().add(digests).hexdigest()
    shuffled = np.random.default_rng(3).permutation(digests)
    in_parts = sc.ContentDigest().add(shuffled[:1000]).merge(sc.ContentDigest().add(shuffled[1000:]))
    assert in_parts.hexdigest() == whole
    assert sc.ContentDigest().add(digests[1:]).hexdigest() != whole


# --------------------------------------------------------------------------- what a user varies


def test_chunk_size_file_name_and_row_order_store_nothing_new(scorer, october, tmp_path) -> None:
    source = tmp_path / "october.parquet"
    october.write_parquet(source)
    first = _score(source, tmp_path / "a.parquet", scorer)
    assert (first.new_rows, first.already_stored) == (october.height, 0)
    reference = _assert_output_is_the_input(tmp_path / "a.parquet", october)

    # another chunk size (whole dates still), another file name: nothing new, same scores
    renamed = tmp_path / "renamed.parquet"
    source.rename(renamed)
    again = _score(renamed, tmp_path / "b.parquet", scorer, batch_rows=700)
    assert again.chunks > first.chunks
    assert (again.new_rows, again.already_stored) == (0, october.height)
    assert _assert_output_is_the_input(tmp_path / "b.parquet", october).equals(reference)

    # each day's rows shuffled (dates still whole): nothing new, each row keeps its score
    shuffled = october.sample(fraction=1.0, shuffle=True, seed=5).sort("day", maintain_order=True)
    shuffled.write_parquet(tmp_path / "shuffled.parquet")
    third = _score(tmp_path / "shuffled.parquet", tmp_path / "c.parquet", scorer)
    assert (third.new_rows, third.already_stored) == (0, october.height)
    out = _assert_output_is_the_input(tmp_path / "c.parquet", shuffled)
    assert out.sort(sc.KEY_COLUMNS).equals(reference.sort(sc.KEY_COLUMNS))
    assert _stored().height == october.height


def test_unsorted_rows_are_answered_in_their_order_and_stored_once(scorer, october, tmp_path) -> None:
    shuffled = october.sample(fraction=1.0, shuffle=True, seed=11)
    shuffled.write_parquet(tmp_path / "shuffled.parquet")
    result = _score(tmp_path / "shuffled.parquet", tmp_path / "out.parquet", scorer, batch_rows=2_000)
    assert result.split_dates > 0  # reported: dates spread over chunks
    _assert_output_is_the_input(tmp_path / "out.parquet", shuffled)
    assert result.new_rows == _stored().height == october.height


def test_csv_and_parquet_of_the_same_rows_are_one_content(scorer, october, tmp_path) -> None:
    october.write_parquet(tmp_path / "in.parquet")
    october.write_csv(tmp_path / "in.csv", null_value="NA", datetime_format="%Y-%m-%dT%H:%M:%SZ")
    _score(tmp_path / "in.parquet", tmp_path / "a.parquet", scorer)
    from_csv = _score(tmp_path / "in.csv", tmp_path / "b.parquet", scorer)
    assert (from_csv.new_rows, from_csv.already_stored) == (0, october.height)
    assert pl.read_parquet(tmp_path / "a.parquet").equals(pl.read_parquet(tmp_path / "b.parquet"))


def test_an_overlapping_file_stores_only_what_is_new(scorer, october, tmp_path) -> None:
    first_days = october.filter(pl.col("day") <= 3)
    later_days = october.filter(pl.col("day") >= 2)  # days 2 and 3 overlap
    first_days.write_parquet(tmp_path / "first.parquet")
    later_days.write_parquet(tmp_path / "later.parquet")
    _score(tmp_path / "first.parquet", tmp_path / "a.parquet", scorer)
    overlap = _score(tmp_path / "later.parquet", tmp_path / "b.parquet", scorer)
    new_days = october.filter(pl.col("day") >= 4).height
    assert (overlap.new_rows, overlap.already_stored) == (new_days, later_days.height - new_days)
    _assert_output_is_the_input(tmp_path / "b.parquet", later_days)
    assert _stored().height == october.height


def test_a_changed_flight_is_a_new_score_and_the_latest_view_shows_it(scorer, october, tmp_path) -> None:
    day = october.filter(pl.col("day") == 1)
    _, first = sc.score_and_persist(day, scorer)
    # a new forecast for one flight (same key, new inputs): a new row, not a duplicate; the
    # day's other flights in the batch are new scores too (their day context changed)
    moved = day.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(pl.col("temp") + 1).otherwise(pl.col("temp")).alias("temp")
    )
    _, second = sc.score_and_persist(moved, scorer)
    assert (first.new_rows, second.new_rows, second.already_stored) == (day.height, day.height, 0)
    # that flight alone, as first sent: its day (the batch) differs from both: new again
    _, alone = sc.score_and_persist(moved.head(1), scorer)
    assert alone.new_rows == 1
    sc.register_views()
    with connect(read_only=True) as con:
        all_rows, latest, flights = con.sql(
            f"SELECT (SELECT count(*) FROM scored), (SELECT count(*) FROM {sc.LATEST_VIEW}), "
            f"(SELECT count(DISTINCT (year, month, day, carrier, flight, origin)) FROM {sc.LATEST_VIEW})"
        ).fetchall()[0]
    assert (all_rows, latest, flights) == (2 * day.height + 1, day.height, day.height)


def test_a_new_model_version_is_a_visible_rescore(trained, october, tmp_path, monkeypatch) -> None:
    # a copy of the session's artifacts, where a second model version can be published
    shutil.copytree(trained[2], tmp_path / "artifacts")
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    get_settings.cache_clear()
    day = october.filter(pl.col("day") == 2)
    first = sc.Scorer.load()
    sc.score_and_persist(day, first)
    # the same model file published under another version name: another model to the table
    folder = models_dir() / first.version
    save_artifact(
        "retrained-copy",
        (folder / MODEL_FILE).read_text(),
        {**json.loads((folder / CARD_FILE).read_text()), "version": "retrained-copy"},
        json.loads((folder / PROFILE_FILE).read_text()),
    )
    second = sc.Scorer.load("retrained-copy")
    _, stored = sc.score_and_persist(day, second)
    assert stored.new_rows == day.height
    _, again = sc.score_and_persist(day, second)
    assert again.new_rows == 0
    per_version = _stored().group_by("model_version").len().sort("model_version")
    assert per_version["len"].to_list() == [day.height, day.height]
    _assert_no_row_twice()


def test_a_flight_sent_twice_in_one_batch_is_refused_and_nothing_is_stored(scorer, october) -> None:
    day = october.filter(pl.col("day") == 3)
    twice = pl.concat([day, day.head(20)])
    with pytest.raises(ContractViolation, match="unique"):
        sc.score_and_persist(twice, scorer)
    assert not lake.dataset_dir(sc.SCORED_DATASET).exists() or _stored().is_empty()


# --------------------------------------------------------------------------- request names


def test_a_request_name_binds_to_its_rows(scorer, october, tmp_path) -> None:
    october.write_parquet(tmp_path / "in.parquet")
    october.sample(fraction=1.0, shuffle=True, seed=1).sort("day", maintain_order=True).write_parquet(
        tmp_path / "same_rows.parquet"
    )
    october.filter(pl.col("day") <= 2).write_parquet(tmp_path / "other_rows.parquet")
    _score(tmp_path / "in.parquet", tmp_path / "a.parquet", scorer, request_name="nightly-1")
    # a retry (other chunking, other order) under the same name is fine and adds nothing
    retry = _score(tmp_path / "same_rows.parquet", tmp_path / "b.parquet", scorer, request_name="nightly-1")
    assert retry.new_rows == 0
    with pytest.raises(sc.RequestConflict, match="'nightly-1' was already used for other rows"):
        _score(tmp_path / "other_rows.parquet", tmp_path / "c.parquet", scorer, request_name="nightly-1")
    assert not (tmp_path / "c.parquet").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, cwd=SRC_DIR
    )


def test_a_reused_name_and_an_old_lake_are_one_line_errors(use_trained, october, tmp_path) -> None:
    october.filter(pl.col("day") == 1).write_parquet(tmp_path / "one.parquet")
    october.filter(pl.col("day") == 2).write_parquet(tmp_path / "two.parquet")
    ok = _cli(
        "model_deploy.py",
        "score",
        str(tmp_path / "one.parquet"),
        str(tmp_path / "a.parquet"),
        "--batch-id",
        "X",
    )
    assert ok.returncode == 0, ok.stderr
    reused = _cli(
        "model_deploy.py",
        "score",
        str(tmp_path / "two.parquet"),
        str(tmp_path / "b.parquet"),
        "--batch-id",
        "X",
    )
    assert reused.returncode == 2 and "Traceback" not in reused.stderr
    assert "request name 'X' was already used for other rows" in reused.stderr
    # a scored table written by an older schema: the write is refused in one line
    folder = lake.dataset_dir(sc.SCORED_DATASET)
    for path in folder.glob("*.parquet"):
        pl.read_parquet(path).drop(sc.DIGEST_COLUMN).write_parquet(folder / "a-old-batch.parquet")
    old = _cli("model_deploy.py", "score", str(tmp_path / "two.parquet"), str(tmp_path / "c.parquet"))
    assert old.returncode == 2 and "Traceback" not in old.stderr, old.stderr
    errors = [line for line in old.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "does not match the dataset's schema" in errors[0], old.stderr


def test_two_processes_under_one_name_with_other_rows_store_only_the_first(
    use_trained, october, tmp_path
) -> None:
    """Two scorers started together under one request name, with different rows: one wins,
    the other is refused before it stores anything (the name's lock spans check, score and
    binding). Without it both passed the check, both stored, and one was refused after."""
    files = []
    for day in (1, 2):
        october.filter(pl.col("day") == day).write_parquet(tmp_path / f"day{day}.parquet")
        files.append(tmp_path / f"day{day}.parquet")
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                "model_deploy.py",
                "score",
                str(f),
                str(tmp_path / f"{f.stem}.out.parquet"),
                "--batch-id",
                "same-name",
            ],
            env=env,
            cwd=SRC_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for f in files
    ]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert "request name 'same-name' was already used for other rows" in loser
    winner = files[[code for code, _ in results].index(0)]
    stored = _stored()
    assert stored.height == pl.read_parquet(winner).height
    assert (
        stored.select(sc.KEY_COLUMNS)
        .sort(sc.KEY_COLUMNS)
        .equals(pl.read_parquet(winner).select(sc.KEY_COLUMNS).sort(sc.KEY_COLUMNS))
    )
