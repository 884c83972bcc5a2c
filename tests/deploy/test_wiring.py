"""The charts wire each service as `make up` does (tools/polyframe-dev), with cluster addresses.

Same settings (environment variables, secrets as `<NAME>_FILE` files), same commands (server,
migrations, outbox dispatcher), same credentials layout (each service's own, and the others'
that it trusts). And the rendered environment, with the rendered Secrets mounted as files, is
accepted by the services' own settings classes in production mode.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from polyframe_dev.localsecrets import LocalSecrets
from polyframe_dev.services import SERVICES, Context

REPO_ROOT = Path(__file__).resolve().parents[2]
NAMES = ("users-fastapi", "legacy-flask", "admin-django")
PREFIX = {"users-fastapi": "USERS_", "legacy-flask": "ORDERS_", "admin-django": "ADMIN_"}
#: Local settings a cluster supplies otherwise, and where from.
ELSEWHERE = {
    "ADMIN_STATIC_ROOT": "the image (collected at build time)",
    # Locally every request comes from 127.0.0.1, so `make up` raises the per-address rate
    # limits; a cluster keeps the service's own defaults (kind's values raise them for e2e).
    "USERS_LOGIN_LIMIT_PER_IP": "the service's default (extraEnv on kind)",
    "USERS_REGISTER_LIMIT_PER_IP": "the service's default (extraEnv on kind)",
}
#: Settings of prometheus_client's multiprocess mode: gunicorn's master serves the merged metrics
#: of its worker on a port of its own (<PREFIX>_METRICS_BIND), locally and in the cluster alike,
#: even with one worker; a single uvicorn process and the outbox dispatchers never use it.
MULTIPROCESS_ONLY = ("PROMETHEUS_MULTIPROC_DIR", "_METRICS_BIND")
#: Server options the local command line passes as flags and the image reads from UVICORN_*.
UVICORN_FLAGS = {
    "--host": "UVICORN_HOST",
    "--port": "UVICORN_PORT",
    "--workers": "UVICORN_WORKERS",
    "--forwarded-allow-ips": "UVICORN_FORWARDED_ALLOW_IPS",
    "--timeout-graceful-shutdown": "UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN",
}


class _Ports(dict[str, int]):
    """A port for every name polyframe_dev asks for (servers, workers' and masters' metrics)."""

    def __missing__(self, name: str) -> int:
        self[name] = 8100 + len(self)
        return self[name]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Context:
    """`make up`'s context with one worker process per server, as in a cluster."""
    folder = tmp_path_factory.mktemp("local")
    return Context(
        data_dir=folder, secrets=LocalSecrets(folder / "secrets"), ports=_Ports(), workers=1
    )


def _deployment(rendered: Any, service: str, component: str) -> dict[str, Any]:
    for manifest in rendered.of_kind("Deployment"):
        labels = manifest.labels
        if (
            labels["app.kubernetes.io/name"] == service
            and labels["app.kubernetes.io/component"] == component
        ):
            return manifest.obj  # type: ignore[no-any-return]
    raise AssertionError(f"no {component} Deployment of {service}")


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container["env"]}


def _as_local(command: list[str]) -> list[str]:
    """The local command with the interpreter spelled as in the image (`python`)."""
    return ["python" if part == sys.executable else part for part in command]


def _local_env(service: str, local: Context, worker: str | None = None) -> dict[str, str]:
    """What `make up` sets for a service's server (or one of its background workers)."""
    spec = SERVICES[service]
    if worker is not None:
        return (
            dict(spec.worker_env(local, worker))
            if hasattr(spec, "worker_env")
            else dict(spec.env(local))
        )
    return dict(spec.server_env(local)) if hasattr(spec, "server_env") else dict(spec.env(local))


def _multiprocess_only(name: str) -> bool:
    return name == MULTIPROCESS_ONLY[0] or (
        name.endswith(MULTIPROCESS_ONLY[1]) and "OUTBOX" not in name
    )


def _check_settings(
    service: str, local_env: dict[str, str], chart_env: dict[str, dict[str, Any]]
) -> None:
    # Multiprocess mode exactly where `make up` uses it with one worker per server: gunicorn's
    # web servers (the master serves the metrics), never uvicorn alone or a dispatcher.
    local_multiprocess = {name for name in local_env if _multiprocess_only(name)}
    chart_multiprocess = {name for name in chart_env if _multiprocess_only(name)}
    assert chart_multiprocess == local_multiprocess, service
    for name, value in local_env.items():
        if name in ELSEWHERE:
            continue
        assert name in chart_env, f"{service}: {name} is set by `make up` but not by the chart"
        if name == MULTIPROCESS_ONLY[0]:
            # A folder of the pod's writable /tmp (locally one under the data folder).
            assert chart_env[name]["value"].startswith("/tmp/"), name
        elif name.endswith(MULTIPROCESS_ONLY[1]):
            assert chart_env[name]["value"].startswith("0.0.0.0:"), name  # the pod's address
        if name.endswith("_ENVIRONMENT"):
            assert chart_env[name]["value"] == "production"  # locally: development
        elif name.endswith(("_INSTRUMENTATION", "_DRILLS")):
            assert chart_env[name]["value"] == value, name  # the same switches, the same defaults
        elif name.endswith("_OUTBOX_METRICS_BIND"):
            assert chart_env[name]["value"].startswith("0.0.0.0:"), name  # the pod's, not loopback


@pytest.mark.parametrize("service", NAMES)
def test_the_cluster_sets_every_setting_the_local_platform_sets(
    render_case: Any, local: Context, service: str
) -> None:
    rendered = render_case("polyframe", "default")
    web = _env(_deployment(rendered, service, "web")["spec"]["template"]["spec"]["containers"][0])
    _check_settings(service, _local_env(service, local), web)
    workers = SERVICES[service].workers
    for worker in workers(local) if callable(workers) else workers:
        outbox = _deployment(rendered, service, "outbox")["spec"]["template"]["spec"]["containers"][
            0
        ]
        _check_settings(service, _local_env(service, local, worker), _env(outbox))


@pytest.mark.parametrize("service", NAMES)
def test_secret_files_are_mounted_from_secret_keys(render_case: Any, service: str) -> None:
    rendered = render_case("polyframe", "default")
    spec = _deployment(rendered, service, "web")["spec"]["template"]["spec"]
    env = _env(spec["containers"][0])
    mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    (projected,) = [v["projected"] for v in spec["volumes"] if v["name"] == "secrets"]
    files = {}
    for source in projected["sources"]:
        secret = rendered.named("Secret", source["secret"]["name"])
        for item in source["secret"]["items"]:
            assert item["key"] in secret.obj["data"], f"{secret} has no key {item['key']}"
            files[f"{mounts['secrets']}/{item['path']}"] = secret.obj["data"][item["key"]]
    file_vars = {name: e["value"] for name, e in env.items() if name.endswith("_FILE")}
    assert file_vars, service
    assert set(file_vars.values()) == set(files), (file_vars, sorted(files))


def test_each_service_trusts_exactly_the_others_credentials(render_case: Any) -> None:
    """As .data/secrets/trusted-by-<service>.json locally (polyframe_dev.localsecrets)."""
    secret = (
        render_case("polyframe", "default").named("Secret", "polyframe-credentials").obj["data"]
    )
    own = {name: base64.b64decode(secret[name]).decode() for name in NAMES}
    assert len(set(own.values())) == 3
    assert all(len(v) >= 32 for v in own.values())
    for name in NAMES:
        trusted = json.loads(base64.b64decode(secret[f"trusted-by-{name}.json"]))
        assert trusted == {other: value for other, value in own.items() if other != name}


#: URL settings that name no peer service: the database, the rate limits' Redis.
NOT_PEER_URLS = ("DATABASE_URL", "RATE_LIMIT_STORAGE_URL")


@pytest.mark.parametrize("service", NAMES)
def test_the_peer_urls_name_the_peers_services(
    render_case: Any, local: Context, service: str
) -> None:
    rendered = render_case("polyframe", "default")
    services = {m.name: m for m in rendered.of_kind("Service")}
    env = _env(_deployment(rendered, service, "web")["spec"]["template"]["spec"]["containers"][0])
    local_env = SERVICES[service].env(local)
    for name, value in local_env.items():
        if not name.endswith("_URL") or name.endswith(NOT_PEER_URLS):
            continue
        peer = next(n for n in NAMES if value == local.url(n))
        match = re.fullmatch(r"http://([a-z0-9-]+):([0-9]+)", env[name]["value"])
        assert match, env[name]
        target = services[match.group(1)]
        assert target.labels["app.kubernetes.io/name"] == peer, (name, peer)
        assert int(match.group(2)) == target.obj["spec"]["ports"][0]["port"]


@pytest.mark.parametrize("service", NAMES)
def test_migrations_and_the_dispatcher_run_the_local_commands(
    render_case: Any, local: Context, service: str
) -> None:
    rendered = render_case("polyframe", "default")
    spec = SERVICES[service]
    (job,) = [m for m in rendered.of_kind("Job") if m.labels["app.kubernetes.io/name"] == service]
    job_command = job.obj["spec"]["template"]["spec"]["containers"][0]["command"]
    # The first local setup step is the migration (then static files, done in the image, and demo
    # data); the Job runs it, without the local run's quieter verbosity flags.
    migrate = _as_local(spec.setup(local)[0])
    assert "migrate" in job_command
    assert migrate[: len(job_command)] == job_command
    # polyframe_dev's worker table: a function of the context, or (since the observability
    # work) the mapping itself.
    workers = spec.workers(local) if callable(spec.workers) else dict(spec.workers or {})
    outbox = [
        m
        for m in rendered.of_kind("Deployment")
        if m.labels["app.kubernetes.io/name"] == service
        and m.labels["app.kubernetes.io/component"] == "outbox"
    ]
    assert len(outbox) == len(workers)
    for (_name, command), deployment in zip(sorted(workers.items()), outbox, strict=True):
        assert deployment.obj["spec"]["template"]["spec"]["containers"][0]["command"] == _as_local(
            command
        )


def _entrypoint(service: str) -> list[str]:
    """What the image's entry point execs (services/<name>/image/entrypoint.sh), its own
    arguments (``"$@"``) aside."""
    text = (REPO_ROOT / "services" / service / "image" / "entrypoint.sh").read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("exec ")]
    command = shlex.split(line)
    assert command[-1] == "$@", command
    return command[1:-1]


@pytest.mark.parametrize("service", NAMES)
def test_the_image_serves_like_make_up(render_case: Any, local: Context, service: str) -> None:
    """The image's entry point is the local server command; what the local command passes as
    flags (address, port, workers, drain) the chart passes as environment variables."""
    serve = _as_local(SERVICES[service].serve(local))
    assert serve[:2] == ["python", "-m"]
    expected = serve[2:]
    env = _env(
        _deployment(render_case("polyframe", "default"), service, "web")["spec"]["template"][
            "spec"
        ]["containers"][0]
    )
    if service == "users-fastapi":
        flags_from_env = []
        index = 0
        while index < len(expected):
            if expected[index] in UVICORN_FLAGS:
                assert UVICORN_FLAGS[expected[index]] in env, expected[index]
                index += 2
            else:
                flags_from_env.append(expected[index])
                index += 1
        expected = flags_from_env
        assert env["UVICORN_WORKERS"]["value"] == "1"
    else:
        prefix = PREFIX[service]
        assert env[f"{prefix}WORKERS"]["value"] == "1"
        assert env[f"{prefix}BIND"]["value"] == "0.0.0.0:8000"
    assert _entrypoint(service) == expected


# -- the services accept what the chart gives them ----------------------------------------------


def _container_env(
    rendered: Any, spec: dict[str, Any], container: dict[str, Any], secrets_dir: Path
) -> dict[str, str]:
    """A container's environment, with its pod's secret files written into ``secrets_dir``."""
    (projected,) = [v["projected"] for v in spec["volumes"] if v["name"] == "secrets"]
    secrets_dir.mkdir(exist_ok=True)
    for source in projected["sources"]:
        data = rendered.named("Secret", source["secret"]["name"]).obj["data"]
        for item in source["secret"]["items"]:
            (secrets_dir / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
    mount = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "secrets")
    env = {}
    for variable in container["env"]:
        name = variable["name"]
        if "value" in variable:
            value = (
                variable["value"]
                .replace(mount, str(secrets_dir))
                .replace("$(POD_IP)", "10.244.0.7")
            )
        elif "secretKeyRef" in variable["valueFrom"]:
            ref = variable["valueFrom"]["secretKeyRef"]
            value = base64.b64decode(
                rendered.named("Secret", ref["name"]).obj["data"][ref["key"]]
            ).decode()
        else:
            value = "10.244.0.7"  # the pod's IP (fieldRef)
        env[name] = value
    return env


def _materialise(
    rendered: Any, service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Set the web container's environment, with its secret files written under tmp_path."""
    spec = _deployment(rendered, service, "web")["spec"]["template"]["spec"]
    for name, value in _container_env(
        rendered, spec, spec["containers"][0], tmp_path / "secrets"
    ).items():
        monkeypatch.setenv(name, value)


#: A database of each service's own kind, for running its commands here (SQLite, no server).
SQLITE_URL = {
    "users-fastapi": "sqlite+aiosqlite:///{}",
    "legacy-flask": "sqlite:///{}",
    "admin-django": "sqlite:///{}",
}


@pytest.mark.parametrize("service", NAMES)
def test_what_needs_the_schema_waits_for_it_with_the_services_own_command(
    render_case: Any, tmp_path: Path, service: str
) -> None:
    """The rendered wait-for-migrations init container (the outbox dispatcher's, the demo-staff
    Job's) and the migration Job run here as they are rendered, with their environment and
    secret files, on an empty database: the wait gives up at its bound, the migration brings
    the schema to head, then the wait passes. Real commands of the services, not a shell loop."""
    import subprocess

    rendered = render_case("polyframe", "kind")
    pods = [
        (m, spec)
        for m, spec, labels in rendered.pods()
        if labels.get("app.kubernetes.io/name") == service
        and labels.get("app.kubernetes.io/component") in ("outbox", "seed", "migrate")
    ]
    (migrate_spec,) = [
        spec for m, spec in pods if m.labels["app.kubernetes.io/component"] == "migrate"
    ]
    (waiting_spec,) = [
        spec for m, spec in pods if m.labels["app.kubernetes.io/component"] != "migrate"
    ]
    (wait,) = waiting_spec["initContainers"]
    database = SQLITE_URL[service].format(tmp_path / "service.db")

    def run(spec: dict[str, Any], container: dict[str, Any], command: list[str]) -> Any:
        env = _container_env(rendered, spec, container, tmp_path / "secrets")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(tuple(PREFIX.values()))},
            **env,
            f"{PREFIX[service]}DATABASE_URL": database,
            "HOME": str(tmp_path),
        }
        assert command[0] == "python"
        return subprocess.run(
            [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=120,
            cwd=tmp_path,
        )  # fmt: skip

    assert wait["command"][-2:] == ["--timeout", "900"]  # migrations.activeDeadlineSeconds
    gave_up = run(waiting_spec, wait, [*wait["command"][:-1], "0"])
    assert gave_up.returncode == 1, gave_up.stderr[-2000:]
    assert f"{service}: not ready after 0s (database: " in gave_up.stderr
    (migrate,) = migrate_spec["containers"]
    migrated = run(migrate_spec, migrate, migrate["command"])
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    ready = run(waiting_spec, wait, wait["command"])
    assert ready.returncode == 0, ready.stderr[-2000:]
    assert f"{service}: ready (database: " in ready.stderr


def test_users_settings_accept_the_chart(
    render_case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from users_fastapi.settings import UsersSettings

    _materialise(render_case("polyframe", "default"), "users-fastapi", tmp_path, monkeypatch)
    settings = UsersSettings()
    assert settings.environment == "production"
    assert settings.database_url.startswith("postgresql+asyncpg://users:")
    assert settings.database_url.endswith(
        "@polyframe-postgresql.polyframe-under-test.svc:5432/users"
    )
    assert settings.signing_key.key_size >= 2048  # the generated RSA key loads
    assert set(settings.trusted_services) == {"legacy-flask", "admin-django"}
    assert settings.admin_url == "http://polyframe-admin-django:8000"


def test_orders_settings_accept_the_chart(
    render_case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from legacy_flask.settings import OrdersSettings

    _materialise(render_case("polyframe", "default"), "legacy-flask", tmp_path, monkeypatch)
    settings = OrdersSettings()
    assert settings.database_url.startswith("postgresql+psycopg://orders:")
    assert settings.service_secret is not None
    assert len(settings.service_secret.get_secret_value()) == 43
    assert set(settings.trusted_services) == {"users-fastapi", "admin-django"}
    assert settings.users_url == "http://polyframe-users-fastapi:8000"


def test_admin_settings_accept_the_chart(
    render_case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from admin_django.conf import AdminSettings

    _materialise(render_case("polyframe", "default"), "admin-django", tmp_path, monkeypatch)
    settings = AdminSettings()
    assert settings.database_url.startswith("postgresql://admin:")
    assert settings.secret_key is not None
    assert len(settings.secret_key.get_secret_value()) == 50
    assert set(settings.trusted_services) == {"users-fastapi", "legacy-flask"}
    # The ingress's host names and the Service's (its peers call it by them) are allowed; the
    # pod's IP is not needed (see the next test) and not added.
    assert {"localhost", "polyframe-admin-django"} <= set(settings.allowed_hosts)
    assert "polyframe-admin-django.polyframe-under-test.svc.cluster.local" in settings.allowed_hosts
    assert "10.244.0.7" not in settings.allowed_hosts  # what $(POD_IP) would have become


@pytest.mark.parametrize(("case", "secure"), [("default", True), ("kind", False)])
def test_the_console_cookies_fit_the_ingress(
    render_case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, secure: bool
) -> None:
    """kind's ingress is plain HTTP (no TLS): a Secure cookie would never come back and every
    staff log-in would fail its CSRF check, so the kind values make them not Secure (with the
    warning production logs for it); everywhere else they stay Secure in production."""
    from admin_django.conf import AdminSettings

    rendered = render_case("polyframe", case)
    _materialise(rendered, "admin-django", tmp_path, monkeypatch)
    settings = AdminSettings()
    assert settings.environment == "production"
    assert settings.cookies_secure is secure
    assert (settings.insecure_cookies_warning() is None) is secure
    if case == "kind":
        (ingress,) = rendered.of_kind("Ingress")
        assert "tls" not in ingress.obj["spec"], "kind serves TLS: keep the cookies Secure"
    # Every container of the service reads the same setting (the seed Job and migrations too).
    for manifest, spec, labels in rendered.pods():
        if labels.get("app.kubernetes.io/name") == "admin-django" and manifest.kind != "Pod":
            for container in spec["containers"]:
                env = {e["name"]: e.get("value") for e in container["env"]}
                assert env.get("ADMIN_SECURE_COOKIES") == (None if secure else "false"), manifest


def test_probes_and_scrapes_of_admin_django_need_no_allowed_host(render_case: Any) -> None:
    """Why the chart no longer adds the pod's IP to ADMIN_ALLOWED_HOSTS.

    kubelet's probes (Host: the pod's IP) ask /healthz and /readyz of the http port, which the
    kit's outermost middleware answers before Django's host check (CommonMiddleware);
    Prometheus scrapes gunicorn's master on port `metrics`, which is not Django. If either
    changes, the pod's IP is needed again: this test says so.
    """
    import ast

    from service_kit.django import OPERATIONAL_VIEWS

    rendered = render_case("polyframe", "all-on")
    spec = _deployment(rendered, "admin-django", "web")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    probed = {
        (container[probe]["httpGet"]["port"], container[probe]["httpGet"]["path"])
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert {port for port, _ in probed} == {"http"}
    assert {path for _, path in probed} <= set(OPERATIONAL_VIEWS), (
        "a probe path Django's host check would see: add the pod's IP to ADMIN_ALLOWED_HOSTS"
    )
    settings = REPO_ROOT / "services" / "admin-django" / "src" / "admin_django" / "settings.py"
    middleware = next(
        ast.literal_eval(node.value)
        for node in ast.parse(settings.read_text()).body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "MIDDLEWARE" for t in node.targets)
    )
    assert middleware[0] == "service_kit.django.RequestContextMiddleware", middleware
    assert "django.middleware.common.CommonMiddleware" in middleware[1:]
    (monitor,) = [
        m
        for m in rendered.of_kind("ServiceMonitor")
        if m.labels["app.kubernetes.io/name"] == "admin-django"
    ]
    assert [e["port"] for e in monitor.obj["spec"]["endpoints"]] == ["metrics"]
    assert "POD_IP" not in {e["name"] for e in container["env"]}


def test_a_missing_secret_file_is_refused(
    render_case: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The acceptance above means something: without its key file the service refuses to start."""
    from pydantic import ValidationError

    from users_fastapi.settings import UsersSettings

    _materialise(render_case("polyframe", "default"), "users-fastapi", tmp_path, monkeypatch)
    (tmp_path / "secrets" / "jwt-private-key.pem").unlink()
    with pytest.raises(ValidationError, match="USERS_JWT_PRIVATE_KEY_FILE: cannot read"):
        UsersSettings()


def test_demo_staff_are_seeded_like_make_up(
    render_case: Any, local: Context, tmp_path: Path
) -> None:
    """The seed Job runs the local `seed_staff` step on a file of the same shape and accounts."""
    from polyframe_dev.localsecrets import ensure_local_secrets

    rendered = render_case("polyframe", "kind")
    (job,) = [
        m for m in rendered.of_kind("Job") if m.labels["app.kubernetes.io/component"] == "seed"
    ]
    spec = job.obj["spec"]["template"]["spec"]
    command = spec["containers"][0]["command"]
    local_step = next(
        step for step in SERVICES["admin-django"].setup(local) if "seed_staff" in step
    )
    assert command[:-1] == _as_local(local_step)[:-1]  # all but the file's path
    (projected,) = [v["projected"] for v in spec["volumes"] if v["name"] == "secrets"]
    mounted = {
        f"/etc/polyframe/secrets/{item['path']}": (source["secret"]["name"], item["key"])
        for source in projected["sources"]
        for item in source["secret"]["items"]
    }
    secret_name, key = mounted[command[-1]]
    staff = json.loads(base64.b64decode(rendered.named("Secret", secret_name).obj["data"][key]))
    local_staff = json.loads(ensure_local_secrets(tmp_path).demo_staff.read_text())
    assert {(s["username"], s["group"]) for s in staff} == {
        (s["username"], s["group"]) for s in local_staff
    }
    assert all(set(member) == {"username", "group", "password"} for member in staff)


class _Stalled:
    """A dispatcher loop that completed no round for longer than its bound."""

    bound = 61.5
    alive = False

    def since_last_round(self) -> float:
        return 62.0


@pytest.mark.parametrize("service", ["users-fastapi", "legacy-flask"])
def test_the_dispatcher_is_probed_where_its_process_answers(render_case: Any, service: str) -> None:
    """Each probe path of the outbox container is one the dispatcher serves; liveness is the
    one that fails when the loop is stuck (/metrics answers from a thread of its own)."""
    from wsgiref.util import setup_testing_defaults

    from service_kit.outbox.command import probe_app
    from service_kit.outbox.dispatcher import Liveness

    rendered = render_case("polyframe", "default")
    container = _deployment(rendered, service, "outbox")["spec"]["template"]["spec"]["containers"][
        0
    ]
    paths = {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }

    def status(liveness: Any, path: str) -> int:
        environ: dict[str, Any] = {"PATH_INFO": path}
        setup_testing_defaults(environ)
        answered: list[str] = []
        b"".join(probe_app(liveness)(environ, lambda status, _headers: answered.append(status)))
        return int(answered[0].split()[0])

    running = Liveness(61.5)
    assert {probe: status(running, path) for probe, path in paths.items()} == dict.fromkeys(
        paths, 200
    )
    stalled = {probe: status(_Stalled(), path) for probe, path in paths.items()}
    assert stalled == {"startupProbe": 200, "livenessProbe": 503, "readinessProbe": 200}
