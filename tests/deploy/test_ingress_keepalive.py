"""Traefik drops an idle connection to a service before the service's server does, in every
place Traefik runs (make up, the release, kind): a connection the server closes just as
Traefik reuses it turns a POST into a 502 (Traefik retries only idempotent requests)."""

from __future__ import annotations

import re
from pathlib import Path

import uvicorn
import yaml

from polyframe_dev import traefik
from polyframe_release import network
from service_kit import gunicorn as kit_gunicorn

REPO_ROOT = Path(__file__).resolve().parents[2]
KIND_VALUES = REPO_ROOT / "deploy" / "kind" / "traefik-values.yaml"
FLAG = "--serversTransport.forwardingTimeouts.idleConnTimeout="


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", duration)
    assert match, duration
    value = float(match[1])
    return value / 1000 if match[2] == "ms" else value


def idle_timeouts() -> dict[str, str]:
    local = traefik.static_config(
        host="127.0.0.1", port=8080, internal_port=8082, dynamic_file=Path("dynamic.yml")
    )
    kind = yaml.safe_load(KIND_VALUES.read_text())
    flags = [arg for arg in kind.get("additionalArguments", []) if arg.startswith(FLAG)]
    assert len(flags) == 1, kind.get("additionalArguments")
    return {
        "make up": local["serversTransport"]["forwardingTimeouts"]["idleConnTimeout"],
        "release": network.static_config()["serversTransport"]["forwardingTimeouts"][
            "idleConnTimeout"
        ],
        "kind": flags[0].removeprefix(FLAG),
    }


def test_every_traefik_drops_idle_service_connections_alike() -> None:
    assert set(idle_timeouts().values()) == {traefik.BACKEND_IDLE_TIMEOUT}


def test_traefik_drops_an_idle_connection_a_second_before_the_servers_do() -> None:
    gunicorn = kit_gunicorn.settings(
        prefix="KEEPALIVETEST",
        service="keepalive-test",
        framework="wsgi",
        wsgi_app="app:app",
        default_port=8199,
    )["keepalive"]
    uvicorn_keepalive = uvicorn.Config(app="app:app").timeout_keep_alive
    assert seconds(traefik.BACKEND_IDLE_TIMEOUT) <= min(gunicorn, uvicorn_keepalive) - 1
