"""Deployment: the door to the scorer, from the command line and over HTTP.

The scoring logic lives in small modules, each with one job; this file puts them in
front of users:

    scoring.py       the score function (contract, features, predict), the batch identity,
                     exactly-once persistence to the scored table, the warehouse views
    batch_io.py      input formats and readers (a path or bytes), the atomic response file
    file_scoring.py  the streaming file scorer (chunks of whole flight dates)
    production.py    the production period (Sep-Dec) as daily batches from the warehouse
    ray_scoring.py   the same scorer on Ray Data, for clusters
    api.py           the HTTP API (FastAPI): POST /predict and its health, model and metrics
                     endpoints, over file_scoring.score_file (docs/api.md)

The API is served as ``model_deploy:app``::

    uvicorn model_deploy:app --app-dir mlops_pipeline/src --port 8000

Command line (every error a user can cause prints one line and exits with status 2)::

    python mlops_pipeline/src/model_deploy.py score INPUT.parquet|csv OUTPUT.parquet \\
        [--engine local|ray] [--batch-rows N] [--batch-id NAME] [--no-persist] [--model-version V]
    (INPUT may also be a .json batch in MLflow's dataframe_split or dataframe_records layout)
    python mlops_pipeline/src/model_deploy.py production   # score Sep-Dec as daily batches

``score`` stores the scored rows in the scored table by default (only rows it does not
hold yet for the model: re-scoring adds nothing); ``--no-persist`` writes OUTPUT only.
``--batch-id`` names the request: the same name with other rows is refused.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

import lake
from api import create_app
from batch_io import InputError, input_format
from data_contract import ContractViolation
from file_scoring import DEFAULT_BATCH_ROWS, ScoreFileResult, score_file
from model_artifact import ArtifactError
from production import score_production
from scoring import RESPONSE_COLUMNS, RequestConflict, Scorer, score

__all__ = ["RESPONSE_COLUMNS", "Scorer", "app", "main", "score", "score_file", "score_production"]

logger = logging.getLogger(__name__)

# The ASGI app. Building it reads no settings and loads no model: its start-up does.
app = create_app()

# Errors a user can cause (bad input, no usable model, a reused name, a lake from an
# older schema): one line on stderr and exit status 2, never a traceback.
USER_ERRORS = (
    ContractViolation,
    ArtifactError,
    InputError,
    RequestConflict,
    lake.BatchConflict,
    lake.SchemaMismatch,
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="Score flights with the saved model.")
    commands = parser.add_subparsers(dest="command", required=True)
    score_cmd = commands.add_parser("score", help="score a Parquet, CSV or JSON file")
    score_cmd.add_argument("input", type=Path)
    score_cmd.add_argument("output", type=Path)
    score_cmd.add_argument("--engine", choices=["local", "ray"], default="local")
    score_cmd.add_argument("--batch-rows", type=int, default=DEFAULT_BATCH_ROWS)
    score_cmd.add_argument(
        "--batch-id", default=None, help="a name for this request; reusing it for other rows is refused"
    )
    score_cmd.add_argument(
        "--no-persist", action="store_true", help="write OUTPUT only, do not store in the scored table"
    )
    score_cmd.add_argument("--model-version", default=None, help="default: the latest trained model")
    score_cmd.add_argument("--ray-address", default=None, help="Ray cluster address (default: local)")
    commands.add_parser("production", help="score the Sep-Dec production period as daily batches")
    return parser


def _score(args: argparse.Namespace) -> ScoreFileResult:
    input_format(args.input)  # a missing or unsupported file is refused before the model loads
    if args.batch_rows < 1:
        raise InputError(f"--batch-rows must be at least 1, got {args.batch_rows}")
    if args.engine == "ray":
        from ray_scoring import score_file_ray

        return score_file_ray(
            args.input, args.output, model_version=args.model_version, address=args.ray_address,
            persist=not args.no_persist, request_name=args.batch_id, batch_rows=args.batch_rows,
        )  # fmt: skip
    return score_file(
        args.input, args.output, model_version=args.model_version, batch_rows=args.batch_rows,
        persist=not args.no_persist, request_name=args.batch_id,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        with logging_redirect_tqdm():  # log lines above the progress bar, not through it
            if args.command == "production":
                counts = score_production()
                print(
                    f"[score] {counts['rows']:,} flights in {counts['days']} daily batches "
                    f"({counts['new_rows']:,} new rows in {counts['new_batches']} new batches)"
                )
                return
            result = _score(args)
    except USER_ERRORS as exc:
        # say what is wrong, no traceback; nothing was written to OUTPUT, and the scored
        # table holds only whole batches stored before the error
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    print(result.summary())


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
