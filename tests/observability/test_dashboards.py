"""The Grafana dashboards: what Grafana needs to load them, and what every query must say."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import pytest

GRAFANA = Path(__file__).resolve().parents[2] / "observability" / "grafana"
DASHBOARD_FILES = (
    "polyframe-overview.json",
    "polyframe-frameworks.json",
    "polyframe-fastapi.json",
    "polyframe-flask.json",
    "polyframe-django.json",
)
#: The only variables a query may use (the live test fills in exactly these).
VARIABLES = frozenset({"namespace", "__rate_interval", "__interval", "__range"})
NAMESPACE_FILTER = 'namespace=~"$namespace"'
NAMESPACES = "label_values(polyframe_build_info, namespace)"
VARIABLE = re.compile(r"\$\{?(\w+)")


def _queries(dashboard: dict[str, Any], all_panels: Any) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def test_the_dashboards_are_the_expected_files(dashboards: dict[str, Any]) -> None:
    assert sorted(dashboards) == sorted(DASHBOARD_FILES)


def test_the_files_are_what_the_generator_writes() -> None:
    """build_dashboards.py is the source: a hand edit of the JSON alone is caught here."""
    spec = importlib.util.spec_from_file_location(
        "build_dashboards", GRAFANA / "build_dashboards.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, text in module.build().items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, (
            f"{name} differs from the generator: run python observability/grafana/"
            "build_dashboards.py"
        )


def test_uids_are_stable_and_unique(dashboards: dict[str, Any]) -> None:
    uids = [board["uid"] for board in dashboards.values()]
    assert len(uids) == len(set(uids)), uids
    for name, board in dashboards.items():
        assert board["uid"] == name.removesuffix(".json"), name
        assert board.get("id") is None, f"{name}: an id belongs to one Grafana instance"
        assert board["schemaVersion"] >= 36, name  # Grafana 10 and later
        assert board["title"].startswith("Polyframe / "), name


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_templated_by_datasource_and_namespace(dashboards: dict[str, Any], name: str) -> None:
    variables = {item["name"]: item for item in dashboards[name]["templating"]["list"]}
    assert set(variables) == {"datasource", "namespace"}, sorted(variables)
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    namespace = variables["namespace"]
    assert namespace["type"] == "query"
    assert namespace["datasource"]["uid"] == "${datasource}"
    assert namespace["definition"] == NAMESPACES
    query = namespace["query"]
    assert (query["query"] if isinstance(query, dict) else query) == NAMESPACES


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_panel_has_a_datasource_and_a_query(
    dashboards: dict[str, Any], all_panels: Any, name: str
) -> None:
    ids = []
    for panel in all_panels(dashboards[name]):
        ids.append(panel["id"])
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel
        assert panel["targets"], f"{panel['title']} has no query"
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"], panel["title"]
            assert target["expr"].strip(), panel["title"]
        assert panel.get("description"), f"{panel['title']} does not say what it shows"
    assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_query_uses_only_the_known_variables(
    dashboards: dict[str, Any], all_panels: Any, name: str
) -> None:
    for title, expr in _queries(dashboards[name], all_panels):
        used = set(VARIABLE.findall(expr))
        assert used <= VARIABLES, f"{title}: {sorted(used - VARIABLES)} in {expr}"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_selector_is_filtered_by_namespace(
    dashboards: dict[str, Any], all_panels: Any, scan: Any, name: str
) -> None:
    for title, expr in _queries(dashboards[name], all_panels):
        found = scan(expr)
        assert found, f"{title}: no metric in {expr}"
        for selector in found:
            assert NAMESPACE_FILTER in selector.matchers, f"{title}: {selector.name} in {expr}"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_metric_a_dashboard_reads_exists(
    dashboards: dict[str, Any], all_panels: Any, scan: Any, known_metric: Any, name: str
) -> None:
    for title, expr in _queries(dashboards[name], all_panels):
        for selector in scan(expr):
            assert known_metric(selector.name), f"{title}: {selector.name} is not produced"


def test_the_comparison_shows_the_same_panels_for_the_three_frameworks(
    dashboards: dict[str, Any], all_panels: Any
) -> None:
    board = dashboards["polyframe-frameworks.json"]
    measures = (
        "Throughput",
        "Latency p50 / p95 / p99",
        "5xx ratio",
        "Memory per worker",
        "Cold start",
        "CPU per request",
    )
    by_title = {panel["title"]: panel for panel in all_panels(board)}
    for measure in measures:
        trio = [
            by_title[f"{measure}: {label}"]
            for label in (
                "FastAPI (users-fastapi)",
                "Flask (legacy-flask)",
                "Django (admin-django)",
            )
        ]
        exprs = [[t["expr"] for t in panel["targets"]] for panel in trio]
        # Side by side on one line, and the same queries but for the framework.
        assert len({panel["gridPos"]["y"] for panel in trio}) == 1, measure
        normalised = [
            [re.sub(r'framework="(fastapi|flask|django)"', 'framework="X"', e) for e in group]
            for group in exprs
        ]
        assert normalised[0] == normalised[1] == normalised[2], measure


def test_queries_with_variables_filled_in_are_complete(
    dashboards: dict[str, Any], all_panels: Any, fill_variables: Any
) -> None:
    for board in dashboards.values():
        for title, expr in _queries(board, all_panels):
            assert "$" not in fill_variables(expr), f"{title}: {expr}"
