"""comprension_eda.ipynb runs top to bottom on the real warehouse table, shows the key figures,
and is committed executed, importing its logic from the modules instead of defining it."""

from __future__ import annotations

import json
import re

import pytest

import ft_engineering as fe
from conftest import RAW_CSV, SRC_DIR
from notebook_runner import execute
from warehouse import load_raw_csv

NOTEBOOK = "comprension_eda.ipynb"


# What the notebook prints about the model's features, counted from the module at run time
FEATURE_COUNTS = f"{len(fe.FEATURES)} features ({len(fe.NUMERIC_FEATURES)} numeric, {len(fe.CATEGORICAL_FEATURES)} categorical)"
FEATURES_LISTED = f"{len(fe.FEATURES)} model features: {len(fe.NUMERIC_FEATURES)} numeric, "


def _code_cells(notebook: dict) -> list[dict]:
    return [c for c in notebook["cells"] if c["cell_type"] == "code"]


def _text(cell) -> str:
    """Every text an executed cell produced: stdout/stderr and the plain-text form of displayed values."""
    parts = []
    for output in cell["outputs"]:
        if output["output_type"] == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
    # saved notebooks may store a text as a list of lines
    return "".join(p if isinstance(p, str) else "".join(p) for p in parts)


@pytest.fixture(scope="module")
def committed() -> dict:
    return json.loads((SRC_DIR / NOTEBOOK).read_text())


@pytest.mark.slow
def test_eda_notebook_runs_on_the_warehouse_and_shows_the_key_figures(isolated_settings) -> None:
    # The notebook reads the warehouse the settings point at (a temporary one here), never the CSV.
    load_raw_csv(RAW_CSV)
    notebook = execute(SRC_DIR / NOTEBOOK)
    cells = [c for c in notebook.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert not errors, [f"{e.ename}: {e.evalue}" for e in errors]
    text = "\n".join(_text(c) for c in cells)

    assert "336,776 rows x 36 columns" in text
    assert "disrupted: 89,530 of 336,776 flights = 26.6%" in text
    assert "validate_raw: PASSED on 336,776 rows x 36 columns" in text
    assert "validate_scoring_input: PASSED; 31 columns kept" in text
    # the crafted bad batch is refused, naming column, rule and row count
    assert "raw data contract violated" in text
    assert "column 'origin': rule 'isin(EWR, JFK, LGA)' failed on 1 row(s)" in text
    assert "column 'wind_speed': rule 'in_range(0, 100)' failed on 1 row(s)" in text
    assert "column 'distance': rule 'column_present' failed on 50 row(s)" in text
    assert "repaired batch accepted: 50 rows, 31 columns" in text
    # the feature counts come from ft_engineering, and section 6.3 lists every feature
    assert FEATURE_COUNTS in text and FEATURES_LISTED in text
    # plots were drawn
    images = sum("image/png" in o.get("data", {}) for c in cells for o in c.outputs)
    assert images >= 15


def test_eda_notebook_is_committed_executed(committed: dict) -> None:
    code_cells = _code_cells(committed)
    assert code_cells
    assert all(c.get("execution_count") for c in code_cells), "commit the notebook executed"
    errors = [o for c in code_cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors
    # the committed outputs hold the validation passing on the real table
    text = "\n".join(_text(c) for c in code_cells)
    assert "validate_raw: PASSED on 336,776 rows" in text


def test_eda_notebook_was_executed_with_the_features_as_built(committed: dict) -> None:
    # a feature added to or removed from ft_engineering without re-executing the notebook fails here
    text = "\n".join(_text(c) for c in _code_cells(committed))
    assert FEATURE_COUNTS in text, "re-execute the notebook: its feature counts are not ft_engineering's"
    assert FEATURES_LISTED in text


def test_eda_notebook_text_does_not_hard_code_feature_counts(committed: dict) -> None:
    markdown = "\n".join("".join(c["source"]) for c in committed["cells"] if c["cell_type"] == "markdown")
    counts = re.findall(r"\b\d+ (?:numeric|categorical)\b|\b\d+ features\b", markdown)
    assert not counts, f"counted in the text instead of from ft_engineering: {counts}"


def test_eda_notebook_imports_the_modules_instead_of_defining_code(committed: dict) -> None:
    source = "\n".join("".join(c["source"]) for c in _code_cells(committed))
    assert "def " not in source, "notebooks import functions from the modules, they do not define them"
    assert "import ft_engineering" in source and "from data_contract import" in source
    # the warehouse, not the CSV, is the notebook's source
    assert "Base_de_datos" not in source and "read_csv" not in source


def test_eda_notebook_outputs_hold_no_absolute_paths_and_stay_small(committed: dict) -> None:
    size = (SRC_DIR / NOTEBOOK).stat().st_size
    assert size < 4 * 1024 * 1024, f"{size:,} bytes"
    text = "\n".join(_text(c) for c in _code_cells(committed))
    assert not re.search(r"(/home/|/tmp/|/work/|/Users/|[A-Z]:\\\\)", text)
