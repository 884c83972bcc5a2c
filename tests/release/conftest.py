"""Fixtures of the release checks: real containers (podman here, docker where its engine runs).

These tests run in ``make test-release`` after ``make images`` (the images of skaffold.yaml,
tagged in ``.data/release/images.json``). Without a container engine they skip locally and
fail where the tools are required (``POLYFRAME_STRICT_TOOLS=1``, CI).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from polyframe_release import images, render, runner, runstate, standin_builds
from polyframe_release.engine import Engine, EngineError, detect
from polyframe_release.paths import REPO_ROOT
from service_kit.testing import unavailable

BUILD_FILE = (
    Path(os.environ.get("RELEASE_STATE_DIR", REPO_ROOT / ".data" / "release")) / "images.json"
)


@pytest.fixture(scope="session")
def engine() -> Engine:
    try:
        return detect("auto")
    except EngineError as exc:
        unavailable(str(exc))


@pytest.fixture(scope="session")
def built(engine: Engine) -> dict[str, str]:
    """image -> name:tag of the images `make images` built (skaffold's build file)."""
    try:
        found = images.read_build_file(BUILD_FILE)
    except images.BuildError as exc:
        unavailable(str(exc))
    missing = [tag for tag in found.values() if not engine.image_exists(tag)]
    if missing:
        unavailable(f"{BUILD_FILE} names images not in local storage: {missing} (make images)")
    return found


@pytest.fixture(scope="session")
def python_image(engine: Engine) -> str:
    """The services' Python base: the pods' sandboxes and the Service proxies run on it."""
    for artifact in images.artifacts():
        for base in images.base_images(artifact.dockerfile):
            if standin_builds.PYTHON_IMAGE.match(base):
                if not engine.image_exists(base):
                    unavailable(f"{base} is not in local storage (make images)")
                return base
    raise AssertionError("no Dockerfile of skaffold.yaml builds FROM a python image")


@pytest.fixture(scope="session")
def kind_render(built: dict[str, str]) -> Callable[[], render.Render]:
    """A fresh render of the kind release with the built images (fresh credentials each)."""

    def make() -> render.Render:
        return render.render(render.release_spec("kind"), built)

    return make


@pytest.fixture
def run_release(
    engine: Engine, python_image: str, tmp_path: Path
) -> Iterator[Callable[..., runner.Release]]:
    """``run_release(render, **options)``: a Release of ``render``, removed after the test."""
    started: list[runner.Release] = []

    def make(rendered: render.Render, **options: Any) -> runner.Release:
        release = runner.Release(
            rendered, engine, tmp_path / f"state-{len(started)}", log=print, **options
        )
        started.append(release)
        return release

    yield make
    for release in started:
        release.down()
        assert runstate.remove_run(engine, release.run_id) == [], "containers left behind"
