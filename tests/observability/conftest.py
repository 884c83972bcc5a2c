"""What the tests of observability/ share: the files, the metric catalogue, a PromQL scanner.

The scanner is not a PromQL parser (promtool and the live Prometheus parse): it finds the
vector selectors of an expression, the metric name and the label matchers of each, which is
what the checks of names and of the namespace filter need.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from polyframe_testing.tools import unavailable

OBSERVABILITY = Path(__file__).resolve().parents[2] / "observability"
RULES = OBSERVABILITY / "prometheus" / "rules"
DASHBOARDS = OBSERVABILITY / "grafana" / "dashboards"

# -- PromQL selectors ---------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
    |(?P<braces>\{[^{}]*\})
    |(?P<range>\[[^\]]*\])
    |(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[a-z]*)
    |(?P<variable>\$\{?\w+\}?)
    |(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)
    |(?P<other>\S)
    """,
    re.VERBOSE,
)
#: Words followed by a parenthesised list of label names.
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values"}
    | {"bottomk", "topk", "quantile"}
)
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})


@dataclass(frozen=True)
class Selector:
    name: str
    matchers: str  # the text between the braces, "" without any

    @property
    def recorded(self) -> bool:
        return ":" in self.name


def selectors(expr: str) -> list[Selector]:
    """Every vector selector of ``expr`` (metric names; functions and keywords left out)."""
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr)]
    found: list[Selector] = []
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1] if index + 1 < len(tokens) else (None, "")
        index += 1
        if kind == "braces":
            raise AssertionError(f"label matchers without a metric name in {expr!r}: {text}")
        if kind != "name":
            continue
        lowered = text.lower()
        if lowered in _GROUPING:
            depth = 0
            while index < len(tokens):  # skip "( label, … )"
                depth += {"(": 1, ")": -1}.get(tokens[index][1], 0)
                index += 1
                if depth == 0:
                    break
            continue
        if following[1] == "(" or lowered in _AGGREGATIONS or lowered in _KEYWORDS:
            continue
        matchers = ""
        if following[0] == "braces":
            matchers = following[1][1:-1]
            index += 1
        found.append(Selector(text, matchers))
    return found


def grafana_expr(expr: str) -> str:
    """``expr`` with Grafana's variables filled in, as Grafana sends it."""
    for variable, value in (
        ("$__rate_interval", "1m"),
        ("$__interval", "15s"),
        ("$__range", "1h"),
        ("$namespace", "local"),
        # "All" of the dashboards' multi-value variables.
        ("${service}", ".+"),
        ("$service", ".+"),
        ("$instance", ".+"),
        ("$pod", ".+"),
    ):
        expr = expr.replace(variable, value)
    return expr


# -- the files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    path: Path
    group: str
    body: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.body.get("alert") or self.body.get("record"))


def load_rules() -> list[Rule]:
    rules = []
    for path in sorted(RULES.glob("*.yaml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(Rule(path, group["name"], body) for body in group["rules"])
    return rules


@pytest.fixture(scope="session")
def scan() -> Any:
    """The selector scanner (:func:`selectors`)."""
    return selectors


@pytest.fixture(scope="session")
def fill_variables() -> Any:
    """Grafana's variables filled in (:func:`grafana_expr`)."""
    return grafana_expr


@pytest.fixture(scope="session")
def all_panels() -> Any:
    """Every panel of a dashboard, rows' own included (:func:`panels`)."""
    return panels


@pytest.fixture(scope="session")
def rules() -> list[Rule]:
    return load_rules()


@pytest.fixture(scope="session")
def alerts(rules: list[Rule]) -> dict[str, Rule]:
    return {rule.name: rule for rule in rules if "alert" in rule.body}


@pytest.fixture(scope="session")
def recorded(rules: list[Rule]) -> frozenset[str]:
    return frozenset(rule.name for rule in rules if "record" in rule.body)


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows' own panels included."""
    pending = list(dashboard.get("panels", []))
    while pending:
        panel = pending.pop(0)
        pending.extend(panel.get("panels", []))
        yield panel


@pytest.fixture(scope="session")
def dashboards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


# -- the metric catalogue -----------------------------------------------------------------------

_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("_count", "_sum", ""),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


@pytest.fixture(scope="session")
def catalogue() -> frozenset[str]:
    """Every series name the services can expose: the families of service_kit.metrics."""
    from service_kit import metrics

    names = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + suffix for suffix in _SUFFIXES[family.type])
    return frozenset(names)


@pytest.fixture(scope="session")
def known_metric(catalogue: frozenset[str], recorded: frozenset[str]) -> Any:
    """Whether a name used by a rule or a dashboard exists: the catalogue, Traefik's own
    metrics, Prometheus's ``up``, or a series recorded by the rule files."""

    def known(name: str) -> bool:
        return name in catalogue or name in recorded or name == "up" or name.startswith("traefik_")

    return known


# -- promtool -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        unavailable("promtool is missing: apt-get install prometheus")
    return binary
