"""The lake: atomic, exactly-once batch files; readers that never block on writers.

Every test writes real Parquet files under its own temporary lake (conftest points the
settings there); the crash and concurrency tests use real subprocesses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lake
from settings import REPO_ROOT
from warehouse import connect

SRC_DIR = REPO_ROOT / "mlops_pipeline" / "src"
TESTS_DIR = Path(__file__).resolve().parent


def scored_table(rows: int, start: int = 0) -> pa.Table:
    """A small table shaped like scored flights, with nulls in several columns."""
    ids = range(start, start + rows)
    base = datetime(2013, 9, 1, tzinfo=UTC)
    return pa.table(
        {
            "flight_id": pa.array(ids, pa.int64()),
            "carrier": pa.array([None if i % 11 == 0 else ["UA", "B6", "EV"][i % 3] for i in ids]),
            "dep_delay": pa.array([None if i % 7 == 0 else i % 90 - 10 for i in ids], pa.int32()),
            "score": pa.array([(i % 1000) / 1000 for i in ids], pa.float64()),
            "flagged": pa.array([i % 4 == 0 for i in ids]),
            "time_hour": pa.array([base + timedelta(hours=i) for i in ids], pa.timestamp("us", tz="UTC")),
        }
    )


def counter_batch(k: int, rows: int) -> pa.RecordBatch:
    """Batch ``k`` of a stream the subprocess writers produce (they import it from here)."""
    return pa.record_batch(
        {
            "batch": pa.array([k] * rows, pa.int32()),
            "row": pa.array(range(k * rows, (k + 1) * rows), pa.int64()),
            "carrier": pa.array(["UA", "B6"] * (rows // 2) + ["EV"] * (rows % 2)),
        }
    )


def visible_files(dataset: str) -> list[str]:
    folder = lake.dataset_dir(dataset)
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def run_python(code: str) -> subprocess.Popen:
    """A separate process running ``code`` against this test's lake (settings come from env)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC_DIR), str(TESTS_DIR)])}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO_ROOT)


def register(datasets: list[str]) -> lake.ViewRegistration:
    with connect() as con:
        return lake.register_views(con, datasets)


def view_count(view: str) -> int:
    with connect(read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM {view}").fetchall()[0][0]


# ---------------------------------------------------------------- write, read, idempotency


def test_write_then_read_back_equal() -> None:
    first, second = scored_table(500), scored_table(300, start=500)

    result = lake.write_batch("scored", "2013-09-01", first)
    lake.write_batch("scored", "2013-09-02", second)

    assert result.created and result.rows == 500
    assert result.path == lake.dataset_dir("scored") / "2013-09-01.parquet"
    assert pq.read_table(result.path).equals(first)
    assert lake.batch_ids("scored") == ["2013-09-01", "2013-09-02"]
    assert visible_files("scored") == ["2013-09-01.parquet", "2013-09-02.parquet"]  # no temp left over
    expected = pl.from_arrow(pa.concat_tables([first, second]))
    assert lake.read_dataset("scored").sort("flight_id").collect().equals(expected)
    assert lake.read_dataset("scored", only=["2013-09-02"]).collect().equals(pl.from_arrow(second))


def test_row_groups_are_fixed_size_and_zstd() -> None:
    rows = 2 * lake.ROW_GROUP_ROWS + 5
    table = pa.table({"x": pa.array(range(rows), pa.int64())})
    # Small, uneven input chunks: the writer re-cuts them into full row groups.
    result = lake.write_batch("scored", "b1", iter(table.to_batches(max_chunksize=10_007)))

    metadata = pq.read_metadata(result.path)
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [lake.ROW_GROUP_ROWS, lake.ROW_GROUP_ROWS, 5]
    assert metadata.row_group(0).column(0).compression == "ZSTD"
    assert metadata.metadata[b"lake.content_sha256"].decode() == result.content_sha256
    assert metadata.metadata[b"lake.batch_id"] == b"b1"


def test_same_batch_id_same_content_adds_nothing_however_it_is_chunked() -> None:
    table = scored_table(1003)  # not a multiple of 8: the last chunk ends mid-byte of the bitmaps
    first = lake.write_batch("scored", "b1", table)
    stored_bytes = first.path.read_bytes()

    bigger = pa.concat_tables([table, scored_table(50, start=1003)])
    resends = [
        table,
        iter(table.to_batches(max_chunksize=97)),
        pa.Table.from_pylist(table.to_pylist(), schema=table.schema),
        bigger.slice(0, 1003),  # a slice: buffers extend past the batch
        pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=300)),
        table.replace_schema_metadata({"source": "retry"}),
    ]
    for resend in resends:
        again = lake.write_batch("scored", "b1", resend)
        assert not again.created
        assert again.rows == 1003 and again.content_sha256 == first.content_sha256

    assert first.path.read_bytes() == stored_bytes
    assert lake.read_dataset("scored").select(pl.len()).collect().item() == 1003
    assert visible_files("scored") == ["b1.parquet"]


def test_values_hidden_under_nulls_do_not_change_the_content() -> None:
    # Two int32 arrays [1, null, 3] that differ only in the bytes under the null slot.
    validity = pa.py_buffer(bytes([0b101]))
    a = pa.Array.from_buffers(pa.int32(), 3, [validity, pa.array([1, 0, 3], pa.int32()).buffers()[1]])
    b = pa.Array.from_buffers(pa.int32(), 3, [validity, pa.array([1, 99, 3], pa.int32()).buffers()[1]])
    assert a.equals(b)

    lake.write_batch("scored", "b1", pa.table({"x": a}))
    assert not lake.write_batch("scored", "b1", pa.table({"x": b})).created


@pytest.mark.parametrize(
    "change",
    [
        lambda t: t.set_column(3, "score", pa.array([0.5] * t.num_rows)),
        lambda t: t.slice(0, t.num_rows - 1),
        lambda t: t.take(list(reversed(range(t.num_rows)))),  # same rows, another order
    ],
    ids=["value", "row-count", "order"],
)
def test_same_batch_id_different_content_conflicts(change) -> None:
    table = scored_table(200)
    first = lake.write_batch("scored", "2013-09-01", table)
    stored_bytes = first.path.read_bytes()

    with pytest.raises(lake.BatchConflict, match="2013-09-01") as raised:
        lake.write_batch("scored", "2013-09-01", change(table))

    assert isinstance(raised.value, ValueError)
    assert first.path.read_bytes() == stored_bytes
    assert visible_files("scored") == ["2013-09-01.parquet"]


def test_an_empty_batch_is_stored_but_a_stream_without_schema_is_refused() -> None:
    empty = scored_table(0)
    result = lake.write_batch("scored", "b0", empty)
    assert result.created and result.rows == 0
    assert pq.read_table(result.path).equals(empty)

    with pytest.raises(ValueError, match="no record batches"):
        lake.write_batch("scored", "b1", iter([]))
    assert lake.batch_ids("scored") == ["b0"]


# ---------------------------------------------------------------- refusals leave nothing


@pytest.mark.parametrize("batch_id", ["../x", "", "a/b", ".hidden", "a\\b", "x" * 129, "-x", "a b"])
def test_invalid_batch_ids_are_rejected(batch_id: str) -> None:
    with pytest.raises(ValueError, match="invalid batch_id"):
        lake.write_batch("scored", batch_id, scored_table(3))
    assert not lake.dataset_dir("scored").exists()


@pytest.mark.parametrize("dataset", ["../scored", "1scored", "scored-v2", "a.b", ""])
def test_invalid_dataset_names_are_rejected(dataset: str) -> None:
    with pytest.raises(ValueError, match="invalid dataset name"):
        lake.write_batch(dataset, "b1", scored_table(3))


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda t: t.drop_columns(["score"]), "missing column(s) ['score']"),
        (lambda t: t.append_column("extra", pa.array([1] * t.num_rows)), "unexpected column(s) ['extra']"),
        (lambda t: t.set_column(2, "dep_delay", pa.array(["x"] * t.num_rows)), "'dep_delay' is string"),
    ],
    ids=["missing", "extra", "type"],
)
def test_schema_mismatch_is_rejected_before_anything_is_written(change, named: str) -> None:
    lake.write_batch("scored", "b1", scored_table(10))

    with pytest.raises(lake.SchemaMismatch, match="b2") as raised:
        lake.write_batch("scored", "b2", change(scored_table(10)))

    assert named in str(raised.value)
    assert visible_files("scored") == ["b1.parquet"]


def test_a_stream_failing_midway_leaves_nothing() -> None:
    lake.write_batch("scored", "b0", scored_table(10))
    folder = lake.dataset_dir("scored")
    seen_temp_sizes: list[int] = []

    def batches_then_failure():
        # More than a row group first, so part of the batch is on disk when it fails.
        yield from scored_table(lake.ROW_GROUP_ROWS + 1000).to_batches(max_chunksize=50_000)
        seen_temp_sizes.extend(p.stat().st_size for p in folder.iterdir() if p.name.endswith(".tmp"))
        raise RuntimeError("upstream scorer died")

    with pytest.raises(RuntimeError, match="upstream scorer died"):
        lake.write_batch("scored", "b1", batches_then_failure())

    assert seen_temp_sizes and seen_temp_sizes[0] > 0
    assert visible_files("scored") == ["b0.parquet"]
    assert lake.batch_ids("scored") == ["b0"]


def test_a_record_batch_with_another_schema_midway_leaves_nothing() -> None:
    good = scored_table(100).to_batches()[0]
    bad = scored_table(100).drop_columns(["carrier"]).to_batches()[0]

    with pytest.raises(lake.SchemaMismatch, match=r"record batch 1 .*missing column\(s\) \['carrier'\]"):
        lake.write_batch("scored", "b1", iter([good, bad]))

    assert visible_files("scored") == []


def test_a_killed_writer_leaves_nothing_partial() -> None:
    lake.write_batch("scored", "small", counter_batch(0, 10))
    assert register(["scored"]).registered == ("scored",)
    folder = lake.dataset_dir("scored")

    # 20 M rows streamed as record batches: far more than can be written before the kill.
    writer = run_python(
        """
        import lake
        from test_lake import counter_batch

        lake.write_batch("scored", "big", (counter_batch(k, 50_000) for k in range(400)))
        """
    )
    temps: list[Path] = []
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and writer.poll() is None:
            temps = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
            if temps and temps[0].stat().st_size > 0:  # at least one row group is on disk
                break
            time.sleep(0.005)
        writer.kill()  # SIGKILL: no finally blocks, no atexit handlers run
    finally:
        returncode = writer.wait(timeout=30)
    assert returncode != 0, "the writer finished before it could be killed"
    assert len(temps) == 1 and temps[0].stat().st_size > 0

    assert not (folder / "big.parquet").exists()
    assert lake.batch_ids("scored") == ["small"]
    assert view_count("scored") == 10
    assert lake.read_dataset("scored").select(pl.len()).collect().item() == 10

    assert lake.clean_stale_temp_files("scored") == []  # young: it could belong to a live writer
    assert lake.clean_stale_temp_files("scored", older_than_s=0) == temps
    assert visible_files("scored") == ["small.parquet"]


def test_the_next_writer_removes_stale_temp_files_only() -> None:
    lake.write_batch("scored", "b1", scored_table(5))
    folder = lake.dataset_dir("scored")
    stale, live = folder / ".b2.dead.parquet.tmp", folder / ".b3.live.parquet.tmp"
    stale.write_bytes(b"PAR1 half a row group")
    live.write_bytes(b"PAR1 still streaming")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    assert register(["scored"]).registered == ("scored",)
    assert view_count("scored") == 5  # temp files are invisible to readers

    lake.write_batch("scored", "b4", scored_table(5, start=5))

    assert not stale.exists()
    assert live.exists()
    assert lake.batch_ids("scored") == ["b1", "b4"]


# ---------------------------------------------------------------- concurrency


def test_concurrent_writers_of_one_batch_id_publish_it_once() -> None:
    table = scored_table(20_000)
    barrier = threading.Barrier(4)
    results: list[lake.WriteResult] = []

    def write() -> None:
        barrier.wait()
        results.append(lake.write_batch("scored", "b1", table))

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(result.created for result in results) == [False, False, False, True]
    assert visible_files("scored") == ["b1.parquet"]
    assert pq.read_table(lake.dataset_dir("scored") / "b1.parquet").equals(table)


def test_concurrent_writers_with_different_content_one_wins_one_conflicts() -> None:
    tables = [scored_table(20_000), scored_table(20_000, start=1)]
    barrier = threading.Barrier(2)
    outcomes: list[object] = []

    def write(table: pa.Table) -> None:
        barrier.wait()
        try:
            outcomes.append(lake.write_batch("scored", "b1", table))
        except lake.BatchConflict as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=write, args=(table,)) for table in tables]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    winners = [o for o in outcomes if isinstance(o, lake.WriteResult)]
    assert len(winners) == 1 and winners[0].created
    assert sum(isinstance(o, lake.BatchConflict) for o in outcomes) == 1
    stored = pq.read_table(winners[0].path)
    assert any(stored.equals(table) for table in tables)


def test_a_reader_queries_the_view_while_a_writer_appends() -> None:
    batch_rows, batches = 1000, 40
    writer = run_python(
        f"""
        import time
        import lake
        from test_lake import counter_batch

        for k in range({batches}):
            lake.write_batch("scored", f"w{{k:03d}}", counter_batch(k, {batch_rows}))
            time.sleep(0.01)
        """
    )
    counts: list[int] = []
    try:
        first = lake.dataset_dir("scored") / "w000.parquet"
        deadline = time.monotonic() + 30
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        # The view needs one batch to exist; registering it while the writer runs also
        # shows that the writer never touches the warehouse file.
        assert register(["scored"]).registered == ("scored",)
        with connect(read_only=True) as con:
            while writer.poll() is None:
                counts.append(con.execute("SELECT count(*) FROM scored").fetchall()[0][0])
    finally:
        returncode = writer.wait(timeout=60)
    assert returncode == 0
    counts.append(view_count("scored"))

    assert all(count % batch_rows == 0 for count in counts), counts
    assert counts == sorted(counts)
    assert counts[0] >= batch_rows and counts[-1] == batch_rows * batches
    assert len(set(counts)) > 2, "no query saw the writer mid-way"


def test_register_views_skips_datasets_without_batches() -> None:
    lake.write_batch("scored", "b1", scored_table(7))

    result = register(["scored", "drift"])

    assert result == lake.ViewRegistration(registered=("scored",), skipped=("drift",))
    with connect(read_only=True) as con:
        views = {
            row[0]
            for row in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
        }
        assert con.execute("SELECT count(*), count(DISTINCT flight_id) FROM scored").fetchall() == [(7, 7)]
    assert views == {"scored"}
    assert lake.dataset_glob("scored").endswith("/scored/*.parquet")
    with pytest.raises(FileNotFoundError, match="drift"):
        lake.read_dataset("drift")
