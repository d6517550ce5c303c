"""The scoring core and the file scorer: the score function, parity across paths, persistence, the CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest

import file_scoring as fs
import ft_engineering as fe
import lake
import production as prod
import scoring as sc
from conftest import RAW_CSV, SRC_DIR
from data_contract import SCORING_INPUT_COLUMNS, ContractViolation
from settings import get_settings
from warehouse import connect, load_raw_csv


@pytest.fixture
def scorer(use_trained) -> sc.Scorer:
    return sc.Scorer.load()


@pytest.fixture(scope="module")
def production(production_lake):
    """The main job's scoring stage (the session's production lake), plus a rerun."""
    with production_lake.settings():
        rerun = prod.score_production(sc.Scorer.load(), progress=False)
        with connect(read_only=True) as con:
            scored = con.sql("SELECT * FROM scored").pl()
            joined = con.sql(
                "SELECT count(*), sum(a.is_disrupted), count(DISTINCT s.batch_id) FROM scored s "
                "JOIN actuals a USING (year, month, day, carrier, flight, origin)"
            ).fetchall()[0]
    return production_lake.first, rerun, scored, joined


def _days(raw: pl.DataFrame, month: int, days: range) -> pl.DataFrame:
    return raw.filter(pl.col("month") == month, pl.col("day").is_in(list(days))).select(SCORING_INPUT_COLUMNS)


def _decode_keys(frame: pl.DataFrame, state: fe.FeatureState) -> pl.DataFrame:
    """Training frames hold category codes; turn carrier/origin back into the caller's strings."""
    return frame.with_columns(
        pl.col(c).replace_strict(list(range(len(state.category_levels[c]))), state.category_levels[c])
        for c in ("carrier", "origin")
    )


def test_score_returns_keys_score_label_version_and_flags(scorer, raw_frame) -> None:
    batch = _days(raw_frame, 10, range(1, 2))
    out = sc.score(batch, scorer)
    assert out.columns == sc.RESPONSE_COLUMNS
    assert out.height == batch.height
    assert out.select(sc.KEY_COLUMNS).equals(batch.select(sc.KEY_COLUMNS))
    assert out["score"].is_between(0, 1).all()
    assert (out["label"] == (out["score"] >= scorer.artifact.threshold).cast(pl.Int8)).all()
    assert (out["model_version"] == scorer.artifact.version).all()


def test_unknown_categories_are_scored_and_flagged(scorer, raw_frame) -> None:
    # one new carrier for the whole day: its flights are renumbered so each key stays unique
    batch = _days(raw_frame, 10, range(1, 2)).with_columns(
        pl.lit("QQ").alias("carrier"),
        pl.lit("ZZZ").alias("dest"),
        (pl.int_range(pl.len(), dtype=pl.Int32) + 1).alias("flight"),
    )
    out = sc.score(batch, scorer)
    assert out["score"].is_not_null().all()
    assert out["unknown_carrier"].all() and out["unknown_dest"].all() and not out["unknown_origin"].any()


def test_leakage_columns_sent_by_a_client_change_nothing(scorer, raw_frame) -> None:
    day = raw_frame.filter(pl.col("month") == 10, pl.col("day") == 2)
    with_leakage = sc.score(day, scorer)  # the full raw rows, dep_time and arr_delay included
    without = sc.score(day.select(SCORING_INPUT_COLUMNS), scorer)
    assert with_leakage.equals(without)


def test_invalid_batch_is_refused_and_leaves_nothing(scorer, raw_frame) -> None:
    batch = _days(raw_frame, 10, range(3, 4)).with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("XXX")).otherwise(pl.col("origin")).alias("origin")
    )
    with pytest.raises(ContractViolation) as caught:
        sc.score_and_persist(batch, scorer)
    assert any(f.column == "origin" and f.failing_rows == 3 for f in caught.value.failures)
    assert lake.batch_ids(sc.SCORED_DATASET) == []


def test_the_same_rows_again_add_nothing(scorer, raw_frame) -> None:
    batch = _days(raw_frame, 10, range(4, 5))
    first, stored = sc.score_and_persist(batch, scorer)
    again, stored_again = sc.score_and_persist(batch, scorer)
    assert stored.new_rows == batch.height and stored_again == sc.Persisted(None, 0, batch.height)
    assert lake.read_dataset(sc.SCORED_DATASET).collect().height == batch.height
    assert again.select("score").equals(first.select("score"))


def test_parity_training_daily_batches_and_file_scorer(
    use_trained, production, production_lake, real_datasets, raw_frame, tmp_path, monkeypatch
) -> None:
    """Training-time predictions, the daily production batches and the streaming file
    scorer (multi-day chunks, reading the outcomes the production run published) give
    identical scores for every Sep-Dec flight."""
    first, _, scored, _ = production
    assert first == {"days": 122, "rows": 111_866, "new_rows": 111_866, "new_batches": 122}
    daily = scored.select(*sc.KEY_COLUMNS, pl.col("score").alias("daily"))
    # training frames hold category codes: decode carrier/origin (carriers too rare to be
    # levels decode to null and are compared through the other two paths only)
    state = real_datasets.state
    training_time = (
        real_datasets.test.with_columns(
            pl.col(c).replace_strict(list(range(len(state.category_levels[c]))), state.category_levels[c])
            for c in ("carrier", "origin")
        )
        .select(sc.KEY_COLUMNS)
        .with_columns(
            pl.Series("trained", use_trained.best.model.predict_proba(fe.to_matrix(real_datasets.test))[:, 1])
        )
    )
    unknown_carrier = real_datasets.test["carrier"].is_null().sum()

    source = tmp_path / "production.parquet"
    raw_frame.filter(pl.col("month") >= 9).select(SCORING_INPUT_COLUMNS).write_parquet(source)
    monkeypatch.setenv("MLOPS_ACTUALS_DIR", str(production_lake.folder / "lake" / "actuals"))
    get_settings.cache_clear()
    result = fs.score_file(source, tmp_path / "out.parquet", batch_rows=20_000, persist=False, progress=False)
    assert result.rows == 111_866 and result.chunks > 3 and result.split_dates == 0
    streamed = pl.read_parquet(tmp_path / "out.parquet").select(
        *sc.KEY_COLUMNS, pl.col("score").alias("streamed")
    )

    both = daily.join(streamed, on=sc.KEY_COLUMNS)
    assert both.height == 111_866
    assert (both["daily"] == both["streamed"]).all()
    joined = training_time.join(both, on=sc.KEY_COLUMNS)
    assert joined.height == 111_866 - unknown_carrier
    assert np.abs(joined["trained"] - joined["daily"]).max() <= 1e-12


def test_actuals_join_the_scored_table(production, raw_frame) -> None:
    first, rerun, _, (rows, disrupted, batches) = production
    assert rerun["new_batches"] == rerun["new_rows"] == 0  # a rerun adds nothing
    expected = fe.add_target(raw_frame.filter(pl.col("month") >= 9).lazy()).collect()
    assert rows == expected.height and batches == 122
    assert disrupted == expected[fe.TARGET].sum()


def test_csv_and_parquet_inputs_give_the_same_scores(scorer, raw_frame, tmp_path) -> None:
    days = _days(raw_frame, 11, range(1, 4))
    days.write_parquet(tmp_path / "in.parquet")
    lines = RAW_CSV.read_text().splitlines(keepends=True)
    header = lines[0]
    november = [ln for ln in lines[1:] if ln.startswith(("2013,11,1,", "2013,11,2,", "2013,11,3,"))]
    (tmp_path / "in.csv").write_text(header + "".join(november))
    a = fs.score_file(
        tmp_path / "in.parquet", tmp_path / "a.parquet", scorer=scorer, persist=False, progress=False
    )
    b = fs.score_file(
        tmp_path / "in.csv", tmp_path / "b.parquet", scorer=scorer, persist=False, progress=False
    )
    assert a.rows == b.rows == days.height
    left, right = pl.read_parquet(tmp_path / "a.parquet"), pl.read_parquet(tmp_path / "b.parquet")
    assert left.sort(sc.KEY_COLUMNS).equals(right.sort(sc.KEY_COLUMNS))


def test_a_failing_chunk_leaves_only_whole_batches_and_no_output(scorer, raw_frame, tmp_path) -> None:
    days = _days(raw_frame, 12, range(1, 4)).with_columns(
        pl.when(pl.col("day") == 3).then(-5).otherwise(pl.col("distance")).alias("distance")
    )
    days.write_parquet(tmp_path / "in.parquet")
    with pytest.raises(ContractViolation, match="distance"):
        fs.score_file(
            tmp_path / "in.parquet", tmp_path / "out.parquet", scorer=scorer, batch_rows=500, progress=False
        )
    assert not (tmp_path / "out.parquet").exists()
    stored = lake.read_dataset(sc.SCORED_DATASET).collect()
    per_day = stored.group_by("day").len().sort("day")
    expected = days.filter(pl.col("day") < 3).group_by("day").len().sort("day")
    assert per_day.equals(expected)  # days 1 and 2 whole, nothing of day 3


def test_a_killed_scorer_leaves_no_partial_batch(use_trained, raw_frame, tmp_path) -> None:
    days = raw_frame.filter(pl.col("month") == 9).select(SCORING_INPUT_COLUMNS)
    source = tmp_path / "september.parquet"
    days.write_parquet(source, row_group_size=2_000)
    code = (
        "import file_scoring as fs, pathlib; "
        f"fs.score_file(pathlib.Path({str(source)!r}), pathlib.Path({str(tmp_path / 'out.parquet')!r}), "
        "batch_rows=1000, progress=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    deadline = time.monotonic() + 60
    while len(lake.batch_ids(sc.SCORED_DATASET)) < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out.parquet").exists()
    partial = lake.read_dataset(sc.SCORED_DATASET).collect()
    assert 0 < partial.height < days.height, "kill the scorer while it is writing"
    dates_done = partial.select("month", "day").unique()
    assert partial.height == days.join(dates_done, on=["month", "day"]).height  # whole days only

    # the rerun scores what is missing and adds nothing twice
    done_before = len(lake.batch_ids(sc.SCORED_DATASET))
    result = fs.score_file(source, tmp_path / "out.parquet", batch_rows=1000, progress=False)
    final = lake.read_dataset(sc.SCORED_DATASET).collect()
    assert final.height == days.height == result.rows
    assert final.select(sc.KEY_COLUMNS).is_unique().all()
    assert result.new_batches == result.chunks - done_before
    assert result.new_rows + result.already_stored == days.height == result.new_rows + partial.height


def test_readers_query_the_scored_table_while_a_writer_appends(use_trained, raw_frame) -> None:
    load_raw_csv(RAW_CSV)
    scorer = sc.Scorer.load()
    first = _days(raw_frame, 9, range(1, 2))
    sc.score_and_persist(first, scorer)
    sc.register_views()
    flights_per_day = raw_frame.filter(pl.col("month") >= 9).group_by("month", "day").len()

    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    writer = subprocess.Popen(
        [sys.executable, "-c", "import production; production.score_production(progress=False)"], env=env
    )
    observed = []
    with connect(read_only=True) as con:
        while writer.poll() is None:
            per_batch = con.sql(
                "SELECT month, day, count(*) AS n FROM scored WHERE (month, day) <> (9, 1) GROUP BY 1, 2"
            ).pl()
            observed.append(per_batch.height)
            whole = per_batch.join(flights_per_day, on=["month", "day"])
            assert (whole["n"] == whole["len"]).all(), "a reader saw part of a batch"
            time.sleep(0.02)
    assert writer.returncode == 0
    assert len(observed) > 5 and observed[-1] > observed[0], "the reader should see batches arrive"


def test_a_model_trained_on_another_feature_definition_is_refused(use_trained, monkeypatch) -> None:
    from model_artifact import ArtifactError

    monkeypatch.setattr(fe, "FEATURE_VERSION", fe.FEATURE_VERSION + 1)
    with pytest.raises(ArtifactError, match="retrain"):
        sc.Scorer.load()


def test_an_empty_input_gets_a_typed_empty_output(scorer, tmp_path) -> None:
    from data_contract import CONTRACT_DTYPES

    pl.DataFrame(schema={c: CONTRACT_DTYPES[c] for c in SCORING_INPUT_COLUMNS}).write_parquet(
        tmp_path / "in.parquet"
    )
    result = fs.score_file(tmp_path / "in.parquet", tmp_path / "out.parquet", scorer=scorer, progress=False)
    out = pl.read_parquet(tmp_path / "out.parquet")
    assert result.rows == 0 and out.height == 0 and out.columns == sc.RESPONSE_COLUMNS
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --------------------------------------------------------------------------- bad files, clear errors


def _score_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    return subprocess.run(
        [sys.executable, str(SRC_DIR / "model_deploy.py"), "score", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_impossible_and_missing_dates_reach_the_contract(scorer, raw_frame, tmp_path) -> None:
    """The chunker cuts on year/month/day before validation: a month 13 or a null day must
    come out as the contract's error, not as a crash of the date arithmetic."""
    days = _days(raw_frame, 10, range(1, 3))
    broken = days.with_columns(
        pl.when(pl.int_range(pl.len()) < 3).then(13).otherwise(pl.col("month")).alias("month"),
        pl.when(pl.int_range(pl.len()).is_between(3, 4)).then(None).otherwise(pl.col("day")).alias("day"),
    )
    broken.write_parquet(tmp_path / "in.parquet")
    with pytest.raises(ContractViolation) as caught:
        fs.score_file(tmp_path / "in.parquet", tmp_path / "out.parquet", scorer=scorer, progress=False)
    found = {(f.column, f.rule, f.failing_rows) for f in caught.value.failures}
    assert ("month", "in_range(1, 12)", 3) in found and ("day", "not_nullable", 2) in found
    assert not (tmp_path / "out.parquet").exists()


def test_the_cli_reports_bad_input_without_a_traceback(use_trained, raw_frame, tmp_path) -> None:
    days = _days(raw_frame, 10, range(1, 2))
    days.with_columns(pl.lit(-5).alias("distance")).write_parquet(tmp_path / "bad.parquet")
    header = ",".join(SCORING_INPUT_COLUMNS)
    (tmp_path / "bad.csv").write_text(header + "\n" + ",".join(["2013", "13abc"] + ["1"] * 29) + "\n")
    (tmp_path / "notes.txt").write_text("hello")
    data = bytearray((tmp_path / "bad.parquet").read_bytes())
    data[100 : len(data) // 2] = bytes(len(data) // 2 - 100)  # pages zeroed, footer intact
    (tmp_path / "damaged.parquet").write_bytes(bytes(data))
    for name, expected in [
        ("damaged.parquet", "damaged.parquet: rows 0 to 250,000 cannot be read"),
        ("bad.parquet", "column 'distance': rule 'in_range(1, 12500)' failed on"),
        ("bad.csv", "column 'month' holds a value that is not Int32"),
        ("notes.txt", "unsupported input format '.txt'"),
        ("missing.parquet", "no such file"),
    ]:
        run = _score_cli(str(tmp_path / name), str(tmp_path / "out.parquet"), "--no-persist")
        assert run.returncode == 2, run.stderr
        assert expected in run.stderr and "Traceback" not in run.stderr, run.stderr
        assert "13abc" not in run.stderr  # client values are never echoed
    assert not (tmp_path / "out.parquet").exists()


def test_overlapped_and_sequential_stages_give_the_same_file(scorer, raw_frame, tmp_path) -> None:
    _days(raw_frame, 11, range(10, 14)).write_parquet(tmp_path / "in.parquet")
    outputs = []
    for overlap in (True, False):
        out = tmp_path / f"out_{overlap}.parquet"
        result = fs.score_file(
            tmp_path / "in.parquet", out, scorer=scorer, batch_rows=700, persist=False, progress=False,
            overlap=overlap,
        )  # fmt: skip
        assert result.chunks >= 3
        outputs.append(pl.read_parquet(out))
    assert outputs[0].equals(outputs[1])
