"""The repository layout the company's deployment pipelines validate."""

from __future__ import annotations

import subprocess

import pytest

from settings import REPO_ROOT

REQUIRED = [
    "mlops_pipeline/src/Cargar_datos.ipynb",
    "mlops_pipeline/src/comprension_eda.ipynb",
    "mlops_pipeline/src/ft_engineering.py",
    "mlops_pipeline/src/model_training_evaluation.py",
    "mlops_pipeline/src/model_deploy.py",
    "mlops_pipeline/src/model_monitoring.py",
    "Base_de_datos.csv",
    "requirements.txt",
    ".gitignore",
    "setup.bat",
    "setup.sh",
    "readme.md",
    "Dockerfile",
    ".dockerignore",
    ".ci/run",
]


@pytest.mark.parametrize("path", REQUIRED)
def test_required_path_exists(path: str) -> None:
    assert (REPO_ROOT / path).is_file(), f"required file missing: {path}"


@pytest.mark.parametrize("path", ["warehouse.duckdb", ".venv/", "lake/", "artifacts/"])
def test_generated_paths_are_git_ignored(path: str) -> None:
    result = subprocess.run(["git", "check-ignore", "-q", "--no-index", path], cwd=REPO_ROOT, check=False)
    assert result.returncode == 0, f"{path} should be git-ignored"


def test_requirements_are_pinned() -> None:
    lines = [line.split("#")[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line]
    assert requirements, "requirements.txt is empty"
    unpinned = [line for line in requirements if "==" not in line]
    assert not unpinned, f"unpinned requirements: {unpinned}"


def test_scripts_are_executable() -> None:
    for path in ["setup.sh", ".ci/run"]:
        assert (REPO_ROOT / path).stat().st_mode & 0o111, f"{path} is not executable"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (REPO_ROOT / "readme.md").read_text()
    ci = (REPO_ROOT / ".ci/run").read_text()
    assert "./setup.sh test" in readme
    assert "./setup.sh test" in ci
