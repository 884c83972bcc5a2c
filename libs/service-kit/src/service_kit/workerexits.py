"""How a gunicorn worker left, as its master sees it: the ``child_exit`` hook, the exit's
reason (``polyframe_worker_exits_total``) and the heartbeat file that carries it.

Master-side bookkeeping, apart from the worker itself (:mod:`service_kit.gunicorn`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

from service_kit import exposition, metrics


def child_exit(_server: Any, worker: Any) -> None:
    """Master side: a worker is gone; its live gauges (busy threads, memory) go with it."""
    path = exposition.multiprocess_dir()
    if path:
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(worker.pid, path)  # type: ignore[no-untyped-call]


def exit_reason(worker: Any) -> str:
    """Why a worker the master has reaped is gone: ``timeout``, ``restart`` or ``crash``.

    gunicorn gives ``child_exit`` the worker, not its exit status. ``timeout``: the master
    itself aborted it (``worker.aborted``: its main loop had not notified for ``timeout``
    seconds). ``restart``: it left its run loop on its own terms (a SIGTERM/SIGQUIT of the
    master on reload, scale-down or stop; ``max_requests``), which the kit's worker
    (:class:`service_kit.gunicorn.ThreadWorker`) writes into its heartbeat file
    (:class:`ExitNotingTmp`) on the way out. ``crash``: anything else (killed by a signal,
    e.g. the OOM killer's SIGKILL; an exception; an ``os._exit``): it could not say.
    """
    if getattr(worker, "aborted", False):
        return "timeout"
    tmp = getattr(worker, "tmp", None)
    if isinstance(tmp, ExitNotingTmp) and tmp.left_cleanly:
        return "restart"
    return "crash"


def counting_child_exit(service: str, framework: str) -> Callable[[Any, Any], None]:
    """``child_exit``: :func:`child_exit`, and the exit counted by its reason (master side:
    only the master sees a worker die; its samples reach ``/metrics`` through the
    multiprocess folder, like the workers')."""

    def count_and_clean_up(server: Any, worker: Any) -> None:
        metrics.WORKER_EXITS.labels(service, framework, exit_reason(worker)).inc()
        child_exit(server, worker)

    return count_and_clean_up


class ExitNotingTmp:
    """gunicorn's heartbeat file of one worker (``worker.tmp``), also telling the master
    whether the worker left cleanly.

    The file is made by the master before the fork and shared with the worker: the worker
    writes a mark into it as it leaves its run loop; the master reads the mark as it closes
    the file after reaping the worker, just before ``child_exit`` (:func:`exit_reason`).
    A worker killed by a signal never writes it.
    """

    _MARK = b"clean"

    def __init__(self, tmp: Any) -> None:
        self._tmp = tmp
        #: Read by the master when it closes the file (None until then).
        self.left_cleanly: bool | None = None

    def notify(self) -> None:
        self._tmp.notify()

    def last_update(self) -> float:
        return float(self._tmp.last_update())

    def fileno(self) -> int:
        return int(self._tmp.fileno())

    def mark_clean_exit(self) -> None:
        """Worker side, leaving on its own terms."""
        with contextlib.suppress(OSError, ValueError):
            os.pwrite(self.fileno(), self._MARK, 0)

    def close(self) -> None:
        if self.left_cleanly is None:
            with contextlib.suppress(OSError, ValueError):  # closed already
                self.left_cleanly = os.pread(self.fileno(), len(self._MARK), 0) == self._MARK
        self._tmp.close()
