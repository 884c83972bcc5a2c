"""The files `make generate` writes from services/*/service.yaml are checked in and fresh.

Each chart's environment and secret files (templates/_manifest.tpl), its values.schema.json
(deploy/helm/schema: shared fragment plus the service's part) and each service's part of the one
Dockerfile (services/<name>/image/: entry point, build step) are what the generator gives today.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from polyframe_dev import generate, manifest

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_every_generated_file_is_fresh() -> None:
    stale = generate.stale(REPO_ROOT)
    assert not stale, f"stale, run `make generate`: {[str(p) for p in stale]}"


def test_each_service_has_its_generated_files() -> None:
    files = set(generate.outputs(REPO_ROOT))
    for name in manifest.NAMES:
        assert Path("deploy/helm", name, "templates", "_manifest.tpl") in files
        assert Path("deploy/helm", name, "values.schema.json") in files
        assert Path("services", name, "image", "entrypoint.sh") in files
        assert Path("services", name, "image", "build.sh") in files


def _copy_sources(tmp_path: Path) -> Path:
    """The generator's inputs and outputs, in a scratch checkout."""
    for name in manifest.NAMES:
        for relative in (
            Path("services", name, "service.yaml"),
            Path("services", name, "image", "entrypoint.sh"),
            Path("services", name, "image", "build.sh"),
            Path("deploy/helm", name, "values.schema.json"),
            Path("deploy/helm", name, "templates", "_manifest.tpl"),
        ):
            (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO_ROOT / relative, tmp_path / relative)
    shutil.copytree(REPO_ROOT / "deploy/helm/schema", tmp_path / "deploy/helm/schema")
    return tmp_path


@pytest.mark.parametrize(
    ("source", "old", "new", "changed"),
    [
        ("services/users-fastapi/service.yaml", "- {name: USERS_LOG_LEVEL,",
         "- {name: USERS_ARGON2_CONCURRENCY, chart: '\"2\"'}\n  - {name: USERS_LOG_LEVEL,",
         "deploy/helm/users-fastapi/templates/_manifest.tpl"),
        ("deploy/helm/schema/service.json", '"Install this service', '"Install the service',
         "deploy/helm/admin-django/values.schema.json"),
        ("services/admin-django/service.yaml", "collectstatic, --no-input",
         "collectstatic, -i, x, --no-input",
         "services/admin-django/image/build.sh"),
    ],
)  # fmt: skip
def test_a_changed_source_makes_its_outputs_stale(
    tmp_path: Path, source: str, old: str, new: str, changed: str
) -> None:
    root = _copy_sources(tmp_path)
    assert generate.stale(root) == []
    path = root / source
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    assert Path(changed) in generate.stale(root)
    assert generate.main_in(root, check=False) == 0
    assert generate.stale(root) == []


def test_the_values_schema_is_the_shared_fragment_and_the_services_part() -> None:
    shared = json.loads((REPO_ROOT / "deploy/helm/schema/service.json").read_text())
    for name in manifest.NAMES:
        schema = json.loads((REPO_ROOT / "deploy/helm" / name / "values.schema.json").read_text())
        assert set(shared["properties"]) <= set(schema["properties"]), name
        assert schema["title"] == f"Values of the {name} chart"
        assert "${" not in json.dumps(schema), name  # every placeholder substituted
    users = json.loads((REPO_ROOT / "deploy/helm/users-fastapi/values.schema.json").read_text())
    admin = json.loads((REPO_ROOT / "deploy/helm/admin-django/values.schema.json").read_text())
    assert "outbox" in users["properties"]  # the outbox fragment: a service with workers
    assert "outbox" not in admin["properties"]
    assert "threads" in admin["properties"]["server"]["properties"]  # gunicorn's fragment
    assert "threads" not in users["properties"]["server"]["properties"]


@pytest.mark.parametrize(
    ("values", "component", "container"),
    [
        ({"migrations": {"command": ["python", "-m", "mine", "migrate"]}}, "migrate", "migrate"),
        ({"outbox": {"command": ["python", "-m", "mine", "dispatch"]}}, "outbox", "outbox"),
    ],
)
def test_a_command_in_the_values_wins_over_the_services_own(
    render: Any, values: dict[str, Any], component: str, container: str
) -> None:
    """The values name the commands empty (the service's own, from service.yaml); set, they win."""
    default = render("users-fastapi", {"database": {"existingSecret": "db"}})
    changed = render("users-fastapi", {"database": {"existingSecret": "db"}, **values})
    expected = next(iter(values.values()))["command"]

    def command(rendered: Any) -> list[str]:
        for _obj, spec, labels in rendered.pods():
            if labels.get("app.kubernetes.io/component") == component:
                (found,) = [c for c in spec["containers"] if c["name"] == container]
                return list(found["command"])
        raise AssertionError(f"no {component} pod")

    own = manifest.load("users-fastapi")
    assert command(default)[:3] == ["python", "-m", "users_fastapi.cli"]
    assert command(default) in ([*own.setup[0].run], [*own.workers["users-outbox"]])
    assert command(changed) == expected
