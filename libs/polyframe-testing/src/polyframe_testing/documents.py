"""Configuration documents in tests: one laid over another, as Kubernetes overlays (and the
OpenTelemetry Collector's several --config files) combine them."""

from __future__ import annotations

import copy
from typing import Any


def merged(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: maps merged key by key, anything else replaced."""
    result = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result
