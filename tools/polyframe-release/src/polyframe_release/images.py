"""``make images``: the images skaffold builds, from the same Dockerfiles and contexts.

The artifacts (image, context, Dockerfile, build arguments) are read from ``skaffold.yaml``, so
there is one list. Tags follow skaffold's ``gitCommit`` policy (``AbbrevCommitSha``: the short
commit, with ``-dirty`` when the tree has changes). The result is written in the format of
``skaffold build --file-output`` for ``release-up``, as ``skaffold verify --build-artifacts``
reads it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from polyframe_release import standins
from polyframe_release.engine import Engine, EngineError
from polyframe_release.paths import RELEASE_DIR, REPO_ROOT, SKAFFOLD_FILE
from polyframe_release.rootfs import StandIn

FROM_LINE = re.compile(
    r"^\s*FROM\s+(?:--platform=\S+\s+)?(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?",
    re.IGNORECASE | re.MULTILINE,
)
#: Mounted into podman builds when SSL_CERT_FILE names a CA bundle (deploy/release/build-uv.toml).
BUILD_UV_CONFIG = RELEASE_DIR / "build-uv.toml"


class BuildError(RuntimeError):
    """An image did not build; the message names it and where its log is."""


@dataclass(frozen=True)
class Artifact:
    """One image of skaffold.yaml's ``build.artifacts``."""

    image: str
    context: Path
    dockerfile: Path
    #: skaffold's ``docker.buildArgs`` (literal values), e.g. the service the Dockerfile builds.
    build_args: tuple[tuple[str, str], ...] = ()

    @property
    def short(self) -> str:
        return self.image.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Built:
    artifact: Artifact
    tag: str
    seconds: float
    size: int


def skaffold_config(path: Path = SKAFFOLD_FILE) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise BuildError(f"{path}: not a skaffold configuration")
    return loaded


def artifacts(config: dict[str, Any] | None = None) -> list[Artifact]:
    config = config if config is not None else skaffold_config()
    found = []
    for entry in config["build"]["artifacts"]:
        context = REPO_ROOT / entry.get("context", ".")
        docker = entry.get("docker") or {}
        arguments = tuple((str(k), str(v)) for k, v in (docker.get("buildArgs") or {}).items())
        dockerfile = docker.get("dockerfile", "Dockerfile")
        found.append(Artifact(entry["image"], context, context / dockerfile, arguments))
    return found


def base_images(dockerfile: Path) -> list[str]:
    """The images a Dockerfile builds FROM (not its own stages, not ``scratch``)."""
    stages: set[str] = set()
    bases: list[str] = []
    for match in FROM_LINE.finditer(dockerfile.read_text(encoding="utf-8")):
        image = match["image"]
        if image.lower() != "scratch" and image not in stages and image not in bases:
            bases.append(image)
        if match["stage"]:
            stages.add(match["stage"])
    return bases


def git_tag(repo: Path = REPO_ROOT) -> str:
    """skaffold's ``gitCommit`` tag, variant ``AbbrevCommitSha``."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain"))
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "dev"
    return f"{commit}-dirty" if dirty else commit


def build_args(engine: Engine, artifact: Artifact, reference: str) -> list[str]:
    args = ["build", "--tag", reference, "--file", str(artifact.dockerfile)]
    for name, value in artifact.build_args:
        args += ["--build-arg", f"{name}={value}"]
    if engine.is_podman:
        # Builds reach PyPI through the host's network (a container network reaches nothing
        # outside), trusting the machine's CA bundle when SSL_CERT_FILE names one.
        args += ["--network", "host"]
        ca_bundle = os.environ.get("SSL_CERT_FILE", "")
        if ca_bundle and Path(ca_bundle).is_file():
            args += [
                "--volume",
                f"{ca_bundle}:/etc/ssl/certs/ca-certificates.crt:ro",
                "--volume",
                f"{BUILD_UV_CONFIG}:/etc/uv/uv.toml:ro",
            ]
    return [*args, str(artifact.context)]


def build(engine: Engine, chosen: Iterable[Artifact], tag: str, logs: Path) -> list[Built]:
    """Build each artifact as ``<image>:<tag>``, printing its steps; the full log in ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    results = []
    for artifact in chosen:
        reference = f"{artifact.image}:{tag}"
        log = logs / f"build-{artifact.short}.log"
        print(f"building {reference} ({artifact.dockerfile.relative_to(REPO_ROOT)}) …", flush=True)
        started = time.monotonic()
        code = _stream_steps(engine, build_args(engine, artifact, reference), log)
        seconds = time.monotonic() - started
        if code != 0:
            tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-25:])
            raise BuildError(
                f"{reference} did not build (exit {code}); the whole log is {log}:\n{tail}"
            )
        size = engine.image_size(reference)
        print(f"  {reference}: {size / 1e6:.0f} MB, {seconds:.0f} s", flush=True)
        results.append(Built(artifact, reference, seconds, size))
    return results


def _stream_steps(engine: Engine, args: list[str], log: Path) -> int:
    """The build with only its steps on the terminal (every line in ``log``)."""
    with log.open("w", encoding="utf-8") as sink:
        process = subprocess.Popen(
            [engine.name, *args],
            env=engine.environ(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            text = line.rstrip()
            if re.match(r"^(\[\d+/\d+\] )?STEP \d+/\d+|^#\d+ \[|^(Error|error):", text):
                print(f"    {text[:160]}", flush=True)
        return process.wait()


def write_build_file(path: Path, built: list[Built], engine: str = "podman") -> None:
    """The tags, as ``skaffold build --file-output`` writes them (and the engine that holds
    them, which skaffold's format has no field for)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "builds": [{"imageName": b.artifact.image, "tag": b.tag} for b in built],
        "engine": engine,
    }
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def build_engine(path: Path) -> str:
    """The engine whose storage holds the images of a build file."""
    if not path.is_file():
        raise BuildError(f"{path} does not exist: build the images first (make images)")
    return str(json.loads(path.read_text(encoding="utf-8")).get("engine", "podman"))


def read_build_file(path: Path) -> dict[str, str]:
    """image name -> ``name:tag`` from a build file, or a message saying what to run."""
    if not path.is_file():
        raise BuildError(f"{path} does not exist: build the images first (make images)")
    document = json.loads(path.read_text(encoding="utf-8"))
    return {entry["imageName"]: entry["tag"] for entry in document.get("builds", [])}


def ensure_bases(
    engine: Engine, chosen: Iterable[Artifact], *, mode: str, mirror: str
) -> list[StandIn]:
    """Every base image of the chosen Dockerfiles present (pulled, or stand-ins here)."""
    bases = sorted({image for a in chosen for image in base_images(a.dockerfile)})
    try:
        return standins.ensure(engine, bases, mode=mode, mirror=mirror)
    except EngineError as exc:
        raise BuildError(str(exc)) from exc
