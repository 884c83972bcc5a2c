"""A read that met a dropped database connection is run once more; a write is a 503.

The routes raise the error SQLAlchemy raises for a statement on a connection the server
dropped (``connection_invalidated``); the real thing, against PostgreSQL's terminated
backends, is tests/e2e/test_e2e_dropped_connections.py.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from fastapi import FastAPI
from flask import Flask
from sqlalchemy import exc as sa_exc

from service_kit import fastapi as kit_fastapi
from service_kit import flask as kit_flask
from service_kit.problems import DEPENDENCY_UNAVAILABLE
from service_kit.sqla import disconnected


def dropped() -> sa_exc.DBAPIError:
    """What SQLAlchemy raises (asyncpg's kind: a bare DBAPIError) for a dropped connection."""
    return sa_exc.DBAPIError(
        "SELECT 1", {}, Exception("connection is closed"), connection_invalidated=True
    )


class Flaky:
    """Fails the first ``failures`` calls with a dropped connection, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> dict[str, int]:
        self.calls += 1
        if self.calls <= self.failures:
            raise dropped()
        return {"calls": self.calls}


def test_only_an_invalidated_connection_counts_as_dropped() -> None:
    assert disconnected(dropped())
    lost = sa_exc.OperationalError("SELECT 1", {}, Exception("deadlock"))
    assert not disconnected(lost)
    assert not disconnected(RuntimeError("connection is closed"))


def _fastapi(flaky: Flaky) -> FastAPI:
    app = FastAPI()
    kit_fastapi.install(app)

    @app.get("/read")
    async def read() -> dict[str, int]:
        return flaky()

    @app.post("/write", status_code=201)
    async def write() -> dict[str, int]:
        return flaky()

    return app


async def _fastapi_call(flaky: Flaky, method: str, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=_fastapi(flaky))
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as client:
        return await client.request(method, path)


def _assert_unavailable(status: int, body: Any) -> None:
    assert status == 503
    assert json.loads(body)["type"] == DEPENDENCY_UNAVAILABLE


async def test_fastapi_read_is_retried_once() -> None:
    flaky = Flaky(failures=1)
    response = await _fastapi_call(flaky, "GET", "/read")
    assert response.status_code == 200
    assert response.json() == {"calls": 2}


async def test_fastapi_read_failing_twice_is_a_503_not_a_third_run() -> None:
    flaky = Flaky(failures=5)
    response = await _fastapi_call(flaky, "GET", "/read")
    _assert_unavailable(response.status_code, response.content)
    assert flaky.calls == 2


async def test_fastapi_write_is_not_retried_but_a_503() -> None:
    flaky = Flaky(failures=1)
    response = await _fastapi_call(flaky, "POST", "/write")
    _assert_unavailable(response.status_code, response.content)
    assert flaky.calls == 1


def _flask(flaky: Flaky, resets: list[str]) -> Flask:
    app = Flask(__name__)
    kit_flask.install(app)
    kit_flask.on_read_retry(app, lambda: resets.append("session closed"))
    app.add_url_rule("/read", "read", flaky)
    app.add_url_rule("/write", "write", flaky, methods=["POST"])
    return app


def test_flask_read_is_retried_once_after_the_session_is_dropped() -> None:
    flaky, resets = Flaky(failures=1), []
    response = _flask(flaky, resets).test_client().get("/read")
    assert response.status_code == 200
    assert response.get_json() == {"calls": 2}
    assert resets == ["session closed"]


def test_flask_read_failing_twice_is_a_503_not_a_third_run() -> None:
    flaky, resets = Flaky(failures=5), []
    response = _flask(flaky, resets).test_client().get("/read")
    _assert_unavailable(response.status_code, response.get_data())
    assert flaky.calls == 2


def test_flask_write_is_not_retried_but_a_503() -> None:
    flaky, resets = Flaky(failures=1), []
    response = _flask(flaky, resets).test_client().post("/write")
    _assert_unavailable(response.status_code, response.get_data())
    assert flaky.calls == 1
    assert resets == []


def test_flask_read_whose_access_check_met_the_dropped_connection_is_a_503() -> None:
    """Only the view is run again: a before_request hook (an access check) that failed on the
    dropped connection is not skipped by a retry of the view alone, nor run twice (its
    hooks, OpenTelemetry's among them, cannot be): the request is a 503."""
    flaky, resets = Flaky(failures=1), []
    app = _flask(flaky, resets)
    checks: list[str] = []

    @app.before_request
    def access_check() -> None:
        checks.append("checked")
        flaky()  # the hook's own read: fails on the dropped connection

    response = app.test_client().get("/read")
    _assert_unavailable(response.status_code, response.get_data())
    assert checks == ["checked"]
    assert flaky.calls == 1  # the view never ran
    assert resets == []
