"""``make images`` (polyframe_release.images): the artifacts and base images of skaffold.yaml's
Dockerfiles, skaffold's gitCommit tag, the podman build's arguments and the build file."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from polyframe_release import images
from polyframe_release.engine import Engine
from polyframe_release.images import Artifact, BuildError, Built
from polyframe_release.paths import REPO_ROOT

PYTHON = "python:3.11.14-slim-trixie"
UV = "ghcr.io/astral-sh/uv:0.13.8"
SERVICE_DOCKERFILE = "deploy/images/service.Dockerfile"
DOCKERFILES = [
    SERVICE_DOCKERFILE,
    SERVICE_DOCKERFILE,
    SERVICE_DOCKERFILE,
    "deploy/kind/e2e.Dockerfile",
]


def test_artifacts_are_skaffolds() -> None:
    config = images.skaffold_config()

    found = images.artifacts()

    assert [a.image for a in found] == [entry["image"] for entry in config["build"]["artifacts"]]
    assert [a.image for a in found] == [
        "polyframe/users-fastapi",
        "polyframe/legacy-flask",
        "polyframe/admin-django",
        "polyframe/e2e",
    ]
    assert [a.dockerfile for a in found] == [REPO_ROOT / path for path in DOCKERFILES]
    assert all(a.context == REPO_ROOT for a in found)
    assert all(a.dockerfile.is_file() for a in found)
    assert [a.short for a in found] == ["users-fastapi", "legacy-flask", "admin-django", "e2e"]
    # The service's image is the one Dockerfile with the service as its build argument.
    assert [dict(a.build_args).get("SERVICE") for a in found] == [
        *[a.short for a in found[:3]],
        None,
    ]


def test_build_arguments_are_passed_to_the_build() -> None:
    users = images.artifacts()[0]
    args = images.build_args(Engine("docker"), users, "x:1")
    assert args[args.index("--build-arg") + 1] == "SERVICE=users-fastapi"
    described = [a for a in args if a.startswith("DESCRIPTION=")]
    assert described == [f"DESCRIPTION={dict(users.build_args)['DESCRIPTION']}"]
    assert args[-1] == str(REPO_ROOT)  # the context stays last


@pytest.mark.parametrize("path", sorted(set(DOCKERFILES)))
def test_base_images_of_the_real_dockerfiles(path: str) -> None:
    # their stages (uv, build, runtime, e2e) are not images to pull
    assert sorted(images.base_images(REPO_ROOT / path)) == sorted([UV, PYTHON])


def test_base_images_skip_stages_and_scratch(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "# syntax=docker/dockerfile:1\n"
        "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\n"
        "RUN go build\n"
        "from build as test\n"
        "FROM alpine:3.20 AS runtime\n"
        "COPY --from=build /out /out\n"
        "FROM scratch\n"
        "FROM runtime\n"
        "FROM golang:1.22\n"
    )

    assert images.base_images(dockerfile) == ["golang:1.22", "alpine:3.20"]


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name, raising=False)
    folder = tmp_path / "repo"
    folder.mkdir()
    _git(folder, "init", "--quiet")
    (folder / "README").write_text("one\n")
    _git(folder, "add", "README")
    _git(folder, "commit", "--quiet", "-m", "first")
    return folder


@needs_git
def test_git_tag_is_the_short_commit_of_a_clean_tree(repo: Path) -> None:
    tag = images.git_tag(repo)

    assert tag == _git(repo, "rev-parse", "--short", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{7,}", tag)


@needs_git
def test_git_tag_is_dirty_with_a_change_or_an_untracked_file(repo: Path) -> None:
    commit = _git(repo, "rev-parse", "--short", "HEAD")
    (repo / "README").write_text("two\n")

    assert images.git_tag(repo) == f"{commit}-dirty"

    _git(repo, "checkout", "--quiet", "README")
    (repo / "new.txt").write_text("x")
    assert images.git_tag(repo) == f"{commit}-dirty"


def test_git_tag_outside_a_repository_is_dev(tmp_path: Path) -> None:
    assert images.git_tag(tmp_path) == "dev"


def _artifact() -> Artifact:
    return images.artifacts()[0]


def _build_arguments(artifact: Artifact) -> list[str]:
    return [part for k, v in artifact.build_args for part in ("--build-arg", f"{k}={v}")]


def test_podman_builds_mount_the_ca_bundle_and_uv_config_and_pass_nothing_of_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "corporate-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    artifact = _artifact()

    args = images.build_args(Engine("podman"), artifact, "polyframe/users-fastapi:abc")

    assert args == [
        "build",
        "--tag",
        "polyframe/users-fastapi:abc",
        "--file",
        str(artifact.dockerfile),
        *_build_arguments(artifact),
        "--network",
        "host",
        "--volume",
        f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro",
        "--volume",
        f"{images.BUILD_UV_CONFIG}:/etc/uv/uv.toml:ro",
        str(REPO_ROOT),
    ]
    # build-time mounts only: no --env, --build-arg or --secret carries the CA into a layer (the
    # only build arguments are skaffold.yaml's)
    assert not {"--env", "--secret", "--label"} & set(args)
    assert args.count("--build-arg") == len(artifact.build_args)
    assert [a for a in args if str(bundle) in a] == [
        f"{bundle}:/etc/ssl/certs/ca-certificates.crt:ro"
    ]
    assert images.BUILD_UV_CONFIG.is_file()
    assert "system-certs = true" in images.BUILD_UV_CONFIG.read_text()


@pytest.mark.parametrize("bundle", [None, "/nonexistent/ca.pem"])
def test_podman_builds_without_a_ca_bundle_mount_nothing(
    monkeypatch: pytest.MonkeyPatch, bundle: str | None
) -> None:
    if bundle is None:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    else:
        monkeypatch.setenv("SSL_CERT_FILE", bundle)

    artifact = _artifact()

    args = images.build_args(Engine("podman"), artifact, "x:1")

    assert args == [
        "build",
        "--tag",
        "x:1",
        "--file",
        str(artifact.dockerfile),
        *_build_arguments(artifact),
        "--network",
        "host",
        str(REPO_ROOT),
    ]


def test_docker_builds_use_dockers_own_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    artifact = _artifact()

    args = images.build_args(Engine("docker"), artifact, "x:1")

    assert args == [
        "build", "--tag", "x:1", "--file", str(artifact.dockerfile),
        *_build_arguments(artifact), str(REPO_ROOT),
    ]  # fmt: skip


def test_build_file_round_trip_in_skaffolds_format(tmp_path: Path) -> None:
    found = images.artifacts()
    built = [Built(a, f"{a.image}:0a1b2c3", 12.0, 100) for a in found]
    path = tmp_path / "state" / "images.json"

    images.write_build_file(path, built, "podman")

    assert json.loads(path.read_text()) == {
        "builds": [{"imageName": a.image, "tag": f"{a.image}:0a1b2c3"} for a in found],
        "engine": "podman",
    }
    assert images.build_engine(path) == "podman"
    assert images.read_build_file(path) == {a.image: f"{a.image}:0a1b2c3" for a in found}


def test_a_missing_build_file_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"does not exist: build the images first \(make images\)"):
        images.read_build_file(tmp_path / "images.json")
