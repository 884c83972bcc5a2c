# syntax=docker/dockerfile:1
# The image of every Polyframe service (SERVICE: users-fastapi, legacy-flask or admin-django).
# Built from the repository root, as skaffold.yaml's artifacts build it:
#   docker build -f deploy/images/service.Dockerfile --build-arg SERVICE=users-fastapi \
#     -t polyframe/users-fastapi:dev .
# What differs per service comes from services/$SERVICE: its package, and the entry point and
# build step `make generate` writes from its service.yaml (image/entrypoint.sh, image/build.sh).
# Runs as a non-root numeric user with a read-only root file system (only /tmp is written,
# a volume in Kubernetes); the production server, one worker process, is the entry point.

FROM ghcr.io/astral-sh/uv:0.13.8 AS uv

FROM python:3.11.14-slim-trixie AS build
ARG SERVICE
RUN test -n "${SERVICE}" \
    || { echo "build with --build-arg SERVICE=<a folder of services/>" >&2; exit 1; }
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first, from the frozen lock file alone (a layer that changes rarely).
COPY uv.lock pyproject.toml ./
COPY libs/service-kit/pyproject.toml libs/service-kit/
COPY services/${SERVICE}/pyproject.toml services/${SERVICE}/
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace --package "${SERVICE}"
# Then the shared kit and the service, installed as wheels (no source tree in the image).
COPY libs/service-kit libs/service-kit
COPY services/${SERVICE} services/${SERVICE}
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --package "${SERVICE}"
# The service's build-time setup (service.yaml's `cluster: image` steps, e.g. the admin's static
# files, into /app), and its entry point; everything the image keeps is under /app.
RUN PATH=/app/.venv/bin:$PATH sh "services/${SERVICE}/image/build.sh" \
    && cp "services/${SERVICE}/image/entrypoint.sh" /app/entrypoint.sh

FROM python:3.11.14-slim-trixie AS runtime
ARG SERVICE
ARG VERSION=0.1.0
ARG REVISION=unknown
# The repository's URL, e.g. --build-arg SOURCE=https://github.com/<owner>/polyframe.
ARG SOURCE=""
# What the service does (skaffold.yaml's buildArgs).
ARG DESCRIPTION=""
LABEL org.opencontainers.image.title="polyframe-${SERVICE}" \
      org.opencontainers.image.description="${DESCRIPTION}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-trixie"
RUN groupadd --system --gid 10001 polyframe \
    && useradd --system --uid 10001 --gid polyframe --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin polyframe
COPY --from=build /app /app
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
USER 10001:10001
EXPOSE 8000
# The production server, as `make up` runs it: the entry point sets the image's defaults (its
# address, workers; the environment wins) and execs the server, which is PID 1 and gets SIGTERM.
ENTRYPOINT ["/bin/sh", "/app/entrypoint.sh"]
