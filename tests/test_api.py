"""The HTTP API in-process (FastAPI TestClient): formats in and out, every error status
with its problem detail, idempotent retries, the API key, the size cap, overload.

The app is built over the session's trained model (conftest ``trained``) and the test's
own temporary lake, so every test sees an empty scored table. Scores are compared with
``scoring.score`` on the same rows, the function every other path uses.
"""

from __future__ import annotations

import asyncio
import io
import json

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

import api
import api_answers
import lake
import scoring as sc
from api_helpers import PARQUET, csv_bytes, days, parquet_bytes, records_json, split_json
from settings import get_settings


@pytest.fixture(scope="module")
def scorer(trained, tmp_path_factory) -> sc.Scorer:
    """The session's model, reading the day context and outcome history of an empty lake
    (module fixtures start before each test's own settings)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_ARTIFACTS_DIR", str(trained[2]))
        mp.setenv("MLOPS_LAKE_DIR", str(tmp_path_factory.mktemp("api-lake")))
        get_settings.cache_clear()
        loaded = sc.Scorer.load()
    get_settings.cache_clear()
    return loaded


@pytest.fixture(scope="module")
def october(raw_frame) -> pl.DataFrame:
    return days(raw_frame, 10, 1, 2)


@pytest.fixture(scope="module")
def expected(october, scorer) -> pl.DataFrame:
    return sc.score(october, scorer)


@pytest.fixture
def client(scorer, use_trained):
    with TestClient(api.create_app(scorer), raise_server_exceptions=False) as test_client:
        yield test_client


def _configured(monkeypatch, scorer, **env) -> TestClient:
    for name, value in env.items():
        monkeypatch.setenv(f"MLOPS_{name.upper()}", str(value))
    get_settings.cache_clear()
    return TestClient(api.create_app(scorer), raise_server_exceptions=False)


def _post(client: TestClient, body: bytes, content_type: str, **headers) -> httpx.Response:
    return client.post("/predict", content=body, headers={"Content-Type": content_type, **headers})


def _stored() -> pl.DataFrame:
    return lake.read_dataset(sc.SCORED_DATASET).collect()


def _predictions(response: httpx.Response) -> pl.DataFrame:
    return pl.DataFrame(response.json()["predictions"])


def _assert_same_scores(answer: pl.DataFrame, expected: pl.DataFrame) -> None:
    assert answer.columns == sc.RESPONSE_COLUMNS  # passed through, column for column
    assert answer.select(sc.KEY_COLUMNS).equals(expected.select(sc.KEY_COLUMNS))
    assert answer["score"].to_list() == expected["score"].to_list()  # exactly, not approximately
    assert answer["label"].to_list() == expected["label"].to_list()


def _assert_problem(response: httpx.Response, status: int, reason: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status
    assert problem["type"] == f"urn:mlops-flights:problem:{reason}"
    assert problem["title"] and problem["detail"]
    assert problem["request_id"] == response.headers["x-request-id"]
    return problem


def _multipart(name: str, body: bytes, content_type: str | None) -> tuple[bytes, str]:
    files = {"file": (name, body, content_type)} if content_type else {"file": (name, body)}
    request = httpx.Request("POST", "http://x/predict", files=files)
    return request.read(), request.headers["content-type"]


# --------------------------------------------------------------------------- formats in and out


def test_every_input_format_gives_the_scorers_scores(client, october, expected) -> None:
    bodies = {
        "parquet": (parquet_bytes(october), PARQUET),
        "parquet alias": (parquet_bytes(october), "application/x-parquet"),
        "csv": (csv_bytes(october), "text/csv"),
        "json split": (split_json(october), "application/json"),
        "json records": (records_json(october), "application/json; charset=utf-8"),
        "multipart parquet": _multipart("day.parquet", parquet_bytes(october), PARQUET),
        "multipart csv by name": _multipart("day.csv", csv_bytes(october), "application/octet-stream"),
        "multipart json": _multipart("day.json", split_json(october), "application/json"),
    }
    for number, (label, (body, content_type)) in enumerate(bodies.items()):
        response = _post(client, body, content_type)
        assert response.status_code == 200, (label, response.text)
        answer = response.json()
        _assert_same_scores(_predictions(response), expected)
        assert answer["n_rows"] == october.height
        assert answer["model_version"] == expected["model_version"][0] == response.headers["x-model-version"]
        # the first request stores every row; the same rows in any other format add nothing
        assert (answer["stored_rows"], answer["already_stored"]) == (
            (october.height, 0) if number == 0 else (0, october.height)
        ), label
    assert _stored().height == october.height


def test_every_answer_format(client, october, expected) -> None:
    body = parquet_bytes(october)
    for accept, media_type in [
        (PARQUET, PARQUET),
        ("application/x-parquet", PARQUET),
        ("text/csv;q=0.5, application/vnd.apache.parquet", PARQUET),
        ("text/csv", "text/csv; charset=utf-8"),
        ("text/*", "text/csv; charset=utf-8"),
    ]:
        response = _post(client, body, PARQUET, Accept=accept)
        assert response.status_code == 200, accept
        assert response.headers["content-type"] == media_type
        if media_type == PARQUET:
            answer = pl.read_parquet(io.BytesIO(response.content))
            assert int(response.headers["content-length"]) == len(response.content)
        else:
            answer = pl.read_csv(io.BytesIO(response.content), schema=dict(expected.schema))
        _assert_same_scores(answer, expected)
        assert response.headers["x-rows"] == str(october.height)
        assert response.headers["x-batch-id"].startswith("b")
    for accept in [None, "*/*", "application/json", "application/xml;q=0.9, */*;q=0.1"]:
        headers = {} if accept is None else {"Accept": accept}
        response = _post(client, body, PARQUET, **headers)
        assert response.headers["content-type"] == "application/json"
        _assert_same_scores(_predictions(response), expected)


def test_unknown_categories_are_counted(client, scorer, october) -> None:
    batch = october.with_columns(
        pl.when(pl.col("flight") % 2 == 0).then(pl.lit("ZZZ")).otherwise("dest").alias("dest")
    )
    answer = _post(client, parquet_bytes(batch), PARQUET).json()
    flags = sc.score(batch, scorer).select(pl.col(sc.UNKNOWN_FLAGS).cast(pl.Int64).sum()).row(0, named=True)
    assert answer["unknown_categories"] == {f.removeprefix("unknown_"): n for f, n in flags.items()}
    assert answer["unknown_categories"]["dest"] >= batch.filter(pl.col("flight") % 2 == 0).height
    assert set(answer["unknown_categories"]) == {f.removeprefix("unknown_") for f in sc.UNKNOWN_FLAGS}


def test_an_empty_batch_gets_an_empty_answer(client, october) -> None:
    for body, content_type in [
        (parquet_bytes(october.head(0)), PARQUET),
        (json.dumps({"dataframe_records": []}).encode(), "application/json"),
    ]:
        response = _post(client, body, content_type)
        assert response.status_code == 200, response.text
        assert response.json()["n_rows"] == 0 and response.json()["predictions"] == []
    response = _post(client, parquet_bytes(october.head(0)), PARQUET, Accept="text/csv")
    assert response.text.strip() == ",".join(sc.RESPONSE_COLUMNS)


# --------------------------------------------------------------------------- errors


def _truncated_and_corrupt(october: pl.DataFrame) -> list[bytes]:
    body = parquet_bytes(october)
    middle = bytearray(body)
    for i in range(len(body) // 3, len(body) // 3 + 400):
        middle[i] ^= 0x5A  # damaged pages, intact footer
    return [body[: len(body) // 2], body[:-7], bytes(middle), b"PAR1", b"not parquet at all"]


def test_malformed_bodies_are_400(client, october) -> None:
    for body in _truncated_and_corrupt(october):
        problem = _assert_problem(_post(client, body, PARQUET), 400, "malformed-body")
        assert "Parquet" in problem["detail"] or "rows" in problem["detail"]
    csv_cases = [b"\xff\xfe\x00garbage\x00\n\x81\x82", csv_bytes(october.head(5)) + b"2013,1\n", b""]
    for body in csv_cases:
        _assert_problem(_post(client, body, "text/csv"), 400, "malformed-body")
    split = json.loads(split_json(october.head(3)))
    split["dataframe_split"]["data"][1] = split["dataframe_split"]["data"][1][:-2]  # ragged
    records = json.loads(records_json(october.head(2)))
    records["dataframe_records"][0]["carrier"] = {"nested": True}
    json_cases = [
        b'{"dataframe_split": {"columns": ["year"], "data": [[2013]',  # truncated
        b"[1, 2, 3]",
        b'{"instances": []}',
        b'{"dataframe_split": {"columns": ["a"], "data": [[NaN]]}}',
        json.dumps(split).encode(),
        json.dumps(records).encode(),
        b"\xff\xfe\xfa",
        b"[" * 100_000,
    ]
    for body in json_cases:
        _assert_problem(_post(client, body, "application/json"), 400, "malformed-body")
    no_file, content_type = _multipart("x.parquet", b"", PARQUET)
    _assert_problem(_post(client, b"--nothing--", content_type), 400, "malformed-body")
    _assert_problem(_post(client, no_file[: len(no_file) // 2], content_type), 400, "malformed-body")
    assert not lake.batch_ids(sc.SCORED_DATASET)


def test_contract_violations_are_422_with_column_rule_and_rows(client, october) -> None:
    secret = "QX9-never-echoed"
    bad_distance = october.with_columns(
        pl.when(pl.col("flight") < 100).then(-5).otherwise("distance").alias("distance")
    )
    n_bad = october.filter(pl.col("flight") < 100).height
    cases = [
        (parquet_bytes(october.drop("origin")), PARQUET, ("origin", "column_present", october.height)),
        (parquet_bytes(bad_distance), PARQUET, ("distance", None, n_bad)),
        (csv_bytes(bad_distance), "text/csv", ("distance", None, n_bad)),
        (records_json(bad_distance), "application/json", ("distance", None, n_bad)),
    ]
    text_month = october.head(10).with_columns(pl.lit(secret).alias("month"))
    cases += [
        (csv_bytes(text_month), "text/csv", ("month", "dtype(Int32)", 10)),
        (records_json(text_month), "application/json", ("month", "dtype(Int32)", 10)),
        (parquet_bytes(october.head(10).with_columns(pl.lit(secret).alias("tailnum").cast(pl.Categorical).to_physical())),
         PARQUET, ("tailnum", "dtype(String)", 10)),
    ]  # fmt: skip
    for body, content_type, (column, rule, rows) in cases:
        problem = _assert_problem(_post(client, body, content_type), 422, "contract-violation")
        failing = {(e["column"], e["rule"]): e["n_bad_rows"] for e in problem["errors"]}
        matches = [n for (c, r), n in failing.items() if c == column and (rule is None or r == rule)]
        assert matches == [rows], (content_type, failing)
        assert secret not in json.dumps(problem) and "-5" not in json.dumps(problem["errors"])
    assert not lake.batch_ids(sc.SCORED_DATASET)


def test_unsupported_types_are_415_and_unacceptable_answers_406(client, october) -> None:
    body = parquet_bytes(october.head(5))
    for content_type in ["text/plain", "application/xml", "text/csv; charset=latin-1", ""]:
        _assert_problem(_post(client, body, content_type), 415, "unsupported-media-type")
    part, content_type = _multipart("batch.xlsx", body, "application/vnd.ms-excel")
    _assert_problem(_post(client, part, content_type), 415, "unsupported-media-type")
    for accept in ["application/xml", "image/png, text/html", "text/csv;q=0"]:
        _assert_problem(_post(client, body, PARQUET, Accept=accept), 406, "not-acceptable")
    _assert_problem(client.get("/nowhere"), 404, "not-found")
    _assert_problem(client.get("/predict"), 405, "method-not-allowed")


def test_size_cap_is_413_declared_or_streamed(scorer, use_trained, monkeypatch, october) -> None:
    body = parquet_bytes(october)
    with _configured(
        monkeypatch, scorer, api_max_body_bytes=len(body) - 1, api_max_json_bytes=1000
    ) as client:
        _assert_problem(_post(client, body, PARQUET), 413, "body-too-large")

        def chunked():  # no Content-Length: cut off while streaming
            for start in range(0, len(body), 4096):
                yield body[start : start + 4096]

        response = client.post("/predict", content=chunked(), headers={"Content-Type": PARQUET})
        _assert_problem(response, 413, "body-too-large")
        _assert_problem(
            _post(client, split_json(october.head(20)), "application/json"), 413, "body-too-large"
        )
        part, content_type = _multipart("b.json", split_json(october.head(20)), "application/json")
        _assert_problem(_post(client, part, content_type), 413, "body-too-large")
        assert _post(client, parquet_bytes(october.head(50)), PARQUET).status_code == 200
        assert not list((get_settings().lake_dir / api.SPOOL_FOLDER).iterdir())  # nothing left spooled


# --------------------------------------------------------------------------- idempotency


def test_a_retry_gets_the_original_answer_and_stores_nothing(client, october) -> None:
    first = _post(client, parquet_bytes(october), PARQUET, **{"Idempotency-Key": "nightly-2013-10-01"})
    assert first.status_code == 200 and "idempotent-replayed" not in first.headers
    stored = _stored()
    # the same rows again, even as CSV, under the same key: the original answer, byte for byte
    for body, content_type in [(parquet_bytes(october), PARQUET), (csv_bytes(october), "text/csv")]:
        retry = _post(client, body, content_type, **{"Idempotency-Key": "nightly-2013-10-01"})
        assert retry.status_code == 200
        assert retry.headers["idempotent-replayed"] == "true"
        assert retry.content == first.content
        assert retry.headers["x-batch-id"] == first.headers["x-batch-id"]
    as_parquet = _post(
        client,
        parquet_bytes(october),
        PARQUET,
        **{"Idempotency-Key": "nightly-2013-10-01", "Accept": PARQUET},
    )
    _assert_same_scores(pl.read_parquet(io.BytesIO(as_parquet.content)), _predictions(first))
    assert _stored().equals(stored)

    # other rows under the same key: 409, nothing stored, the kept answer unchanged
    other = october.filter(pl.col("day") == 2)
    problem = _assert_problem(_post(client, parquet_bytes(other), PARQUET, **{"Idempotency-Key": "nightly-2013-10-01"}),
                              409, "idempotency-key-reused")  # fmt: skip
    assert "already used for other rows" in problem["detail"]
    assert _stored().equals(stored)
    assert api_answers.find("nightly-2013-10-01").meta["batch_id"] == first.json()["batch_id"]

    # without a key the same rows get a new batch id (and still store nothing)
    again = _post(client, parquet_bytes(october), PARQUET)
    assert again.json()["batch_id"] != first.json()["batch_id"] and again.json()["stored_rows"] == 0
    _assert_problem(_post(client, parquet_bytes(october), PARQUET, **{"Idempotency-Key": "../etc"}), 400,
                    "invalid-idempotency-key")  # fmt: skip


def test_a_key_whose_first_request_failed_can_be_used_again(client, october) -> None:
    broken = october.drop("dest")
    _assert_problem(
        _post(client, parquet_bytes(broken), PARQUET, **{"Idempotency-Key": "k1"}), 422, "contract-violation"
    )
    response = _post(client, parquet_bytes(october), PARQUET, **{"Idempotency-Key": "k1"})
    assert response.status_code == 200 and response.json()["request_name"] == "k1"


# --------------------------------------------------------------------------- the API key, ids, metrics


def test_the_api_key_guards_everything_but_the_probes(scorer, use_trained, monkeypatch, october) -> None:
    body = parquet_bytes(october.head(30))
    with _configured(monkeypatch, scorer, api_key="s3cret-key") as client:
        for headers in [
            {},
            {"X-API-Key": "wrong"},
            {"X-API-Key": "s3cret-key-but-longer"},
            {"X-API-Key": ""},
        ]:
            response = _post(client, body, PARQUET, **headers)
            problem = _assert_problem(response, 401, "unauthorized")
            assert "s3cret" not in json.dumps(problem)
            assert response.headers["www-authenticate"].startswith("ApiKey")
            _assert_problem(client.get("/model", headers=headers), 401, "unauthorized")
            _assert_problem(client.get("/metrics", headers=headers), 401, "unauthorized")
        assert client.get("/livez").status_code == 200 and client.get("/readyz").status_code == 200
        assert _post(client, body, PARQUET, **{"X-API-Key": "s3cret-key"}).status_code == 200
        assert client.get("/model", headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert not list(lake.dataset_dir(sc.SCORED_DATASET).glob("*.parquet"))[
            1:
        ]  # only the keyed request stored
    monkeypatch.delenv("MLOPS_API_KEY")
    get_settings.cache_clear()
    with TestClient(api.create_app(scorer)) as client:  # off: no key needed
        assert _post(client, body, PARQUET).status_code == 200
        assert client.get("/model").status_code == 200


def test_request_ids_are_echoed_or_made(client) -> None:
    response = client.get("/livez", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"
    made = client.get("/livez").headers["x-request-id"]
    assert len(made) == 32 and made != client.get("/livez").headers["x-request-id"]
    assert (
        client.get("/livez", headers={"X-Request-ID": "bad id\twith tab"}).headers["x-request-id"] != "bad id"
    )
    problem = _assert_problem(
        _post(client, b"x", "text/plain", **{"X-Request-ID": "trace-43"}), 415, "unsupported-media-type"
    )
    assert problem["request_id"] == "trace-43"


def test_model_card_readiness_and_metrics(client, scorer, october) -> None:
    card = client.get("/model").json()
    assert card["version"] == scorer.version and card["backend"] == scorer.backend
    assert card["features"] == scorer.artifact.features
    assert card["threshold"]["value"] == scorer.artifact.threshold
    assert "test" in card["metrics"] or card["metrics"]
    ready = client.get("/readyz").json()
    assert ready == {"status": "ready", "model_version": scorer.version, "backend": scorer.backend}
    _post(client, parquet_bytes(october), PARQUET)
    _post(client, csv_bytes(october.head(10)), "text/csv")
    _post(client, b"nope", PARQUET)
    text = client.get("/metrics").text
    assert f'mlops_api_rows_scored_total{{format="parquet"}} {float(october.height)}' in text
    assert 'mlops_api_rows_scored_total{format="csv"} 10.0' in text
    assert 'mlops_api_rejects_total{reason="malformed-body"} 1.0' in text
    assert 'mlops_api_requests_total{method="POST",route="/predict",status="200"} 2.0' in text
    assert "mlops_api_request_duration_seconds_bucket" in text
    assert f'mlops_api_model_info{{backend="{scorer.backend}",version="{scorer.version}"}} 1.0' in text


def test_without_a_model_the_probes_say_not_ready(tmp_path, monkeypatch, october) -> None:
    monkeypatch.setenv("MLOPS_ARTIFACTS_DIR", str(tmp_path / "no-artifacts"))
    get_settings.cache_clear()
    with TestClient(api.create_app(), raise_server_exceptions=False) as client:
        for _ in range(100):  # the loader thread fails at once; wait for it
            if client.get("/readyz").json().get("detail", "").startswith("no usable model"):
                break
        assert client.get("/livez").status_code == 200
        problem = _assert_problem(client.get("/readyz"), 503, "not-ready")
        assert "no trained model" in problem["detail"]
        response = _post(client, parquet_bytes(october.head(5)), PARQUET)
        _assert_problem(response, 503, "not-ready")
        assert int(response.headers["retry-after"]) > 0


def test_openapi_has_an_example_for_each_format(client) -> None:
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert set(body) == {
        PARQUET,
        "application/x-parquet",
        "text/csv",
        "application/json",
        "multipart/form-data",
    }
    assert set(body["application/json"]["examples"]) == {"dataframe_split", "dataframe_records"}
    assert body["text/csv"]["example"].startswith("year,month,day")
    responses = spec["paths"]["/predict"]["post"]["responses"]
    assert {"200", "400", "401", "406", "409", "413", "415", "422", "429", "503"} <= set(responses)
    assert set(responses["200"]["content"]) == {"application/json", PARQUET, "text/csv"}
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])


# --------------------------------------------------------------------------- overload


async def _overload(app, body: bytes) -> tuple[list[httpx.Response], httpx.Response]:
    """One upload holds the only slot (its body stalls) while others arrive."""
    release = asyncio.Event()

    async def stalled_body():
        yield body[:1000]
        await release.wait()
        yield body[1000:]

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as http:
            headers = {"Content-Type": PARQUET}
            holder = asyncio.create_task(http.post("/predict", content=stalled_body(), headers=headers))
            gate = app.state.service.gate
            while gate.in_flight == 0:
                await asyncio.sleep(0.01)
            others = await asyncio.gather(
                *(http.post("/predict", content=body, headers=headers) for _ in range(3))
            )
            release.set()
            return list(others), await holder


def test_overload_is_429_then_503_with_retry_after(scorer, use_trained, monkeypatch, october) -> None:
    body = parquet_bytes(october.head(200))
    monkeypatch.setenv("MLOPS_API_MAX_IN_FLIGHT", "1")
    monkeypatch.setenv("MLOPS_API_MAX_QUEUED", "1")
    monkeypatch.setenv("MLOPS_API_QUEUE_TIMEOUT_S", "0.3")
    get_settings.cache_clear()
    others, holder = asyncio.run(_overload(api.create_app(scorer), body))
    assert holder.status_code == 200
    statuses = sorted(r.status_code for r in others)
    assert statuses == [429, 429, 503], statuses  # one waits for the slot and gives up; two cannot wait
    for response in others:
        assert response.headers["content-type"] == "application/problem+json"
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["type"].endswith(
            "overloaded" if response.status_code == 429 else "queue-timeout"
        )


async def _race(app, bodies: list[bytes], key: str) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://api") as http,
    ):
        headers = {"Content-Type": PARQUET, "Idempotency-Key": key}
        return list(
            await asyncio.gather(*(http.post("/predict", content=b, headers=headers) for b in bodies))
        )


def test_concurrent_requests_on_one_key_store_one_content(scorer, use_trained, october) -> None:
    first, second = october.filter(pl.col("day") == 1), october.filter(pl.col("day") == 2)
    responses = asyncio.run(
        _race(api.create_app(scorer), [parquet_bytes(first), parquet_bytes(second)], "race")
    )
    assert sorted(r.status_code for r in responses) == [200, 409]
    winner = next(r for r in responses if r.status_code == 200).json()
    assert _stored().height == winner["n_rows"] == winner["stored_rows"]  # the 409's rows were never scored
    same = asyncio.run(_race(api.create_app(scorer), [parquet_bytes(first)] * 3, "same"))
    assert len({r.json()["batch_id"] for r in same}) == 1  # one answer, replayed to the others
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in same) == 2


def test_a_request_scores_in_its_stored_days_and_counts_the_dates_without_one(
    scorer, october, expected, tmp_path
) -> None:
    """The warehouse holds Oct 1 only: a random subset of Oct 1 scores as that whole day did;
    Oct 2 is scored from the request alone, and the answer says how many rows that was."""
    import dataclasses

    import day_context
    from data_contract import validate_scoring_input

    first_day = october.filter(pl.col("day") == 1)
    context = tmp_path / "day_context.parquet"
    day_context.write_context(validate_scoring_input(first_day), context, "test")
    with_context = dataclasses.replace(scorer, context=day_context.DayContext(context))
    batch = pl.concat([first_day.sample(100, seed=3), october.filter(pl.col("day") == 2).head(50)])
    with TestClient(api.create_app(with_context), raise_server_exceptions=False) as client:
        response = _post(client, parquet_bytes(batch), PARQUET)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["batch_only_rows"] == 50 and response.headers["X-Batch-Only-Rows"] == "50"
    predictions = pl.DataFrame(answer["predictions"])
    assert predictions["context"].to_list() == ["warehouse"] * 100 + ["batch_only"] * 50
    whole_day = predictions.head(100).join(expected.select(*sc.KEY_COLUMNS, "score"), on=sc.KEY_COLUMNS)
    assert (whole_day["score"] - whole_day["score_right"]).abs().max() < 1e-9
