"""Secrets: generated once and kept across upgrades (Helm's `lookup`), or the user's own.

Helm's `lookup` reads the live cluster while rendering. To exercise it for real without a
cluster, the Helm v4 engine renders against a small fake Kubernetes API served over HTTP on
127.0.0.1: it stands in for a cluster and answers only what `lookup` asks (API discovery and
GET of a Secret), from Secrets the test stores in it.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

HELM_DIR = Path(__file__).resolve().parents[2] / "deploy" / "helm"
NAMESPACE = "polyframe-under-test"
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")


class FakeKubernetesAPI(ThreadingHTTPServer):
    """Just enough of the Kubernetes API for Helm's `lookup` of a Secret."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def store(self, manifest: dict[str, Any]) -> None:
        self.secrets[(NAMESPACE, manifest["metadata"]["name"])] = manifest


class _Handler(BaseHTTPRequestHandler):
    server: FakeKubernetesAPI

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.server.requests.append(path)
        if path == "/version":
            self._send(200, {"major": "1", "minor": "35", "gitVersion": "v1.35.0"})
        elif path == "/api":
            self._send(200, {"kind": "APIVersions", "versions": ["v1"]})
        elif path == "/apis":
            self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        elif path == "/api/v1":
            self._send(200, {
                "kind": "APIResourceList", "groupVersion": "v1",
                "resources": [{"name": "secrets", "singularName": "secret", "namespaced": True,
                               "kind": "Secret", "verbs": ["get", "list"]}],
            })  # fmt: skip
        elif path.startswith("/api/v1/namespaces/") and "/secrets/" in path:
            _, _, _, namespace, _, name = path.strip("/").split("/")
            secret = self.server.secrets.get((namespace, name))
            if secret is None:
                self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                 "reason": "NotFound", "code": 404,
                                 "message": f'secrets "{name}" not found'})  # fmt: skip
            else:
                self._send(200, secret)
        else:
            self._send(
                404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
            )


@pytest.fixture
def cluster() -> Iterator[FakeKubernetesAPI]:
    server = FakeKubernetesAPI()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _render(
    cluster: FakeKubernetesAPI, chart: str, values: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Render against the fake cluster, as `helm upgrade` would; Secrets by name."""
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": cluster.url}}],
        "contexts": [
            {"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}
        ],
        "users": [{"name": "fake", "user": {"token": "not-a-real-token"}}],
    })  # fmt: skip
    with (
        helm.Config(kubeconfig_content=kubeconfig, namespace=NAMESPACE) as config,
        helm.Chart.load(HELM_DIR / chart) as loaded,
    ):
        raw = config.render(loaded, values, name="polyframe", namespace=NAMESPACE, is_upgrade=True)
    secrets = {}
    for template, text in raw.items():
        if template.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document and document["kind"] == "Secret":
                secrets[document["metadata"]["name"]] = document
    return secrets


def _decoded(secret: dict[str, Any]) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def test_generated_secrets_are_kept_across_upgrades(cluster: FakeKubernetesAPI) -> None:
    first = _render(cluster, "polyframe", {})
    assert set(first) == {
        "polyframe-credentials",
        "polyframe-postgresql",
        "polyframe-users-fastapi",
        "polyframe-admin-django",
    }
    assert any(path.startswith("/api/v1/namespaces/") for path in cluster.requests), (
        "lookup never asked"
    )
    # Nothing stored yet: a second render generates other values (they are random) ...
    assert (
        _render(cluster, "polyframe", {})["polyframe-credentials"]["data"]
        != first["polyframe-credentials"]["data"]
    )
    # ... but once the first release's Secrets exist, an upgrade renders exactly them again.
    for secret in first.values():
        cluster.store(secret)
    upgrade = _render(cluster, "polyframe", {})
    for name, secret in first.items():
        assert upgrade[name]["data"] == secret["data"], name


def test_a_partly_stored_secret_keeps_what_exists_and_derives_the_rest(
    cluster: FakeKubernetesAPI,
) -> None:
    """The trusted maps and database URLs are derived from the kept credentials and passwords."""
    stored = {"users-fastapi": "u" * 43, "legacy-flask": "l" * 43, "admin-django": "a" * 43}
    cluster.store({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "polyframe-credentials"},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in stored.items()},
    })  # fmt: skip
    cluster.store({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "polyframe-postgresql"},
        "data": {"users-fastapi-password": base64.b64encode(b"kept-password").decode()},
    })  # fmt: skip
    secrets = _render(cluster, "polyframe", {})
    credentials = _decoded(secrets["polyframe-credentials"])
    for service in SERVICES:
        assert credentials[service] == stored[service]
        trusted = json.loads(credentials[f"trusted-by-{service}.json"])
        assert trusted == {other: stored[other] for other in SERVICES if other != service}
    database = _decoded(secrets["polyframe-postgresql"])
    assert database["users-fastapi-password"] == "kept-password"
    assert database["users-fastapi-database-url"] == (
        f"postgresql+asyncpg://users:kept-password@polyframe-postgresql.{NAMESPACE}.svc:5432/users"
    )
    assert database["legacy-flask-password"] != "kept-password"  # generated: nothing was stored


def test_a_service_chart_keeps_its_signing_key(cluster: FakeKubernetesAPI) -> None:
    values = {"database": {"existingSecret": "users-database"}}
    first = _render(cluster, "users-fastapi", values)["polyframe-users-fastapi"]
    assert _decoded(first)["jwt-private-key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    cluster.store(first)
    assert (
        _render(cluster, "users-fastapi", values)["polyframe-users-fastapi"]["data"]
        == first["data"]
    )


def test_existing_secrets_replace_generation(render_case: Any) -> None:
    """Production-like values name existing Secrets: nothing is generated, all refer to them."""
    rendered = render_case("polyframe", "production")
    assert not rendered.of_kind("Secret")
    expected = {
        "platform-credentials", "users-database", "orders-database", "admin-database",
        "users-signing-key", "admin-django-secret-key",
    }  # fmt: skip
    referenced = {name for _manifest, names in rendered.secrets_read() for name in names}
    assert referenced == expected


def test_generated_secrets_are_never_in_values_files() -> None:
    """No values file carries a credential, a key or a database URL with a password."""
    import re

    key_or_credentials_in_url = re.compile(
        r"PRIVATE KEY|[a-z0-9+]+://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE
    )

    def strings(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield str(key)
                yield from strings(value)
        elif isinstance(node, list):
            for item in node:
                yield from strings(item)
        elif node is not None:
            yield str(node)

    files = [
        *HELM_DIR.glob("*/values.yaml"),
        *HELM_DIR.glob("*/ci/*.yaml"),
        HELM_DIR.parent / "kind" / "values.yaml",
    ]
    for path in files:
        for text in strings(yaml.safe_load(path.read_text())):
            assert not key_or_credentials_in_url.search(text), f"{path}: {text!r}"
    assert key_or_credentials_in_url.search("postgresql+asyncpg://users:hunter2@db:5432/users")


def test_demo_staff_are_generated_once_and_kept(cluster: FakeKubernetesAPI) -> None:
    values = {"database": {"existingSecret": "admin-database"}, "demoStaff": {"enabled": True}}
    first = _render(cluster, "admin-django", values)["polyframe-admin-django-demo-staff"]
    staff = json.loads(_decoded(first)["staff.json"])
    for member in staff:
        assert len(member["password"]) == 16
        assert _decoded(first)[member["group"]] == f"{member['username']}:{member['password']}"
    cluster.store(first)
    again = _render(cluster, "admin-django", values)["polyframe-admin-django-demo-staff"]
    assert again["data"] == first["data"]
