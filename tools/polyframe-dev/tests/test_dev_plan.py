"""``up``'s plan: what runs on which port, checked before anything starts; and the platform's
announcement and ready file, built from the plan."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
from pathlib import Path

import pytest

from polyframe_dev import cli, prometheus
from polyframe_dev.plan import Plan, make_plan
from polyframe_dev.platform import Platform
from polyframe_dev.routes import load_routes
from polyframe_dev.supervisor import StartupError, Supervisor


def _plan(tmp_path: Path, *options: str) -> Plan:
    args = cli.parser().parse_args(
        ["up", "--port", "0", "--free-ports", "--data-dir", str(tmp_path), *options]
    )
    return make_plan(args)


def test_every_routed_service_and_background_process_gets_a_free_port_of_its_own(
    tmp_path: Path,
) -> None:
    plan = _plan(tmp_path, "--no-prometheus")
    assert plan.names == list(dict.fromkeys(r.service for r in load_routes()))
    assert set(plan.names) | set(plan.workers) <= set(plan.ctx.ports)
    ports = [plan.ingress_port, plan.internal_port, *plan.ctx.ports.values()]
    assert all(port > 0 for port in ports)
    assert len(set(ports)) == len(ports)
    assert plan.data_dir == tmp_path.resolve()
    assert plan.secrets.demo_accounts.exists()
    assert (plan.prometheus, plan.prometheus_missing) == (None, False)
    targets = plan.scrape_targets()
    assert set(targets) == {*plan.names, "outbox", "traefik"}
    assert targets["traefik"] == [f"127.0.0.1:{plan.internal_port}"]


def test_the_ingress_is_localhost_for_a_person_and_127_0_0_1_for_this_machine(
    tmp_path: Path,
) -> None:
    plan = _plan(tmp_path, "--no-prometheus")
    assert plan.public_url == f"http://localhost:{plan.ingress_port}"
    assert plan.ingress_url == f"http://127.0.0.1:{plan.ingress_port}"
    elsewhere = dataclasses.replace(plan, host="192.0.2.10")
    assert elsewhere.public_url == elsewhere.ingress_url == f"http://192.0.2.10:{plan.ingress_port}"


def test_traces_are_exported_only_when_an_endpoint_is_named(tmp_path: Path) -> None:
    assert _plan(tmp_path, "--no-prometheus").otlp_env() == {}
    plan = _plan(tmp_path, "--no-prometheus", "--otlp-endpoint", "http://127.0.0.1:4318")
    assert plan.otlp_env()["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4318"


def test_a_taken_ingress_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=rf"port {port} .*make up PORT=9080"):
            _plan(tmp_path, "--no-prometheus", "--port", str(port))


def test_a_wrong_service_port_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match="--service-port 'nope=1'"):
        _plan(tmp_path, "--service-port", "nope=1")


def test_a_missing_prometheus_is_said_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prometheus, "find_binary", lambda: None)
    plan = _plan(tmp_path)
    assert (plan.prometheus, plan.prometheus_missing) == (None, True)
    monkeypatch.setattr(prometheus, "find_binary", lambda: "/usr/bin/prometheus")
    wanted = _plan(tmp_path)
    assert wanted.prometheus is not None
    assert wanted.prometheus[0] == "/usr/bin/prometheus"


def test_the_announcement_and_the_ready_file_describe_the_plan(tmp_path: Path) -> None:
    plan = _plan(tmp_path, "--no-prometheus")
    out = io.StringIO()
    platform = Platform(plan, Supervisor(out=out, colour=False))
    platform.announce({"users-fastapi": 1.5}, started=0.0)
    text = out.getvalue()
    assert f"behind Traefik at {plan.public_url}" in text
    for route in plan.routes:
        assert f"{plan.public_url}{route.prefix}" in text
    for account in json.loads(plan.secrets.demo_accounts.read_text()):
        assert account["email"] in text
    assert "Cold start to /readyz: users-fastapi 1.50s" in text
    ready = platform.ready_document({"users-fastapi": 1.5})
    assert ready["ingress"] == plan.ingress_url
    assert ready["services"] == {name: plan.ctx.url(name) for name in plan.names}
    assert ready["prometheus"] is None
    assert ready["demo_staff_file"] == str(plan.secrets.demo_staff)
    assert ready["pids"] == {}
