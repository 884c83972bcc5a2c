"""PrometheusRules and dashboard ConfigMaps come from observability/, file for file, not copies.

How the umbrella chart reads files outside itself: Helm only sees files inside a chart, but its
loader follows symbolic links (the Helm v4 engine logs "found symbolic link in path. Contents of
linked file included"). deploy/helm/polyframe/files/prometheus-rules and files/grafana-dashboards
are symlinks to observability/prometheus/rules and observability/grafana/dashboards; the
templates read them with .Files.Glob, so a new file there is a new object, with no edit to the
chart. `helm package` follows the links and ships the files inside the archive.

The tests cover every file present in those folders when they run (one case per file), check
that the rendered objects are exactly the files (no more, no fewer), and prove the mechanism
itself on a copy of the charts with fixture files, whatever observability/ holds today.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "deploy" / "helm" / "polyframe"
RULES_DIR = REPO_ROOT / "observability" / "prometheus" / "rules"
DASHBOARDS_DIR = REPO_ROOT / "observability" / "grafana" / "dashboards"
LINKS = {
    CHART / "files" / "prometheus-rules": Path("../../../../observability/prometheus/rules"),
    CHART / "files" / "grafana-dashboards": Path("../../../../observability/grafana/dashboards"),
}
RULE_FILES = sorted(RULES_DIR.glob("*.yaml"))
DASHBOARD_FILES = sorted(DASHBOARDS_DIR.glob("*.json"))
SOURCE = "polyframe.dev/source"


def _by_source(rendered: Any, kind: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for manifest in rendered.of_kind(kind):
        if SOURCE in manifest.annotations:
            found[manifest.annotations[SOURCE]] = manifest.obj
    return found


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root))


# -- the repository's own files -----------------------------------------------------------------


def test_the_chart_links_to_observability_instead_of_copying() -> None:
    """Either observability/ has no such folder yet, or the chart links to it (never a copy)."""
    for link, target in LINKS.items():
        folder = (link.parent / target).resolve()
        if link.is_symlink():
            assert Path(link.readlink()) == target, link
            assert link.resolve() == folder, f"{link} does not resolve to {folder}"
        else:
            assert not link.exists(), f"{link} is a copy: make it a symlink to {target}"
            assert not folder.exists(), (
                f"{_relative(folder, REPO_ROOT)} exists: link it into the chart with "
                f"`ln -s {target} {_relative(link, REPO_ROOT)}`"
            )


@pytest.mark.parametrize(
    "path", RULE_FILES or [None], ids=lambda p: p.name if p else "no-rule-file-yet"
)
def test_each_rule_file_is_a_prometheus_rule(render_case: Any, path: Path | None) -> None:
    rendered = _by_source(render_case("polyframe", "all-on"), "PrometheusRule")
    if path is None:
        assert rendered == {}, "PrometheusRules rendered without a rule file in observability/"
        return
    source = _relative(path, REPO_ROOT)
    assert source in rendered, f"{source} is not rendered as a PrometheusRule"
    assert rendered[source]["spec"]["groups"] == yaml.safe_load(path.read_text())["groups"]


def test_the_alerts_links_get_the_prefixes_of_the_values(render: Any) -> None:
    """runbook_url and dashboard_url are relative in the files; the PrometheusRules carry
    alerting.runbookBaseUrl and alerting.grafanaUrl in front, and nothing else changes."""
    values: dict[str, Any] = {
        "prometheusRule": {"enabled": True},
        "alerting": {
            "runbookBaseUrl": "https://git.example.com/polyframe/-/blob/main/",
            "grafanaUrl": "https://grafana.example.com",
        },
    }
    rendered = _by_source(render("polyframe", values), "PrometheusRule")
    runbooks = values["alerting"]["runbookBaseUrl"]
    linked = 0
    for path in RULE_FILES:
        expected = yaml.safe_load(path.read_text())["groups"]
        for group in expected:
            for rule in group["rules"]:
                annotations = rule.get("annotations", {})
                if "runbook_url" in annotations:
                    annotations["runbook_url"] = runbooks + annotations["runbook_url"]
                    linked += 1
                if "dashboard_url" in annotations:
                    annotations["dashboard_url"] = (
                        "https://grafana.example.com" + annotations["dashboard_url"]
                    )
        assert rendered[_relative(path, REPO_ROOT)]["spec"]["groups"] == expected
    if RULE_FILES:
        assert linked, "no alert with a runbook_url"


@pytest.mark.parametrize(
    "path", DASHBOARD_FILES or [None], ids=lambda p: p.name if p else "no-dashboard-yet"
)
def test_each_dashboard_is_a_configmap(render_case: Any, path: Path | None) -> None:
    rendered = _by_source(render_case("polyframe", "all-on"), "ConfigMap")
    if path is None:
        assert rendered == {}, "dashboard ConfigMaps rendered without a dashboard in observability/"
        return
    source = _relative(path, REPO_ROOT)
    assert source in rendered, f"{source} is not rendered as a ConfigMap"
    configmap = rendered[source]
    assert configmap["data"] == {path.name: path.read_text()}
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    json.loads(configmap["data"][path.name])


def test_rendered_rules_and_dashboards_are_exactly_the_files(render_case: Any) -> None:
    rendered = render_case("polyframe", "all-on")
    assert set(_by_source(rendered, "PrometheusRule")) == {
        _relative(p, REPO_ROOT) for p in RULE_FILES
    }
    assert set(_by_source(rendered, "ConfigMap")) == {
        _relative(p, REPO_ROOT) for p in DASHBOARD_FILES
    }


def test_switched_off_by_default(render_case: Any) -> None:
    rendered = render_case("polyframe", "default")
    assert not rendered.of_kind("PrometheusRule")
    assert not _by_source(rendered, "ConfigMap")


# -- found by kube-prometheus-stack as it is usually installed -------------------------------------

#: kube-prometheus-stack's default serviceMonitorSelector and ruleSelector (its
#: *SelectorNilUsesHelmValues: true) select `release: <its Helm release>`; installed as its README
#: says, `helm install kube-prometheus-stack prometheus-community/kube-prometheus-stack`.
STACK_SELECTOR = {"release": "kube-prometheus-stack"}


def _selected(manifest: Any, selector: dict[str, str]) -> bool:
    return all(manifest.labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("chart", ["users-fastapi", "legacy-flask", "admin-django"])
def test_kube_prometheus_stack_selects_the_service_monitors_by_default(
    render: Any, chart: str
) -> None:
    rendered = render(
        chart, {"serviceMonitor": {"enabled": True}, "database": {"existingSecret": "db"}}
    )
    monitors = rendered.of_kind("ServiceMonitor")
    assert monitors
    assert all(_selected(m, STACK_SELECTOR) for m in monitors), [m.labels for m in monitors]


def test_kube_prometheus_stack_selects_the_rules_by_default(render: Any) -> None:
    if not RULE_FILES:
        pytest.skip("observability/prometheus/rules holds no rule file")
    rules = render("polyframe", {"prometheusRule": {"enabled": True}}).of_kind("PrometheusRule")
    assert rules
    assert all(_selected(r, STACK_SELECTOR) for r in rules), [r.labels for r in rules]


def test_another_prometheus_is_one_setting_away(render: Any) -> None:
    """Another release of the stack: `labels.release`; a Prometheus that selects otherwise:
    `labels.release: null` (Helm drops the default) and its own labels."""
    values: dict[str, Any] = {
        "prometheusRule": {"enabled": True, "labels": {"release": "monitoring"}},
        "users-fastapi": {
            "serviceMonitor": {"enabled": True, "labels": {"release": None, "team": "shop"}}
        },
    }
    rendered = render("polyframe", values)
    for rule in rendered.of_kind("PrometheusRule"):
        assert rule.labels["release"] == "monitoring"
    (monitor, *_) = rendered.of_kind("ServiceMonitor")
    assert "release" not in monitor.labels
    assert monitor.labels["team"] == "shop"


# -- the mechanism, on a copy with fixture files ------------------------------------------------

FIXTURE_RULES = {
    "polyframe-alerts.yaml": """\
# Alerts of the platform (fixture).
groups:
  - name: polyframe.availability
    rules:
      - alert: ServiceDown
        expr: up{job=~"polyframe-.*"} == 0
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.job }} is down"
          description: 'No scrape of {{ $labels.instance }} for {{ $value | humanizeDuration }}.'
""",
    "Recording_Rules.yaml": """\
groups:
  - name: polyframe.recording
    interval: 30s
    rules:
      - record: service:http_server_requests:rate5m
        expr: sum by (service) (rate(http_server_request_duration_seconds_count[5m]))
""",
}
FIXTURE_DASHBOARD = {
    "title": "Framework comparison — p99 < 250 ms & errors",
    "templating": {"list": [{"name": "namespace", "query": "label_values(up, namespace)"}]},
    "panels": [
        {"targets": [{"expr": "histogram_quantile(0.99, sum by (le) (rate(x[$__rate_interval])))"}]}
    ],
    "description": "{{ not a helm template }}",
}


@pytest.fixture(scope="module")
def charts_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """deploy/ copied with its symlinks, next to an observability/ of fixture files."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(REPO_ROOT / "deploy" / "helm", root / "deploy" / "helm", symlinks=True)
    shutil.copy(REPO_ROOT / "deploy" / "routes.yaml", root / "deploy" / "routes.yaml")
    rules = root / "observability" / "prometheus" / "rules"
    dashboards = root / "observability" / "grafana" / "dashboards"
    rules.mkdir(parents=True)
    dashboards.mkdir(parents=True)
    for name, text in FIXTURE_RULES.items():
        (rules / name).write_text(text)
    (rules / "README.md").write_text("not a rule file\n")
    (dashboards / "comparison.json").write_text(
        json.dumps(FIXTURE_DASHBOARD, ensure_ascii=False, indent=2) + "\n"
    )
    chart = root / "deploy" / "helm" / "polyframe"
    for link, target in LINKS.items():
        copied = chart / "files" / link.name
        if not copied.is_symlink():
            copied.symlink_to(target)
    return root


def test_linked_rule_files_render_unchanged(charts_copy: Path, render_dir: Any) -> None:
    from_chart = render_dir(_chart(charts_copy), ALL_ON)
    rules = _by_source(from_chart, "PrometheusRule")
    assert set(rules) == {f"observability/prometheus/rules/{name}" for name in FIXTURE_RULES}
    for name, text in FIXTURE_RULES.items():
        assert (
            rules[f"observability/prometheus/rules/{name}"]["spec"]["groups"]
            == yaml.safe_load(text)["groups"]
        )
    names = {m.name for m in from_chart.of_kind("PrometheusRule")}
    assert names == {"polyframe-polyframe-alerts", "polyframe-recording-rules"}


def test_linked_dashboards_render_byte_for_byte(charts_copy: Path, render_dir: Any) -> None:
    dashboards = _by_source(render_dir(_chart(charts_copy), ALL_ON), "ConfigMap")
    path = charts_copy / "observability" / "grafana" / "dashboards" / "comparison.json"
    assert dashboards == {
        "observability/grafana/dashboards/comparison.json": dashboards[
            "observability/grafana/dashboards/comparison.json"
        ]
    }
    configmap = dashboards["observability/grafana/dashboards/comparison.json"]
    assert configmap["data"] == {"comparison.json": path.read_text()}
    assert configmap["metadata"]["annotations"]["grafana_folder"] == "Polyframe"


def test_a_new_file_is_picked_up_without_editing_the_chart(
    charts_copy: Path, render_dir: Any
) -> None:
    extra = charts_copy / "observability" / "prometheus" / "rules" / "extra.yaml"
    extra.write_text(
        "groups:\n  - name: extra\n    rules:\n      - record: a:b:c\n        expr: vector(1)\n"
    )
    try:
        rules = _by_source(render_dir(_chart(charts_copy), ALL_ON), "PrometheusRule")
        assert "observability/prometheus/rules/extra.yaml" in rules
    finally:
        extra.unlink()


def test_a_file_that_is_not_a_rule_file_fails_the_render(
    charts_copy: Path, render_dir: Any
) -> None:
    import helm_python

    broken = charts_copy / "observability" / "prometheus" / "rules" / "broken.yaml"
    broken.write_text("rules: []\n")
    try:
        with pytest.raises(
            helm_python.HelmRenderError, match=r"broken\.yaml has no `groups:` list"
        ):
            render_dir(_chart(charts_copy), ALL_ON)
    finally:
        broken.unlink()


ALL_ON = {"prometheusRule": {"enabled": True}, "grafanaDashboards": {"enabled": True}}


def _chart(root: Path) -> Path:
    return root / "deploy" / "helm" / "polyframe"
