"""values.yaml and values.schema.json of every chart: documented, closed, and enforced.

* every object of every schema with named properties refuses other keys
  (`additionalProperties: false`), and the schema knows every key of values.yaml and the reverse;
* every key of values.yaml is documented by the comment above it, which starts with its name;
* bad values are refused by Helm (schema validation, as install does) with a message naming the key.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = REPO_ROOT / "deploy" / "helm"
CHARTS = ("polyframe-lib", "users-fastapi", "legacy-flask", "admin-django", "polyframe")


def _schema(chart: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((HELM_DIR / chart / "values.schema.json").read_text())
    return schema


def _walk_schema(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for key, child in (node.get("properties") or {}).items():
        found += _walk_schema(child, f"{path}.{key}" if path else key)
    if isinstance(node.get("additionalProperties"), dict):
        found += _walk_schema(node["additionalProperties"], f"{path}.*")
    for keyword in ("oneOf", "anyOf", "allOf"):
        for index, child in enumerate(node.get(keyword) or []):
            found += _walk_schema(child, f"{path}[{keyword}{index}]")
    return found


@pytest.mark.parametrize("chart", CHARTS)
def test_every_schema_object_is_closed(chart: str) -> None:
    schema = _schema(chart)
    assert schema["additionalProperties"] is False
    for path, node in _walk_schema(schema):
        if "properties" in node and path != "global":
            assert node.get("additionalProperties") is False, f"{chart}: {path or '<root>'} is open"


def _values_keys(values: dict[str, Any], schema: dict[str, Any], path: str = "") -> set[str]:
    """Keys of values.yaml, down to where the schema stops naming properties (free maps)."""
    keys = set()
    for key, value in values.items():
        here = f"{path}.{key}" if path else key
        keys.add(here)
        child = (schema.get("properties") or {}).get(key, {})
        if (
            isinstance(value, dict)
            and "properties" in child
            and child.get("additionalProperties") is False
        ):
            keys |= _values_keys(value, child, here)
    return keys


def _schema_keys(schema: dict[str, Any], path: str = "") -> set[str]:
    keys = set()
    for key, child in (schema.get("properties") or {}).items():
        here = f"{path}.{key}" if path else key
        keys.add(here)
        if child.get("additionalProperties") is False:
            keys |= _schema_keys(child, here)
    return keys


@pytest.mark.parametrize("chart", CHARTS)
def test_schema_and_values_name_the_same_keys(chart: str) -> None:
    values = yaml.safe_load((HELM_DIR / chart / "values.yaml").read_text()) or {}
    schema = _schema(chart)
    # Helm adds the library chart's values key itself; the umbrella's global is shared.
    helm_added = {"global"} if chart == "polyframe-lib" else {"polyframe-lib"}
    assert _values_keys(values, schema) | helm_added == _schema_keys(schema)


@pytest.mark.parametrize("chart", CHARTS)
def test_defaults_pass_the_schema(chart: str) -> None:
    with helm.Chart.load(HELM_DIR / chart) as loaded:
        loaded.validate_schema(loaded.values)


def documentation(text: str) -> dict[str, str]:
    """Dotted key -> first line of the comment block right above it, for a values.yaml."""
    lines = text.splitlines()
    found: dict[str, str] = {}
    stack: list[tuple[int, str]] = []  # (indent, key) of the enclosing mappings
    for number, line in enumerate(lines):
        match = re.match(r"^(\s*)([^\s#-][^:]*):(\s|$)", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(k for _, k in stack), match.group(2)])
        stack.append((indent, match.group(2)))
        first = number
        while first > 0 and lines[first - 1].strip().startswith("#"):
            first -= 1
        found[path] = lines[first].strip() if first < number else ""
    return found


@pytest.mark.parametrize("chart", CHARTS)
def test_every_value_is_documented_by_a_comment_starting_with_its_name(chart: str) -> None:
    documented = documentation((HELM_DIR / chart / "values.yaml").read_text())
    values = yaml.safe_load((HELM_DIR / chart / "values.yaml").read_text()) or {}
    undocumented = []
    for path in sorted(_values_keys(values, _schema(chart))):
        key = path.rsplit(".", 1)[-1]
        comment = documented.get(path, "")
        if not re.match(rf"#\s*{re.escape(key)}:", comment):
            undocumented.append(f"{path}: {comment!r}")
    assert not undocumented, undocumented


def test_an_undocumented_key_is_seen() -> None:
    text = "# a: the a.\na:\n  # other: not b.\n  b: 1\n  c: 2\n"
    assert documentation(text) == {"a": "# a: the a.", "a.b": "# other: not b.", "a.c": ""}


# -- bad values are refused, naming the key ------------------------------------------------------

BAD_VALUES = [
    ("users-fastapi", {"replicaCount": "two"}, "/replicaCount"),
    ("users-fastapi", {"replicaCont": 2}, "replicaCont"),
    ("users-fastapi", {"image": {"tag": "latest"}}, "/image/tag"),
    ("users-fastapi", {"image": {"digest": "md5:abc"}}, "/image/digest"),
    ("users-fastapi", {"resources": {"requests": {"cpu": "lots"}}}, "/resources/requests/cpu"),
    (
        "users-fastapi",
        {"resources": {"limits": {"memory": None}}},
        "'/resources/limits': missing property 'memory'",
    ),
    ("users-fastapi", {"environment": "staging"}, "/environment"),
    ("users-fastapi", {"securityContext": {"runAsUser": 0}}, "/securityContext/runAsUser"),
    ("users-fastapi", {"server": {"workers": 4}}, "workers"),
    ("users-fastapi", {"tracing": {"samplerArg": "2"}}, "/tracing/samplerArg"),
    ("legacy-flask", {"server": {"threads": 0}}, "/server/threads"),
    ("legacy-flask", {"server": {"metricsPort": 80}}, "/server/metricsPort"),
    ("admin-django", {"server": {"metricsPort": "9100"}}, "/server/metricsPort"),
    ("legacy-flask", {"secrets": {"existingSecret": "x"}}, "secrets"),
    ("admin-django", {"outbox": {"enabled": True}}, "outbox"),
    ("admin-django", {"csrfTrustedOrigins": ["example.com"]}, "/csrfTrustedOrigins/0"),
    ("admin-django", {"secureCookies": "sometimes"}, "/secureCookies"),
    ("admin-django", {"extraEnv": {"BAD NAME": "x"}}, "invalid propertyName 'BAD NAME'"),
    ("polyframe", {"ingress": {"className": 5}}, "/ingress/className"),
    ("polyframe", {"ingress": {"host": "Not A Host"}}, "/ingress/host"),
    ("polyframe", {"postgresql": {"image": {"tag": "latest"}}}, "/postgresql/image/tag"),
    (
        "polyframe",
        {"httpRoute": {"parentRefs": {"gateway": {"name": ""}}}},
        "/httpRoute/parentRefs/gateway/name",
    ),
    ("polyframe", {"grafanaDashboards": {"folder": 1}}, "/grafanaDashboards/folder"),
    ("polyframe", {"monitoring": True}, "monitoring"),
    # A subchart's values, given through the umbrella chart, meet the subchart's schema.
    ("polyframe", {"users-fastapi": {"replicaCount": -1}}, "/replicaCount"),
    ("polyframe", {"admin-django": {"logLevel": "verbose"}}, "/logLevel"),
]


@pytest.mark.parametrize(
    ("chart", "values", "key"), BAD_VALUES, ids=[f"{c}:{k}" for c, _, k in BAD_VALUES]
)
def test_bad_values_are_refused_naming_the_key(
    chart: str, values: dict[str, Any], key: str
) -> None:
    values = {**values}
    if chart != "polyframe":
        values.setdefault("database", {"existingSecret": "db"})
    with (
        helm.Chart.load(HELM_DIR / chart) as loaded,
        pytest.raises(helm.HelmValuesError) as refused,
    ):
        loaded.render(values, name="polyframe", namespace="polyframe-under-test")
    assert key in str(refused.value), str(refused.value)


@pytest.mark.parametrize("chart", ["legacy-flask", "admin-django"])
def test_the_metrics_port_must_not_be_the_server_port(chart: str) -> None:
    """gunicorn's master and its workers cannot share a port: refused at render, naming the key."""
    values = {"server": {"metricsPort": 8000}, "database": {"existingSecret": "db"}}
    with (
        helm.Chart.load(HELM_DIR / chart) as loaded,
        pytest.raises(helm.HelmRenderError, match=r"server\.metricsPort: 8000 is server\.port"),
    ):
        loaded.render(values, name="polyframe", namespace="polyframe-under-test")


@pytest.mark.parametrize("chart", ["users-fastapi", "polyframe"])
def test_good_values_render(chart: str, render: Any) -> None:
    """The refusals above are about the bad values: the same charts render with good ones."""
    values: dict[str, Any] = (
        {"replicaCount": 2} if chart != "polyframe" else {"ingress": {"host": "example.com"}}
    )
    if chart != "polyframe":
        values["database"] = {"existingSecret": "db"}
    assert render(chart, values).manifests
