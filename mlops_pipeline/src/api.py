"""The HTTP API: ``POST /predict`` for Parquet, CSV and JSON batches, and its health, model
card and metrics endpoints (FastAPI under Uvicorn; served as ``model_deploy:app``).

It scores nothing itself. A batch's body is streamed to a spool file and handed to
``file_scoring.score_file``, the same streaming, exactly-once, persisting scorer the command
line runs (``model_deploy.py score``), with the ``Idempotency-Key`` as the request name;
its output Parquet is then answered as JSON, Parquet or CSV. So the API gets every rule of
the scoring core (the contract, the features, the batch identity, the day context) from
the core itself, and a change there reaches the API with no change here.

    POST /predict   a batch in, its scores out (docs/api.md)
    GET  /livez     the process answers (always open)
    GET  /readyz    the model is loaded and compiled (always open)
    GET  /model     the model card: version, features, threshold, metrics, backend
    GET  /metrics   Prometheus text format

Production behaviour, each with its test in tests/test_api*.py:

* errors are RFC 9457 problems (``api_problems``); no input produces a 500;
* bodies are capped (413) and never held whole in memory (``api_io``);
* at most ``api_max_in_flight`` batches are received and scored at once, ``api_max_queued``
  more wait for a slot (up to ``api_queue_timeout_s``); beyond that the answer is 429, after
  the wait 503, both with ``Retry-After``, so a burst cannot exhaust memory or disk;
* scoring runs in a worker thread, never on the event loop;
* a retry with the same ``Idempotency-Key`` gets the original answer and stores nothing
  (``api_answers``); the same key with other rows is a 409;
* ``X-API-Key`` is required on every endpoint but /livez and /readyz when ``MLOPS_API_KEY``
  is set, compared with ``hmac.compare_digest``.

Settings (``MLOPS_API_*``, see settings.py) are read when the app starts, not at import.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from fastapi import Depends, FastAPI, Header, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field

import api_answers
import api_io
import api_problems
import lake
import scoring
from api_metrics import Metrics, RequestContext
from api_problems import Problem, problem_responses
from batch_io import InputError
from data_contract import ContractViolation
from file_scoring import check_request_name, score_file
from model_artifact import ArtifactError
from scoring import RequestConflict, Scorer
from settings import Settings, get_settings

logger = logging.getLogger(__name__)

SPOOL_FOLDER = ".api_spool"
STALE_SPOOL_S = 3600.0  # a spool folder this old belongs to no live request
EXPECTED = (ContractViolation, InputError, RequestConflict, ArtifactError, lake.SchemaMismatch, Problem)


# --------------------------------------------------------------------------- the service's state


class Gate:
    """Admission: ``limit`` batches at once, ``queued`` more waiting; beyond, a 429, and a
    wait longer than ``timeout`` seconds, a 503 (both with Retry-After)."""

    def __init__(self, limit: int, queued: int, timeout: float, retry_after: int, metrics: Metrics):
        self._slots = asyncio.Semaphore(max(limit, 1))
        self.max_queued = max(queued, 0)
        self.timeout = timeout
        self.retry_after = retry_after
        self.metrics = metrics
        self.in_flight = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self):
        if self._slots.locked():
            await self._wait()
        else:
            await self._slots.acquire()
        self.in_flight += 1
        self.metrics.in_flight.set(self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1
            self.metrics.in_flight.set(self.in_flight)
            self._slots.release()

    async def _wait(self) -> None:
        if self.waiting >= self.max_queued:
            raise Problem(
                429,
                "overloaded",
                "Too many batches in flight",
                f"{self.in_flight} batches are being scored and {self.waiting} wait; retry later",
                {"Retry-After": str(self.retry_after)},
            )
        self.waiting += 1
        self.metrics.queued.set(self.waiting)
        try:
            async with asyncio.timeout(self.timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise Problem(
                503,
                "queue-timeout",
                "Overloaded",
                f"no scoring slot became free within {self.timeout:g} s; retry later",
                {"Retry-After": str(self.retry_after)},
            ) from None
        finally:
            self.waiting -= 1
            self.metrics.queued.set(self.waiting)


@dataclass
class Service:
    """What the app holds between requests: settings, the scorer (loaded in a thread at
    start-up, so /livez answers while a model compiles), the gate."""

    settings: Settings
    metrics: Metrics
    gate: Gate
    scorer: Scorer | None = None
    load_error: str | None = None
    started_at: float = field(default_factory=time.time)
    key_locks: dict[str, list] = field(default_factory=dict)

    def load(self) -> None:
        try:
            scorer = Scorer.load(self.settings.api_model_version, fast=self.settings.fast_predict)
        except Exception as exc:  # a missing or tampered artifact, a feature-version mismatch
            logger.error("the API has no model: %s", exc)
            self.load_error = str(exc)
            return
        self.ready(scorer)

    def ready(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.metrics.model.labels(scorer.version, scorer.backend).set(1)
        logger.info("serving model %s (%s)", scorer.version, scorer.backend)

    def ready_scorer(self) -> Scorer:
        if self.scorer is not None:
            return self.scorer
        if self.load_error is not None:
            raise api_problems.not_ready_problem(f"no usable model: {self.load_error}", 30)
        raise api_problems.not_ready_problem("the model is loading", self.settings.api_retry_after_s)

    def spool_dir(self) -> Path:
        folder = self.settings.api_spool_dir or Path(self.settings.lake_dir) / SPOOL_FOLDER
        folder = Path(folder).absolute()
        folder.mkdir(parents=True, exist_ok=True)
        return folder


@asynccontextmanager
async def one_at_a_time(service: Service, key: str | None):
    """Requests with the same Idempotency-Key run one after the other in this process, so a
    second one sees the first one's kept answer (a replay, or a 409) instead of scoring the
    same key's rows alongside it."""
    if key is None:
        yield
        return
    entry = service.key_locks.setdefault(key, [asyncio.Lock(), 0])  # [lock, requests using it]
    entry[1] += 1
    try:
        async with entry[0]:
            yield
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del service.key_locks[key]


def _remove_stale_spool(folder: Path) -> None:
    """Spool folders left by a killed server (only old ones: another replica may share it)."""
    cutoff = time.time() - STALE_SPOOL_S
    for entry in folder.glob("req-*"):
        try:
            if entry.stat().st_mtime < cutoff:
                shutil.rmtree(entry, ignore_errors=True)
        except FileNotFoundError:
            continue


def _service(request: Request) -> Service:
    return request.app.state.service


# --------------------------------------------------------------------------- the OpenAPI document


class PredictResponse(BaseModel):
    """The JSON answer: the batch's metadata and one prediction per input row, in order."""

    model_config = ConfigDict(extra="allow")

    batch_id: str = Field(
        description="this answer's id (a retry with the same Idempotency-Key gets it again)"
    )
    model_version: str
    n_rows: int
    stored_rows: int = Field(description="rows this request newly stored in the scored table")
    already_stored: int = Field(description="rows the scored table already held (same inputs, same model)")
    unknown_categories: dict[str, int] = Field(
        description="rows with a category the model never saw, per column"
    )
    batch_only_rows: int = Field(
        0,
        description="rows whose flight date the warehouse does not hold: their day features came "
        "from this request's flights alone (per row: context = batch_only)",
    )
    request_name: str | None = Field(None, description="the Idempotency-Key, when one was sent")
    scored_at: str
    predictions: list[dict[str, Any]] = Field(
        description="per row: the flight key as sent, score, label and the scorer's other response columns"
    )


class ModelCard(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    version: str
    backend: str = Field(description="'lleaves' (the verified compiled model) or 'lightgbm'")
    threshold: dict[str, Any]
    features: list[str]
    metrics: dict[str, Any]


class Status(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    status: str


_EXAMPLE_ROW = {
    "year": 2013, "month": 10, "day": 1, "sched_dep_time": 600, "sched_arr_time": 835, "carrier": "UA",
    "flight": 1714, "tailnum": "N24211", "origin": "LGA", "dest": "IAH", "distance": 1416, "hour": 6,
    "minute": 0, "time_hour": "2013-10-01T10:00:00Z", "temp": 57.0, "dewp": 48.02, "humid": 71.6,
    "wind_dir": 30.0, "wind_speed": 8.05546, "wind_gust": None, "precip": 0.0, "pressure": 1022.1,
    "visib": 10.0, "plane_year": 1998, "type": "Fixed wing multi engine", "manufacturer": "BOEING",
    "model": "737-824", "engines": 2, "seats": 149, "engine": "Turbo-fan", "airline_name": "United Air Lines Inc.",
}  # fmt: skip

_SPLIT_SCHEMA = {
    "type": "object",
    "required": ["dataframe_split"],
    "properties": {
        "dataframe_split": {
            "type": "object",
            "required": ["columns", "data"],
            "properties": {
                "columns": {"type": "array", "items": {"type": "string"}},
                "data": {"type": "array", "items": {"type": "array"}},
            },
        }
    },
}
_RECORDS_SCHEMA = {
    "type": "object",
    "required": ["dataframe_records"],
    "properties": {"dataframe_records": {"type": "array", "items": {"type": "object"}}},
}
_BINARY = {"type": "string", "format": "binary"}
_CSV_EXAMPLE = (
    ",".join(_EXAMPLE_ROW) + "\n" + ",".join("NA" if v is None else str(v) for v in _EXAMPLE_ROW.values())
)

PREDICT_BODY = {
    "required": True,
    "description": (
        "One batch of scoring-input rows (docs/api.md): the flights' pre-departure columns. "
        "A batch is best one or more whole flight dates (the schedule features count the day's flights)."
    ),
    "content": {
        api_io.PARQUET: {"schema": _BINARY, "example": "(a Parquet file: curl --data-binary @batch.parquet)"},
        api_io.PARQUET_ALIAS: {"schema": _BINARY},
        api_io.CSV: {"schema": {"type": "string"}, "example": _CSV_EXAMPLE},
        api_io.JSON: {
            "schema": {"oneOf": [_SPLIT_SCHEMA, _RECORDS_SCHEMA]},
            "examples": {
                "dataframe_split": {
                    "summary": "MLflow dataframe_split",
                    "value": {
                        "dataframe_split": {
                            "columns": list(_EXAMPLE_ROW),
                            "data": [list(_EXAMPLE_ROW.values())],
                        }
                    },
                },
                "dataframe_records": {
                    "summary": "MLflow dataframe_records",
                    "value": {"dataframe_records": [_EXAMPLE_ROW]},
                },
            },
        },
        api_io.MULTIPART: {
            "schema": {"type": "object", "required": ["file"], "properties": {"file": _BINARY}},
            "encoding": {"file": {"contentType": f"{api_io.PARQUET}, {api_io.CSV}, {api_io.JSON}"}},
        },
    },
}

_ANSWER_EXAMPLE = {
    "batch_id": "b20261202T031500-1a2b3c4d5e6f",
    "model_version": "lgbm-20130630-1a2b3c4d",
    "n_rows": 1,
    "stored_rows": 1,
    "already_stored": 0,
    "unknown_categories": {"carrier": 0, "dest": 0},
    "request_name": "nightly-2013-10-01",
    "scored_at": "2026-12-02T03:15:00+00:00",
    "predictions": [
        {
            "year": 2013,
            "month": 10,
            "day": 1,
            "carrier": "UA",
            "flight": 1714,
            "origin": "LGA",
            "score": 0.18,
            "label": 0,
        }
    ],
}

PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the batch's scores, in the input's row order",
        "content": {
            api_io.JSON: {"schema": PredictResponse.model_json_schema(), "example": _ANSWER_EXAMPLE},
            api_io.PARQUET: {"schema": _BINARY},
            api_io.CSV: {"schema": {"type": "string"}},
        },
    },
    **problem_responses(400, 401, 406, 409, 413, 415, 422, 429, 500, 503),
}


# --------------------------------------------------------------------------- the app


def create_app(scorer: Scorer | None = None) -> FastAPI:
    """The API app. ``scorer``: serve this one (tests); default, load the configured model in
    a thread at start-up."""
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        settings = get_settings()
        gate = Gate(
            settings.api_max_in_flight,
            settings.api_max_queued,
            settings.api_queue_timeout_s,
            settings.api_retry_after_s,
            metrics,
        )
        service = Service(settings, metrics, gate)
        app.state.service = service
        _remove_stale_spool(service.spool_dir())
        if scorer is not None:
            service.ready(scorer)
        else:
            threading.Thread(target=service.load, name="model-loader", daemon=True).start()
        yield

    app = FastAPI(
        title="Flight disruption scoring API",
        version="1",
        summary="Scores NYC 2013 departures: will a flight arrive 15+ minutes late, or be cancelled or diverted?",
        description="Batches in as Parquet, CSV or JSON (MLflow layouts); answers in JSON, Parquet or CSV. See docs/api.md.",
        lifespan=lifespan,
    )
    app.state.metrics = metrics
    api_problems.install(app)
    app.add_middleware(RequestContext, metrics=metrics)
    _routes(app)
    return app


_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="needed when the server sets MLOPS_API_KEY"
)


async def require_key(request: Request, key: str | None = Security(_KEY_HEADER)) -> None:
    expected = _service(request).settings.api_key
    if expected is None:
        return
    given = (key or "").encode()
    if not hmac.compare_digest(given, expected.get_secret_value().encode()):
        raise Problem(
            401,
            "unauthorized",
            "Unauthorized",
            "missing or wrong X-API-Key",
            {"WWW-Authenticate": 'ApiKey header="X-API-Key"'},
        )


def _routes(app: FastAPI) -> None:
    keyed = [Depends(require_key)]

    @app.get("/livez", response_model=Status, tags=["health"], summary="the process answers")
    async def livez() -> dict[str, Any]:
        return {"status": "alive"}

    @app.get(
        "/readyz",
        response_model=Status,
        tags=["health"],
        summary="the model is loaded (and compiled, with the fast path) and /predict can score",
        responses=problem_responses(503),
    )
    async def readyz(request: Request) -> dict[str, Any]:
        scorer = _service(request).ready_scorer()
        return {"status": "ready", "model_version": scorer.version, "backend": scorer.backend}

    @app.get(
        "/model",
        response_model=ModelCard,
        tags=["model"],
        dependencies=keyed,
        summary="the model card of the model being served",
        responses=problem_responses(401, 503),
    )
    async def model(request: Request) -> dict[str, Any]:
        return model_card(_service(request).ready_scorer())

    @app.get(
        "/metrics",
        tags=["health"],
        dependencies=keyed,
        summary="Prometheus metrics: requests, rows scored, latency, rejects by reason",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **problem_responses(401),
        },
    )
    async def prometheus(request: Request) -> Response:
        body, media_type = request.app.state.metrics.exposition()
        return Response(body, media_type=media_type)

    @app.post(
        "/predict",
        tags=["scoring"],
        dependencies=keyed,
        summary="score a batch of flights",
        response_class=Response,
        responses=PREDICT_RESPONSES,
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def predict(
        request: Request,
        idempotency_key: str | None = Header(
            None,
            description="a name for this request: a retry with it gets the original answer; other rows under it are a 409",
            max_length=128,
        ),
        accept: str | None = Header(
            None, description="application/json (default), application/vnd.apache.parquet or text/csv"
        ),
        x_request_id: str | None = Header(None, description="echoed in the answer; generated when absent"),
    ) -> Response:
        return await _predict(request, idempotency_key, accept)


def model_card(scorer: Scorer) -> dict[str, Any]:
    card = scorer.artifact.card
    keep = (
        "time_ranges",
        "trained_at",
        "training_data_sha256",
        "feature_version",
        "selection_rule",
        "model_name",
    )
    return {
        "version": scorer.version,
        "backend": scorer.backend,
        "threshold": card.get("threshold", {}),
        "features": list(card.get("features", [])),
        "metrics": card.get("metrics", {}),
        "monthly_roc_auc": card.get("monthly_roc_auc", {}),
        "feature_version": scorer.state.feature_version,
        **{k: card[k] for k in keep if k in card},
    }


# --------------------------------------------------------------------------- POST /predict


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not lake.BATCH_ID_PATTERN.fullmatch(value):
        raise Problem(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit",
        )
    return value


async def _predict(request: Request, key_header: str | None, accept: str | None) -> Response:
    service = _service(request)
    scorer = service.ready_scorer()
    answer_type = api_io.output_format(accept)
    upload = api_io.upload_format(request.headers.get("content-type"))
    key = _idempotency_key(key_header)
    settings = service.settings
    cap = settings.api_max_body_bytes
    if upload.media_type == api_io.JSON:
        cap = min(cap, settings.api_max_json_bytes)
    api_io.check_declared_length(request.headers.get("content-length"), cap)

    async with one_at_a_time(service, key), service.gate.slot():
        folder = Path(tempfile.mkdtemp(prefix="req-", dir=service.spool_dir()))
        try:
            answer = await _receive_and_score(request, service, scorer, upload, cap, folder, key)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    if answer.replayed:
        service.metrics.replays.inc()
    if key is not None:  # the answer's rows are kept in the lake: the spool folder can go now
        shutil.rmtree(folder, ignore_errors=True)
        cleanup = None
    else:
        cleanup = folder
    return _render(answer, answer_type, cleanup, request)


async def _receive_and_score(
    request: Request,
    service: Service,
    scorer: Scorer,
    upload: api_io.Upload,
    cap: int,
    folder: Path,
    key: str | None,
) -> api_answers.Answer:
    settings = service.settings
    if upload.suffix is not None:
        body = folder / f"body{upload.suffix}"
        await api_io.spool(request.stream(), body, cap)
    else:
        raw = folder / "body.multipart"
        await api_io.spool(request.stream(), raw, cap)
        body, _ = await run_in_threadpool(
            api_io.extract_file_part, raw, upload.boundary, folder, settings.api_max_json_bytes
        )
        raw.unlink()
    kind = body.suffix.removeprefix(".")  # parquet, csv or json: the metrics' format label
    if key is not None:
        kept = await run_in_threadpool(api_answers.find, key)
        if kept is not None:  # a retry: same rows (else a 409), the original answer
            await _guarded(_check_same_rows, body, key, settings.api_batch_rows)
            return kept
    output = folder / "answer.parquet"
    result = await _guarded(
        score_file,
        body,
        output,
        scorer=scorer,
        batch_rows=settings.api_batch_rows,
        persist=True,
        request_name=key,
        progress=False,
    )
    service.metrics.rows_scored.labels(kind).inc(result.rows)
    service.metrics.rows_stored.inc(result.new_rows)
    unknown, batch_only = await run_in_threadpool(api_io.answer_counts, output, scoring.UNKNOWN_FLAGS)
    meta = {
        "batch_id": f"b{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(6)}",
        "model_version": result.model_version,
        "n_rows": result.rows,
        "stored_rows": result.new_rows,
        "already_stored": result.already_stored,
        "unknown_categories": unknown,
        "batch_only_rows": batch_only,
        "request_name": key,
        "scored_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    if key is None:
        return api_answers.Answer(meta, output)
    return await run_in_threadpool(api_answers.keep, key, output, meta)


def _check_same_rows(body: Path, key: str, batch_rows: int) -> None:
    check_request_name(body, key, batch_rows)


async def _guarded(function, *args, **kwargs):
    """Run blocking work in a worker thread; an error nobody expected becomes a logged 500
    problem (the expected ones reach their handlers in api_problems)."""
    try:
        return await run_in_threadpool(function, *args, **kwargs)
    except EXPECTED:
        raise
    except (Exception, pl.exceptions.PanicException) as exc:  # a Polars panic is a BaseException
        logger.exception("unexpected error in %s", getattr(function, "__name__", function))
        raise api_problems.server_problem(
            "Internal server error", "an unexpected error; it is logged"
        ) from exc


def _headers(meta: dict[str, Any], replayed: bool) -> dict[str, str]:
    headers = {
        "X-Batch-ID": meta["batch_id"],
        "X-Model-Version": meta["model_version"],
        "X-Rows": str(meta["n_rows"]),
        "X-Stored-Rows": str(meta["stored_rows"]),
        "X-Already-Stored": str(meta["already_stored"]),
        "X-Unknown-Categories": ",".join(f"{k}={v}" for k, v in meta["unknown_categories"].items()),
        "X-Batch-Only-Rows": str(meta.get("batch_only_rows", 0)),
    }
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return headers


def _render(answer: api_answers.Answer, media_type: str, cleanup: Path | None, request: Request) -> Response:
    headers = _headers(answer.meta, answer.replayed)
    if media_type == api_io.JSON:
        body = api_io.json_answer(answer.meta, answer.rows)
    elif media_type == api_io.CSV:
        body = api_io.csv_answer(answer.rows)
        media_type = f"{api_io.CSV}; charset=utf-8"
    else:
        body = api_io.file_answer(answer.rows)
        headers["Content-Length"] = str(answer.rows.stat().st_size)
    return StreamingResponse(_then_remove(body, cleanup), media_type=media_type, headers=headers)


def _then_remove(body: Iterator[bytes], folder: Path | None) -> Iterator[bytes]:
    """Stream ``body``, then remove the request's spool folder (also when the client left)."""
    try:
        yield from body
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
