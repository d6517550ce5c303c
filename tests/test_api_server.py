"""The API as it runs in production: a real ``uvicorn model_deploy:app`` process.

* every content type in and out over HTTP;
* eight clients posting batches at once (retrying on 429/503 as told by Retry-After) while a
  reader runs SQL on the scored table: every accepted row is stored exactly once and the
  reader never fails;
* a server killed with SIGKILL in the middle of a batch leaves only whole batches and no
  kept answer, and the client's retry on a new server completes it;
* a bounded schemathesis run against the served OpenAPI document: no 5xx, no answer that
  breaks the document.
"""

from __future__ import annotations

import collections
import io
import threading
import time
from pathlib import Path

import httpx
import polars as pl
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import api_answers
import lake
import scoring as sc
from api_helpers import PARQUET, Server, csv_bytes, days, parquet_bytes, split_json
from conftest import RAW_CSV
from settings import get_settings
from warehouse import connect, load_raw_csv


def _env(trained, folder: Path, **extra) -> dict[str, str]:
    env = {
        "MLOPS_ARTIFACTS_DIR": str(trained[2]),
        "MLOPS_LAKE_DIR": str(folder / "lake"),
        "MLOPS_WAREHOUSE_PATH": str(folder / "warehouse.duckdb"),
    }
    return env | {f"MLOPS_{k.upper()}": str(v) for k, v in extra.items()}


@pytest.fixture(scope="module")
def server(trained, tmp_path_factory):
    """One server for the module's lighter tests (its own lake)."""
    folder = tmp_path_factory.mktemp("api-server")
    running = Server(_env(trained, folder), folder / "uvicorn.log").start()
    yield running
    running.stop()


def _stored() -> pl.DataFrame:
    return lake.read_dataset(sc.SCORED_DATASET).collect()


def test_every_content_type_in_and_out_over_http(server, raw_frame) -> None:
    batch = days(raw_frame, 11, 3, 3)
    answers = {}
    for body, content_type in [
        (parquet_bytes(batch), PARQUET),
        (csv_bytes(batch), "text/csv"),
        (split_json(batch), "application/json"),
    ]:
        for accept in ["application/json", PARQUET, "text/csv"]:
            response = httpx.post(f"{server.url}/predict", content=body, headers={"Content-Type": content_type, "Accept": accept}, timeout=60)  # fmt: skip
            assert response.status_code == 200, response.text
            if accept == "application/json":
                frame = pl.DataFrame(response.json()["predictions"])
            elif accept == PARQUET:
                frame = pl.read_parquet(io.BytesIO(response.content))
            else:
                frame = pl.read_csv(io.BytesIO(response.content), schema=dict(frame.schema))
            answers[(content_type, accept)] = frame
    first = next(iter(answers.values()))
    assert first.height == batch.height
    for frame in answers.values():
        assert frame.equals(first)  # identical scores whatever goes in or comes out


def test_a_body_over_the_cap_is_refused_and_the_server_goes_on(trained, tmp_path, raw_frame) -> None:
    body = parquet_bytes(days(raw_frame, 11, 4, 4))
    capped = Server(
        _env(trained, tmp_path, api_max_body_bytes=len(body) // 2), tmp_path / "uvicorn.log"
    ).start()
    try:

        def chunks():
            for start in range(0, len(body), 8192):
                yield body[start : start + 8192]

        for content in (body, chunks()):
            response = httpx.post(
                f"{capped.url}/predict", content=content, headers={"Content-Type": PARQUET}, timeout=60
            )
            assert response.status_code == 413
            assert response.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{capped.url}/livez").status_code == 200
        small = parquet_bytes(days(raw_frame, 11, 4, 4).head(100))
        assert (
            httpx.post(f"{capped.url}/predict", content=small, headers={"Content-Type": PARQUET}).status_code
            == 200
        )
    finally:
        capped.stop()


# --------------------------------------------------------------------------- concurrency


def _post_until_accepted(url: str, body: bytes, key: str, log: list) -> httpx.Response:
    """A well-behaved client: retry on 429/503 after Retry-After, at most 40 times."""
    for _ in range(40):
        response = httpx.post(f"{url}/predict", content=body, headers={"Content-Type": PARQUET, "Idempotency-Key": key}, timeout=120)  # fmt: skip
        log.append(response.status_code)
        if response.status_code not in (429, 503):
            return response
        time.sleep(min(float(response.headers["retry-after"]), 1.0))
    raise AssertionError(f"{key} was never accepted")


def test_eight_clients_and_a_sql_reader(trained, tmp_path, raw_frame, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(trained[2]))
    get_settings.cache_clear()
    load_raw_csv(RAW_CSV)
    scorer = sc.Scorer.load()
    sc.score_and_persist(days(raw_frame, 9, 1, 1), scorer)  # the views need one batch to exist
    sc.register_views()
    baseline = _stored().height

    server = Server(
        _env(trained, tmp_path, api_max_in_flight=2, api_max_queued=2), tmp_path / "uvicorn.log"
    ).start()
    # client i sends Nov days 2i+1 and 2i+2, and re-sends its first one under a new key
    batches = {
        f"c{i}-{j}": days(raw_frame, 11, 2 * i + 1 + j, 2 * i + 1 + j) for i in range(8) for j in range(2)
    }
    answers: dict[str, httpx.Response] = {}
    statuses: list[int] = []
    errors: list[BaseException] = []
    reads: list[int] = []
    done = threading.Event()

    def client(i: int) -> None:
        try:
            for j in range(2):
                key = f"c{i}-{j}"
                answers[key] = _post_until_accepted(server.url, parquet_bytes(batches[key]), key, statuses)
            answers[f"c{i}-again"] = _post_until_accepted(server.url, parquet_bytes(batches[f"c{i}-0"]), f"c{i}-again", statuses)  # fmt: skip
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def reader() -> None:
        with connect(read_only=True) as con:
            while not done.is_set():
                try:
                    rows = con.execute("SELECT count(*) FROM scored").fetchall()[0][0]
                    con.execute(
                        "SELECT month, day, count(*), avg(score) FROM scored GROUP BY 1, 2"
                    ).fetchall()
                    reads.append(rows)
                except BaseException as exc:
                    errors.append(exc)
                    return
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    watcher = threading.Thread(target=reader)
    try:
        watcher.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=600)
    finally:
        done.set()
        watcher.join(timeout=60)
        server.stop()
    assert not errors, errors
    assert all(r.status_code == 200 for r in answers.values()), {
        k: r.text for k, r in answers.items() if r.status_code != 200
    }
    sent = pl.concat(batches.values())
    stored = _stored()
    assert stored.height == baseline + sent.height  # every accepted row once, the re-sends added none
    assert stored.select(*sc.KEY_COLUMNS, sc.DIGEST_COLUMN, "model_version").is_unique().all()
    assert sum(r.json()["stored_rows"] for r in answers.values()) == sent.height
    assert all(answers[f"c{i}-again"].json()["stored_rows"] == 0 for i in range(8))
    assert len(reads) > 3 and reads == sorted(reads), "the reader ran throughout and saw the table grow"
    assert (
        429 in statuses or 503 in statuses or len(statuses) == len(answers)
    )  # overload was answered, not fatal


# --------------------------------------------------------------------------- SIGKILL


def test_a_server_killed_mid_batch_leaves_no_partial_batch(trained, tmp_path, raw_frame, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(trained[2]))
    get_settings.cache_clear()
    september = raw_frame.filter(pl.col("month") == 9).select(days(raw_frame, 9, 1, 1).columns)
    body = parquet_bytes(september)
    env = _env(trained, tmp_path, api_batch_rows=1000)
    server = Server(env, tmp_path / "uvicorn.log").start()
    headers = {"Content-Type": PARQUET, "Idempotency-Key": "september"}
    outcome: list = []

    def post() -> None:
        try:
            outcome.append(httpx.post(f"{server.url}/predict", content=body, headers=headers, timeout=120))
        except httpx.TransportError as exc:
            outcome.append(exc)

    sender = threading.Thread(target=post)
    sender.start()
    deadline = time.monotonic() + 120
    while len(lake.batch_ids(sc.SCORED_DATASET)) < 3 and time.monotonic() < deadline and not outcome:
        time.sleep(0.02)
    server.kill()
    sender.join(timeout=60)
    assert outcome and isinstance(outcome[0], httpx.TransportError), "kill the server while it scores"
    partial = _stored()
    assert 0 < partial.height < september.height
    done_days = partial.select("month", "day").unique()
    assert partial.height == september.join(done_days, on=["month", "day"]).height  # whole days only
    assert api_answers.find("september") is None  # no answer was kept for the key

    restarted = Server(env, tmp_path / "uvicorn.log").start()
    try:
        retry = httpx.post(f"{restarted.url}/predict", content=body, headers=headers, timeout=120)
    finally:
        restarted.stop()
    assert retry.status_code == 200, retry.text
    answer = retry.json()
    assert answer["n_rows"] == september.height
    assert answer["stored_rows"] == september.height - partial.height
    assert answer["already_stored"] == partial.height
    final = _stored()
    assert final.height == september.height and final.select(sc.KEY_COLUMNS).is_unique().all()


# --------------------------------------------------------------------------- schemathesis


def _parquet_bodies(raw_frame: pl.DataFrame) -> st.SearchStrategy[bytes]:
    """Parquet bodies: real batches (whole, truncated, with damaged pages) and random bytes."""
    valid = parquet_bytes(days(raw_frame, 12, 24, 24).head(60))
    damaged = bytearray(valid)
    damaged[len(valid) // 3 : len(valid) // 3 + 64] = bytes(64)
    samples = [valid, valid[: len(valid) // 2], bytes(damaged), b"PAR1" + valid[4:-8] + b"PAR1"]
    return st.one_of(st.sampled_from(samples), st.binary(max_size=4096))


def test_schemathesis_finds_no_server_error_and_no_schema_break(server, raw_frame) -> None:
    """A bounded property-based run over every operation of the served OpenAPI document; for
    /predict, each request media type with a fuzzed Accept and with each answer format."""
    schemathesis.openapi.media_type(PARQUET, _parquet_bodies(raw_frame), aliases=["application/x-parquet"])
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    checks = [
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.content_type_conformance,
        schemathesis.checks.response_headers_conformance,
        schemathesis.checks.response_schema_conformance,
    ]
    statuses: collections.Counter = collections.Counter()
    operations = {result.ok().path: result.ok() for result in schema.get_all_operations()}
    assert set(operations) == {"/livez", "/readyz", "/model", "/metrics", "/predict"}
    runs = [(operations[path].as_strategy(), 5) for path in ("/livez", "/readyz", "/model", "/metrics")]
    predict = operations["/predict"]
    for media_type in schema.get_request_payload_content_types(predict):
        runs.append((predict.as_strategy(media_type=media_type), 8))
        for accept in ("application/json", PARQUET, "text/csv"):
            runs.append((predict.as_strategy(media_type=media_type, headers={"Accept": accept}), 6))
    for strategy, examples in runs:

        @given(case=strategy)
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case) -> None:
            response = case.call_and_validate(base_url=server.url, checks=checks, timeout=60)
            statuses[(case.media_type, response.status_code)] += 1

        run()
    predict_statuses = {status for (media_type, status) in statuses if media_type}
    assert {200, 400, 406} <= predict_statuses, statuses  # it reached the scorer as well as the errors
    assert {media_type for media_type, _ in statuses} >= {PARQUET, "text/csv", "application/json"}
    assert httpx.get(f"{server.url}/livez").status_code == 200
