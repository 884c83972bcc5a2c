"""The kubelet's part (polyframe_release.pods, podspec and the pod layers): quantities,
``$(VAR)`` expansion, a pod's environment, volumes and ``podman run`` arguments, the kubelet's
non-root check, probes, back-off and when the runner gives a pod up. Pod workers are built from
the real kind render with an engine that answers from memory; none is started, no container runs.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from polyframe_release.pods import PodWorker
from polyframe_release.podspec import (
    GIVE_UP_STUCK,
    GIVE_UP_UNREADY,
    TOKEN_PATH,
    TOKEN_VOLUME,
    ConfigError,
    ContainerRun,
    Probe,
    SpecError,
    expand,
    quantity,
)
from polyframe_release.store import Store

MakeWorker = Callable[..., PodWorker]
needs_root = pytest.mark.skipif(
    os.geteuid() != 0,
    reason="volumes are written owned by root with the pod's fsGroup (os.chown to uid 0), "
    "which only root may do",
)


def flag(args: list[str], name: str) -> list[str]:
    """The values that follow each ``name`` in ``args``."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == name]


# -- quantities and expansion -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("384Mi", 384 * 2**20),
        ("1Gi", 2**30),
        ("64Ki", 64 * 1024),
        ("500m", 0.5),
        ("50m", 0.05),
        ("1", 1.0),
        (1, 1.0),
        ("0.5", 0.5),
        ("2k", 2000.0),
        ("1M", 1e6),
        ("1e3", 1000.0),
    ],
)
def test_quantity(text: Any, value: float) -> None:
    assert quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "Mi", "1.5 Gi", "-1", "12Q", "1mi", "ten"])
def test_quantity_refuses_what_kubernetes_would(text: str) -> None:
    with pytest.raises(SpecError):
        quantity(text)


def test_expand_replaces_known_references_and_leaves_the_rest() -> None:
    env = {"PORT": "8000", "HOST": "0.0.0.0", "my.var": "dotted"}

    assert expand("$(HOST):$(PORT)", env) == "0.0.0.0:8000"
    assert expand("$$(PORT) costs $$5", env) == "$(PORT) costs $5"
    assert expand("$(MISSING) and $PORT and $(", env) == "$(MISSING) and $PORT and $("
    assert expand("$$$(PORT)", env) == "$8000"
    assert expand("$(my.var)", env) == "dotted"


# -- the environment -----------------------------------------------------------------------------


def _secret(store: Store, name: str, key: str) -> str:
    value = store.secret_value(name, key)
    assert value is not None
    return value


def _container(env: list[dict[str, Any]]) -> dict[str, Any]:
    return {"name": "app", "image": "polyframe/app:1", "env": env}


def test_env_of_the_users_web_container_resolves_its_secret_and_values(
    make_worker: MakeWorker, users_web_template: dict[str, Any], store: Store
) -> None:
    worker = make_worker(users_web_template)
    worker.node.cluster_env.update({"KUBERNETES_SERVICE_HOST": "10.89.7.1"})

    env = worker._env(worker.containers[0])

    assert env["USERS_DATABASE_URL"] == _secret(
        store, "polyframe-postgresql", "users-fastapi-database-url"
    )
    assert env["USERS_DATABASE_URL"].startswith("postgresql")
    assert env["UVICORN_PORT"] == "8000"
    assert env["HOME"] == "/tmp"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.89.7.1"  # what a cluster gives every container


def test_env_resolves_every_source(make_worker: MakeWorker, store: Store) -> None:
    template = {
        "metadata": {"labels": {"app.kubernetes.io/component": "web"}},
        "spec": {
            "serviceAccountName": "polyframe-e2e",
            "containers": [
                _container(
                    [
                        {"name": "PORT", "value": "8000"},
                        {"name": "URL", "value": "http://$(POD_IP):$(PORT)/$$(PORT)"},
                        {
                            "name": "SECRET",
                            "valueFrom": {
                                "secretKeyRef": {
                                    "name": "polyframe-credentials",
                                    "key": "users-fastapi",
                                }
                            },
                        },
                        {
                            "name": "INIT",
                            "valueFrom": {
                                "configMapKeyRef": {
                                    "name": "polyframe-postgresql-init",
                                    "key": "10-service-databases.sh",
                                }
                            },
                        },
                        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                        {
                            "name": "NS",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}},
                        },
                        {
                            "name": "POD_IP",
                            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                        },
                        {
                            "name": "COMPONENT",
                            "valueFrom": {
                                "fieldRef": {
                                    "fieldPath": "metadata.labels['app.kubernetes.io/component']"
                                }
                            },
                        },
                        {
                            "name": "ACCOUNT",
                            "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}},
                        },
                        {"name": "LATE", "value": "$(POD_IP)"},
                    ]
                )
            ],
        },
    }
    worker = make_worker(template, name="app-7d9f8-x2b4c")
    worker.ip = "10.89.3.7"

    env = worker._env(worker.containers[0])

    assert env["SECRET"] == _secret(store, "polyframe-credentials", "users-fastapi")
    assert env["INIT"].startswith("#!")
    assert env["POD"] == "app-7d9f8-x2b4c"
    assert env["NS"] == "polyframe"
    assert env["POD_IP"] == "10.89.3.7"
    assert env["COMPONENT"] == "web"
    assert env["ACCOUNT"] == "polyframe-e2e"
    # $(VAR) sees only what is defined before it, as the kubelet expands
    assert env["URL"] == "http://$(POD_IP):8000/$(PORT)"
    assert env["LATE"] == "10.89.3.7"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"secretKeyRef": {"name": "x", "key": "k"}}, 'secret "x" not found'),
        (
            {"secretKeyRef": {"name": "polyframe-credentials", "key": "k"}},
            "couldn't find key k in Secret polyframe/polyframe-credentials",
        ),
        ({"configMapKeyRef": {"name": "x", "key": "k"}}, 'configmap "x" not found'),
        (
            {"configMapKeyRef": {"name": "polyframe-postgresql-init", "key": "k"}},
            "couldn't find key k in ConfigMap polyframe/polyframe-postgresql-init",
        ),
    ],
)
def test_env_errors_are_the_kubelets(
    make_worker: MakeWorker, source: dict[str, Any], message: str
) -> None:
    worker = make_worker(
        {"spec": {"containers": [_container([{"name": "V", "valueFrom": source}])]}}
    )

    with pytest.raises(ConfigError) as raised:
        worker._env(worker.containers[0])

    assert str(raised.value) == message


def test_optional_references_that_do_not_resolve_are_left_out(make_worker: MakeWorker) -> None:
    refs = [
        {"secretKeyRef": {"name": "x", "key": "k", "optional": True}},
        {"secretKeyRef": {"name": "polyframe-credentials", "key": "k", "optional": True}},
        {"configMapKeyRef": {"name": "x", "key": "k", "optional": True}},
        {"configMapKeyRef": {"name": "polyframe-postgresql-init", "key": "k", "optional": True}},
    ]
    env = [{"name": f"V{i}", "valueFrom": ref} for i, ref in enumerate(refs)]
    worker = make_worker(
        {"spec": {"containers": [_container([*env, {"name": "A", "value": "1"}])]}}
    )

    assert worker._env(worker.containers[0]) == {"A": "1"}


def test_env_refuses_a_field_it_does_not_implement(make_worker: MakeWorker) -> None:
    source = {"fieldRef": {"fieldPath": "metadata.generateName"}}
    worker = make_worker(
        {"spec": {"containers": [_container([{"name": "V", "valueFrom": source}])]}}
    )

    with pytest.raises(SpecError, match=r"fieldRef metadata\.generateName not implemented"):
        worker._env(worker.containers[0])


# -- volumes -------------------------------------------------------------------------------------


def _decoded(store: Store, secret: str, key: str) -> bytes:
    found = store.get("Secret", secret)
    assert found is not None
    return base64.b64decode(found["data"][key])


def test_projected_volume_files_of_the_users_web_pod(
    make_worker: MakeWorker, users_web_template: dict[str, Any], store: Store
) -> None:
    worker = make_worker(users_web_template)
    volume = next(v for v in worker.pod["spec"]["volumes"] if v["name"] == "secrets")

    files = worker._volume_files(volume)

    assert files == {
        "service-secret": (_decoded(store, "polyframe-credentials", "users-fastapi"), None),
        "trusted-services.json": (
            _decoded(store, "polyframe-credentials", "trusted-by-users-fastapi.json"),
            None,
        ),
        "jwt-private-key.pem": (
            _decoded(store, "polyframe-users-fastapi", "jwt-private-key"),
            None,
        ),
    }
    assert worker._volume_mode(volume) == 0o440  # the chart's defaultMode 288


def test_secret_and_config_map_volumes_with_and_without_items(
    make_worker: MakeWorker, store: Store
) -> None:
    worker = make_worker({"spec": {"containers": [_container([])]}})
    whole = {"name": "all", "secret": {"secretName": "polyframe-users-fastapi"}}
    picked = {
        "name": "init",
        "configMap": {
            "name": "polyframe-postgresql-init",
            "defaultMode": 0o555,
            "items": [{"key": "10-service-databases.sh", "path": "bin/init.sh", "mode": 0o500}],
        },
    }

    assert worker._volume_files(whole) == {
        "jwt-private-key": (_decoded(store, "polyframe-users-fastapi", "jwt-private-key"), None)
    }
    files = worker._volume_files(picked)
    assert list(files) == ["bin/init.sh"]
    assert files["bin/init.sh"][1] == 0o500
    assert files["bin/init.sh"][0].startswith(b"#!")
    assert worker._volume_mode(picked) == 0o555
    assert worker._volume_mode(whole) == 0o644


def test_a_missing_secret_or_key_fails_the_mount_as_the_kubelet_says(
    make_worker: MakeWorker, users_web_template: dict[str, Any], store: Store
) -> None:
    worker = make_worker(users_web_template)
    volume = next(v for v in worker.pod["spec"]["volumes"] if v["name"] == "secrets")
    missing_key = {
        "name": "secrets",
        "secret": {"secretName": "polyframe-credentials", "items": [{"key": "nope", "path": "x"}]},
    }

    with pytest.raises(ConfigError) as raised:
        worker._volume_files(missing_key)
    assert str(raised.value).startswith('MountVolume.SetUp failed for volume "secrets" : ')
    assert str(raised.value).endswith("references non-existent secret key: nope")

    store.remove("Secret", "polyframe-users-fastapi")
    with pytest.raises(ConfigError) as raised:
        worker._volume_files(volume)
    assert str(raised.value) == (
        'MountVolume.SetUp failed for volume "secrets" : secret "polyframe-users-fastapi" not found'
    )


def test_a_missing_item_key_fails_the_mount_with_the_kubelets_words(
    make_worker: MakeWorker,
) -> None:
    worker = make_worker({"spec": {"containers": [_container([])]}})
    volume = {
        "name": "secrets",
        "secret": {"secretName": "polyframe-credentials", "items": [{"key": "nope", "path": "x"}]},
    }

    with pytest.raises(ConfigError) as raised:
        worker._volume_files(volume)

    assert str(raised.value) == (
        'MountVolume.SetUp failed for volume "secrets" : references non-existent secret key: nope'
    )


def test_an_optional_source_that_is_missing_mounts_nothing(make_worker: MakeWorker) -> None:
    worker = make_worker({"spec": {"containers": [_container([])]}})
    volume = {"name": "maybe", "configMap": {"name": "absent", "optional": True}}

    assert worker._volume_files(volume) == {}


@needs_root
def test_write_volumes_of_the_users_web_pod(
    make_worker: MakeWorker, users_web_template: dict[str, Any], store: Store
) -> None:
    worker = make_worker(users_web_template)

    worker._write_volumes()

    secrets = worker.volumes_dir / "secrets"
    key = secrets / "jwt-private-key.pem"
    assert sorted(p.name for p in secrets.iterdir()) == [
        "jwt-private-key.pem",
        "service-secret",
        "trusted-services.json",
    ]
    assert key.read_bytes() == _decoded(store, "polyframe-users-fastapi", "jwt-private-key")
    assert stat.S_IMODE(key.stat().st_mode) == 0o440
    assert (key.stat().st_uid, key.stat().st_gid) == (0, 10001)  # readable through fsGroup
    tmp = worker.volumes_dir / "tmp"
    assert tmp.is_dir()
    assert stat.S_IMODE(tmp.stat().st_mode) == 0o2777
    assert tmp.stat().st_gid == 10001
    # automountServiceAccountToken: false in the chart
    assert not (worker.volumes_dir / TOKEN_VOLUME).exists()


@needs_root
def test_write_volumes_replaces_what_a_previous_write_left(
    make_worker: MakeWorker, store: Store
) -> None:
    template = {
        "spec": {
            "automountServiceAccountToken": True,
            "serviceAccountName": "polyframe-e2e",
            "containers": [_container([])],
            "volumes": [
                {"name": "creds", "secret": {"secretName": "polyframe-credentials"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        }
    }
    worker = make_worker(template)
    worker.node.service_account_tokens["polyframe-e2e"] = "token-of-e2e"
    worker._write_volumes()
    secret = store.get("Secret", "polyframe-credentials")
    assert secret is not None
    secret["data"] = {"only": base64.b64encode(b"one").decode()}

    worker._write_volumes()

    creds = worker.volumes_dir / "creds"
    assert [p.name for p in creds.iterdir()] == ["only"]
    assert (creds / "only").read_bytes() == b"one"
    assert stat.S_IMODE((creds / "only").stat().st_mode) == 0o644
    scratch = worker.volumes_dir / "scratch"
    assert stat.S_IMODE(scratch.stat().st_mode) == 0o777  # no fsGroup
    token = worker.volumes_dir / TOKEN_VOLUME
    assert (token / "token").read_text() == "token-of-e2e"
    assert (token / "namespace").read_text() == "polyframe"
    assert not (token / "ca.crt").exists()  # no API CA given to this node


def test_an_emptydir_over_its_size_limit_evicts_the_pod(make_worker: MakeWorker) -> None:
    template = {
        "spec": {
            "containers": [_container([])],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Ki"}}],
        }
    }
    worker = make_worker(template)
    (worker.volumes_dir / "tmp").mkdir(parents=True)
    (worker.volumes_dir / "tmp" / "small").write_bytes(b"x" * 1000)

    assert not worker._evicted()

    (worker.volumes_dir / "tmp" / "more").write_bytes(b"x" * 100)
    assert worker._evicted()
    assert (worker.phase, worker.reason) == ("Failed", "Evicted")
    assert worker.message == 'Usage of EmptyDir volume "tmp" exceeds the limit "1Ki".'
    # marked as the kubelet marks the pods it evicts (a Job's podFailurePolicy reads it)
    assert worker.conditions["DisruptionTarget"]["status"] == "True"


# -- podman run ----------------------------------------------------------------------------------


@pytest.fixture
def web_worker(make_worker: MakeWorker, users_web_template: dict[str, Any]) -> PodWorker:
    worker = make_worker(users_web_template, name="polyframe-users-fastapi-5d8c7b9f4-m3n4b")
    worker.infra = "pfr-t3st01-polyframe-users-fastapi-5d8c7b9f4-m3n4b"
    return worker


def test_run_args_of_the_users_web_container(web_worker: PodWorker, built: dict[str, str]) -> None:
    container = web_worker.containers[0]
    env = web_worker._env(container)

    args = web_worker._run_args(container, "pfr-t3st01-web-0", env)

    assert args[:4] == ["run", "--detach", "--name", "pfr-t3st01-web-0"]
    assert flag(args, "--network") == [f"container:{web_worker.infra}"]
    assert flag(args, "--pull") == ["never"]
    assert "--read-only" in args
    assert "--read-only-tmpfs=false" in args
    assert flag(args, "--cap-drop") == ["ALL"]
    assert flag(args, "--cap-add") == []
    assert flag(args, "--security-opt") == ["no-new-privileges"]  # RuntimeDefault: no override
    assert flag(args, "--user") == ["10001:10001"]
    assert flag(args, "--group-add") == ["10001"]
    memory = str(384 * 2**20)
    assert flag(args, "--memory") == [memory]
    assert flag(args, "--memory-swap") == [memory]  # no swap beyond the limit
    assert flag(args, "--cpus") == ["1.000"]
    assert flag(args, "--cpu-shares") == ["51"]  # 50m of 1024 shares
    volumes = web_worker.volumes_dir
    # a bind mount per volumeMount, read-only where the spec says so; no token (not automounted)
    assert flag(args, "--mount") == [
        f"type=bind,source={volumes / m['name']},destination={m['mountPath']}"
        + (",ro=true" if m.get("readOnly") else "")
        for m in container.spec["volumeMounts"]
    ]
    assert (
        f"type=bind,source={volumes / 'secrets'},destination=/etc/polyframe/secrets,ro=true"
        in flag(args, "--mount")
    )
    # the values in a file (0600, removed once the engine has read it), none on the command line
    assert flag(args, "--env-file") == [str(web_worker._env_file("pfr-t3st01-web-0"))]
    assert flag(args, "--env") == []
    assert "--entrypoint" not in args  # the chart sets no command: the image's runs
    assert args[-1] == built["polyframe/users-fastapi"]


def test_run_args_never_carry_an_environment_value(web_worker: PodWorker, store: Store) -> None:
    container = web_worker.containers[0]
    env = web_worker._env(container)
    secret = _secret(store, "polyframe-postgresql", "users-fastapi-database-url")

    args = web_worker._run_args(container, "pfr-t3st01-web-0", env)

    assert env["USERS_DATABASE_URL"] == secret
    assert all("=" not in name for name in flag(args, "--env"))
    assert not any(secret in arg for arg in args)
    assert not any(value in args for value in env.values() if len(value) > 8)


def test_run_args_with_a_command_set_it_as_the_entry_point_and_args_after_the_image(
    web_worker: PodWorker, built: dict[str, str]
) -> None:
    container = web_worker.containers[0]
    container.spec["command"] = ["/bin/sh", "-c"]
    container.spec["args"] = ["exec serve --port $(UVICORN_PORT) --literal $$(HOME)", "$(NOPE)"]

    args = web_worker._run_args(container, "i", web_worker._env(container))

    assert json.loads(flag(args, "--entrypoint")[0]) == ["/bin/sh", "-c"]
    image = args.index(built["polyframe/users-fastapi"])
    assert args[image + 1 :] == ["exec serve --port 8000 --literal $(HOME)", "$(NOPE)"]


def test_run_args_mount_a_sub_path_of_a_volume(make_worker: MakeWorker, kind_render: Any) -> None:
    deployment = kind_render.get("Deployment", "polyframe-admin-django")
    worker = make_worker(deployment["spec"]["template"])
    worker.infra = "infra"
    sub = worker.volumes_dir / "tmp" / "prometheus-multiproc"
    sub.mkdir(parents=True)  # as the kubelet leaves it after the first start
    container = worker.containers[0]

    args = worker._run_args(container, "i", {})

    mount = next(m for m in container.spec["volumeMounts"] if m.get("subPath"))
    assert f"type=bind,source={sub},destination={mount['mountPath']}" in flag(args, "--mount")


@pytest.mark.parametrize("sub_path", ["../../etc", "/etc", "a/../../b"])
def test_a_sub_path_may_not_leave_its_volume(web_worker: PodWorker, sub_path: str) -> None:
    container = web_worker.containers[0]
    container.spec["volumeMounts"].append(
        {"name": "tmp", "mountPath": "/var/cache", "subPath": sub_path}
    )

    with pytest.raises(SpecError, match="escapes the volume"):
        web_worker._run_args(container, "i", {})


def test_run_args_mount_the_service_account_token_when_the_pod_automounts_it(
    web_worker: PodWorker,
) -> None:
    web_worker.pod["spec"]["automountServiceAccountToken"] = True
    container = web_worker.containers[0]

    args = web_worker._run_args(container, "i", {})

    token = web_worker.volumes_dir / TOKEN_VOLUME
    assert flag(args, "--mount")[-1] == (
        f"type=bind,source={token},destination={TOKEN_PATH},ro=true"
    )


def test_run_args_of_an_unconfined_container_and_refused_contexts(web_worker: PodWorker) -> None:
    container = web_worker.containers[0]
    del container.spec["securityContext"]["seccompProfile"]
    del web_worker.pod["spec"]["securityContext"]["seccompProfile"]
    container.spec["securityContext"]["allowPrivilegeEscalation"] = True

    args = web_worker._run_args(container, "i", {})

    assert flag(args, "--security-opt") == ["seccomp=unconfined"]
    container.spec["securityContext"]["privileged"] = True
    with pytest.raises(SpecError, match="privileged containers are not run"):
        web_worker._run_args(container, "i", {})


def test_start_keeps_the_engines_own_environment(
    web_worker: PodWorker, fake_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []

    def fake_run(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        env_file = Path(argv[argv.index("--env-file") + 1])
        calls.append({"argv": argv, "mode": env_file.stat().st_mode & 0o777,
                      "lines": env_file.read_text().splitlines(), **kwargs})  # fmt: skip
        return subprocess.CompletedProcess(argv, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    container = web_worker.containers[0]
    env = web_worker._env(container)

    assert web_worker._start(container)

    (call,) = calls
    assert call["env"].get("HOME") == fake_engine.environ().get("HOME")
    assert call["env"]["PATH"] == fake_engine.environ()["PATH"]
    # The values reached the engine through a file only it could read, gone once read.
    assert call["mode"] == 0o600
    assert call["lines"] == [f"{name}={value}" for name, value in env.items()]
    env_file = Path(call["argv"][call["argv"].index("--env-file") + 1])
    assert not env_file.exists()


# -- the kubelet's non-root check ----------------------------------------------------------------


def _image(fake_engine: Any, user: str) -> str:
    image = "polyframe/app:1"
    fake_engine.images[image] = {"User": user}
    return image


def _non_root_worker(make_worker: MakeWorker, fake_engine: Any, user: str) -> PodWorker:
    container = {"name": "app", "image": _image(fake_engine, user)}
    return make_worker(
        {"spec": {"securityContext": {"runAsNonRoot": True}, "containers": [container]}}
    )


@pytest.mark.parametrize(("user", "uid"), [("10001", 10001), ("10001:10001", 10001)])
def test_check_non_root_takes_a_numeric_image_user(
    make_worker: MakeWorker, fake_engine: Any, user: str, uid: int
) -> None:
    worker = _non_root_worker(make_worker, fake_engine, user)

    assert worker._check_non_root(worker.containers[0], None) == uid


@pytest.mark.parametrize("user", ["", "0", "0:0", "root"])
def test_check_non_root_refuses_an_image_that_runs_as_root(
    make_worker: MakeWorker, fake_engine: Any, user: str
) -> None:
    worker = _non_root_worker(make_worker, fake_engine, user)

    with pytest.raises(ConfigError) as raised:
        worker._check_non_root(worker.containers[0], None)

    if user == "root":
        assert str(raised.value).startswith(
            "container has runAsNonRoot and image has non-numeric user (root), cannot verify "
            "user is non-root"
        )
    else:
        assert str(raised.value).startswith("container has runAsNonRoot and image will run as root")


def test_check_non_root_lets_any_user_run_without_run_as_non_root(
    make_worker: MakeWorker, fake_engine: Any
) -> None:
    worker = make_worker(
        {"spec": {"containers": [{"name": "app", "image": _image(fake_engine, "app")}]}}
    )

    assert worker._check_non_root(worker.containers[0], None) is None
    assert worker._check_non_root(worker.containers[0], 0) == 0


def test_check_non_root_takes_the_spec_user_over_the_images(
    make_worker: MakeWorker, fake_engine: Any
) -> None:
    worker = _non_root_worker(make_worker, fake_engine, "0")

    assert worker._check_non_root(worker.containers[0], 10001) == 10001


def test_check_non_root_refuses_an_explicit_root_user_with_the_kubelets_message(
    make_worker: MakeWorker, fake_engine: Any
) -> None:
    worker = _non_root_worker(make_worker, fake_engine, "10001")

    with pytest.raises(ConfigError) as raised:
        worker._check_non_root(worker.containers[0], 0)

    assert str(raised.value).startswith("container's runAsUser breaks non-root policy")


# -- status, probes, restarts and giving up ------------------------------------------------------


def test_a_new_pod_is_published_pending_and_a_delete_marks_it(
    web_worker: PodWorker, store: Store
) -> None:
    pod = store.get("Pod", web_worker.name)
    assert pod is not None
    status = pod["status"]
    assert status["phase"] == "Pending"
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions == {
        "PodScheduled": "True",
        "Initialized": "False",
        "ContainersReady": "False",
        "Ready": "False",
    }
    assert status["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}

    web_worker.delete(5)

    assert web_worker.deleting.is_set()
    assert pod["metadata"]["deletionGracePeriodSeconds"] == 5
    assert "deletionTimestamp" in pod["metadata"]


def test_a_pod_is_ready_only_running_with_every_container_ready_and_not_deleting(
    web_worker: PodWorker, store: Store
) -> None:
    web_worker.phase = "Running"
    web_worker.containers[0].ready = True
    web_worker.publish()
    assert web_worker.ready
    assert web_worker.ready_for() >= 0

    web_worker.delete()

    assert not web_worker.ready
    pod = store.get("Pod", web_worker.name)
    assert pod is not None
    assert {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"] == "False"


def test_probe_defaults_are_the_kubelets() -> None:
    probe = Probe("readinessProbe", {"httpGet": {"path": "/", "port": 80}})

    assert (probe.period, probe.timeout, probe.failure_threshold, probe.success_threshold) == (
        10.0,
        1.0,
        3,
        1,
    )


def test_container_port_by_number_or_name(web_worker: PodWorker) -> None:
    container = web_worker.containers[0]

    assert web_worker._container_port(container, "http") == 8000
    assert web_worker._container_port(container, 9000) == 9000
    assert web_worker._container_port(container, "9100") == 9100
    with pytest.raises(SpecError, match="no port named 'metrics'"):
        web_worker._container_port(container, "metrics")


def _running(container: ContainerRun) -> None:
    container.current = "instance"
    container.state = {"running": {"startedAt": "2025-01-01T00:00:00Z"}}
    container.started = True
    container.started_at = time.monotonic()


def test_readiness_failures_unready_the_container_at_the_threshold(
    web_worker: PodWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = web_worker.containers[0]
    _running(container)
    container.ready = True
    probe = Probe("readinessProbe", container.spec["readinessProbe"])
    monkeypatch.setattr(web_worker, "_check", lambda _c, _p: (False, "HTTP 503"))

    for _ in range(probe.failure_threshold - 1):
        assert web_worker._probe(container, probe)
        assert container.ready
    assert web_worker._probe(container, probe)

    assert not container.ready
    assert container.restart_count == 0


def test_liveness_failures_restart_the_container_at_the_threshold(
    web_worker: PodWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = web_worker.containers[0]
    _running(container)
    probe = Probe("livenessProbe", container.spec["livenessProbe"])
    killed: list[int] = []
    started: list[ContainerRun] = []
    monkeypatch.setattr(web_worker, "_check", lambda _c, _p: (False, "timeout"))

    def kill(killed_container: ContainerRun, grace: int) -> None:
        killed.append(grace)
        killed_container.current = None  # as _record_exit leaves it

    monkeypatch.setattr(web_worker, "_kill", kill)
    monkeypatch.setattr(web_worker, "_start", lambda c: started.append(c) or True)

    results = [web_worker._probe(container, probe) for _ in range(probe.failure_threshold)]

    assert results == [True, True, False]
    assert killed == [30]  # terminationGracePeriodSeconds
    # Restarted as after any exit, by the kubelet's back-off (the first time at once): the
    # next look starts it, and that start is its first restart.
    assert started == []
    assert container.restart_pending
    web_worker._watch(container, time.monotonic())
    assert started == [container]
    assert container.restart_count == 1


def test_a_startup_probe_success_starts_the_container(
    web_worker: PodWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = web_worker.containers[0]
    _running(container)
    container.started = False
    startup = Probe("startupProbe", container.spec["startupProbe"])
    readiness = Probe("readinessProbe", container.spec["readinessProbe"])
    container.probes = {"startupProbe": startup, "readinessProbe": readiness}
    monkeypatch.setattr(web_worker, "_check", lambda _c, _p: (True, ""))

    assert web_worker._probe_applies(container, startup)
    assert not web_worker._probe_applies(container, readiness)
    web_worker._probe(container, startup)

    assert container.started
    assert not container.ready  # readiness decides
    assert web_worker._probe_applies(container, readiness)
    web_worker._probe(container, readiness)
    assert container.ready


def test_restart_back_off_doubles_to_five_minutes_and_resets_after_ten(
    web_worker: PodWorker,
) -> None:
    container = web_worker.containers[0]
    delays = []
    for _ in range(8):
        container.started_at = time.monotonic()
        web_worker._schedule_restart(container)
        delays.append(round(container.retry_at - time.monotonic()))

    assert delays == [0, 10, 20, 40, 80, 160, 300, 300]  # the first restart at once
    container.started_at = time.monotonic() - 601  # ten minutes of running: forgotten
    web_worker._schedule_restart(container)
    assert container.retry_at <= time.monotonic()
    assert container.backoff == 10.0


@pytest.mark.parametrize(
    ("policy", "code", "restarts"),
    [
        ("Always", 0, True),
        ("Always", 1, True),
        ("OnFailure", 0, False),
        ("OnFailure", 2, True),
        ("Never", 1, False),
    ],
)
def test_restart_policy(web_worker: PodWorker, policy: str, code: int, restarts: bool) -> None:
    container = web_worker.containers[0]
    web_worker.restart_policy = policy
    container.state = {"terminated": {"exitCode": code}}

    assert web_worker._may_restart(container) is restarts


def test_finished_pods_succeed_only_when_every_container_exited_zero(
    make_worker: MakeWorker,
) -> None:
    worker = make_worker(
        {
            "spec": {
                "restartPolicy": "Never",
                "containers": [_container([]), {**_container([]), "name": "b"}],
            }
        }
    )
    worker.containers[0].state = {"terminated": {"exitCode": 0}}
    worker.containers[1].current = "still-running"
    assert not worker._finished()

    worker.containers[1].current = None
    worker.containers[1].state = {"terminated": {"exitCode": 0}}
    assert worker._finished()
    assert worker.phase == "Succeeded"

    worker.containers[1].state = {"terminated": {"exitCode": 3}}
    assert worker._finished()
    assert worker.phase == "Failed"


def test_logs_say_what_kubectl_says_when_there_are_none(web_worker: PodWorker) -> None:
    with pytest.raises(LookupError, match=r'container "web" in pod ".*" is waiting to start'):
        web_worker.log(None, previous=False, tail_lines=None)
    with pytest.raises(LookupError, match='previous terminated container "web" in pod'):
        web_worker.log("web", previous=True, tail_lines=None)
    with pytest.raises(LookupError, match="container nope is not valid for pod"):
        web_worker.log("nope", previous=False, tail_lines=None)


def test_previous_logs_are_read_and_tailed(web_worker: PodWorker, tmp_path: Path) -> None:
    container = web_worker.containers[0]
    container.previous_log = tmp_path / "web.0.log"
    container.previous_log.write_text("one\ntwo\nthree\n")
    container.restart_count = 1

    assert web_worker.log("web", previous=True, tail_lines=2) == "two\nthree\n"
    assert web_worker.log("web", previous=False, tail_lines=None) == "one\ntwo\nthree\n"


def test_hopeless_is_none_for_a_pod_that_may_still_come_up(web_worker: PodWorker) -> None:
    container = web_worker.containers[0]
    assert web_worker.hopeless() is None

    _running(container)
    container.restart_count = 2
    container.started_at = time.monotonic() - 100
    assert web_worker.hopeless() is None


def test_hopeless_after_three_restarts(web_worker: PodWorker) -> None:
    web_worker.containers[0].restart_count = 3

    assert web_worker.hopeless() == "web: restarted 3 times"


def test_hopeless_after_long_unreadiness(web_worker: PodWorker) -> None:
    container = web_worker.containers[0]
    _running(container)
    container.started_at = time.monotonic() - GIVE_UP_UNREADY - 5

    why = web_worker.hopeless()

    assert why is not None
    assert why.startswith("web: running but not ready for 15")


def test_hopeless_for_an_image_the_runner_never_pulls(web_worker: PodWorker) -> None:
    web_worker.containers[0].state = {
        "waiting": {"reason": "ErrImageNeverPull", "message": "image x is not in local storage"}
    }

    assert web_worker.hopeless() == "web: image x is not in local storage"


def test_a_config_error_leaves_the_container_waiting_with_the_kubelets_reason(
    web_worker: PodWorker, store: Store
) -> None:
    store.remove("Secret", "polyframe-postgresql")
    container = web_worker.containers[0]

    assert not web_worker._start(container)

    assert container.state == {
        "waiting": {
            "reason": "CreateContainerConfigError",
            "message": 'secret "polyframe-postgresql" not found',
        }
    }
    assert container.retry_at > 0
    events = [e for e in store.list("events") if e["involvedObject"]["name"] == web_worker.name]
    assert [(e["reason"], e["message"], e["type"]) for e in events] == [
        ("Failed", 'Error: secret "polyframe-postgresql" not found', "Warning")
    ]


def test_hopeless_for_a_config_error_that_lasts(
    web_worker: PodWorker, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.remove("Secret", "polyframe-postgresql")
    container = web_worker.containers[0]
    assert not web_worker._start(container)
    assert web_worker.hopeless() is None  # not yet
    started = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: started + GIVE_UP_STUCK + 1)
    assert not web_worker._start(container)  # the kubelet's retry, as _watch makes it

    assert web_worker.hopeless() == (
        'web: CreateContainerConfigError: secret "polyframe-postgresql" not found'
    )


def test_hopeless_for_a_mount_that_keeps_failing(
    web_worker: PodWorker, store: Store, fake_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_engine.images[web_worker.containers[0].spec["image"]] = {"User": "10001"}
    # only the volume that fails: nothing is written (no chown, so no root needed)
    volumes = web_worker.pod["spec"]["volumes"]
    web_worker.pod["spec"]["volumes"] = [v for v in volumes if v["name"] == "secrets"]
    store.remove("Secret", "polyframe-users-fastapi")

    assert not web_worker._prepare()
    assert web_worker.hopeless() is None  # not yet
    started = time.monotonic()
    monkeypatch.setattr(time, "monotonic", lambda: started + GIVE_UP_STUCK + 1)

    assert web_worker.hopeless() == (
        'MountVolume.SetUp failed for volume "secrets" : secret "polyframe-users-fastapi" not found'
    )
    events = [e for e in store.list("events") if e["involvedObject"]["name"] == web_worker.name]
    assert [(e["reason"], e["type"]) for e in events] == [("FailedMount", "Warning")]


def test_hopeless_for_an_image_that_is_not_there(web_worker: PodWorker, fake_engine: Any) -> None:
    assert not web_worker._prepare()  # the fake engine holds no image

    why = web_worker.hopeless()

    assert why is not None
    assert why.startswith(f"web: image {web_worker.containers[0].spec['image']} is not in local")


def _failing_probe(
    worker: PodWorker, monkeypatch: pytest.MonkeyPatch, answers: list[str]
) -> tuple[ContainerRun, Probe]:
    """The web container running, its readiness probe answered with ``answers`` in turn."""
    container = worker.containers[0]
    _running(container)
    probe = Probe("readinessProbe", container.spec["readinessProbe"])
    container.probes = {"readinessProbe": probe}
    replies = iter(answers)
    monkeypatch.setattr(worker, "_check", lambda _c, _p: (False, next(replies)))
    return container, probe


def test_hopeless_for_a_probe_answered_with_a_client_error(
    web_worker: PodWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    not_found = "HTTP probe failed with statuscode: 404"
    container, probe = _failing_probe(web_worker, monkeypatch, [not_found] * 3)
    for _ in range(probe.failure_threshold - 1):
        web_worker._probe(container, probe)
        assert web_worker.hopeless() is None

    web_worker._probe(container, probe)
    why = web_worker.hopeless()

    assert why is not None
    assert why.startswith("web: Readiness probe")
    assert why.endswith(f"failed: {not_found}")


def test_a_probe_answered_with_a_server_error_may_still_pass(
    web_worker: PodWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    container, probe = _failing_probe(
        web_worker, monkeypatch, ["HTTP probe failed with statuscode: 503"] * 5
    )

    for _ in range(5):
        web_worker._probe(container, probe)

    assert not container.ready
    assert web_worker.hopeless() is None  # the app may be starting: 503 until it is


def test_one_client_error_after_server_errors_is_not_hopeless(
    web_worker: PodWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = ["HTTP probe failed with statuscode: 503"] * 3
    answers.append("HTTP probe failed with statuscode: 404")
    container, probe = _failing_probe(web_worker, monkeypatch, answers)

    for _ in answers:
        web_worker._probe(container, probe)

    assert web_worker.hopeless() is None
