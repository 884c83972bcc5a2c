"""The OpenTelemetry Collector configuration, alone and with its overlays (span metrics, logs).

No collector binary exists on these machines (it is not a PyPI or Debian package), so this
checks statically what `otelcol validate` would: every component a pipeline names is
configured, the order of the processors, where endpoints come from, and every key written
exists in the component's documented configuration (the allow-lists below, transcribed from
the components' own documentation; nothing here runs a collector).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

# The collector merges several --config files as this does: maps merge, everything else replaces.
from polyframe_testing.documents import LEAF, ByType, Each, Free, merged, undocumented

COLLECTOR = Path(__file__).resolve().parents[2] / "observability" / "otel-collector"
ENV = re.compile(r"^\$\{env:([A-Z][A-Z0-9_]*)(?::-[^}]*)?\}$")
KINDS = ("receivers", "processors", "exporters", "connectors")


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COLLECTOR / name).read_text())
    return document


OVERLAYS = ("spanmetrics.yaml", "logs.yaml")


def _combined(*overlays: str) -> dict[str, Any]:
    config = _load("config.yaml")
    for name in overlays:
        config = merged(config, _load(name))
    return config


CONFIGS = {
    "config.yaml": lambda: _combined(),
    "config.yaml + spanmetrics.yaml": lambda: _combined("spanmetrics.yaml"),
    "config.yaml + logs.yaml": lambda: _combined("logs.yaml"),
    "config.yaml + spanmetrics.yaml + logs.yaml": lambda: _combined(*OVERLAYS),
}


@pytest.fixture(params=sorted(CONFIGS))
def config(request: pytest.FixtureRequest) -> dict[str, Any]:
    return CONFIGS[request.param]()


def _defined(config: dict[str, Any], kind: str, name: str) -> bool:
    return name in (config.get(kind) or {})


def test_every_pipeline_component_is_configured(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"]
    assert pipelines, "no pipeline"
    for pipeline_name, pipeline in pipelines.items():
        for name in pipeline["receivers"]:
            assert _defined(config, "receivers", name) or _defined(config, "connectors", name), (
                f"{pipeline_name}: receiver {name}"
            )
        for name in pipeline.get("processors", []):
            assert _defined(config, "processors", name), f"{pipeline_name}: processor {name}"
        for name in pipeline["exporters"]:
            assert _defined(config, "exporters", name) or _defined(config, "connectors", name), (
                f"{pipeline_name}: exporter {name}"
            )
        # memory_limiter first (refuse before buffering), batch last.
        processors = pipeline["processors"]
        assert processors[0] == "memory_limiter", pipeline_name
        assert processors[-1] == "batch", pipeline_name
    for name in config["service"].get("extensions", []):
        assert _defined(config, "extensions", name), f"extension {name}"


def test_every_configured_component_is_used(config: dict[str, Any]) -> None:
    pipelines = config["service"]["pipelines"].values()
    used = {
        name
        for pipeline in pipelines
        for role in ("receivers", "processors", "exporters")
        for name in pipeline.get(role, [])
    }
    for kind in KINDS:
        for name in config.get(kind) or {}:
            assert name in used, f"{kind}.{name} is configured but in no pipeline"


def test_otlp_in_over_grpc_and_http() -> None:
    protocols = _load("config.yaml")["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")


def test_traces_go_to_the_backend_the_environment_names() -> None:
    config = _load("config.yaml")
    traces = config["service"]["pipelines"]["traces"]
    (exporter,) = traces["exporters"]
    endpoint = config["exporters"][exporter]["endpoint"]
    match = ENV.match(endpoint)
    assert match, f"the traces endpoint is not taken from the environment: {endpoint}"
    # Each variable a file reads is explained at its top.
    for name in ("config.yaml", *OVERLAYS):
        text = (COLLECTOR / name).read_text()
        header = re.split(r"^[a-z]", text, maxsplit=1, flags=re.MULTILINE)[0]
        for variable in re.findall(r"\$\{env:([A-Z0-9_]+)", text):
            assert variable in header, f"{name}: {variable} is not documented"


def test_span_metrics_are_an_overlay_that_keeps_the_traces_flowing() -> None:
    combined = merged(_load("config.yaml"), _load("spanmetrics.yaml"))
    pipelines = combined["service"]["pipelines"]
    assert set(_load("config.yaml")["service"]["pipelines"]["traces"]["exporters"]) < set(
        pipelines["traces"]["exporters"]
    )
    assert "spanmetrics" in pipelines["traces"]["exporters"]
    (metrics,) = [p for name, p in pipelines.items() if name.startswith("metrics")]
    assert metrics["receivers"] == ["spanmetrics"]
    # Only bounded dimensions: the route template, never the URL.
    dimensions = {d["name"] for d in combined["connectors"]["spanmetrics"]["dimensions"]}
    assert "http.route" in dimensions
    assert not dimensions & {"url.full", "url.path", "http.target", "http.url"}


def test_span_metrics_exemplars_are_exposed_as_openmetrics() -> None:
    """The connector attaches exemplars, but the Prometheus exporter writes them only in the
    OpenMetrics format, which it serves only with `enable_open_metrics` (default false: the
    collector-contrib prometheusexporter README). Without it every exemplar is dropped."""
    combined = merged(_load("config.yaml"), _load("spanmetrics.yaml"))
    connector = combined["connectors"]["spanmetrics"]
    assert connector["exemplars"]["enabled"] is True
    (metrics,) = [
        p for p in combined["service"]["pipelines"].values() if "spanmetrics" in p["receivers"]
    ]
    exporters = [name for name in metrics["exporters"] if name.split("/")[0] == "prometheus"]
    assert exporters, "span metrics are exposed by no Prometheus exporter"
    for name in exporters:
        assert combined["exporters"][name].get("enable_open_metrics") is True, name


# -- Pods, logs ---------------------------------------------------------------------------------


def test_every_pipeline_tags_its_data_with_the_pod(config: dict[str, Any]) -> None:
    """k8sattributes in every pipeline that receives from Pods, before batch: batching drops the
    connection a span arrived on, the last way to find its Pod (the processor's README)."""
    for name, pipeline in config["service"]["pipelines"].items():
        if set(pipeline["receivers"]) & set(config.get("connectors") or {}):
            continue  # fed by a connector: its data was tagged in the pipeline before it
        processors = pipeline["processors"]
        assert "k8sattributes" in processors, name
        assert processors.index("k8sattributes") < processors.index("batch"), name
    association = config["processors"]["k8sattributes"]["pod_association"]
    assert association[-1] == {"sources": [{"from": "connection"}]}


def test_the_logs_pipeline_reads_the_kits_lines_with_their_trace() -> None:
    """The filelog operators parse what service_kit.logs writes: a JSON line (matching the
    json_parser's `if`) whose `level`, `trace_id` and `span_id` are the fields they read."""
    from opentelemetry import trace

    from service_kit.logs import JsonFormatter

    config = _combined("logs.yaml")
    assert config["service"]["pipelines"]["logs"]["receivers"][0] == "filelog"
    filelog = config["receivers"]["filelog"]
    assert filelog["include_file_path"] is True  # the container parser's Pod metadata needs it
    operators = {op["type"]: op for op in filelog["operators"]}
    assert [op["type"] for op in filelog["operators"]] == [
        "container",
        "json_parser",
        "trace_parser",
    ]

    context = trace.SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=trace.TraceFlags(1),
    )
    with trace.use_span(trace.NonRecordingSpan(context)):
        record = logging.LogRecord("polyframe", logging.WARNING, __file__, 1, "hello", None, None)
        line = JsonFormatter("legacy-flask").format(record)

    condition = re.fullmatch(r'body matches "(.*)"', operators["json_parser"]["if"])
    assert condition, operators["json_parser"]["if"]
    assert re.search(condition.group(1).replace("\\\\", "\\"), line), line
    assert not re.search(condition.group(1).replace("\\\\", "\\"), "[2026-01-01] Booting worker")

    attributes = json.loads(line)  # json_parser: parse_to defaults to attributes

    def read(field: str) -> Any:
        prefix, key = field.split(".", 1)
        assert prefix == "attributes", field
        return attributes[key]

    severity = operators["json_parser"]["severity"]
    assert read(severity["parse_from"]) == "warning"
    assert "warning" in severity["mapping"]["warn"]  # Python's name; the preset knows `warn`
    assert read(operators["trace_parser"]["trace_id"]["parse_from"]) == format(
        context.trace_id, "032x"
    )
    assert read(operators["trace_parser"]["span_id"]["parse_from"]) == format(
        context.span_id, "016x"
    )
    assert operators["trace_parser"]["if"] == '"trace_id" in attributes'


# -- Every key is documented --------------------------------------------------------------------
#
# Allow-lists of the keys each component documents, transcribed from its own documentation
# (README tables and the mapstructure tags of its Config struct) in the GitHub repositories
# open-telemetry/opentelemetry-collector (core) and opentelemetry-collector-contrib, and kept to
# the keys Polyframe uses or may reasonably set: a key outside them is a typo or an undocumented
# option, which a real collector refuses at start (`'…' has invalid keys`). Component type names
# are the classic ones every contrib release accepts (k8sattributesprocessor/metadata.yaml:
# `type: k8sattributes`; recent releases add underscored aliases such as k8s_attributes).
#
# A dict lists the allowed keys (value: the schema below that key); LEAF is any value;
# Free(schema) is a map of free keys; Each(schema) a list of items; ByType a list of stanza
# operators, each checked by its `type`.

# configtls (core config/configtls/README.md), client side.
TLS_CLIENT = dict.fromkeys(
    (
        "insecure",
        "insecure_skip_verify",
        "ca_file",
        "cert_file",
        "key_file",
        "server_name_override",
    ),
    LEAF,
)
# exporterhelper (core exporter/exporterhelper/README.md): queue and retry of every exporter.
SENDING_QUEUE = dict.fromkeys(("enabled", "num_consumers", "queue_size", "storage"), LEAF)
RETRY = dict.fromkeys(
    (
        "enabled",
        "initial_interval",
        "max_interval",
        "max_elapsed_time",
        "multiplier",
        "randomization_factor",
    ),
    LEAF,
)
# confighttp/configgrpc server settings (core config/confighttp, config/configgrpc READMEs).
SERVER = {"endpoint": LEAF, "tls": LEAF, "cors": LEAF, "include_metadata": LEAF}
# stanza (contrib pkg/stanza/docs): fields every operator takes, the severity and trace blocks.
OPERATOR = dict.fromkeys(("type", "id", "output", "on_error", "if"), LEAF)
SEVERITY = dict.fromkeys(("parse_from", "preset", "mapping", "overwrite_text"), LEAF)
FIELD = {"parse_from": LEAF}

DOCUMENTED: dict[str, dict[str, Any]] = {
    "receivers": {
        # core receiver/otlpreceiver/README.md
        "otlp": {"protocols": {"grpc": SERVER, "http": SERVER}},
        # contrib receiver/filelogreceiver/README.md, operators in pkg/stanza/docs/operators/
        "filelog": {
            **dict.fromkeys(
                (
                    "include",
                    "exclude",
                    "exclude_older_than",
                    "start_at",
                    "include_file_name",
                    "include_file_path",
                    "poll_interval",
                    "max_log_size",
                    "max_concurrent_files",
                    "storage",
                    "encoding",
                    "attributes",
                    "resource",
                ),
                LEAF,
            ),
            "retry_on_failure": RETRY,
            "operators": ByType(
                {
                    # container.md
                    "container": {
                        **OPERATOR,
                        **dict.fromkeys(
                            (
                                "format",
                                "add_metadata_from_filepath",
                                "max_log_size",
                                "parse_from",
                                "parse_to",
                            ),
                            LEAF,
                        ),
                        "severity": SEVERITY,
                    },
                    # json_parser.md; types/severity.md, types/timestamp.md
                    "json_parser": {
                        **OPERATOR,
                        "parse_from": LEAF,
                        "parse_to": LEAF,
                        "timestamp": dict.fromkeys(
                            ("parse_from", "layout_type", "layout", "location"), LEAF
                        ),
                        "severity": SEVERITY,
                        "trace": {"trace_id": FIELD, "span_id": FIELD, "trace_flags": FIELD},
                    },
                    # types/trace.md: the trace_parser takes the trace fields inline
                    "trace_parser": {
                        **OPERATOR,
                        "trace_id": FIELD,
                        "span_id": FIELD,
                        "trace_flags": FIELD,
                    },
                }
            ),
        },
    },
    "processors": {
        # core processor/memorylimiterprocessor/README.md
        "memory_limiter": dict.fromkeys(
            (
                "check_interval",
                "limit_mib",
                "spike_limit_mib",
                "limit_percentage",
                "spike_limit_percentage",
            ),
            LEAF,
        ),
        # core processor/batchprocessor/README.md
        "batch": dict.fromkeys(
            (
                "timeout",
                "send_batch_size",
                "send_batch_max_size",
                "metadata_keys",
                "metadata_cardinality_limit",
            ),
            LEAF,
        ),
        # contrib processor/k8sattributesprocessor/config.schema.yaml and README.md
        "k8sattributes": {
            **dict.fromkeys(
                ("auth_type", "passthrough", "wait_for_metadata", "wait_for_metadata_timeout"),
                LEAF,
            ),
            "filter": dict.fromkeys(
                ("node", "node_from_env_var", "namespace", "fields", "labels"), LEAF
            ),
            "extract": {
                "metadata": LEAF,
                "otel_annotations": LEAF,
                "deployment_name_from_replicaset": LEAF,
                "labels": Each(dict.fromkeys(("tag_name", "key", "key_regex", "from"), LEAF)),
                "annotations": Each(dict.fromkeys(("tag_name", "key", "key_regex", "from"), LEAF)),
            },
            "pod_association": Each({"sources": Each({"from": LEAF, "name": LEAF})}),
            "exclude": {"pods": Each({"name": LEAF})},
        },
    },
    "exporters": {
        # core exporter/otlpexporter/README.md (configgrpc client settings)
        "otlp": {
            **dict.fromkeys(("endpoint", "compression", "headers", "timeout"), LEAF),
            "tls": TLS_CLIENT,
            "sending_queue": SENDING_QUEUE,
            "retry_on_failure": RETRY,
        },
        # core exporter/otlphttpexporter/README.md (confighttp client settings)
        "otlphttp": {
            **dict.fromkeys(
                (
                    "endpoint",
                    "traces_endpoint",
                    "metrics_endpoint",
                    "logs_endpoint",
                    "compression",
                    "headers",
                    "timeout",
                    "encoding",
                ),
                LEAF,
            ),
            "tls": TLS_CLIENT,
            "sending_queue": SENDING_QUEUE,
            "retry_on_failure": RETRY,
        },
        # contrib exporter/prometheusexporter/README.md and config.go
        "prometheus": {
            **dict.fromkeys(
                (
                    "endpoint",
                    "namespace",
                    "send_timestamps",
                    "metric_expiration",
                    "enable_open_metrics",
                    "without_scope_info",
                    "add_metric_suffixes",
                    "translation_strategy",
                ),
                LEAF,
            ),
            "const_labels": Free(LEAF),
            "resource_to_telemetry_conversion": {"enabled": LEAF},
        },
    },
    "connectors": {
        # contrib connector/spanmetricsconnector/README.md and config.go
        "spanmetrics": {
            **dict.fromkeys(
                (
                    "exclude_dimensions",
                    "dimensions_cache_size",
                    "aggregation_temporality",
                    "namespace",
                    "metrics_flush_interval",
                    "metrics_expiration",
                ),
                LEAF,
            ),
            "dimensions": Each({"name": LEAF, "default": LEAF}),
            "histogram": {
                "disable": LEAF,
                "unit": LEAF,
                "explicit": {"buckets": LEAF},
                "exponential": {"max_size": LEAF},
            },
            "exemplars": {"enabled": LEAF, "max_per_data_point": LEAF},
        },
    },
    "extensions": {
        # contrib extension/healthcheckextension/README.md
        "health_check": dict.fromkeys(("endpoint", "path", "check_collector_pipeline"), LEAF),
    },
}
# core service/README.md and otelcol's service configuration.
SERVICE = {
    "extensions": LEAF,
    "pipelines": Free(dict.fromkeys(("receivers", "processors", "exporters"), LEAF)),
    "telemetry": {"logs": dict.fromkeys(("level", "encoding"), LEAF), "metrics": LEAF},
}


def undocumented_keys(config: dict[str, Any]) -> list[str]:
    errors = []
    for section, value in config.items():
        if section == "service":
            errors += undocumented(value, SERVICE, "service")
            continue
        if section not in DOCUMENTED:
            errors.append(section)
            continue
        for name, settings in (value or {}).items():
            kind = name.split("/")[0]
            if kind not in DOCUMENTED[section]:
                errors.append(f"{section}.{name}: component type {kind!r}")
            else:
                errors += undocumented(
                    settings or {}, DOCUMENTED[section][kind], f"{section}.{name}"
                )
    return errors


def test_every_key_is_documented_by_its_component(config: dict[str, Any]) -> None:
    assert undocumented_keys(config) == []


@pytest.mark.parametrize(
    ("path", "key"),
    [
        (("exporters", "prometheus/spanmetrics"), "enable_openmetrics"),
        (("processors", "k8sattributes", "extract"), "metadatas"),
        (("receivers", "filelog", "operators", 1), "parse_into"),
    ],
)
def test_an_undocumented_key_is_found(path: tuple[Any, ...], key: str) -> None:
    config = _combined(*OVERLAYS)
    node: Any = config
    for step in path:
        node = node[step]
    node[key] = True
    assert undocumented_keys(config) != []


def test_span_metrics_dimensions_are_the_catalogues_request_labels() -> None:
    """The connector's dimensions are the span attributes (stable HTTP semconv) whose
    Prometheus names are the catalogue's request-duration labels, so span metrics and the
    services' own metrics group alike; http.route is the kit's route template on spans too."""
    from service_kit import metrics

    connector = _combined("spanmetrics.yaml")["connectors"]["spanmetrics"]
    dimensions = [d["name"] for d in connector["dimensions"]]
    labels = [
        label for label in metrics.HTTP_SERVER_DURATION._labelnames if label not in metrics.SERVICE
    ]
    assert [d.replace(".", "_") for d in dimensions] == labels
