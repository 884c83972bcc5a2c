"""Traefik v3 configuration generated from the routing table.

Static configuration: the public entry point, an internal one for ping and
metrics, the file provider. Dynamic configuration: one router per routed
prefix and one service per Polyframe service. Only the routing table's
prefixes are routed, so ``/metrics``, ``/healthz`` and ``/readyz`` of the
services are unreachable through the ingress.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from polyframe_dev.routes import Route

#: Seconds; equal to service_kit.metrics.DURATION_BUCKETS (tests/observability checks it).
DURATION_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


#: How long Traefik keeps an idle connection to a service for reuse: under the servers' own
#: keep-alive (gunicorn's ``keepalive`` and uvicorn's ``timeout_keep_alive``, 5 s both), so a
#: connection is never reused just as the server closes it (a POST sent on it would be a 502:
#: Traefik retries only idempotent requests). Traefik's default is 90 s. The same value in
#: polyframe-release's Traefik and deploy/kind/traefik-values.yaml (tests/deploy checks).
BACKEND_IDLE_TIMEOUT = "4s"


def static_config(
    *,
    host: str,
    port: int,
    internal_port: int,
    dynamic_file: Path,
    otlp_endpoint: str | None = None,
) -> dict[str, Any]:
    config = {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            "web": {
                "address": f"{host}:{port}",
                # Clients' X-Forwarded-* are not trusted: Traefik sets its own.
                "forwardedHeaders": {"insecure": False},
                "transport": {
                    "lifeCycle": {"graceTimeOut": "15s", "requestAcceptGraceTimeout": "0s"}
                },
            },
            "internal": {"address": f"127.0.0.1:{internal_port}"},
        },
        "ping": {"entryPoint": "internal"},
        "metrics": {
            "prometheus": {
                "entryPoint": "internal",
                "addRoutersLabels": True,
                "addServicesLabels": True,
                # The services' own duration buckets (service_kit.metrics.DURATION_BUCKETS):
                # the latency SLO compares Traefik's view with the service's at 0.5 s, which
                # Traefik's default buckets (0.1, 0.3, 1.2, 5) do not have.
                "buckets": list(DURATION_BUCKETS),
            }
        },
        "providers": {"file": {"filename": str(dynamic_file), "watch": False}},
        "serversTransport": {"forwardingTimeouts": {"idleConnTimeout": BACKEND_IDLE_TIMEOUT}},
        "log": {"level": "INFO", "format": "json"},
        "accessLog": {"format": "json"},
    }
    if otlp_endpoint:
        # Traefik's own spans (entry point, router, proxy) in the services' traces: an
        # incoming traceparent is continued, and one is started when a client sent none.
        config["tracing"] = {
            "serviceName": "traefik",
            "sampleRate": 1.0,
            "otlp": {"http": {"endpoint": f"{otlp_endpoint.rstrip('/')}/v1/traces"}},
        }
    return config


def dynamic_config(routes: list[Route], backends: dict[str, str]) -> dict[str, Any]:
    routers: dict[str, Any] = {}
    services: dict[str, Any] = {}
    for route in routes:
        name = f"{route.service}-{route.prefix.strip('/').replace('/', '-')}"
        routers[name] = {
            "rule": route.traefik_rule,
            "service": route.service,
            "entryPoints": ["web"],
        }
        services[route.service] = {
            "loadBalancer": {"servers": [{"url": backends[route.service]}], "passHostHeader": True}
        }
    return {"http": {"routers": routers, "services": services}}


def write_configs(
    folder: Path,
    routes: list[Route],
    backends: dict[str, str],
    *,
    host: str,
    port: int,
    internal_port: int,
    otlp_endpoint: str | None = None,
) -> Path:
    """Write both files into ``folder``; return the static file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    dynamic = folder / "dynamic.yml"
    static = folder / "traefik.yml"
    dynamic.write_text(yaml.safe_dump(dynamic_config(routes, backends), sort_keys=True))
    static.write_text(
        yaml.safe_dump(
            static_config(
                host=host,
                port=port,
                internal_port=internal_port,
                dynamic_file=dynamic,
                otlp_endpoint=otlp_endpoint,
            ),
            sort_keys=True,
        )
    )
    return static
