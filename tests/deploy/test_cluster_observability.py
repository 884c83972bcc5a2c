"""Observability in the cluster: Traefik scraped and traced, Grafana's data sources linked.

No Traefik chart, Grafana or collector runs here. What the umbrella chart renders is checked with
the Helm engine and the vendored ServiceMonitor schema; what the other components would read
(the Traefik chart's values, Grafana's provisioning file) is checked statically against their
documented schemas: the allow-lists below are transcribed from the Traefik chart's
values.schema.json and templates (traefik/traefik-helm-chart) and from Grafana's provisioning
docs (grafana/grafana docs/sources: administration/provisioning, and the Prometheus, Tempo and
Loki data sources' "Provision" sections). A key outside them fails the test.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import yaml

from polyframe_testing.documents import LEAF, Each, undocumented

REPO_ROOT = Path(__file__).resolve().parents[2]
KIND_DIR = REPO_ROOT / "deploy" / "kind"
COLLECTOR = REPO_ROOT / "observability" / "otel-collector"
MONITORING = "monitoring.coreos.com/v1"
DATASOURCE_LABEL = ("grafana_datasource", "1")
#: How `make kind-up` installs Traefik: its release and namespace name its metrics Service.
TRAEFIK_RELEASE = "traefik"
TRAEFIK_NAMESPACE = "traefik"


def _traefik_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load((KIND_DIR / "traefik-values.yaml").read_text())
    return values


# -- documented keys ----------------------------------------------------------------------------

# The Traefik chart's values.schema.json (traefik/traefik-helm-chart, traefik/values.schema.json):
# the `metrics` and `tracing` sections this file sets, whole.
_TRAEFIK_TLS = dict.fromkeys(("ca", "cert", "key", "insecureSkipVerify"), LEAF)
_TRAEFIK_OTLP_HTTP = {"enabled": LEAF, "endpoint": LEAF, "headers": LEAF, "tls": _TRAEFIK_TLS}
_TRAEFIK_OTLP_GRPC = {"enabled": LEAF, "endpoint": LEAF, "insecure": LEAF, "tls": _TRAEFIK_TLS}
TRAEFIK_SECTIONS = {
    "metrics": {
        "addInternals": LEAF,
        "otlp": LEAF,
        "prometheus": {
            **dict.fromkeys(
                (
                    "addEntryPointsLabels",
                    "addRoutersLabels",
                    "addServicesLabels",
                    "buckets",
                    "disableAPICheck",
                    "entryPoint",
                    "headerLabels",
                    "manualRouting",
                ),
                LEAF,
            ),
            "prometheusRule": LEAF,
            "service": dict.fromkeys(("annotations", "enabled", "labels"), LEAF),
            "serviceMonitor": LEAF,
        },
    },
    "tracing": {
        **dict.fromkeys(
            (
                "addInternals",
                "capturedRequestHeaders",
                "capturedResponseHeaders",
                "resourceAttributes",
                "safeQueryParams",
                "sampleRate",
                "serviceName",
            ),
            LEAF,
        ),
        "otlp": {"enabled": LEAF, "grpc": _TRAEFIK_OTLP_GRPC, "http": _TRAEFIK_OTLP_HTTP},
    },
}


def test_the_traefik_values_metrics_and_tracing_are_the_charts_keys() -> None:
    values = _traefik_values()
    sections = {k: v for k, v in values.items() if k in TRAEFIK_SECTIONS}
    assert set(sections) == set(TRAEFIK_SECTIONS), "metrics and tracing are both configured"
    assert undocumented(sections, TRAEFIK_SECTIONS) == []
    sections["tracing"]["otlp"]["http"]["endpoitn"] = "typo"  # and a typo would be seen
    assert undocumented(sections, TRAEFIK_SECTIONS) == [".tracing.otlp.http.endpoitn"]


def _traefik_metrics_service(values: dict[str, Any]) -> dict[str, Any] | None:
    """The metrics Service as the Traefik chart renders it (templates/service-metrics.yaml and
    _service-metrics.tpl; fullname and instance label from _helpers.tpl), or None without it."""
    prometheus = (values.get("metrics") or {}).get("prometheus") or {}
    if not (prometheus.get("service") or {}).get("enabled"):
        return None
    # traefik.fullname: the release name when it contains the chart's name.
    fullname = TRAEFIK_RELEASE if "traefik" in TRAEFIK_RELEASE else f"{TRAEFIK_RELEASE}-traefik"
    labels = {
        "app.kubernetes.io/name": "traefik",
        "app.kubernetes.io/instance": f"{TRAEFIK_RELEASE}-{TRAEFIK_NAMESPACE}",
        "app.kubernetes.io/component": "metrics",
        **(prometheus["service"].get("labels") or {}),
    }
    return {
        "name": f"{fullname}-metrics",
        "namespace": TRAEFIK_NAMESPACE,
        "labels": labels,
        "ports": ["metrics"],
        # Traefik serves Prometheus metrics on its `metrics` entry point at /metrics.
        "path": "/metrics",
        "entryPoint": prometheus.get("entryPoint", "metrics"),
    }


def test_make_kind_up_installs_traefik_as_these_checks_assume() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"helm upgrade --install {TRAEFIK_RELEASE} traefik/traefik" in makefile
    assert f"--namespace {TRAEFIK_NAMESPACE} --create-namespace" in makefile


def test_traefik_is_scraped_by_the_release_service_monitor(
    render_case: Any, render: Any, crd_validator: Any
) -> None:
    service = _traefik_metrics_service(_traefik_values())
    assert service is not None, "traefik-values.yaml creates no metrics Service to scrape"
    assert service["entryPoint"] == "metrics"
    values = {**render_case("polyframe", "kind").values, "traefikServiceMonitor": {"enabled": True}}
    (monitor,) = [
        m
        for m in render("polyframe", values).of_kind("ServiceMonitor")
        if m.name.endswith("-traefik")
    ]
    spec = monitor.obj["spec"]
    assert spec["namespaceSelector"] == {"matchNames": [service["namespace"]]}
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= service["labels"].items(), (selector, service["labels"])
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in service["ports"]
        assert endpoint["path"] == service["path"]
        # The alerts' windows are sized for a 30 s scrape (at least 4 samples a window).
        assert endpoint["interval"] == "30s"
    for version in ("1.31", "1.35"):
        crd_validator(monitor.obj, version)


#: Target labels the Prometheus Operator sets on every ServiceMonitor target
#: (prometheus-operator pkg/prometheus/promcfg.go). A scraped label of the same name is
#: renamed `exported_<name>` unless the endpoint sets honorLabels.
OPERATOR_TARGET_LABELS = frozenset(
    {"namespace", "service", "pod", "container", "endpoint", "job", "instance"}
)
RULES_DIR = REPO_ROOT / "observability" / "prometheus" / "rules"


def _traefik_labels_the_rules_read() -> set[str]:
    """Labels of Traefik's own series that the rules select on or parse (label_replace)."""
    labels: set[str] = set()
    for path in RULES_DIR.glob("*.yaml"):
        text = path.read_text()
        for matchers in re.findall(r"traefik_\w+\{([^}]*)\}", text):
            labels.update(re.findall(r"(\w+)\s*=~?", matchers))
        labels.update(re.findall(r'"\$1",\s*"(\w+)",\s*"[^"]*\(\?:?users-fastapi', text))
    return labels


def test_traefiks_service_label_survives_the_operators_target_labels(
    render_case: Any, render: Any
) -> None:
    colliding = _traefik_labels_the_rules_read() & OPERATOR_TARGET_LABELS
    assert "service" in colliding, colliding  # the rules read Traefik's backend from it
    values = {**render_case("polyframe", "kind").values, "traefikServiceMonitor": {"enabled": True}}
    (monitor,) = [
        m
        for m in render("polyframe", values).of_kind("ServiceMonitor")
        if m.name.endswith("-traefik")
    ]
    for endpoint in monitor.obj["spec"]["endpoints"]:
        # Else Traefik's `service` becomes `exported_service` and every Traefik rule is empty.
        assert endpoint.get("honorLabels") is True, (colliding, endpoint)


def test_the_check_sees_a_traefik_without_a_metrics_service() -> None:
    assert _traefik_metrics_service({}) is None
    assert (
        _traefik_metrics_service({"metrics": {"prometheus": {"service": {"enabled": False}}}})
        is None
    )


def test_traefik_sends_its_traces_to_the_collector() -> None:
    tracing = _traefik_values()["tracing"]
    assert tracing["otlp"]["enabled"] is True
    http = tracing["otlp"]["http"]
    assert http["enabled"] is True
    match = re.fullmatch(r"http://([a-z0-9.-]+):(\d+)(/.*)", http["endpoint"])
    assert match, http["endpoint"]
    host, port, path = match.groups()
    assert host == "otel-collector.monitoring.svc.cluster.local"
    # Traefik's endpoint is the full URL; the collector's OTLP/HTTP receiver serves /v1/traces.
    assert path == "/v1/traces"
    collector = yaml.safe_load((COLLECTOR / "config.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{port}")
    assert "traces" in collector["service"]["pipelines"]
    assert 0 < tracing["sampleRate"] <= 1


# -- Grafana data sources -----------------------------------------------------------------------

# Grafana's provisioning docs: the file, and each data source's common fields.
PROVISIONING = {
    "apiVersion": LEAF,
    "deleteDatasources": LEAF,
    "prune": LEAF,
    "datasources": LEAF,  # each checked by its type below
}
DATASOURCE = dict.fromkeys(
    (
        "name",
        "type",
        "access",
        "orgId",
        "uid",
        "url",
        "user",
        "database",
        "basicAuth",
        "basicAuthUser",
        "withCredentials",
        "isDefault",
        "secureJsonData",
        "version",
        "editable",
    ),
    LEAF,
)
_TAGS = Each({"key": LEAF, "value": LEAF})
JSON_DATA = {
    # datasources/prometheus/configure: "Provision the Prometheus data source"
    "prometheus": {
        **dict.fromkeys(
            (
                "httpMethod",
                "manageAlerts",
                "allowAsRecordingRulesTarget",
                "prometheusType",
                "prometheusVersion",
                "cacheLevel",
                "disableRecordingRules",
                "timeInterval",
                "incrementalQueryOverlapWindow",
                "customQueryParameters",
                "timeout",
            ),
            LEAF,
        ),
        "exemplarTraceIdDestinations": Each(
            dict.fromkeys(("name", "datasourceUid", "url", "urlDisplayLabel"), LEAF)
        ),
    },
    # datasources/tempo/configure-tempo-data-source/provision.md
    "tempo": {
        "tracesToLogsV2": {
            **dict.fromkeys(
                (
                    "datasourceUid",
                    "spanStartTimeShift",
                    "spanEndTimeShift",
                    "filterByTraceID",
                    "filterBySpanID",
                    "customQuery",
                    "query",
                ),
                LEAF,
            ),
            "tags": _TAGS,
        },
        "tracesToMetrics": {
            **dict.fromkeys(("datasourceUid", "spanStartTimeShift", "spanEndTimeShift"), LEAF),
            "tags": _TAGS,
            "queries": Each({"name": LEAF, "query": LEAF}),
        },
        "serviceMap": {"datasourceUid": LEAF},
        "nodeGraph": {"enabled": LEAF},
        "search": {"hide": LEAF},
        "timeout": LEAF,
    },
    # datasources/loki/configure: "Provision the data source", derived fields
    "loki": {
        "maxLines": LEAF,
        "timeout": LEAF,
        "derivedFields": Each(
            dict.fromkeys(
                ("name", "matcherType", "matcherRegex", "datasourceUid", "url", "urlDisplayLabel"),
                LEAF,
            )
        ),
    },
}


def _datasource_configmaps(rendered: Any) -> list[Any]:
    key, value = DATASOURCE_LABEL
    return [m for m in rendered.of_kind("ConfigMap") if m.labels.get(key) == value]


def _provisioning(rendered: Any) -> tuple[str, dict[str, Any]]:
    (configmap,) = _datasource_configmaps(rendered)
    ((name, text),) = configmap.obj["data"].items()
    assert name.endswith(".yaml"), name
    document: dict[str, Any] = yaml.safe_load(text)
    return text, document


def _undocumented_datasource_keys(document: dict[str, Any]) -> list[str]:
    errors = undocumented(document, PROVISIONING)
    for i, source in enumerate(document["datasources"]):
        where = f".datasources[{i}]"
        kind = source.get("type")
        if kind not in JSON_DATA:
            errors.append(f"{where}: type {kind!r}")
            continue
        errors += undocumented(source, {**DATASOURCE, "jsonData": JSON_DATA[kind]}, where)
    return errors


def _by_type(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {source["type"]: source for source in document["datasources"]}


def test_datasources_are_off_by_default(render_case: Any) -> None:
    for case in ("default", "production", "kind"):
        assert not _datasource_configmaps(render_case("polyframe", case)), case


def test_the_datasources_are_grafanas_documented_keys(render_case: Any) -> None:
    _text, document = _provisioning(render_case("polyframe", "all-on"))
    assert document["apiVersion"] == 1
    assert set(_by_type(document)) == {"prometheus", "tempo", "loki"}
    assert _undocumented_datasource_keys(document) == []
    document["datasources"][0]["jsonData"]["exemplarTraceIDDestinations"] = []
    assert _undocumented_datasource_keys(document), "a misspelt key is seen"


def test_the_links_between_datasources_resolve(render_case: Any) -> None:
    _text, document = _provisioning(render_case("polyframe", "all-on"))
    sources = _by_type(document)
    uids = {source["uid"] for source in document["datasources"]}
    assert len(uids) == len(document["datasources"])
    assert not any(source.get("isDefault") for source in document["datasources"])
    (exemplar,) = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert exemplar["datasourceUid"] == sources["tempo"]["uid"]
    tempo = sources["tempo"]["jsonData"]
    assert tempo["tracesToLogsV2"]["datasourceUid"] == sources["loki"]["uid"]
    assert tempo["tracesToLogsV2"]["filterByTraceID"] is True
    assert tempo["tracesToMetrics"]["datasourceUid"] == sources["prometheus"]["uid"]
    (derived,) = sources["loki"]["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == sources["tempo"]["uid"]


def test_a_datasource_grafana_already_has_is_linked_by_its_uid(render: Any) -> None:
    values = {
        "grafanaDatasources": {
            "enabled": True,
            "prometheus": {"enabled": False, "uid": "prometheus"},
        }
    }
    _text, document = _provisioning(render("polyframe", values))
    sources = _by_type(document)
    assert "prometheus" not in sources
    assert sources["tempo"]["jsonData"]["tracesToMetrics"]["datasourceUid"] == "prometheus"


def test_grafanas_own_variables_survive_its_environment_expansion(render_case: Any) -> None:
    """Grafana expands $VAR and ${VAR} in provisioning files; `$$` is a literal `$`."""
    text, document = _provisioning(render_case("polyframe", "all-on"))
    assert "$" not in text.replace("$$", ""), "an unescaped $ would be taken for a variable"
    sources = _by_type(document)
    assert sources["loki"]["jsonData"]["derivedFields"][0]["url"] == "$${__value.raw}"
    for query in sources["tempo"]["jsonData"]["tracesToMetrics"]["queries"]:
        assert "{$$__tags}" in query["query"], query


def test_the_links_read_what_the_services_write(render_case: Any) -> None:
    """The exemplar label, the log field and the metric labels the links use are the kit's."""
    from opentelemetry import trace

    from service_kit import metrics
    from service_kit.logs import JsonFormatter
    from service_kit.telemetry import _exemplar

    _text, document = _provisioning(render_case("polyframe", "all-on"))
    sources = _by_type(document)
    context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(1),
    )
    trace_id = format(context.trace_id, "032x")
    span = trace.NonRecordingSpan(context)

    (exemplar,) = sources["prometheus"]["jsonData"]["exemplarTraceIdDestinations"]
    assert _exemplar(span) == {exemplar["name"]: trace_id}

    with trace.use_span(span):
        record = logging.LogRecord("polyframe", logging.INFO, __file__, 1, "hello", None, None)
        line = JsonFormatter("users-fastapi").format(record)
    (derived,) = sources["loki"]["jsonData"]["derivedFields"]
    match = re.search(derived["matcherRegex"], line)
    assert match, line
    assert match.group(1) == trace_id, line
    assert json.loads(line)["trace_id"] == trace_id

    families = {family.name: family for family in metrics.REGISTRY.collect()}
    tempo = sources["tempo"]["jsonData"]["tracesToMetrics"]
    labels = {tag.get("value", tag["key"]) for tag in tempo["tags"]}
    assert labels <= set(metrics.SERVICE), labels
    for query in tempo["queries"]:
        for name in re.findall(r"([a-z_]+)_(?:bucket|count|sum)\{", query["query"]):
            assert name in families, f"{name}: not in the catalogue"
