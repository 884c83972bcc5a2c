"""Custom resources render only where the cluster serves their API, else the render fails.

ServiceMonitor, PrometheusRule and HTTPRoute need CustomResourceDefinitions (the Prometheus
Operator's, the Gateway API's). When a value switches one on and the cluster does not serve its
API (``.Capabilities.APIVersions``, from the API server at install and upgrade; from
``--api-versions`` for ``helm template``), the render fails naming the value to turn off and
what to install: never a silent skip of what was asked for, never an install that the API
server refuses halfway.
"""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

MONITORING = "monitoring.coreos.com/v1"
GATEWAY = "gateway.networking.k8s.io/v1"
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")

#: (chart, values switching one custom resource on, its kind, its API, the switch named)
SWITCHES = [
    *(
        (
            chart,
            {"serviceMonitor": {"enabled": True}, "database": {"existingSecret": "db"}},
            "ServiceMonitor",
            f"{MONITORING}/ServiceMonitor",
            "serviceMonitor.enabled",
        )
        for chart in SERVICES
    ),
    (
        "polyframe",
        {"users-fastapi": {"serviceMonitor": {"enabled": True}}},
        "ServiceMonitor",
        f"{MONITORING}/ServiceMonitor",
        "serviceMonitor.enabled is on (chart users-fastapi)",
    ),
    (
        "polyframe",
        {"prometheusRule": {"enabled": True}},
        "PrometheusRule",
        f"{MONITORING}/PrometheusRule",
        "prometheusRule.enabled",
    ),
    (
        "polyframe",
        {"traefikServiceMonitor": {"enabled": True}},
        "ServiceMonitor",
        f"{MONITORING}/ServiceMonitor",
        "traefikServiceMonitor.enabled",
    ),
    (
        "polyframe",
        {"httpRoute": {"enabled": True}},
        "HTTPRoute",
        f"{GATEWAY}/HTTPRoute",
        "httpRoute.enabled",
    ),
]
each_switch = pytest.mark.parametrize(
    ("chart", "values", "kind", "api", "switch"),
    SWITCHES,
    ids=[f"{c}:{k}:{'/'.join(v)}" for c, v, k, _a, _s in SWITCHES],
)
#: What each message tells to install.
INSTALL = {
    "ServiceMonitor": "install the Prometheus Operator's CRDs (kube-prometheus-stack",
    "PrometheusRule": "install the Prometheus Operator's CRDs (kube-prometheus-stack",
    "HTTPRoute": "install the Gateway API CRDs (standard channel; the Traefik chart",
}
#: Every custom API, of each kind and of each group: none stands in for another.
ALL_APIS = (
    f"{MONITORING}/ServiceMonitor",
    f"{MONITORING}/PrometheusRule",
    f"{GATEWAY}/HTTPRoute",
    MONITORING,
    GATEWAY,
)


@each_switch
def test_a_custom_resource_without_its_api_fails_the_render(
    render: Any, chart: str, values: dict[str, Any], kind: str, api: str, switch: str
) -> None:
    with pytest.raises(helm.HelmRenderError) as refused:
        render(chart, values, api_versions=())
    message = str(refused.value)
    assert switch in message
    assert f"the cluster serves no {api}: {INSTALL[kind]}" in message
    key = switch.split(" ", 1)[0]
    assert f"or set {key}=false" in message
    assert f"--api-versions {api}" in message
    # Another custom API does not stand in for it.
    others = tuple(a for a in ALL_APIS if a != api)
    with pytest.raises(helm.HelmRenderError, match=switch.split(" ", 1)[0]):
        render(chart, values, api_versions=others)


@each_switch
def test_a_custom_resource_renders_where_its_api_is_served(
    render: Any, chart: str, values: dict[str, Any], kind: str, api: str, switch: str
) -> None:
    rendered = render(chart, values, api_versions=(api,))
    if kind == "PrometheusRule" and not rendered.of_kind(kind):
        pytest.skip("observability/prometheus/rules holds no rule file")
    assert rendered.of_kind(kind)


@pytest.mark.parametrize(
    ("chart", "case"),
    [
        *((chart, case) for chart in SERVICES for case in ("default", "production")),
        ("polyframe", "default"),
        ("polyframe", "production"),
        ("polyframe", "kind"),
    ],
)
def test_values_that_switch_no_custom_resource_on_need_no_custom_api(
    render: Any, render_case: Any, chart: str, case: str
) -> None:
    """`helm template` without --api-versions works for them (and for the release runner)."""
    rendered = render(chart, render_case(chart, case).values, api_versions=())
    assert rendered.manifests
    assert not rendered.of_kind("ServiceMonitor", "PrometheusRule", "HTTPRoute")


def test_all_on_needs_every_custom_api(render_case: Any, render: Any) -> None:
    values = render_case("polyframe", "all-on").values
    monitoring_only = (f"{MONITORING}/ServiceMonitor", f"{MONITORING}/PrometheusRule")
    with pytest.raises(helm.HelmRenderError, match=r"httpRoute\.enabled is on"):
        render("polyframe", values, api_versions=monitoring_only)
