"""`make kind-e2e`'s recipe, run for real by make against stub kubectl, helm, skaffold and pytest.

No cluster exists here, so the recipe's shell runs against executables that stand in for the
tools: `kubectl` answers `get secret NAME -o jsonpath={.data.KEY}` from files (or refuses, as
the API server does for a missing Secret), `helm` succeeds, and the host's pytest and
`skaffold` record their arguments and environment and exit as a test asks. `kind-up` and the
venv stamp are taken as made (`make -o`): their recipes build and deploy for real.

What is checked: the credentials reach the host's run of tests/e2e and nothing else (skaffold
runs with a scrubbed environment); a credential that cannot be read stops the target naming
the Secret and key; both runs of the suite always run, and the target fails, saying which run
failed, when either did.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
MAKEFILE = REPO_ROOT / "Makefile"

#: The release's Secrets as the kind release has them (chart-generated values stand in).
SECRETS = {
    "polyframe-credentials": {
        "users-fastapi": "cred-users-Zx81",
        "legacy-flask": "cred-orders-Qm27",
        "admin-django": "cred-admin-Lp90",
    },
    "polyframe-admin-django-demo-staff": {
        "support-acting": "ada.acting:pw-acting-Hk33",
        "support-readonly": "rita.readonly:pw-readonly-Vb44",
    },
}
#: What tests/e2e reads (tests/e2e/conftest.py: _secret_env, _staff_env) and where it comes from.
CREDENTIALS = {
    "E2E_USERS_FASTAPI_SECRET": ("polyframe-credentials", "users-fastapi"),
    "E2E_LEGACY_FLASK_SECRET": ("polyframe-credentials", "legacy-flask"),
    "E2E_ADMIN_DJANGO_SECRET": ("polyframe-credentials", "admin-django"),
    "E2E_STAFF_SUPPORT_ACTING": ("polyframe-admin-django-demo-staff", "support-acting"),
    "E2E_STAFF_SUPPORT_READONLY": ("polyframe-admin-django-demo-staff", "support-readonly"),
}
#: A secret of the machine that runs make (a CI token, say): it must not reach skaffold.
HOST_SECRET = ("POLYFRAME_CI_TOKEN", "host-token-Ww55")

KUBECTL = """#!/bin/sh
# Stand-in for kubectl: `get secret NAME -o jsonpath={{.data.KEY}}` answered from {store}/NAME/KEY
# (base64, as the API has it); a Secret named in {store}/.refused is refused like a missing one;
# a key the Secret lacks prints nothing and succeeds, as kubectl's jsonpath does.
echo "kubectl $*" >> {log}
name=""; key=""; previous=""
for arg in "$@"; do
  [ "$previous" = secret ] && name="$arg"
  case "$arg" in jsonpath=*) key="${{arg#jsonpath=\\{{.data.}}"; key="${{key%\\}}}}";; esac
  previous="$arg"
done
if grep -qx "$name" {store}/.refused 2>/dev/null; then
  echo "Error from server (NotFound): secrets \\"$name\\" not found" >&2
  exit 1
fi
if [ -f "{store}/$name/$key" ]; then base64 < "{store}/$name/$key" | tr -d "\\n"; fi
exit 0
"""

#: pytest (the host's run) and skaffold: record what they were given, exit with {exit_file}'s code.
RECORDER = """#!/bin/sh
echo "{tool} $*" >> {log}
env > {env_file}
exit "$(cat {exit_file} 2>/dev/null || echo 0)"
"""

HELM = """#!/bin/sh
echo "helm $*" >> {log}
exit 0
"""


@dataclass
class Run:
    returncode: int
    output: str
    calls: list[str]
    host_env: dict[str, str] | None
    skaffold_env: dict[str, str] | None

    def ran(self, tool: str) -> list[str]:
        return [call for call in self.calls if call.split(" ", 1)[0] == tool]


def _read_env(path: Path) -> dict[str, str] | None:
    if not path.exists():
        return None
    env = {}
    for line in path.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            env[name] = value
    return env


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o755)


def _make_variable(name: str) -> str:
    match = re.search(rf"^{name} := (.+)$", MAKEFILE.read_text(), flags=re.M)
    assert match, name
    return match.group(1).strip()


@pytest.fixture
def kind_e2e(tmp_path: Path) -> Callable[..., Run]:
    """``kind_e2e(host_exit=0, cluster_exit=0, refuse=(), drop=())``: run the target's recipe.

    ``refuse`` names Secrets the stub API refuses; ``drop`` (secret, key) pairs it lacks.
    """
    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    store = tmp_path / "secrets"
    log = tmp_path / "calls.log"
    work = tmp_path / "checkout"
    work.mkdir()
    home = tmp_path / "home"
    home.mkdir()
    _write(stubs / "kubectl", KUBECTL.format(store=store, log=log))
    _write(stubs / "helm", HELM.format(log=log))
    for tool, name in (("skaffold", "skaffold"), ("pytest", "host-pytest")):
        _write(
            stubs / name,
            RECORDER.format(
                tool=tool,
                log=log,
                env_file=tmp_path / f"{name}.env",
                exit_file=tmp_path / f"{name}.exit",
            ),
        )

    def run(
        *,
        host_exit: int = 0,
        cluster_exit: int = 0,
        refuse: tuple[str, ...] = (),
        drop: tuple[tuple[str, str], ...] = (),
    ) -> Run:
        for secret, keys in SECRETS.items():
            (store / secret).mkdir(parents=True, exist_ok=True)
            for key, value in keys.items():
                if (secret, key) not in drop:
                    (store / secret / key).write_text(value)
        (store / ".refused").write_text("".join(f"{name}\n" for name in refuse))
        (tmp_path / "host-pytest.exit").write_text(str(host_exit))
        (tmp_path / "skaffold.exit").write_text(str(cluster_exit))
        env = {
            "PATH": f"{stubs}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "KUBECONFIG": str(home / "kubeconfig"),
            "DOCKER_HOST": "unix:///run/docker-under-test.sock",
            # What a developer may have exported by hand (NOTES.txt shows how), and a secret
            # of the machine: neither may reach the verify Job through skaffold.
            "E2E_USERS_FASTAPI_SECRET": "stale-from-the-shell",
            HOST_SECRET[0]: HOST_SECRET[1],
        }
        completed = subprocess.run(
            [
                make,
                "--no-print-directory",
                "-f",
                str(MAKEFILE),
                "-C",
                str(work),
                "-o",
                "kind-up",
                "-o",
                _make_variable("VENV_STAMP"),
                "kind-e2e",
                f"PYTEST={stubs / 'host-pytest'}",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        return Run(
            completed.returncode,
            completed.stdout + completed.stderr,
            log.read_text().splitlines() if log.exists() else [],
            _read_env(tmp_path / "host-pytest.env"),
            _read_env(tmp_path / "skaffold.env"),
        )

    return run


def test_both_runs_pass_with_the_release_credentials_on_the_host_only(
    kind_e2e: Callable[..., Run],
) -> None:
    run = kind_e2e()
    assert run.returncode == 0, run.output
    # The host's run: cluster mode against kind, with every credential from the release.
    assert run.host_env is not None, run.output
    for variable, (secret, key) in CREDENTIALS.items():
        assert run.host_env.get(variable) == SECRETS[secret][key], variable
    assert run.host_env["E2E_BASE_URL"] == "http://localhost:8080"
    assert run.host_env["E2E_KUBE_CONTEXT"] == "kind-polyframe"
    (pytest_call,) = run.ran("pytest")
    assert pytest_call.endswith(" tests/e2e")
    # The in-cluster run: skaffold verify, given only what skaffold needs.
    assert run.skaffold_env is not None, run.output
    (verify,) = run.ran("skaffold")
    assert verify.split()[1:5] == ["verify", "--profile", "kind", "--kube-context"], verify
    assert "--build-artifacts .data/kind/skaffold-build.json" in verify
    assert set(run.skaffold_env) <= {"PATH", "HOME", "KUBECONFIG", "PWD", "SHLVL", "_"} | {
        name for name in run.skaffold_env if name.startswith("DOCKER_")
    }, sorted(run.skaffold_env)
    assert run.skaffold_env["KUBECONFIG"].endswith("/home/kubeconfig")
    assert run.skaffold_env["DOCKER_HOST"] == "unix:///run/docker-under-test.sock"
    secrets = {HOST_SECRET[1], "stale-from-the-shell"}
    for keys in SECRETS.values():
        for value in keys.values():
            secrets |= {value, value.rpartition(":")[2]}  # a staff password on its own too
    leaked = {secret for secret in secrets for seen in run.skaffold_env.values() if secret in seen}
    assert not leaked, leaked
    assert "passed from the host and in the cluster" in run.output
    # helm test first, then the credentials, then the two runs in order.
    tools = [call.split(" ", 1)[0] for call in run.calls]
    assert (
        tools.index("helm")
        < tools.index("kubectl")
        < tools.index("pytest")
        < tools.index("skaffold")
    )


@pytest.mark.parametrize(
    ("refuse", "drop", "secret", "key"),
    [
        (("polyframe-credentials",), (), "polyframe-credentials", "users-fastapi"),
        (
            (),
            (("polyframe-admin-django-demo-staff", "support-readonly"),),
            "polyframe-admin-django-demo-staff",
            "support-readonly",
        ),
    ],
    ids=["secret-refused", "key-missing"],
)
def test_a_credential_that_cannot_be_read_stops_the_target_naming_it(
    kind_e2e: Callable[..., Run],
    refuse: tuple[str, ...],
    drop: tuple[tuple[str, str], ...],
    secret: str,
    key: str,
) -> None:
    run = kind_e2e(refuse=refuse, drop=drop)
    assert run.returncode != 0, run.output
    assert f"Secret {secret}" in run.output, run.output
    assert f"key {key}" in run.output, run.output
    assert "make kind-up" in run.output, run.output  # what to do next
    # Neither run starts without its credentials (the tests would skip, not fail).
    assert not run.ran("pytest"), run.output
    assert not run.ran("skaffold"), run.output


@pytest.mark.parametrize(
    ("host_exit", "cluster_exit", "failed", "passed"),
    [
        (1, 0, ["from the host"], ["in the cluster"]),
        (0, 1, ["in the cluster"], ["from the host"]),
        (2, 1, ["from the host", "in the cluster"], []),
    ],
    ids=["host-failed", "cluster-failed", "both-failed"],
)
def test_both_runs_always_run_and_the_target_fails_saying_which_failed(
    kind_e2e: Callable[..., Run],
    host_exit: int,
    cluster_exit: int,
    failed: list[str],
    passed: list[str],
) -> None:
    run = kind_e2e(host_exit=host_exit, cluster_exit=cluster_exit)
    assert run.returncode != 0, run.output
    assert len(run.ran("pytest")) == 1, run.output
    assert len(run.ran("skaffold")) == 1, run.output  # run even after the host's run failed
    for where in failed:
        assert re.search(rf"tests/e2e {where}[^\n]* failed", run.output), (where, run.output)
    for where in passed:
        assert re.search(rf"tests/e2e {where}[^\n]* passed", run.output), (where, run.output)
