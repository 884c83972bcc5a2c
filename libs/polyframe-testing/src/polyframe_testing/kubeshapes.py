"""Recorded Kubernetes API objects for tests (tools/polyframe-e2e-cluster/tests/kube_api_shapes):
one read by name, and variations of one made by overlaying what differs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any


def load_shape(folder: Path, name: str) -> dict[str, Any]:
    """The recorded object ``folder/name.json``."""
    loaded: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    return loaded


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``, as kube_api_shapes' README says: maps merged, rest replaced."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
