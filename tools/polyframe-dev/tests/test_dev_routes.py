"""The routing table and the Traefik configuration generated from it."""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path

import pytest
import yaml

from polyframe_dev.localsecrets import SERVICES, ensure_local_secrets
from polyframe_dev.plan import check_port
from polyframe_dev.routes import Route, load_routes
from polyframe_dev.services import SERVICES as RUNNABLE
from polyframe_dev.supervisor import StartupError
from polyframe_dev.traefik import dynamic_config, static_config


def _table(tmp_path: Path, services: dict[str, object]) -> Path:
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump({"services": services}))
    return path


def test_repository_table_routes_only_known_services() -> None:
    routes = load_routes()
    assert routes, "deploy/routes.yaml routes nothing"
    assert {r.service for r in routes} <= set(RUNNABLE)
    assert all(r.prefix.startswith("/api/") or r.prefix == "/admin" for r in routes)


def test_health_and_metrics_paths_are_never_routed() -> None:
    config = dynamic_config(load_routes(), dict.fromkeys(RUNNABLE, "http://127.0.0.1:1"))
    rules = " ".join(router["rule"] for router in config["http"]["routers"].values())
    for private in ("/metrics", "/healthz", "/readyz"):
        assert f"`{private}" not in rules


def test_prefix_rule_does_not_match_longer_names() -> None:
    # /api/users must not capture /api/usersettings: exact path or the prefix plus a slash.
    assert Route("users-fastapi", "/api/users").traefik_rule == (
        "Path(`/api/users`) || PathPrefix(`/api/users/`)"
    )


@pytest.mark.parametrize("prefix", ["api/users", "/api/users/"])
def test_malformed_prefix_is_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(ValueError, match="must start and not end"):
        load_routes(_table(tmp_path, {"users-fastapi": {"prefixes": [prefix]}}))


def test_prefix_routed_twice_is_refused(tmp_path: Path) -> None:
    table = _table(
        tmp_path,
        {"a": {"prefixes": ["/api/x"]}, "b": {"prefixes": ["/api/x"]}},
    )
    with pytest.raises(ValueError, match="routed twice"):
        load_routes(table)


def test_dynamic_config_points_each_router_at_its_service() -> None:
    routes = [Route("users-fastapi", "/api/users"), Route("admin-django", "/admin")]
    config = dynamic_config(
        routes, {"users-fastapi": "http://127.0.0.1:1", "admin-django": "http://127.0.0.1:2"}
    )
    http = config["http"]
    assert {r["service"] for r in http["routers"].values()} == {"users-fastapi", "admin-django"}
    assert http["services"]["admin-django"]["loadBalancer"]["servers"] == [
        {"url": "http://127.0.0.1:2"}
    ]


def test_static_config_keeps_ping_and_metrics_off_the_public_entry_point(tmp_path: Path) -> None:
    config = static_config(
        host="127.0.0.1", port=8080, internal_port=8082, dynamic_file=tmp_path / "d.yml"
    )
    assert config["ping"]["entryPoint"] == "internal"
    assert config["metrics"]["prometheus"]["entryPoint"] == "internal"
    assert config["entryPoints"]["internal"]["address"] == "127.0.0.1:8082"
    assert "api" not in config  # no dashboard


def test_local_secrets_are_private_stable_and_exclude_self(tmp_path: Path) -> None:
    first = ensure_local_secrets(tmp_path)
    key = first.jwt_signing_key.read_bytes()
    assert stat.S_IMODE(first.folder.stat().st_mode) == 0o700
    for path in first.folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    second = ensure_local_secrets(tmp_path)
    assert second.jwt_signing_key.read_bytes() == key

    for service in SERVICES:
        trusted = json.loads(second.trusted_services(service).read_text())
        assert service not in trusted
        assert set(trusted) == set(SERVICES) - {service}
        for name, secret in trusted.items():
            assert second.service_secret(name).read_text().strip() == secret


def test_taken_port_is_named_in_the_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(StartupError, match=rf"port {port} on 127.0.0.1 \(the ingress\)"):
            check_port("127.0.0.1", port, "the ingress", "make up PORT=9080")


def test_each_service_gets_its_own_postgres_database_per_data_folder(tmp_path: Path) -> None:
    from polyframe_dev.localsecrets import LocalSecrets
    from polyframe_dev.services import Context, database_name

    ctx = Context(
        data_dir=tmp_path,
        secrets=LocalSecrets(tmp_path / "secrets"),
        ports={},
        workers=1,
        postgres="postgresql://postgres:p%40ss@db.example:5433/postgres",
    )
    users = ctx.database_url("users-fastapi", "postgresql+asyncpg")
    orders = ctx.database_url("legacy-flask", "postgresql+psycopg")
    assert users.startswith(
        "postgresql+asyncpg://postgres:p%40ss@db.example:5433/polyframe_users_fastapi_"
    )
    assert orders.startswith(
        "postgresql+psycopg://postgres:p%40ss@db.example:5433/polyframe_legacy_flask_"
    )
    # Another data folder (another platform on the same server) gets other databases.
    assert database_name(tmp_path, "users-fastapi") != database_name(
        tmp_path / "b", "users-fastapi"
    )
    sqlite = Context(data_dir=tmp_path, secrets=ctx.secrets, ports={}, workers=1)
    assert (
        sqlite.database_url("legacy-flask", "postgresql+psycopg")
        == f"sqlite:///{tmp_path}/legacy-flask.db"
    )
