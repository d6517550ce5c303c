"""model_training_evaluation and model_artifact: metrics, models, threshold, artifact, a small run."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import polars as pl
import pytest
from sklearn.base import clone
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

import ft_engineering as fe
import model_training_evaluation as mte
from model_artifact import (
    CARD_FILE,
    CHECKSUMS_FILE,
    MODEL_FILE,
    PROFILE_FILE,
    ArtifactError,
    load_artifact,
    models_dir,
)
from settings import get_settings

Y_TRUE = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
Y_SCORE = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.55, 0.3, 0.05])


def test_summarize_classification_matches_scikit_learn() -> None:
    got = mte.summarize_classification(Y_TRUE, Y_SCORE, threshold=0.5)
    pred = (Y_SCORE >= 0.5).astype(int)
    assert got["roc_auc"] == pytest.approx(roc_auc_score(Y_TRUE, Y_SCORE))
    assert got["pr_auc"] == pytest.approx(average_precision_score(Y_TRUE, Y_SCORE))
    assert got["log_loss"] == pytest.approx(log_loss(Y_TRUE, Y_SCORE))
    assert got["brier"] == pytest.approx(brier_score_loss(Y_TRUE, Y_SCORE))
    assert got["precision"] == pytest.approx(precision_score(Y_TRUE, pred))
    assert got["recall"] == pytest.approx(recall_score(Y_TRUE, pred))
    assert got["f1"] == pytest.approx(f1_score(Y_TRUE, pred))
    assert got["accuracy"] == pytest.approx(accuracy_score(Y_TRUE, pred))
    assert got["positive_rate"] == pytest.approx(0.4)
    # known values: 3 of the 4 flagged are positives, 3 of the 5 positives are flagged
    assert got["precision"] == pytest.approx(0.75) and got["recall"] == pytest.approx(0.6)


def test_summarize_classification_one_class_gives_nan_auc() -> None:
    got = mte.summarize_classification(np.zeros(5), np.linspace(0, 1, 5), 0.5)
    assert np.isnan(got["roc_auc"]) and got["accuracy"] == pytest.approx(0.4)  # 3 of 5 flagged


def test_choose_threshold_minimises_the_stated_cost() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2_000)
    score = np.clip(y * 0.3 + rng.random(2_000) * 0.7, 0, 1)
    chosen = mte.choose_threshold(y, score, cost_fn=3.0, cost_fp=1.0)

    def cost(t: float) -> float:
        return (3.0 * np.sum((score < t) & (y == 1)) + np.sum((score >= t) & (y == 0))) / len(y)

    assert chosen["expected_cost_per_flight"] == pytest.approx(cost(chosen["value"]))
    assert all(cost(t) >= chosen["expected_cost_per_flight"] - 1e-12 for t in np.arange(0.02, 0.98, 0.005))
    # a dearer miss never raises the threshold
    assert mte.choose_threshold(y, score, 10.0, 1.0)["value"] <= chosen["value"]


@pytest.mark.parametrize("name", mte.CANDIDATES)
def test_build_model_returns_an_unfitted_estimator(name: str) -> None:
    model = mte.build_model(name)
    assert hasattr(model, "fit") and hasattr(model, "predict_proba")
    clone(model)  # a proper scikit-learn estimator
    X = np.random.default_rng(1).random((400, len(fe.FEATURES)))
    X[:, mte.CATEGORICAL_INDEX] = np.floor(X[:, mte.CATEGORICAL_INDEX] * 5)
    y = (X[:, 0] > 0.5).astype(int)
    params = {"n_estimators": 5, "min_child_samples": 5} if name == "lightgbm" else {}
    fitted = mte.build_model(name, params).fit(X, y)
    assert fitted.predict_proba(X).shape == (400, 2)


def test_build_model_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        mte.build_model("xgboost")


@pytest.fixture(scope="module")
def small_run(trained):
    """The session's trained run, plus a second identical run to check reproducibility."""
    first, sample, folder = trained
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(folder.parent / "again"))
        get_settings.cache_clear()
        second = mte.run(sample, [{"n_estimators": 60, "num_leaves": 15}])
    get_settings.cache_clear()
    return first, second, sample


@pytest.fixture
def run_settings(use_trained):
    return get_settings()


def test_small_run_selects_lightgbm_and_writes_reports(small_run) -> None:
    first, _, _ = small_run
    assert first.best.name == "lightgbm"
    assert set(first.table["model"]) == set(mte.CANDIDATES)
    for name in ["summary.md", "summary.csv", "roc_pr.png", "calibration.png", "metric_bars.png",
                 "monthly.png", "feature_importance.png", "monthly.csv", "reliability.csv"]:  # fmt: skip
        assert (first.report_dir / name).stat().st_size > 0
    assert first.best.metrics["test"]["roc_auc"] > 0.65  # a real model, even on 10 % of the data
    baseline = next(r for r in first.results if r.name == "baseline")
    assert baseline.metrics["test"]["roc_auc"] == pytest.approx(0.5)


def test_training_is_reproducible(small_run) -> None:
    first, second, _ = small_run
    assert first.version == second.version
    assert np.array_equal(first.best.scores["test"], second.best.scores["test"])


def test_artifact_round_trip(small_run, run_settings) -> None:
    first, _, sample = small_run
    artifact = load_artifact()  # LATEST
    assert artifact.version == first.version
    X = fe.to_matrix(sample.test)
    assert np.allclose(artifact.booster.predict(X), first.best.scores["test"], rtol=0, atol=1e-12)
    card = artifact.card
    assert card["features"] == fe.FEATURES
    assert artifact.feature_state == sample.state
    assert card["threshold"]["chosen_on"] == "validation"
    assert set(card["metrics"]) == {"train", "validation", "test"}
    assert card["time_ranges"]["train"]["to"] <= "2013-06-30"
    assert "dep_time" not in card["input_schema"] and "sched_dep_time" in card["input_schema"]
    assert len(card["training_data_sha256"]) == 64 and "lightgbm" in card["library_versions"]
    # the stored gain shares are the booster's, so monitoring need not load LightGBM for them
    gains = artifact.booster.feature_importance(importance_type="gain")
    stored = card["feature_importance"]["shares"]
    names = artifact.booster.feature_name()
    assert card["feature_importance"]["type"] == "gain" and set(stored) == set(names)
    assert np.allclose([stored[n] for n in names], gains / gains.sum(), rtol=1e-12, atol=0)
    assert artifact.importance == stored
    profile = artifact.profile
    assert set(profile["features"]) == set(fe.FEATURES)
    numeric = profile["features"]["sched_dep_min"]
    assert len(numeric["shares"]) == len(numeric["edges"]) + 1 and sum(numeric["shares"]) == pytest.approx(1)
    assert sum(profile["features"]["origin"]["shares"].values()) == pytest.approx(1)
    assert sum(profile["score"]["shares"]) == pytest.approx(1)


@pytest.mark.parametrize("name", [MODEL_FILE, CARD_FILE, PROFILE_FILE])
def test_a_tampered_file_is_refused(small_run, run_settings, name: str) -> None:
    folder = models_dir() / small_run[0].version
    path = folder / name
    original = path.read_bytes()
    try:
        path.write_bytes(original.replace(b"0", b"1", 1))
        with pytest.raises(ArtifactError, match="SHA-256"):
            load_artifact(small_run[0].version)
    finally:
        path.write_bytes(original)
    load_artifact(small_run[0].version)  # intact again


def test_missing_checksums_are_refused(small_run, run_settings) -> None:
    folder = models_dir() / small_run[0].version
    sums = folder / CHECKSUMS_FILE
    original = sums.read_bytes()
    sums.unlink()
    try:
        with pytest.raises(ArtifactError, match="SHA256SUMS"):
            load_artifact(small_run[0].version)
    finally:
        sums.write_bytes(original)


@pytest.mark.parametrize("version", ["../x", "/etc/passwd", "a/b", ""])
def test_versions_are_names_not_paths(run_settings, version: str) -> None:
    with pytest.raises(ArtifactError):
        load_artifact(version)


def test_a_card_without_stored_importance_takes_it_from_the_booster(small_run, run_settings) -> None:
    artifact = load_artifact(small_run[0].version)
    older = dataclasses.replace(
        artifact, card={k: v for k, v in artifact.card.items() if k != "feature_importance"}
    )
    assert older.importance == pytest.approx(artifact.importance, rel=1e-12)
    assert sum(older.importance.values()) == pytest.approx(1)


def test_model_card_is_plain_json(small_run, run_settings) -> None:
    card = json.loads((models_dir() / small_run[0].version / CARD_FILE).read_text())
    assert pl.DataFrame(card["candidates"]).height == len(mte.CANDIDATES)
