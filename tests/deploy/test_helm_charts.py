"""The charts as Helm sees them: they load, render with every values file, and lint strictly.

Helm v4's engine through helm-python-sdk. Its lint never raises: its report is read here, and
an error or a warning (strict mode turns warnings into errors) fails the test.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = REPO_ROOT / "deploy" / "helm"
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
APP_CHARTS = (*SERVICES, "polyframe")
CI_VALUES = ("default", "all-on", "production")
WARNING = 2  # lint severities: 1 info, 2 warning, 3 error
LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/version",
    "helm.sh/chart",
)


def lint_problems(chart_dir: Path, values: dict[str, Any] | None, kube_version: str) -> list[str]:
    report = helm.lint(
        chart_dir,
        values,
        strict=True,
        with_subcharts=True,
        namespace="polyframe-under-test",
        kube_version=kube_version,
    )
    problems = [str(error) for error in report["errors"]]
    problems += [
        f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= WARNING
    ]
    assert report["total_charts_linted"] >= 1, report
    return problems


def _ci_cases() -> list[tuple[str, str]]:
    cases = []
    for chart in APP_CHARTS:
        for path in sorted((HELM_DIR / chart / "ci").glob("*-values.yaml")):
            cases.append((chart, path.name))
    return cases


@pytest.mark.parametrize("kube_version", ["v1.31.0", "v1.35.0"])
@pytest.mark.parametrize(("chart", "values_file"), _ci_cases())
def test_chart_lints_strictly(chart: str, values_file: str, kube_version: str) -> None:
    values = yaml.safe_load((HELM_DIR / chart / "ci" / values_file).read_text()) or {}
    assert lint_problems(HELM_DIR / chart, values, kube_version) == []


def test_library_chart_lints_strictly() -> None:
    assert lint_problems(HELM_DIR / "polyframe-lib", None, "v1.35.0") == []


def test_render_refuses_a_missing_required_value(render: Any) -> None:
    """Helm's lint only logs a missing `required` value; the render (what install does) fails."""
    with pytest.raises(helm.HelmRenderError, match=r"database\.existingSecret: name the Secret"):
        render("users-fastapi", {})


def test_lint_reports_what_is_wrong(tmp_path: Path) -> None:
    """The lint check can fail: a template that does not parse, a chart without a version."""
    copy = tmp_path / "helm"
    shutil.copytree(HELM_DIR, copy, symlinks=True)
    (copy / "users-fastapi" / "templates" / "service.yaml").write_text('{{ include "nope" . }\n')
    problems = lint_problems(
        copy / "users-fastapi", {"database": {"existingSecret": "db"}}, "v1.35.0"
    )
    assert any("service.yaml" in p for p in problems), problems
    metadata = re.sub(
        r"^version: .*\n", "", (copy / "legacy-flask" / "Chart.yaml").read_text(), flags=re.M
    )
    (copy / "legacy-flask" / "Chart.yaml").write_text(metadata)
    problems = lint_problems(
        copy / "legacy-flask", {"database": {"existingSecret": "db"}}, "v1.35.0"
    )
    assert any("version" in p for p in problems), problems


@pytest.mark.parametrize("chart", APP_CHARTS)
def test_every_chart_has_the_ci_values_files(chart: str) -> None:
    present = {
        p.name.removesuffix("-values.yaml") for p in (HELM_DIR / chart / "ci").glob("*-values.yaml")
    }
    assert set(CI_VALUES) <= present


def test_rendered_counts(render_case: Any) -> None:
    """What each values file switches on is there (the renders are not empty shells)."""

    def kinds(chart: str, case: str) -> dict[str, int]:
        counted: dict[str, int] = {}
        for manifest in render_case(chart, case).manifests:
            counted[manifest.kind] = counted.get(manifest.kind, 0) + 1
        return counted

    default = kinds("polyframe", "default")
    assert default["Deployment"] == 5  # three web servers, two outbox dispatchers
    assert default["StatefulSet"] == 1
    assert default["Job"] == 3
    assert default["Ingress"] == 1
    assert "NetworkPolicy" not in default
    assert "HorizontalPodAutoscaler" not in default
    everything = kinds("polyframe", "all-on")
    for kind in (
        "NetworkPolicy",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "HTTPRoute",
    ):
        assert everything.get(kind), kind
    production = kinds("polyframe", "production")
    # External databases and existing Secrets: no PostgreSQL, nothing generated.
    assert "StatefulSet" not in production
    assert "Secret" not in production


@pytest.mark.parametrize("chart", APP_CHARTS)
def test_subcharts_are_the_sibling_charts(chart: str) -> None:
    """charts/<dependency> are symlinks to deploy/helm/<dependency>, as Chart.yaml declares."""
    metadata = yaml.safe_load((HELM_DIR / chart / "Chart.yaml").read_text())
    for dependency in metadata["dependencies"]:
        link = HELM_DIR / chart / "charts" / dependency["name"]
        assert link.is_symlink(), link
        assert link.resolve() == (HELM_DIR / dependency["name"]).resolve()
        assert dependency["repository"] == f"file://../{dependency['name']}"
        sibling = yaml.safe_load((HELM_DIR / dependency["name"] / "Chart.yaml").read_text())
        assert dependency["version"] == sibling["version"]
    with helm.Chart.load(HELM_DIR / chart) as loaded:
        assert {d["name"] for d in loaded.dependencies} == {
            d["name"] for d in metadata["dependencies"]
        }


def test_library_chart_is_a_library() -> None:
    metadata = yaml.safe_load((HELM_DIR / "polyframe-lib" / "Chart.yaml").read_text())
    assert metadata["type"] == "library"


@pytest.mark.parametrize("chart", APP_CHARTS)
def test_labels_follow_the_helm_conventions(chart: str, render_case: Any) -> None:
    for manifest in render_case(chart, "all-on").manifests:
        labels = manifest.labels
        for key in LABELS:
            assert key in labels, f"{manifest}: no {key}"
        assert labels["app.kubernetes.io/instance"] == "polyframe"
        assert labels["app.kubernetes.io/part-of"] == "polyframe"


def test_the_packaged_umbrella_chart_carries_copies_of_its_links(tmp_path: Path) -> None:
    """`helm package` follows the symlinks (sibling charts, routes.yaml): a standalone archive."""
    import tarfile

    archive = Path(helm.package(HELM_DIR / "polyframe", destination=tmp_path))
    with tarfile.open(archive) as packed:
        members = {m.name: m for m in packed.getmembers()}
        assert not [name for name, m in members.items() if m.issym() or m.islnk()]
        for chart in (*SERVICES, "polyframe-lib"):
            assert f"polyframe/charts/{chart}/Chart.yaml" in members, chart
        routes = packed.extractfile(members["polyframe/files/routes.yaml"])
        assert routes is not None
        assert routes.read().decode() == (REPO_ROOT / "deploy" / "routes.yaml").read_text()
    values = {"ingress": {"host": "example.com"}, "users-fastapi": {"replicaCount": 2}}
    with (
        helm.Chart.load(archive) as from_archive,
        helm.Chart.load(HELM_DIR / "polyframe") as from_dir,
    ):
        packed_render = from_archive.render(values, name="polyframe", namespace="ns")
        dir_render = from_dir.render(values, name="polyframe", namespace="ns")
    # Everything but the freshly generated secrets renders the same from the archive.
    for template, text in dir_render.items():
        if "secret" not in template:
            assert packed_render[template] == text, template
