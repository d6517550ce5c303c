"""Execute a notebook top to bottom in place and save it with its outputs.

    python mlops_pipeline/src/notebook_runner.py mlops_pipeline/src/Cargar_datos.ipynb

The kernel starts in the notebook's folder (mlops_pipeline/src), so notebooks import the
project's modules directly. The test suite uses :func:`execute` without saving.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 900) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()
    return notebook


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        target = Path(arg).resolve()
        nbformat.write(execute(target), target)
        print(f"executed and saved {arg}")
