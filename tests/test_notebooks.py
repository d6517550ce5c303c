"""Notebooks run top to bottom against the modules (not copies of their code)."""

from __future__ import annotations

import json

import pytest

from conftest import SRC_DIR
from notebook_runner import execute


def _code(notebook: str) -> str:
    cells = json.loads((SRC_DIR / notebook).read_text())["cells"]
    return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


def test_cargar_datos_runs_and_loads_the_warehouse(isolated_settings) -> None:
    notebook = execute(SRC_DIR / "Cargar_datos.ipynb")
    errors = [
        o for c in notebook.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"
    ]
    assert not errors
    text = "\n".join(o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs)
    assert "loaded 336,776 rows" in text
    # the notebook wrote to the warehouse the settings point at, not the repository's
    assert isolated_settings.warehouse_path.exists()


@pytest.mark.parametrize("notebook", ["Cargar_datos.ipynb"])
def test_notebook_is_committed_executed_and_imports_the_modules(notebook: str) -> None:
    cells = json.loads((SRC_DIR / notebook).read_text())["cells"]
    code_cells = [c for c in cells if c["cell_type"] == "code"]
    assert all(c.get("execution_count") for c in code_cells), "commit the notebook executed"
    assert "def " not in _code(notebook), (
        "notebooks import functions from the modules, they do not define them"
    )
