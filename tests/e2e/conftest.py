"""End-to-end fixtures: the real platform, driven through its ingress only.

Two modes:

* ``E2E_BASE_URL`` set: the platform already runs somewhere (a cluster); the
  suite starts nothing and every test registers its own account.
* otherwise: the suite starts the local platform exactly as ``make up`` does
  (``polyframe-dev up``) on free ports and a throw-away data folder, waits for
  its ready file, and at the end stops it with SIGINT and checks that it
  exited cleanly and left no process behind.

Test modules cannot import this file (``--import-mode=importlib``), so the
shared helpers are handed out as fixtures.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from polyframe_testing.peers import as_service
from polyframe_testing.problems import check_problem
from service_kit.credentials import basic_credential

REPO_ROOT = Path(__file__).resolve().parents[2]
USERS = "/api/users"
#: Seconds a local platform may take to be ready; E2E_READY_TIMEOUT raises it on a loaded
#: machine (a CI runner starts one in 20-40 s).
READY_TIMEOUT = float(os.environ.get("E2E_READY_TIMEOUT", "90"))
STOP_TIMEOUT = 30.0
LOG_TAIL_LINES = 60

#: Local platforms running right now: a failing test shows the end of their logs.
_PLATFORMS_KEY = pytest.StashKey[list["LocalPlatform"]]()
#: Measurements reported at the end of the run (never asserted): name -> lines.
_MEASUREMENTS_KEY = pytest.StashKey[dict[str, str]]()


# -- processes ------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name, or None if unreadable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return text.rsplit(") ", 1)[1].split()


def _start_time(pid: int) -> str | None:
    """Kernel start time of ``pid`` (field 22), to tell a process from a reused pid."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def is_alive(pid: int, start_time: str | None = None) -> bool:
    """True if ``pid`` runs (a zombie is dead) and, if given, is the same process as before."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: /proc still tells whether it is the same one
    fields = _proc_stat(pid)
    if fields is None:
        return not Path("/proc").is_dir()  # no procfs: kill(0) is all we know
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or fields[19] == start_time


def _processes_mentioning(needle: str) -> list[tuple[int, str]]:
    """Processes whose command line or environment mentions ``needle`` (Linux; else [])."""
    found: list[tuple[int, str]] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        # The folder itself or a path below it, not a sibling that shares its name as prefix.
        if any(
            f"{needle}{end}".encode() in blob for end in ("/", "\0") for blob in (cmdline, environ)
        ):
            pid = int(entry.name)
            if is_alive(pid):
                found.append((pid, cmdline.replace(b"\0", b" ").decode(errors="replace")))
    return found


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class LocalPlatform:
    """One ``polyframe-dev up`` process of this test run, started like ``make up``."""

    folder: Path
    port: int = 0
    #: Defaults to ``folder/data``; two runs may share one to test what a restart keeps.
    data_dir: Path | None = None
    #: More ``polyframe-dev up`` options (``--drills``, ``--workers 2`` …).
    options: tuple[str, ...] = ()
    ready_file: Path = field(init=False)
    log_file: Path = field(init=False)
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)
    #: The ready file as first written; ``read_ready()`` has the current pids.
    ready: dict[str, Any] | None = field(default=None, init=False)
    #: Every server pid the ready file ever named (restarts add some), with its start time.
    start_times: dict[int, str | None] = field(default_factory=dict, init=False)
    names: dict[int, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.data_dir is None:
            self.data_dir = self.folder / "data"
        self.ready_file = self.folder / "ready.json"
        self.log_file = self.folder / "polyframe-dev.log"

    @property
    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "polyframe_dev.cli",
            "up",
            "--port",
            str(self.port),
            "--free-ports",
            "--data-dir",
            str(self.data_dir),
            "--ready-file",
            str(self.ready_file),
            "--no-color",
            *self.options,
        ]

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        return _tail(self.log_file, lines)

    def log(self) -> str:
        return self.log_file.read_text(encoding="utf-8", errors="replace")

    def start(self) -> None:
        assert self.popen is None, "already started"
        self.ready_file.unlink(missing_ok=True)
        env = dict(os.environ)
        # The ingress must listen on 127.0.0.1 whatever the developer's shell says.
        env.pop("POLYFRAME_HOST", None)
        env["POLYFRAME_ROOT"] = str(REPO_ROOT)
        env["PYTHONUNBUFFERED"] = "1"
        with self.log_file.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> dict[str, Any]:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.popen.poll()
            if code is not None:
                pytest.fail(
                    f"polyframe-dev up exited with code {code} before it was ready; "
                    f"log tail:\n{self.log_tail()}",
                    pytrace=False,
                )
            if self.ready_file.exists():
                # Written atomically (temporary file + rename): complete once it exists.
                self.ready = self.read_ready()
                return self.ready
            time.sleep(0.1)
        pytest.fail(
            f"polyframe-dev up was not ready after {timeout:g}s; log tail:\n{self.log_tail()}",
            pytrace=False,
        )

    def read_ready(self) -> dict[str, Any]:
        """The ready file now (``up`` rewrites it when it restarts a server); notes new pids."""
        # Written atomically (temporary file + rename): complete once it exists.
        ready: dict[str, Any] = json.loads(self.ready_file.read_text())
        for name, pid in ready["pids"].items():
            if pid not in self.start_times:
                self.start_times[pid] = _start_time(pid)
                self.names[pid] = name
        return ready

    def running(self, pid: int) -> bool:
        """True while ``pid``, a server this platform started, runs (a zombie does not)."""
        return is_alive(pid, self.start_times.get(pid))

    def service_pid(self, name: str) -> int:
        """The running pid of server ``name``, checked to be this platform's own process.

        Each server leads its own process group (and session), so signalling the
        group reaches the server and its workers and nothing else.
        """
        pid = int(self.read_ready()["pids"][name])
        assert self.running(pid), f"{name} (pid {pid}) is not running"
        assert os.getpgid(pid) == pid, f"{name} (pid {pid}) does not lead its process group"
        assert pid in {p for p, _ in _processes_mentioning(str(self.data_dir))}, (
            f"pid {pid} does not belong to the platform in {self.data_dir}"
        )
        return pid

    @contextlib.contextmanager
    def frozen(self, name: str) -> Iterator[int]:
        """SIGSTOP server ``name``'s process group (it hangs, like a stuck peer); SIGCONT after."""
        pid = self.service_pid(name)
        os.killpg(pid, signal.SIGSTOP)
        try:
            yield pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGCONT)

    def kill(self, name: str, timeout: float = 10) -> int:
        """SIGKILL server ``name``'s process group and wait until it is gone; return its pid."""
        pid = self.service_pid(name)
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while self.running(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not self.running(pid), f"{name} (pid {pid}) survived SIGKILL"
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 60) -> int:
        """The pid of ``name`` once the supervisor has started a new one in place of ``old_pid``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = int(self.read_ready()["pids"][name])
            if pid != old_pid:
                return pid
            time.sleep(0.1)
        pytest.fail(f"{name} was not restarted within {timeout:g}s", pytrace=False)

    def wait_service_ready(self, name: str, timeout: float = 60) -> None:
        """Poll service ``name``'s own ``/readyz`` (not through the ingress) until it is 200."""
        url = f"{self.read_ready()['services'][name]}/readyz"
        deadline = time.monotonic() + timeout
        last = "no answer"
        with httpx.Client(timeout=2) as direct:
            while time.monotonic() < deadline:
                try:
                    response = direct.get(url)
                except httpx.TransportError as exc:
                    last = repr(exc)
                else:
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}"
                time.sleep(0.2)
        pytest.fail(f"{url} not 200 within {timeout:g}s (last: {last})", pytrace=False)

    def resume_all(self) -> None:
        """SIGCONT every server group: a process a failed test left frozen cannot drain."""
        for pid in self.start_times:
            if is_alive(pid, self.start_times[pid]):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGCONT)

    def wait_exit(self, timeout: float) -> int | None:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(
        self, timeout: float = STOP_TIMEOUT, signum: int = signal.SIGINT, times: int = 1
    ) -> int:
        """Ctrl-C (or ``signum``) the process, ``times`` times in a row; return its exit code.

        Kills it if it hangs.
        """
        assert self.popen is not None
        self.resume_all()
        if self.popen.poll() is None:
            for _ in range(times):
                self.popen.send_signal(signum)
        code = self.wait_exit(timeout)
        if code is None:
            self.popen.kill()
            self.popen.wait(timeout=10)
            self._reap_orphans()
            pytest.fail(
                f"polyframe-dev up did not stop within {timeout:g}s of "
                f"{signal.Signals(signum).name} (sent {times} time(s)); "
                f"log tail:\n{self.log_tail()}",
                pytrace=False,
            )
        return code

    def orphans(self) -> list[str]:
        """Processes of this platform still running after it stopped."""
        left = []
        for pid, start_time in self.start_times.items():
            if is_alive(pid, start_time):
                left.append(f"{self.names[pid]} (pid {pid})")
        # Catches what the pids map cannot name, e.g. server workers.
        for pid, cmdline in _processes_mentioning(str(self.data_dir)):
            entry = f"pid {pid}: {cmdline[:200]}"
            if not any(f"(pid {pid})" in item for item in left):
                left.append(entry)
        return left

    def _reap_orphans(self) -> None:
        """After a failed stop: end the platform's own children, checked to be the same ones."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            self.read_ready()  # pids of servers restarted since the last look
        for pid, start_time in self.start_times.items():
            if is_alive(pid, start_time):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # each child leads its own process group

    def stop_and_check(self, signum: int = signal.SIGINT, times: int = 1) -> None:
        """Stop cleanly: exit code 0 and no process left behind."""
        with contextlib.suppress(OSError, ValueError, KeyError):
            self.read_ready()  # know the pids of restarted servers too
        code = self.stop(signum=signum, times=times)
        assert code == 0, (
            f"polyframe-dev up exited with code {code} after {signal.Signals(signum).name} "
            f"(sent {times} time(s)); "
            f"log tail:\n{self.log_tail()}"
        )
        deadline = time.monotonic() + 5
        left = self.orphans()
        while left and time.monotonic() < deadline:  # let the kernel finish reaping
            time.sleep(0.1)
            left = self.orphans()
        if left:
            self._reap_orphans()
        assert not left, (
            f"processes outlived polyframe-dev up: {left}\nlog tail:\n{self.log_tail()}"
        )

    def kill_if_running(self) -> None:
        """Last-resort cleanup for a test that failed half-way."""
        if self.popen is not None and self.popen.poll() is None:
            self.resume_all()
            self.popen.send_signal(signal.SIGINT)
            if self.wait_exit(STOP_TIMEOUT) is None:
                self.popen.kill()
                self.popen.wait(timeout=10)
            self._reap_orphans()


# -- secrets never in logs ----------------------------------------------------------------------

#: Every secret the fixtures hand out (kind -> values); the logs of each local platform are
#: searched for all of them when it stops (``_stop_local_platform``).
HANDED_OUT: dict[str, set[str]] = {}
#: Shorter values could match by chance; every real secret here is much longer.
MIN_SECRET_LENGTH = 12
#: ``polyframe-dev up`` prints the demo accounts' passwords on purpose (they exist to be typed
#: in): allowed in its own announcement lines, and nowhere else.
_ANNOUNCED = re.compile(r"^polyframe\s+\|.*password: (\S+)$")


def hand_out(kind: str, value: str) -> str:
    """Remember ``value`` as a secret of ``kind`` (for the log scan); return it."""
    if len(value) >= MIN_SECRET_LENGTH:
        HANDED_OUT.setdefault(kind, set()).add(value)
    return value


def platform_secrets(data_dir: Path) -> dict[str, set[str]]:
    """The secrets a platform generated into ``data_dir/secrets`` (kind -> values)."""
    folder = data_dir / "secrets"
    found: dict[str, set[str]] = {}

    def add(kind: str, value: str) -> None:
        if len(value) >= MIN_SECRET_LENGTH:
            found.setdefault(kind, set()).add(value)

    pem = (folder / "jwt-signing-key.pem").read_text()
    for line in pem.splitlines():
        if not line.startswith("-----"):
            add("token-signing key (a line of its PEM)", line.strip())
    for path in folder.glob("service-*.secret"):
        service, secret = path.stem.removeprefix("service-"), path.read_text().strip()
        add("service credential", secret)
        add("service credential (as a Basic header)", basic_credential(service, secret).split()[1])
    for path in folder.glob("trusted-by-*.json"):
        for secret in json.loads(path.read_text()).values():
            add("service credential", secret)
    add("Django SECRET_KEY", (folder / "admin-django-secret-key").read_text().strip())
    for name in ("demo-accounts.json", "demo-staff.json"):
        if (folder / name).exists():
            for entry in json.loads((folder / name).read_text()):
                add("demo account password", entry["password"])
    return found


def find_secrets_in_logs(secrets: dict[str, set[str]], logs: list[Path]) -> tuple[list[str], int]:
    """Where a secret appears in ``logs``: ``"<kind> in <file> line <n>"`` (never the secret
    itself), and how many lines were read."""
    demo = secrets.get("demo account password", set())
    findings: list[str] = []
    lines_read = 0
    for path in logs:
        text = path.read_text(encoding="utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), start=1):
            lines_read += 1
            announced = _ANNOUNCED.match(line)
            if announced and announced.group(1) in demo:
                line = line[: announced.start(1)]
            for kind, values in secrets.items():
                if any(value in line for value in values):
                    findings.append(f"{kind} in {path} line {number}")
    return findings, lines_read


def _secrets_and_logs(local: LocalPlatform) -> tuple[dict[str, set[str]], list[Path]]:
    """The platform's and the fixtures' secrets, and every log file of ``local``."""
    assert local.data_dir is not None
    secrets = platform_secrets(local.data_dir)
    for kind, values in HANDED_OUT.items():
        secrets.setdefault(kind, set()).update(values)
    return secrets, sorted({local.log_file, *local.folder.rglob("*.log")})


def _assert_no_secrets_in_logs(config: pytest.Config, local: LocalPlatform) -> None:
    """After a platform stopped: none of its or the fixtures' secrets is in any of its logs."""
    secrets, logs = _secrets_and_logs(local)
    findings, lines_read = find_secrets_in_logs(secrets, logs)
    # Not vacuous: the platform's own secrets were found, and its servers really logged.
    assert secrets.get("service credential"), secrets.keys()
    assert secrets.get("token-signing key (a line of its PEM)"), secrets.keys()
    log_text = local.log()
    for name in ("users-fastapi", "legacy-flask", "admin-django", "traefik"):
        assert f"\n{name} " in log_text, f"no log line of {name} in {local.log_file}"
    counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(secrets.items()))
    config.stash.setdefault(_MEASUREMENTS_KEY, {})[f"secrets in logs ({local.folder.name})"] = (
        f"searched {lines_read} lines of {len(logs)} log file(s) for {counts}: "
        f"{len(findings)} found"
    )
    assert not findings, "secrets in the logs:\n  " + "\n  ".join(findings[:50])


# -- the platform under test -----------------------------------------------------------------


@dataclass(frozen=True)
class Platform:
    base_url: str
    #: The ready file of the local platform; None when testing E2E_BASE_URL.
    ready: dict[str, Any] | None = None
    local: LocalPlatform | None = None

    @property
    def is_local(self) -> bool:
        return self.ready is not None


def _base_url_from_env() -> str | None:
    value = os.environ.get("E2E_BASE_URL", "").strip()
    return value.rstrip("/") or None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On a failure, show the end of the local platforms' logs next to the test's output."""
    report: pytest.TestReport = yield
    if report.failed:
        for local in item.config.stash.get(_PLATFORMS_KEY, []):
            report.sections.append((f"polyframe-dev log (tail) {local.folder}", local.log_tail()))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print what tests measured (reported, never asserted)."""
    measurements = config.stash.get(_MEASUREMENTS_KEY, {})
    if measurements:
        terminalreporter.section("e2e measurements")
        for name, text in measurements.items():
            terminalreporter.write_line(f"{name}: {text}")


@pytest.fixture(scope="session")
def report_measurement(pytestconfig: pytest.Config) -> Callable[[str, str], None]:
    """``report_measurement(name, text)``: shown in the terminal summary, not asserted."""

    def report(name: str, text: str) -> None:
        pytestconfig.stash.setdefault(_MEASUREMENTS_KEY, {})[name] = text

    return report


def _watch(config: pytest.Config, local: LocalPlatform) -> None:
    config.stash.setdefault(_PLATFORMS_KEY, []).append(local)


def _unwatch(config: pytest.Config, local: LocalPlatform) -> None:
    watched = config.stash.get(_PLATFORMS_KEY, [])
    if local in watched:
        watched.remove(local)


def _start_local_platform(
    config: pytest.Config, folder: Path, options: tuple[str, ...] = ()
) -> Platform:
    """Start a platform like ``make up`` and wait until it is ready (cleaned up on failure)."""
    local = LocalPlatform(folder, options=options)
    local.start()
    try:
        ready = local.wait_ready()
        ingress = ready["ingress"]
        assert ingress.startswith("http://127.0.0.1:"), f"ingress is not local: {ingress}"
    except BaseException:
        local.kill_if_running()
        raise
    _watch(config, local)
    return Platform(base_url=ingress, ready=ready, local=local)


def _stop_local_platform(config: pytest.Config, platform: Platform) -> None:
    assert platform.local is not None
    _unwatch(config, platform.local)
    platform.local.stop_and_check()
    _assert_no_secrets_in_logs(config, platform.local)


@contextlib.contextmanager
def _local_platform(
    config: pytest.Config, folder: Path, options: tuple[str, ...] = ()
) -> Iterator[Platform]:
    """A platform started like ``make up``, then stopped and checked to stop cleanly."""
    started = _start_local_platform(config, folder, options)
    try:
        yield started
    finally:
        _stop_local_platform(config, started)


@pytest.fixture(scope="session")
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """E2E_BASE_URL as is, or the local platform started like ``make up`` and stopped cleanly."""
    base_url = _base_url_from_env()
    if base_url is not None:
        yield Platform(base_url=base_url)
        return
    with _local_platform(request.config, tmp_path_factory.mktemp("platform")) as started:
        yield started


@pytest.fixture(scope="session")
def isolated_platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    """A second local platform, for tests that break parts of it (freeze or kill a server).

    Each such test leaves it whole again (a frozen server resumed, a killed one
    restarted by the supervisor), so they share it; it is stopped (and checked to stop
    cleanly) at the end of the run, and the session's ``platform`` never sees any of it.
    """
    if _base_url_from_env() is not None:
        pytest.skip("E2E_BASE_URL is set: this test stops and starts the platform's processes")
    folder = tmp_path_factory.mktemp("isolated")
    with _local_platform(request.config, folder, ("--no-prometheus",)) as started:
        yield started


@pytest.fixture(scope="session")
def platform_with(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Platform]]:
    """``platform_with(*options)``: one more local platform started with ``polyframe-dev up``
    options (``--drills``, ``--workers``, ``--otlp-endpoint`` …), stopped cleanly at the end.
    """
    if _base_url_from_env() is not None:
        pytest.skip("E2E_BASE_URL is set: this test starts a local platform of its own")
    with contextlib.ExitStack() as started:

        def start(*options: str) -> Platform:
            folder = tmp_path_factory.mktemp("platform-with")
            return started.enter_context(_local_platform(request.config, folder, options))

        yield start


@pytest.fixture(scope="session")
def local_ready(platform: Platform) -> dict[str, Any]:
    if platform.ready is None:
        pytest.skip("E2E_BASE_URL is set: only the local platform has a ready file to inspect")
    return platform.ready


@pytest.fixture
def client(platform: Platform) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=platform.base_url, timeout=15, follow_redirects=False) as c:
        yield c


@dataclass(frozen=True)
class Account:
    email: str
    password: str
    full_name: str
    user: dict[str, Any]


def random_email() -> str:
    return f"e2e-{uuid.uuid4().hex}@example.com"


def register_account(client: httpx.Client) -> Account:
    email, password, full_name = random_email(), f"pw-{uuid.uuid4().hex}", "E2E Tester"
    response = client.post(
        f"{USERS}/register", json={"email": email, "password": password, "full_name": full_name}
    )
    assert response.status_code == 201, response.text
    return Account(email, hand_out("user password", password), full_name, response.json())


def login(client: httpx.Client, email: str, password: str) -> str:
    response = client.post(f"{USERS}/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    hand_out("user password", password)
    # The signature alone: a log line holding the token, or its unique part, is a leak.
    hand_out("access token", token.rsplit(".", 1)[-1])
    return token


@pytest.fixture
def account(client: httpx.Client) -> Account:
    """A freshly registered member of its own (random e-mail)."""
    return register_account(client)


@pytest.fixture
def token(client: httpx.Client, account: Account) -> str:
    return login(client, account.email, account.password)


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """``response`` is an RFC 9457 problem with ``status``; return its body."""
    assert response.status_code == status, (response.status_code, response.text)
    content_type = response.headers.get("content-type", "")
    assert content_type.split(";")[0].strip() == "application/problem+json", content_type
    return check_problem(response.json(), status, instance=response.request.url.path)


@pytest.fixture(scope="session")
def problem() -> Callable[[httpx.Response, int], dict[str, Any]]:
    """``problem(response, status)``: assert an RFC 9457 answer and return its body."""
    return assert_problem


@pytest.fixture(scope="session")
def secret_scan() -> tuple[Callable[[Path], dict[str, set[str]]], Callable[..., Any]]:
    """``(platform_secrets, find_secrets_in_logs)``: the log scan run when a platform stops."""
    return platform_secrets, find_secrets_in_logs


@pytest.fixture(scope="session")
def secrets_in_logs() -> Callable[[LocalPlatform], tuple[list[str], list[Path]]]:
    """``secrets_in_logs(local)``: the stop-time log scan of a running platform, so far
    (where its and the fixtures' secrets appear, by kind and line), and the logs it read."""

    def scan(local: LocalPlatform) -> tuple[list[str], list[Path]]:
        secrets, logs = _secrets_and_logs(local)
        return find_secrets_in_logs(secrets, logs)[0], logs

    return scan


@pytest.fixture(scope="session")
def register() -> Callable[[httpx.Client], Account]:
    """``register(client)``: a new account with a random e-mail."""
    return register_account


@pytest.fixture(scope="session")
def new_email() -> Callable[[], str]:
    """``new_email()``: an address no other test uses."""
    return random_email


@pytest.fixture(scope="session")
def log_in() -> Callable[[httpx.Client, str, str], str]:
    """``log_in(client, email, password)``: the access token."""
    return login


def _secret_env(service: str) -> str:
    """``admin-django`` -> ``E2E_ADMIN_DJANGO_SECRET``: a service's credential in cluster mode."""
    return f"E2E_{service.upper().replace('-', '_')}_SECRET"


def _staff_env(group: str) -> str:
    """``support-acting`` -> ``E2E_STAFF_SUPPORT_ACTING`` (``username:password``)."""
    return f"E2E_STAFF_{group.upper().replace('-', '_')}"


@pytest.fixture(scope="session")
def service_headers(platform: Platform) -> Callable[..., dict[str, str]]:
    """``service_headers(name, acting_for=None, of=None)``: headers authenticating as ``name``.

    Locally the credential is the one ``make up`` generated (for the platform ``of``,
    by default the session's); against E2E_BASE_URL it
    comes from ``E2E_<NAME>_SECRET`` (the test skips, naming the variable, without it).
    """

    def headers(
        name: str, acting_for: str | None = None, *, of: Platform | None = None
    ) -> dict[str, str]:
        ready = (of or platform).ready
        if ready is not None:
            path = Path(ready["data_dir"]) / "secrets" / f"service-{name}.secret"
            secret = path.read_text().strip()
        else:
            secret = os.environ.get(_secret_env(name), "").strip()
            if not secret:
                pytest.skip(f"E2E_BASE_URL is set but {_secret_env(name)} is not")
        hand_out("service credential", secret)
        return as_service(name, secret, acting_for or None)

    return headers


@pytest.fixture(scope="session")
def staff_account(platform: Platform) -> Callable[[str], tuple[str, str]]:
    """``staff_account(group)``: (username, password) of a support staff member of ``group``.

    Locally the demo staff ``make up`` created; against E2E_BASE_URL
    ``E2E_STAFF_<GROUP>=username:password`` (the test skips, naming the variable, without it).
    """

    def account(group: str) -> tuple[str, str]:
        if platform.ready is not None:
            staff = json.loads(Path(platform.ready["demo_staff_file"]).read_text())
            found = next(entry for entry in staff if entry["group"] == group)
            return found["username"], hand_out("staff password", found["password"])
        username, _, password = os.environ.get(_staff_env(group), "").partition(":")
        if not (username and password):
            pytest.skip(f"E2E_BASE_URL is set but {_staff_env(group)} (username:password) is not")
        return username, hand_out("staff password", password)

    return account


@pytest.fixture
def start_platform(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., LocalPlatform]]:
    """Start extra local platforms (each stopped at the end of the test, whatever happens)."""
    if _base_url_from_env() is not None:
        pytest.skip("E2E_BASE_URL is set: this test starts local platforms")
    started: list[LocalPlatform] = []

    def start(name: str, *, data_dir: Path | None = None, port: int = 0) -> LocalPlatform:
        local = LocalPlatform(tmp_path / name, port=port, data_dir=data_dir)
        started.append(local)
        _watch(request.config, local)
        local.start()
        return local

    yield start
    for local in started:
        _unwatch(request.config, local)
        local.kill_if_running()
    for local in started:
        if local.ready is not None:  # it ran whole: every server logged, scan its logs too
            _assert_no_secrets_in_logs(request.config, local)


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something listens on for the duration of the test."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield int(sock.getsockname()[1])
