"""What every service offers: health endpoints, problem+json under ``/api/``, request ids,
and (admin-django's own) an audit event for every mutating request."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from admin_django.audit import selectors
from admin_django.audit.models import AuditEvent
from service_kit.problems import INTERNAL

ProblemCheck = Callable[[Any, int], dict[str, Any]]
EVENTS = "/api/audit/events"


# -- health ----------------------------------------------------------------------------------


def test_healthz_answers_without_the_database(client: Client) -> None:
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "service": "admin-django", "checks": {}}


@pytest.mark.usefixtures("db")
def test_readyz_is_200_when_every_migration_is_applied(client: Client) -> None:
    response = client.get("/readyz")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["status"] == "ok"
    assert response["Cache-Control"] == "no-store"


def test_readyz_is_503_naming_the_database_until_migrated(
    client: Client, empty_database: str
) -> None:
    from django.core.management import call_command

    empty = client.get("/readyz")
    call_command("migrate", interactive=False, verbosity=0)
    migrated = client.get("/readyz")
    call_command("migrate", "audit", "0002", interactive=False, verbosity=0)  # one behind
    rolled_back = client.get("/readyz")

    assert empty.status_code == 503
    assert empty.json()["status"] == "fail"
    assert empty.json()["checks"]["database"]["status"] == "fail"
    assert "not applied" in empty.json()["checks"]["database"]["detail"]
    assert migrated.status_code == 200
    assert rolled_back.status_code == 503
    assert rolled_back.json()["checks"]["database"]["detail"] == (
        "1 migration(s) not applied: run the migrations"
    )


def test_readyz_is_503_when_the_database_is_unreachable(
    client: Client, point_database: Callable[[str], Any]
) -> None:
    # Nothing listens on port 1: the connection is refused at once.
    with point_database("postgresql://postgres@127.0.0.1:1/nowhere"):
        response = client.get("/readyz")

    assert response.status_code == 503
    check = response.json()["checks"]["database"]
    assert check["status"] == "fail"
    # The kind of failure only: a driver's message may carry hosts or credentials.
    assert check["detail"] == "OperationalError"


# -- problem+json under /api/, HTML elsewhere ------------------------------------------------


def test_unknown_api_path_is_a_problem(client: Client, problem: ProblemCheck) -> None:
    response = client.get("/api/nothing-here", headers={"X-Request-ID": "req-42.a:b"})

    body = problem(response, 404)
    assert body["instance"] == "/api/nothing-here"
    assert response["X-Request-ID"] == "req-42.a:b"


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_a_method_the_api_does_not_offer_is_405_problem_with_allow(
    client: Client, problem: ProblemCheck, method: str
) -> None:
    response = getattr(client, method)(EVENTS, data="{}", content_type="application/json")

    problem(response, 405)
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "POST"}


def test_an_unhandled_error_is_a_500_problem_without_internals(
    client: Client,
    problem: ProblemCheck,
    service_headers: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(**_filters: Any) -> Any:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(selectors, "audit_event_list", broken)

    with caplog.at_level(logging.ERROR, logger="service_kit.errors"):
        response = client.get(EVENTS, headers=service_headers("admin-django"))

    body = problem(response, 500)
    assert body["type"] == INTERNAL
    assert b"secret internals" not in response.content
    assert any(r.exc_info and "secret internals" in str(r.exc_info[1]) for r in caplog.records)


def test_a_malformed_request_id_is_replaced(client: Client) -> None:
    response = client.get("/healthz", headers={"X-Request-ID": "bad id\r\nX-Evil: 1"})

    replaced = response["X-Request-ID"]
    # A fresh id (32 hex digits), not a cleaned-up copy of the sent one: a random id can
    # hold "bad" by chance (1 in ~140), so the test compares shapes, not substrings.
    assert re.fullmatch(r"[0-9a-f]{32}", replaced), replaced
    assert "X-Evil" not in response


def test_admin_pages_keep_html(client: Client) -> None:
    login_page = client.get("/admin/login/")
    not_found = client.get("/not-under-api/")

    assert login_page.status_code == 200
    assert login_page["Content-Type"].startswith("text/html")
    assert login_page["X-Request-ID"]
    assert not_found.status_code == 404
    assert not_found["Content-Type"].startswith("text/html")
    assert not_found["X-Request-ID"]


@pytest.mark.usefixtures("db")
def test_an_unknown_admin_page_is_html_404(admin_client: Client) -> None:
    response = admin_client.get("/admin/audit/nothing-here/")

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


# -- every mutating request is an audit event ------------------------------------------------


def _requests() -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(service="admin-django", subject_type="route"))


@pytest.mark.usefixtures("db")
def test_an_anonymous_login_attempt_is_recorded_as_anonymous(client: Client) -> None:
    response = client.post("/admin/login/", {"username": "mallory", "password": "guess"})

    assert response.status_code == 200  # the form again, with an error
    [event] = _requests()
    assert event.action == "http.post"
    assert event.subject_id == "/admin/login/"
    assert (event.actor_type, event.actor_id) == ("user", "anonymous")
    assert event.payload == {"path": "/admin/login/", "status": 200}
    assert event.acting_for == ""


@pytest.mark.usefixtures("db")
def test_a_staff_members_post_to_an_admin_page_is_recorded_with_their_name(
    login: Callable[..., Client],
) -> None:
    response = login("sam").post("/admin/password_change/", {"old_password": "wrong"})

    assert response.status_code == 200
    [event] = _requests()
    assert (event.actor_type, event.actor_id) == ("staff", "sam")
    assert event.subject_id == "/admin/password_change/"


@pytest.mark.usefixtures("db")
def test_logging_in_and_out_is_recorded_with_the_staff_name(
    client: Client, make_staff: Callable[..., Any], password: str
) -> None:
    make_staff("sam", with_password=True)

    logged_in = client.post("/admin/login/", {"username": "sam", "password": password})
    logged_out = client.post("/admin/logout/")

    assert logged_in.status_code == 302
    assert logged_out.status_code == 200
    assert [(e.subject_id, e.actor_type, e.actor_id) for e in _requests()] == [
        ("/admin/login/", "staff", "sam"),
        ("/admin/logout/", "staff", "sam"),
    ]


@pytest.mark.usefixtures("db")
def test_the_producers_batches_are_not_recorded_as_requests(
    client: Client, problem: ProblemCheck
) -> None:
    problem(client.post(EVENTS, data="{}", content_type="application/json"), 401)
    problem(client.put(EVENTS, data="{}", content_type="application/json"), 405)

    assert _requests() == []


@pytest.mark.usefixtures("db")
def test_reads_are_not_recorded(client: Client) -> None:
    client.get("/admin/login/")
    client.get("/healthz")

    assert _requests() == []


@pytest.mark.usefixtures("db")
def test_a_failure_to_record_never_fails_the_request(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from admin_django.audit import middleware

    def broken(**_fields: Any) -> Any:
        raise RuntimeError("audit table is gone")

    monkeypatch.setattr(middleware, "audit_event_record", broken)

    with caplog.at_level(logging.ERROR, logger="admin_django.audit"):
        response = client.post("/admin/login/", {"username": "x", "password": "y"})

    assert response.status_code == 200
    assert [r.getMessage() for r in caplog.records if r.name == "admin_django.audit"] == [
        "could not record a mutating request"
    ]


def test_wait_for_migrations_gives_up_then_passes_once_migrated(
    empty_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the demo-staff Job's init container runs: the check of /readyz, retried."""
    from django.core.management import call_command

    with pytest.raises(SystemExit) as gave_up:
        call_command("wait_for_migrations", timeout=0)
    call_command("migrate", interactive=False, verbosity=0)
    call_command("wait_for_migrations", timeout=5)

    assert gave_up.value.code == 1
    err = capsys.readouterr().err
    assert "admin-django: not ready after 0s (database: " in err
    assert "migration(s) not applied: run the migrations)" in err
    assert "admin-django: ready (database: all applied)" in err
