"""The API's Prometheus metrics (prometheus-client), and the ASGI middleware that counts
every request and gives it a request id.

One registry per app (not the library's global one), so every app a test builds counts on
its own. Route labels are the route's template (``/predict``), never the raw path, so an
unknown URL cannot create new series. Uvicorn runs one worker per container: the figures
are the process's, and a scaled-out deployment sums them over its replicas.
"""

from __future__ import annotations

import re
import time
import uuid

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "mlops_api_requests", "HTTP requests answered", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "mlops_api_request_duration_seconds",
            "time to answer, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows_scored = Counter(
            "mlops_api_rows_scored", "rows scored by /predict, by input format", ["format"], registry=r
        )
        self.rows_stored = Counter(
            "mlops_api_rows_stored", "rows /predict newly stored in the scored table", registry=r
        )
        self.rejects = Counter(
            "mlops_api_rejects", "requests answered with a problem, by reason", ["reason"], registry=r
        )
        self.replays = Counter(
            "mlops_api_idempotent_replays", "retries answered with their kept answer", registry=r
        )
        self.in_flight = Gauge("mlops_api_batches_in_flight", "batches being received or scored", registry=r)
        self.queued = Gauge("mlops_api_batches_queued", "requests waiting for a scoring slot", registry=r)
        self.model = Gauge(
            "mlops_api_model_info", "the model served (1 once loaded)", ["version", "backend"], registry=r
        )

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def request_id(scope: dict) -> str:
    """The client's X-Request-ID when it is a sane token, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if REQUEST_ID_PATTERN.fullmatch(text):
                return text
    return uuid.uuid4().hex


class RequestContext:
    """Pure ASGI middleware: sets ``request.state.request_id``, echoes it as ``X-Request-ID``
    on the answer, and counts the request (method, route, status) and its latency."""

    def __init__(self, app, metrics: Metrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        started = time.perf_counter()
        status = 500

        async def send_with_id(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope.get("method", "?"), path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - started)
