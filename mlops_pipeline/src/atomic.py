"""Atomic file publication: write under a temp name in the same folder, then rename into place.

Every file the system publishes (the extract, model artifacts and their LATEST pointer,
compiled models, scorer outputs, lake batches) goes through :class:`AtomicFile`, so a
reader sees the old file or the new one, never half of one, and a writer that fails
or is killed leaves at most a temp file (``.<name>.<uuid>.tmp``, which no reader globs).

``overwrite=False`` publishes with ``os.link``, which, unlike ``os.replace``, refuses an
existing target: of two writers racing on one name exactly one publishes (the lake's
exactly-once write relies on it). ``fsync=True`` makes the data durable before the name
points at it, and the directory entry after.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

TEMP_SUFFIX = ".tmp"


def temp_name(final: Path, suffix: str = TEMP_SUFFIX) -> Path:
    """A unique temp path beside ``final``: hidden, and not matching ``final``'s own suffix glob."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex}{suffix}")


def fsync_dir(folder: Path) -> None:
    # Makes a new directory entry durable; Windows cannot open a directory for fsync.
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class AtomicFile:
    """``with AtomicFile(final) as temp:`` write ``temp`` (a path, file or folder); on a clean
    exit it is published as ``final``, on an exception it is removed and ``final`` is untouched.

    After the block, ``published`` is False only when ``overwrite=False`` and another writer
    had already published ``final`` (the caller decides whether that is a conflict).
    """

    def __init__(
        self, final: Path, *, overwrite: bool = True, fsync: bool = False, suffix: str = TEMP_SUFFIX
    ):
        self.final = Path(final)
        self.overwrite = overwrite
        self.fsync = fsync
        self.temp = temp_name(self.final, suffix)
        self.published = False

    def __enter__(self) -> Path:
        self.final.parent.mkdir(parents=True, exist_ok=True)
        return self.temp

    def __exit__(self, exc_type, exc, traceback) -> None:
        try:
            if exc_type is not None or not self.temp.exists():
                return
            if self.fsync and self.temp.is_file():
                with self.temp.open("rb+") as handle:
                    os.fsync(handle.fileno())
            if self.overwrite:
                os.replace(self.temp, self.final)
                self.published = True
            else:
                try:
                    os.link(self.temp, self.final)  # atomic, and never overwrites
                    self.published = True
                except FileExistsError:
                    self.published = False
            if self.fsync:
                fsync_dir(self.final.parent)
        finally:
            _remove(self.temp)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def write_bytes(final: Path, data: bytes) -> None:
    """Publish ``data`` as ``final`` atomically (replacing it)."""
    with AtomicFile(final) as temp:
        temp.write_bytes(data)
