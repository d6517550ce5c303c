"""Train candidate models, compare them, pick the best and save it as a versioned artifact.

    python mlops_pipeline/src/model_training_evaluation.py

Candidates (``CANDIDATES``): a prior baseline, logistic regression, scikit-learn's
HistGradientBoosting and LightGBM tuned on the time-ordered validation months with early
stopping. Every candidate is built by :func:`build_model` and scored by
:func:`summarize_classification`. The comparison covers

* performance: validation and test metrics;
* consistency: ROC-AUC per month over validation + test, its mean, spread and worst month;
* scalability: fit time, scoring rows/s, model size.

Selection rule (:data:`SELECTION_RULE`): highest validation ROC-AUC among candidates that
save in a native, non-pickle format (docs/properties.md, property 8), which today is LightGBM; the
test period is reported, never used to choose. The decision threshold minimises the
expected business cost on validation (settings ``cost_missed_disruption`` vs
``cost_unneeded_buffer``).

Outputs: ``artifacts/models/<version>/`` (see model_artifact.py) and
``artifacts/reports/<version>/`` (summary.md, summary.csv, monthly.csv, reliability.csv and the
comparison plots, written by training_report.py).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import pickle
import platform
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import lightgbm as lgb
import matplotlib

matplotlib.use("Agg")  # headless: figures are written to files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from sklearn.compose import ColumnTransformer  # noqa: E402
from sklearn.dummy import DummyClassifier  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import OneHotEncoder, StandardScaler  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import ft_engineering as fe  # noqa: E402
import training_report as report  # noqa: E402
from model_artifact import gain_shares, models_dir, save_artifact, set_latest, verify  # noqa: E402
from reference_profile import build_reference_profile  # noqa: E402
from settings import get_settings  # noqa: E402

logger = logging.getLogger(__name__)
# LightGBM is fitted with feature names (kept in model.txt) and then fed the same columns as
# a NumPy matrix, which scikit-learn's wrapper reports on every predict.
warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)

CANDIDATES = ("baseline", "logistic_regression", "hist_gradient_boosting", "lightgbm")
NATIVE_FORMAT = {"lightgbm"}  # saved as LightGBM text; the others would need pickle
SELECTION_RULE = (
    "highest validation ROC-AUC among candidates with a native, non-pickle model format "
    "(docs/properties.md, property 8); the test period is reported, never used to choose"
)
CATEGORICAL_INDEX = [fe.FEATURES.index(c) for c in fe.CATEGORICAL_FEATURES]
NUMERIC_INDEX = [fe.FEATURES.index(c) for c in fe.NUMERIC_FEATURES]

LGBM_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "metric": "auc",  # early stopping and tuning both judge validation ROC-AUC
    "n_estimators": 3000,  # an upper bound: early stopping on validation picks the rounds
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_child_samples": 200,
    "colsample_bytree": 0.7,
    "subsample": 0.8,
    "subsample_freq": 1,
    "reg_lambda": 5.0,
    "cat_smooth": 50.0,
    "cat_l2": 10.0,
    "min_data_per_group": 200,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}
# Tuned on the validation months: model capacity vs the amount of data per leaf.
LGBM_GRID: list[dict[str, Any]] = [
    {"num_leaves": 15, "min_child_samples": 500},
    {"num_leaves": 31, "min_child_samples": 200},
    {"num_leaves": 63, "min_child_samples": 1000, "reg_lambda": 20.0},
]
EARLY_STOPPING_ROUNDS = 200


# --------------------------------------------------------------------------- models


def build_model(name: str, params: dict[str, Any] | None = None):
    """An unfitted estimator for a candidate name; ``params`` override its defaults."""
    params = dict(params or {})
    settings = get_settings()
    if name == "baseline":
        return DummyClassifier(strategy="prior")
    if name == "logistic_regression":
        columns = ColumnTransformer(
            [
                (
                    "numeric",
                    Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]),
                    NUMERIC_INDEX,
                ),
                (
                    "categorical",
                    Pipeline(
                        [
                            ("impute", SimpleImputer(strategy="constant", fill_value=-1)),
                            ("onehot", OneHotEncoder(handle_unknown="ignore")),
                        ]
                    ),
                    CATEGORICAL_INDEX,
                ),
            ]
        )
        model = LogisticRegression(**{"C": 1.0, "max_iter": 2000, **params})
        return Pipeline([("columns", columns), ("model", model)])
    if name == "hist_gradient_boosting":
        defaults = {"max_iter": 300, "learning_rate": 0.1, "max_leaf_nodes": 31, "min_samples_leaf": 200}
        return HistGradientBoostingClassifier(
            **{**defaults, **params},
            categorical_features=[i in CATEGORICAL_INDEX for i in range(len(fe.FEATURES))],
            early_stopping=False,  # its internal split is random; our validation is by time
            random_state=settings.seed,
        )
    if name == "lightgbm":
        return lgb.LGBMClassifier(
            **{**LGBM_PARAMS, **params}, random_state=settings.seed, n_jobs=settings.n_threads
        )
    raise ValueError(f"unknown model {name!r}; candidates are {CANDIDATES}")


def summarize_classification(y_true, y_score, threshold: float = 0.5) -> dict[str, float]:
    """Ranking, probability and decision metrics for one set of scores."""
    y_true = np.asarray(y_true).astype(int)
    y_score = np.asarray(y_score, dtype=float)
    y_pred = (y_score >= threshold).astype(int)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "roc_auc": float(roc_auc_score(y_true, y_score)) if both_classes else float("nan"),
        "pr_auc": float(average_precision_score(y_true, y_score)) if both_classes else float("nan"),
        "log_loss": float(log_loss(y_true, np.clip(y_score, 1e-15, 1 - 1e-15), labels=[0, 1])),
        "brier": float(brier_score_loss(y_true, y_score)),
        "precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "positive_rate": float(y_pred.mean()),
        "base_rate": float(y_true.mean()),
        "threshold": float(threshold),
    }


def choose_threshold(y_true, y_score, cost_fn: float, cost_fp: float) -> dict[str, float]:
    """The threshold with the lowest expected cost per flight (chosen on validation data)."""
    y_true = np.asarray(y_true).astype(int)
    grid = np.round(np.arange(0.02, 0.981, 0.005), 3)
    costs = [
        (cost_fn * np.sum((y_score < t) & (y_true == 1)) + cost_fp * np.sum((y_score >= t) & (y_true == 0)))
        / len(y_true)
        for t in grid
    ]
    best = int(np.argmin(costs))
    return {
        "value": float(grid[best]),
        "expected_cost_per_flight": float(costs[best]),
        "cost_missed_disruption": cost_fn,
        "cost_unneeded_buffer": cost_fp,
        "chosen_on": "validation",
    }


# --------------------------------------------------------------------------- training


@dataclass
class Matrices:
    X: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    months: dict[str, np.ndarray]

    @classmethod
    def from_datasets(cls, data: fe.Datasets) -> Matrices:
        splits = data.splits()
        return cls(
            X={k: fe.to_matrix(v) for k, v in splits.items()},
            y={k: v[fe.TARGET].to_numpy().astype(int) for k, v in splits.items()},
            months={k: v["month"].to_numpy() for k, v in splits.items()},
        )


@dataclass
class CandidateResult:
    name: str
    model: Any
    params: dict[str, Any]
    fit_seconds: float
    scores: dict[str, np.ndarray]
    threshold: dict[str, float]
    metrics: dict[str, dict[str, float]]
    monthly_auc: dict[int, float]
    rows_per_second: float
    size_bytes: int
    best_iteration: int | None = None
    tuning: list[dict[str, Any]] = field(default_factory=list)

    def summary_row(self) -> dict[str, Any]:
        monthly = np.array(list(self.monthly_auc.values()))
        row = {"model": self.name, "native_format": self.name in NATIVE_FORMAT}
        for split in ("validation", "test"):
            for metric in ("roc_auc", "pr_auc", "log_loss", "brier", "precision", "recall", "f1"):
                row[f"{split}_{metric}"] = self.metrics[split][metric]
            row[f"{split}_flagged_share"] = self.metrics[split]["positive_rate"]  # flagged at the threshold
            row[f"{split}_base_rate"] = self.metrics[split]["base_rate"]  # disrupted share
        row |= {
            "threshold": self.threshold["value"],
            "monthly_auc_mean": float(np.nanmean(monthly)),
            "monthly_auc_std": float(np.nanstd(monthly)),
            "monthly_auc_min": float(np.nanmin(monthly)),
            "fit_seconds": self.fit_seconds,
            "score_rows_per_s": self.rows_per_second,
            "size_kb": self.size_bytes / 1024,
        }
        return row


class _ProgressCallback:
    """A tqdm bar over LightGBM boosting rounds."""

    def __init__(self, total: int, desc: str):
        self.bar = tqdm(total=total, desc=desc, leave=False, mininterval=1.0)

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        self.bar.update(1)
        if env.iteration + 1 >= env.end_iteration:
            self.bar.close()


def _fit(name: str, params: dict[str, Any], m: Matrices, desc: str):
    model = build_model(name, params)
    started = time.perf_counter()
    if name == "lightgbm":
        progress = _ProgressCallback(model.n_estimators, desc)
        model.fit(
            m.X["train"],
            m.y["train"],
            eval_X=(m.X["validation"],),
            eval_y=(m.y["validation"],),
            feature_name=fe.FEATURES,
            categorical_feature=CATEGORICAL_INDEX,
            callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False), progress],
        )
        progress.bar.close()
    else:
        model.fit(m.X["train"], m.y["train"])
    return model, time.perf_counter() - started


def _predict(model, X: np.ndarray) -> np.ndarray:
    return model.predict_proba(X)[:, 1]


def _size_bytes(name: str, model) -> int:
    if name == "lightgbm":
        return len(model.booster_.model_to_string().encode())
    return len(pickle.dumps(model))  # measured only; never saved or loaded


def _rows_per_second(model, X: np.ndarray, repeats: int = 3) -> float:
    best = min(_timed(lambda: _predict(model, X)) for _ in range(repeats))
    return X.shape[0] / best


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def monthly_auc(y: np.ndarray, score: np.ndarray, months: np.ndarray) -> dict[int, float]:
    return {
        int(month): summarize_classification(y[months == month], score[months == month])["roc_auc"]
        for month in np.unique(months)
    }


def evaluate_candidate(
    name: str, model, params: dict[str, Any], fit_seconds: float, m: Matrices
) -> CandidateResult:
    settings = get_settings()
    scores = {split: _predict(model, X) for split, X in m.X.items()}
    threshold = choose_threshold(
        m.y["validation"],
        scores["validation"],
        settings.cost_missed_disruption,
        settings.cost_unneeded_buffer,
    )
    metrics = {
        split: summarize_classification(m.y[split], scores[split], threshold["value"]) for split in scores
    }
    later = ("validation", "test")
    months = np.concatenate([m.months[s] for s in later])
    monthly = monthly_auc(
        np.concatenate([m.y[s] for s in later]), np.concatenate([scores[s] for s in later]), months
    )
    return CandidateResult(
        name=name,
        model=model,
        params=params,
        fit_seconds=fit_seconds,
        scores=scores,
        threshold=threshold,
        metrics=metrics,
        monthly_auc=monthly,
        rows_per_second=_rows_per_second(model, m.X["test"]),
        size_bytes=_size_bytes(name, model),
        best_iteration=getattr(model, "best_iteration_", None),
    )


def train_candidates(m: Matrices, grid: list[dict[str, Any]] | None = None) -> list[CandidateResult]:
    """Fit and evaluate every candidate; LightGBM is tuned over ``grid`` on validation ROC-AUC."""
    grid = LGBM_GRID if grid is None else grid
    results = []
    for name in tqdm(CANDIDATES, desc="candidates"):
        if name != "lightgbm":
            model, seconds = _fit(name, {}, m, name)
            results.append(evaluate_candidate(name, model, {}, seconds, m))
            continue
        tuning = []
        best = None
        for i, params in enumerate(grid):
            model, seconds = _fit(name, params, m, f"lightgbm {i + 1}/{len(grid)}")
            auc = roc_auc_score(m.y["validation"], _predict(model, m.X["validation"]))
            tuning.append(
                {**params, "validation_roc_auc": float(auc), "best_iteration": model.best_iteration_}
            )
            logger.info(
                "lightgbm %s: validation ROC-AUC %.4f at %d rounds", params, auc, model.best_iteration_
            )
            if best is None or auc > best[0]:
                best = (auc, model, params, seconds)
        result = evaluate_candidate(name, best[1], best[2], best[3], m)
        result.tuning = tuning
        results.append(result)
    return results


def select_best(results: list[CandidateResult]) -> CandidateResult:
    """Apply :data:`SELECTION_RULE`."""
    eligible = [r for r in results if r.name in NATIVE_FORMAT]
    if not eligible:
        raise ValueError("no candidate with a native model format was trained")
    return max(eligible, key=lambda r: r.metrics["validation"]["roc_auc"])


# --------------------------------------------------------------------------- artifact


def training_data_sha256(m: Matrices) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(m.X["train"]).tobytes())
    digest.update(np.ascontiguousarray(m.y["train"]).tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    names = ["polars", "duckdb", "pyarrow", "numpy", "scikit-learn", "lightgbm", "pandera"]
    return {"python": platform.python_version(), **{n: package_version(n) for n in names}}


def input_schema() -> dict[str, str]:
    """What a client sends to score a flight: the data contract's scoring-input columns."""
    from data_contract import CONTRACT_DTYPES, SCORING_INPUT_COLUMNS

    return {name: str(CONTRACT_DTYPES[name]) for name in SCORING_INPUT_COLUMNS}


def build_card(
    version: str, best: CandidateResult, results: list[CandidateResult], data: fe.Datasets, m: Matrices
) -> dict[str, Any]:
    ranges = {
        name: {
            "from": str(frame["flight_date"].min()),
            "to": str(frame["flight_date"].max()),
            "rows": frame.height,
        }
        for name, frame in data.splits().items()
    }
    booster = best.model.booster_
    return {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_type": "lightgbm",
        "model_file_format": "LightGBM text",
        "task": "P(arrival delay >= 15 min or cancelled/diverted) for a scheduled departure from EWR/JFK/LGA",
        "target": fe.TARGET,
        "training_data_sha256": training_data_sha256(m),
        "time_ranges": ranges,
        "features": list(fe.FEATURES),
        "categorical_features": list(fe.CATEGORICAL_FEATURES),
        "input_schema": input_schema(),
        "day_context": fe.CONTEXT_RULE,
        "feature_state": data.state.to_dict(),
        "params": {**LGBM_PARAMS, **best.params, "random_state": get_settings().seed},
        "best_iteration": best.best_iteration,
        "threshold": best.threshold,
        "metrics": best.metrics,
        "feature_importance": {
            "type": "gain",
            "shares": gain_shares(booster.feature_name(), booster.feature_importance(importance_type="gain")),
        },
        "monthly_roc_auc": {str(k): v for k, v in best.monthly_auc.items()},
        "selection_rule": SELECTION_RULE,
        "tuning": best.tuning,
        "candidates": [r.summary_row() for r in results],
        "library_versions": library_versions(),
    }


REPORT_SPLITS = {"validation": "validation (Jul-Aug)", "test": "test (Sep-Dec)"}


def write_reports(
    folder: Path, results: list[CandidateResult], best: CandidateResult, m: Matrices
) -> pl.DataFrame:
    """``artifacts/reports/<version>/``: summary.csv, monthly.csv, reliability.csv, summary.md and
    the plots (training_report.py), all from the candidates' scores on the same rows."""
    folder.mkdir(parents=True, exist_ok=True)
    table = pl.DataFrame([r.summary_row() for r in results]).with_columns(
        (pl.col("model") == best.name).alias("selected")
    )
    table.write_csv(folder / "summary.csv")
    monthly = pl.concat(
        report.monthly_metrics(m.y[split], m.months[split], r.scores[split]).select(
            pl.lit(r.name).alias("model"), pl.lit(split).alias("split"), pl.all()
        )
        for r in results
        for split in REPORT_SPLITS
    )
    monthly.write_csv(folder / "monthly.csv")
    pl.concat(
        report.reliability_table(m.y[split], r.scores[split]).select(
            pl.lit(r.name).alias("model"), pl.lit(split).alias("split"), pl.all()
        )
        for r in results
        for split in REPORT_SPLITS
    ).write_csv(folder / "reliability.csv")
    periods = {
        split: {
            "months": f"{report.month_label(int(m.months[split].min()))}–{report.month_label(int(m.months[split].max()))}",
            "flights": len(m.y[split]),
            "positive_rate": float(m.y[split].mean()),
        }
        for split in m.y
    }
    (folder / "summary.md").write_text(
        report.summary_markdown(table, monthly, folder.name, SELECTION_RULE, best.threshold, periods)
    )
    scores = {split: {r.name: r.scores[split] for r in results} for split in REPORT_SPLITS}
    booster = best.model.booster_
    figures = {
        "roc_pr.png": report.plot_roc_pr(m.y["test"], scores["test"], REPORT_SPLITS["test"]),
        "calibration.png": report.plot_reliability(
            {label: (m.y[split], scores[split]) for split, label in REPORT_SPLITS.items()}
        ),
        "metric_bars.png": report.plot_metric_bars(table),
        "monthly.png": report.plot_monthly(monthly),
        "feature_importance.png": report.plot_feature_importance(
            booster.feature_name(), booster.feature_importance(importance_type="gain")
        ),
    }
    for name, fig in figures.items():
        fig.savefig(folder / name, dpi=90)
        plt.close(fig)
    return table


def save_best(best: CandidateResult, results: list[CandidateResult], data: fe.Datasets, m: Matrices) -> str:
    """Save the selected model; the version is named by its content, so a rerun is idempotent."""
    model_text = best.model.booster_.model_to_string()
    version = f"lgbm-{hashlib.sha256(model_text.encode()).hexdigest()[:12]}"
    existing = models_dir() / version
    if existing.is_dir():
        verify(existing)  # a damaged copy raises ArtifactError instead of becoming LATEST
        logger.info("model %s already saved at %s", version, existing)
        set_latest(version)
        return version
    profile = build_reference_profile(
        data.train,
        fe.NUMERIC_FEATURES,
        data.state.category_levels,
        best.scores["validation"],
        score_period="validation",
    )
    save_artifact(version, model_text, build_card(version, best, results, data, m), profile)
    return version


@dataclass
class TrainingRun:
    version: str
    best: CandidateResult
    results: list[CandidateResult]
    table: pl.DataFrame
    report_dir: Path


def run(data: fe.Datasets | None = None, grid: list[dict[str, Any]] | None = None) -> TrainingRun:
    """Build datasets (default: from the warehouse), train all candidates, save the best."""
    data = fe.build_datasets() if data is None else data
    m = Matrices.from_datasets(data)
    results = train_candidates(m, grid)
    best = select_best(results)
    version = save_best(best, results, data, m)
    report_dir = get_settings().artifacts_dir / "reports" / version
    table = write_reports(report_dir, results, best, m)
    return TrainingRun(version, best, results, table, report_dir)


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(
        description="Train every candidate on the warehouse's flights, save the best model and its reports."
    ).parse_args(argv)
    started = time.perf_counter()
    result = run()
    show = result.table.select(
        "model",
        "validation_roc_auc",
        "test_roc_auc",
        "test_pr_auc",
        "monthly_auc_std",
        "fit_seconds",
        "score_rows_per_s",
    ).with_columns(pl.selectors.float().round(4))
    with pl.Config(tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True, tbl_width_chars=200):
        print(show)
    best = result.best
    print(
        f"selected {best.name} -> model {result.version}: validation ROC-AUC "
        f"{best.metrics['validation']['roc_auc']:.4f}, test ROC-AUC {best.metrics['test']['roc_auc']:.4f}, "
        f"threshold {best.threshold['value']} (cost {best.threshold['cost_missed_disruption']}:"
        f"{best.threshold['cost_unneeded_buffer']}); reports in {result.report_dir} "
        f"({time.perf_counter() - started:.0f}s)"
    )


if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    main()
