"""Structural limits before parsing (service_kit.limits) in the admin service: the API's
JSON, the console's forms (Django's own counts, wired from ``ADMIN_FORM_MAX_*``), and the
regression of issue 17's 500."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from admin_django.audit.models import AuditEvent

pytestmark = pytest.mark.usefixtures("db")

EVENTS = "/api/audit/events"


def _post(client: Client, text: str, headers: dict[str, str]) -> Any:
    return client.post(EVENTS, data=text, content_type="application/json", headers=headers)


def _with_payload(event_body: Callable[..., dict[str, Any]], payload: str) -> str:
    text = json.dumps({"events": [event_body(payload={"v": "PAYLOAD"})]})
    return text.replace('"PAYLOAD"', payload)


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        ("1e400", "input-limit"),  # json.loads made it inf; PostgreSQL's jsonb refused it: 500
        ("-1e400", "input-limit"),
        ("NaN", "input-limit"),
        ('"\\ud800"', "validation-error"),  # a lone surrogate: psycopg cannot encode it: 500
        ('{"\\udfff": 1}', "validation-error"),
    ],
)
def test_a_payload_no_database_can_store_is_4xx_not_500(
    client: Client,
    event_body: Callable[..., dict[str, Any]],
    service_headers: Callable[..., dict[str, str]],
    problem: Callable[[Any, int], dict[str, Any]],
    payload: str,
    kind: str,
) -> None:
    """Issue 17: one well-formed JSON body answered 500 (on PostgreSQL) before the limits."""
    response = _post(client, _with_payload(event_body, payload), service_headers("users-fastapi"))

    assert problem(response, 422)["type"] == f"urn:polyframe:problem:{kind}"
    assert AuditEvent.objects.count() == 0


def test_the_largest_finite_numbers_are_stored(
    client: Client,
    event_body: Callable[..., dict[str, Any]],
    service_headers: Callable[..., dict[str, str]],
) -> None:
    text = _with_payload(event_body, f"[1e308, {2**63 - 1}, {-(2**63)}]")
    response = _post(client, text, service_headers("users-fastapi"))

    assert response.status_code == 201, response.content
    largest, top, bottom = AuditEvent.objects.get().payload["v"]
    assert float(largest) == 1e308  # PostgreSQL's jsonb gives it back as a 309-digit integer
    assert (top, bottom) == (2**63 - 1, -(2**63))


def test_a_payload_nested_past_the_limit_is_refused(
    client: Client,
    event_body: Callable[..., dict[str, Any]],
    service_headers: Callable[..., dict[str, str]],
    problem: Callable[[Any, int], dict[str, Any]],
) -> None:
    limit = settings.POLYFRAME_INPUT_LIMITS.json_max_depth  # ADMIN_JSON_MAX_DEPTH
    # {"events": [{"payload": {"v": ...}}]} holds 4 levels around the value.
    at = _with_payload(event_body, "[" * (limit - 4) + "]" * (limit - 4))
    past = _with_payload(event_body, "[" * (limit - 3) + "]" * (limit - 3))

    assert _post(client, at, service_headers("users-fastapi")).status_code == 201
    body = problem(_post(client, past, service_headers("legacy-flask")), 422)
    assert body["type"] == "urn:polyframe:problem:input-limit"
    assert f"{limit} levels" in body["detail"]


def test_the_console_s_form_limits_come_from_the_admin_settings() -> None:
    assert settings.CONFIG.form_max_fields == settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    assert settings.CONFIG.form_max_files == settings.DATA_UPLOAD_MAX_NUMBER_FILES
    assert settings.CONFIG.max_body_bytes == settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def test_a_console_form_with_too_many_fields_gets_the_console_s_400_page(client: Client) -> None:
    limit = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    fields = {f"f{i}": "x" for i in range(limit + 1)}

    response = client.post("/admin/login/", fields)

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


def test_a_batch_limit_above_the_json_array_limit_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from admin_django.conf import AdminSettings

    monkeypatch.setenv("ADMIN_ENVIRONMENT", "development")
    monkeypatch.setenv("ADMIN_AUDIT_MAX_BATCH", "2000")
    with pytest.raises(ValueError, match="raise ADMIN_JSON_MAX_ELEMENTS"):
        AdminSettings()
    monkeypatch.setenv("ADMIN_JSON_MAX_ELEMENTS", "2000")
    assert AdminSettings().audit_max_batch == 2000
