# The system's image. Today it runs the main job (load, train, score); the serving issue
# switches the command to the FastAPI app under Uvicorn.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so code changes do not reinstall them.
COPY requirements.txt .
RUN pip install -r requirements.txt

COPY mlops_pipeline/ mlops_pipeline/
COPY Base_de_datos.csv .

RUN useradd --create-home --uid 10001 app && chown -R app /app
USER app

CMD ["python", "mlops_pipeline/src/pipeline.py"]
