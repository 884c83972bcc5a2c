"""The PostgreSQL databases of one bench run: the connections they hold against the server's
``max_connections``, their names, and the one a floor app reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyframe_bench.platform import Platform
from polyframe_dev.services import SERVICES, database_name, postgres_database_url


@dataclass
class Connections:
    """How many connections the run's databases hold, sampled after each load run: the two
    platforms and the floors share one server's ``max_connections`` (a failed connection is
    a 500, which fails the run)."""

    server: str | None
    names: list[str]
    max_connections: int = 0
    free_at_start: int = 0
    peak: int = 0

    def _query(self, sql: str, *args: Any) -> Any:
        import psycopg

        assert self.server is not None
        admin = postgres_database_url(self.server, "postgres", "postgresql")
        try:
            with psycopg.connect(admin, connect_timeout=5) as connection:
                row = connection.execute(sql, args).fetchone()
                return row[0] if row else None
        except psycopg.OperationalError as exc:
            raise SystemExit(
                f"polyframe-bench: PostgreSQL at {self.server} refused a connection ({exc}); "
                "start it, free some of its connections (see pg_stat_activity), or "
                "name another with --postgres URL, or run on SQLite with --sqlite"
            ) from None

    def start(self) -> None:
        self.max_connections = int(self._query("SHOW max_connections"))
        used = int(self._query("SELECT count(*) FROM pg_stat_activity"))
        self.free_at_start = self.max_connections - used

    def sample(self) -> None:
        if self.server:
            held = self._query(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(%s)", self.names
            )
            self.peak = max(self.peak, int(held))

    def summary(self) -> dict[str, int]:
        return {
            "max_connections": self.max_connections,
            "free_at_start": self.free_at_start,
            "peak_held_by_the_run": self.peak,
        }


def run_database_names(platforms: tuple[Platform, ...]) -> list[str]:
    """The databases the platforms made for this run (what the connection count samples)."""
    return [
        database_name(Path(platform.ready["data_dir"]), service)
        for platform in platforms
        for service in SERVICES
    ]


def floor_database(platform: Platform, service: str | None) -> str:
    """The database of ``service`` in ``platform`` (migrated and filled by the service)."""
    server = platform.option("--postgres")
    if server is None or service is None:
        raise ValueError("a floor reads a service's PostgreSQL database")
    name = database_name(Path(platform.ready["data_dir"]), service)
    return postgres_database_url(server, name, "postgresql")
