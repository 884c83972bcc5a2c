"""The container engine: podman (with the project's containers.conf) or a running docker.

Docker is used only when its engine answers (``docker info``), not when only the client is
installed (this machine has a docker client and no engine). Otherwise podman, with
``CONTAINERS_CONF`` naming ``deploy/release/containers.conf`` for every command.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from polyframe_release.paths import CONTAINERS_CONF


class EngineError(RuntimeError):
    """A container engine command failed; the message says which and what it printed."""


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Engine:
    """One container engine's command line."""

    #: ``podman`` or ``docker``
    name: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_podman(self) -> bool:
        return self.name == "podman"

    def environ(self) -> dict[str, str]:
        return {**os.environ, **self.env}

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float | None = 120,
        input_text: str | None = None,
    ) -> Result:
        """Run ``<engine> args…`` and capture its output; raise EngineError when it fails."""
        argv = [self.name, *args]
        try:
            done = subprocess.run(
                argv,
                env=self.environ(),
                capture_output=True,
                text=True,
                timeout=timeout,
                input=input_text,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EngineError(f"`{_show(argv)}` did not finish within {timeout:g} s") from exc
        result = Result(done.returncode, done.stdout, done.stderr)
        if check and done.returncode != 0:
            raise EngineError(
                f"`{_show(argv)}` failed (exit {done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )
        return result

    def json(self, *args: str, timeout: float | None = 60) -> Any:
        out = self.run(*args, timeout=timeout).stdout.strip()
        return json.loads(out) if out else None

    # -- images ---------------------------------------------------------------------------------

    def image_exists(self, image: str) -> bool:
        if self.is_podman:
            return self.run("image", "exists", image, check=False).returncode == 0
        return self.run("image", "inspect", image, check=False).returncode == 0

    def image_inspect(self, image: str) -> dict[str, Any]:
        found = self.json("image", "inspect", image)
        if not found:
            raise EngineError(f"image {image} is not in local storage")
        return dict(found[0])

    def image_labels(self, image: str) -> dict[str, str]:
        info = self.image_inspect(image)
        config = info.get("Config") or {}
        labels = config.get("Labels") or info.get("Labels") or {}
        return {str(k): str(v) for k, v in labels.items()}

    def image_size(self, image: str) -> int:
        return int(self.image_inspect(image).get("Size") or 0)


def qualify(image: str) -> str:
    """A short image name as docker reads it: ``postgres:17`` -> ``docker.io/library/postgres:17``.

    podman stores an image imported or built under a short name as ``localhost/…``, where a
    ``FROM postgres:17`` would not find it; stand-ins are stored under the qualified name.
    """
    first, _, rest = image.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return image
    return f"docker.io/{image}" if rest else f"docker.io/library/{image}"


def _show(argv: Sequence[str]) -> str:
    return " ".join(argv[:6]) + (" …" if len(argv) > 6 else "")


def docker_engine_running() -> bool:
    """True when a docker client is installed *and* its engine answers."""
    if shutil.which("docker") is None:
        return False
    try:
        done = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def detect(preferred: str = "auto") -> Engine:
    """The engine to use: ``auto`` takes a running docker, else podman."""
    if preferred not in {"auto", "podman", "docker"}:
        raise EngineError(f"unknown container engine {preferred!r}: auto, podman or docker")
    if preferred in {"auto", "docker"} and docker_engine_running():
        return Engine("docker")
    if preferred == "docker":
        raise EngineError(
            "`docker info` does not answer: no docker engine runs here; use --engine podman "
            "(Debian: apt-get install podman runc netavark aardvark-dns iptables)"
        )
    if shutil.which("podman") is None:
        raise EngineError(
            "no container engine: neither a running docker (`docker info`) nor podman. Install "
            "podman (Debian: apt-get install --no-install-recommends podman runc netavark "
            "aardvark-dns iptables) or start docker"
        )
    return Engine("podman", {"CONTAINERS_CONF": str(CONTAINERS_CONF)})
