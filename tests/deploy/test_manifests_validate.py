"""Every rendered object against the Kubernetes API schemas (kubernetes-validate --strict).

All charts, all their values files, Kubernetes 1.31 and 1.35. A kind kubernetes-validate
does not know fails, except the three custom resources the charts render, which are checked
against their own vendored schemas (tests/deploy/schemas/SOURCES.md).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import kubernetes_validate
import pytest

VERSIONS = ("1.31", "1.35")
CRD_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
}


def _check(
    obj: dict[str, Any],
    version: str,
    kubernetes_validator: Callable[[dict[str, Any], str], str],
    crd_validator: Callable[[dict[str, Any], str], None],
) -> None:
    if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
        crd_validator(obj, version)
        return
    try:
        kubernetes_validator(obj, version)
    except kubernetes_validate.SchemaNotFoundError as exc:
        pytest.fail(f"unknown kind {obj['apiVersion']} {obj['kind']}: {exc.message}")
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} at {path}: {exc.message}")


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_object_is_valid(
    rendered: Any,
    version: str,
    kubernetes_validator: Callable[[dict[str, Any], str], str],
    crd_validator: Callable[[dict[str, Any], str], None],
) -> None:
    seen: set[str] = set()
    for manifest in rendered.manifests:
        key = json.dumps(manifest.obj, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        _check(manifest.obj, version, kubernetes_validator, crd_validator)


def test_the_renders_cover_every_custom_resource_kind(
    all_renders: list[Any], observability_files: dict[str, list[Any]]
) -> None:
    """The CRD schemas are exercised: each custom kind is rendered by some values file
    (PrometheusRule as soon as observability/prometheus/rules holds a rule file)."""
    expected = set(CRD_KINDS)
    if not observability_files["rules"]:
        expected.discard(("monitoring.coreos.com/v1", "PrometheusRule"))
    kinds = {(m.obj["apiVersion"], m.kind) for r in all_renders for m in r.manifests}
    assert kinds >= expected, expected - kinds


def _first(all_renders: list[Any], kind: str) -> dict[str, Any]:
    for rendered in all_renders:
        for manifest in rendered.manifests:
            if manifest.kind == kind:
                return copy.deepcopy(manifest.obj)
    raise AssertionError(f"no {kind} rendered")


@pytest.mark.parametrize(
    ("kind", "mutate", "error"),
    [
        # A typo'd field: strict validation refuses what an API server would silently drop.
        (
            "Deployment",
            lambda o: o["spec"]["template"]["spec"].update(terminationGracePeriod=5),
            "terminationGracePeriod",
        ),
        ("Service", lambda o: o["spec"]["ports"][0].update(port="eighty"), "eighty"),
        ("NetworkPolicy", lambda o: o["spec"].update(policyType=["Ingress"]), "policyType"),
    ],
)
def test_kubernetes_validation_catches_invalid_objects(
    all_renders: list[Any],
    kubernetes_validator: Callable[[dict[str, Any], str], str],
    kind: str,
    mutate: Callable[[dict[str, Any]], None],
    error: str,
) -> None:
    obj = _first(all_renders, kind)
    kubernetes_validator(obj, "1.35")  # valid as rendered
    mutate(obj)
    with pytest.raises(kubernetes_validate.ValidationError, match=error):
        kubernetes_validator(obj, "1.35")


def test_an_unknown_kind_fails(
    kubernetes_validator: Callable[[dict[str, Any], str], str],
    crd_validator: Callable[[dict[str, Any], str], None],
) -> None:
    unknown = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}
    with pytest.raises(pytest.fail.Exception, match=r"unknown kind example\.com/v1 Widget"):
        _check(unknown, "1.35", kubernetes_validator, crd_validator)


@pytest.mark.parametrize(
    ("kind", "mutate", "error"),
    [
        (
            "ServiceMonitor",
            lambda o: o["spec"]["endpoints"][0].update(scrapeTimout="10s"),
            "scrapeTimout",
        ),
        ("ServiceMonitor", lambda o: o["spec"].pop("selector"), "selector"),
        ("PrometheusRule", lambda o: o["spec"]["groups"][0].pop("name"), "name"),
        (
            "HTTPRoute",
            lambda o: o["spec"]["rules"][0]["matches"][0]["path"].update(type="Prefix"),
            "Prefix",
        ),
        ("HTTPRoute", lambda o: o["metadata"].update(labelz={}), "labelz"),
    ],
)
def test_custom_resource_schemas_catch_invalid_objects(
    all_renders: list[Any],
    crd_validator: Callable[[dict[str, Any], str], None],
    kind: str,
    mutate: Callable[[dict[str, Any]], None],
    error: str,
) -> None:
    if kind == "PrometheusRule" and not any(
        m.kind == kind for r in all_renders for m in r.manifests
    ):
        obj: dict[str, Any] = {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PrometheusRule",
            "metadata": {"name": "sample"},
            "spec": {"groups": [{"name": "g", "rules": [{"record": "r", "expr": "up"}]}]},
        }
    else:
        obj = _first(all_renders, kind)
    crd_validator(obj, "1.35")  # valid as rendered
    mutate(obj)
    with pytest.raises(AssertionError, match=error):
        crd_validator(obj, "1.35")
