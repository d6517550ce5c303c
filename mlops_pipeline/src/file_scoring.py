"""The streaming file scorer: a Parquet or CSV file in, a Parquet file of scores out.

The input is read in bounded chunks (``batch_io``), re-cut at flight-date boundaries
(:class:`DayChunks`), and each chunk goes through the scoring core: contract, features in
the day context of its dates, predict, and, when persisting, :func:`scoring.persist`, which stores only the rows the
scored table does not hold yet. The output holds exactly the input's rows, in the input's
order, with the scores the model gives them; it is written under a temp name and renamed
into place when every chunk is done (``batch_io.ResponseFile``).

Chunk i is stored in the scored table by one thread while chunk i+1 is predicted and
written by another and this thread reads, checks and builds the features of chunk i+2
(Polars, lleaves, numpy and Arrow release the GIL): three chunks in memory at most.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
from tqdm.auto import tqdm

import scoring
from batch_io import ResponseFile, read_file
from data_contract import CONTRACT_DTYPES, validate_scoring_input
from scoring import Prepared, Scorer

logger = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 250_000
DAY_COLUMNS = ("year", "month", "day")


@dataclass
class DayChunks:
    """Re-cut a stream of frames into chunks of whole flight dates (>= batch_rows rows), in
    the stream's order.

    A date the warehouse holds is scored in its whole stored day whatever the chunk holds
    (``day_context``), so the cut no longer decides a score there; it still pays twice: a
    chunk that holds its dates whole replaces every stored flight of them, so the merge adds
    no rows to compute, and a date the warehouse does not hold (``batch_only``) sees all of
    its flights in the file. For input sorted by date this holds by construction: the rows
    of the last date of a chunk are held back for the next one. Rows are never reordered,
    so for unsorted input a chunk is cut where it fills, and a date that appears in more
    than one chunk is counted in ``split_dates`` and reported.

    The cut compares year/month/day as sent, before validation: a null, a text or an
    impossible date (month 13) is carried to the contract, which names it; a frame without
    these columns passes through as it is, for the contract to report the missing column.
    """

    batch_rows: int
    split_dates: set[tuple] = field(default_factory=set)
    _emitted: set[tuple] = field(default_factory=set)

    def __call__(self, frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
        carry: list[pl.DataFrame] = []
        carried = 0
        for frame in frames:
            if not set(DAY_COLUMNS) <= set(frame.columns):
                yield frame
                continue
            carry.append(frame)
            carried += frame.height
            if carried < self.batch_rows:
                continue
            combined = pl.concat(carry, how="vertical_relaxed") if len(carry) > 1 else carry[0]
            # the last row's date may go on in the next frame: hold back its trailing rows
            last = combined.select(DAY_COLUMNS).row(-1)
            same_day = combined.select(
                pl.all_horizontal(pl.col(c).eq_missing(pl.lit(v)) for c, v in zip(DAY_COLUMNS, last))
            ).to_series()
            n_held = int(same_day.sum())
            if n_held == combined.height:  # one date fills the chunk: read on until it ends
                carry, carried = [combined], combined.height
                continue
            if not same_day.tail(n_held).all():  # unsorted: no tail to hold back
                n_held = 0
            ready, rest = combined.head(combined.height - n_held), combined.tail(n_held)
            carry, carried = [rest], n_held
            yield self._emit(ready)
        if carried:
            yield self._emit(pl.concat(carry, how="vertical_relaxed"))

    def _emit(self, chunk: pl.DataFrame) -> pl.DataFrame:
        dates = set(chunk.select(DAY_COLUMNS).unique().rows())
        self.split_dates |= dates & self._emitted
        self._emitted |= dates
        return chunk


def response_schema(scorer: Scorer) -> pa.Schema:
    """The response's Arrow schema (what ``score`` returns for an empty batch)."""
    return scoring.score(pl.DataFrame(schema=CONTRACT_DTYPES), scorer).to_arrow().schema


@dataclass
class ScoreFileResult:
    rows: int
    chunks: int
    new_rows: int  # rows stored in the scored table by this run
    new_batches: int
    already_stored: int  # rows the scored table held already (same rows, same model)
    seconds: float
    split_dates: int
    output: Path
    model_version: str
    request_name: str | None = None
    startup_seconds: float = 0.0  # Ray: starting or connecting to the cluster (in ``seconds``)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("nan")

    def summary(self) -> str:
        stored = (
            f"{self.new_rows:,} new rows stored in {self.new_batches} batch(es), "
            f"{self.already_stored:,} already stored under model {self.model_version}"
            if self.new_rows or self.already_stored
            else f"not persisted (model {self.model_version})"
        )
        return (
            f"scored {self.rows:,} rows in {self.chunks} chunks in {self.seconds:.1f}s = "
            f"{self.rows_per_second:,.0f} rows/s; {stored} -> {self.output}"
        )


def content_of(path: Path, batch_rows: int) -> scoring.ContentDigest:
    """The content digest of a file's rows as the contract normalises them (no features)."""
    frames, _ = read_file(path, batch_rows)
    content = scoring.ContentDigest()
    for frame in frames:
        content.add(scoring.row_digests(validate_scoring_input(frame)))
    return content


def check_request_name(path: Path, name: str, batch_rows: int) -> None:
    """Refuse, before anything is scored, a request name already used for other rows."""
    stored = scoring.registered_content(name)
    if stored is None:
        return
    digest = content_of(path, batch_rows).hexdigest()
    if digest != stored:
        raise scoring.request_conflict(name, stored, digest)


@scoring.one_request_per_name
def score_file(
    input_path: Path,
    output_path: Path,
    *,
    scorer: Scorer | None = None,
    model_version: str | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    persist: bool = True,
    request_name: str | None = None,
    progress: bool = True,
    overlap: bool = True,
) -> ScoreFileResult:
    """Score a Parquet/CSV file in bounded chunks of whole flight dates (module docstring),
    with ``scorer`` or else the model ``model_version`` (default: the latest).

    With ``persist``, the rows the scored table does not hold yet for this model are stored
    (a re-run adds nothing; a run killed midway leaves only whole batches, and the next run
    stores the rest). ``request_name`` binds the client's name for this request to its
    rows (``scoring.register_request``). ``overlap=False`` runs every stage in this thread,
    one chunk after the other (for profiling the stages; the results are the same).
    """
    started = time.perf_counter()
    frames, total = read_file(input_path, batch_rows)  # refuses a missing or unreadable file
    if request_name is not None:
        check_request_name(input_path, request_name, batch_rows)
    scorer = scorer or Scorer.load(model_version)  # after the input checks: they are quicker
    chunker = DayChunks(batch_rows)
    content = scoring.ContentDigest()
    digests = persist or request_name is not None
    bar = tqdm(
        total=total, unit="rows", unit_scale=True, desc=f"scoring {input_path.name}", disable=not progress
    )
    counts = {"rows": 0, "chunks": 0, "new_rows": 0, "new_batches": 0, "already_stored": 0}

    stored_pending: list[Future] = []

    def store(scored: pl.DataFrame) -> None:
        stored = scoring.persist(scored)
        counts["new_rows"] += stored.new_rows
        counts["new_batches"] += stored.batch_id is not None
        counts["already_stored"] += stored.already_stored

    def finish_chunk(prepared: Prepared) -> None:
        """Predict and write one chunk, and hand it to the store thread (chunks in order)."""
        scored = scoring.finish(prepared, scorer, with_features=persist)
        if persist:
            if stored_pending:
                stored_pending.pop().result()  # the previous chunk is stored (or its error raised)
            if overlap:
                stored_pending.append(storer.submit(store, scored))
            else:
                store(scored)
        out.write(scored.select(scoring.RESPONSE_COLUMNS).to_arrow())
        counts["rows"] += scored.height
        counts["chunks"] += 1
        bar.update(scored.height)

    # Three threads, one chunk each: this one prepares chunk i+2 while the worker predicts
    # and writes chunk i+1 and the store thread writes chunk i to the scored table (its
    # fsync waits on the disk, not the CPU). Leaving the block waits for both, so a failure
    # in a later chunk still leaves the earlier ones whole in the scored table and no output.
    with (
        bar,
        ResponseFile(output_path, lambda: response_schema(scorer)) as out,
        # the storer is listed first so it shuts down last: on an error the worker's chunk in
        # flight still hands its rows to a live storer, which stores them whole
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-store") as storer,
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="score-worker") as worker,
    ):
        pending: Future | None = None
        for chunk in chunker(frames):
            prepared = scoring.prepare(chunk, scorer, with_digests=digests)
            if prepared.digests is not None:
                content.add(prepared.digests)
            if pending is not None:
                pending.result()  # the previous chunk is written (or its error raised here)
            if overlap:
                pending = worker.submit(finish_chunk, prepared)
            else:
                finish_chunk(prepared)
        if pending is not None:
            pending.result()
        if stored_pending:
            stored_pending.pop().result()
        if request_name is not None:
            scoring.register_request(request_name, content)
    if chunker.split_dates:
        logger.warning(
            "%s is not sorted by flight date: %d dates were scored in more than one chunk; dates the "
            "warehouse holds were scored in their whole day all the same, but a date it does not hold "
            "(context=batch_only) saw only the chunk's flights: sort the input by date",
            input_path.name,
            len(chunker.split_dates),
        )
    return ScoreFileResult(
        **counts,
        seconds=time.perf_counter() - started,
        split_dates=len(chunker.split_dates),
        output=output_path,
        model_version=scorer.version,
        request_name=request_name,
    )
