"""The Grafana dashboards: what Grafana needs to load them, and what every query must say.

The cluster dashboard's queries (cAdvisor, kube-state-metrics) are evaluated here against
synthetic series of the same names and labels with promtool: no cluster runs here, and the
live test (tests/e2e/test_e2e_observability.py) has no kubelet to scrape.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from polyframe_dashboards import cli

GRAFANA = Path(__file__).resolve().parents[2] / "observability" / "grafana"
DASHBOARD_FILES = (
    "polyframe-overview.json",
    "polyframe-frameworks.json",
    "polyframe-fastapi.json",
    "polyframe-flask.json",
    "polyframe-django.json",
    "polyframe-slo.json",
    "polyframe-kubernetes.json",
)
CLUSTER = "polyframe-kubernetes.json"
#: The only variables a query may use (the live test fills in exactly these). Changes with the
#: dashboards, on purpose: service and instance (pod on the cluster dashboard) came with issue 16.
VARIABLES = frozenset(
    {"namespace", "service", "instance", "pod", "__rate_interval", "__interval", "__range"}
)
NAMESPACE_FILTER = 'namespace=~"$namespace"'
SERVICE_FILTER = 'service_name=~"$service"'
INSTANCE_FILTER = 'instance=~"$instance"'
POD_FILTER = 'pod=~"$pod"'
NAMESPACES = "label_values(polyframe_build_info, namespace)"
VARIABLE = re.compile(r"\$\{?(\w+)")
#: cAdvisor's and kube-state-metrics' series the cluster dashboard reads (and only it).
CLUSTER_METRICS = frozenset(
    {
        "kube_pod_info",
        "kube_pod_container_status_restarts_total",
        "kube_pod_container_status_last_terminated_reason",
        "kube_pod_container_resource_limits",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
        "container_cpu_cfs_throttled_periods_total",
        "container_cpu_cfs_periods_total",
        "container_memory_working_set_bytes",
    }
)
SLO_WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
#: What issue 16 found misleading in the panel texts: each pattern is a claim the code
#: contradicts (the master serves the gunicorn services' scrape; the in-flight gauge does not
#: count it; multiprocess mode has no exemplars, in Kubernetes too; gunicorn's timeout does not
#: end a long gthread request).
MISLEADING = (
    re.compile(r"includes? the scrape|scrape included|answering the scrape included", re.I),
    re.compile(r"/metrics from its worker threads|scrape (is )?served by a worker", re.I),
    re.compile(r"threads are all busy also fails its scrape", re.I),
    re.compile(r"one server process per container \(Kubernetes\), the diamonds", re.I),
    re.compile(r"timeout\W+(recycles?|kills?|ends?) (a |the )?long", re.I),
)


def _queries(dashboard: dict[str, Any], all_panels: Any) -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]


def _annotation_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (item["name"], item["expr"])
        for item in dashboard["annotations"]["list"]
        if item.get("expr")
    ]


def test_the_dashboards_are_the_expected_files(dashboards: dict[str, Any]) -> None:
    assert sorted(dashboards) == sorted(DASHBOARD_FILES)


def test_the_files_are_what_the_generator_writes() -> None:
    """tools/polyframe-dashboards is the source: a hand edit of the JSON alone is caught here."""
    rendered = cli.render()
    assert sorted(rendered) == sorted(DASHBOARD_FILES)
    for name, text in rendered.items():
        assert (GRAFANA / "dashboards" / name).read_text() == text, (
            f"{name} differs from the generator: run make dashboards"
        )
    assert cli.main(["--check", "--out", str(GRAFANA / "dashboards")]) == 0


def test_uids_are_stable_and_unique(dashboards: dict[str, Any]) -> None:
    uids = [board["uid"] for board in dashboards.values()]
    assert len(uids) == len(set(uids)), uids
    for name, board in dashboards.items():
        assert board["uid"] == name.removesuffix(".json"), name
        assert board.get("id") is None, f"{name}: an id belongs to one Grafana instance"
        assert board["schemaVersion"] >= 36, name  # Grafana 10 and later
        assert board["title"].startswith("Polyframe / "), name


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_templated_by_datasource_namespace_service_and_instance(
    dashboards: dict[str, Any], name: str
) -> None:
    variables = {item["name"]: item for item in dashboards[name]["templating"]["list"]}
    last = "pod" if name == CLUSTER else "instance"
    assert list(variables) == ["datasource", "namespace", "service", last]
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for variable in ("namespace", "service", last):
        item = variables[variable]
        assert item["type"] == "query", variable
        assert item["datasource"]["uid"] == "${datasource}", variable
        assert item["multi"], variable
        assert item["includeAll"], variable
    assert variables["namespace"]["query"] == NAMESPACES
    assert variables["service"]["query"] == (
        'label_values(polyframe_build_info{namespace=~"$namespace"}, service_name)'
    )
    # "All" of a pod or an instance is the list of the service's own, not any value.
    assert "allValue" not in variables[last]
    assert re.search(r"\$\{?service\b", variables[last]["query"]), variables[last]["query"]


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
    assert 0 not in ids, f"{name}: panel ids start at 1"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_query_uses_only_the_known_variables(
    dashboards: dict[str, Any], all_panels: Any, name: str
) -> None:
    board = dashboards[name]
    for title, expr in _queries(board, all_panels) + _annotation_queries(board):
        used = set(VARIABLE.findall(expr))
        assert used <= VARIABLES, f"{title}: {sorted(used - VARIABLES)} in {expr}"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_selector_follows_the_variables(
    dashboards: dict[str, Any],
    all_panels: Any,
    scan: Any,
    catalogue: frozenset[str],
    name: str,
) -> None:
    """Namespace everywhere; service on every Polyframe series; instance on every raw one of a
    panel (recorded series are summed over instances; annotations mark a whole service); pod on
    the cluster's per-pod series, the service on its autoscalers."""
    board = dashboards[name]
    panels = [(title, expr, True) for title, expr in _queries(board, all_panels)]
    annotations = [(title, expr, False) for title, expr in _annotation_queries(board)]
    for title, expr, per_instance in panels + annotations:
        found = scan(expr)
        assert found, f"{title}: no metric in {expr}"
        for selector in found:
            where = f"{title}: {selector.name} in {expr}"
            assert NAMESPACE_FILTER in selector.matchers, where
            polyframe = selector.name in catalogue
            if polyframe or selector.name.startswith("service_name"):
                assert SERVICE_FILTER in selector.matchers, where
            if polyframe and per_instance and not selector.recorded:
                assert INSTANCE_FILTER in selector.matchers, where
            if selector.name.startswith("kube_horizontalpodautoscaler"):
                assert "$service" in selector.matchers, where
            elif selector.name in CLUSTER_METRICS:
                assert POD_FILTER in selector.matchers, where


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_every_metric_a_dashboard_reads_exists(
    dashboards: dict[str, Any], all_panels: Any, scan: Any, known_metric: Any, name: str
) -> None:
    board = dashboards[name]
    for title, expr in _queries(board, all_panels) + _annotation_queries(board):
        for selector in scan(expr):
            known = known_metric(selector.name)
            if name == CLUSTER:
                known = known or selector.name in CLUSTER_METRICS
            assert known, f"{title}: {selector.name} is not produced"


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_deploys_and_restarts_are_annotated(dashboards: dict[str, Any], name: str) -> None:
    queries = dict(_annotation_queries(dashboards[name]))
    assert sorted(queries) == [
        "Deploys (new version or process)",
        "Restarts (cold start measured again)",
    ]
    assert "polyframe_build_info" in queries["Deploys (new version or process)"]


@pytest.mark.parametrize("name", DASHBOARD_FILES)
def test_no_panel_text_says_what_the_code_contradicts(
    dashboards: dict[str, Any], all_panels: Any, name: str
) -> None:
    for panel in all_panels(dashboards[name]):
        text = f"{panel['title']}: {panel.get('description', '')}"
        for claim in MISLEADING:
            assert not claim.search(text), f"{name} / {panel['title']}: {claim.pattern}"


def test_the_misleading_claims_are_recognised() -> None:
    """The patterns above catch the sentences issue 16 quoted from the old dashboards."""
    old = [
        "Requests being served right now (a gunicorn service's count includes the scrape).",
        "Threads serving a request now (the one answering the scrape included) against",
        "A gunicorn service answers /metrics from its worker threads: when all are busy",
        "A gunicorn service whose threads are all busy also fails its scrape.",
        "With one server process per container (Kubernetes), the diamonds are exemplars",
        "gunicorn's timeout recycles a long gthread request",
    ]
    for sentence in old:
        assert any(claim.search(sentence) for claim in MISLEADING), sentence


# -- the framework comparison -------------------------------------------------------------------

#: One panel per signal, in this order; the three frameworks are three series of each.
COMPARISON = (
    "Requests per second",
    "Latency p50 / p99",
    "5xx ratio",
    "CPU per request",
    "Memory per worker",
    "Cold start",
    "Thread busy ratio",
    "Wait before running: loop lag p99 / queue p95",
    "Requests in flight",
)


def test_the_comparison_is_one_time_series_per_signal_with_a_series_per_framework(
    dashboards: dict[str, Any], all_panels: Any
) -> None:
    board = dashboards["polyframe-frameworks.json"]
    panels = [panel for panel in all_panels(board) if panel["type"] != "row"]
    assert [panel["title"] for panel in panels] == list(COMPARISON)
    for panel in panels:
        assert panel["type"] == "timeseries", panel["title"]  # over time, no bar gauges
        assert panel["fieldConfig"]["defaults"]["custom"]["axisSoftMin"] == 0, panel["title"]
        for target in panel["targets"]:
            expr, legend = target["expr"], target["legendFormat"]
            assert "{{framework}}" in legend, panel["title"]
            # Never one framework per query: the three are series of the same query.
            assert not re.search(r'framework=~?"(fastapi|flask|django)', expr), expr
            for grouping in re.findall(r"\bby \(([^)]*)\)", expr):
                assert "framework" in grouping, f"{panel['title']}: by ({grouping}) in {expr}"


def test_the_comparison_counts_the_gunicorn_master(dashboards: dict[str, Any]) -> None:
    """Memory per worker is every process of the service over its workers; CPU per request
    is every process's CPU: neither selects process_role="worker" alone."""
    board = dashboards["polyframe-frameworks.json"]
    by_title = {panel["title"]: panel for panel in board["panels"]}
    memory = by_title["Memory per worker"]["targets"][0]["expr"]
    numerator, denominator = memory.split(" / ")
    assert "process_role" not in numerator, memory
    assert 'process_role!="master"' in denominator, memory
    cpu = by_title["CPU per request"]["targets"][0]["expr"]
    assert "process_role" not in cpu, cpu


# -- the SLO dashboard --------------------------------------------------------------------------


def test_the_slo_dashboard_reads_every_burn_rate_window(
    dashboards: dict[str, Any], all_panels: Any
) -> None:
    exprs = " ".join(expr for _, expr in _queries(dashboards["polyframe-slo.json"], all_panels))
    for ratio, budget in (
        ("service_name:http_server_requests_errors:ratio_rate", "0.001"),
        ("service_name:http_server_requests_over_500ms:ratio_rate", "0.01"),
    ):
        for window in SLO_WINDOWS:
            assert f"{ratio}{window}{{" in exprs, f"{ratio}{window}"
            assert re.search(rf"{re.escape(ratio + window)}\{{[^}}]*\}}\) / {budget}\b", exprs)
    # Budget left (stat and graph): the recorded 30-day budgets the rules keep.
    for objective in ("availability", "latency"):
        recorded = f"service_name:slo_{objective}_error_budget:remaining_ratio30d{{"
        assert exprs.count(recorded) == 2, recorded


# -- every query parses; the cluster's against synthetic series ---------------------------------


def _run_promtool(promtool: str, tests: dict[str, Any], folder: Path) -> str:
    path = folder / "dashboard_test.yaml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=folder,
    )
    return done.stdout + done.stderr if done.returncode else ""


def test_every_query_parses(
    dashboards: dict[str, Any], all_panels: Any, fill_variables: Any, promtool: str, tmp_path: Path
) -> None:
    """promtool parses each query (the live test evaluates them on the running platform)."""
    cases = []
    for board in dashboards.values():
        for _, expr in _queries(board, all_panels) + _annotation_queries(board):
            # An expression over no series at all: parsed and evaluated, empty.
            cases.append({"expr": fill_variables(expr), "eval_time": "1m", "exp_samples": []})
    tests = {"rule_files": [], "tests": [{"interval": "1m", "promql_expr_test": cases}]}
    assert not (failed := _run_promtool(promtool, tests, tmp_path)), failed


#: A cluster as kube-state-metrics and cAdvisor describe it, every minute for 30 minutes: two
#: Polyframe pods, plus a pod of another workload in the namespace and one in another namespace
#: (both must stay out of every panel). The counters grow by a whole number each minute, so the
#: increases and rates over windows that start and end on a sample are exact.
NS = "polyframe"
FLASK = "polyframe-legacy-flask-6d5c9-abcde"
DJANGO = "polyframe-admin-django-7f8b4-fghij"
POSTGRES = "polyframe-postgresql-0"
OTHER = "elsewhere-legacy-flask-1a2b3-zzzzz"


def _series(metric: str, labels: dict[str, str], values: str) -> dict[str, str]:
    inner = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{metric}{{{inner}}}", "values": values}


def _pod(pod: str, namespace: str = NS, container: str = "web") -> dict[str, str]:
    return {"namespace": namespace, "pod": pod, "container": container}


def _synthetic_cluster() -> list[dict[str, str]]:
    series = []
    for pod, namespace in ((FLASK, NS), (DJANGO, NS), (POSTGRES, NS), (OTHER, "elsewhere")):
        labels = _pod(pod, namespace)
        restarts_per_15m = 3 if pod == FLASK else 0
        series += [
            _series("kube_pod_info", {"namespace": namespace, "pod": pod}, "1x30"),
            _series(
                "kube_pod_container_status_restarts_total",
                labels,
                f"0x15 {restarts_per_15m}x14",
            ),
            _series(
                "kube_pod_container_status_last_terminated_reason",
                {**labels, "reason": "OOMKilled"},
                "1x30" if pod == FLASK else "0x30",
            ),
            _series("container_cpu_cfs_periods_total", labels, "0+600x30"),
            _series(
                "container_cpu_cfs_throttled_periods_total",
                labels,
                "0+150x30" if pod == DJANGO else "0x30",
            ),
            # cAdvisor's pod-level series (container="") and the pause container: left out.
            _series("container_cpu_cfs_periods_total", _pod(pod, namespace, ""), "0+600x30"),
            _series(
                "container_cpu_cfs_throttled_periods_total",
                _pod(pod, namespace, ""),
                "0+600x30",
            ),
            _series("container_memory_working_set_bytes", labels, "300000000x30"),
            _series("container_memory_working_set_bytes", _pod(pod, namespace, "POD"), "1e6x30"),
            _series(
                "kube_pod_container_resource_limits",
                {**labels, "resource": "memory", "unit": "byte"},
                "500000000x30",
            ),
            _series(
                "kube_pod_container_resource_limits",
                {**labels, "resource": "cpu", "unit": "core"},
                "1x30",
            ),
        ]
    for hpa, namespace, current in (
        ("polyframe-legacy-flask", NS, 4),
        ("polyframe-admin-django", NS, 2),
        ("polyframe-legacy-flask", "elsewhere", 4),
    ):
        labels = {"namespace": namespace, "horizontalpodautoscaler": hpa}
        series += [
            _series(
                "kube_horizontalpodautoscaler_status_current_replicas", labels, f"{current}x30"
            ),
            _series("kube_horizontalpodautoscaler_spec_max_replicas", labels, "4x30"),
        ]
    return series


def _labels(**labels: str) -> str:
    return "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


#: Panel title -> the samples its query must give at 30 m on the synthetic cluster.
CLUSTER_EXPECTED: dict[str, list[tuple[str, float]]] = {
    "Restarts (last 15 min)": [
        (_labels(namespace=NS, pod=FLASK, container="web"), 3),
        (_labels(namespace=NS, pod=DJANGO, container="web"), 0),
    ],
    "Last termination was an OOM kill": [
        (_labels(namespace=NS, pod=FLASK, container="web"), 1),
        (_labels(namespace=NS, pod=DJANGO, container="web"), 0),
    ],
    "CPU throttling": [
        (_labels(namespace=NS, pod=FLASK, container="web"), 0),
        (_labels(namespace=NS, pod=DJANGO, container="web"), 0.25),
    ],
    "Memory against the limit": [
        (_labels(namespace=NS, pod=FLASK, container="web"), 0.6),
        (_labels(namespace=NS, pod=DJANGO, container="web"), 0.6),
    ],
    "Autoscalers: replicas against their maximum": [
        (_labels(namespace=NS, horizontalpodautoscaler="polyframe-legacy-flask"), 1),
        (_labels(namespace=NS, horizontalpodautoscaler="polyframe-admin-django"), 0.5),
    ],
}


def test_the_cluster_queries_on_synthetic_kube_state_metrics_and_cadvisor(
    dashboards: dict[str, Any], all_panels: Any, promtool: str, tmp_path: Path
) -> None:
    """No cluster here: promtool evaluates the cluster dashboard's queries on synthetic series
    of cAdvisor's and kube-state-metrics' names and labels. This promtool (Debian's 2.42)
    closes range windows at both ends, so a 15-minute window at 30 m holds the samples of 15 m
    and 30 m and the increases below are exact; Prometheus 3 opens them at the start and
    extrapolates instead."""
    board = dashboards[CLUSTER]
    queries = dict(_queries(board, all_panels))
    assert sorted(queries) == sorted(CLUSTER_EXPECTED)
    fill = {
        "$namespace": NS,
        "$service": "(legacy-flask|admin-django)",
        "$pod": f"({FLASK}|{DJANGO})",
        "$__rate_interval": "5m",
    }
    cases = []
    for title, expected in CLUSTER_EXPECTED.items():
        expr = queries[title]
        for variable, value in fill.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        cases.append(
            {
                "expr": expr,
                "eval_time": "30m",
                "exp_samples": [{"labels": labels, "value": value} for labels, value in expected],
            }
        )
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {"interval": "1m", "input_series": _synthetic_cluster(), "promql_expr_test": cases}
        ],
    }
    assert not (failed := _run_promtool(promtool, tests, tmp_path)), failed


def test_queries_with_variables_filled_in_are_complete(
    dashboards: dict[str, Any], all_panels: Any, fill_variables: Any
) -> None:
    for board in dashboards.values():
        for title, expr in _queries(board, all_panels) + _annotation_queries(board):
            assert "$" not in fill_variables(expr), f"{title}: {expr}"


def test_the_json_is_plain_grafana_json(dashboards: dict[str, Any]) -> None:
    """What the SDK writes round-trips through json unchanged (no Python-only values)."""
    for name, board in dashboards.items():
        assert json.loads(json.dumps(board)) == board, name
