"""A small process supervisor: run setup commands, start servers, stream their logs, stop them.

Every child runs in its own session (process group), so a Ctrl-C in the
terminal reaches only this supervisor, which then stops the children in an
orderly way: SIGTERM to each server's group, a grace period for the servers to
drain, then the same for the ingress, SIGKILL to what is left. No child outlives
``make up``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import TextIO

import httpx

_COLOURS = (36, 33, 35, 32, 34, 31)


class StartupError(RuntimeError):
    """A command failed or a server did not become ready; the message says what to do."""


class Interrupted(Exception):  # noqa: N818 - a signal, not an error
    """Ctrl-C or SIGTERM arrived while starting up."""


@dataclass(eq=False)
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    argv: list[str]
    env: Mapping[str, str]
    started_at: float = field(default_factory=time.monotonic)
    #: Restarts in a row that died young (see ``Supervisor.restart``).
    crashes: int = 0
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    reader: threading.Thread | None = None
    #: Run before each start, restarts included (e.g. empty the metrics folder).
    before: Callable[[], None] | None = None


class Supervisor:
    def __init__(
        self,
        out: TextIO | None = None,
        colour: bool | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        self.out = out or sys.stdout
        #: Set by the signal handler; every wait below gives up as soon as it is set.
        self.stop = stop or threading.Event()
        self.colour = self.out.isatty() if colour is None else colour
        self.children: list[Child] = []
        self._lock = threading.RLock()
        self._width = 14
        self._colour_of: dict[str, int] = {}

    # -- output ---------------------------------------------------------------------------

    def say(self, name: str, line: str) -> None:
        label = name.ljust(self._width)
        if self.colour:
            code = self._colour_of.setdefault(name, _COLOURS[len(self._colour_of) % len(_COLOURS)])
            label = f"\033[{code}m{label}\033[0m"
        with self._lock:
            self.out.write(f"{label} | {line}\n")
            self.out.flush()

    def _pump(self, child: Child) -> None:
        assert child.popen.stdout is not None
        with child.popen.stdout as stream:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                child.tail.append(line)
                self.say(child.name, line)

    # -- processes ------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str]) -> Child:
        try:
            popen = subprocess.Popen(
                argv,
                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise StartupError(f"{name}: cannot start {argv[0]!r}: {exc.strerror}") from exc
        child = Child(name, popen, argv, env)
        child.reader = threading.Thread(target=self._pump, args=(child,), daemon=True)
        child.reader.start()
        return child

    def run(self, name: str, argv: list[str], env: Mapping[str, str], timeout: float = 300) -> None:
        """Run a setup command to completion; raise if it fails."""
        child = self._spawn(name, argv, env)
        deadline = time.monotonic() + timeout
        while (code := child.popen.poll()) is None:
            if self.stop.is_set() or time.monotonic() > deadline:
                self._signal(child, signal.SIGTERM)
                try:
                    child.popen.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._signal(child, signal.SIGKILL)
                    child.popen.wait()
                if self.stop.is_set():
                    raise Interrupted
                raise StartupError(f"{name}: {' '.join(argv[2:])} took over {timeout:g}s")
            time.sleep(0.05)
        if child.reader:
            child.reader.join(timeout=5)
        if code != 0:
            raise StartupError(
                f"{name}: {' '.join(argv[2:])} failed with exit code {code}; its output is above"
            )

    def start(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        before: Callable[[], None] | None = None,
    ) -> Child:
        if before is not None:
            before()
        child = self._spawn(name, argv, env)
        child.before = before
        self.children.append(child)
        return child

    def wait_until(
        self,
        child: Child,
        url: str,
        *,
        ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
        timeout: float = 60,
    ) -> float:
        """Poll ``url`` until ``ok``; return the seconds since the child was spawned."""
        return self.wait_all({child: url}, ok=ok, timeout=timeout)[child.name]

    def wait_all(
        self,
        urls: Mapping[Child, str],
        *,
        ok: Callable[[httpx.Response], bool] = lambda r: r.status_code == 200,
        timeout: float = 60,
    ) -> dict[str, float]:
        """Poll every child's URL in turn until each answers ``ok``.

        Returns, per child, the seconds from its spawn to its first good answer
        (its cold start). Fails fast if a child dies, and gives up on Ctrl-C.
        """
        pending = dict(urls)
        ready: dict[str, float] = {}
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2) as client:
            while pending:
                if self.stop.is_set():
                    raise Interrupted
                if time.monotonic() > deadline:
                    names = ", ".join(f"{c.name} at {u}" for c, u in pending.items())
                    raise StartupError(f"not ready after {timeout:g}s: {names}")
                for child, url in list(pending.items()):
                    code = child.popen.poll()
                    if code is not None:
                        raise StartupError(
                            f"{child.name} exited with code {code} before it was ready; "
                            "its last lines are above"
                        )
                    with contextlib.suppress(httpx.TransportError):
                        if ok(client.get(url)):
                            ready[child.name] = time.monotonic() - child.started_at
                            del pending[child]
                time.sleep(0.02)
        return ready

    def restart(self, child: Child, *, max_crashes: int = 5, stable_after: float = 30) -> Child:
        """Start a server that exited again, like a cluster restarts a crashed container.

        Waits 0.5, 1, 2, 4 … s between crashes in a row; a process that ran for
        ``stable_after`` seconds resets the count. Gives up after ``max_crashes``.
        """
        crashes = 0 if time.monotonic() - child.started_at >= stable_after else child.crashes + 1
        if crashes >= max_crashes:
            raise StartupError(f"{child.name} keeps crashing ({crashes} times in a row); giving up")
        delay = 0.5 * 2 ** max(0, crashes - 1) if crashes else 0.0
        if self.stop.wait(delay):
            raise Interrupted
        self.say("polyframe", f"restarting {child.name} (exit code {child.popen.returncode})")
        if child.before is not None:
            child.before()
        replacement = self._spawn(child.name, child.argv, child.env)
        replacement.before = child.before
        replacement.crashes = crashes
        self.children[self.children.index(child)] = replacement
        return replacement

    def first_exited(self) -> Child | None:
        return next((c for c in self.children if c.popen.poll() is not None), None)

    @staticmethod
    def _signal(child: Child, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.popen.pid, sig)

    def stop_all(self, grace: float = 20, last: Collection[str] = ()) -> None:
        """SIGTERM every child's process group, wait for them, SIGKILL the rest.

        The children named in ``last`` (the ingress) are stopped only once the others
        have exited: requests the servers are finishing still have a way back to their
        clients, as in a cluster where the ingress outlives a server's rollout.
        """
        deadline = time.monotonic() + grace
        first = [c for c in self.children if c.name not in last]
        then = [c for c in self.children if c.name in last]
        for wave in (first, then):
            running = [c for c in wave if c.popen.poll() is None]
            for child in running:
                self._signal(child, signal.SIGTERM)
            for child in running:
                try:
                    # The ingress gets a few seconds of its own even when the servers used
                    # up the grace period.
                    left = max(0.0, deadline - time.monotonic())
                    child.popen.wait(timeout=left if wave is first else max(left, 5.0))
                except subprocess.TimeoutExpired:
                    self.say("polyframe", f"{child.name} did not stop in time: killing it")
                    self._signal(child, signal.SIGKILL)
                    child.popen.wait()
        # Workers left behind by a crashed master are still in the child's group.
        for child in self.children:
            self._signal(child, signal.SIGKILL)
            if child.reader:
                child.reader.join(timeout=2)
