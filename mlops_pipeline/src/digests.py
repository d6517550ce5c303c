"""Row digests: the 64-bit identity of a scoring-input row, and digests of sets of rows.

A row's digest depends only on its values as the scoring contract normalised them (every
scoring-input column, typed), never on the file, the chunk or the row order; the scoring
core (``scoring.persist``) and the day context (``day_context``) build identities from it
(docs/scoring.md, "Exactly once, by content").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import polars as pl

from data_contract import CONTRACT_DTYPES, SCORING_INPUT_COLUMNS

DIGEST_COLUMN = "row_digest"
# Bump when what the digest covers or how it is computed changes: digests of two schemes
# never match, so rows stored under the old scheme would be stored again.
DIGEST_SCHEME = "row-digest-v1/fnv1a-words/splitmix64/blake2b-8"


def _splitmix(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser: a bijective 64-bit mix (numpy uint64 arithmetic wraps)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _blake64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


_NULL = np.uint64(_blake64("null"))
_SEED = np.uint64(
    _blake64(DIGEST_SCHEME + "|" + "|".join(f"{c}:{CONTRACT_DTYPES[c]}" for c in SCORING_INPUT_COLUMNS))
)


_PRIME = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime: odd, so multiplying by it is a bijection

# two re-mixes of a row digest for the order-independent sums (ContentDigest, group_digests)
_MIX_A = np.uint64(0x9E3779B97F4A7C15)
_MIX_B = np.uint64(0x632BE59BD9B4E019)


def _value_words(column: pl.Series) -> np.ndarray:
    """Each value as a uint64 that depends only on the value (nulls get one fixed word)."""
    dtype = column.dtype
    if dtype == pl.String:
        # each distinct text hashed once (blake2b), gathered through Enum codes
        levels = column.drop_nulls().unique().sort()
        words = np.array([_blake64(v) for v in levels], dtype=np.uint64)
        codes = column.cast(pl.Enum(levels.to_list())).to_physical().fill_null(0).to_numpy()
        values = words[codes] if words.size else np.zeros(column.len(), dtype=np.uint64)
    elif dtype.is_float():
        # -0.0 == 0.0 folds the two zeros into one; the contract turned NaN into null
        floats = column.cast(pl.Float64).fill_null(0.0).to_numpy()
        values = np.where(floats == 0.0, 0.0, floats).view(np.uint64)
    elif dtype.is_temporal():
        values = column.to_physical().cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64)
    else:
        values = column.cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64)
    if column.null_count():
        values = np.where(column.is_null().to_numpy(), _NULL, values)
    return values


def row_digests(valid: pl.DataFrame) -> np.ndarray:
    """The 64-bit digest of each row of a validated batch (see the module docstring).

    FNV-1a over 64-bit words (every scoring-input column in contract order), then the
    splitmix64 finaliser. Each step is a bijection of the running value, so two rows that
    differ in one column never share a digest; the finaliser spreads every input bit."""
    return _fnv_words(valid, SCORING_INPUT_COLUMNS, _SEED)


def frame_digests(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """The digest of each row of ``frame`` over ``columns`` (as typed), as :func:`row_digests`
    does it; the seed covers the column names and types, so other columns never collide."""
    seed = _blake64(DIGEST_SCHEME + "|frame|" + "|".join(f"{c}:{frame.schema[c]}" for c in columns))
    return _fnv_words(frame, columns, np.uint64(seed))


def _fnv_words(frame: pl.DataFrame, columns: list[str], seed: np.uint64) -> np.ndarray:
    digest = np.full(frame.height, seed, dtype=np.uint64)
    for name in columns:
        digest ^= _value_words(frame.get_column(name))
        digest *= _PRIME
    return _splitmix(digest)


@dataclass
class ContentDigest:
    """An order-independent digest of a multiset of rows: two sums of re-mixed row digests
    (mod 2**64) and the row count. It streams: chunks can be added in any order."""

    rows: int = 0
    a: int = 0
    b: int = 0

    def add(self, digests: np.ndarray) -> ContentDigest:
        self.rows += int(digests.size)
        mask = (1 << 64) - 1
        self.a = (self.a + int(_splitmix(digests ^ _MIX_A).sum(dtype=np.uint64))) & mask
        self.b = (self.b + int(_splitmix(digests + _MIX_B).sum(dtype=np.uint64))) & mask
        return self

    def merge(self, other: ContentDigest) -> ContentDigest:
        mask = (1 << 64) - 1
        self.rows += other.rows
        self.a, self.b = (self.a + other.a) & mask, (self.b + other.b) & mask
        return self

    def hexdigest(self) -> str:
        return f"{self.a:016x}{self.b:016x}{self.rows:x}"


def group_digests(groups: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """For each row, an order-independent digest of the digests of every row of its group
    (``groups``: any integer label per row). The same multiset of rows in a group gives the
    same digest however the rows are ordered or batched."""
    labels, inverse = np.unique(groups, return_inverse=True)
    a = np.zeros(labels.size, dtype=np.uint64)
    b = np.zeros(labels.size, dtype=np.uint64)
    np.add.at(a, inverse, _splitmix(digests ^ _MIX_A))  # uint64 sums wrap: mod 2**64
    np.add.at(b, inverse, _splitmix(digests + _MIX_B))
    count = np.bincount(inverse, minlength=labels.size).astype(np.uint64)
    return _splitmix(a ^ _splitmix(b ^ _splitmix(count)))[inverse]


def combine_digests(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """One digest per row from two (a row's digest and its day context's): a change in either
    changes it."""
    return _splitmix(a ^ _splitmix(b + _MIX_B))
