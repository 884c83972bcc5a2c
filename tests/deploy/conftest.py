"""Fixtures of the Kubernetes delivery checks: render the charts with the real Helm v4 engine.

No cluster and no Docker engine exist here, so everything a cluster would reject is checked
offline: the charts are rendered and linted by Helm v4 (``helm_python``, the Helm Go SDK),
every object is validated by ``kubernetes-validate`` (and the vendored CRD schemas), and the
policy tests read the rendered objects.

Test modules cannot import this file (``--import-mode=importlib``), so shared helpers are
handed out as fixtures.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

REPO_ROOT = Path(__file__).resolve().parents[2]
HELM_DIR = REPO_ROOT / "deploy" / "helm"
SCHEMAS_DIR = Path(__file__).resolve().parent / "schemas"
LIBRARY = "polyframe-lib"
SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
UMBRELLA = "polyframe"
#: Charts that install something (the library chart renders nothing by itself).
APP_CHARTS = (*SERVICES, UMBRELLA)
ALL_CHARTS = (LIBRARY, *APP_CHARTS)
#: The ci/*-values.yaml every installable chart must have.
CI_VALUES = ("default", "all-on", "production")
#: Values files outside ci/ that are rendered too: the kind profile's (skaffold.yaml).
EXTRA_VALUES = {UMBRELLA: {"kind": REPO_ROOT / "deploy" / "kind" / "values.yaml"}}
RELEASE = "polyframe"
NAMESPACE = "polyframe-under-test"
KUBERNETES_VERSIONS = ("1.31", "1.35")
#: Custom resources: validated against their own schemas (tests/deploy/schemas/SOURCES.md).
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring.coreos.com-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring.coreos.com-v1.json",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "httproute-gateway.networking.k8s.io-v1.json",
}
POD_KINDS = ("Deployment", "StatefulSet", "Job", "Pod")
#: The APIs of those custom resources (.Capabilities.APIVersions): the renders stand for a cluster
#: that has the Prometheus Operator's and the Gateway API's CRDs, unless a test says otherwise.
CUSTOM_APIS = tuple(f"{api_version}/{kind}" for api_version, kind in CRD_SCHEMAS)

helm.disable_logging()


# -- values files -------------------------------------------------------------------------------


def values_files(chart: str) -> dict[str, Path]:
    """The values files a chart is rendered with: ``ci/*-values.yaml`` and the extras."""
    found = {
        path.name.removesuffix("-values.yaml"): path
        for path in sorted((HELM_DIR / chart / "ci").glob("*-values.yaml"))
    }
    return {**found, **EXTRA_VALUES.get(chart, {})}


def load_values(path: Path) -> dict[str, Any]:
    loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    return loaded or {}


CI_CASES = [(chart, name) for chart in APP_CHARTS for name in values_files(chart)]


def ci_case_id(case: tuple[str, str]) -> str:
    return f"{case[0]}:{case[1]}"


# -- rendering ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """One rendered object and the template it came from."""

    template: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    @property
    def annotations(self) -> dict[str, str]:
        return dict(self.obj["metadata"].get("annotations") or {})

    @property
    def labels(self) -> dict[str, str]:
        return dict(self.obj["metadata"].get("labels") or {})

    @property
    def is_hook(self) -> bool:
        return "helm.sh/hook" in self.annotations

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} ({self.template})"


@dataclass
class Rendered:
    """A chart rendered with one values file."""

    chart: str
    case: str
    values: dict[str, Any]
    manifests: list[Manifest]
    notes: str = ""
    raw: dict[str, str] = field(default_factory=dict)

    def of_kind(self, *kinds: str) -> list[Manifest]:
        return [m for m in self.manifests if m.kind in kinds]

    def named(self, kind: str, name: str) -> Manifest:
        found = [m for m in self.manifests if m.kind == kind and m.name == name]
        assert len(found) == 1, f"{self.chart}:{self.case}: {len(found)} {kind}/{name}"
        return found[0]

    def pods(self) -> list[tuple[Manifest, dict[str, Any], dict[str, str]]]:
        """Every pod this render creates: (manifest, pod spec, pod labels)."""
        return [(m, pod_spec(m.obj), pod_labels(m.obj)) for m in self.of_kind(*POD_KINDS)]

    def secrets_read(self) -> list[tuple[Manifest, set[str]]]:
        """Every pod this render creates and the Secrets it reads (variables, projected files)."""
        return [(m, secret_names(spec)) for m, spec, _labels in self.pods()]

    def __str__(self) -> str:
        return f"{self.chart}:{self.case}"


def secret_names(spec: dict[str, Any]) -> set[str]:
    """The Secrets a pod spec reads: its containers' secretKeyRefs, its projected volumes'."""
    names = set()
    for container in containers(spec):
        for env in container.get("env") or []:
            ref = (env.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                names.add(ref["name"])
    for volume in spec.get("volumes") or []:
        for source in (volume.get("projected") or {}).get("sources") or []:
            if "secret" in source:
                names.add(source["secret"]["name"])
    return names


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    if obj["kind"] == "Pod":
        return dict(obj["spec"])
    return dict(obj["spec"]["template"]["spec"])


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    if obj["kind"] == "Pod":
        return dict(obj["metadata"].get("labels") or {})
    return dict(obj["spec"]["template"]["metadata"].get("labels") or {})


def containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Init containers and containers of a pod spec."""
    return [*(spec.get("initContainers") or []), *spec["containers"]]


def parse_render(chart: str, case: str, values: dict[str, Any], raw: dict[str, str]) -> Rendered:
    manifests: list[Manifest] = []
    notes = ""
    for template, text in sorted(raw.items()):
        if template.endswith("NOTES.txt"):
            if template == f"{chart}/templates/NOTES.txt":
                notes = text
            continue
        for document in yaml.safe_load_all(text):
            if document is None:
                continue
            assert isinstance(document, dict), f"{template}: not an object: {document!r}"
            manifests.append(Manifest(template, document))
    return Rendered(chart, case, values, manifests, notes, raw)


def helm_render(
    loaded: helm.Chart,
    values: dict[str, Any],
    *,
    namespace: str,
    revision: int,
    api_versions: tuple[str, ...],
) -> dict[str, str]:
    """``Chart.render``, with the cluster's API versions as ``helm template --api-versions``.

    helm-python-sdk 0.2.2's ``Chart.render(values, *, name, namespace, revision, is_install,
    is_upgrade)`` has no parameter for them, but the helm-c-sdk call it wraps, ``helm_render``,
    reads ``api_versions`` (and ``kube_version``) from the same JSON options object (its render
    options: name, namespace, revision, is_install, is_upgrade, kube_version, api_versions,
    strict, enable_dns). This passes them through that call, as ``Chart.render`` does the rest;
    test_crd_guard shows the charts see them (and fail without them).
    """
    options = {
        "name": RELEASE,
        "namespace": namespace,
        "revision": revision,
        "is_install": revision == 1,
        "is_upgrade": revision > 1,
        "api_versions": list(api_versions),
    }
    rendered: dict[str, str] = json.loads(
        helm._native.call_string(
            "helm_render", loaded._raw(), json.dumps(values), json.dumps(options)
        )
    )
    return rendered


def render_chart(
    chart_dir: Path,
    values: dict[str, Any],
    *,
    case: str = "custom",
    namespace: str = NAMESPACE,
    revision: int = 1,
    api_versions: tuple[str, ...] = CUSTOM_APIS,
) -> Rendered:
    """Render a chart directory offline with Helm v4 (``lookup`` finds nothing): an install
    (revision 1), or the upgrade to ``revision``, for a cluster serving ``api_versions`` besides
    Kubernetes' own (by default the custom resources' APIs)."""
    with helm.Chart.load(chart_dir) as loaded:
        raw = helm_render(
            loaded,
            copy.deepcopy(values),
            namespace=namespace,
            revision=revision,
            api_versions=api_versions,
        )
    return parse_render(chart_dir.name, case, values, raw)


@functools.cache
def _render_case(chart: str, case: str) -> Rendered:
    values = load_values(values_files(chart)[case])
    return render_chart(HELM_DIR / chart, values, case=case)


@pytest.fixture(scope="session")
def render_case() -> Callable[[str, str], Rendered]:
    """``render_case(chart, case)``: the chart rendered with one of its values files (cached)."""
    return _render_case


@pytest.fixture(scope="session")
def render() -> Callable[..., Rendered]:
    """``render(chart, values, namespace=...)``: a chart of deploy/helm rendered with ``values``."""

    def _render(chart: str, values: dict[str, Any], **kwargs: Any) -> Rendered:
        return render_chart(HELM_DIR / chart, values, **kwargs)

    return _render


@pytest.fixture(scope="session")
def render_dir() -> Callable[..., Rendered]:
    """``render_dir(path, values)``: a chart directory anywhere (a copy) rendered."""
    return render_chart


@pytest.fixture(scope="session", params=CI_CASES, ids=ci_case_id)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    """Every installable chart with every one of its values files."""
    chart, case = request.param
    return _render_case(chart, case)


@pytest.fixture(scope="session")
def all_renders() -> list[Rendered]:
    return [_render_case(chart, case) for chart, case in CI_CASES]


# -- validation ------------------------------------------------------------------------------


@functools.cache
def _schema_contents(filename: str, desired_version: str) -> Any:
    return _original_schema_contents(filename, desired_version)


_original_schema_contents = kubernetes_validate.utils.schema_contents


@pytest.fixture(scope="session")
def kubernetes_validator() -> Iterator[Callable[[dict[str, Any], str], str]]:
    """``validate(obj, version)``: ``kubernetes_validate.validate(obj, version, strict=True)``.

    The library reads its (large) schema files on every call; they are cached for the session.
    """
    kubernetes_validate.utils.schema_contents = _schema_contents
    try:

        def validate(obj: dict[str, Any], version: str) -> str:
            return str(kubernetes_validate.validate(obj, version, strict=True))

        yield validate
    finally:
        kubernetes_validate.utils.schema_contents = _original_schema_contents


def _strict_crd_schema(node: Any) -> Any:
    """OpenAPI's ``nullable`` as a JSON Schema type, and no unknown fields (as ``--strict``)."""
    if isinstance(node, list):
        return [_strict_crd_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    converted = {key: _strict_crd_schema(value) for key, value in node.items()}
    if converted.pop("nullable", False) and "type" in converted:
        kinds = converted["type"] if isinstance(converted["type"], list) else [converted["type"]]
        converted["type"] = [*kinds, "null"]
    if "properties" in converted and "additionalProperties" not in converted:
        converted["additionalProperties"] = False
    return converted


OBJECT_META_REF = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta#"


@functools.cache
def _crd_validator(api_version: str, kind: str, version: str) -> Draft202012Validator:
    """The vendored schema, its metadata checked as kubernetes-validate's strict ObjectMeta."""
    document = json.loads((SCHEMAS_DIR / CRD_SCHEMAS[(api_version, kind)]).read_text())
    text = json.dumps(_strict_crd_schema(document["schema"])).replace(
        f'"{OBJECT_META_REF}"',
        '"https://kubernetes.io/api/_definitions.json#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"',
    )
    definitions = kubernetes_validate.utils.schema_contents(
        f"kubernetes-json-schema/v{version}.0-local-strict/_definitions.json", version
    )
    registry: Registry = Resource.from_contents(definitions) @ Registry()
    return Draft202012Validator(json.loads(text), registry=registry)


@pytest.fixture(scope="session")
def crd_validator() -> Callable[[dict[str, Any], str], None]:
    """``validate(obj, version)`` for ServiceMonitor, PrometheusRule and HTTPRoute objects."""

    def validate(obj: dict[str, Any], version: str) -> None:
        validator = _crd_validator(obj["apiVersion"], obj["kind"], version)
        errors = sorted(validator.iter_errors(obj), key=lambda error: list(error.path))
        if errors:
            details = "; ".join(
                f"{'.'.join(str(p) for p in error.path) or '<root>'}: {error.message}"
                for error in errors
            )
            raise AssertionError(f"{obj['kind']}/{obj['metadata']['name']}: {details}")

    return validate


# -- the repository's own tables ---------------------------------------------------------------


@pytest.fixture(scope="session")
def routes_table() -> dict[str, list[str]]:
    """deploy/routes.yaml as `make up` reads it (polyframe_dev.routes): service -> prefixes."""
    from polyframe_dev.routes import load_routes

    table: dict[str, list[str]] = {}
    for route in load_routes(REPO_ROOT / "deploy" / "routes.yaml"):
        table.setdefault(route.service, []).append(route.prefix)
    return table


@pytest.fixture(scope="session")
def observability_files() -> dict[str, list[Path]]:
    """The files of observability/ the umbrella chart must carry (whatever is there now)."""
    root = REPO_ROOT / "observability"
    return {
        "rules": sorted((root / "prometheus" / "rules").glob("*.yaml")),
        "dashboards": sorted((root / "grafana" / "dashboards").glob("*.json")),
    }
