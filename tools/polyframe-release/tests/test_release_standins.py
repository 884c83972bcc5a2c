"""Base images where no registry is reachable (polyframe_release.standins, standin_builds,
rootfs): which images have a stand-in, how a stand-in is described, and what a command says of
the stand-ins in use. The stand-in builders' system steps (debootstrap, chroot, the engine's
import) are recorded, not run."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from polyframe_release import standin_builds, standins
from polyframe_release.engine import Result, qualify
from polyframe_release.paths import STAND_INS_DIR
from polyframe_release.rootfs import DIFFERS_LABEL, STAND_IN_LABEL, StandIn, StandInError

PYTHON = "python:3.11.14-slim-trixie"
POSTGRES = "postgres:17.6-bookworm"
UV = "ghcr.io/astral-sh/uv:0.13.8"


@pytest.mark.parametrize(
    ("image", "qualified"),
    [
        ("postgres:17", "docker.io/library/postgres:17"),
        (PYTHON, f"docker.io/library/{PYTHON}"),
        ("polyframe/e2e:abc", "docker.io/polyframe/e2e:abc"),
        (UV, UV),
        ("localhost/polyframe-release/traefik:3.3", "localhost/polyframe-release/traefik:3.3"),
        ("localhost:5000/polyframe/users-fastapi:1", "localhost:5000/polyframe/users-fastapi:1"),
        ("docker.io/library/postgres:17", "docker.io/library/postgres:17"),
    ],
)
def test_qualify_as_docker_reads_a_short_name(image: str, qualified: str) -> None:
    assert qualify(image) == qualified


@pytest.mark.parametrize(
    ("image", "builder"),
    [
        (PYTHON, standin_builds.build_python),
        ("docker.io/library/python:3.12.1-slim-bookworm", standin_builds.build_python),
        (UV, standin_builds.build_uv),
        (POSTGRES, standin_builds.build_postgres),
        ("postgres:15-bookworm", standin_builds.build_postgres),
        ("docker.io/postgres:17.6-trixie", standin_builds.build_postgres),
        ("python:3.11", None),  # not slim: not what a stand-in is
        ("python:3.11.14-alpine", None),
        ("ghcr.io/astral-sh/uv:latest", None),
        ("postgres:17", None),  # no Debian release named
        ("redis:7.0.15-bookworm", standin_builds.build_redis),
        ("docker.io/library/redis:7.0-bookworm", standin_builds.build_redis),
        ("redis:7-bookworm", None),  # a major alone: which 7 it is, Debian cannot tell
        ("redis:7.0.15-alpine3.20", None),
    ],
)
def test_builder_for_the_pinned_images(image: str, builder: Any) -> None:
    assert standins.builder_for(image) is builder


def test_image_patterns_capture_version_and_release() -> None:
    python = standin_builds.PYTHON_IMAGE.match(PYTHON)
    postgres = standin_builds.POSTGRES_IMAGE.match(POSTGRES)
    uv = standin_builds.UV_IMAGE.match(UV)

    assert python is not None
    assert (python["version"], python["release"]) == ("3.11.14", "trixie")
    assert postgres is not None
    assert (postgres["major"], postgres["release"]) == ("17", "bookworm")
    assert uv is not None
    assert uv["version"] == "0.13.8"


# -- announcing the stand-ins in use -----------------------------------------------------------


def test_announce_reports_stand_ins_and_images_built_on_them(fake_engine: Any) -> None:
    fake_engine.images = {
        PYTHON: {"Labels": {STAND_IN_LABEL: PYTHON, DIFFERS_LABEL: "Debian trixie minbase"}},
        # an image built FROM the stand-in inherits its labels
        "polyframe/users-fastapi:abc": {
            "Labels": {STAND_IN_LABEL: PYTHON, DIFFERS_LABEL: "Debian trixie minbase"}
        },
        f"docker.io/library/{POSTGRES}": {"Labels": {STAND_IN_LABEL: POSTGRES}},
        "polyframe/legacy-flask:abc": {"Labels": {"org.opencontainers.image.title": "x"}},
    }

    found = standins.announce(
        fake_engine,
        [
            "polyframe/users-fastapi:abc",
            PYTHON,
            PYTHON,
            f"docker.io/library/{POSTGRES}",
            "polyframe/legacy-flask:abc",
            "absent:1",
        ],
    )

    assert [str(s) for s in found] == [
        f"stand-in docker.io/library/{POSTGRES}: (not described)",
        "polyframe/users-fastapi:abc: built on the stand-in python:3.11.14-slim-trixie",
        f"stand-in {PYTHON}: Debian trixie minbase",
    ]


def test_a_stand_in_under_its_qualified_name_is_the_stand_in_itself() -> None:
    stand_in = StandIn(f"docker.io/library/{PYTHON}", "differs", PYTHON)

    assert str(stand_in) == f"stand-in docker.io/library/{PYTHON}: differs"


# -- ensure: present, pulled, or a stand-in ------------------------------------------------------


def test_ensure_pulls_what_is_missing_and_builds_nothing_when_it_can(fake_engine: Any) -> None:
    fake_engine.images = {PYTHON: {"Labels": {}}}

    found = standins.ensure(fake_engine, [PYTHON, POSTGRES], mode="auto", mirror="m")

    assert found == []
    assert fake_engine.commands == [("pull", f"docker.io/library/{POSTGRES}")]


def test_ensure_with_stand_ins_off_fails_on_what_it_cannot_pull(fake_engine: Any) -> None:
    fake_engine.results["pull"] = Result(125, "", "Trying to pull …\nError: no route to host\n")

    with pytest.raises(
        StandInError, match=r"cannot pull .* \(Error: no route to host\) and stand-ins are off"
    ):
        standins.ensure(fake_engine, [POSTGRES], mode="never", mirror="m")


def test_ensure_without_a_stand_in_says_how_to_load_the_image(fake_engine: Any) -> None:
    fake_engine.results["pull"] = Result(125, "", "Error: unauthorized\n")

    with pytest.raises(StandInError, match="no stand-in exists for it: load it"):
        standins.ensure(fake_engine, ["redis:7-bookworm"], mode="auto", mirror="m")


def test_ensure_refuses_an_unknown_mode(fake_engine: Any) -> None:
    with pytest.raises(StandInError, match="unknown stand-in mode 'sometimes'"):
        standins.ensure(fake_engine, [], mode="sometimes", mirror="m")


def test_docker_pulls_for_itself(make_engine: Any) -> None:
    docker = make_engine("docker")

    assert standins.ensure(docker, [POSTGRES], mode="auto", mirror="m") == []
    assert docker.commands == []


# -- the PostgreSQL stand-in ---------------------------------------------------------------------


class SystemSteps:
    """debootstrap, chroot, postgres --version and the import, recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.debootstrap: list[tuple[str, str]] = []
        self.scripts: list[str] = []
        self.imported: dict[str, Any] = {}
        monkeypatch.setattr(standin_builds, "debootstrap", self._debootstrap)
        monkeypatch.setattr(
            standin_builds, "chroot", lambda _root, script, _what: self.scripts.append(script)
        )
        monkeypatch.setattr(standin_builds, "import_root", self._import)
        monkeypatch.setattr(standin_builds, "subprocess", SimpleNamespace(run=self._run))

    def _debootstrap(self, release: str, root: Path, mirror: str, include: Any = ()) -> None:
        self.debootstrap.append((release, mirror))
        root.mkdir(parents=True)

    def _run(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            argv, 0, "postgres (PostgreSQL) 17.6 (Debian 17.6-1)\n", ""
        )

    def _import(
        self, _engine: Any, root: Path, image: str, changes: list[str], labels: dict[str, str]
    ) -> None:
        self.imported = {"root": root, "image": image, "changes": changes, "labels": labels}


def test_the_postgres_17_stand_in_comes_from_trixie_and_says_so(
    fake_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = SystemSteps(monkeypatch)

    built = standin_builds.build_postgres(
        fake_engine, POSTGRES, tmp_path, "http://mirror.example/debian"
    )

    assert standin_builds.POSTGRES_RELEASES["17"] == "trixie"
    assert steps.debootstrap == [("trixie", "http://mirror.example/debian")]
    assert "postgresql-17" in steps.scripts[0]
    assert built.image == POSTGRES
    assert built.differs.startswith("postgres (PostgreSQL) 17.6 (Debian 17.6-1) from Debian trixie")
    assert "(Debian bookworm packages no PostgreSQL 17)" in built.differs
    assert steps.imported["image"] == POSTGRES
    assert steps.imported["labels"] == {STAND_IN_LABEL: POSTGRES, DIFFERS_LABEL: built.differs}
    assert "ENV PG_MAJOR=17" in steps.imported["changes"]
    assert 'ENTRYPOINT ["docker-entrypoint.sh"]' in steps.imported["changes"]
    entrypoint = tmp_path / "root" / "usr" / "local" / "bin" / "docker-entrypoint.sh"
    assert (
        entrypoint.read_bytes()
        == (STAND_INS_DIR / "postgres" / "docker-entrypoint.sh").read_bytes()
    )
    assert entrypoint.stat().st_mode & 0o777 == 0o755


def test_the_postgres_15_stand_in_comes_from_the_pinned_release(
    fake_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = SystemSteps(monkeypatch)

    built = standin_builds.build_postgres(fake_engine, "postgres:15.8-bookworm", tmp_path, "m")

    assert steps.debootstrap == [("bookworm", "m")]
    assert "packages no PostgreSQL" not in built.differs


def test_the_redis_stand_in_is_debians_redis_server_of_the_pinned_release(
    fake_engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = SystemSteps(monkeypatch)

    built = standin_builds.build_redis(fake_engine, "redis:7.0.15-bookworm", tmp_path, "m")

    assert steps.debootstrap == [("bookworm", "m")]
    assert "redis-server" in steps.scripts[0]
    assert "--uid 999" in steps.scripts[0]
    assert "from Debian bookworm" in built.differs
    assert "give the command" in built.differs
    assert steps.imported["image"] == "redis:7.0.15-bookworm"
    assert "USER 999:999" in steps.imported["changes"]
    assert 'CMD ["redis-server"]' in steps.imported["changes"]
    assert not any(c.startswith("ENTRYPOINT") for c in steps.imported["changes"])
