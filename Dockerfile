# syntax=docker/dockerfile:1
# vmhealth server image: exporter, webhook and simulator (`vmhealth <command>`).
#
#   docker build -t vmhealth .
#   docker run --rm vmhealth --help
#
# Two stages: the builder turns the project and every dependency into wheels (compilers stay there),
# the runtime installs only those wheels and runs as an unprivileged user.

ARG PYTHON_IMAGE=python:3.12-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
WORKDIR /src
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml README.md ./
COPY vmhealth ./vmhealth
COPY exporter ./exporter
COPY agent ./agent
COPY webhook ./webhook
COPY simulator ./simulator
COPY prometheus ./prometheus
COPY alertmanager ./alertmanager
RUN pip wheel --wheel-dir /wheels ".[server,postgres]"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="vmhealth" \
      org.opencontainers.image.description="Finds Proxmox guests that are running but hung, and resets them safely" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    XDG_RUNTIME_DIR=/tmp
RUN groupadd --system --gid 10001 vmhealth \
    && useradd --system --uid 10001 --gid vmhealth --home-dir /var/lib/vmhealth --create-home \
       --shell /usr/sbin/nologin vmhealth
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels "vmhealth[server,postgres]"
USER 10001:10001
WORKDIR /var/lib/vmhealth
# The exporter's port; the webhook uses 9749 and overrides the check in docker-compose.yml.
ENV HEALTHCHECK_URL=http://127.0.0.1:9747/healthz
EXPOSE 9747 9749
# No curl in slim images: the check is Python's own HTTP client.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["vmhealth"]
CMD ["exporter"]
