"""Django's connections counted (service_kit.djangodb): the gauges under concurrent requests.

Without a database: stand-in connection wrappers in the module's set of open connections,
as Django's backends put theirs there when they connect.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from polyframe_testing.telemetry import metric_value
from service_kit import djangodb, metrics, telemetry
from service_kit.telemetry import Telemetry

#: How long a test waits for a thread that should finish at once (not a performance threshold).
PATIENCE = 30.0


def test_gauges_end_at_the_last_state_when_threads_publish_at_once(
    make_telemetry: Callable[..., Telemetry], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A thread that counted its connection in use, then is delayed, must not overwrite what
    a later thread counted once the request ended (the gauges would stay wrong until the
    next request)."""
    current = make_telemetry("django")
    monkeypatch.setattr(telemetry, "_current", current)
    service = {"service_name": current.service, "framework": current.framework}
    counted_early, go_on = threading.Event(), threading.Event()
    connect_errors = metrics.DB_CONNECT_ERRORS

    class HoldingTheEarlyThread:
        """``DB_CONNECT_ERRORS``, holding the thread named "early" once it has counted."""

        def labels(self, *labels: str) -> Any:
            if threading.current_thread().name == "early":
                counted_early.set()
                go_on.wait(PATIENCE)
            return connect_errors.labels(*labels)

    monkeypatch.setattr(metrics, "DB_CONNECT_ERRORS", HoldingTheEarlyThread())

    class Wrapper:  # Django's DatabaseWrapper as publish() reads it
        connection = object()
        _thread_ident = 1

    wrapper = Wrapper()
    monkeypatch.setattr(djangodb, "_open", {wrapper})
    monkeypatch.setattr(djangodb, "_serving", {1})  # its thread serves a request
    early = threading.Thread(target=djangodb.publish, name="early")
    early.start()
    try:
        assert counted_early.wait(PATIENCE)
        djangodb._serving.discard(1)  # the request ended meanwhile
        late = threading.Thread(target=djangodb.publish)
        late.start()
        late.join(0.5)  # at once, unless publishing waits for the early thread (it should)
    finally:
        go_on.set()
    early.join(PATIENCE)
    late.join(PATIENCE)
    assert metric_value("polyframe_db_pool_connections", **service, state="in_use") == 0
    assert metric_value("polyframe_db_pool_connections", **service, state="idle") == 1
