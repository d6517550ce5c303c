# The serving image: the FastAPI /predict API under Uvicorn (docs/deployment.md).
#
# Two stages. "train" loads Base_de_datos.csv into a warehouse, trains the model and
# compiles and verifies its lleaves twin, exactly as ./setup.sh does; "serve" gets only
# what serving needs from it: the model artifact, its compiled object, the day context of
# the loaded schedule (day_context.py; 6.5 MB), the loaded flights' outcomes as the history
# the history features read (history.py; MLOPS_ACTUALS_DIR, or mount the company's actuals
# there), the source of mlops_pipeline/src and requirements-serving.txt.
# Training here rather than copying an artifact in: the image builds from a clean checkout
# with nothing else (CI and the certification stage have no artifacts/), and training is
# deterministic, so the image's model version is the one ./setup.sh gives on the same data.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app/mlops_pipeline/src
# LightGBM and the compiled model need the OpenMP runtime, which the slim base lacks
# (without it `import lightgbm` fails: libgomp.so.1 not found). Debian's security updates
# move its version, so it is not pinned; the Python dependencies are.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements-serving.txt .
RUN pip install --no-cache-dir -r requirements-serving.txt

FROM base AS train
# training also fits the scikit-learn candidates and draws its reports (matplotlib):
# their pins are taken from requirements.txt, so there is one list of versions
COPY requirements.txt .
RUN grep -E '^(scikit-learn|matplotlib)==' requirements.txt > requirements-train.txt \
    && pip install --no-cache-dir -r requirements-train.txt
COPY mlops_pipeline/src/ mlops_pipeline/src/
COPY Base_de_datos.csv .
ENV MLOPS_ARTIFACTS_DIR=/build/artifacts \
    MLOPS_WAREHOUSE_PATH=/build/warehouse.duckdb \
    MLOPS_LAKE_DIR=/build/lake
RUN python -c "from pathlib import Path; from warehouse import load_raw_csv; load_raw_csv(Path('Base_de_datos.csv'))" \
    && python -c "import day_context; print(day_context.refresh())" \
    && python mlops_pipeline/src/model_training_evaluation.py \
    && python -c "import production; print(production.publish_warehouse_outcomes())" \
    && python -c "from scoring import Scorer; s = Scorer.load(); print('model', s.version, 'backend', s.backend)"

FROM base AS serve
RUN useradd --create-home --uid 10001 app \
    && mkdir -p /data \
    && chown app /data
COPY mlops_pipeline/src/ mlops_pipeline/src/
COPY --from=train /build/artifacts/models/ artifacts/models/
# writable by the app: the fast path takes a lock there, and recompiles on another CPU
COPY --from=train --chown=10001 /build/artifacts/compiled/ artifacts/compiled/
# each stored flight's day-context columns: a request's flights score in their whole day
COPY --from=train /build/lake/day_context/day_context.parquet day_context.parquet
COPY --from=train /build/lake/actuals/ actuals/
ENV MLOPS_ARTIFACTS_DIR=/app/artifacts \
    MLOPS_DAY_CONTEXT_PATH=/app/day_context.parquet \
    MLOPS_ACTUALS_DIR=/app/actuals \
    MLOPS_LAKE_DIR=/data/lake \
    PORT=8000
# the scored table, the kept answers and the upload spool: mount a volume to keep them
VOLUME ["/data"]
USER 10001
EXPOSE 8000
# no curl or wget in the slim base: the check is a standard-library script
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "mlops_pipeline/src/healthcheck.py"]
# one worker: scoring uses the container's cores through its own threads, and the admission
# gate and the metrics are per process (scale out with replicas)
CMD ["sh", "-c", "exec uvicorn model_deploy:app --host 0.0.0.0 --port \"${PORT:-8000}\" --workers 1 --timeout-graceful-shutdown 30"]
