"""The producer commands (migrate, wait-for-migrations, dispatch-outbox) of a demo producer.

Its Alembic scripts are the producers' in miniature: revisions that call the kit's outbox
migrations, run through the commands on a real SQLite file.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, ClassVar, cast

import pytest
from pydantic_settings import SettingsConfigDict
from sqlalchemy import Table, create_engine, inspect
from sqlalchemy.orm import DeclarativeBase

from service_kit.outbox import OutboxMixin, command
from service_kit.settings import ProducerSettings

ENV_PY = """
from alembic import context
from sqlalchemy import create_engine, pool

url = context.config.get_main_option("sqlalchemy.url")
with create_engine(url, poolclass=pool.NullPool).connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""
REVISIONS = {
    "0001_outbox.py": (
        "from service_kit.outbox.schema import create_outbox as upgrade\n"
        "from service_kit.outbox.schema import drop_outbox as downgrade\n"
        'revision = "0001_outbox"\ndown_revision = None\n'
    ),
    "0002_outbox_span.py": (
        "from service_kit.outbox.schema import add_span_id as upgrade\n"
        "from service_kit.outbox.schema import drop_span_id as downgrade\n"
        'revision = "0002_outbox_span"\ndown_revision = "0001_outbox"\n'
    ),
}


class DemoSettings(ProducerSettings):
    model_config = SettingsConfigDict(env_prefix="DEMO_", extra="ignore")

    service_name: ClassVar[str] = "demo-producer"


class Base(DeclarativeBase):
    pass


class OutboxEvent(OutboxMixin, Base):
    __tablename__ = "outbox"


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    folder = tmp_path / "migrations"
    (folder / "versions").mkdir(parents=True)
    (folder / "env.py").write_text(ENV_PY, encoding="utf-8")
    for name, text in REVISIONS.items():
        (folder / "versions" / name).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "demo.db"


def cli(argv: list[str], database: Path, migrations: Path) -> int:
    """A producer's ``main`` in miniature."""
    parser = argparse.ArgumentParser(prog="demo-producer")
    command.add_producer_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    settings = DemoSettings(environment="test", database_url=f"sqlite:///{database}")
    table = cast(Table, OutboxEvent.__table__)
    return command.run_producer_command(args, settings, migrations=migrations, outbox=table)


def test_wait_then_migrate_then_ready(
    database: Path, migrations: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["wait-for-migrations", "--timeout", "0"], database, migrations) == 1
    assert "demo-producer: not ready after 0s (database: database at revision none" in (
        capsys.readouterr().err
    )
    assert cli(["migrate"], database, migrations) == 0
    assert cli(["migrate"], database, migrations) == 0  # at head: nothing to do
    assert capsys.readouterr().err.count("demo-producer: migrations at head") == 2
    assert cli(["wait-for-migrations", "--timeout", "5"], database, migrations) == 0
    assert "demo-producer: ready (database: 0002_outbox_span)" in capsys.readouterr().err
    engine = create_engine(f"sqlite:///{database}")
    try:
        columns = {column["name"] for column in inspect(engine).get_columns("outbox")}
    finally:
        engine.dispose()
    assert columns == {column.name for column in OutboxEvent.__table__.columns}


def test_dispatch_outbox_runs_the_dispatcher_with_the_producer_s_table(
    database: Path, migrations: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(command, "dispatch_command", lambda *args: calls.append(args) or 0)
    assert cli(["dispatch-outbox"], database, migrations) == 0
    ((settings, table),) = calls
    assert isinstance(settings, DemoSettings)
    assert table is OutboxEvent.__table__


def test_dispatch_outbox_takes_its_stall_bound_from_the_settings(
    database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(command, "serve_dispatcher", lambda **kwargs: calls.append(kwargs) or 0)
    # The process-wide logging and telemetry set-up is the command's, not this test's.
    monkeypatch.setattr(command, "configure_logging", lambda *args: None)
    monkeypatch.setattr(command, "setup", lambda *args, **kwargs: None)
    table = cast(Table, OutboxEvent.__table__)
    for environ, bound in (({}, None), ({"DEMO_OUTBOX_STALL_SECONDS": "90"}, 90.0)):
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        settings = DemoSettings(environment="test", database_url=f"sqlite:///{database}")
        assert command.dispatch_command(settings, table) == 0
        # None: the dispatcher derives it from its client's timeouts (default_stall_seconds).
        assert calls.pop()["stall_seconds"] == bound


def test_wait_for_migrations_needs_a_timeout(
    database: Path, migrations: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli(["wait-for-migrations"], database, migrations)
    assert caught.value.code == 2
    assert "--timeout" in capsys.readouterr().err


def test_another_command_is_not_a_producer_s(database: Path, migrations: Path) -> None:
    settings = DemoSettings(environment="test", database_url=f"sqlite:///{database}")
    table = cast(Table, OutboxEvent.__table__)
    with pytest.raises(ValueError, match="not a producer command: seed"):
        command.run_producer_command(
            argparse.Namespace(command="seed"), settings, migrations=migrations, outbox=table
        )
