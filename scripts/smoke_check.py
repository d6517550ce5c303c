"""The smoke test's checks against a running API (called by scripts/smoke_image.sh).

    PYTHONPATH=mlops_pipeline/src .venv/bin/python scripts/smoke_check.py http://127.0.0.1:8000

Waits for /readyz, reads /model, POSTs 300 random flights of one real flight date (1 Oct
2013, from Base_de_datos.csv) as Parquet and checks the answer: one prediction per row in
the input's order, scores in [0, 1], labels equal to score >= the model's threshold, the
served model version, every flight scored in its stored day (``context = warehouse``: the
image carries the day context) with its full outcome history (``history_days = 8``: it
carries the loaded flights' outcomes too); then a Parquet answer under an Idempotency-Key and its
retry (same batch id). When this checkout has the same model version trained (./setup.sh),
the scores are also compared with the in-process scorer's on the *whole* day, whose
features need no stored context: equal scores prove the image scored the subset in its day. Prints one line per check; exit status 1 on the first failure.
"""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import httpx
import polars as pl

REPO = Path(__file__).resolve().parents[1]
PARQUET = "application/vnd.apache.parquet"


def say(message: str) -> None:
    print(f"[smoke] {message}", flush=True)


def wait_ready(url: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=3)
            if response.status_code == 200:
                return response.json()
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.TransportError as exc:
            last = type(exc).__name__
        time.sleep(1)
    raise SystemExit(f"FAIL not ready within {timeout:.0f}s: {last}")


def one_day() -> pl.DataFrame:
    from batch_io import read_file

    frames, _ = read_file(REPO / "Base_de_datos.csv", 400_000)
    return pl.concat(frame.filter(pl.col("month") == 10, pl.col("day") == 1) for frame in frames)


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAIL {message}")
    say(f"ok: {message}")


def compare_in_process(day: pl.DataFrame, predictions: pl.DataFrame, version: str) -> None:
    """Scores against this checkout's scorer on the whole day, when it has the same model version."""
    import scoring
    from model_artifact import ArtifactError

    try:
        scorer = scoring.Scorer.load(version)
    except ArtifactError:
        say(f"(model {version} is not trained in this checkout: in-process comparison skipped)")
        return
    expected = scoring.score(day, scorer).select(*scoring.KEY_COLUMNS, pl.col("score").alias("whole_day"))
    both = predictions.join(expected, on=scoring.KEY_COLUMNS)
    check(both.height == predictions.height, "every flight found in the whole day")
    worst = float((both["score"] - both["whole_day"]).abs().max())
    check(worst <= 1e-9, f"scores equal the in-process scorer's (max |diff| {worst:.1e}, {scorer.backend})")


def main(url: str) -> None:
    ready = wait_ready(url)
    say(f"ready: model {ready['model_version']} ({ready['backend']})")
    card = httpx.get(f"{url}/model", timeout=10).json()
    threshold = card["threshold"]["value"]
    day = one_day()
    batch = day.sample(300, seed=1)
    buffer = io.BytesIO()
    batch.write_parquet(buffer)
    body = buffer.getvalue()

    started = time.perf_counter()
    response = httpx.post(f"{url}/predict", content=body, headers={"Content-Type": PARQUET}, timeout=120)
    seconds = time.perf_counter() - started
    check(
        response.status_code == 200, f"POST /predict (Parquet, {batch.height} rows) -> 200 in {seconds:.2f}s"
    )
    answer = response.json()
    predictions = pl.DataFrame(answer["predictions"])
    key = ["year", "month", "day", "carrier", "flight", "origin"]
    check(
        answer["n_rows"] == batch.height == predictions.height, f"{answer['n_rows']} predictions, one per row"
    )
    check(
        predictions.select(key).equals(batch.select(key)), "flight keys passed through in the input's order"
    )
    check(predictions["score"].is_between(0, 1).all(), "scores in [0, 1]")
    labels = (predictions["score"] >= threshold).cast(pl.Int64)
    check((predictions["label"] == labels).all(), f"label = score >= threshold {threshold}")
    check(
        answer["model_version"] == card["version"],
        f"model_version {answer['model_version']} is the served one",
    )
    if "context" in predictions.columns:
        check(
            (predictions["context"] == "warehouse").all(), "every flight scored in its stored day (context)"
        )
    if "history_days" in predictions.columns:
        check(
            (predictions["history_days"] == 8).all(),
            "every flight scored with its full outcome history (history_days = 8: the image carries the outcomes)",
        )
    say(
        f"flagged {int(predictions['label'].sum())} of {batch.height} flights; stored {answer['stored_rows']} rows"
    )

    headers = {"Content-Type": PARQUET, "Accept": PARQUET, "Idempotency-Key": "smoke-2013-10-01"}
    first = httpx.post(f"{url}/predict", content=body, headers=headers, timeout=120)
    retry = httpx.post(f"{url}/predict", content=body, headers=headers, timeout=120)
    as_parquet = pl.read_parquet(io.BytesIO(first.content))
    check(
        as_parquet["score"].to_list() == predictions["score"].to_list(),
        "the Parquet answer has the same scores",
    )
    check(
        retry.headers.get("idempotent-replayed") == "true"
        and retry.headers["x-batch-id"] == first.headers["x-batch-id"],
        "a retry with the same Idempotency-Key gets the original answer",
    )
    compare_in_process(day, predictions, answer["model_version"])


if __name__ == "__main__":
    main(sys.argv[1].rstrip("/"))
