"""The metric catalogue: one registry, its names and labels, and label hygiene."""

from __future__ import annotations

import pytest
from prometheus_client.metrics import MetricWrapperBase

from service_kit import metrics
from service_kit.metrics import (
    KNOWN_METHODS,
    OTHER,
    SERVICE,
    UNMATCHED_ROUTE,
    method_label,
    route_label,
    status_label,
)

# --- label hygiene ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "label"),
    [
        ("GET", "GET"),
        ("get", "GET"),
        ("Patch", "PATCH"),
        ("OPTIONS", "OPTIONS"),
        ("CONNECT", "CONNECT"),
        ("PURGE", OTHER),
        ("PROPFIND", OTHER),
        ("", OTHER),
        ("GET /etc/passwd", OTHER),
    ],
)
def test_method_label(method: str, label: str) -> None:
    assert method_label(method) == label


def test_method_label_known_set_is_the_http_standard() -> None:
    assert {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} <= KNOWN_METHODS
    assert all(method_label(method) == method for method in KNOWN_METHODS)


@pytest.mark.parametrize(
    ("status", "label"),
    [(100, "100"), (200, "200"), (404, "404"), (599, "599"), (99, OTHER), (600, OTHER)],
)
def test_status_label(status: int, label: str) -> None:
    assert status_label(status) == label


@pytest.mark.parametrize(
    ("route", "label"),
    [
        ("/api/orders/{order_id}", "/api/orders/{order_id}"),
        (None, UNMATCHED_ROUTE),
        ("", UNMATCHED_ROUTE),
    ],
)
def test_route_label(route: str | None, label: str) -> None:
    assert route_label(route) == label


def catalogue() -> list[MetricWrapperBase]:
    return [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]


def test_every_metric_is_in_the_one_registry() -> None:
    names = {metric._name for metric in catalogue()}
    assert len(catalogue()) == len(names) >= 25
    registered = set(metrics.REGISTRY._names_to_collectors)
    assert all(name in registered for name in names)


def test_every_metric_is_labelled_by_service_and_framework() -> None:
    for metric in catalogue():
        assert tuple(metric._labelnames[:2]) == SERVICE, metric._name


def test_metric_names_follow_the_conventions() -> None:
    for metric in catalogue():
        name = metric._name
        assert name.startswith(("http_", "process_", "python_", "polyframe_")), name
        if metric._type == "histogram":
            assert name.endswith(("_seconds", "_bytes", "_per_request")), name
        if metric._type == "counter":
            assert not name.endswith("_total"), name  # prometheus_client adds it


def test_server_duration_labels_are_the_semantic_conventions() -> None:
    assert metrics.HTTP_SERVER_DURATION._labelnames == (
        "service_name",
        "framework",
        "http_request_method",
        "http_route",
        "http_response_status_code",
    )
    assert metrics.HTTP_SERVER_DURATION._kwargs["buckets"] == metrics.DURATION_BUCKETS
    assert metrics.DURATION_BUCKETS[0] <= 0.005
    assert metrics.DURATION_BUCKETS[-1] >= 10
