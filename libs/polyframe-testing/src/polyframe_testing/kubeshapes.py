"""Recorded Kubernetes API objects for tests (tools/polyframe-e2e-cluster/tests/kube_api_shapes):
one read by name, and variations of one made by overlaying what differs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def load_shape(folder: Path, name: str) -> dict[str, Any]:
    """The recorded object ``folder/name.json``."""
    loaded: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    return loaded
