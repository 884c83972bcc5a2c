"""Telemetry of one process: what the adapters record, and its set-up."""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

import pytest
from pydantic import SecretStr

from service_kit import runtime, telemetry, tracing
from service_kit.settings import ServiceSettings
from service_kit.telemetry import Telemetry, for_service, setup

DURATION = "http_server_request_duration_seconds"
#: How long a subprocess may take before the test calls it hung (not a performance threshold).
PATIENCE = 60.0

MakeTelemetry = Callable[..., Telemetry]


def request(
    telemetry: Telemetry,
    method: str = "GET",
    *,
    route: str | None = "/api/things/{id}",
    status: int = 200,
    request_bytes: int | None = 12,
    response_bytes: int | None = 345,
) -> None:
    state = telemetry.start_request(method)
    telemetry.finish_request(
        state,
        route=route,
        status=status,
        request_bytes=request_bytes,
        response_bytes=response_bytes,
    )


# --- recording ---------------------------------------------------------------------------------


OLDEST = "polyframe_oldest_request_start_timestamp_seconds"


def test_the_oldest_request_in_flight_is_its_start_time(
    make_telemetry: MakeTelemetry, samples: Any
) -> None:
    telemetry = make_telemetry("fastapi")
    service = {"service_name": telemetry.service, "framework": "fastapi"}
    assert samples.value(OLDEST, **service) == math.inf  # the series is there: none in flight
    before = time.time()
    older = telemetry.start_request("GET", time.perf_counter() - 30.0)  # queued 30 s ago
    after = time.time()
    newer = telemetry.start_request("GET", time.perf_counter() - 10.0)
    assert older is not None
    assert newer is not None
    assert samples.value(OLDEST, **service) == older.started_unix
    assert before - 30.0 <= older.started_unix <= after - 30.0
    done = {"route": "/x", "status": 200, "request_bytes": None, "response_bytes": None}
    telemetry.finish_request(older, **done)
    assert samples.value(OLDEST, **service) == newer.started_unix
    telemetry.finish_request(newer, **done)
    assert samples.value(OLDEST, **service) == math.inf


def test_no_oldest_request_series_with_instrumentation_off(
    make_telemetry: MakeTelemetry, samples: Any
) -> None:
    telemetry = make_telemetry("flask", enabled=False)
    assert telemetry.start_request("GET") is None
    assert samples.series(OLDEST, service_name=telemetry.service) == []


def test_a_request_is_counted_with_its_labels(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry("flask")
    service = {"service_name": telemetry.service, "framework": "flask"}
    state = telemetry.start_request("post")
    assert samples.value("http_server_active_requests", **service, http_request_method="POST") == 1
    telemetry.finish_request(
        state, route="/api/things/{id}", status=201, request_bytes=12, response_bytes=345
    )
    labels = {
        **service,
        "http_request_method": "POST",
        "http_route": "/api/things/{id}",
        "http_response_status_code": "201",
    }
    assert samples.value(f"{DURATION}_count", **labels) == 1
    assert samples.value(f"{DURATION}_sum", **labels) > 0
    assert samples.value("http_server_active_requests", **service, http_request_method="POST") == 0
    sizes = {**service, "http_request_method": "POST", "http_route": "/api/things/{id}"}
    assert samples.value("http_server_request_body_size_bytes_sum", **sizes) == 12
    assert samples.value("http_server_response_body_size_bytes_sum", **sizes) == 345
    assert samples.value("http_server_response_body_size_bytes_bucket", **sizes, le="256.0") == 0
    assert samples.value("http_server_response_body_size_bytes_bucket", **sizes, le="1024.0") == 1


def test_unknown_sizes_are_not_observed(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry()
    request(telemetry, request_bytes=None, response_bytes=None)
    assert samples.value(f"{DURATION}_count", service_name=telemetry.service) == 1
    assert (
        samples.series("http_server_request_body_size_bytes_count", service_name=telemetry.service)
        == []
    )
    assert (
        samples.series("http_server_response_body_size_bytes_count", service_name=telemetry.service)
        == []
    )


def test_label_values_are_bounded(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry()
    request(telemetry, "BREW", route=None, status=999)
    request(telemetry, "get", route="", status=42)
    series = {
        (s["http_request_method"], s["http_route"], s["http_response_status_code"])
        for s in samples.series(f"{DURATION}_count", service_name=telemetry.service)
    }
    assert series == {("_OTHER", "__unmatched__", "_OTHER"), ("GET", "__unmatched__", "_OTHER")}


def test_disabled_telemetry_records_nothing(make_telemetry: MakeTelemetry, samples: Any) -> None:
    telemetry = make_telemetry(enabled=False)
    state = telemetry.start_request("GET")
    assert state is None
    telemetry.finish_request(state, route="/a", status=200, request_bytes=1, response_bytes=1)
    telemetry.mark_ready()
    for name in (
        DURATION + "_count",
        "http_server_active_requests",
        "polyframe_cold_start_seconds",
    ):
        assert samples.series(name, service_name=telemetry.service) == []


def test_cold_start_recorded_once(
    make_telemetry: MakeTelemetry, samples: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    instruments = make_telemetry()
    ages = iter([12.5, 99.0])
    monkeypatch.setattr(runtime, "server_age", lambda: next(ages))
    instruments.mark_ready()
    instruments.mark_ready()
    assert samples.value("polyframe_cold_start_seconds", service_name=instruments.service) == 12.5
    assert next(ages) == 99.0  # asked once only


# --- set-up ------------------------------------------------------------------------------------


def test_setup_publishes_build_info(samples: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_current", telemetry.current())  # put back afterwards
    instance = setup("service-kit", "flask")
    assert instance.enabled
    assert instance.labels == ("service-kit", "flask")
    assert telemetry.current() is instance
    (labels,) = samples.series(
        "polyframe_build_info", service_name="service-kit", framework="flask"
    )
    assert labels["version"] == metadata.version("service-kit")
    assert labels["framework_version"] == metadata.version("flask")
    assert labels["python_version"] == platform.python_version()
    assert labels["server"] == "other" or labels["server"].startswith(("gunicorn ", "uvicorn "))
    assert samples.value("polyframe_build_info", **labels) == 1
    assert tracing.tracer_provider() is not None
    assert setup("service-kit", "flask") is not instance  # again: safe, a new binding


def test_setup_disabled_sets_nothing_up(samples: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(telemetry, "_current", telemetry.current())
    instance = setup("svc-disabled-setup", "flask", enabled=False)
    assert not instance.enabled
    assert telemetry.current() is instance
    assert samples.series("polyframe_build_info", service_name="svc-disabled-setup") == []


class DemoSettings(ServiceSettings):
    service_name = "demo-telemetry"
    service_secret: SecretStr | None = None


@pytest.mark.parametrize(("instrumentation", "threshold"), [(True, 4), (False, 10)])
def test_for_service_follows_the_settings(instrumentation: bool, threshold: int) -> None:
    settings = DemoSettings(
        environment="test", instrumentation=instrumentation, db_repeated_query_threshold=threshold
    )
    instance = for_service(settings, "django")
    assert (instance.service, instance.framework) == ("demo-telemetry", "django")
    assert instance.enabled is instrumentation
    assert instance.repeated_query_threshold == threshold
