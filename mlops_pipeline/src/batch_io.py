"""Batch input and output: formats, streaming readers, and the atomically written response file.

Every reader takes a path *or bytes* (an upload held in memory or spooled to disk), so the
file scorer, Ray and the API read batches the same way:

* Parquet is read by Polars one row range at a time (``scan_parquet().slice()``): each range
  decodes only its row groups, and it takes a quarter of the CPU time of pyarrow's
  ``iter_batches``. Only the scoring-input columns are read.
* CSV is read by pyarrow in 16 MiB blocks, typed as the contract's columns (``NA`` and empty
  are null). An integral value written as a float (``1990.0``, which pandas writes for an
  integer column holding nulls) is read as the integer; ``1990.5`` stays an error that names
  the column, never the value.

Errors a caller can cause are :class:`InputError` with a one-line message.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from atomic import AtomicFile
from data_contract import CONTRACT_DTYPES, SCORING_INPUT_COLUMNS

FORMATS = (".parquet", ".csv")
CSV_BLOCK_BYTES = 16 << 20
Source = Path | bytes


class InputError(ValueError):
    """An input the scorer cannot read: missing, of another format, or not parseable."""


def input_format(path: Path) -> str:
    """The input file's format, ``.parquet`` or ``.csv`` (by its suffix); another suffix or a
    missing file is an InputError. Every engine asks here before it starts anything."""
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(f"{path.name}: unsupported input format {suffix!r}; use .parquet or .csv")
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
            raise InputError(
                f"{_name(source)}: column '{name}' holds {bad} value(s) that are not {want} "
                f"(rule 'dtype({want})')"
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
        raise InputError(_csv_error(source, header, exc)) from None


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


def _csv_error(source: Source, header: list[str], exc: pa.ArrowInvalid) -> str:
    """pyarrow's CSV error, without the offending value (client data is never echoed)."""
    found = re.match(r"In CSV column #(\d+): CSV conversion error to (\w+)", str(exc))
    if found is None:
        return f"{_name(source)}: not a readable CSV file ({_first_line(exc)})"
    index = int(found.group(1))
    column = header[index] if index < len(header) else f"#{index}"
    want = CONTRACT_DTYPES.get(column)
    rule = f" (CSV type conversion failed; rule 'dtype({want})')" if want is not None else ""
    kind = want if want is not None else found.group(2)
    return f"{_name(source)}: column '{column}' holds a value that is not {kind}{rule}"


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


# --------------------------------------------------------------------------- either format


def read_frames(
    source: Source, fmt: str, batch_rows: int, columns: list[str] | None = None
) -> tuple[Iterator[pl.DataFrame], int | None]:
    """Stream a batch as frames (Parquet: of at most ``batch_rows`` rows; CSV: of its 16 MiB
    blocks); returns (frames, total rows if known). ``fmt`` is ``.parquet`` or ``.csv``;
    ``columns`` (default: every scoring-input column present) limits what is read."""
    if fmt == ".parquet":
        total, _ = parquet_rows(source)
        return _parquet_frames(source, batch_rows, columns), total
    if fmt == ".csv":
        return _csv_frames(source, _checked_header(source), columns), None
    raise InputError(f"unsupported input format {fmt!r}; use .parquet or .csv")


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
