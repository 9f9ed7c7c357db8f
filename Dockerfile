# taskwarden: one image for every role (worker, beat, run, simulate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASKWARDEN_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . \
    && useradd --system --uid 1000 --home-dir /data taskwarden \
    && mkdir -p /data && chown taskwarden /data

USER taskwarden
VOLUME ["/data"]
ENTRYPOINT ["taskwarden"]
CMD ["worker"]
