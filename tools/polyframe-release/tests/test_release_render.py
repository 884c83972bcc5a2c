"""The release as skaffold's kind profile deploys it (polyframe_release.render)."""

from __future__ import annotations

import copy
import stat
from pathlib import Path
from typing import Any

import pytest

from polyframe_release import render
from polyframe_release.paths import REPO_ROOT
from polyframe_release.render import ReleaseSpec, Render, RenderError

SERVICES = ("users-fastapi", "legacy-flask", "admin-django")


# -- skaffold.yaml ------------------------------------------------------------------------------


def test_release_spec_of_the_kind_profile_reads_skaffold_yaml() -> None:
    spec = render.release_spec("kind")

    assert spec.name == "polyframe"
    assert spec.namespace == "polyframe"
    assert spec.chart == REPO_ROOT / "deploy" / "helm" / "polyframe"
    # The values file comes from the kind profile's patch, not from the base config.
    assert spec.values_files == (REPO_ROOT / "deploy" / "kind" / "values.yaml",)
    assert spec.set_value_templates == {
        "users-fastapi.image.repository": "{{.IMAGE_REPO_polyframe_users_fastapi}}",
        "users-fastapi.image.tag": "{{.IMAGE_TAG_polyframe_users_fastapi}}",
        "legacy-flask.image.repository": "{{.IMAGE_REPO_polyframe_legacy_flask}}",
        "legacy-flask.image.tag": "{{.IMAGE_TAG_polyframe_legacy_flask}}",
        "admin-django.image.repository": "{{.IMAGE_REPO_polyframe_admin_django}}",
        "admin-django.image.tag": "{{.IMAGE_TAG_polyframe_admin_django}}",
    }


def test_release_spec_names_the_profiles_when_one_is_missing() -> None:
    with pytest.raises(RenderError, match=r"no profile 'staging' \(it has: kind\)"):
        render.release_spec("staging")


def _spec(templates: dict[str, str]) -> ReleaseSpec:
    return ReleaseSpec("polyframe", "polyframe", REPO_ROOT, (), templates)


def test_image_values_fill_the_set_value_templates_from_the_build_map(
    built: dict[str, str],
) -> None:
    values = render.image_values(render.release_spec("kind"), built)

    assert values["users-fastapi"]["image"] == {
        # the registry's port stays in the repository; the tag is after the last colon
        "repository": "localhost:5000/polyframe/users-fastapi",
        "tag": "0a1b2c3-dirty",
    }
    assert values["legacy-flask"]["image"] == {
        "repository": "polyframe/legacy-flask",
        "tag": "0a1b2c3-dirty",
    }
    assert values["admin-django"]["image"] == {
        "repository": "polyframe/admin-django",
        "tag": "0a1b2c3-dirty",
    }
    assert set(values) == set(SERVICES)


def test_image_values_keep_text_around_a_template_variable() -> None:
    spec = _spec({"web.image": "registry.example/{{ .IMAGE_REPO_polyframe_web }}:pinned"})

    values = render.image_values(spec, {"polyframe/web": "polyframe/web:abc"})

    assert values == {"web": {"image": "registry.example/polyframe/web:pinned"}}


def test_image_values_name_an_image_that_was_not_built(built: dict[str, str]) -> None:
    partial = {k: v for k, v in built.items() if k != "polyframe/legacy-flask"}

    with pytest.raises(RenderError) as raised:
        render.image_values(render.release_spec("kind"), partial)

    message = str(raised.value)
    assert "IMAGE_REPO_polyframe_legacy_flask" in message
    assert "polyframe_legacy_flask was built" in message
    assert "make images" in message


# -- the JSON patches of a profile ------------------------------------------------------------


def _config(*patches: dict[str, Any]) -> dict[str, Any]:
    return {
        "build": {"artifacts": [{"image": "a"}, {"image": "b"}], "local": {"push": True}},
        "deploy": {"helm": {"releases": [{"name": "r"}]}},
        "profiles": [{"name": "other", "patches": []}, {"name": "p", "patches": list(patches)}],
    }


def test_patched_adds_to_maps_and_creates_missing_parents() -> None:
    config = _config(
        {"op": "add", "path": "/deploy/kubeContext", "value": "kind-x"},
        {"op": "add", "path": "/deploy/helm/releases/0/valuesFiles", "value": ["v.yaml"]},
        {"op": "add", "path": "/test/structure", "value": 1},
    )

    patched = render._patched(config, "p")

    assert patched["deploy"]["kubeContext"] == "kind-x"
    assert patched["deploy"]["helm"]["releases"][0] == {"name": "r", "valuesFiles": ["v.yaml"]}
    assert patched["test"] == {"structure": 1}
    assert "kubeContext" not in config["deploy"]  # the original is left alone


def test_patched_adds_to_lists_at_an_index_and_at_the_end() -> None:
    config = _config(
        {"op": "add", "path": "/build/artifacts/-", "value": {"image": "z"}},
        {"op": "add", "path": "/build/artifacts/0", "value": {"image": "first"}},
    )

    patched = render._patched(config, "p")

    assert [a["image"] for a in patched["build"]["artifacts"]] == ["first", "a", "b", "z"]


def test_patched_replaces_and_removes_map_keys_and_list_items() -> None:
    config = _config(
        {"op": "replace", "path": "/build/local/push", "value": False},
        {"op": "remove", "path": "/build/artifacts/0"},
        {"op": "remove", "path": "/deploy/helm"},
    )

    patched = render._patched(config, "p")

    assert patched["build"]["local"] == {"push": False}
    assert patched["build"]["artifacts"] == [{"image": "b"}]
    assert patched["deploy"] == {}


def test_patched_replace_of_a_list_item_replaces_it() -> None:
    config = _config({"op": "replace", "path": "/build/artifacts/1", "value": {"image": "B"}})

    patched = render._patched(config, "p")

    assert patched["build"]["artifacts"] == [{"image": "a"}, {"image": "B"}]


def test_patched_unescapes_json_pointer_tokens() -> None:
    config = _config(
        {"op": "add", "path": "/deploy/helm/releases/0/setValues/a~1b~0c", "value": "x"}
    )

    patched = render._patched(config, "p")

    assert patched["deploy"]["helm"]["releases"][0]["setValues"] == {"a/b~c": "x"}


def test_patched_refuses_an_operation_it_does_not_implement() -> None:
    config = _config({"op": "move", "from": "/build/local", "path": "/build/remote"})

    with pytest.raises(RenderError, match="patch op 'move' not supported"):
        render._patched(config, "p")


# -- rendering the umbrella chart ---------------------------------------------------------------


def _pod_specs(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"] if obj["kind"] == "Pod" else obj["spec"]["template"]["spec"]


def test_render_puts_the_built_images_into_every_workload_of_the_services(
    kind_render: Render, built: dict[str, str]
) -> None:
    seen: dict[str, set[str]] = {service: set() for service in SERVICES}
    for obj in kind_render.of_kind("Deployment", "Job", "Pod"):
        service = obj["metadata"]["labels"]["app.kubernetes.io/name"]
        if service not in seen:
            continue
        seen[service].add(obj["kind"])
        spec = _pod_specs(obj)
        for container in [*(spec.get("initContainers") or []), *spec["containers"]]:
            assert container["image"] == built[f"polyframe/{service}"], (
                f"{obj['kind']}/{obj['metadata']['name']} container {container['name']}"
            )
    # each service has its web Deployment, its migrate Job and its helm test Pod
    assert seen == {service: {"Deployment", "Job", "Pod"} for service in SERVICES}


def test_render_is_an_install_in_the_release_namespace(kind_render: Render) -> None:
    assert kind_render.release == "polyframe"
    assert kind_render.namespace == "polyframe"
    assert all(o["metadata"]["namespace"] == "polyframe" for o in kind_render.objects)
    # the kind values: two web replicas and a PodDisruptionBudget per service
    for service in SERVICES:
        deployment = kind_render.get("Deployment", f"polyframe-{service}")
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 2
        assert kind_render.get("PodDisruptionBudget", f"polyframe-{service}") is not None
    assert kind_render.values["users-fastapi"]["image"]["tag"] == "0a1b2c3-dirty"


def test_render_get_and_of_kind(kind_render: Render) -> None:
    ingress = kind_render.get("Ingress", "polyframe")

    assert ingress is not None
    assert ingress["kind"] == "Ingress"
    assert kind_render.get("Ingress", "nothing") is None
    assert {o["kind"] for o in kind_render.of_kind("Secret", "ConfigMap")} == {
        "Secret",
        "ConfigMap",
    }


def test_render_saves_privately_and_loads_back(kind_render: Render, tmp_path: Path) -> None:
    saved = copy.deepcopy(kind_render)

    path = saved.save(tmp_path / "release")
    loaded = Render.load(tmp_path / "release")

    assert path == tmp_path / "release" / render.RENDER_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it holds the generated credentials
    assert loaded == saved


def test_render_load_says_what_to_run_when_nothing_was_saved(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"does not exist: start the release \(make release-up\)"):
        Render.load(tmp_path)
