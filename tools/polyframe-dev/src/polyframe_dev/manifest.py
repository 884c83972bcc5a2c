"""A service described once: ``services/<name>/service.yaml``, read and checked.

``make up`` (polyframe_dev.services) runs what it says; ``make generate``
(polyframe_dev.generate) writes the chart's and the image's copies from it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

import yaml

from polyframe_dev.paths import repo_root

#: The services, in the order the platform starts them.
NAMES = ("users-fastapi", "legacy-flask", "admin-django")


class ManifestError(ValueError):
    """A service.yaml that does not say what it must; the message names the file and key."""


@dataclass(frozen=True, slots=True)
class EnvVar:
    """One environment variable of every process of the service."""

    name: str
    #: What ``make up`` sets: a format string over the local context (None: not set locally).
    local: str | None = None
    #: What the chart sets: a Go template of the value (None: not set by the chart).
    chart: str | None = None
    #: Locally the server's (and its workers') only, not the setup commands'.
    server: bool = False
    #: Locally passed to the server as this command-line flag instead.
    flag: str | None = None
    #: The chart sets it only when this Go template condition holds.
    when: str | None = None
    #: The image's default (Dockerfile ENV).
    image: str | None = None
    #: The service's database URL: a SQLite file or PostgreSQL locally, a Secret's key in a cluster.
    database: bool = False
    #: The path of this secret file (a key of ``secret_files``).
    secret_file: str | None = None


@dataclass(frozen=True, slots=True)
class SecretFile:
    """A file of secrets: generated into the data folder locally, a Secret's key in a cluster."""

    #: ``own`` (the chart's Secret) or ``credentials`` (the platform's).
    secret: Literal["own", "credentials"]
    #: The key in that Secret: a literal for ``own``, a ``credentials.*`` value's name otherwise.
    key: str
    #: How the chart generates it when no existing Secret is given (polyframe-lib.secret).
    generate: Literal["rsa", "token", "djangoKey", "emptyMap"]
    #: The local file (a format string, like an env value's ``local``).
    local: str


@dataclass(frozen=True, slots=True)
class SetupStep:
    """A command run before the server starts, and what does it in a cluster."""

    run: tuple[str, ...]
    #: ``migrations`` (the migration Job), ``image`` (the image's build), ``seed`` (a seed Job)
    #: or ``none`` (local demo data only).
    cluster: Literal["migrations", "image", "seed", "none"]
    #: Arguments added locally only (e.g. a quieter verbosity).
    local_args: tuple[str, ...] = ()
    #: ``migrations``: the command that waits until they are applied (the check of /readyz).
    wait: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Server:
    #: The production server's command line (the image's entry point).
    command: tuple[str, ...]
    #: ``always`` (gunicorn's master and workers) or ``workers`` (uvicorn with ``--workers`` > 1).
    preforks: Literal["always", "workers"]
    #: gunicorn's master serves the merged metrics on a port of its own (``<name>-metrics``).
    master_metrics: bool = False


@dataclass(frozen=True, slots=True)
class ImageBuild:
    """What the image's build runs the ``image`` setup steps with, and the folder it keeps."""

    env: dict[str, str]
    keep: str


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    #: The settings' environment prefix (``USERS`` for ``USERS_DATABASE_URL``).
    prefix: str
    docs: str
    database: dict[str, str]
    server: Server
    setup: tuple[SetupStep, ...]
    workers: dict[str, tuple[str, ...]]
    secret_files: dict[str, SecretFile]
    env: tuple[EnvVar, ...]
    image_build: ImageBuild | None = None


def manifest_path(name: str, root: Path | None = None) -> Path:
    return (root or repo_root()) / "services" / name / "service.yaml"


def _build(cls: type[Any], data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a mapping, got {data!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    for key, hint in get_type_hints(cls).items():
        if get_origin(hint) is Literal and key in data and data[key] not in get_args(hint):
            raise ManifestError(f"{where}: {key} is {data[key]!r}, not one of {get_args(hint)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def parse(data: Any, where: str) -> Manifest:
    """A manifest from its YAML data, every part checked (unknown keys refused)."""
    if not isinstance(data, dict):
        raise ManifestError(f"{where}: expected a mapping")
    data = dict(data)
    data["server"] = _build(
        Server,
        {**data.get("server", {}), "command": tuple(data.get("server", {}).get("command", ()))},
        f"{where}: server",
    )
    data["setup"] = tuple(
        _build(
            SetupStep,
            {**step, **{k: tuple(step[k]) for k in ("run", "local_args", "wait") if k in step}},
            f"{where}: setup[{i}]",
        )
        for i, step in enumerate(data.get("setup", []))
    )
    data["workers"] = {name: tuple(argv) for name, argv in (data.get("workers") or {}).items()}
    data["secret_files"] = {
        path: _build(SecretFile, spec, f"{where}: secret_files.{path}")
        for path, spec in (data.get("secret_files") or {}).items()
    }
    data["env"] = tuple(
        _build(EnvVar, var, f"{where}: env[{i}]") for i, var in enumerate(data.get("env", []))
    )
    if data.get("image_build") is not None:
        data["image_build"] = _build(ImageBuild, data["image_build"], f"{where}: image_build")
    manifest: Manifest = _build(Manifest, data, where)
    _check(manifest, where)
    return manifest


def _check(manifest: Manifest, where: str) -> None:
    names = [var.name for var in manifest.env]
    if len(set(names)) != len(names):
        raise ManifestError(f"{where}: env names a variable twice")
    for var in manifest.env:
        if var.secret_file is not None and var.secret_file not in manifest.secret_files:
            raise ManifestError(f"{where}: {var.name}: no secret file {var.secret_file!r}")
        if var.flag is not None and (var.local is None or var.chart is None):
            raise ManifestError(f"{where}: {var.name}: a flag needs a local and a chart value")
    database = [var for var in manifest.env if var.database]
    if [var.name for var in database] != [f"{manifest.prefix}_DATABASE_URL"]:
        raise ManifestError(f"{where}: exactly one env entry {manifest.prefix}_DATABASE_URL")
    migrations = [step for step in manifest.setup if step.cluster == "migrations"]
    if len(migrations) != 1 or not migrations[0].wait:
        raise ManifestError(f"{where}: exactly one setup step is the migrations, with its `wait`")
    if len(manifest.workers) > 1:
        raise ManifestError(f"{where}: the chart runs one background worker (its outbox)")
    if any(step.cluster == "image" for step in manifest.setup) and manifest.image_build is None:
        raise ManifestError(f"{where}: a setup step runs in the image: image_build is required")


def read(path: Path) -> Manifest:
    return parse(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))


@cache
def load(name: str) -> Manifest:
    """The manifest of ``name`` in the checkout (read once)."""
    return read(manifest_path(name))


def load_all(root: Path) -> dict[str, Manifest]:
    """Every service's manifest under ``root``, read now."""
    return {name: read(manifest_path(name, root)) for name in NAMES}
