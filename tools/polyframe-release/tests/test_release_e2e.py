"""``make release-e2e`` (polyframe_release.e2e): skaffold's verify Job as skaffold builds it
from deploy/kind/verify-job.yaml and skaffold.yaml, and the credentials it reads from the
release's Secrets."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
import yaml

from polyframe_release import e2e, images, kinds
from polyframe_release.paths import VERIFY_JOB
from polyframe_release.render import Render
from polyframe_release.runner import ReleaseError
from polyframe_release.store import Store

SECRET_ENV = [
    "E2E_USERS_FASTAPI_SECRET",
    "E2E_LEGACY_FLASK_SECRET",
    "E2E_ADMIN_DJANGO_SECRET",
    "E2E_STAFF_SUPPORT_ACTING",
    "E2E_STAFF_SUPPORT_READONLY",
]


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def test_verify_job_is_the_manifest_with_skaffolds_verify_container(
    built: dict[str, str],
) -> None:
    manifest = yaml.safe_load(VERIFY_JOB.read_text())
    verify = images.skaffold_config()["verify"][0]

    job = e2e.verify_job(built)

    assert job["metadata"]["name"] == verify["name"] == "e2e"  # named after the verify test
    container = _container(job)
    assert container["image"] == built["polyframe/e2e"]
    assert container["command"] == verify["container"]["command"] == ["/bin/sh", "-c"]
    assert container["args"] == verify["container"]["args"]
    assert "exec python -m pytest -p no:cacheprovider" in container["args"][0]
    # the manifest's env first (secretKeyRef), skaffold's appended after it
    manifest_env = _container(manifest)["env"]
    assert container["env"] == [*manifest_env, *verify["container"]["env"]]
    assert [e["name"] for e in container["env"][: len(SECRET_ENV)]] == SECRET_ENV
    assert container["env"][len(SECRET_ENV)] == {
        "name": "E2E_CLUSTER_URL",
        "value": "http://traefik.traefik.svc.cluster.local",
    }
    # the rest of the manifest stays
    for key in ("securityContext", "resources", "volumeMounts"):
        assert container[key] == _container(manifest)[key]
    pod = job["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "polyframe-e2e"
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] == 0


def test_verify_job_uses_only_what_the_runner_implements(
    built: dict[str, str], kind_render: Render
) -> None:
    job = e2e.verify_job(built)

    assert kinds.unsupported_fields(job) == []
    # it runs as the ServiceAccount the kind render creates for it
    account = job["spec"]["template"]["spec"]["serviceAccountName"]
    assert kind_render.get("ServiceAccount", account) is not None


def test_verify_job_needs_the_e2e_image_built(built: dict[str, str]) -> None:
    partial = {k: v for k, v in built.items() if k != "polyframe/e2e"}

    with pytest.raises(
        ReleaseError, match="verify image polyframe/e2e was not built: run make images"
    ):
        e2e.verify_job(partial)


def _secrets_store(kind_render: Render) -> Store:
    store = Store("polyframe")
    for secret in kind_render.of_kind("Secret"):
        store.put(copy.deepcopy(secret))
    return store


def test_credentials_resolve_every_secret_key_ref_of_the_job(
    built: dict[str, str], kind_render: Render
) -> None:
    job = e2e.verify_job(built)

    found = e2e.credentials(_secrets_store(kind_render), job)

    assert list(found) == SECRET_ENV
    credentials = kind_render.get("Secret", "polyframe-credentials")
    staff = kind_render.get("Secret", "polyframe-admin-django-demo-staff")
    assert credentials is not None
    assert staff is not None
    assert (
        found["E2E_USERS_FASTAPI_SECRET"]
        == base64.b64decode(credentials["data"]["users-fastapi"]).decode()
    )
    assert (
        found["E2E_STAFF_SUPPORT_READONLY"]
        == base64.b64decode(staff["data"]["support-readonly"]).decode()
    )
    assert ":" in found["E2E_STAFF_SUPPORT_ACTING"]  # username:password
    assert all(found.values())


def test_credentials_name_a_missing_key(built: dict[str, str], kind_render: Render) -> None:
    store = _secrets_store(kind_render)
    staff = store.get("Secret", "polyframe-admin-django-demo-staff")
    assert staff is not None
    del staff["data"]["support-readonly"]

    with pytest.raises(ReleaseError) as raised:
        e2e.credentials(store, e2e.verify_job(built))

    assert str(raised.value) == (
        "deploy/kind/verify-job.yaml: E2E_STAFF_SUPPORT_READONLY reads key support-readonly of "
        "Secret polyframe-admin-django-demo-staff, which the release does not have"
    )


def test_credentials_name_a_missing_secret(built: dict[str, str], kind_render: Render) -> None:
    store = _secrets_store(kind_render)
    store.remove("Secret", "polyframe-credentials")

    with pytest.raises(
        ReleaseError,
        match="E2E_USERS_FASTAPI_SECRET reads key users-fastapi of Secret polyframe-credentials",
    ):
        e2e.credentials(store, e2e.verify_job(built))


@pytest.mark.parametrize(
    ("text", "megabytes"),
    [("512MiB", 536.870912), ("1.5GB", 1500.0), ("800kB", 0.8), ("12B", 12e-6), ("n/a", 0.0)],
)
def test_memory_figures_of_the_engines_stats(text: str, megabytes: float) -> None:
    assert e2e._megabytes(text) == pytest.approx(megabytes)
