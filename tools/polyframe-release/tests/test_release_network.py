"""The release's network (polyframe_release.network): Service names, endpoints files for the
Service proxies, and the Traefik routes of the rendered Ingress."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

from polyframe_release import network
from polyframe_release.render import Render

WEB_SPEC = {"containers": [{"name": "web", "ports": [{"name": "http", "containerPort": 8000}]}]}
METRICS_SPEC = {
    "containers": [
        {"name": "web", "ports": [{"name": "http", "containerPort": 8080}]},
        {"name": "exporter", "ports": [{"name": "metrics", "containerPort": 9102}]},
    ]
}


def _service(name: str, *ports: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Service", "metadata": {"name": name}, "spec": {"ports": list(ports)}}


def test_service_aliases_are_every_dns_name_of_a_service() -> None:
    assert network.service_aliases("polyframe-users-fastapi", "polyframe") == [
        "polyframe-users-fastapi",
        "polyframe-users-fastapi.polyframe",
        "polyframe-users-fastapi.polyframe.svc",
        "polyframe-users-fastapi.polyframe.svc.cluster.local",
    ]


def test_resolve_target_by_number_or_container_port_name() -> None:
    assert network.resolve_target(8000, WEB_SPEC) == 8000
    assert network.resolve_target("8000", WEB_SPEC) == 8000
    assert network.resolve_target("http", WEB_SPEC) == 8000
    assert network.resolve_target("http", METRICS_SPEC) == 8080
    assert network.resolve_target("metrics", METRICS_SPEC) == 9102
    assert network.resolve_target("metrics", WEB_SPEC) is None


def test_endpoints_document_resolves_each_pods_target_port() -> None:
    service = _service(
        "web",
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "metrics", "port": 9102, "targetPort": "metrics"},
        {"name": "raw", "port": 7000},  # no targetPort: the port itself
    )
    ready = [("10.89.3.4", WEB_SPEC), ("10.89.3.5", METRICS_SPEC)]

    document = network.endpoints_document(service, ready)

    assert document == {
        "service": "web",
        "ports": [
            {"name": "http", "port": 80, "targets": ["10.89.3.4:8000", "10.89.3.5:8080"]},
            # a pod without the named port is no endpoint of that port
            {"name": "metrics", "port": 9102, "targets": ["10.89.3.5:9102"]},
            {"name": "raw", "port": 7000, "targets": ["10.89.3.4:7000", "10.89.3.5:7000"]},
        ],
    }
    assert network.endpoints_document(service, [])["ports"][0]["targets"] == []


def test_ingress_routes_of_the_kind_render(kind_render: Render) -> None:
    routes = network.ingress_routes(kind_render.of_kind("Ingress"))

    assert {
        "ingress": "polyframe",
        "rule": "Path(`/api/users`)",
        "service": "polyframe-users-fastapi",
        "port": "http",
    } in routes
    assert {
        "ingress": "polyframe",
        "rule": "PathPrefix(`/api/users/`)",
        "service": "polyframe-users-fastapi",
        "port": "http",
    } in routes
    assert {r["service"] for r in routes} == {
        "polyframe-users-fastapi",
        "polyframe-legacy-flask",
        "polyframe-admin-django",
    }
    assert len(routes) == 8


def _ingress(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Ingress", "metadata": {"name": name}, "spec": spec}


def _path(path: str, kind: str | None, service: str, port: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"path": path, "backend": {"service": {"name": service, "port": port}}}
    if kind is not None:
        entry["pathType"] = kind
    return entry


def test_ingress_routes_path_types_hosts_and_classes() -> None:
    ingresses = [
        _ingress(
            "hosted",
            {
                "ingressClassName": "traefik",
                "rules": [
                    {
                        "host": "shop.example",
                        "http": {
                            "paths": [
                                _path("/exact", "Exact", "a", {"number": 80}),
                                _path("/", "Prefix", "a", {"name": "http"}),
                                _path("/impl", None, "b", {"number": 81}),
                            ]
                        },
                    }
                ],
            },
        ),
        # no class: kind's Traefik is the default IngressClass
        _ingress(
            "unclassed",
            {"rules": [{"http": {"paths": [_path("/c", "Prefix", "c", {"number": 1})]}}]},
        ),
        _ingress(
            "nginx",
            {
                "ingressClassName": "nginx",
                "rules": [{"http": {"paths": [_path("/n", "Prefix", "n", {"number": 1})]}}],
            },
        ),
    ]

    routes = network.ingress_routes(ingresses)

    assert routes == [
        {
            "ingress": "hosted",
            "rule": "Host(`shop.example`) && Path(`/exact`)",
            "service": "a",
            "port": 80,
        },
        {
            "ingress": "hosted",
            "rule": "Host(`shop.example`) && PathPrefix(`/`)",
            "service": "a",
            "port": "http",
        },
        {
            "ingress": "hosted",
            "rule": "Host(`shop.example`) && PathPrefix(`/impl`)",
            "service": "b",
            "port": 81,
        },
        {"ingress": "unclassed", "rule": "PathPrefix(`/c`)", "service": "c", "port": 1},
    ]


def test_traefik_dynamic_serves_the_ready_pods_of_each_route(kind_render: Render) -> None:
    routes = network.ingress_routes(kind_render.of_kind("Ingress"))
    services = {s["metadata"]["name"]: s for s in kind_render.of_kind("Service")}
    ready = {
        "polyframe-users-fastapi": [("10.89.3.4", WEB_SPEC), ("10.89.3.5", METRICS_SPEC)],
        "polyframe-admin-django": [],
    }

    dynamic = network.traefik_dynamic(routes, services, ready)

    routers = dynamic["http"]["routers"]
    balancers = dynamic["http"]["services"]
    assert len(routers) == 8
    users = [r for r in routers.values() if r["rule"] == "PathPrefix(`/api/users/`)"]
    assert users == [
        {
            "rule": "PathPrefix(`/api/users/`)",
            "service": "polyframe-users-fastapi-http",
            "entryPoints": ["web"],
        }
    ]
    # the Service's targetPort `http`, resolved in each pod
    assert balancers["polyframe-users-fastapi-http"] == {
        "loadBalancer": {
            "servers": [{"url": "http://10.89.3.4:8000"}, {"url": "http://10.89.3.5:8080"}],
            "passHostHeader": True,
        }
    }
    # no ready pod (or none known): no server, so Traefik answers 503
    assert balancers["polyframe-admin-django-http"]["loadBalancer"]["servers"] == []
    assert balancers["polyframe-legacy-flask-http"]["loadBalancer"]["servers"] == []


def test_traefik_dynamic_matches_a_route_port_by_number_and_skips_unknown_services() -> None:
    routes = [
        {"ingress": "i", "rule": "PathPrefix(`/`)", "service": "web", "port": 80},
        {"ingress": "i", "rule": "PathPrefix(`/x`)", "service": "gone", "port": 80},
    ]
    services = {"web": _service("web", {"name": "http", "port": 80, "targetPort": 8000})}
    ready = {"web": [("10.89.3.4", WEB_SPEC)], "gone": [("10.89.3.9", WEB_SPEC)]}

    dynamic = network.traefik_dynamic(routes, services, ready)

    assert dynamic["http"]["services"]["web-80"]["loadBalancer"]["servers"] == [
        {"url": "http://10.89.3.4:8000"}
    ]
    assert dynamic["http"]["services"]["gone-80"]["loadBalancer"]["servers"] == []
    assert set(dynamic["http"]["routers"]) == {"i-0", "i-1"}


def test_write_atomically_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "services" / "web" / "endpoints.json"

    network.write_atomically(path, json.dumps({"ports": []}))
    first = path.stat().st_ino
    network.write_atomically(path, "second")

    assert path.read_text() == "second"
    assert path.stat().st_ino != first  # a new file renamed over: readers see one or the other
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by the proxy's user
    assert [p.name for p in path.parent.iterdir()] == ["endpoints.json"]  # no leftovers
