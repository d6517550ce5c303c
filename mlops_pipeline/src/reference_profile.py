"""The reference profile: what monitoring compares production data with, built at training time.

The reference profile is fitted once, at training time, and travels inside the model
artifact (DESIGN property 3): per feature, bin edges from training quantiles and the
training share of each bin (numeric), or the share of each category level
(categorical), plus the null rate; and the distribution of the model's scores on the
validation period (out-of-sample, like production). Monitoring never re-derives
these: it bins each production window with the stored edges and compares shares.

Training builds the profile here; the monitoring job (``model_monitoring.py``) reads it
from the artifact. Keeping it apart means training never imports the monitoring job.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import polars as pl

logger = logging.getLogger(__name__)

N_BINS = 10
SCORE_EDGES = [round(x, 2) for x in np.linspace(0.0, 1.0, 21)]  # fixed 0.05-wide bins for scores
OTHER_LEVEL = "__other__"  # a category that is unseen, rare in training, or missing


def quantile_edges(values: pl.Series, n_bins: int = N_BINS) -> list[float]:
    """Inner bin edges at the training deciles (duplicates collapse for discrete features)."""
    clean = values.drop_nulls().drop_nans() if values.dtype.is_float() else values.drop_nulls()
    if clean.is_empty():
        return []
    qs = np.quantile(clean.cast(pl.Float64).to_numpy(), np.linspace(0, 1, n_bins + 1)[1:-1])
    return sorted({float(q) for q in qs})


def bin_shares(values: pl.Series, edges: list[float]) -> list[float]:
    """Share of non-null values in each bin (-inf, e1], (e1, e2], ..., (ek, inf)."""
    clean = values.drop_nulls().cast(pl.Float64).to_numpy()
    clean = clean[~np.isnan(clean)]
    if clean.size == 0:
        return [float("nan")] * (len(edges) + 1)
    counts = np.bincount(np.searchsorted(edges, clean, side="left"), minlength=len(edges) + 1)
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


def null_rate(values: pl.Series) -> float:
    if len(values) == 0:
        return float("nan")
    nulls = values.is_null().sum() + (values.is_nan().sum() if values.dtype.is_float() else 0)
    return float(nulls / len(values))


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
        edges = quantile_edges(train[name])
        features[name] = {
            "kind": "numeric",
            "edges": edges,
            "shares": bin_shares(train[name], edges),
            "null_rate": null_rate(train[name]),
        }
    for name, levels in categorical.items():
        features[name] = {
            "kind": "categorical",
            "levels": levels,
            "shares": level_shares(train[name], levels),
            "null_rate": null_rate(train[name]),
        }
    scores = pl.Series("score", reference_scores)
    return {
        "rows": train.height,
        "features": features,
        "score": {
            "period": score_period,
            "edges": SCORE_EDGES[1:-1],
            "shares": bin_shares(scores, SCORE_EDGES[1:-1]),
            "mean": float(scores.mean()),
        },
    }
