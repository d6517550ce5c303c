"""Batch input and output: formats, streaming readers, and the atomically written response file.

Every reader takes a path *or bytes* (an upload held in memory or spooled to disk), so the
file scorer, Ray and the API read batches the same way. Three formats:

* Parquet is read by Polars one row range at a time (``scan_parquet().slice()``): each range
  decodes only its row groups, and it takes a quarter of the CPU time of pyarrow's
  ``iter_batches``. Only the scoring-input columns are read.
* CSV is read by pyarrow in 16 MiB blocks, typed as the contract's columns (``NA`` and empty
  are null). An integral value written as a float (``1990.0``, which pandas writes for an
  integer column holding nulls) is read as the integer; ``1990.5`` stays an error that names
  the column, never the value.
* JSON is one of MLflow's pandas layouts, ``{"dataframe_split": {"columns": [...], "data":
  [[...], ...]}}`` or ``{"dataframe_records": [{...}, ...]}``, for small clients. The document
  is parsed whole (the API caps its size), each scoring-input column becomes one typed
  column (whole numbers Int64, numbers Float64, text String, all-null Null), and the
  contract casts it to its type exactly as it casts a Parquet file's columns, so the same
  rows score the same in every format. Timestamps are ISO-8601 text.

Errors a caller can cause are :class:`InputError` with a one-line message; a value of the
wrong type is a :class:`ColumnTypeError`, which also carries the (column, rule, rows) the
data contract would report.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from atomic import AtomicFile
from data_contract import CONTRACT_DTYPES, SCORING_INPUT_COLUMNS, RuleFailure

FORMATS = (".parquet", ".csv", ".json")
JSON_LAYOUTS = ("dataframe_split", "dataframe_records")
CSV_BLOCK_BYTES = 16 << 20
Source = Path | bytes


class InputError(ValueError):
    """An input the scorer cannot read: missing, of another format, or not parseable."""


class ColumnTypeError(InputError):
    """A column holding values that are not of its contract type (read as such by the CSV
    reader); ``failure`` is the contract's (column, rule, rows) for it."""

    def __init__(self, message: str, failure: RuleFailure):
        super().__init__(message)
        self.failure = failure


def input_format(path: Path) -> str:
    """The input file's format, ``.parquet`` or ``.csv`` (by its suffix); another suffix or a
    missing file is an InputError. Every engine asks here before it starts anything."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path.name}: unsupported input format {suffix!r}; use .parquet, .csv or .json")
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    return suffix


def _name(source: Source) -> str:
    return source.name if isinstance(source, Path) else "request body"


def _opened(source: Source):
    return source if isinstance(source, Path) else io.BytesIO(source)


# --------------------------------------------------------------------------- Parquet


def parquet_rows(source: Source) -> tuple[int, list[str]]:
    """(row count, scoring-input columns present) of a Parquet file, from its footer."""
    try:
        metadata = pq.read_metadata(_opened(source))
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{_name(source)}: not a readable Parquet file ({_first_line(exc)})") from None
    names = set(metadata.schema.to_arrow_schema().names)
    return metadata.num_rows, [c for c in SCORING_INPUT_COLUMNS if c in names]


def read_parquet_range(source: Source, columns: list[str], start: int, length: int) -> pl.DataFrame:
    """Rows ``start .. start + length`` of a Parquet file (only ``columns``)."""
    try:
        return pl.scan_parquet(_opened(source)).select(columns).slice(start, length).collect()
    except pl.exceptions.PolarsError as exc:  # a damaged page: say where, not what it held
        raise InputError(
            f"{_name(source)}: rows {start:,} to {start + length:,} cannot be read ({_first_line(exc)})"
        ) from None


def _parquet_frames(source: Source, batch_rows: int, columns: list[str] | None) -> Iterator[pl.DataFrame]:
    total, present = parquet_rows(source)
    for start in range(0, total, batch_rows):
        yield read_parquet_range(source, columns or present, start, batch_rows)


# --------------------------------------------------------------------------- CSV


def csv_convert_options(include: list[str] | None = None) -> pacsv.ConvertOptions:
    """CSV columns as the contract types, ``NA`` and empty as null (text columns too); integer
    columns are read as float64 and cast back by :func:`_integral` (see the module docstring),
    and ``time_hour`` stays text for the contract to parse. ``include``: read only these."""
    arrow_types = (
        pl.DataFrame(schema={c: CONTRACT_DTYPES[c] for c in SCORING_INPUT_COLUMNS}).to_arrow().schema
    )
    types = {
        f.name: pa.float64() if pa.types.is_integer(f.type) else f.type
        for f in arrow_types
        if f.name != "time_hour"
    }
    return pacsv.ConvertOptions(
        column_types=types, null_values=["NA", ""], strings_can_be_null=True, include_columns=include or []
    )


def _integral(batch: pa.RecordBatch, source: Source) -> pl.DataFrame:
    """Cast the integer columns read as float back to their contract type; a non-integral
    value is an InputError naming the column (and how many rows), not the value."""
    frame = pl.from_arrow(batch)
    casts = []
    for name, dtype in frame.schema.items():
        want = CONTRACT_DTYPES.get(name)
        if want is None or not want.is_integer() or not dtype.is_float():
            continue
        column = pl.col(name)
        # NaN, a fraction, or beyond the type's range
        lossy = (column != column.round(0)) | (
            column.cast(want, strict=False).is_null() & column.is_not_null()
        )
        bad = frame.select(lossy.sum()).item()
        if bad:
            raise ColumnTypeError(
                f"{_name(source)}: column '{name}' holds {bad} value(s) that are not {want} "
                f"(rule 'dtype({want})')",
                RuleFailure(name, f"dtype({want})", bad),
            )
        casts.append(column.cast(want))
    return frame.with_columns(casts) if casts else frame


def _checked_header(source: Source) -> list[str]:
    """The CSV's header, refused in one line when it is not comma-separated."""
    header = csv_header(source)
    if len(header) == 1 and len(SCORING_INPUT_COLUMNS) > 1:
        found = next((sep for sep in (";", "\t", "|") if sep in header[0]), None)
        hint = f"; it looks {found!r}-separated" if found else ""
        raise InputError(
            f"{_name(source)}: the header parses as a single column; a CSV batch must be comma-separated{hint}"
        )
    return header


def _csv_frames(source: Source, header: list[str], columns: list[str] | None) -> Iterator[pl.DataFrame]:
    try:
        reader = pacsv.open_csv(
            _opened(source),
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=csv_convert_options(include=columns),
        )
        for batch in reader:
            if batch.num_rows:
                yield _integral(batch, source)
    except pa.ArrowInvalid as exc:
        raise _csv_error(source, header, exc) from None


def csv_header(source: Source) -> list[str]:
    """The CSV's column names (its first line)."""
    handle = source.open(newline="", encoding="utf-8", errors="replace") if isinstance(source, Path) else None
    try:
        if handle is None:
            first = source.split(b"\n", 1)[0].decode("utf-8", errors="replace")
            return next(csv.reader([first]), [])
        return next(csv.reader(handle), [])
    finally:
        if handle is not None:
            handle.close()


def _csv_error(source: Source, header: list[str], exc: pa.ArrowInvalid) -> InputError:
    """pyarrow's CSV error, without the offending value (client data is never echoed)."""
    found = re.match(r"In CSV column #(\d+): CSV conversion error to (\w+)", str(exc))
    if found is None:
        return InputError(f"{_name(source)}: not a readable CSV file ({_first_line(exc)})")
    index = int(found.group(1))
    column = header[index] if index < len(header) else f"#{index}"
    want = CONTRACT_DTYPES.get(column)
    if want is None:
        return InputError(f"{_name(source)}: column '{column}' holds a value that is not {found.group(2)}")
    message = (
        f"{_name(source)}: column '{column}' holds a value that is not {want} "
        f"(CSV type conversion failed; rule 'dtype({want})')"
    )
    return ColumnTypeError(message, RuleFailure(column, f"dtype({want})", _non_numeric_rows(source, column)))


def _non_numeric_rows(source: Source, column: str) -> int:
    """How many values of a numeric CSV column are not numbers (only after pyarrow refused
    one: a second pass reads that column alone, as text)."""
    options = pacsv.ConvertOptions(
        column_types={column: pa.string()},
        null_values=["NA", ""],
        strings_can_be_null=True,
        include_columns=[column],
    )
    bad = 0
    try:
        for batch in pacsv.open_csv(_opened(source), convert_options=options):
            text = pl.from_arrow(batch).to_series()
            bad += text.is_not_null().sum() - text.cast(pl.Float64, strict=False).is_not_null().sum()
    except pa.ArrowInvalid:
        pass  # the file is also ragged further on; the count so far stands
    return max(int(bad), 1)  # pyarrow found one even where Polars parses it


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------- JSON


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value (send null for a missing number)")


def _json_document(source: Source) -> object:
    try:
        if isinstance(source, Path):
            with source.open("rb") as handle:
                return json.load(handle, parse_constant=_no_constant)
        return json.loads(source, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise InputError(f"{_name(source)}: not valid JSON ({_first_line(exc)})") from None


def _split_columns(split: object, name: str) -> dict[str, list]:
    """dataframe_split's scoring-input columns, as lists of values; ragged rows are refused."""
    if not isinstance(split, dict) or not isinstance(split.get("columns"), list):
        raise InputError(f"{name}: dataframe_split needs 'columns', a list of column names, and 'data'")
    columns, data = split["columns"], split.get("data")
    if not all(isinstance(c, str) for c in columns) or len(set(columns)) != len(columns):
        raise InputError(f"{name}: dataframe_split 'columns' must be distinct column names")
    if not isinstance(data, list):
        raise InputError(f"{name}: dataframe_split 'data' must be a list of rows")
    for number, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(columns):
            width = len(row) if isinstance(row, list) else "not a list of"
            raise InputError(
                f"{name}: dataframe_split row {number} has {width} values for {len(columns)} columns"
            )
    return {c: [row[j] for row in data] for j, c in enumerate(columns) if c in SCORING_INPUT_COLUMNS}


def _records_columns(records: object, name: str) -> dict[str, list]:
    """dataframe_records' scoring-input columns (a key a record lacks is null there, as in pandas)."""
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise InputError(f"{name}: dataframe_records must be a list of objects, one per row")
    present = set().union(*records) if records else set()
    return {c: [r.get(c) for r in records] for c in SCORING_INPUT_COLUMNS if c in present}


def _json_series(column: str, values: list, name: str) -> pl.Series:
    """One JSON column as the narrowest Polars type that holds every value exactly; values of
    mixed kinds become text, which the contract then fails (and counts) in its dtype rule."""
    kinds = {type(v) for v in values if v is not None}
    if kinds & {dict, list}:
        raise InputError(
            f"{name}: column '{column}' holds nested JSON (objects or arrays); send one value per cell"
        )
    if not kinds:
        return pl.Series(column, values, dtype=pl.Null)
    for dtype, allowed in (
        (pl.Int64, {int}),
        (pl.Float64, {int, float}),
        (pl.String, {str}),
        (pl.Boolean, {bool}),
    ):
        if kinds <= allowed:
            try:
                return pl.Series(column, values, dtype=dtype, strict=True)
            except (OverflowError, TypeError, pl.exceptions.PolarsError):
                break  # an integer beyond 64 bits: as text, for the contract to refuse
    text = [v if v is None or isinstance(v, str) else json.dumps(v) for v in values]
    return pl.Series(column, text, dtype=pl.String)


def json_frame(source: Source) -> pl.DataFrame:
    """A JSON batch (module docstring) as one frame of its scoring-input columns."""
    document = _json_document(source)
    name = _name(source)
    if not isinstance(document, dict) or sum(k in document for k in JSON_LAYOUTS) != 1:
        raise InputError(
            f"{name}: a JSON batch is an object with exactly one of {', '.join(JSON_LAYOUTS)} (MLflow's layouts)"
        )
    if "dataframe_split" in document:
        columns = _split_columns(document["dataframe_split"], name)
    else:
        columns = _records_columns(document["dataframe_records"], name)
    del document  # the lists of values are all that is needed now
    return pl.DataFrame([_json_series(c, values, name) for c, values in columns.items()])


def _json_frames(source: Source, batch_rows: int) -> Iterator[pl.DataFrame]:
    frame = json_frame(source)
    for start in range(0, frame.height, batch_rows):
        yield frame.slice(start, batch_rows)


# --------------------------------------------------------------------------- either format


def read_frames(
    source: Source, fmt: str, batch_rows: int, columns: list[str] | None = None
) -> tuple[Iterator[pl.DataFrame], int | None]:
    """Stream a batch as frames (Parquet and JSON: of at most ``batch_rows`` rows; CSV: of its
    16 MiB blocks); returns (frames, total rows if known). ``fmt`` is ``.parquet``, ``.csv`` or
    ``.json``; ``columns`` (default: every scoring-input column present) limits what is read
    (JSON reads every scoring-input column it holds)."""
    if fmt == ".parquet":
        total, _ = parquet_rows(source)
        return _parquet_frames(source, batch_rows, columns), total
    if fmt == ".csv":
        return _csv_frames(source, _checked_header(source), columns), None
    if fmt == ".json":
        return _json_frames(source, batch_rows), None
    raise InputError(f"unsupported input format {fmt!r}; use .parquet, .csv or .json")


def read_file(path: Path, batch_rows: int, columns: list[str] | None = None):
    """:func:`read_frames` for a file, with its format taken from the suffix."""
    return read_frames(path, input_format(path), batch_rows, columns)


# --------------------------------------------------------------------------- output


class ResponseFile:
    """A scored output file, streamed under a temp name and renamed into place only when
    every table is written, so nobody sees a half-written file and a failure leaves none.
    An input without rows still gets a typed, empty file (schema from ``empty_schema``)."""

    def __init__(self, path: Path, empty_schema: Callable[[], pa.Schema]):
        self.path = path
        self.empty_schema = empty_schema
        self._atomic = AtomicFile(path)
        self.writer: pq.ParquetWriter | None = None

    def __enter__(self) -> ResponseFile:
        self._temp = self._atomic.__enter__()
        return self

    def write(self, table: pa.Table) -> None:
        if self.writer is None:
            self.writer = pq.ParquetWriter(self._temp, table.schema, compression="zstd")
        self.writer.write_table(table)

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is None and self.writer is None:
                self.writer = pq.ParquetWriter(self._temp, self.empty_schema(), compression="zstd")
            if self.writer is not None:
                self.writer.close()
        finally:
            self._atomic.__exit__(exc_type, exc, traceback)
