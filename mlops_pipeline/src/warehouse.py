"""The warehouse: ``warehouse.duckdb``, a stand-in for the company's data warehouse.

:func:`load_raw_csv` loads ``Base_de_datos.csv`` into the raw table with an explicit,
typed schema (no type inference), ``NA`` read as NULL, in one transaction: a re-run
replaces the table, and any failure (missing column, wrong type, empty file,
truncated last line) raises :class:`LoadError` naming the problem while the previous
table stays exactly as it was. Every successful load appends a row to the load-audit
table (file name, SHA-256, row count, load time).

DuckDB allows one read-write process per file; readers that only query should use
``connect(read_only=True)``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from settings import get_settings

logger = logging.getLogger(__name__)

# Column -> DuckDB type of the raw extract, in file order. time_hour is the scheduled
# hour in UTC (the source writes it as 2013-01-01T10:00:00Z).
RAW_SCHEMA: dict[str, str] = {
    "year": "INTEGER",
    "month": "INTEGER",
    "day": "INTEGER",
    "dep_time": "INTEGER",
    "sched_dep_time": "INTEGER",
    "dep_delay": "INTEGER",
    "arr_time": "INTEGER",
    "sched_arr_time": "INTEGER",
    "arr_delay": "INTEGER",
    "carrier": "VARCHAR",
    "flight": "INTEGER",
    "tailnum": "VARCHAR",
    "origin": "VARCHAR",
    "dest": "VARCHAR",
    "air_time": "INTEGER",
    "distance": "INTEGER",
    "hour": "INTEGER",
    "minute": "INTEGER",
    "time_hour": "TIMESTAMP",
    "temp": "DOUBLE",
    "dewp": "DOUBLE",
    "humid": "DOUBLE",
    "wind_dir": "INTEGER",
    "wind_speed": "DOUBLE",
    "wind_gust": "DOUBLE",
    "precip": "DOUBLE",
    "pressure": "DOUBLE",
    "visib": "DOUBLE",
    "plane_year": "INTEGER",
    "type": "VARCHAR",
    "manufacturer": "VARCHAR",
    "model": "VARCHAR",
    "engines": "INTEGER",
    "seats": "INTEGER",
    "engine": "VARCHAR",
    "airline_name": "VARCHAR",
}
NULL_MARKER = "NA"


class LoadError(Exception):
    """A CSV the loader refuses; the message names the file and the problem."""


@dataclass(frozen=True)
class LoadResult:
    table: str
    file_name: str
    sha256: str
    row_count: int
    loaded_at: datetime


def connect(path: Path | None = None, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the warehouse (default: ``settings.warehouse_path``)."""
    path = Path(path or get_settings().warehouse_path)
    if read_only and not path.exists():
        raise FileNotFoundError(f"no warehouse at {path}: run the loader first")
    path.parent.mkdir(parents=True, exist_ok=True)
    return duckdb.connect(str(path), read_only=read_only)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_csv_layout(path: Path, schema: dict[str, str] = RAW_SCHEMA) -> None:
    """Refuse what DuckDB would report cryptically or not at all: a missing or empty
    file, a header that does not match the schema, a last line cut short."""
    if not path.is_file():
        raise LoadError(f"{path.name}: file not found at {path}")
    size = path.stat().st_size
    if size == 0:
        raise LoadError(f"{path.name}: the file is empty (0 bytes, no header)")
    with path.open("rb") as handle:
        header = handle.readline().decode("utf-8").rstrip("\r\n").split(",")
        handle.seek(size - 1)
        last_byte = handle.read(1)
    header = [name.strip('"') for name in header]
    expected = list(schema)
    missing = [c for c in expected if c not in header]
    unexpected = [c for c in header if c not in schema]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing}")
        if unexpected:
            parts.append(f"unexpected column(s) {unexpected}")
        raise LoadError(f"{path.name}: header does not match the raw schema: {'; '.join(parts)}")
    if header != expected:
        raise LoadError(f"{path.name}: columns are out of order; expected {expected}")
    if last_byte != b"\n":
        raise LoadError(f"{path.name}: the last line does not end with a newline; the file looks truncated")


def _read_csv_sql(path: Path, schema: dict[str, str], *, all_varchar: bool = False) -> str:
    columns = ", ".join(f"'{name}': '{'VARCHAR' if all_varchar else kind}'" for name, kind in schema.items())
    return (
        f"read_csv('{path.as_posix()}', header = true, auto_detect = false, "
        f"columns = {{{columns}}}, nullstr = '{NULL_MARKER}', strict_mode = true, "
        "timestampformat = '%Y-%m-%dT%H:%M:%SZ')"
    )


def _explain_csv_error(exc: duckdb.Error) -> str:
    """DuckDB's CSV errors, shortened to the line number and the rule; the row's content is not echoed."""
    text = str(exc)
    line = re.search(r"CSV Error on Line: (\d+)", text)
    columns = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if line and columns:
        return f"line {line[1]} has {columns[2]} fields, expected {columns[1]} (a cut or malformed line)"
    return text.splitlines()[0]


def _diagnose_types(con: duckdb.DuckDBPyConnection, path: Path, schema: dict[str, str]) -> str:
    """Per column, how many values do not convert to the schema type (row values are not echoed)."""
    checks = ", ".join(
        f'count(*) FILTER (WHERE "{name}" IS NOT NULL AND TRY_CAST("{name}" AS {kind}) IS NULL)'
        for name, kind in schema.items()
    )
    counts = con.execute(f"SELECT {checks} FROM {_read_csv_sql(path, schema, all_varchar=True)}").fetchall()[
        0
    ]
    bad = [
        f"column '{n}' expects {k}: {c} row(s) do not convert"
        for (n, k), c in zip(schema.items(), counts)
        if c
    ]
    return "; ".join(bad)


def load_raw_csv(
    csv_path: Path | None = None,
    *,
    warehouse_path: Path | None = None,
    table: str | None = None,
) -> LoadResult:
    """Load the raw CSV into the warehouse, replacing the table atomically and auditing the load."""
    settings = get_settings()
    csv_path = Path(csv_path or settings.raw_csv)
    table = table or settings.raw_table
    audit = settings.load_audit_table
    check_csv_layout(csv_path)
    sha256 = file_sha256(csv_path)

    with connect(warehouse_path) as con:
        con.execute(
            f"CREATE TABLE IF NOT EXISTS {audit} (file_name VARCHAR, sha256 VARCHAR, "
            "row_count BIGINT, loaded_at TIMESTAMP, table_name VARCHAR)"
        )
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM {_read_csv_sql(csv_path, RAW_SCHEMA)}"
            )
            row_count = con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
            if row_count == 0:
                raise LoadError(f"{csv_path.name}: the file has a header but no data rows")
            loaded_at = datetime.now(UTC).replace(tzinfo=None)
            con.execute(
                f"INSERT INTO {audit} VALUES (?, ?, ?, ?, ?)",
                [csv_path.name, sha256, row_count, loaded_at, table],
            )
            con.execute("COMMIT")
        except LoadError:
            con.execute("ROLLBACK")
            raise
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            detail = _explain_csv_error(exc)
            if "convert" in str(exc).lower():
                detail = _diagnose_types(con, csv_path, RAW_SCHEMA) or detail
            raise LoadError(f"{csv_path.name}: refused, previous table kept: {detail}") from exc

    logger.info("loaded %s rows from %s into %s", row_count, csv_path.name, table)
    return LoadResult(table, csv_path.name, sha256, row_count, loaded_at)


def null_counts(con: duckdb.DuckDBPyConnection, table: str) -> dict[str, int]:
    """NULLs per column of a table, in column order."""
    columns = [row[0] for row in con.execute(f"DESCRIBE {table}").fetchall()]
    counts = con.execute(
        "SELECT " + ", ".join(f'count(*) - count("{c}")' for c in columns) + f" FROM {table}"
    ).fetchall()[0]
    return dict(zip(columns, counts))
