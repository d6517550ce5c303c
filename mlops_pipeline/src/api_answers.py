"""Answers kept for an ``Idempotency-Key``, so a retry gets the original answer back.

Why keep the answer and not score again: the scoring core already makes a retry store no
rows (exactly once, by content), but a second scoring run would give a new ``batch_id``,
and could give other scores (a server restarted on a newer model, or a day context that
changed in the warehouse since). A client that retries because the first answer was lost
must get *that* answer. So the first successful answer under a key is kept beside the lake:

    <lake>/api_answers/<key>.json                 its metadata (batch_id, model_version, counts)
    <lake>/api_answers/<key>.<batch_id>.parquet   its rows (a hard link to the scorer's output)

The rows are published first, fsynced; the metadata file is published last with a hard
link that refuses to overwrite (``atomic.AtomicFile(overwrite=False)``), so it is the commit
point: of two requests racing on one key exactly one answer is kept, and the other request
answers with it too. A server killed before the commit point kept nothing; the client's
retry is then scored again (adding no rows) and its answer is the one kept.

The key itself is bound to the rows' content by ``scoring.register_request`` (inside
``file_scoring.score_file``): the same key with other rows is a 409. Kept answers are small
(the key columns and scores, zstd) and are not expired by the API; delete old files to
forget keys (a retry after that is scored again, with a new batch_id).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atomic import AtomicFile, fsync_dir
from settings import get_settings

FOLDER = "api_answers"


@dataclass(frozen=True)
class Answer:
    meta: dict[str, Any]  # what the JSON answer holds besides its rows
    rows: Path  # Parquet, the scorer's response columns
    replayed: bool = False


def answers_dir() -> Path:
    return Path(get_settings().lake_dir).absolute() / FOLDER


def find(key: str) -> Answer | None:
    """The answer kept for ``key``, or None (the key must already be a valid name)."""
    meta_path = answers_dir() / f"{key}.json"
    try:
        stored = json.loads(meta_path.read_text())
    except FileNotFoundError:
        return None
    rows = answers_dir() / stored.pop("rows_file")
    return Answer(stored, rows, replayed=True)


def keep(key: str, rows: Path, meta: dict[str, Any]) -> Answer:
    """Keep this answer for ``key`` unless another request kept one first; returns the kept one."""
    folder = answers_dir()
    folder.mkdir(parents=True, exist_ok=True)
    kept_rows = folder / f"{key}.{meta['batch_id']}.parquet"
    _link_or_copy(rows, kept_rows)
    commit = AtomicFile(folder / f"{key}.json", overwrite=False, fsync=True)
    with commit as temp:
        temp.write_text(json.dumps({**meta, "rows_file": kept_rows.name}))
    if commit.published:
        return Answer(meta, kept_rows)
    kept_rows.unlink(missing_ok=True)  # another request on this key committed first
    winner = find(key)
    if winner is None:  # cannot happen: the metadata file is never removed by the API
        raise FileNotFoundError(f"the answer kept for {key!r} vanished")
    return winner


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # same file system (the default spool is inside the lake)
    except OSError:
        shutil.copyfile(source, target)
    with target.open("rb+") as handle:
        os.fsync(handle.fileno())
    fsync_dir(target.parent)
