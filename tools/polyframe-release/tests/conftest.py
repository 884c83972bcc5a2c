"""Fixtures of the release runner's unit tests: the real kind render (rendered once, with a
fake build map), a container engine that answers from memory, pod workers and stand-in
workers. Nothing here starts a container or reaches a network.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from polyframe_release import render
from polyframe_release.engine import EngineError, Result
from polyframe_release.node import DeathWatch, Node
from polyframe_release.pods import PodWorker
from polyframe_release.render import Render
from polyframe_release.store import Store

NAMESPACE = "polyframe"
#: A build map as `make images` writes it; users-fastapi's from a registry with a port, so a
#: reference's repository keeps its host's colon.
BUILT = {
    "polyframe/users-fastapi": "localhost:5000/polyframe/users-fastapi:0a1b2c3-dirty",
    "polyframe/legacy-flask": "polyframe/legacy-flask:0a1b2c3-dirty",
    "polyframe/admin-django": "polyframe/admin-django:0a1b2c3-dirty",
    "polyframe/e2e": "polyframe/e2e:0a1b2c3-dirty",
}


class FakeEngine:
    """What the runner asks an engine, answered from ``images`` (name -> image config and
    labels); every command is recorded and answers ``results`` (default: success)."""

    def __init__(self, name: str = "podman") -> None:
        self.name = name
        self.images: dict[str, dict[str, Any]] = {}
        self.commands: list[tuple[str, ...]] = []
        self.results: dict[str, Result] = {}

    @property
    def is_podman(self) -> bool:
        return self.name == "podman"

    def environ(self) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin"}

    def run(self, *args: str, check: bool = True, **_: Any) -> Result:
        self.commands.append(args)
        result = self.results.get(args[0], Result(0, "", ""))
        if check and result.returncode != 0:
            raise EngineError(f"{args[0]} failed: {result.stderr}")
        return result

    def image_exists(self, image: str) -> bool:
        return image in self.images

    def image_inspect(self, image: str) -> dict[str, Any]:
        if image not in self.images:
            raise EngineError(f"image {image} is not in local storage")
        config = {k: v for k, v in self.images[image].items() if k != "Labels"}
        return {"Config": {**config, "Labels": self.images[image].get("Labels") or {}}}

    def image_labels(self, image: str) -> dict[str, str]:
        return dict(self.image_inspect(image)["Config"]["Labels"])

    def image_size(self, image: str) -> int:
        return 1_000_000


@dataclass
class FakeWorker:
    """A pod worker as the controllers see it: its pod, readiness, deletion and IP."""

    name: str
    pod: dict[str, Any]
    ready: bool = True
    ip: str | None = "10.89.3.10"
    phase: str = "Running"
    seconds_ready: float = 60.0
    deleting: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    inits: list[Any] = field(default_factory=list)
    containers: list[Any] = field(default_factory=list)
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    deleted_with: list[int | None] = field(default_factory=list)

    def ready_for(self) -> float:
        return self.seconds_ready if self.ready else 0.0

    def delete(self, grace: int | None = None) -> None:
        self.deleted_with.append(grace)
        self.deleting.set()


@pytest.fixture(scope="session")
def built() -> dict[str, str]:
    return dict(BUILT)


@pytest.fixture(scope="session")
def kind_render(built: dict[str, str]) -> Render:
    """The kind release as skaffold's kind profile renders it (read only: copy to change)."""
    return render.render(render.release_spec("kind"), built)


@pytest.fixture
def fake_engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def store(kind_render: Render) -> Store:
    """A store holding the render's Secrets, ConfigMaps and ServiceAccounts (as installed)."""
    held = Store(NAMESPACE)
    for obj in kind_render.of_kind("Secret", "ConfigMap", "ServiceAccount"):
        held.put(copy.deepcopy(obj))
    return held


@pytest.fixture
def node(fake_engine: FakeEngine, store: Store, tmp_path: Path) -> Node:
    return Node(
        engine=fake_engine,  # type: ignore[arg-type]
        run_id="t3st01",
        network="pfr-t3st01",
        namespace=NAMESPACE,
        store=store,
        run_dir=tmp_path / "state",
        pause_image="python:3.11.14-slim-trixie",
        deaths=DeathWatch(fake_engine, "t3st01"),  # type: ignore[arg-type]
        log=lambda _line: None,
    )


@pytest.fixture
def make_worker(node: Node) -> Callable[..., PodWorker]:
    """A PodWorker (not started) for a pod of ``template`` (a pod template or a pod spec)."""

    def make(template: dict[str, Any], name: str = "web-pod-abcde") -> PodWorker:
        template = copy.deepcopy(template)
        spec = template.get("spec", template)
        metadata = template.get("metadata") or {}
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "labels": dict(metadata.get("labels") or {}),
                "annotations": dict(metadata.get("annotations") or {}),
            },
            "spec": spec,
        }
        node.store.put(pod)
        return PodWorker(node, pod, lambda _worker: None)

    return make


@pytest.fixture
def users_web_template(kind_render: Render) -> dict[str, Any]:
    """The pod template of users-fastapi's web Deployment (a copy)."""
    deployment = kind_render.get("Deployment", "polyframe-users-fastapi")
    assert deployment is not None
    return copy.deepcopy(deployment["spec"]["template"])


@pytest.fixture
def make_engine() -> type[FakeEngine]:
    """The fake engine's class (``make_engine("docker")`` for a docker engine)."""
    return FakeEngine


@pytest.fixture
def fake_worker() -> type[FakeWorker]:
    """The fake pod worker's class, for the controllers' tests."""
    return FakeWorker
