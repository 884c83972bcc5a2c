"""The chart's PostgreSQL image keeps the official image's documented contract.

Where no registry is reachable the image is a stand-in built here (Debian's PostgreSQL and
deploy/release/stand-ins/postgres/docker-entrypoint.sh); with the real image pulled, the same
checks hold. Run as the chart runs it: uid 999, read-only root file system, the data, socket
and temporary folders as volumes, the init scripts from a read-only folder.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from polyframe_release import render
from polyframe_release.engine import Engine

pytestmark = pytest.mark.timeout(300)

PASSWORD = "a-password-for-this-test-only"
#: On every container these tests start (each is removed by name after its test).
TEST_LABEL = "io.polyframe.release.test"
INIT_SHELL = """\
# sourced (not executable), as the official image does with a .sh that is not executable
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE DATABASE extra;
SQL
"""
INIT_SQL = "CREATE TABLE made_by_init (id integer PRIMARY KEY);\n"


@pytest.fixture(scope="module")
def postgres_image(kind_render: Callable[[], render.Render]) -> str:
    stateful = kind_render().get("StatefulSet", "polyframe-postgresql")
    assert stateful is not None
    return str(stateful["spec"]["template"]["spec"]["containers"][0]["image"])


def _folder(path: Path, uid: int = 999, mode: int = 0o700) -> Path:
    path.mkdir(parents=True)
    os.chown(path, uid, uid)
    path.chmod(mode)
    return path


@pytest.fixture
def volumes(tmp_path: Path) -> dict[str, Path]:
    init = tmp_path / "init"
    init.mkdir()
    (init / "10-extra.sh").write_text(INIT_SHELL, encoding="utf-8")
    (init / "20-table.sql").write_text(INIT_SQL, encoding="utf-8")
    return {
        "data": _folder(tmp_path / "data", mode=0o2777),
        "run": _folder(tmp_path / "run", mode=0o2777),
        "tmp": _folder(tmp_path / "tmp", mode=0o1777),
        "init": init,
    }


@pytest.fixture
def start(engine: Engine, postgres_image: str) -> Iterator[Callable[..., tuple[str, int]]]:
    """``start(volumes, env)``: the image as the chart runs it; (container, host port)."""
    names: list[str] = []

    def run(volumes: dict[str, Path], env: dict[str, str]) -> tuple[str, int]:
        name = f"polyframe-pg-test-{uuid.uuid4().hex[:8]}"
        args = [
            "run", "--detach", "--name", name, "--label", f"{TEST_LABEL}=1",
            "--user", "999:999", "--read-only",
            "--read-only-tmpfs=false", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "--publish", "127.0.0.1::5432",
            "--mount", f"type=bind,source={volumes['data']},destination=/var/lib/postgresql/data",
            "--mount", f"type=bind,source={volumes['run']},destination=/var/run/postgresql",
            "--mount", f"type=bind,source={volumes['tmp']},destination=/tmp",
            "--mount",
            f"type=bind,source={volumes['init']},destination=/docker-entrypoint-initdb.d,ro=true",
        ]  # fmt: skip
        for key in env:
            args += ["--env", key]
        done = engine.run(*args, postgres_image, "-c", "shared_buffers=16MB", check=False)
        names.append(name)
        assert done.returncode == 0, done.stderr
        bindings = engine.run("port", name, "5432/tcp", check=False).stdout.split()
        return name, int(bindings[0].rsplit(":", 1)[1]) if bindings else 0

    original = dict(os.environ)
    yield lambda volumes, env: _with_env(env, original, lambda: run(volumes, env))
    for name in names:
        engine.run("rm", "--force", "--time", "5", name, check=False)


def _with_env(
    env: dict[str, str], original: dict[str, str], action: Callable[[], tuple[str, int]]
) -> tuple[str, int]:
    """``--env NAME`` takes the value from the engine's environment: set it only for the call."""
    os.environ.update(env)
    try:
        return action()
    finally:
        for key in env:
            if key in original:
                os.environ[key] = original[key]
            else:
                os.environ.pop(key, None)


def _connect(
    port: int, password: str, dbname: str = "postgres", timeout: float = 90
) -> psycopg.Connection:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return psycopg.connect(
                host="127.0.0.1", port=port, user="postgres", password=password, dbname=dbname,
                connect_timeout=3,
            )  # fmt: skip
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _wait_exit(engine: Engine, name: str, timeout: float = 60) -> tuple[int, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = engine.json("inspect", name)[0]["State"]
        if not state.get("Running"):
            logs = engine.run("logs", name, check=False)
            return int(state.get("ExitCode", -1)), logs.stdout + logs.stderr
        time.sleep(0.5)
    raise AssertionError(f"{name} still runs after {timeout:g} s")


def test_first_start_initialises_runs_the_init_folder_and_requires_the_password(
    engine: Engine, start: Callable[..., tuple[str, int]], volumes: dict[str, Path]
) -> None:
    env = {"POSTGRES_PASSWORD": PASSWORD, "PGDATA": "/var/lib/postgresql/data/pgdata"}
    name, port = start(volumes, env)
    with _connect(port, PASSWORD) as connection:
        databases = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
        assert "extra" in databases  # the sourced .sh ran
        table = connection.execute("SELECT to_regclass('public.made_by_init')").fetchone()
        assert table is not None
        assert table[0] == "made_by_init"  # the .sql ran against POSTGRES_DB
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _connect(port, "not-the-password")
    # As the chart's probes ask it, from inside the container.
    ready = engine.run("exec", name, "pg_isready", "--host=127.0.0.1", "--username=postgres")
    assert "accepting connections" in ready.stdout

    # A second start on the same data: no initialisation, the init folder is not run again
    # (its CREATE TABLE would fail), the data is kept.
    engine.run("stop", "--time", "20", name)
    _second, port = start(volumes, env)
    with _connect(port, PASSWORD, dbname="extra") as connection:
        assert connection.execute("SELECT 1").fetchone() == (1,)


def test_an_empty_data_folder_without_a_password_is_refused(
    engine: Engine, start: Callable[..., tuple[str, int]], volumes: dict[str, Path]
) -> None:
    name, _port = start(volumes, {"PGDATA": "/var/lib/postgresql/data/pgdata"})
    code, logs = _wait_exit(engine, name)
    assert code != 0
    assert "POSTGRES_PASSWORD" in logs
    assert not (volumes["data"] / "pgdata" / "PG_VERSION").exists()
