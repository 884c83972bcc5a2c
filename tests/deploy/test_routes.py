"""The Ingress and the HTTPRoute route exactly deploy/routes.yaml, the table `make up` routes."""

from __future__ import annotations

from typing import Any

import pytest

CASES = ["default", "all-on", "production", "kind"]


def _service_of(backend: str) -> str:
    assert backend.startswith("polyframe-"), backend
    return backend.removeprefix("polyframe-")


def ingress_routes(rendered: Any) -> dict[str, list[str]]:
    """service -> prefixes, from the Ingress, checking each prefix is `p` exactly plus `p/…`."""
    (ingress,) = rendered.of_kind("Ingress")
    paths: dict[tuple[str, str], str] = {}
    for rule in ingress.obj["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            paths[(path["path"], path["pathType"])] = _service_of(
                path["backend"]["service"]["name"]
            )
    table: dict[str, list[str]] = {}
    for (path, path_type), service in sorted(paths.items()):
        if path_type == "Exact":
            # Like the local `Path(p) || PathPrefix(p/)`: never /api/usersX.
            assert paths.get((f"{path}/", "Prefix")) == service, path
            table.setdefault(service, []).append(path)
        else:
            assert path_type == "Prefix", path
            assert path.endswith("/"), path
            assert paths.get((path.removesuffix("/"), "Exact")) == service, path
    return table


def httproute_routes(rendered: Any) -> dict[str, list[str]]:
    (route,) = rendered.of_kind("HTTPRoute")
    table: dict[str, list[str]] = {}
    for rule in route.obj["spec"]["rules"]:
        (backend,) = rule["backendRefs"]
        for match in rule["matches"]:
            assert match["path"]["type"] == "PathPrefix"  # per path element by definition
            assert set(match) == {"path"}, match
            table.setdefault(_service_of(backend["name"]), []).append(match["path"]["value"])
    return table


def _sorted(table: dict[str, list[str]]) -> dict[str, list[str]]:
    return {service: sorted(prefixes) for service, prefixes in table.items()}


@pytest.mark.parametrize("case", CASES)
def test_ingress_routes_equal_the_routing_table(
    render_case: Any, routes_table: dict[str, list[str]], case: str
) -> None:
    assert _sorted(ingress_routes(render_case("polyframe", case))) == _sorted(routes_table)


def test_httproute_routes_equal_the_routing_table(
    render_case: Any, routes_table: dict[str, list[str]]
) -> None:
    assert _sorted(httproute_routes(render_case("polyframe", "all-on"))) == _sorted(routes_table)


def test_the_chart_reads_the_routing_table_itself(
    render: Any, routes_table: dict[str, list[str]]
) -> None:
    """files/routes.yaml is the repository's deploy/routes.yaml (a symlink), not a copy."""
    from pathlib import Path

    link = (
        Path(__file__).resolve().parents[2]
        / "deploy"
        / "helm"
        / "polyframe"
        / "files"
        / "routes.yaml"
    )
    assert link.is_symlink()
    assert link.resolve() == (Path(__file__).resolve().parents[2] / "deploy" / "routes.yaml")


def test_a_disabled_service_is_not_routed(render: Any, routes_table: dict[str, list[str]]) -> None:
    rendered = render("polyframe", {"legacy-flask": {"enabled": False}}, case="no-orders")
    expected = {s: p for s, p in routes_table.items() if s != "legacy-flask"}
    assert _sorted(ingress_routes(rendered)) == _sorted(expected)


def test_a_route_that_differs_from_the_table_is_seen(
    render_case: Any, routes_table: dict[str, list[str]]
) -> None:
    import copy

    rendered = copy.deepcopy(render_case("polyframe", "default"))
    (ingress,) = rendered.of_kind("Ingress")
    for path in ingress.obj["spec"]["rules"][0]["http"]["paths"]:
        path["path"] = path["path"].replace("/api/audit", "/api/audits")
    assert _sorted(ingress_routes(rendered)) != _sorted(routes_table)


def test_the_httproute_names_its_gateways_namespace(render: Any) -> None:
    """The Gateway is another namespace's by default (the Traefik chart's, in Traefik's): the
    reference always says which, the release's when the value is empty."""
    (route,) = render("polyframe", {"httpRoute": {"enabled": True}}).of_kind("HTTPRoute")
    (parent,) = route.obj["spec"]["parentRefs"]
    assert parent == {
        "group": "gateway.networking.k8s.io",
        "kind": "Gateway",
        "name": "traefik-gateway",
        "namespace": "traefik",
        "sectionName": "web",
    }
    values = {"httpRoute": {"enabled": True, "parentRefs": {"gateway": {"namespace": ""}}}}
    (route,) = render("polyframe", values, namespace="shop").of_kind("HTTPRoute")
    assert route.obj["spec"]["parentRefs"][0]["namespace"] == "shop"
