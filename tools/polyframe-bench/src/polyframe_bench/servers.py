"""How the bare apps are served: the same servers and settings as the services.

``users-fastapi`` runs on uvicorn (uvloop, httptools) with ``--workers W``;
``legacy-flask`` on gunicorn ``gthread`` with W workers x 8 threads;
``admin-django`` on gunicorn ``gthread`` with W workers x 4 threads. Each bare
app gets exactly that, plus the issue's reference points: raw ASGI on one
uvicorn worker, and Flask and Django on gunicorn's ``sync`` worker. So does each
framework's floor app (:mod:`polyframe_bench.floor`): the service's read with the raw
driver on a pool, on PostgreSQL.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BareServer:
    name: str
    framework: str
    #: The service it is the baseline of (None: a reference point only).
    baseline_of: str | None
    argv: tuple[str, ...]
    #: The service whose read it answers with the raw driver (a floor app; None: a bare app).
    floor_of: str | None = None

    def command(self, port: int) -> list[str]:
        return [part.replace("{port}", str(port)) for part in self.argv]


def _uvicorn(target: str, workers: int, *, factory: bool) -> tuple[str, ...]:
    return (
        sys.executable,
        "-m",
        "uvicorn",
        *(("--factory",) if factory else ()),
        target,
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    )


def _gunicorn(target: str, workers: int, threads: int | None) -> tuple[str, ...]:
    model = ("-k", "gthread", "--threads", str(threads)) if threads else ("-k", "sync")
    return (
        sys.executable,
        "-m",
        "gunicorn",
        "-b",
        "127.0.0.1:{port}",
        "-w",
        str(workers),
        *model,
        "--keep-alive",
        "5",
        "--log-level",
        "warning",
        "--no-control-socket",
        target,
    )


def bare_servers(workers: int) -> list[BareServer]:
    return [
        BareServer(
            "bare-asgi",
            "asgi",
            None,
            _uvicorn("polyframe_bench.bare.asgi_raw:app", 1, factory=False),
        ),
        BareServer(
            "bare-fastapi",
            "fastapi",
            "users-fastapi",
            _uvicorn("polyframe_bench.bare.fastapi_app:create_app", workers, factory=True),
        ),
        BareServer(
            "bare-flask",
            "flask",
            "legacy-flask",
            _gunicorn("polyframe_bench.bare.flask_app:create_app()", workers, 8),
        ),
        BareServer(
            "bare-flask-sync",
            "flask",
            None,
            _gunicorn("polyframe_bench.bare.flask_app:create_app()", workers, None),
        ),
        BareServer(
            "bare-django",
            "django",
            "admin-django",
            _gunicorn("polyframe_bench.bare.django_app:application", workers, 4),
        ),
        BareServer(
            "bare-django-sync",
            "django",
            None,
            _gunicorn("polyframe_bench.bare.django_app:application", workers, None),
        ),
    ]


#: Each service's bare baseline: the bare app on the same server and settings.
BASELINE_OF = {
    "users-fastapi": "bare-fastapi",
    "legacy-flask": "bare-flask",
    "admin-django": "bare-django",
}


def floor_servers(workers: int) -> list[BareServer]:
    """Each framework's floor app, on the same server and settings as its service."""
    return [
        BareServer(
            "floor-fastapi",
            "fastapi",
            None,
            _uvicorn("polyframe_bench.floor.fastapi_app:create_app", workers, factory=True),
            "users-fastapi",
        ),
        BareServer(
            "floor-flask",
            "flask",
            None,
            _gunicorn("polyframe_bench.floor.flask_app:create_app()", workers, 8),
            "legacy-flask",
        ),
        BareServer(
            "floor-django",
            "django",
            None,
            _gunicorn("polyframe_bench.floor.django_app:application", workers, 4),
            "admin-django",
        ),
    ]


#: Each service's floor: its read with the raw driver on a pool; its /readyz runs one query.
FLOOR_OF = {
    "users-fastapi": "floor-fastapi",
    "legacy-flask": "floor-flask",
    "admin-django": "floor-django",
}
