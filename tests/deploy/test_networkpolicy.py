"""The NetworkPolicies allow exactly the call graph, and nothing else, between the release's pods.

The rendered policies are evaluated as Kubernetes evaluates them (a pod selected by a policy of
a type is isolated for that type; a connection needs the source's egress and the destination's
ingress; named ports resolve on the destination pod) for every pair of pods the release runs.
The result must equal the call graph of docs/architecture.md, the `helm test` pods reaching their
own service, and each service's pods reaching the in-cluster PostgreSQL. Outside the release,
only the ingress controller, Prometheus, DNS and the configured extra egress are allowed.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

NAMESPACE = "polyframe-under-test"
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
#: Who calls whom over HTTP (ARCHITECTURE.md), by pod component.
CALL_GRAPH = {
    ("legacy-flask", "web", "users-fastapi", "web"),  # is this user active? JWKS
    ("admin-django", "web", "users-fastapi", "web"),  # support views and actions
    ("admin-django", "web", "legacy-flask", "web"),  # support views and refunds
    ("users-fastapi", "outbox", "admin-django", "web"),  # audit events
    ("legacy-flask", "outbox", "admin-django", "web"),  # audit events
}
HELM_TESTS = {(service, "test", service, "web") for service in SERVICES}
DATABASE = {
    (service, component, "postgresql", "database")
    for service in SERVICES
    for component in ("web", "migrate", *(("outbox",) if service != "admin-django" else ()))
}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        if (
            expression["operator"] == "In"
            and labels.get(expression["key"]) not in expression["values"]
        ):
            return False
        if expression["operator"] != "In":
            raise AssertionError(f"operator {expression['operator']} not evaluated here")
    return True


def _peer_matches(peer: dict[str, Any], labels: dict[str, str], namespace: str = NAMESPACE) -> bool:
    """A NetworkPolicyPeer against a pod of ``namespace`` (by default this release's)."""
    if "ipBlock" in peer:
        return False  # addresses outside the cluster's pods
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": namespace}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif namespace != NAMESPACE:
        return False  # a peer without namespaceSelector is in the policy's own namespace
    return _selects(peer.get("podSelector") or {}, labels)


def _port_matches(rule: dict[str, Any], port: dict[str, Any]) -> bool:
    if not rule.get("ports"):
        return True
    for allowed in rule["ports"]:
        if allowed.get("protocol", "TCP") != port.get("protocol", "TCP"):
            continue
        if allowed.get("port") in (port["name"], port["containerPort"]):
            return True
    return False


def _allowed(
    policies: list[dict[str, Any]],
    direction: str,
    pod: dict[str, str],
    other: dict[str, str],
    port: dict[str, Any],
    other_namespace: str = NAMESPACE,
) -> bool:
    """Does ``pod`` allow traffic to (egress) or from (ingress) ``other`` on ``port``?"""
    types = "Egress" if direction == "egress" else "Ingress"
    field = "to" if direction == "egress" else "from"
    selecting = [
        p
        for p in policies
        if _selects(p["spec"]["podSelector"], pod) and types in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True  # not isolated
    for policy in selecting:
        for rule in policy["spec"].get(direction) or []:
            peers = rule.get(field)
            if (
                peers is None or any(_peer_matches(peer, other, other_namespace) for peer in peers)
            ) and _port_matches(rule, port):
                return True
    return False


def allowed_edges(rendered: Any) -> set[tuple[str, str, str, str]]:
    """Connections allowed between the release's pods: (source, component, target, component)."""
    policies = [m.obj for m in rendered.of_kind("NetworkPolicy")]
    pods = []
    for _manifest, spec, labels in rendered.pods():
        ports = [p for c in spec["containers"] for p in c.get("ports") or []]
        pods.append((labels, ports))
    edges = set()
    for source, _ in pods:
        for destination, ports in pods:
            for port in ports:
                if _allowed(policies, "egress", source, destination, port) and _allowed(
                    policies, "ingress", destination, source, port
                ):
                    edges.add((
                        source["app.kubernetes.io/name"], source["app.kubernetes.io/component"],
                        destination["app.kubernetes.io/name"],
                        destination["app.kubernetes.io/component"],
                    ))  # fmt: skip
    return edges


def reachable_ports(
    rendered: Any, source: dict[str, str], namespace: str = NAMESPACE
) -> dict[tuple[str, str], set[str]]:
    """The release's pods and their named ports a pod with labels ``source`` in ``namespace``
    may connect to: (name, component) -> port names. A source outside the release's namespace
    is not isolated by the release's policies (only the destination's ingress rules apply)."""
    policies = [m.obj for m in rendered.of_kind("NetworkPolicy")]
    found: dict[tuple[str, str], set[str]] = {}
    for _manifest, spec, labels in rendered.pods():
        for container in spec["containers"]:
            for port in container.get("ports") or []:
                out = namespace != NAMESPACE or _allowed(policies, "egress", source, labels, port)
                if out and _allowed(policies, "ingress", labels, source, port, namespace):
                    key = (labels["app.kubernetes.io/name"], labels["app.kubernetes.io/component"])
                    found.setdefault(key, set()).add(port["name"])
    return found


PROMETHEUS = ("monitoring", {"app.kubernetes.io/name": "prometheus"})
TRAEFIK = ("traefik", {"app.kubernetes.io/name": "traefik"})
#: Where Prometheus scrapes each pod: gunicorn's master on `metrics` (legacy-flask, admin-django),
#: uvicorn on `http` (users-fastapi), the dispatchers on their own `metrics`.
SCRAPED = {
    ("users-fastapi", "web"): {"http"},
    ("legacy-flask", "web"): {"metrics"},
    ("admin-django", "web"): {"metrics"},
    ("users-fastapi", "outbox"): {"metrics"},
    ("legacy-flask", "outbox"): {"metrics"},
}
#: The ingress controller reaches the routed web pods on `http` only.
ROUTED = {(service, "web"): {"http"} for service in SERVICES}


@pytest.mark.parametrize("case", ["all-on", "kind"])
def test_prometheus_reaches_exactly_the_metrics_ports(render_case: Any, case: str) -> None:
    rendered = render_case("polyframe", case)
    namespace, labels = PROMETHEUS
    assert reachable_ports(rendered, labels, namespace) == SCRAPED
    namespace, labels = TRAEFIK
    assert reachable_ports(rendered, labels, namespace) == ROUTED


@pytest.mark.parametrize("case", ["all-on", "kind"])
def test_nothing_in_the_release_reaches_a_metrics_port(render_case: Any, case: str) -> None:
    """Callers and `helm test` pods reach the web pods on `http`, never on `metrics`."""
    rendered = render_case("polyframe", case)
    for manifest, _spec, labels in rendered.pods():
        for target, ports in reachable_ports(rendered, labels).items():
            if target[1] in ("web", "outbox"):
                assert "metrics" not in ports, f"{manifest} reaches {target} on {ports}"


def test_the_port_evaluation_sees_a_wrong_scrape_port(render_case: Any) -> None:
    """The checks above mean something: a Prometheus rule on `http` shows up as such."""
    rendered = copy.deepcopy(render_case("polyframe", "all-on"))
    web = next(
        m.obj for m in rendered.of_kind("NetworkPolicy") if m.name == "polyframe-legacy-flask-web"
    )
    web["spec"]["ingress"][1]["ports"] = [{"port": "http", "protocol": "TCP"}]
    namespace, labels = PROMETHEUS
    assert reachable_ports(rendered, labels, namespace)[("legacy-flask", "web")] == {"http"}
    # and Prometheus in another namespace reaches nothing
    assert reachable_ports(rendered, labels, "elsewhere") == {}


def _every_policy_render(render_case: Any) -> list[Any]:
    return [render_case("polyframe", "all-on"), render_case("polyframe", "kind")]


#: users-fastapi's web pods share their rate-limit counters in the release's Redis
#: (redis.enabled, rateLimit.to); nothing else reaches it.
RATE_LIMITS = {("users-fastapi", "web", "redis", "rate-limits")}

#: The demo-staff Job of admin-django (demoStaff.enabled) reaches only the database.
DEMO_STAFF = {("admin-django", "seed", "postgresql", "database")}


@pytest.mark.parametrize("case", ["all-on", "kind"])
def test_policies_allow_exactly_the_call_graph(render_case: Any, case: str) -> None:
    rendered = render_case("polyframe", case)
    assert allowed_edges(rendered) == CALL_GRAPH | HELM_TESTS | DATABASE | DEMO_STAFF | RATE_LIMITS


def test_without_policies_everything_is_open(render_case: Any) -> None:
    """The evaluation above means something: with no policy, every pod reaches every port."""
    rendered = render_case("polyframe", "default")
    assert not rendered.of_kind("NetworkPolicy")
    edges = allowed_edges(rendered)
    assert edges > CALL_GRAPH | HELM_TESTS | DATABASE
    assert ("users-fastapi", "web", "legacy-flask", "web") in edges


def test_a_missing_edge_or_an_extra_one_is_seen(render_case: Any) -> None:
    rendered = copy.deepcopy(render_case("polyframe", "all-on"))
    web = next(
        m.obj for m in rendered.of_kind("NetworkPolicy") if m.name == "polyframe-users-fastapi-web"
    )
    # users-fastapi's web pods stop accepting admin-django.
    web["spec"]["ingress"][-1]["from"] = [
        peer for peer in web["spec"]["ingress"][-1]["from"]
        if peer["podSelector"]["matchLabels"].get("app.kubernetes.io/name") != "admin-django"
    ]  # fmt: skip
    # and may call legacy-flask, which legacy-flask's ingress does not allow: still no edge
    web["spec"]["egress"].append(
        {"to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "legacy-flask"}}}]}
    )
    edges = allowed_edges(rendered)
    assert ("admin-django", "web", "users-fastapi", "web") not in edges
    assert ("users-fastapi", "web", "legacy-flask", "web") not in edges
    # Opening legacy-flask's ingress to it makes the edge appear.
    orders = next(
        m.obj for m in rendered.of_kind("NetworkPolicy") if m.name == "polyframe-legacy-flask-web"
    )
    orders["spec"]["ingress"].append(
        {"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "users-fastapi"}}}]}
    )
    assert ("users-fastapi", "web", "legacy-flask", "web") in allowed_edges(rendered)


@pytest.mark.parametrize("case", ["all-on", "kind"])
def test_every_pod_of_the_release_is_default_deny(render_case: Any, case: str) -> None:
    rendered = render_case("polyframe", case)
    policies = [m.obj for m in rendered.of_kind("NetworkPolicy")]
    for manifest, _spec, labels in rendered.pods():
        types = {
            t
            for p in policies
            if _selects(p["spec"]["podSelector"], labels)
            for t in p["spec"]["policyTypes"]
        }
        assert types == {"Ingress", "Egress"}, f"{manifest}: isolated only for {types}"


def _peer(namespace: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "podSelector": {"matchLabels": labels},
    }


def _external_peers(rule: dict[str, Any], field: str) -> list[dict[str, Any]]:
    return [
        peer for peer in rule.get(field) or [] if "namespaceSelector" in peer or "ipBlock" in peer
    ]


@pytest.mark.parametrize("case", ["all-on", "kind"])
def test_outside_the_release_only_ingress_prometheus_dns_and_configured_egress(
    render_case: Any, case: str
) -> None:
    rendered = render_case("polyframe", case)
    traefik = _peer("traefik", {"app.kubernetes.io/name": "traefik"})
    prometheus = _peer("monitoring", {"app.kubernetes.io/name": "prometheus"})
    dns = _peer("kube-system", {"k8s-app": "kube-dns"})
    for manifest in rendered.of_kind("NetworkPolicy"):
        spec = manifest.obj["spec"]
        component = spec["podSelector"]["matchLabels"].get("app.kubernetes.io/component")
        outside_in = [p for r in spec.get("ingress") or [] for p in _external_peers(r, "from")]
        if component == "web":
            assert outside_in == [traefik, prometheus], manifest
            # The ingress controller on `http`; Prometheus where /metrics is served: gunicorn's
            # master on `metrics` (legacy-flask, admin-django), uvicorn on `http`.
            scraped = "http" if "users-fastapi" in manifest.name else "metrics"
            assert spec["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}], manifest
            assert spec["ingress"][1]["ports"] == [{"port": scraped, "protocol": "TCP"}], manifest
        elif component == "outbox":
            # Prometheus scrapes the dispatcher's own /metrics; nothing else reaches it.
            assert spec["ingress"] == [
                {"from": [prometheus], "ports": [{"port": "metrics", "protocol": "TCP"}]}
            ]
        else:
            assert outside_in == [], manifest
        if "Egress" in spec["policyTypes"] and spec.get("egress"):
            first = spec["egress"][0]
            assert first["to"] == [dns], manifest
            assert first["ports"] == [
                {"port": 53, "protocol": "UDP"},
                {"port": 53, "protocol": "TCP"},
            ]
            outside_out = [p for r in spec["egress"][1:] for p in _external_peers(r, "to")]
            assert outside_out == [], f"{manifest}: {outside_out}"
            # Egress with no `to` (any address) only on the database port.
            for rule in spec["egress"][1:]:
                if "to" not in rule:
                    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}], manifest


def test_configured_database_and_extra_egress_are_the_only_other_destinations(
    render_case: Any,
) -> None:
    rendered = render_case("users-fastapi", "all-on")
    web = next(m.obj for m in rendered.of_kind("NetworkPolicy") if m.name.endswith("-web"))
    destinations = [rule.get("to") for rule in web["spec"]["egress"][1:]]
    assert destinations == [
        None,  # the database port, anywhere (no database.to configured)
        [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "opentelemetry-collector"}}}],
    ]
    production = render_case("users-fastapi", "production")
    web = next(m.obj for m in production.of_kind("NetworkPolicy") if m.name.endswith("-web"))
    assert web["spec"]["egress"][1] == {
        "ports": [{"port": 5432, "protocol": "TCP"}],
        "to": [{"ipBlock": {"cidr": "10.20.0.0/24"}}],
    }
