"""The API's errors: RFC 9457 problem details (``application/problem+json``).

Every error the API answers is a :class:`Problem`: an HTTP status, a stable ``type`` (a URN
a client can switch on; docs/api.md lists them), a short ``title``, a ``detail`` that says
what to change, and the ``request_id`` of the request (also in the ``X-Request-ID``
header). A broken data contract adds ``errors``, one ``{column, rule, n_bad_rows}`` per
failing rule. Row values never appear in a problem: client data is not echoed.

:func:`install` maps the scoring core's exceptions (a ContractViolation, an InputError, a
RequestConflict, ...) and FastAPI's own (an unknown path, a bad header) onto problems, so
a route just raises; an exception nobody expected is logged with its traceback and answered
as a bare 500 problem, never with a stack trace (no input causes one: the tests send
every kind of bad input they know of).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import lake
from batch_io import ColumnTypeError, InputError
from data_contract import ContractViolation, RuleFailure
from model_artifact import ArtifactError
from scoring import RequestConflict

logger = logging.getLogger(__name__)

MEDIA_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:mlops-flights:problem:"


@dataclass
class Problem(Exception):
    """An error answer; ``reason`` names it in the type URN and in the rejects metric."""

    status: int
    reason: str
    title: str
    detail: str
    headers: dict[str, str] = field(default_factory=dict)
    errors: list[dict[str, Any]] | None = None

    def body(self, request_id: str | None, instance: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": TYPE_PREFIX + self.reason,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        if request_id:
            body["request_id"] = request_id
        if self.errors is not None:
            body["errors"] = self.errors
        return body


# --------------------------------------------------------------------------- the schema, for OpenAPI


class RuleError(BaseModel):
    column: str = Field(description="the column whose rule failed ('*' for a rule on the whole batch)")
    rule: str = Field(description="the contract's rule, e.g. 'dtype(Int32)', 'in_range(1, 12500)'")
    n_bad_rows: int = Field(description="how many rows break it (values are never echoed)")


class ProblemDetail(BaseModel):
    """RFC 9457 problem details."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(
        description="a URN naming the problem, e.g. urn:mlops-flights:problem:contract-violation"
    )
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="the request's path")
    request_id: str | None = Field(None, description="the X-Request-ID of the request")
    errors: list[RuleError] | None = Field(
        None, description="contract violations: one entry per failing rule"
    )


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error statuses, all of them problem+json."""
    return {
        status: {
            "description": DESCRIPTIONS[status],
            "content": {MEDIA_TYPE: {"schema": ProblemDetail.model_json_schema()}},
        }
        for status in statuses
    }


DESCRIPTIONS = {
    400: "malformed body (truncated or corrupt Parquet, ragged or invalid JSON, undecodable CSV) or header",
    401: "missing or wrong X-API-Key",
    404: "no such path",
    405: "method not allowed on this path",
    406: "the Accept header asks for a format the API cannot answer in",
    409: "the Idempotency-Key was used before for other rows",
    413: "the body is larger than the configured cap",
    415: "unsupported Content-Type",
    422: "the batch breaks the data contract (missing column, wrong type, out-of-range value)",
    429: "too many batches in flight; retry after Retry-After seconds",
    500: "an unexpected server error (never caused by input)",
    503: "not ready (model loading) or overloaded; retry after Retry-After seconds",
}


# --------------------------------------------------------------------------- mapping exceptions


def contract_problem(exc: ContractViolation) -> Problem:
    return rule_problem(exc.failures, f"the batch breaks the {exc.contract} data contract")


def rule_problem(failures: list[RuleFailure], detail: str) -> Problem:
    errors = [{"column": f.column, "rule": f.rule, "n_bad_rows": f.failing_rows} for f in failures]
    return Problem(
        422,
        "contract-violation",
        "Data contract violated",
        f"{detail}: {len(errors)} rule(s) failed; fix the listed columns and send the batch again",
        errors=errors,
    )


def input_problem(exc: InputError) -> Problem:
    if isinstance(exc, ColumnTypeError):
        return rule_problem([exc.failure], str(exc))
    return Problem(400, "malformed-body", "Malformed request body", str(exc))


def conflict_problem(exc: RequestConflict) -> Problem:
    return Problem(409, "idempotency-key-reused", "Idempotency-Key already used", str(exc))


def not_ready_problem(detail: str, retry_after: int) -> Problem:
    return Problem(503, "not-ready", "Service not ready", detail, {"Retry-After": str(retry_after)})


def server_problem(title: str, detail: str) -> Problem:
    return Problem(500, "server-error", title, detail)


def to_problem(exc: Exception) -> Problem:
    """The problem for an exception the scoring core raises (or a generic 500)."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, ContractViolation):
        return contract_problem(exc)
    if isinstance(exc, InputError):
        return input_problem(exc)
    if isinstance(exc, RequestConflict):
        return conflict_problem(exc)
    if isinstance(exc, ArtifactError):
        return not_ready_problem(f"no usable model: {exc}", 30)
    if isinstance(exc, lake.SchemaMismatch):
        return server_problem(
            "Scored table schema mismatch", "the scored table was written by another version"
        )
    return server_problem("Internal server error", "an unexpected error; it is logged with this request id")


def problem_response(request: Request, problem: Problem) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    metrics = getattr(request.app.state, "metrics", None)
    if metrics is not None:
        metrics.rejects.labels(problem.reason).inc()
    return JSONResponse(
        problem.body(request_id, request.url.path),
        status_code=problem.status,
        headers=problem.headers,
        media_type=MEDIA_TYPE,
    )


_HTTP_REASONS = {404: ("not-found", "Not found"), 405: ("method-not-allowed", "Method not allowed")}


def install(app: FastAPI) -> None:
    """Answer every error of ``app`` as problem+json (see the module docstring)."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason, title = _HTTP_REASONS.get(exc.status_code, ("http-error", "HTTP error"))
        problem = Problem(exc.status_code, reason, title, str(exc.detail), dict(exc.headers or {}))
        return problem_response(request, problem)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        fields = sorted({".".join(str(p) for p in error.get("loc", ())) for error in exc.errors()})
        problem = Problem(
            400, "invalid-request", "Invalid request", f"invalid or missing: {', '.join(fields)}"
        )
        return problem_response(request, problem)

    async def _domain(request: Request, exc: Exception) -> JSONResponse:
        problem = to_problem(exc)
        if problem.status >= 500:
            request_id = getattr(request.state, "request_id", "?")
            logger.error("request %s failed", request_id, exc_info=(type(exc), exc, exc.__traceback__))
        return problem_response(request, problem)

    # Each class the scoring core raises gets its handler (Starlette re-raises what reaches a
    # bare Exception handler after answering, so routes also wrap unexpected errors).
    for kind in (
        ContractViolation,
        InputError,
        RequestConflict,
        ArtifactError,
        lake.SchemaMismatch,
        Exception,
    ):
        app.add_exception_handler(kind, _domain)
