"""What each group of history features brings: the selected model's settings, refitted
without each window's features (and without any), measured on the same splits.

    .venv/bin/python scripts/history_ablation.py             # after ./setup.sh; about 5 minutes
    .venv/bin/python scripts/history_ablation.py --seeds 1   # the model's own seed only

Every variant is a LightGBM with the LATEST model's parameters, early-stopped on the
validation months as training does (model_training_evaluation.py); only the feature list
and the seed differ. Row and column subsampling make a fit's ROC-AUC move by about 0.002
from seed to seed, as much as one window's features bring, so each variant is fitted with
several seeds (the model's, then the next ones) and reported as mean and spread. Prints Markdown tables: per variant validation and test ROC-AUC, test PR-AUC and
Brier score; per test month ROC-AUC and Brier with and without the history features; and
a reliability check (mean score against the observed rate) and what calibrating the full
model on the validation months (isotonic, Platt) would do to its test Brier score.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "mlops_pipeline" / "src"))

import lightgbm as lgb  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.isotonic import IsotonicRegression  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score  # noqa: E402

import ft_engineering as fe  # noqa: E402
import history  # noqa: E402
import model_training_evaluation as mte  # noqa: E402
from model_artifact import load_artifact  # noqa: E402


def variants() -> dict[str, list[str]]:
    """Variant name -> its feature list."""
    out = {
        "all features": list(fe.FEATURES),
        "no history features (before)": [f for f in fe.FEATURES if f not in history.HISTORY_FEATURES],
    }
    for window in history.WINDOWS:
        dropped = {f for f in history.HISTORY_FEATURES if f.startswith(f"hist_{window}_")}
        out[f"without {window}"] = [f for f in fe.FEATURES if f not in dropped]
    return out


def fit(data: fe.Datasets, features: list[str], params: dict, seed: int) -> dict[str, np.ndarray]:
    """Fit on train, early-stopped on validation; returns scores per split."""
    model = lgb.LGBMClassifier(**{**params, "random_state": seed})
    X = {name: part.select(features).cast(float).to_numpy() for name, part in data.splits().items()}
    y = {name: part[fe.TARGET].to_numpy() for name, part in data.splits().items()}
    categorical = [features.index(c) for c in fe.CATEGORICAL_FEATURES if c in features]
    model.fit(
        X["train"],
        y["train"],
        eval_set=[(X["validation"], y["validation"])],
        feature_name=features,
        categorical_feature=categorical,
        callbacks=[lgb.early_stopping(mte.EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    return {name: model.predict_proba(X[name])[:, 1] for name in ("validation", "test")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="fits per variant (default 3)")
    args = parser.parse_args()
    data = fe.build_datasets()
    artifact = load_artifact()
    params = artifact.card["params"]
    seeds = [params["random_state"] + i for i in range(args.seeds)]
    y = {name: data.splits()[name][fe.TARGET].to_numpy() for name in ("validation", "test")}
    months = data.test["month"].to_numpy()
    print(f"model {artifact.version} parameters, {len(fe.FEATURES)} features, seeds {seeds}\n")
    print("| variant | features | validation ROC-AUC | test ROC-AUC | test PR-AUC | test Brier |")
    print("|---|---:|---:|---:|---:|---:|")
    scores = {}
    for name, features in variants().items():
        fits = [fit(data, features, params, seed) for seed in seeds]
        scores[name] = fits[0]  # the model's seed: the per-month and calibration tables below
        cells = []
        for split, metric in [
            ("validation", roc_auc_score),
            ("test", roc_auc_score),
            ("test", average_precision_score),
            ("test", brier_score_loss),
        ]:
            values = np.array([metric(y[split], f[split]) for f in fits])
            cells.append(f"{values.mean():.4f} ± {values.std():.4f}" if len(fits) > 1 else f"{values[0]:.4f}")
        print(f"| {name} | {len(features)} | " + " | ".join(cells) + " |")
    before, after = scores["no history features (before)"]["test"], scores["all features"]["test"]
    print(
        "\n| test month | flights | disrupted | ROC-AUC before | ROC-AUC after | Brier before | Brier after |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for month in np.unique(months):
        m = months == month
        yt = y["test"][m]
        print(
            f"| {month} | {m.sum():,} | {yt.mean():.1%} | {roc_auc_score(yt, before[m]):.4f} | "
            f"{roc_auc_score(yt, after[m]):.4f} | {brier_score_loss(yt, before[m]):.4f} | "
            f"{brier_score_loss(yt, after[m]):.4f} |"
        )
    print("\n| split | observed rate | mean score, before | mean score, after |")
    print("|---|---:|---:|---:|")
    for split in ("validation", "test"):
        print(
            f"| {split} | {y[split].mean():.4f} | {scores['no history features (before)'][split].mean():.4f} | "
            f"{scores['all features'][split].mean():.4f} |"
        )
    full = scores["all features"]
    isotonic = IsotonicRegression(out_of_bounds="clip").fit(full["validation"], y["validation"])
    logit = np.log(full["validation"] / (1 - full["validation"])).reshape(-1, 1)
    platt = LogisticRegression().fit(logit, y["validation"])
    test_logit = np.log(full["test"] / (1 - full["test"])).reshape(-1, 1)
    print("\n| full model, test | Brier | mean score |")
    print("|---|---:|---:|")
    for name, calibrated in [
        ("as trained", full["test"]),
        ("isotonic, fitted on validation", isotonic.predict(full["test"])),
        ("Platt, fitted on validation", platt.predict_proba(test_logit)[:, 1]),
    ]:
        print(f"| {name} | {brier_score_loss(y['test'], calibrated):.4f} | {calibrated.mean():.4f} |")


if __name__ == "__main__":
    main()
