"""Configuration documents in tests: one laid over another, as Kubernetes overlays (and the
OpenTelemetry Collector's several --config files) combine them; and every key of one found in
a schema transcribed from its component's documentation (:func:`undocumented`)."""

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


# -- documented keys: a dict lists the allowed keys (value: the schema below that key); LEAF is
# any value; Free(schema) a map of free keys; Each(schema) a list of items; ByType a list of
# items each checked by its `type`.

LEAF = None


class Free:
    def __init__(self, schema: Any) -> None:
        self.schema = schema


class Each:
    def __init__(self, schema: Any) -> None:
        self.schema = schema


class ByType:
    def __init__(self, schemas: dict[str, Any]) -> None:
        self.schemas = schemas


def undocumented(value: Any, schema: Any, where: str = "") -> list[str]:
    """The paths of ``value``'s keys that ``schema`` does not list (empty: all documented)."""
    if schema is LEAF:
        return []
    if isinstance(schema, Free):
        assert isinstance(value, dict), where
        return [e for k, v in value.items() for e in undocumented(v, schema.schema, f"{where}.{k}")]
    if isinstance(schema, Each):
        assert isinstance(value, list), where
        return [
            e for i, v in enumerate(value) for e in undocumented(v, schema.schema, f"{where}[{i}]")
        ]
    if isinstance(schema, ByType):
        assert isinstance(value, list), where
        errors = []
        for i, item in enumerate(value):
            kind = item.get("type")
            if kind not in schema.schemas:
                errors.append(f"{where}[{i}]: operator type {kind!r}")
            else:
                errors += undocumented(item, schema.schemas[kind], f"{where}[{i}]")
        return errors
    assert isinstance(value, dict), f"{where}: a map is expected"
    errors = []
    for key, item in value.items():
        if key not in schema:
            errors.append(f"{where}.{key}")
        else:
            errors += undocumented(item, schema[key], f"{where}.{key}")
    return errors
