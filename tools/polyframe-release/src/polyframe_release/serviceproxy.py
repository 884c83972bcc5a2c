"""A Service's virtual IP, as kube-proxy gives it: ``python3 serviceproxy.py ENDPOINTS_FILE``
sends each connection to one of the ready endpoints that file names, picked at random.
Design and the file's format: docs/architecture.md, "The release runner's network".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
from typing import Any


class Endpoints:
    """The endpoints file, re-read when it changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.stamp: tuple[int, int] | None = None
        self.targets: dict[int, list[tuple[str, int]]] = {}
        self.ports: list[int] = []
        self.refresh()

    def refresh(self) -> None:
        try:
            stat = os.stat(self.path)  # noqa: PTH116 (stays importable by any Python)
        except OSError:
            return
        stamp = (stat.st_ino, stat.st_mtime_ns)
        if stamp == self.stamp:
            return
        try:
            with open(self.path, encoding="utf-8") as handle:  # noqa: PTH123
                document: dict[str, Any] = json.load(handle)
        except (OSError, ValueError):
            return
        self.stamp = stamp
        targets: dict[int, list[tuple[str, int]]] = {}
        for entry in document.get("ports", []):
            parsed = []
            for target in entry.get("targets", []):
                host, _, port = str(target).rpartition(":")
                parsed.append((host, int(port)))
            targets[int(entry["port"])] = parsed
        self.targets = targets
        if not self.ports:
            self.ports = sorted(targets)

    def pick(self, port: int) -> tuple[str, int] | None:
        self.refresh()
        choices = self.targets.get(port) or []
        return random.choice(choices) if choices else None


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


#: The connections being served: asyncio holds a handler's task only weakly once its client
#: half-closes, and a task nothing refers to may be collected mid-answer.
_HANDLERS: set[asyncio.Task[Any]] = set()


async def _serve(endpoints: Endpoints, port: int) -> asyncio.AbstractServer:
    async def handle(
        client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            _HANDLERS.add(task)
            task.add_done_callback(_HANDLERS.discard)
        target = endpoints.pick(port)
        if target is None:
            client_writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(*target), timeout=10
            )
        except (TimeoutError, OSError):
            client_writer.close()
            return
        await asyncio.gather(
            _pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer)
        )
        for writer in (client_writer, upstream_writer):
            writer.close()

    return await asyncio.start_server(handle, host="0.0.0.0", port=port, reuse_address=True)  # noqa: S104


#: How often the endpoints file is looked at for ports to open or close.
FOLLOW_SECONDS = 0.2


async def follow(endpoints: Endpoints, stop: asyncio.Event) -> None:
    """Listen on each port exactly while it has an endpoint, until ``stop``."""
    servers: dict[int, asyncio.AbstractServer] = {}
    try:
        while not stop.is_set():
            endpoints.refresh()
            for port in endpoints.ports:
                ready = bool(endpoints.targets.get(port))
                if ready and port not in servers:
                    servers[port] = await _serve(endpoints, port)
                elif not ready and port in servers:
                    servers.pop(port).close()  # new connections refused, open ones go on
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FOLLOW_SECONDS)
    finally:
        for server in servers.values():
            server.close()


async def main(path: str) -> None:
    endpoints = Endpoints(path)
    if not endpoints.ports:
        sys.exit(f"{path}: no ports to serve")
    print(f"serving ports {endpoints.ports} from {path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await follow(endpoints, stop)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
