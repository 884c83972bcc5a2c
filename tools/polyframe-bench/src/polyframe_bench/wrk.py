"""One load run: Debian's ``wrk`` against one URL, bounded in time, parsed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "wrk is not installed: apt-get install wrk (Debian/Ubuntu), then run make bench again"
)

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_LATENCY = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_REQUESTS = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")


class WrkMissingError(RuntimeError):
    pass


def binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissingError(INSTALL_HINT)
    return found


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def parse(output: str) -> LoadResult:
    done = _REQUESTS.search(output)
    if done is None:
        raise ValueError(f"wrk printed no request count:\n{output}")
    latency = {p: float(v) * _UNITS[u] for p, v, u in _LATENCY.findall(output)}
    if set(latency) != {"50", "75", "90", "99"}:
        raise ValueError(f"wrk printed no latency distribution (--latency):\n{output}")
    non_2xx = _NON_2XX.search(output)
    sockets = _SOCKET.search(output)
    return LoadResult(
        requests=int(done.group(1)),
        seconds=float(done.group(2)) * _UNITS[done.group(3)] / 1000,
        p50_ms=latency["50"],
        p75_ms=latency["75"],
        p90_ms=latency["90"],
        p99_ms=latency["99"],
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in sockets.groups()) if sockets else 0,
    )


def run(
    url: str,
    *,
    seconds: float,
    connections: int,
    script: Path | None,
    env: Mapping[str, str] | None = None,
    threads: int = 2,
) -> LoadResult:
    """``wrk --latency`` for ``seconds`` (whole seconds, at least 1) against ``url``.

    ``env`` reaches the Lua ``script`` (``os.getenv``).
    """
    if not url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load only 127.0.0.1, not {url}")
    argv = [
        binary(),
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "--latency",
        *(("-s", str(script)) if script else ()),
        url,
    ]
    completed = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        env={**os.environ, **(env or {})},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse(completed.stdout)
