"""The OpenTelemetry Collector configuration, alone and with the span-metrics overlay.

No collector binary exists on these machines (it is not a PyPI or Debian package), so this
checks what `otelcol validate` would about wiring: every component a pipeline names is
configured, the order of the processors, and where endpoints come from.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

# The collector merges several --config files as this does: maps merge, everything else replaces.
from polyframe_testing.documents import merged

COLLECTOR = Path(__file__).resolve().parents[2] / "observability" / "otel-collector"
ENV = re.compile(r"^\$\{env:([A-Z][A-Z0-9_]*)(?::-[^}]*)?\}$")
KINDS = ("receivers", "processors", "exporters", "connectors")


def _load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COLLECTOR / name).read_text())
    return document


CONFIGS = {
    "config.yaml": lambda: _load("config.yaml"),
    "config.yaml + spanmetrics.yaml": lambda: merged(
        _load("config.yaml"), _load("spanmetrics.yaml")
    ),
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
    # Each variable the configuration reads is explained at its top.
    text = (COLLECTOR / "config.yaml").read_text()
    header = text.split("receivers:")[0]
    for variable in re.findall(r"\$\{env:([A-Z0-9_]+)", text):
        assert variable in header, f"{variable} is not documented"


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
