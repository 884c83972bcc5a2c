"""What every pod worker shares: the node (engine, network, store, folders) and the watch of
the engine's events that reports each container's exit.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyframe_release.engine import Engine, EngineError
from polyframe_release.podspec import GIVE_UP_RESTARTS, RUN_LABEL
from polyframe_release.store import Store

#: How often the engine's exited containers are compared with the deaths its events reported.
RECONCILE_SECONDS = 15.0

_PRCTL: Callable[..., int] | None
try:  # resolved here, so that the child after fork only calls it (no import, no lock)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _PRCTL = None


def _die_with_parent() -> None:
    """In a child process: receive SIGTERM when the runner dies (Linux PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGTERM))


class DeathWatch:
    """Exit codes of the run's containers, from the engine's event stream.

    The stream is restarted if it ends, and every RECONCILE_SECONDS (and after each restart)
    the engine's list of exited containers fills in any death the stream did not report.
    """

    def __init__(self, engine: Engine, run_id: str) -> None:
        self.engine = engine
        self.run_id = run_id
        self.exits: dict[str, int] = {}
        self.changed = threading.Condition()
        self.process: subprocess.Popen[str] | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="engine events", daemon=True)
        self.reconciler = threading.Thread(
            target=self._reconcile_loop, name="engine exits", daemon=True
        )

    def start(self) -> None:
        self.thread.start()
        self.reconciler.start()

    def stop(self) -> None:
        self.stopping.set()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self.thread.join(10)
        self.reconciler.join(10)

    def _watch(self) -> None:
        while not self.stopping.is_set():
            process = subprocess.Popen(
                [
                    self.engine.name,
                    "events",
                    "--format",
                    "json",
                    "--filter",
                    f"label={RUN_LABEL}={self.run_id}",
                    "--filter",
                    "event=died",
                ],
                env=self.engine.environ(),
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                preexec_fn=_die_with_parent,
            )
            self.process = process
            assert process.stdout is not None
            with process.stdout:
                self.reconcile()  # what died before the stream began
                for line in process.stdout:
                    self._event(line)
            process.wait()
            self.stopping.wait(1.0)

    def _event(self, line: str) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        name = event.get("Name") or event.get("Actor", {}).get("Attributes", {}).get("name")
        code = event.get("ContainerExitCode")
        if name:
            # podman leaves ContainerExitCode out of the event when it is 0.
            self._record(str(name), int(code) if code is not None else 0)

    def _record(self, name: str, code: int) -> None:
        with self.changed:
            self.exits.setdefault(name, code)
            self.changed.notify_all()

    def reconcile(self) -> None:
        """The engine's exited containers of this run, recorded if the stream missed them."""
        done = self.engine.run(
            "ps", "--all", "--filter", f"label={RUN_LABEL}={self.run_id}",
            "--filter", "status=exited", "--format", "{{.Names}} {{.ExitCode}}",
            check=False, timeout=60,
        )  # fmt: skip
        for line in done.stdout.splitlines():
            name, _, code = line.strip().rpartition(" ")
            if name and code.lstrip("-").isdigit():
                self._record(name, int(code))

    def _reconcile_loop(self) -> None:
        while not self.stopping.wait(RECONCILE_SECONDS):
            with contextlib.suppress(EngineError):
                self.reconcile()

    def exit_code(self, container: str) -> int | None:
        with self.changed:
            return self.exits.get(container)

    def forget(self, container: str) -> None:
        with self.changed:
            self.exits.pop(container, None)


@dataclass
class Node:
    """What every pod worker shares: the engine, the network, the store and the folders."""

    engine: Engine
    run_id: str
    network: str
    namespace: str
    store: Store
    #: This run's own folder (pods' volumes, claims, logs): a new install starts empty.
    run_dir: Path
    #: The image of the pods' infrastructure containers (anything with ``sleep``).
    pause_image: str
    deaths: DeathWatch
    #: Extra environment every container gets (the Kubernetes API's address, as a cluster does).
    cluster_env: dict[str, str] = field(default_factory=dict)
    log: Callable[[str], None] = print
    images_checked: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ServiceAccount -> its token on the runner's API (what the kubelet would mount).
    service_account_tokens: dict[str, str] = field(default_factory=dict)
    #: The CA of the runner's API (ca.crt of a mounted ServiceAccount token).
    api_ca: Path | None = None
    #: Restarts after which a crash-looping container gives up the run (PodWorker.hopeless).
    give_up_restarts: int = GIVE_UP_RESTARTS

    def container_name(self, *parts: str) -> str:
        return "-".join(("pfr", self.run_id, *parts))

    def image_config(self, image: str) -> dict[str, Any] | None:
        """The image's config (user, entry point), or None when it is not in local storage."""
        if image not in self.images_checked:
            if not self.engine.image_exists(image):
                return None
            self.images_checked[image] = dict(self.engine.image_inspect(image).get("Config") or {})
        return self.images_checked[image]
