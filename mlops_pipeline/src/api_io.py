"""The API's bytes: which format a request sends and wants, its body on disk, its answer.

* **In**: ``Content-Type`` names the format (:data:`INPUT_TYPES`); a multipart upload's file
  part names it by its own type or its file name's suffix. Anything else is a 415.
* **Body**: streamed to a file in the request's spool folder, never whole into memory, and
  cut off with a 413 as soon as it passes the cap (a ``Content-Length`` above it is refused
  before a byte is read). A multipart body is spooled first, then its file part is copied
  out by python-multipart's streaming parser.
* **Out**: ``Accept`` picks JSON (the default), Parquet or CSV (:func:`output_format`;
  406 when nothing acceptable is offered). The answer's rows are the file scorer's output
  Parquet, passed through column for column (whatever ``scoring.RESPONSE_COLUMNS`` holds),
  streamed in slices so a million-row answer never sits in memory as text.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from api_problems import Problem

PARQUET = "application/vnd.apache.parquet"
PARQUET_ALIAS = "application/x-parquet"
CSV = "text/csv"
JSON = "application/json"
MULTIPART = "multipart/form-data"

# Content-Type -> the suffix batch_io reads it by
INPUT_TYPES = {PARQUET: ".parquet", PARQUET_ALIAS: ".parquet", CSV: ".csv", JSON: ".json"}
SUFFIXES = {".parquet": PARQUET, ".csv": CSV, ".json": JSON}
# Accept -> the answer's media type
OUTPUT_TYPES = {JSON: JSON, PARQUET: PARQUET, PARQUET_ALIAS: PARQUET, CSV: CSV}
WILDCARDS = {"*/*": JSON, "application/*": JSON, "text/*": CSV}

READ_BLOCK = 1 << 20
ANSWER_ROWS = 65_536  # rows per slice of a streamed answer


@dataclass(frozen=True)
class Upload:
    """How a request's body arrives: ``suffix`` for a direct body, or multipart."""

    media_type: str
    suffix: str | None  # None: multipart, the file part decides
    boundary: bytes | None = None


def _media(value: str) -> tuple[str, dict[bytes, bytes]]:
    media, params = parse_options_header(value)
    return media.decode("latin-1").strip().lower(), params


def _check_charset(params: dict[bytes, bytes], media: str) -> None:
    charset = params.get(b"charset", b"utf-8").decode("latin-1").lower()
    if charset not in ("utf-8", "utf8", "us-ascii"):
        raise unsupported(f"{media} must be UTF-8, not charset {charset!r}")


def unsupported(detail: str) -> Problem:
    return Problem(415, "unsupported-media-type", "Unsupported media type", detail)


def upload_format(content_type: str | None) -> Upload:
    """The request's format from its Content-Type (a Problem 415 when it is not one we read)."""
    if not content_type:
        raise unsupported(f"a Content-Type is required: one of {', '.join([*INPUT_TYPES, MULTIPART])}")
    media, params = _media(content_type)
    if media == MULTIPART:
        boundary = params.get(b"boundary")
        if not boundary:
            raise Problem(
                400, "malformed-body", "Malformed request body", "multipart/form-data without a boundary"
            )
        return Upload(media, None, boundary)
    if media not in INPUT_TYPES:
        raise unsupported(f"cannot read {media!r}; send one of {', '.join([*INPUT_TYPES, MULTIPART])}")
    if media != PARQUET and media != PARQUET_ALIAS:
        _check_charset(params, media)
    return Upload(media, INPUT_TYPES[media])


def output_format(accept: str | None) -> str:
    """The answer's media type for an Accept header (q-values honoured; 406 when none fits)."""
    if not accept or not accept.strip():
        return JSON
    offers: list[tuple[float, int, str]] = []
    for position, item in enumerate(accept.split(",")):
        if not item.strip():
            continue
        media, params = _media(item)
        try:
            quality = float(params.get(b"q", b"1").decode("latin-1"))
        except ValueError:
            quality = 0.0
        if quality > 0:
            offers.append((-quality, position, media))
    for _, _, media in sorted(offers):
        if media in OUTPUT_TYPES:
            return OUTPUT_TYPES[media]
        if media in WILDCARDS:
            return WILDCARDS[media]
    raise Problem(
        406,
        "not-acceptable",
        "Not acceptable",
        f"the answer can be {JSON}, {PARQUET} or {CSV}; Accept allows none",
    )


# --------------------------------------------------------------------------- the body


def too_large(cap: int) -> Problem:
    return Problem(413, "body-too-large", "Request body too large", f"the cap for this body is {cap:,} bytes")


def check_declared_length(content_length: str | None, cap: int) -> None:
    """Refuse a body whose Content-Length is over the cap before reading any of it."""
    if content_length and content_length.strip().isdigit() and int(content_length) > cap:
        raise too_large(cap)


async def spool(chunks: AsyncIterator[bytes], path: Path, cap: int) -> int:
    """Write the body to ``path`` chunk by chunk; a Problem 413 once it passes ``cap`` bytes.
    (Writes go to the page cache; each chunk is at most the server's read size.)"""
    size = 0
    with path.open("wb") as out:
        async for chunk in chunks:
            size += len(chunk)
            if size > cap:
                raise too_large(cap)
            out.write(chunk)
    return size


class _FilePart:
    """python-multipart callbacks that copy the first file part of a body into ``folder``."""

    def __init__(self, folder: Path, json_cap: int):
        self.folder = folder
        self.json_cap = json_cap
        self.path: Path | None = None
        self.media_type: str | None = None
        self._headers: dict[str, str] = {}
        self._field = self._value = b""
        self._out = None
        self._size = 0
        self._done = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_header_field": lambda data, start, end: self._add("_field", data[start:end]),
            "on_header_value": lambda data, start, end: self._add("_value", data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _add(self, name: str, data: bytes) -> None:
        setattr(self, name, getattr(self, name) + data)

    def _begin(self) -> None:
        self._headers = {}

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        disposition, params = parse_options_header(self._headers.get("content-disposition", ""))
        filename = params.get(b"filename")
        if self._done or filename is None:
            return  # a plain form field, or a second file: ignored
        suffix = self._suffix(self._headers.get("content-type"), filename.decode("utf-8", "replace"))
        self.media_type = SUFFIXES[suffix]
        self.path = self.folder / f"body{suffix}"
        self._out = self.path.open("wb")

    def _suffix(self, content_type: str | None, filename: str) -> str:
        if content_type:
            media, _ = _media(content_type)
            if media in INPUT_TYPES:
                return INPUT_TYPES[media]
        suffix = Path(filename).suffix.lower()
        if suffix in SUFFIXES:
            return suffix
        raise unsupported(
            f"the file part's type ({content_type or 'none'}) and name do not say Parquet, CSV or JSON; "
            f"send it as {PARQUET}, {CSV} or {JSON}, or name it *.parquet, *.csv or *.json"
        )

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._out is None:
            return
        self._size += end - start
        if self.media_type == JSON and self._size > self.json_cap:
            raise too_large(self.json_cap)
        self._out.write(data[start:end])

    def _end(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
            self._done = True

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


def extract_file_part(body: Path, boundary: bytes, folder: Path, json_cap: int) -> tuple[Path, str]:
    """The file part of a multipart body, copied to ``folder``: (its path, its media type)."""
    part = _FilePart(folder, json_cap)
    parser = MultipartParser(boundary, part.callbacks())
    try:
        with body.open("rb") as handle:
            while block := handle.read(READ_BLOCK):
                parser.write(block)
        parser.finalize()
    except FormParserError as exc:
        raise Problem(
            400, "malformed-body", "Malformed request body", f"not a readable multipart body ({exc})"
        ) from None
    finally:
        part.close()
    if part.path is None or not part._done:
        raise Problem(
            400,
            "malformed-body",
            "Malformed request body",
            "the multipart body has no complete file part (e.g. 'file')",
        )
    return part.path, part.media_type or JSON


# --------------------------------------------------------------------------- the answer


def answer_counts(rows: Path, flags: list[str]) -> tuple[dict[str, int], int]:
    """In one pass over the answer's rows: how many had an unseen category, per categorical
    column (its unknown_<column> flag), and how many were scored without their stored day
    (``context = batch_only``)."""
    names = pq.read_schema(rows).names
    present = [f for f in flags if f in names]
    sums = [pl.col(present).cast(pl.Int64).sum()] if present else []
    if "context" in names:
        sums.append((pl.col("context") == "batch_only").sum().alias("_batch_only"))
    if not sums:
        return {}, 0
    totals = pl.scan_parquet(rows).select(sums).collect().row(0, named=True)
    unknown = {flag.removeprefix("unknown_"): int(totals[flag] or 0) for flag in present}
    return unknown, int(totals.get("_batch_only") or 0)


def _slices(rows: Path) -> Iterator[pl.DataFrame]:
    for batch in pq.ParquetFile(rows).iter_batches(batch_size=ANSWER_ROWS):
        yield pl.from_arrow(batch)


def json_answer(meta: dict[str, Any], rows: Path) -> Iterator[bytes]:
    """``{...meta, "predictions": [{row}, ...]}``, written a slice at a time."""
    yield (json.dumps(meta)[:-1] + ', "predictions": [').encode()
    first = True
    for frame in _slices(rows):
        if frame.height:
            yield (("" if first else ",") + frame.write_json()[1:-1]).encode()
            first = False
    yield b"]}"


def csv_answer(rows: Path) -> Iterator[bytes]:
    header = True
    for frame in _slices(rows):
        yield frame.write_csv(include_header=header).encode()
        header = False
    if header:  # no rows: the header alone
        yield pl.DataFrame(schema=pl.read_parquet_schema(rows)).write_csv().encode()


def file_answer(rows: Path) -> Iterator[bytes]:
    with rows.open("rb") as handle:
        while block := handle.read(READ_BLOCK):
            yield block
