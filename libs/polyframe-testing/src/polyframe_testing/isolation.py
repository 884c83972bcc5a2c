"""A workspace member's modules imported in a venv holding only its own dependencies (synced
from uv.lock, kept between runs): an import the shared development venv satisfies but the
member never declared fails here, as it would in the member's image."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from polyframe_testing.tools import unavailable

#: Run by the isolated interpreter: import the package, then every module below it (``-I``:
#: neither the working directory nor PYTHONPATH is on sys.path). Prints one module a line.
_IMPORT_ALL = """
import importlib, sys
from pathlib import Path
package, prelude, skipped = sys.argv[1], sys.argv[2], set(sys.argv[3:])
exec(prelude)
folder = Path(importlib.import_module(package).__file__).parent
for path in sorted(folder.rglob("*.py")):
    name = ".".join((package, *path.relative_to(folder).with_suffix("").parts))
    name = name.removesuffix(".__init__")
    if name not in skipped:
        importlib.import_module(name)
        print(name)
print(sys.prefix, file=sys.stderr)
"""


def _uv() -> str:
    # ``uv run`` (make test) names itself in UV; else the one on PATH.
    found = os.environ.get("UV") or shutil.which("uv")
    if not found:
        unavailable("uv is neither in UV (uv run) nor on PATH")
    return found


def isolated_venv(root: Path, member: str) -> Path:
    """The venv of ``member`` (a project name) and what it depends on, from ``root``'s
    uv.lock, without dev groups; offline, from uv's cache."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    venv = Path(tempfile.gettempdir()) / f"polyframe-isolated-{digest}" / member
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    command = [_uv(), "sync", "--frozen", "--offline", "--no-dev", "--quiet"]
    command += ["--package", member, "--python", sys.executable]
    synced = subprocess.run(  # noqa: S603 - uv, on the lock file
        command, cwd=root, env=env, capture_output=True, text=True
    )
    assert synced.returncode == 0, f"{' '.join(command)}:\n{synced.stderr}"
    return venv


def import_alone(
    root: Path,
    member: str,
    package: str,
    *,
    skip: tuple[str, ...] = (),
    prelude: str = "",
    env: dict[str, str] | None = None,
) -> list[str]:
    """Import ``package`` and each of its modules but ``skip`` in ``member``'s own venv
    (after ``prelude``, with ``env`` added); return the modules imported."""
    venv = isolated_venv(root, member)
    python = venv / "bin" / "python"
    argv = [str(python), "-I", "-c", _IMPORT_ALL, package, prelude, *skip]
    run_env = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    ran = subprocess.run(  # noqa: S603 - the interpreter this module synced
        argv, cwd=venv, env={**run_env, **(env or {})}, capture_output=True, text=True
    )
    assert ran.returncode == 0, (
        f"{package} does not import with only {member}'s dependencies:\n{ran.stderr}"
    )
    assert ran.stderr.strip().splitlines()[-1] == str(venv), ran.stderr
    return ran.stdout.split()
