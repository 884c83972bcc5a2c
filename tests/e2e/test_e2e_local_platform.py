"""``polyframe-dev up`` itself: ready file, demo data, restarts, and a taken port.

All of this needs the local platform; with E2E_BASE_URL set these tests skip.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from polyframe_dev.services import DEMO_ORDERS

pytestmark = pytest.mark.e2e

USERS = "/api/users"
PORT_ERROR_TIMEOUT = 60.0
ROUTING_TABLE = Path(__file__).resolve().parents[2] / "deploy" / "routes.yaml"


def _routed_services() -> set[str]:
    """The services of the routing table: exactly those ``up`` must run."""
    return set(yaml.safe_load(ROUTING_TABLE.read_text(encoding="utf-8"))["services"])


def test_ready_file_describes_the_running_platform(local_ready: dict[str, Any]) -> None:
    assert local_ready["ingress"].startswith("http://127.0.0.1:")
    assert local_ready["traefik_internal"].startswith("http://127.0.0.1:")
    services = _routed_services()
    assert {"users-fastapi", "legacy-flask"} <= services
    assert set(local_ready["services"]) == services
    # Every server and Traefik; background workers (outbox dispatchers) may come on top.
    assert services | {"traefik"} <= set(local_ready["pids"])
    pids = list(local_ready["pids"].values())
    assert all(isinstance(pid, int) and pid > 0 for pid in pids)
    assert len(set(pids)) == len(pids)
    data_dir = Path(local_ready["data_dir"])
    assert data_dir.is_dir()
    assert Path(local_ready["demo_accounts_file"]).is_relative_to(data_dir)
    cold_start = local_ready["cold_start_seconds"]
    assert set(cold_start) == services
    assert all(seconds > 0 for seconds in cold_start.values())


def test_traefik_answers_its_ping_only_internally(
    local_ready: dict[str, Any], client: httpx.Client
) -> None:
    with httpx.Client(base_url=local_ready["traefik_internal"], timeout=10) as internal:
        assert internal.get("/ping").status_code == 200
    assert client.get("/ping").status_code == 404


def test_demo_accounts_can_log_in(
    local_ready: dict[str, Any], client: httpx.Client, log_in: Any
) -> None:
    accounts = json.loads(Path(local_ready["demo_accounts_file"]).read_text())
    assert accounts, "no demo accounts"
    for account in accounts:
        token = log_in(client, account["email"], account["password"])
        me = client.get(f"{USERS}/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200, me.text
        assert me.json()["email"] == account["email"]
        assert me.json()["role"] == account["role"]


def test_a_second_up_on_the_same_data_dir_reuses_it(
    start_platform: Any, tmp_path: Path, register: Any, log_in: Any
) -> None:
    data_dir = tmp_path / "shared-data"

    first = start_platform("first", data_dir=data_dir)
    ready = first.wait_ready()
    with httpx.Client(base_url=ready["ingress"], timeout=15) as client:
        account = register(client)
        kid = client.get(f"{USERS}/.well-known/jwks.json").json()["keys"][0]["kid"]
    first.stop_and_check()
    accounts = json.loads(Path(ready["demo_accounts_file"]).read_text())
    assert f"{len(accounts)} demo account(s) created" in first.log(), first.log_tail()
    members = [account for account in accounts if account["role"] == "member"]
    orders = len(members) * len(DEMO_ORDERS)
    assert f"{orders} demo order(s) created" in first.log(), first.log_tail()

    second = start_platform("second", data_dir=data_dir)
    ready = second.wait_ready()
    assert Path(ready["data_dir"]) == data_dir.resolve()
    with httpx.Client(base_url=ready["ingress"], timeout=15) as client:
        # Same database: the account registered by the first run still logs in.
        log_in(client, account.email, account.password)
        # Same demo accounts file and passwords.
        demo = json.loads(Path(ready["demo_accounts_file"]).read_text())
        assert demo == accounts
        log_in(client, demo[0]["email"], demo[0]["password"])
        # Same signing key.
        assert client.get(f"{USERS}/.well-known/jwks.json").json()["keys"][0]["kid"] == kid
    # SIGTERM (what a process manager sends) stops it as cleanly as Ctrl-C.
    second.stop_and_check(signum=signal.SIGTERM)
    assert "0 demo account(s) created" in second.log(), second.log_tail()
    # The demo orders are seeded with fixed idempotency keys: a second run replays them.
    assert "0 demo order(s) created" in second.log(), second.log_tail()


def test_a_taken_ingress_port_is_a_clear_error(start_platform: Any, taken_port: int) -> None:
    local = start_platform("taken-port", port=taken_port)

    code = local.wait_exit(PORT_ERROR_TIMEOUT)

    output = local.log()
    assert code is not None, f"still running {PORT_ERROR_TIMEOUT:g}s after start:\n{output}"
    assert code != 0, output
    assert str(taken_port) in output, output
    assert "in use" in output, output
    assert not local.ready_file.exists()
    assert not local.orphans()
