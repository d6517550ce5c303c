"""The reference profile: what monitoring compares production data with, built at training time.

The reference profile is fitted once, at training time, and travels inside the model
artifact: per feature, bins from training quantiles and the training share of each bin
(numeric), or the share of each category level (categorical), plus the null rate; and
the distribution of the model's scores on the validation period (out-of-sample, like
production). Monitoring never re-derives these: it bins each production window with the
stored edges and compares shares (docs/monitoring.md).

Format 2 (:data:`PROFILE_FORMAT`) adds what the monitoring job needs beyond the decile
shares of format 1 (which are kept, unchanged, under ``edges`` / ``shares``):

- ``bins``: tie-aware edges. A value holding at least :data:`POINT_MASS_SHARE` of the
  training rows (``precip`` is 0 in about 92 % of the hours) gets a bin of its own, so a
  wet week moves mass out of that bin and PSI, JS and chi-squared see it; the decile edges
  of format 1 collapse to one edge there and read 0. Bins are right-closed:
  ``(-inf, e1], (e1, e2], ..., (ek, inf)``; the bin of ``x`` is the number of edges below
  ``x``. ``min`` / ``max`` bound the training range (monitoring puts values outside it in
  an out-of-range bin).
- ``ks_reference``: the training distribution for the Kolmogorov-Smirnov test, as sorted
  distinct values with counts. Exact (every training value) when the feature has at most
  :data:`KS_EXACT_MAX_DISTINCT` distinct values, which covers every integer and day-level
  feature; otherwise a fixed-seed sample of :data:`KS_SAMPLE_SIZE` values. With a sample of
  m values, the Dvoretzky-Kiefer-Wolfowitz inequality bounds the gap between the sample's
  and the training set's CDF: sup |F_m - F| <= sqrt(ln(2/0.05) / (2m)) = 0.019 for m = 5,000
  with 95 % probability, a fifth of the KS threshold (0.1).
- categorical ``buckets``: each level's share plus ``__unseen__`` (rows whose category the
  model does not know: rare in training, so coded as missing) and ``__null__``.

Training builds the profile here; the monitoring job (``model_monitoring.py``) reads it
from the artifact. Keeping it apart means training never imports the monitoring job.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl

logger = logging.getLogger(__name__)

PROFILE_FORMAT = 2
N_BINS = 10
# A single value with at least half a decile of the rows is a point mass: it gets its own bin.
POINT_MASS_SHARE = 0.05
KS_EXACT_MAX_DISTINCT = 5_000
KS_SAMPLE_SIZE = 5_000
KS_SAMPLE_SEED = 20130630  # fixed: the same training data always gives the same reference sample
SCORE_EDGES = [round(x, 2) for x in np.linspace(0.0, 1.0, 21)]  # fixed 0.05-wide bins for scores
OTHER_LEVEL = "__other__"  # format 1: a category that is unseen, rare in training, or missing
UNSEEN_BUCKET = "__unseen__"  # a category the model does not know (rare in training or new)
NULL_BUCKET = "__null__"


def _clean(values: pl.Series) -> np.ndarray:
    """The non-null, non-NaN values as float64."""
    array = values.drop_nulls().cast(pl.Float64).to_numpy()
    return array[~np.isnan(array)]


def quantile_edges(values: pl.Series, n_bins: int = N_BINS) -> list[float]:
    """Inner bin edges at the training deciles (duplicates collapse for discrete features)."""
    clean = _clean(values)
    if clean.size == 0:
        return []
    qs = np.quantile(clean, np.linspace(0, 1, n_bins + 1)[1:-1])
    return sorted({float(q) for q in qs})


def tie_aware_edges(values: pl.Series | np.ndarray, n_bins: int = N_BINS) -> list[float]:
    """Right-closed bin edges in which every point mass has a bin of its own.

    A point mass ``m`` (a value with >= POINT_MASS_SHARE of the rows) gets the edges
    ``nextafter(m, -inf)`` and ``m``, so its bin ``(nextafter(m, -inf), m]`` holds exactly
    ``m``. The remaining values are cut at their own quantiles into the bins that are left
    (at least one). Edges outside ``[min, max)`` would only make bins that are empty in
    training and are dropped.
    """
    clean = values if isinstance(values, np.ndarray) else _clean(values)
    clean = clean[~np.isnan(clean)]
    if clean.size == 0:
        return []
    levels, counts = np.unique(clean, return_counts=True)
    masses = levels[counts / clean.size >= POINT_MASS_SHARE]
    rest = clean[~np.isin(clean, masses)]
    edges: set[float] = set()
    n_interval = max(n_bins - masses.size, 1)
    if rest.size and n_interval > 1:
        # inverted_cdf: every cut is a value that occurs, never an interpolation between two
        cuts = np.quantile(rest, np.linspace(0, 1, n_interval + 1)[1:-1], method="inverted_cdf")
        edges.update(float(c) for c in cuts)
    for mass in masses:
        edges.update((float(np.nextafter(mass, -np.inf)), float(mass)))
    low, high = float(clean.min()), float(clean.max())
    return sorted(e for e in edges if low <= e < high)


def bin_index(values: np.ndarray, edges: list[float]) -> np.ndarray:
    """The bin of each value: the number of edges strictly below it (right-closed bins)."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="left")


def bin_shares(values: pl.Series, edges: list[float]) -> list[float]:
    """Share of non-null values in each bin (-inf, e1], (e1, e2], ..., (ek, inf)."""
    clean = _clean(values)
    if clean.size == 0:
        return [float("nan")] * (len(edges) + 1)
    counts = np.bincount(bin_index(clean, edges), minlength=len(edges) + 1)
    return (counts / clean.size).tolist()


def level_shares(codes: pl.Series, levels: list[str]) -> dict[str, float]:
    """Share of each category level, given integer codes into ``levels`` (null = other)."""
    total = len(codes)
    if total == 0:
        return {}
    counts = codes.value_counts()
    shares = {OTHER_LEVEL: 0.0}
    for code, count in counts.iter_rows():
        name = OTHER_LEVEL if code is None else levels[code]
        shares[name] = shares.get(name, 0.0) + count / total
    return shares


def bucket_shares(codes: pl.Series, levels: list[str], unknown: pl.Series | None) -> dict[str, float]:
    """Share of each level, of unseen categories (coded null, flagged unknown) and of nulls."""
    total = len(codes)
    if total == 0:
        return {}
    flags = unknown if unknown is not None else pl.Series([False] * total)
    frame = pl.DataFrame({"code": codes, "unknown": flags.fill_null(False)})
    shares = {level: 0.0 for level in levels} | {UNSEEN_BUCKET: 0.0, NULL_BUCKET: 0.0}
    for code, flag, count in frame.group_by("code", "unknown").len().iter_rows():
        name = UNSEEN_BUCKET if flag else NULL_BUCKET if code is None else levels[code]
        shares[name] += count / total
    return shares


def null_rate(values: pl.Series) -> float:
    if len(values) == 0:
        return float("nan")
    nulls = values.is_null().sum() + (values.is_nan().sum() if values.dtype.is_float() else 0)
    return float(nulls / len(values))


def ks_reference(clean: np.ndarray, seed: int = KS_SAMPLE_SEED) -> dict[str, Any]:
    """The distribution the KS test compares with: exact value counts, or a fixed-seed sample's."""
    levels, counts = np.unique(clean, return_counts=True)
    kind = "exact"
    if levels.size > KS_EXACT_MAX_DISTINCT:
        sample = np.random.default_rng(seed).choice(clean, size=KS_SAMPLE_SIZE, replace=False)
        levels, counts = np.unique(sample, return_counts=True)
        kind = "sample"
    return {
        "kind": kind,
        "n": int(counts.sum()),
        "values": [float(v) for v in levels],
        "counts": [int(c) for c in counts],
    }


def numeric_bins(clean: np.ndarray) -> dict[str, Any]:
    """Tie-aware bins, their training shares and the training range (format 2)."""
    if clean.size == 0:
        return {"edges": [], "shares": [], "min": None, "max": None}
    edges = tie_aware_edges(clean)
    counts = np.bincount(bin_index(clean, edges), minlength=len(edges) + 1)
    return {
        "edges": edges,
        "shares": (counts / clean.size).tolist(),
        "min": float(clean.min()),
        "max": float(clean.max()),
    }


def build_reference_profile(
    train: pl.DataFrame,
    numeric: list[str],
    categorical: dict[str, list[str]],
    reference_scores: np.ndarray,
    *,
    score_period: str,
) -> dict[str, Any]:
    """The reference profile saved with the model (JSON-serialisable)."""
    features: dict[str, Any] = {}
    for name in numeric:
        clean = _clean(train[name])
        edges = quantile_edges(train[name])
        features[name] = {
            "kind": "numeric",
            "edges": edges,
            "shares": bin_shares(train[name], edges),
            "null_rate": null_rate(train[name]),
            "n": int(train.height),
            "bins": numeric_bins(clean),
            "ks_reference": ks_reference(clean),
        }
    for name, levels in categorical.items():
        unknown = train[f"unknown_{name}"] if f"unknown_{name}" in train.columns else None
        features[name] = {
            "kind": "categorical",
            "levels": levels,
            "shares": level_shares(train[name], levels),
            "null_rate": null_rate(train[name]),
            "n": int(train.height),
            "buckets": bucket_shares(train[name], levels, unknown),
        }
    scores = pl.Series("score", reference_scores)
    clean_scores = _clean(scores)
    return {
        "format": PROFILE_FORMAT,
        "rows": train.height,
        "features": features,
        "score": {
            "period": score_period,
            "edges": SCORE_EDGES[1:-1],
            "shares": bin_shares(scores, SCORE_EDGES[1:-1]),
            "mean": float(scores.mean()),
            "null_rate": null_rate(scores),
            "n": int(scores.len()),
            "bins": numeric_bins(clean_scores),
            "ks_reference": ks_reference(clean_scores),
        },
    }
