"""The lake: append-only Parquet datasets for scored batches and monitoring outputs.

Layout. A dataset is a folder under ``settings.lake_dir`` (``lake/scored/``) holding one
Parquet file per batch, named by its batch id (``<batch_id>.parquet``). Published files
are never modified or deleted, so a reader only ever sees whole batches.

Exactly once (docs/properties.md, property 5). :func:`write_batch` streams the batch into a temp
file in the same folder whose name does not match ``*.parquet``
(``.<batch_id>.parquet.<uuid>.parquet.tmp``), fsyncs it, and publishes it with ``os.link(tmp,
final)`` (``atomic.AtomicFile``): a hard link is atomic and, unlike ``os.replace``, refuses to overwrite, so of
two writers racing on one batch id exactly one publishes. The temp name is then unlinked
and the folder fsynced. A writer that fails or is killed at any moment leaves at most a
temp file, which readers never glob and :func:`clean_stale_temp_files` removes (each
writer does so for temp files older than :data:`STALE_TEMP_AFTER_S`: a younger one may
belong to a live writer). Re-sending a batch id is a no-op when the content is the same
(compared by a SHA-256 stored in the file's key-value metadata) and a
:class:`BatchConflict` otherwise; the existing file is never touched.

Readers never block on writers (docs/properties.md, property 4). The writer never opens
``warehouse.duckdb``; :func:`register_views` stores, once, a view per dataset over
``read_parquet('<folder>/*.parquet')``. DuckDB expands the glob at every query, so
readers that open the warehouse read-only see each batch as soon as it is published,
while any number of writers keep appending.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from atomic import AtomicFile
from settings import get_settings

logger = logging.getLogger(__name__)

# Batch ids become file names: no separators, no leading dot (temp files start with one).
BATCH_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# Dataset names become folder names and DuckDB view names, so they are SQL identifiers.
DATASET_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

# Rows per row group. A multiple of 64, so every full chunk ends on a byte boundary of the
# validity bitmaps and the content hash below cannot depend on bits beyond a chunk.
ROW_GROUP_ROWS = 128 * 1024
COMPRESSION = "zstd"
# Temp files younger than this may belong to a live writer; a writer touches its temp file
# at least once per row group, so an hour without a write means the writer is gone.
STALE_TEMP_AFTER_S = 3600.0

TEMP_SUFFIX = ".parquet.tmp"
HASH_SCHEME = f"sha256/arrow-ipc-v1/chunk={ROW_GROUP_ROWS}"
META_BATCH_ID = "lake.batch_id"
META_SHA256 = "lake.content_sha256"
META_HASH_SCHEME = "lake.hash_scheme"
META_ROWS = "lake.rows"
META_WRITTEN_AT = "lake.written_at"
CALLER_SCHEME = "caller-content-id"

BatchSource = pa.Table | pa.RecordBatch | pa.RecordBatchReader | Iterable[pa.RecordBatch]


class BatchConflict(ValueError):
    """A batch id that is already stored with different content."""


class SchemaMismatch(ValueError):
    """A batch whose columns or types differ from the dataset's (or within its own stream)."""


@dataclass(frozen=True)
class WriteResult:
    dataset: str
    batch_id: str
    path: Path
    created: bool  # False: the same content was already stored under this batch id
    rows: int
    content_sha256: str


@dataclass(frozen=True)
class ViewRegistration:
    registered: tuple[str, ...]
    skipped: tuple[str, ...]  # datasets without any batch yet: read_parquet fails on an empty glob


# ---------------------------------------------------------------- names and paths


def check_batch_id(batch_id: str) -> str:
    if not isinstance(batch_id, str) or not BATCH_ID_PATTERN.fullmatch(batch_id):
        raise ValueError(
            f"invalid batch_id {batch_id!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return batch_id


def check_dataset(dataset: str) -> str:
    if not isinstance(dataset, str) or not DATASET_PATTERN.fullmatch(dataset):
        raise ValueError(
            f"invalid dataset name {dataset!r}: use a SQL identifier "
            "(letters, digits and '_', not starting with a digit, at most 63 characters)"
        )
    return dataset


def dataset_dir(dataset: str) -> Path:
    # Absolute, because the path is frozen into the warehouse's views and readers may
    # run from any working directory.
    return Path(get_settings().lake_dir).absolute() / check_dataset(dataset)


def dataset_glob(dataset: str) -> str:
    """The glob that matches exactly the published batches (temp files end in ``.tmp``)."""
    return f"{dataset_dir(dataset).as_posix()}/*.parquet"


def _batch_path(dataset: str, batch_id: str) -> Path:
    return dataset_dir(dataset) / f"{check_batch_id(batch_id)}.parquet"


def _published_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.glob("*.parquet") if path.is_file() and BATCH_ID_PATTERN.fullmatch(path.stem)
    )


def has_batch(dataset: str, batch_id: str) -> bool:
    """Whether a batch id is published in the dataset (temp files of live writers do not count)."""
    return _batch_path(dataset, batch_id).is_file()


def batch_ids(dataset: str) -> list[str]:
    """The published batch ids of a dataset, sorted; empty when it has none yet."""
    return [path.stem for path in _published_files(dataset_dir(dataset))]


# ---------------------------------------------------------------- reading


def read_dataset(dataset: str, only: Sequence[str] | None = None) -> pl.LazyFrame:
    """A lazy scan of the batches published now (or of the batch ids in ``only``).

    The file list is fixed when this is called, so one LazyFrame reads one consistent set
    of batches however many are published while it runs.
    """
    if only is None:
        paths = _published_files(dataset_dir(dataset))
    else:
        paths = [_batch_path(dataset, batch_id) for batch_id in only]
        missing = [path.stem for path in paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"dataset {dataset!r} has no batch(es) {missing}")
    if not paths:
        raise FileNotFoundError(f"dataset {dataset!r} has no batches yet ({dataset_glob(dataset)})")
    return pl.scan_parquet([str(path) for path in paths], glob=False, hive_partitioning=False)


def register_views(con: duckdb.DuckDBPyConnection, datasets: Iterable[str]) -> ViewRegistration:
    """Create or replace one view per dataset in a read-write warehouse connection.

    A view stores the glob, not the file list, so it is registered once and then shows
    every batch published later. A dataset without batches is skipped (and reported):
    ``read_parquet`` refuses a glob that matches nothing.
    """
    registered: list[str] = []
    skipped: list[str] = []
    for dataset in datasets:
        if not batch_ids(dataset):
            skipped.append(dataset)
            logger.info("no view for dataset %s: it has no batches yet", dataset)
            continue
        glob = dataset_glob(dataset).replace("'", "''")
        con.execute(
            f'CREATE OR REPLACE VIEW "{dataset}" AS '
            f"SELECT * FROM read_parquet('{glob}', union_by_name = true)"
        )
        registered.append(dataset)
    return ViewRegistration(tuple(registered), tuple(skipped))


# ---------------------------------------------------------------- temp files


def _is_temp_name(name: str) -> bool:
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def clean_stale_temp_files(dataset: str, older_than_s: float = STALE_TEMP_AFTER_S) -> list[Path]:
    """Remove temp files left by failed or killed writers; returns the removed paths.

    Only files untouched for ``older_than_s`` seconds go: a younger one may belong to a
    writer that is still streaming its batch.
    """
    folder = dataset_dir(dataset)
    if not folder.is_dir():
        return []
    now = time.time()
    removed: list[Path] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            if not (_is_temp_name(entry.name) and entry.is_file(follow_symlinks=False)):
                continue
            try:
                if now - entry.stat(follow_symlinks=False).st_mtime < older_than_s:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:  # another cleaner, or its writer, got there first
                continue
            removed.append(Path(entry.path))
            logger.warning("removed stale temp file %s", entry.path)
    return removed


# ---------------------------------------------------------------- schemas


def _parquet_schema(schema: pa.Schema) -> pa.Schema:
    """The schema as it reads back from Parquet (e.g. date64 becomes date32), so that a
    batch is compared with stored files in the form it would be stored in."""
    sink = pa.BufferOutputStream()
    pq.write_table(schema.empty_table(), sink)
    return pq.read_schema(pa.BufferReader(sink.getvalue()))


def describe_schema_difference(expected: pa.Schema, actual: pa.Schema) -> str:
    expected_names, actual_names = expected.names, actual.names
    parts: list[str] = []
    missing = [name for name in expected_names if name not in actual_names]
    unexpected = [name for name in actual_names if name not in expected_names]
    if missing:
        parts.append(f"missing column(s) {missing}")
    if unexpected:
        parts.append(f"unexpected column(s) {unexpected}")
    for name in expected_names:
        if name not in actual_names:
            continue
        want, got = expected.field(name), actual.field(name)
        if not want.type.equals(got.type):
            parts.append(f"column {name!r} is {got.type}, expected {want.type}")
        elif want.nullable != got.nullable:
            parts.append(f"column {name!r} has nullable={got.nullable}, expected {want.nullable}")
    if not parts and expected_names != actual_names:
        parts.append(f"columns are in a different order; expected {expected_names}")
    return "; ".join(parts) or "schemas differ"


def _check_dataset_schema(dataset: str, batch_id: str, schema: pa.Schema) -> None:
    """Refuse a batch whose schema differs from the dataset's, before anything is written.

    All batches share one schema, so any one stored file stands for the dataset; reading
    its footer is cheap.
    """
    existing = next(iter(_published_files(dataset_dir(dataset))), None)
    if existing is None:
        return
    stored = pq.read_schema(existing)
    incoming = _parquet_schema(schema)
    if not incoming.equals(stored, check_metadata=False):
        raise SchemaMismatch(
            f"dataset {dataset!r}: batch {batch_id!r} does not match the dataset's schema "
            f"(as stored in {existing.name}): {describe_schema_difference(stored, incoming)}"
        )


# ---------------------------------------------------------------- batches and hashing


def _as_stream(data: BatchSource) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    if isinstance(data, pa.Table):
        return data.schema, iter(data.to_batches())
    if isinstance(data, pa.RecordBatch):
        return data.schema, iter([data])
    if isinstance(data, pa.RecordBatchReader):
        return data.schema, iter(data)
    batches = iter(data)
    first = next(batches, None)
    if first is None:
        raise ValueError("the batch has no record batches, so it has no schema; pass a pa.Table instead")
    if not isinstance(first, pa.RecordBatch):
        raise TypeError(f"expected pyarrow RecordBatches, got {type(first).__name__}")
    return first.schema, itertools.chain([first], batches)


def _fixed_size_chunks(
    schema: pa.Schema, batches: Iterator[pa.RecordBatch], rows: int, *, copy: bool = True
) -> Iterator[pa.RecordBatch]:
    """Re-cut the stream into contiguous chunks of exactly ``rows`` rows (the last may be
    shorter), whatever sizes the caller used. The chunks become the row groups and the
    unit of the content hash, so both are independent of the caller's chunking, and
    memory stays bounded by one row group."""
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for index, batch in enumerate(batches):
        if not isinstance(batch, pa.RecordBatch):
            raise TypeError(
                f"record batch {index}: expected a pyarrow RecordBatch, got {type(batch).__name__}"
            )
        if not batch.schema.equals(schema, check_metadata=False):
            raise SchemaMismatch(
                f"record batch {index} differs from the first: {describe_schema_difference(schema, batch.schema)}"
            )
        batch = pa.RecordBatch.from_arrays(batch.columns, schema=schema)
        offset = 0
        while offset < batch.num_rows:
            take = min(rows - pending_rows, batch.num_rows - offset)
            pending.append(batch.slice(offset, take))
            pending_rows += take
            offset += take
            if pending_rows == rows:
                # concat_batches copies into fresh buffers at offset 0, even for one piece
                # (the content hash needs that; a write without hashing can take the slice).
                yield pa.concat_batches(pending) if copy or len(pending) > 1 else pending[0]
                pending, pending_rows = [], 0
    if pending:
        yield pa.concat_batches(pending) if copy or len(pending) > 1 else pending[0]


def _canonical_arrays(array: pa.Array) -> Iterator[pa.Array]:
    """What identifies a column chunk's content: dictionaries decoded, and for nullable
    data the validity plus the non-null values, so that whatever sits in null slots
    (kernels leave arbitrary values there) does not change the hash."""
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if array.null_count:
        yield array.is_valid()
        array = array.drop_null()
    yield array


class _ContentHasher:
    """SHA-256 over Arrow IPC messages of the schema (without metadata) and of each
    fixed-size chunk's canonical columns.

    Why this and not sorted rows: it streams (sorting needs the whole batch in memory,
    against the bounded-memory property), costs one pass, and IPC is a stable, versioned
    format, so the hash should survive pyarrow upgrades and does not depend on the Parquet
    writer's encoding choices (the scheme is stored next to the hash to detect a change). It is order-sensitive on purpose: a retry resends the same
    rows in the same order, and the row order is part of what the file stores.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self._sha = hashlib.sha256(HASH_SCHEME.encode())
        plain = pa.schema([field.remove_metadata() for field in schema])
        self._sha.update(plain.serialize())
        self.rows = 0

    def update(self, chunk: pa.RecordBatch) -> None:
        self.rows += chunk.num_rows
        for column in chunk.columns:
            for array in _canonical_arrays(column):
                self._sha.update(pa.record_batch([array], names=["v"]).serialize())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _hash_stream(schema: pa.Schema, batches: Iterator[pa.RecordBatch]) -> _ContentHasher:
    hasher = _ContentHasher(schema)
    for chunk in _fixed_size_chunks(schema, batches, ROW_GROUP_ROWS):
        hasher.update(chunk)
    return hasher


class _GivenContent:
    """The content identity a caller already knows (``write_batch(content_id=...)``): no
    hashing pass, the rows are only counted."""

    def __init__(self, content_id: str) -> None:
        self.content_id = content_id
        self.rows = 0

    def update(self, chunk: pa.RecordBatch) -> None:
        self.rows += chunk.num_rows

    def hexdigest(self) -> str:
        return f"{CALLER_SCHEME}:{self.content_id}"


# ---------------------------------------------------------------- writing


def _write_temp(
    temp: Path,
    batch_id: str,
    schema: pa.Schema,
    batches: Iterator[pa.RecordBatch],
    content_id: str | None,
    compression: str,
) -> _ContentHasher | _GivenContent:
    hasher = _ContentHasher(schema) if content_id is None else _GivenContent(content_id)
    # Dictionary encoding only where it pays (text): for numbers it costs a quarter of the
    # write time and zstd compresses them as well without it.
    texts = [f.name for f in schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    # "xb": the uuid makes the name unique; exclusive creation makes sure of it.
    with (
        temp.open("xb") as handle,
        pq.ParquetWriter(handle, schema, compression=compression, use_dictionary=texts) as writer,
    ):
        for chunk in _fixed_size_chunks(schema, batches, ROW_GROUP_ROWS, copy=content_id is None):
            hasher.update(chunk)
            writer.write_batch(chunk, row_group_size=ROW_GROUP_ROWS)
        # The hash is known only at the end; the footer is written on close.
        writer.add_key_value_metadata(
            {
                META_BATCH_ID: batch_id,
                META_SHA256: hasher.hexdigest(),
                META_HASH_SCHEME: HASH_SCHEME if content_id is None else CALLER_SCHEME,
                META_ROWS: str(hasher.rows),
                META_WRITTEN_AT: datetime.now(UTC).isoformat(),
            }
        )
    return hasher


def _existing_result(dataset: str, batch_id: str, path: Path, content_sha256: str) -> WriteResult:
    """The outcome of writing a batch id that is already published: nothing, or a conflict."""
    metadata = pq.read_metadata(path)
    stored_sha256 = (metadata.metadata or {}).get(META_SHA256.encode(), b"").decode()
    if stored_sha256 != content_sha256:
        raise BatchConflict(
            f"dataset {dataset!r}: batch_id {batch_id!r} is already stored with different content "
            f"(stored sha256 {stored_sha256[:12] or 'missing'}, this batch {content_sha256[:12]}); "
            "the stored batch is kept, send new content under a new batch_id"
        )
    logger.info("batch %s/%s is already stored with the same content; nothing written", dataset, batch_id)
    return WriteResult(dataset, batch_id, path, False, metadata.num_rows, content_sha256)


def write_batch(
    dataset: str,
    batch_id: str,
    data: BatchSource,
    *,
    content_id: str | None = None,
    compression: str = COMPRESSION,
) -> WriteResult:
    """Store one batch exactly once: all of it or nothing, and once per batch id.

    ``data`` is a pyarrow Table or RecordBatch, a RecordBatchReader or any iterable of
    RecordBatches (streamed, so a batch larger than memory works). Raises ValueError for
    an invalid batch id, :class:`SchemaMismatch` for a schema that differs from the
    dataset's and :class:`BatchConflict` for different content under a stored batch id.

    ``content_id``: the content's identity when the caller already has one (the scorer's
    digest of the rows it stores), compared instead of a SHA-256 of the data, which then
    needs no hashing pass. ``compression``: the Parquet codec (zstd; ``lz4`` writes in
    two thirds of the CPU time, for files twice the size).
    """
    check_batch_id(batch_id)
    folder = dataset_dir(dataset)
    final = folder / f"{batch_id}.parquet"
    schema, batches = _as_stream(data)

    if final.exists():
        # Consume and hash the stream to tell a harmless retry from a conflict.
        given = _GivenContent(content_id).hexdigest() if content_id is not None else None
        return _existing_result(dataset, batch_id, final, given or _hash_stream(schema, batches).hexdigest())

    _check_dataset_schema(dataset, batch_id, schema)
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temp_files(dataset)

    # fsync: the data must be on disk before the link makes it visible, or a crash could
    # publish a short file; overwrite=False: of two writers racing on one id, one publishes.
    publication = AtomicFile(final, overwrite=False, fsync=True, suffix=TEMP_SUFFIX)
    with publication as temp:
        hasher = _write_temp(temp, batch_id, schema, batches, content_id, compression)
    published = publication.published

    if not published:
        return _existing_result(dataset, batch_id, final, hasher.hexdigest())
    logger.info("published %s/%s: %d rows", dataset, batch_id, hasher.rows)
    return WriteResult(dataset, batch_id, final, True, hasher.rows, hasher.hexdigest())
