"""The release fails — naming the cause — on the faults a real first run on kind would hit.

Each fault is what a one-line change of one chart renders: an environment variable renamed,
a Secret key renamed, a probe path changed (made here in the rendered objects, exactly what
the chart change would render), and the kind values' ``secureCookies: false`` reverted. One
release carries the first three at once (each in another workload) plus the reverted cookie
setting; the runner must give up naming all three, and the e2e suite's cookie check must
name the fourth. The release runs for real: podman containers, the runner's kubelet and
controllers, Traefik from the rendered Ingress.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from polyframe_release import render, runner
from polyframe_release.paths import REPO_ROOT

pytestmark = pytest.mark.timeout(600)


def _workload(rendered: render.Render, kind: str, name: str) -> dict[str, Any]:
    found = rendered.get(kind, name)
    assert found is not None, f"the kind render has no {kind}/{name}"
    return found


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers[0]


def _rename_env(workload: dict[str, Any], old: str, new: str) -> None:
    env = _container(workload)["env"]
    entry = next(e for e in env if e["name"] == old)
    entry["name"] = new


def _rename_secret_key(workload: dict[str, Any], variable: str, new_key: str) -> str:
    entry = next(e for e in _container(workload)["env"] if e["name"] == variable)
    ref = entry["valueFrom"]["secretKeyRef"]
    ref["key"] = new_key
    return str(ref["name"])


def _values_admin_secure_cookies(rendered: render.Render) -> None:
    """The kind values' ``admin-django.secureCookies: false`` reverted: the chart's default."""
    for kind in ("Deployment", "Job"):
        for obj in rendered.of_kind(kind):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                for entry in container.get("env") or []:
                    if entry["name"] == "ADMIN_SECURE_COOKIES":
                        entry["value"] = "true"


def test_a_release_that_cannot_run_says_why(
    kind_render: Callable[[], render.Render],
    run_release: Callable[..., runner.Release],
    python_image: str,
) -> None:
    rendered = kind_render()
    flask = _workload(rendered, "Deployment", "polyframe-legacy-flask")
    _rename_env(flask, "ORDERS_SERVICE_SECRET_FILE", "ORDERS_SERVICE_SECRET_PATH")
    outbox = _workload(rendered, "Deployment", "polyframe-users-fastapi-outbox")
    secret = _rename_secret_key(outbox, "USERS_DATABASE_URL", "users-fastapi-db-url")
    users = _workload(rendered, "Deployment", "polyframe-users-fastapi")
    _container(users)["readinessProbe"]["httpGet"]["path"] = "/ready"
    _values_admin_secure_cookies(rendered)

    release = run_release(rendered, give_up_restarts=2)
    with pytest.raises(runner.ReleaseError) as failure:
        release.up(python_image)
    message = str(failure.value)
    print(message)

    # The renamed variable: legacy-flask refuses to start without its credential, crash-loops.
    assert "Deployment/polyframe-legacy-flask:" in message
    assert "ORDERS_SERVICE_SECRET is required outside development" in message
    # The renamed Secret key: the kubelet cannot create the container.
    assert "Deployment/polyframe-users-fastapi-outbox:" in message
    assert f"couldn't find key users-fastapi-db-url in Secret polyframe/{secret}" in message
    # The changed probe path: readiness answered 404, no wait can change that.
    assert (
        "Readiness probe GET /ready on port http failed: HTTP probe failed with statuscode: 404"
        in message
    )
    # What was not broken came up.
    assert "Deployment/polyframe-admin-django:" not in message
    assert "StatefulSet/polyframe-postgresql:" not in message

    # The reverted cookie setting: the console is up, and the suite's check names the cause.
    assert release.ingress is not None
    check = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "tests/e2e/test_e2e_authz.py::test_the_console_cookies_come_back_over_the_ingress",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "E2E_BASE_URL": release.ingress.url},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert check.returncode == 1, check.stdout[-3000:]
    assert "admin-django.secureCookies: false" in check.stdout, check.stdout[-3000:]
