"""Django database backends that count their connections: the engines of admin-django.

``ENGINE: "service_kit.djangodb.postgresql"`` (or ``.sqlite3``) is Django's own backend with
:class:`CountedConnections` mixed in. Django has no pool: each thread opens its own
connection and, with ``CONN_MAX_AGE``, keeps it between requests. So what exists is counted:

- ``polyframe_db_pool_connections{state}``: open connections of this process, ``in_use``
  when the thread holding it is serving a request, ``idle`` when it is between requests;
- ``polyframe_db_connect_errors_total``: connections the database refused (or never
  answered): the database is down, not busy.

There is no wait for a connection and no pool timeout (a thread opens its own), so no
``polyframe_db_pool_wait_seconds``, ``…_timeouts_total`` or ``…_max_connections`` here: the
most connections a process opens is its thread count (``polyframe_worker_threads``).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from django.core.signals import request_finished, request_started

from service_kit import metrics, telemetry

#: Open connections of this process (a wrapper per thread and alias).
_open: weakref.WeakSet[Any] = weakref.WeakSet()
#: Threads serving a request now (``threading.get_ident()``).
_serving: set[int] = set()
_lock = threading.Lock()


def _labels() -> tuple[str, str] | None:
    current = telemetry.current()
    return current.labels if current is not None and current.enabled else None


def publish() -> None:
    labels = _labels()
    if labels is None:
        return
    # Counted and set in one step: threads publishing at once would otherwise set the gauges
    # in any order, the last write being an earlier count.
    with _lock:
        owners = [wrapper._thread_ident for wrapper in _open if wrapper.connection is not None]
        in_use = sum(1 for owner in owners if owner in _serving)
        metrics.DB_CONNECT_ERRORS.labels(*labels)  # 0 from the first connection on
        metrics.DB_POOL_CONNECTIONS.labels(*labels, "in_use").set(in_use)
        metrics.DB_POOL_CONNECTIONS.labels(*labels, "idle").set(len(owners) - in_use)


class CountedConnections:
    """Mixed into a backend's ``DatabaseWrapper``: counts opening, failing and closing."""

    connection: Any
    _thread_ident: int

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        try:
            connection = super().get_new_connection(conn_params)  # type: ignore[misc]
        except Exception:
            labels = _labels()
            if labels is not None:
                metrics.DB_CONNECT_ERRORS.labels(*labels).inc()
            raise
        with _lock:
            _open.add(self)
        return connection

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        publish()  # after Django has set self.connection

    def close(self) -> None:
        try:
            super().close()  # type: ignore[misc]
        finally:
            publish()


def _started(**_kwargs: Any) -> None:
    with _lock:
        _serving.add(threading.get_ident())
    publish()


def _finished(**_kwargs: Any) -> None:
    # After Django's own receiver, connected first, closed what is too old or broken.
    with _lock:
        _serving.discard(threading.get_ident())
    publish()


request_started.connect(_started, dispatch_uid="service_kit.djangodb.started")
request_finished.connect(_finished, dispatch_uid="service_kit.djangodb.finished")
