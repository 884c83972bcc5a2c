"""services/*/service.yaml (polyframe_dev.manifest): read strictly, and run by `make up` as said."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from polyframe_dev import manifest
from polyframe_dev.localsecrets import LocalSecrets
from polyframe_dev.services import SERVICES, Context


def _data(name: str = "users-fastapi") -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(manifest.manifest_path(name).read_text())
    return loaded


@pytest.mark.parametrize("name", manifest.NAMES)
def test_every_manifest_reads(name: str) -> None:
    m = manifest.load(name)
    assert m.name == name
    assert f"{m.prefix}_DATABASE_URL" in {var.name for var in m.env}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(colour="blue"), r"unknown key\(s\) \['colour'\]"),
        (lambda d: d["env"].append({"name": "USERS_X", "locl": "1"}), r"env\[\d+\]: unknown"),
        (lambda d: d["setup"][0].update(cluster="sometimes"), "cluster is 'sometimes'"),
        (lambda d: d["env"].append({"name": "USERS_K", "secret_file": "nope"}), "no secret file"),
        (lambda d: d["env"].append(dict(d["env"][0])), "names a variable twice"),
        (lambda d: d["server"].update(preforks="never"), "preforks is 'never'"),
        (lambda d: d["env"].append({"name": "X", "flag": "--x", "local": "1"}), "a flag needs"),
    ],
)
def test_a_wrong_manifest_is_refused_with_its_place(change: Any, message: str) -> None:
    data = _data()
    change(data)
    with pytest.raises(manifest.ManifestError, match=message):
        manifest.parse(data, "service.yaml")


def _context(tmp_path: Path, **kwargs: Any) -> Context:
    ports = {"users-fastapi": 8101, "legacy-flask": 8102, "admin-django": 8103}
    return Context(
        data_dir=tmp_path,
        secrets=LocalSecrets(tmp_path / "secrets"),
        ports={**ports, "users-outbox": 9464, "orders-outbox": 9465,
               "legacy-flask-metrics": 9102, "admin-django-metrics": 9103},
        workers=2,
        **kwargs,
    )  # fmt: skip


def test_make_up_runs_what_the_manifest_says(tmp_path: Path) -> None:
    ctx = _context(tmp_path, drills=True)
    users = SERVICES["users-fastapi"]
    serve = users.serve(ctx)
    assert serve[:4] == [sys.executable, "-m", "uvicorn", "--factory"]
    # Options the image reads from UVICORN_* are flags here, with the local values.
    assert serve[serve.index("--port") + 1] == "8101"
    assert serve[serve.index("--workers") + 1] == "2"
    assert not any(name.startswith("UVICORN_") for name in users.server_env(ctx))
    env = users.server_env(ctx)
    assert env["USERS_ADMIN_URL"] == "http://127.0.0.1:8103"
    assert env["USERS_JWT_PRIVATE_KEY_FILE"] == str(ctx.secrets.jwt_signing_key)
    assert env["USERS_DRILLS"] == "true"
    assert env["USERS_DATABASE_URL"].startswith("sqlite+aiosqlite:///")
    # The platform switches are the server's and its workers', not the setup commands'.
    assert "USERS_DRILLS" not in users.env(ctx)
    assert users.worker_env(ctx, "users-outbox")["USERS_DRILLS"] == "true"
    (migrate, seed) = users.setup(ctx)
    assert migrate == [sys.executable, "-m", "users_fastapi.cli", "migrate"]
    assert seed[-1] == str(ctx.secrets.demo_accounts)
    assert users.workers == {
        "users-outbox": [sys.executable, "-m", "users_fastapi.cli", "dispatch-outbox"]
    }


def test_a_chart_only_setting_is_not_set_locally(tmp_path: Path) -> None:
    ctx = _context(tmp_path)
    orders = SERVICES["legacy-flask"].server_env(ctx)
    assert "ORDERS_LOG_LEVEL" not in orders  # the service's default locally
    assert "ORDERS_THREADS" not in orders
    assert orders["ORDERS_BIND"] == "127.0.0.1:8102"
    assert orders["ORDERS_METRICS_BIND"] == "127.0.0.1:9102"
    admin = SERVICES["admin-django"].env(ctx)
    assert admin["ADMIN_STATIC_ROOT"] == str(tmp_path / "admin-static")
    assert "ADMIN_SECURE_COOKIES" not in admin
