"""Execute a notebook top to bottom in place and save it with its outputs.

    python mlops_pipeline/src/notebook_runner.py mlops_pipeline/src/Cargar_datos.ipynb

The kernel starts in the notebook's folder (mlops_pipeline/src), so notebooks import the
project's modules directly. The test suite uses :func:`execute` without saving.
"""

from __future__ import annotations

import argparse
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Execute notebooks top to bottom and save them with outputs."
    )
    parser.add_argument("notebooks", nargs="+", type=Path, help="the .ipynb files to run, in order")
    args = parser.parse_args(argv)
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        print(f"error: no such notebook: {', '.join(missing)}", file=sys.stderr)
        raise SystemExit(2)
    for path in args.notebooks:
        target = path.resolve()
        nbformat.write(execute(target), target)
        print(f"executed and saved {path}")


if __name__ == "__main__":
    main()
