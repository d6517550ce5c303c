"""The loader: typed schema, NA -> NULL, idempotent re-run, load audit, malformed CSVs refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import RAW_CSV
from warehouse import RAW_SCHEMA, LoadError, connect, file_sha256, load_raw_csv, null_counts


def table_fingerprint(path: Path) -> tuple:
    with connect(path, read_only=True) as con:
        return con.execute(
            "SELECT count(*), sum(hash(flight, tailnum, time_hour)) FROM flights_raw"
        ).fetchall()[0]


def test_types_follow_the_explicit_schema(real_warehouse: Path) -> None:
    with connect(real_warehouse, read_only=True) as con:
        described = {name: kind for name, kind, *_ in con.execute("DESCRIBE flights_raw").fetchall()}
    assert described == RAW_SCHEMA


def test_na_becomes_null(real_warehouse: Path) -> None:
    with connect(real_warehouse, read_only=True) as con:
        nulls = null_counts(con, "flights_raw")
        rows = con.execute("SELECT count(*) FROM flights_raw").fetchall()[0][0]
        strings_na = con.execute("SELECT count(*) FROM flights_raw WHERE tailnum = 'NA'").fetchall()[0][0]
    assert rows == 336_776
    assert nulls["dep_time"] == 8_255
    assert nulls["arr_delay"] == 9_430
    assert nulls["tailnum"] == 2_512
    assert nulls["type"] == 52_606
    assert nulls["year"] == 0
    assert strings_na == 0


def test_values_keep_their_raw_meaning(real_warehouse: Path) -> None:
    with connect(real_warehouse, read_only=True) as con:
        first = con.execute(
            "SELECT dep_time, sched_dep_time, time_hour, wind_speed, plane_year, airline_name "
            "FROM flights_raw LIMIT 1"
        ).fetchall()[0]
    assert first[0] == 517 and first[1] == 515  # HHMM integers
    assert str(first[2]) == "2013-01-01 10:00:00"  # UTC, as in the source
    assert first[3] == pytest.approx(12.65858)
    assert first[4] == 1999
    assert first[5] == "United Air Lines Inc."


def test_rerun_replaces_without_duplicates_and_audits_each_load(small_csv: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "wh.duckdb"
    first = load_raw_csv(small_csv, warehouse_path=warehouse)
    second = load_raw_csv(small_csv, warehouse_path=warehouse)
    assert first.row_count == second.row_count == 300
    with connect(warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM flights_raw").fetchall()[0][0] == 300
        audit = con.execute(
            "SELECT file_name, sha256, row_count, loaded_at, table_name FROM load_audit ORDER BY loaded_at"
        ).fetchall()
    assert len(audit) == 2
    assert audit[0][:3] == ("small.csv", file_sha256(small_csv), 300)
    assert audit[1][4] == "flights_raw"
    assert audit[0][3] <= audit[1][3]


def _rewrite(src: Path, dst: Path, edit) -> Path:
    lines = src.read_text().splitlines(keepends=True)
    dst.write_text("".join(edit(lines)))
    return dst


def _drop_column(name: str):
    index = list(RAW_SCHEMA).index(name)

    def edit(lines):
        out = []
        for line in lines:
            fields = line.rstrip("\n").split(",")
            del fields[index]
            out.append(",".join(fields) + "\n")
        return out

    return edit


def _wrong_type(lines):
    fields = lines[5].rstrip("\n").split(",")
    fields[list(RAW_SCHEMA).index("dep_time")] = "five-fifteen"
    return [*lines[:5], ",".join(fields) + "\n", *lines[6:]]


def _truncated(lines):
    return [*lines[:-1], lines[-1][: len(lines[-1]) // 2]]


def _truncated_at_field(lines):
    # cut right after a comma and keep a newline: too few fields on the last line
    last = lines[-1]
    return [*lines[:-1], last[: last.index(",", 40) + 1] + "\n"]


MALFORMED = {
    "missing column": (_drop_column("arr_delay"), ["missing column", "arr_delay"]),
    "wrong type": (_wrong_type, ["dep_time", "INTEGER", "1 row"]),
    "empty file": (lambda lines: [], ["empty"]),
    "header only": (lambda lines: lines[:1], ["no data rows"]),
    "truncated last line": (_truncated, ["truncated"]),
    "last line cut at a field": (_truncated_at_field, ["refused"]),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_csv_is_refused_and_previous_table_kept(case: str, small_csv: Path, tmp_path: Path) -> None:
    warehouse = tmp_path / "wh.duckdb"
    load_raw_csv(small_csv, warehouse_path=warehouse)
    before = table_fingerprint(warehouse)
    edit, expected_words = MALFORMED[case]
    bad = _rewrite(small_csv, tmp_path / "bad.csv", edit)

    with pytest.raises(LoadError) as caught:
        load_raw_csv(bad, warehouse_path=warehouse)

    message = str(caught.value)
    assert "bad.csv" in message
    for word in expected_words:
        assert word in message, f"{word!r} not in {message!r}"
    assert table_fingerprint(warehouse) == before
    with connect(warehouse, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM load_audit").fetchall()[0][0] == 1


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LoadError, match="not found"):
        load_raw_csv(tmp_path / "nope.csv", warehouse_path=tmp_path / "wh.duckdb")


def test_default_paths_come_from_settings(isolated_settings) -> None:
    result = load_raw_csv(RAW_CSV)
    assert isolated_settings.warehouse_path.exists()
    assert result.table == isolated_settings.raw_table
