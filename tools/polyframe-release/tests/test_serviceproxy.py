"""A Service's proxy (polyframe_release.serviceproxy), over real TCP on this machine: backends
are small servers on 127.0.0.1 that greet with their name and echo lines; the endpoints file is
rewritten as the runner rewrites it."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from polyframe_release import serviceproxy
from polyframe_release.network import write_atomically
from polyframe_testing.ports import free_port

TIMEOUT = 5.0


class Backend:
    """A server on 127.0.0.1 that says its name, then echoes each line prefixed with it, and
    closes after echoing ``bye`` (the server closes first, as an HTTP server with
    ``Connection: close`` does)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.server: asyncio.AbstractServer | None = None
        self.port = 0

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(f"{self.name}\n".encode())
        await writer.drain()
        while line := await reader.readline():
            writer.write(f"{self.name}:{line.decode()}".encode())
            await writer.drain()
            if line == b"bye\n":
                break
        writer.close()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()


def write_endpoints(path: Path, port: int, *targets: str) -> None:
    document = {
        "service": "web",
        "ports": [{"name": "http", "port": port, "targets": list(targets)}],
    }
    write_atomically(path, json.dumps(document))


async def greeting(port: int) -> str:
    """Connect through the proxy: the backend's name (empty when the proxy closed at once)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        name = (await asyncio.wait_for(reader.readline(), TIMEOUT)).decode().strip()
        if name:
            writer.write(b"bye\n")
            assert await asyncio.wait_for(reader.read(), TIMEOUT) == f"{name}:bye\n".encode()
        return name
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def settle(*keep: asyncio.Task[object]) -> None:
    """Wait until the proxy's and the backends' connection handlers have all ended (a closed
    client's connection takes a few turns of the loop to be closed through)."""
    current = asyncio.current_task()
    async with asyncio.timeout(TIMEOUT):
        while others := {t for t in asyncio.all_tasks() if t is not current and t not in keep}:
            await asyncio.wait(others)


@pytest.fixture
async def backends() -> AsyncIterator[dict[str, Backend]]:
    started = {name: await Backend(name).start() for name in ("a", "b", "c")}
    yield started
    await settle()
    for backend in started.values():
        await backend.stop()


@pytest.fixture
async def proxy(tmp_path: Path) -> AsyncIterator[tuple[Path, int, serviceproxy.Endpoints]]:
    """The proxy's endpoints file, its port and its Endpoints; served by ``_serve``."""
    path = tmp_path / "endpoints.json"
    port = free_port("0.0.0.0")
    write_endpoints(path, port)
    endpoints = serviceproxy.Endpoints(str(path))
    server = await serviceproxy._serve(endpoints, port)
    yield path, port, endpoints
    await settle()
    server.close()
    await server.wait_closed()


def test_endpoints_reads_the_file_and_refreshes_on_change(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    write_endpoints(path, 8000, "10.89.3.4:8000")
    endpoints = serviceproxy.Endpoints(str(path))

    assert endpoints.ports == [8000]
    assert endpoints.pick(8000) == ("10.89.3.4", 8000)
    assert endpoints.pick(9000) is None

    write_endpoints(path, 8000)
    assert endpoints.pick(8000) is None
    path.write_text("{ half written")  # never seen with write_atomically; kept the last good
    assert endpoints.pick(8000) is None
    assert endpoints.ports == [8000]


def test_endpoints_of_a_missing_file_serve_nothing(tmp_path: Path) -> None:
    endpoints = serviceproxy.Endpoints(str(tmp_path / "absent.json"))

    assert endpoints.ports == []
    assert endpoints.pick(8000) is None


async def test_connections_spread_over_the_ready_endpoints(
    backends: dict[str, Backend], proxy: tuple[Path, int, serviceproxy.Endpoints]
) -> None:
    path, port, _ = proxy
    write_endpoints(path, port, backends["a"].target, backends["b"].target)

    seen = [await greeting(port) for _ in range(40)]

    assert set(seen) == {"a", "b"}  # random per connection: both, at 1 - 2**-39


async def test_a_new_endpoints_file_moves_new_connections_and_keeps_open_ones(
    backends: dict[str, Backend], proxy: tuple[Path, int, serviceproxy.Endpoints]
) -> None:
    path, port, _ = proxy
    write_endpoints(path, port, backends["a"].target, backends["b"].target)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    first = (await asyncio.wait_for(reader.readline(), TIMEOUT)).decode().strip()
    assert first in {"a", "b"}

    write_endpoints(path, port, backends["c"].target)
    seen = {await greeting(port) for _ in range(10)}

    assert seen == {"c"}
    writer.write(b"still there?\nbye\n")  # conntrack leaves an open connection alone
    assert await asyncio.wait_for(reader.read(), TIMEOUT) == (
        f"{first}:still there?\n{first}:bye\n".encode()
    )
    writer.close()
    await writer.wait_closed()


async def test_a_connection_racing_the_last_endpoints_removal_is_closed_at_once(
    backends: dict[str, Backend], proxy: tuple[Path, int, serviceproxy.Endpoints]
) -> None:
    path, port, _ = proxy  # _serve listens whatever the file says (follow decides that)

    assert await greeting(port) == ""

    write_endpoints(path, port, backends["a"].target)
    assert await greeting(port) == "a"


async def _refused(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def test_follow_listens_only_while_a_port_has_an_endpoint(
    backends: dict[str, Backend], tmp_path: Path
) -> None:
    """As kube-proxy's REJECT: no endpoint, no handshake (a client waiting for its database
    by connecting keeps waiting); an open connection outlives its endpoint's removal."""
    path = tmp_path / "endpoints.json"
    port = free_port("0.0.0.0")
    write_endpoints(path, port)
    stop = asyncio.Event()
    task = asyncio.create_task(serviceproxy.follow(serviceproxy.Endpoints(str(path)), stop))
    try:
        await asyncio.sleep(3 * serviceproxy.FOLLOW_SECONDS)
        assert await _refused(port)

        write_endpoints(path, port, backends["a"].target)
        for _ in range(50):
            if not await _refused(port):
                break
            await asyncio.sleep(serviceproxy.FOLLOW_SECONDS)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await asyncio.wait_for(reader.readline(), TIMEOUT)) == b"a\n"

        write_endpoints(path, port)
        for _ in range(50):
            if await _refused(port):
                break
            await asyncio.sleep(serviceproxy.FOLLOW_SECONDS)
        assert await _refused(port)
        writer.write(b"still here\n")  # the open connection goes on
        assert (await asyncio.wait_for(reader.readline(), TIMEOUT)) == b"a:still here\n"
        writer.write(b"bye\n")
        await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
    finally:
        stop.set()
        await asyncio.wait_for(task, TIMEOUT)


async def test_an_unreachable_endpoint_closes_the_connection(
    proxy: tuple[Path, int, serviceproxy.Endpoints],
) -> None:
    path, port, _ = proxy
    write_endpoints(path, port, f"127.0.0.1:{free_port('0.0.0.0')}")  # nothing listens there

    assert await greeting(port) == ""


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT / 0.01)):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"not true within {TIMEOUT:g} s")


async def test_main_serves_the_files_ports_until_sigterm(
    backends: dict[str, Backend], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "endpoints.json"
    port = free_port("0.0.0.0")
    write_endpoints(path, port, backends["b"].target)
    before = signal.getsignal(signal.SIGTERM)
    printed: list[str] = []

    def serving() -> bool:
        printed.append(capsys.readouterr().out)
        return "serving ports" in "".join(printed)

    task = asyncio.create_task(serviceproxy.main(str(path)))
    await _until(serving)
    # main's loop handler for SIGTERM is in place (installed right after it printed)
    assert signal.getsignal(signal.SIGTERM) is not before
    assert f"serving ports [{port}] from {path}" in "".join(printed)
    for _ in range(50):  # it listens once it has read the endpoints
        if not await _refused(port):
            break
        await asyncio.sleep(serviceproxy.FOLLOW_SECONDS)
    assert await greeting(port) == "b"
    await settle(task)

    signal.raise_signal(signal.SIGTERM)
    await asyncio.wait_for(task, TIMEOUT)

    with pytest.raises(ConnectionRefusedError):
        await greeting(port)


async def test_main_refuses_a_file_without_ports(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.json"
    write_atomically(path, json.dumps({"ports": []}))

    with pytest.raises(SystemExit, match="no ports to serve"):
        await serviceproxy.main(str(path))


class Replier:
    """A server that reads a request to its end (the client's EOF), then answers it."""

    def __init__(self) -> None:
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.read()
        await asyncio.sleep(0.05)
        writer.write(b"answer to " + request)
        await writer.drain()
        writer.close()


# the destroyed handler's StreamWriter and transports warn that they were never closed
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_half_closed_client_gets_its_answer(
    proxy: tuple[Path, int, serviceproxy.Endpoints],
) -> None:
    path, port, _ = proxy
    replier = Replier()
    write_endpoints(path, port, await replier.start())
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    writer.write_eof()  # as `nc -N` or a client that shuts its side down after a request does
    await asyncio.sleep(0.02)  # the proxy has seen the EOF and passed it on
    gc.collect()

    try:
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b"answer to ping"
    finally:
        writer.close()
        assert replier.server is not None
        replier.server.close()
