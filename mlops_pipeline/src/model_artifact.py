"""The model artifact: one folder per model version, verified by SHA-256 on every load.

    artifacts/models/<version>/
        model.txt               LightGBM's native text format (never pickle: docs/properties.md, property 8)
        model_card.json         version, data hash, time ranges, features, input schema,
                                fitted feature state, threshold, metrics, library versions
        reference_profile.json  what monitoring compares production against
        SHA256SUMS              "<sha256>  <file>" for the three files above
    artifacts/models/LATEST     the version the scorer loads by default

A version folder is written under a temporary name and renamed into place, so a reader
never sees half an artifact; ``LATEST`` is replaced atomically after that. Loading
accepts a version *name* only (never a path), so nothing outside the artifact folder is
ever deserialised, and refuses any file whose checksum does not match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atomic import AtomicFile, write_bytes
from ft_engineering import FeatureState
from settings import get_settings
from warehouse import file_sha256

logger = logging.getLogger(__name__)

MODEL_FILE = "model.txt"
CARD_FILE = "model_card.json"
PROFILE_FILE = "reference_profile.json"
CHECKSUMS_FILE = "SHA256SUMS"
LATEST_FILE = "LATEST"
ARTIFACT_FILES = (MODEL_FILE, CARD_FILE, PROFILE_FILE)
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


if TYPE_CHECKING:
    import lightgbm as lgb


class ArtifactError(Exception):
    """A model artifact that is missing, malformed or fails its checksum."""


@dataclass(frozen=True)
class ModelArtifact:
    path: Path
    model_text: str  # as verified against SHA256SUMS at load
    card: dict[str, Any]
    profile: dict[str, Any]
    model_sha256: str

    @cached_property
    def booster(self) -> lgb.Booster:
        """The LightGBM model, built on first use: a process that predicts with the verified
        compiled model never needs it, and importing LightGBM (with scikit-learn) costs
        1.4 s, which every scorer process and Ray actor would pay at start-up."""
        import lightgbm as lgb

        return lgb.Booster(model_str=self.model_text)

    @property
    def version(self) -> str:
        return self.card["version"]

    @property
    def importance(self) -> dict[str, float]:
        """Each feature's share of the model's total split gain, as training stored it in the
        card (so monitoring never imports LightGBM); from the booster for older cards."""
        stored = self.card.get("feature_importance")
        if stored is not None:
            return {name: float(share) for name, share in stored["shares"].items()}
        return gain_shares(
            self.booster.feature_name(), self.booster.feature_importance(importance_type="gain")
        )

    @property
    def threshold(self) -> float:
        return float(self.card["threshold"]["value"])

    @property
    def features(self) -> list[str]:
        return list(self.card["features"])

    @property
    def feature_state(self) -> FeatureState:
        return FeatureState.from_dict(self.card["feature_state"])


def gain_shares(names: list[str], gains: Any) -> dict[str, float]:
    """Gain importance as shares of the total (all zero when the model never split)."""
    values = [float(g) for g in gains]
    total = sum(values) or 1.0
    return {name: value / total for name, value in zip(names, values, strict=True)}


def models_dir() -> Path:
    return get_settings().artifacts_dir / "models"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_version(version: str) -> str:
    if not VERSION_PATTERN.fullmatch(version or ""):
        raise ArtifactError(
            f"invalid model version {version!r}: a name like 'lgbm-20130630-1a2b3c4d', not a path"
        )
    return version


def save_artifact(version: str, model_text: str, card: dict[str, Any], profile: dict[str, Any]) -> Path:
    """Publish a new version folder and point LATEST at it; refuses to overwrite a version."""
    root = models_dir()
    final = root / _check_version(version)
    if final.exists():
        raise ArtifactError(f"model version {version} already exists at {final}")
    with AtomicFile(final) as staging:  # the whole folder appears at once, or not at all
        staging.mkdir()
        payloads = {
            MODEL_FILE: model_text.encode(),
            CARD_FILE: json.dumps(card, indent=2, sort_keys=True).encode(),
            PROFILE_FILE: json.dumps(profile, indent=2, sort_keys=True).encode(),
        }
        for name, data in payloads.items():
            (staging / name).write_bytes(data)
        sums = "".join(f"{_sha256(data)}  {name}\n" for name, data in payloads.items())
        (staging / CHECKSUMS_FILE).write_text(sums)
    set_latest(version)
    logger.info("saved model %s to %s", version, final)
    return final


def set_latest(version: str) -> None:
    """Point LATEST at a version, atomically (a scorer starting meanwhile reads old or new)."""
    root = models_dir()
    write_bytes(root / LATEST_FILE, (_check_version(version) + "\n").encode())


def latest_version() -> str:
    pointer = models_dir() / LATEST_FILE
    if not pointer.exists():
        raise ArtifactError(f"no trained model: {pointer} is missing (run model_training_evaluation.py)")
    return pointer.read_text().strip()


def verify(folder: Path) -> dict[str, str]:
    """Check every artifact file against SHA256SUMS; return {file: sha256}."""
    sums_path = folder / CHECKSUMS_FILE
    if not sums_path.exists():
        raise ArtifactError(f"{folder.name}: {CHECKSUMS_FILE} is missing")
    expected = {}
    for line in sums_path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        expected[name] = digest
    for name in ARTIFACT_FILES:
        path = folder / name
        if name not in expected or not path.exists():
            raise ArtifactError(f"{folder.name}: {name} is missing from the artifact")
        if file_sha256(path) != expected[name]:
            raise ArtifactError(f"{folder.name}: {name} does not match its SHA-256; refusing to load it")
    return expected


def load_artifact(version: str | None = None) -> ModelArtifact:
    """Load a model version (default: LATEST) after verifying every file's checksum."""
    version = _check_version(latest_version() if version is None else version)
    folder = models_dir() / version
    if not folder.is_dir():
        raise ArtifactError(f"model version {version} not found in {models_dir()}")
    sums = verify(folder)
    model_text = (folder / MODEL_FILE).read_text()
    card = json.loads((folder / CARD_FILE).read_text())
    profile = json.loads((folder / PROFILE_FILE).read_text())
    if card.get("version") != version:
        raise ArtifactError(f"{version}: the model card names version {card.get('version')!r}")
    return ModelArtifact(folder, model_text, card, profile, sums[MODEL_FILE])
