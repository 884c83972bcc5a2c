"""What a run leaves to find it again: its state file (runner.json, which ``down`` and
``up --detach`` read) and, by the run's label, its containers and network.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polyframe_release import network
from polyframe_release.engine import Engine
from polyframe_release.podspec import RUN_LABEL

if TYPE_CHECKING:
    from polyframe_release.runner import Release

STATE_FILE = "runner.json"


def remove_run(engine: Engine, run_id: str) -> list[str]:
    """Remove every container and the network of run ``run_id`` (by its label): what is left."""
    names = engine.run(
        "ps",
        "--all",
        "--filter",
        f"label={RUN_LABEL}={run_id}",
        "--format",
        "{{.Names}}",
        check=False,
    ).stdout.split()
    if names:
        engine.run("rm", "--force", "--time", "5", *names, check=False, timeout=300)
    networks = engine.run(
        "network",
        "ls",
        "--filter",
        f"label={RUN_LABEL}={run_id}",
        "--format",
        "{{.Name}}",
        check=False,
    ).stdout.split()
    for name in networks:
        engine.run("network", "rm", "--force", name, check=False)
    return names


def write_state(state_dir: Path, release: Release, pid: int, *, ready: bool) -> None:
    """runner.json: written before anything starts (so `down` finds what a killed start left),
    and again once all is ready; replaced atomically (``up --detach`` polls it)."""
    document = {
        "run_id": release.run_id,
        "pid": pid,
        "network": release.network_name,
        "ingress": release.ingress.url if release.ingress is not None and ready else None,
        "api": release.api.host.url if release.api is not None and ready else None,
        "kubeconfig": str(state_dir / "kubeconfig"),
        "logs": str(release.run_dir / "logs"),
        "release": release.render.release,
        "namespace": release.render.namespace,
        "ready": ready,
    }
    state_dir.mkdir(parents=True, exist_ok=True)
    network.write_atomically(state_dir / STATE_FILE, json.dumps(document, indent=2) + "\n")


def read_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    if not path.is_file():
        return None
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded
