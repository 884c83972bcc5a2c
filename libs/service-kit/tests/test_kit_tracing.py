"""Tracing set-up: spans only when the ``OTEL_*`` variables give them somewhere to go."""

from __future__ import annotations

import pytest

from service_kit import tracing

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*ENDPOINTS, "OTEL_TRACES_EXPORTER", "OTEL_TRACES_SAMPLER"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_nothing_configured_means_no_tracing(clean_env: pytest.MonkeyPatch) -> None:
    assert not tracing.exporter_configured()
    assert not tracing.wanted()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_otlp_endpoint_wants_spans(clean_env: pytest.MonkeyPatch, endpoint: str) -> None:
    clean_env.setenv(endpoint, "http://127.0.0.1:4318")
    assert tracing.exporter_configured()
    assert tracing.wanted()


def test_exporter_none_wins_over_an_endpoint(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    clean_env.setenv("OTEL_TRACES_EXPORTER", " None ")
    assert not tracing.exporter_configured()
    assert not tracing.wanted()


def test_a_sampler_alone_wants_spans_without_an_exporter(clean_env: pytest.MonkeyPatch) -> None:
    """Spans made and recorded (logs carry their ids), sent nowhere."""
    clean_env.setenv("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    assert not tracing.exporter_configured()
    assert tracing.wanted()
