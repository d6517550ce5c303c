"""The compiled (lleaves) fast path: same scores as LightGBM, compiled once, refused when wrong.

Every test trains a real, tiny LightGBM model (a categorical column, NaNs) and saves it as
a real artifact in the test's own artifacts folder; compiling one takes about a second.
"""

from __future__ import annotations

import json
import logging
import shutil
import threading

import lightgbm as lgb
import numpy as np
import pytest

import fast_predict as fp
from ft_engineering import FeatureState
from model_artifact import load_artifact, save_artifact
from settings import get_settings

pytest.importorskip("lleaves")

FEATURES = ["f_num", "f_skewed", "f_flag", "f_cat", "f_sparse"]
CATEGORICAL = [3]


def make_matrix(rows: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            rng.normal(size=rows),
            rng.exponential(size=rows),
            rng.integers(0, 2, rows),
            rng.integers(0, 12, rows),  # category codes, as ft_engineering.encode makes them
            rng.normal(size=rows),
        ]
    ).astype(np.float64)
    X[rng.random(rows) < 0.1, 0] = np.nan
    X[rng.random(rows) < 0.05, 3] = np.nan  # an unknown category is null
    X[rng.random(rows) < 0.6, 4] = np.nan
    return np.ascontiguousarray(X)


def train_artifact(version: str, seed: int, trees: int = 12) -> str:
    X = make_matrix(3000, seed)
    rng = np.random.default_rng(seed + 1)
    logit = np.nan_to_num(X[:, 0]) + 0.5 * X[:, 1] - X[:, 2] + np.isin(X[:, 3], [1, 4, 7]) - 1
    y = (rng.random(X.shape[0]) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {
        "objective": "binary",
        "num_leaves": 15,
        "min_data_in_leaf": 20,
        "verbose": -1,
        "seed": seed,
        "num_threads": 1,
    }
    data = lgb.Dataset(X, y, feature_name=FEATURES, categorical_feature=CATEGORICAL)
    booster = lgb.train(params, data, num_boost_round=trees)
    card = {
        "version": version,
        "threshold": {"value": 0.5},
        "features": FEATURES,
        "feature_state": FeatureState(features=FEATURES).to_dict(),
    }
    save_artifact(version, booster.model_to_string(), card, {})
    return version


@pytest.fixture
def artifact():
    return load_artifact(train_artifact("tiny-a", seed=1))


def test_compiled_scores_match_lightgbm(artifact):
    predictor = fp.compiled_predictor(artifact)
    assert predictor is not None
    X = make_matrix(20_000, seed=99)  # more rows than PARALLEL_MIN_ROWS: the threaded path
    assert X.flags.c_contiguous and X.dtype == np.float64
    ours = predictor(X)
    theirs = artifact.booster.predict(X)
    assert np.max(np.abs(ours - theirs)) <= 1e-9
    assert np.max(np.abs(predictor(X[:7]) - theirs[:7])) <= 1e-9  # the single-thread path
    assert predictor(X[:0]).shape == (0,)

    object_path, record_path, _ = fp.cache_paths(artifact.model_sha256)
    record = json.loads(record_path.read_text())
    assert object_path.exists() and object_path.parent.name == "compiled"
    assert record["verified"] is True and record["max_abs_diff"] <= 1e-9
    assert record["model_sha256"] == artifact.model_sha256
    assert record["rows_by_source"] == {"split_probe": record["rows"]}  # no warehouse in this test


def test_split_probe_covers_both_sides_of_every_threshold(artifact):
    X = fp.split_probe_matrix(artifact.booster)
    assert X.flags.c_contiguous and X.dtype == np.float64
    assert np.isnan(X).any(axis=0).all()  # the missing branch of every column
    for tree in artifact.booster.dump_model()["tree_info"][:3]:
        node = tree["tree_structure"]
        if node.get("decision_type") == "<=":
            column = X[:, node["split_feature"]]
            assert (column <= node["threshold"]).any() and (column > node["threshold"]).any()


def test_compiled_once_then_loaded_from_cache(artifact, monkeypatch):
    first = fp.compiled_predictor(artifact)
    object_path, _, _ = fp.cache_paths(artifact.model_sha256)
    stamp = object_path.stat().st_mtime_ns

    def no_compile(*args, **kwargs):
        raise AssertionError("compiled again instead of loading the cache")

    def no_verify(*args, **kwargs):
        raise AssertionError("verified again although the record is trusted")

    monkeypatch.setattr(fp, "_compile", no_compile)
    monkeypatch.setattr(fp, "_verify", no_verify)
    again = load_artifact("tiny-a")  # as a new process would
    second = fp.compiled_predictor(again)
    assert second is not None and object_path.stat().st_mtime_ns == stamp
    X = make_matrix(500, seed=5)
    np.testing.assert_array_equal(first(X), second(X))


@pytest.mark.parametrize("copy_record", [False, True], ids=["object-only", "object-and-record"])
def test_cache_of_another_model_is_refused(artifact, monkeypatch, caplog, copy_record):
    assert fp.compiled_predictor(artifact) is not None
    other = load_artifact(train_artifact("tiny-b", seed=2))
    source_object, source_record, _ = fp.cache_paths(artifact.model_sha256)
    target_object, target_record, _ = fp.cache_paths(other.model_sha256)
    shutil.copyfile(source_object, target_object)  # tiny-a's code under tiny-b's name
    if copy_record:
        shutil.copyfile(source_record, target_record)

    with caplog.at_level(logging.WARNING, logger="fast_predict"):
        assert fp.compiled_predictor(other) is None
    assert "does not reproduce LightGBM" in caplog.text
    record = json.loads(target_record.read_text())
    assert record["verified"] is False and record["model_sha256"] == other.model_sha256

    # the failure is remembered: later loads refuse without verifying or compiling again
    with monkeypatch.context() as patched:
        patched.setattr(fp, "_verify", lambda *a, **k: pytest.fail("verified again"))
        patched.setattr(fp, "_compile", lambda *a, **k: pytest.fail("compiled over the refused object"))
        assert fp.compiled_predictor(other) is None

    # deleting the two files, as the warning says, compiles a correct one
    target_object.unlink()
    target_record.unlink()
    assert fp.compiled_predictor(other) is not None


def test_concurrent_first_loads_compile_once(artifact, monkeypatch):
    pytest.importorskip("fcntl")  # the lock is POSIX flock (threads hold separate open files)
    compiles = []
    real_compile = fp._compile

    def counting_compile(*args, **kwargs):
        compiles.append(1)
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(fp, "_compile", counting_compile)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(fp.compiled_predictor(artifact))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(compiles) == 1
    assert len(results) == 3 and all(r is not None for r in results)


def test_object_built_for_another_cpu_is_recompiled(artifact, monkeypatch):
    assert fp.compiled_predictor(artifact) is not None
    _, record_path, _ = fp.cache_paths(artifact.model_sha256)
    record = json.loads(record_path.read_text())
    record["environment"]["cpu"] = "some-other-cpu"
    record_path.write_text(json.dumps(record))
    compiles = []
    real_compile = fp._compile
    monkeypatch.setattr(fp, "_compile", lambda *a, **k: compiles.append(1) or real_compile(*a, **k))
    assert fp.compiled_predictor(load_artifact("tiny-a")) is not None
    assert compiles == [1]
    assert json.loads(record_path.read_text())["environment"] == fp._environment()


def test_waiting_too_long_for_another_compile_falls_back(artifact, monkeypatch, caplog):
    fcntl = pytest.importorskip("fcntl")  # POSIX: elsewhere there is no lock to wait for

    _, _, lock_path = fp.cache_paths(artifact.model_sha256)
    lock_path.parent.mkdir(parents=True)
    monkeypatch.setattr(fp, "LOCK_TIMEOUT_S", 0.3)
    with lock_path.open("a+") as held:  # another process compiling the same model
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with caplog.at_level(logging.WARNING, logger="fast_predict"):
            assert fp.compiled_predictor(artifact) is None
    assert "TimeoutError" in caplog.text
    assert fp.compiled_predictor(artifact) is not None  # the lock is free again


@pytest.mark.parametrize("value", ["0", "false", "OFF"])
def test_switched_off_by_environment(artifact, monkeypatch, value):
    monkeypatch.setenv(fp.SWITCH_ENV, value)
    get_settings.cache_clear()
    assert fp.compiled_predictor(artifact) is None
    assert not fp.compiled_dir().exists()


def test_missing_lleaves_falls_back(artifact, monkeypatch, caplog):
    monkeypatch.setitem(__import__("sys").modules, "lleaves", None)  # import lleaves -> ImportError
    with caplog.at_level(logging.WARNING, logger="fast_predict"):
        assert fp.compiled_predictor(artifact) is None
    assert "lleaves is not usable" in caplog.text


def test_scorer_uses_the_compiled_model():
    """scoring.Scorer.load picks the compiled twin, and fast=False keeps LightGBM."""
    import ft_engineering as fe
    from scoring import Scorer

    rng = np.random.default_rng(3)
    X = rng.normal(size=(2000, len(fe.FEATURES)))
    categorical = [fe.FEATURES.index(c) for c in fe.CATEGORICAL_FEATURES]
    X[:, categorical] = rng.integers(0, 6, (2000, len(categorical)))
    X[rng.random(X.shape) < 0.1] = np.nan
    y = (np.nan_to_num(X[:, 0]) + rng.normal(size=2000) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "verbose": -1, "num_threads": 1}
    data = lgb.Dataset(X, y, feature_name=fe.FEATURES, categorical_feature=categorical)
    booster = lgb.train(params, data, num_boost_round=5)
    state = FeatureState({c: [] for c in fe.CATEGORICAL_FEATURES})
    card = {"version": "tiny-full", "threshold": {"value": 0.5}, "features": fe.FEATURES}
    save_artifact("tiny-full", booster.model_to_string(), card | {"feature_state": state.to_dict()}, {})

    fast = Scorer.load("tiny-full")
    slow = Scorer.load("tiny-full", fast=False)
    assert (fast.backend, slow.backend) == ("lleaves", "lightgbm")
    assert np.max(np.abs(fast.predict(X) - slow.predict(X))) <= 1e-9
