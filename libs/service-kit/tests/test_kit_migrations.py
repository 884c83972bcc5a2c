"""The alembic head check on an in-memory SQLite database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from service_kit.health import CheckFailedError
from service_kit.migrations import alembic_config, require_heads, script_heads


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = sa.create_engine("sqlite://")
    try:
        yield engine
    finally:
        engine.dispose()


def test_require_heads_fails_on_empty_database(engine: Engine) -> None:
    with engine.connect() as connection, pytest.raises(CheckFailedError) as caught:
        require_heads(connection, frozenset({"abc123"}))
    message = str(caught.value)
    assert "database at revision none" in message
    assert "code expects abc123" in message
    assert "run the migrations" in message


def _stamp(engine: Engine, *revisions: str) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        for revision in revisions:
            connection.execute(sa.text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})


def test_require_heads_fails_when_behind(engine: Engine) -> None:
    _stamp(engine, "old1")
    with engine.connect() as connection, pytest.raises(CheckFailedError, match="revision old1"):
        require_heads(connection, frozenset({"new2"}))


def test_require_heads_passes_at_head(engine: Engine) -> None:
    _stamp(engine, "b2", "a1")
    with engine.connect() as connection:
        assert require_heads(connection, frozenset({"a1", "b2"})) == "a1, b2"


def test_require_heads_empty_expectation_on_empty_database(engine: Engine) -> None:
    with engine.connect() as connection:
        assert require_heads(connection, frozenset()) == ""


def test_alembic_config_escapes_percent() -> None:
    config = alembic_config(Path("/nowhere"), "postgresql://u:p%40ss@h/db")
    assert config.get_main_option("sqlalchemy.url") == "postgresql://u:p%40ss@h/db"
    assert config.get_main_option("script_location") == "/nowhere"
    assert alembic_config(Path("/nowhere")).get_main_option("sqlalchemy.url") is None


def test_script_heads(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_first.py").write_text(
        'revision = "r0001"\ndown_revision = None\nbranch_labels = None\ndepends_on = None\n'
        "def upgrade(): pass\ndef downgrade(): pass\n",
        encoding="utf-8",
    )
    (versions / "0002_second.py").write_text(
        'revision = "r0002"\ndown_revision = "r0001"\nbranch_labels = None\n'
        "depends_on = None\ndef upgrade(): pass\ndef downgrade(): pass\n",
        encoding="utf-8",
    )
    assert script_heads(tmp_path) == frozenset({"r0002"})


@pytest.mark.parametrize(
    "migrations",
    [
        Path(__file__).resolve().parents[3] / "services" / name
        for name in (
            "users-fastapi/src/users_fastapi/migrations",
            "legacy-flask/src/legacy_flask/migrations",
        )
    ],
)
def test_script_heads_agree_with_alembic(migrations: Path) -> None:
    """Read without alembic, the heads are the ones alembic itself computes."""
    from alembic.script import ScriptDirectory

    expected = ScriptDirectory.from_config(alembic_config(migrations)).get_heads()
    assert script_heads(migrations) == frozenset(expected)
    assert expected  # the services have migrations


def test_script_heads_of_a_merge(tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    for name, down in [("a", None), ("b", "a"), ("c", "a"), ("m", ("b", "c")), ("x", "m")]:
        (versions / f"{name}.py").write_text(
            f"revision: str = {name!r}\ndown_revision: str | None = {down!r}\n", encoding="utf-8"
        )
    (versions / "notes.py").write_text("# not a migration\n", encoding="utf-8")
    assert script_heads(tmp_path) == frozenset({"x"})


def test_the_readiness_check_does_not_import_alembic() -> None:
    import subprocess
    import sys

    code = (
        "import sys, service_kit.migrations; "
        "print(any(m == 'alembic' or m.startswith('alembic.') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
