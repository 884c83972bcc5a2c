"""The release as skaffold's kind profile deploys it, rendered once with the Helm v4 engine.

Release name, namespace, chart, values files and the ``setValueTemplates`` that put the built
images in come from ``skaffold.yaml`` (with the kind profile's patches applied), so the runner
deploys exactly what ``skaffold run -p kind`` would. The render is saved, and the runner and
the e2e suite read the same one: the charts generate credentials (``randAlphaNum``), so two
renders would not agree.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

from polyframe_release.images import skaffold_config
from polyframe_release.paths import REPO_ROOT

TEMPLATE_VARIABLE = re.compile(r"\{\{\s*\.(IMAGE_REPO|IMAGE_TAG)_(\w+)\s*\}\}")
RENDER_FILE = "release.yaml"


class RenderError(RuntimeError):
    """The release could not be rendered; the message says why."""


@dataclass(frozen=True)
class ReleaseSpec:
    """One Helm release of skaffold.yaml's deploy stage, as a profile leaves it."""

    name: str
    namespace: str
    chart: Path
    values_files: tuple[Path, ...]
    #: ``--set`` key -> value template (``{{.IMAGE_REPO_…}}``)
    set_value_templates: dict[str, str] = field(default_factory=dict)


def _patched(config: dict[str, Any], profile: str) -> dict[str, Any]:
    """``config`` with the JSON-patch operations of ``profile`` applied (add/replace/remove)."""
    patched = copy.deepcopy(config)
    chosen = [p for p in config.get("profiles", []) if p.get("name") == profile]
    if not chosen:
        names = ", ".join(p.get("name", "?") for p in config.get("profiles", []))
        raise RenderError(f"skaffold.yaml has no profile {profile!r} (it has: {names})")
    for patch in chosen[0].get("patches", []):
        # A JSON pointer (RFC 6901): "~1" stands for "/", "~0" for "~".
        *parents, last = [
            part.replace("~1", "/").replace("~0", "~") for part in patch["path"].split("/")[1:]
        ]
        node: Any = patched
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        op = patch["op"]
        if op == "add" and isinstance(node, list):
            node.insert(len(node) if last == "-" else int(last), patch["value"])
        elif op == "replace" and isinstance(node, list):
            node[int(last)] = patch["value"]
        elif op in {"add", "replace"}:
            node[last] = patch["value"]
        elif op == "remove":
            del node[int(last) if isinstance(node, list) else last]
        else:
            raise RenderError(f"skaffold.yaml profile {profile}: patch op {op!r} not supported")
    return patched


def release_spec(profile: str = "kind") -> ReleaseSpec:
    config = _patched(skaffold_config(), profile)
    releases = config["deploy"]["helm"]["releases"]
    if len(releases) != 1:
        raise RenderError(f"skaffold.yaml deploys {len(releases)} Helm releases; expected one")
    release = releases[0]
    return ReleaseSpec(
        name=release["name"],
        namespace=release.get("namespace", "default"),
        chart=REPO_ROOT / release["chartPath"],
        values_files=tuple(REPO_ROOT / f for f in release.get("valuesFiles", [])),
        set_value_templates=dict(release.get("setValueTemplates") or {}),
    )


def _template_key(image: str) -> str:
    """``polyframe/users-fastapi`` -> ``polyframe_users_fastapi`` (skaffold's variable suffix)."""
    return re.sub(r"[^A-Za-z0-9]", "_", image)


def image_values(spec: ReleaseSpec, built: dict[str, str]) -> dict[str, Any]:
    """The ``setValueTemplates`` filled in with the built images, as nested values."""
    variables: dict[str, str] = {}
    for image, reference in built.items():
        repository, _, tag = reference.rpartition(":")
        variables[f"IMAGE_REPO_{_template_key(image)}"] = repository
        variables[f"IMAGE_TAG_{_template_key(image)}"] = tag
    values: dict[str, Any] = {}
    for key, template in spec.set_value_templates.items():

        def substitute(match: re.Match[str]) -> str:
            name = f"{match[1]}_{match[2]}"
            if name not in variables:
                raise RenderError(
                    f"skaffold.yaml's setValueTemplates use {name} but no image "
                    f"{match[2]} was built: run make images"
                )
            return variables[name]

        _merge(
            values, helm.parse_set_literal(f"{key}={TEMPLATE_VARIABLE.sub(substitute, template)}")
        )
    return values


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


@dataclass
class Render:
    """The rendered objects of a release (NOTES aside), and what they came from."""

    release: str
    namespace: str
    objects: list[dict[str, Any]]
    values: dict[str, Any]

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o.get("kind") in kinds]

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return next(
            (o for o in self.objects if o.get("kind") == kind and o["metadata"]["name"] == name),
            None,
        )

    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / RENDER_FILE
        header = {"release": self.release, "namespace": self.namespace, "values": self.values}
        text = yaml.safe_dump_all([header, *self.objects], sort_keys=False)
        path.unlink(missing_ok=True)
        # It holds the generated credentials: created 0600, never readable by others.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    @classmethod
    def load(cls, folder: Path) -> Render:
        path = folder / RENDER_FILE
        if not path.is_file():
            raise RenderError(f"{path} does not exist: start the release (make release-up)")
        header, *objects = yaml.safe_load_all(path.read_text(encoding="utf-8"))
        return cls(
            header["release"], header["namespace"], [o for o in objects if o], header["values"]
        )


def render(spec: ReleaseSpec, built: dict[str, str]) -> Render:
    """The release rendered as an install (``lookup`` finds nothing: fresh credentials)."""
    values: dict[str, Any] = {}
    for path in spec.values_files:
        _merge(values, yaml.safe_load(path.read_text(encoding="utf-8")) or {})
    _merge(values, image_values(spec, built))
    helm.disable_logging()
    try:
        with helm.Chart.load(spec.chart) as chart:
            raw = chart.render(
                copy.deepcopy(values), name=spec.name, namespace=spec.namespace, is_install=True
            )
    except helm.HelmError as exc:
        raise RenderError(f"helm could not render {spec.chart}: {exc}") from exc
    objects: list[dict[str, Any]] = []
    for template, text in sorted(raw.items()):
        if template.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("metadata", {})["namespace"] = (
                    document["metadata"].get("namespace") or spec.namespace
                )
                objects.append(document)
    return Render(spec.name, spec.namespace, objects, values)
