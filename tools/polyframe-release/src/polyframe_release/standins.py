"""Base images where no registry is reachable: the pinned image pulled when it can be, else a
stand-in built here (local storage only, never pushed, labelled with what differs), and every
command that uses one says so (:func:`announce`); users with a registry never get one.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from polyframe_release.engine import Engine, qualify
from polyframe_release.rootfs import DIFFERS_LABEL, STAND_IN_LABEL, StandIn, StandInError
from polyframe_release.standin_builds import (
    POSTGRES_IMAGE,
    PYTHON_IMAGE,
    REDIS_IMAGE,
    UV_IMAGE,
    build_postgres,
    build_python,
    build_redis,
    build_uv,
)

DEFAULT_MIRROR = "http://deb.debian.org/debian"


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


def builder_for(image: str) -> Callable[[Engine, str, Path, str], StandIn] | None:
    if PYTHON_IMAGE.match(image):
        return build_python
    if UV_IMAGE.match(image):
        return build_uv
    if POSTGRES_IMAGE.match(image):
        return build_postgres
    if REDIS_IMAGE.match(image):
        return build_redis
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
