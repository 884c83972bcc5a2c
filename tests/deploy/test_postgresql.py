"""The in-cluster PostgreSQL's scripts, run for real: the first-start script against a server,
the set-passwords script on a data directory.

The script the chart renders (ConfigMap `<release>-postgresql-init`, run by the postgres image on
an empty data directory) creates one role and one database per service, from the passwords of
the generated Secret. Here it runs with `sh` and `psql` against the test server of this
machine (POLYFRAME_TEST_POSTGRES), with the role and database names made unique so it leaves
nothing behind; then the roles, their passwords and the databases' owners are checked.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from polyframe_testing.databases import ADMIN_URL
from polyframe_testing.tools import unavailable

pytestmark = pytest.mark.postgres

CALL = re.compile(r'^create_database (\w+) (\w+) "\$(\w+)"$', flags=re.M)


@pytest.fixture
def admin() -> Iterator[Any]:
    import psycopg

    if shutil.which("psql") is None:
        unavailable("psql is missing (Debian package postgresql-client)")
    try:
        connection = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL is not reachable at {ADMIN_URL}: {str(exc).strip()[:120]}")
    with connection:
        yield connection


def test_the_init_script_creates_a_role_and_a_database_per_service(
    render_case: Any, admin: Any
) -> None:
    rendered = render_case("polyframe", "default")
    script = rendered.named("ConfigMap", "polyframe-postgresql-init").obj["data"][
        "10-service-databases.sh"
    ]
    secret = rendered.named("Secret", "polyframe-postgresql").obj["data"]
    statefulset = rendered.named("StatefulSet", "polyframe-postgresql").obj
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    env_from_secret = {
        e["name"]: base64.b64decode(secret[e["valueFrom"]["secretKeyRef"]["key"]]).decode()
        for e in container["env"]
        if "valueFrom" in e
    }
    calls = CALL.findall(script)
    assert {(role, database) for role, database, _ in calls} == {
        ("users", "users"), ("orders", "orders"), ("admin", "admin"),
    }  # fmt: skip
    # Every password variable the script reads is one the StatefulSet sets from the Secret.
    assert {variable for _, _, variable in calls} <= set(env_from_secret)

    suffix = uuid.uuid4().hex[:8]
    unique = CALL.sub(
        lambda m: f'create_database pf_{suffix}_{m[1]} pf_{suffix}_{m[2]} "${m[3]}"', script
    )
    server = urlsplit(ADMIN_URL)
    env = {
        **os.environ,
        **env_from_secret,
        "POSTGRES_USER": server.username or "postgres",
        "PGHOST": server.hostname or "127.0.0.1",
        "PGPORT": str(server.port or 5432),
        "PGPASSWORD": server.password or "",
    }
    names = [(f"pf_{suffix}_{role}", f"pf_{suffix}_{database}") for role, database, _ in calls]
    try:
        result = subprocess.run(
            ["sh", "-c", unique], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stdout + result.stderr
        for role, database in names:
            login, password_set = admin.execute(
                "SELECT rolcanlogin, rolpassword IS NOT NULL FROM pg_authid WHERE rolname = %s",
                (role,),
            ).fetchone()
            assert login, role
            assert password_set, role
            (owner,) = admin.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (database,)
            ).fetchone()
            assert owner == role
        # Run on a database that already has them (a rerun), it fails loudly (ON_ERROR_STOP):
        # the image runs it only on an empty data directory, never twice.
        again = subprocess.run(
            ["sh", "-c", unique], env=env, capture_output=True, text=True, timeout=60
        )
        assert again.returncode != 0
        assert "already exists" in again.stderr
    finally:
        for role, database in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


# -- the roles' passwords from the Secret, before every start ------------------------------------


def _server_binaries() -> Path:
    """The PostgreSQL server's programs (initdb, postgres) of this machine's Debian package."""
    found = [
        folder
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
        if (folder / "initdb").exists() and (folder / "postgres").exists()
    ]
    if not found:
        unavailable("the PostgreSQL server programs are missing (Debian package postgresql)")
    return found[0]


def _as_postgres(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run as the postgres user when this is root (the server refuses to run as root)."""
    assignments = [f"{name}={value}" for name, value in env.items()]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", "env", "-i", *assignments, *command]
    else:
        command = ["env", "-i", *assignments, *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _scram_matches(verifier: str, password: str) -> bool:
    """Does a SCRAM-SHA-256 verifier (pg_authid.rolpassword) accept ``password``?"""
    import hashlib
    import hmac

    match = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", verifier)
    assert match, verifier
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(match[2]), int(match[1])
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hashlib.sha256(client_key).digest() == base64.b64decode(match[3])


@pytest.fixture
def kept_volume() -> Iterator[Path]:
    """A data directory of an earlier release: initialized, its roles with other passwords."""
    import tempfile

    binaries = _server_binaries()
    if os.geteuid() == 0:
        import pwd

        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root without a postgres user to run the server as")
    folder = Path(tempfile.mkdtemp(prefix="polyframe-pgdata-"))
    try:
        if os.geteuid() == 0:
            os.chown(folder, owner.pw_uid, owner.pw_gid)
        data = folder / "pgdata"
        env = {"PATH": f"{binaries}:/usr/bin:/bin", "LANG": "C.UTF-8"}
        initdb = _as_postgres(["initdb", "-D", str(data), "-U", "postgres"], env)
        assert initdb.returncode == 0, initdb.stderr
        roles = "\n".join(
            f"CREATE ROLE {role} LOGIN PASSWORD 'an-earlier-release';"
            for role in ("users", "orders", "admin")
        )
        created = _as_postgres(
            ["sh", "-c", f"printf '%s\\n' \"{roles}\" | postgres --single -D {data} postgres"],
            env,
        )
        assert created.returncode == 0, created.stderr
        yield data
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _rendered_set_passwords(rendered: Any) -> tuple[str, dict[str, str]]:
    """The script and the environment the StatefulSet's init container runs it with."""
    script = rendered.named("ConfigMap", "polyframe-postgresql-init").obj["data"][
        "set-passwords.sh"
    ]
    secret = rendered.named("Secret", "polyframe-postgresql").obj["data"]
    spec = rendered.named("StatefulSet", "polyframe-postgresql").obj["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    (server,) = spec["containers"]
    assert init["name"] == "set-passwords"
    assert init["env"] == server["env"]  # the passwords the server's first start would use
    assert init["image"] == server["image"]
    mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert mounts["data"] == next(
        m["mountPath"] for m in server["volumeMounts"] if m["name"] == "data"
    )
    (scripts,) = [v for v in spec["volumes"] if v["name"] == "scripts"]
    assert scripts["configMap"]["items"] == [
        {"key": "set-passwords.sh", "path": "set-passwords.sh"}
    ]
    assert init["command"] == ["sh", f"{mounts['scripts']}/set-passwords.sh"]
    (initdb,) = [v for v in spec["volumes"] if v["name"] == "init"]
    # The image runs every *.sh of its initdb folder on first start: not this one.
    assert [i["key"] for i in initdb["configMap"]["items"]] == ["10-service-databases.sh"]
    env = {
        e["name"]: e["value"]
        if "value" in e
        else base64.b64decode(secret[e["valueFrom"]["secretKeyRef"]["key"]]).decode()
        for e in init["env"]
    }
    return script, env


def _passwords(data: Path, binaries: Path) -> dict[str, str]:
    query = "SELECT rolname, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL;"
    shown = _as_postgres(
        ["sh", "-c", f'echo "{query}" | postgres --single -D {data} postgres'],
        {"PATH": f"{binaries}:/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert shown.returncode == 0, shown.stderr
    pairs = re.findall(r'rolname = "([^"]+)".*?rolpassword = "([^"]+)"', shown.stdout, re.S)
    return dict(pairs)


def test_a_kept_volume_gets_the_new_secrets_passwords(render_case: Any, kept_volume: Path) -> None:
    """`helm uninstall` deletes the Secret and keeps the PostgreSQL volume; the next install
    generates new passwords, which the image (roles are made on an empty directory only) would
    never apply: the init container sets them, in single-user mode, before the server starts."""
    script, env = _rendered_set_passwords(render_case("polyframe", "default"))
    binaries = _server_binaries()
    # A password with what SQL and the shell would take apart, to show the quoting holds.
    env["USERS_FASTAPI_PASSWORD"] = 'it\'s \\ "$HOME" `id`'
    env |= {"PGDATA": str(kept_volume), "PATH": f"{binaries}:/usr/bin:/bin", "LANG": "C.UTF-8"}

    result = _as_postgres(["sh", "-c", script], env)

    assert result.returncode == 0, result.stderr
    assert "the passwords of postgres, admin, orders, users are the Secret's" in result.stdout
    stored = _passwords(kept_volume, binaries)
    for role, variable in (
        ("users", "USERS_FASTAPI_PASSWORD"),
        ("orders", "LEGACY_FLASK_PASSWORD"),
        ("admin", "ADMIN_DJANGO_PASSWORD"),
        ("postgres", "POSTGRES_PASSWORD"),
    ):
        assert _scram_matches(stored[role], env[variable]), role
        assert not _scram_matches(stored[role], "an-earlier-release"), role


def test_a_missing_role_stops_the_start_naming_it(render_case: Any, kept_volume: Path) -> None:
    script, env = _rendered_set_passwords(render_case("polyframe", "default"))
    binaries = _server_binaries()
    env |= {"PGDATA": str(kept_volume), "PATH": f"{binaries}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    dropped = _as_postgres(
        ["sh", "-c", f'echo "DROP ROLE orders;" | postgres --single -D {kept_volume} postgres'],
        env,
    )
    assert dropped.returncode == 0, dropped.stderr

    result = _as_postgres(["sh", "-c", script], env)

    assert result.returncode != 0
    assert 'role "orders" does not exist' in result.stderr


def test_an_empty_volume_is_left_to_the_images_first_start(render_case: Any) -> None:
    import tempfile

    script, env = _rendered_set_passwords(render_case("polyframe", "default"))
    with tempfile.TemporaryDirectory() as empty:
        env |= {"PGDATA": empty, "PATH": "/usr/bin:/bin"}  # no postgres program needed
        result = subprocess.run(
            ["sh", "-c", script], env=env, capture_output=True, text=True, check=False
        )
    assert result.returncode == 0, result.stderr
    assert "empty data directory, the first start creates the roles" in result.stdout
