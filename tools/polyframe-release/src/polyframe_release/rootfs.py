"""Building a stand-in base image: a Debian root file system (debootstrap, chroot), slimmed
and imported under the pinned name with labels saying what it stands in for and what differs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from polyframe_release.engine import Engine, qualify

STAND_IN_LABEL = "io.polyframe.stand-in.for"
DIFFERS_LABEL = "io.polyframe.stand-in.differs"


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


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise StandInError(
            f"building the {what} stand-in needs root (debootstrap and chroot): run as root, "
            "or load the real image into the engine's storage"
        )


def run_step(argv: list[str], what: str, *, timeout: float = 900) -> None:
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
    require_root(f"Debian {release}")
    if shutil.which("debootstrap") is None:
        raise StandInError("debootstrap is not installed (Debian: apt-get install debootstrap)")
    packages = ",".join(include)
    argv = ["debootstrap", "--variant=minbase"]
    if packages:
        argv.append(f"--include={packages}")
    print(f"    debootstrap {release} ({mirror}) …", flush=True)
    run_step([*argv, release, str(root), mirror], f"debootstrap {release}")


def chroot(root: Path, script: str, what: str) -> None:
    """Run ``script`` (sh) inside ``root``, with this machine's DNS for apt."""
    resolv = root / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    shutil.copyfile("/etc/resolv.conf", resolv)
    try:
        run_step(["chroot", str(root), "/bin/sh", "-ec", script], what)
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
        args += ["--change", f"LABEL {key}={quoted(value)}"]
    engine.run(*args, str(archive), qualify(image), timeout=600)
    archive.unlink()


def _numeric_owner(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uname = info.gname = ""
    return info


def quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def stand_in_labels(image: str, differs: str) -> dict[str, str]:
    return {STAND_IN_LABEL: image, DIFFERS_LABEL: differs}


def build_from(engine: Engine, context: Path, image: str, containerfile: str) -> None:
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
