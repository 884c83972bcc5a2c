"""The in-cluster PostgreSQL's first-start script, run for real against a PostgreSQL server.

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
from typing import Any
from urllib.parse import urlsplit

import pytest

from service_kit.testing import ADMIN_URL, unavailable

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
