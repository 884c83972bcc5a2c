"""``/api/audit/openapi.json``: the document describes what the views really do.

The document is generated from the models the views use (``admin_django.audit.openapi``);
these tests hold it to the views: every API route and method is in it, the real answers
of the views (successes and every error the document lists) validate against it with
openapi-core, the requests they accepted too, and a wrong answer is caught.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import OperationalError
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from openapi_core import Config
from openapi_core import OpenAPI as CoreOpenAPI
from openapi_core.contrib.django import DjangoOpenAPIRequest, DjangoOpenAPIResponse
from openapi_core.exceptions import OpenAPIError
from openapi_spec_validator import validate

from admin_django.audit import selectors, services
from admin_django.audit.openapi import DOCUMENT, EVENTS, PREFIX, openapi_document
from admin_django.audit.schemas import EventListQuery
from admin_django.support.roles import READ_ONLY
from service_kit.problems import PROBLEM_CONTENT_TYPE

Headers = Callable[..., dict[str, str]]
Body = Callable[..., dict[str, Any]]
#: The document's own route and the fault drills are not part of the API it describes.
UNDOCUMENTED = {DOCUMENT, f"{PREFIX}/_drills/n-plus-one"}


class _RequestOfAResponse(DjangoOpenAPIRequest):
    """The request only as far as a response's validation needs it (operation, not body:
    the body of a refused request may be one Django will not even read)."""

    @property
    def body(self) -> bytes:
        return b""


class Contract:
    """The served document as an openapi-core validator, for the test client's answers."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.spec = CoreOpenAPI.from_dict(
            document,
            config=Config(
                extra_media_type_deserializers={PROBLEM_CONTENT_TYPE: json.loads},
                # A property the document does not name is a mismatch too.
                additional_properties_default_policy="forbid",
            ),
        )

    def check_response(self, response: Any) -> None:
        self.spec.validate_response(
            _RequestOfAResponse(response.wsgi_request), DjangoOpenAPIResponse(response)
        )

    def check_request(self, response: Any) -> None:
        self.spec.validate_request(DjangoOpenAPIRequest(response.wsgi_request))


@pytest.fixture(scope="module")
def contract() -> Contract:
    return Contract(openapi_document())


def post(client: Client, body: Any, headers: dict[str, str], **kwargs: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return client.post(EVENTS, data=data, headers=headers, **kwargs)


def _api_routes() -> Iterator[tuple[str, Any]]:
    """(path, view) of every URL pattern under /api/ (the project has no converters there)."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[tuple[str, Any]]:
        for pattern in patterns:
            route = prefix + str(pattern.pattern)
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, route)
            elif isinstance(pattern, URLPattern) and route.startswith("api/"):
                yield "/" + route, pattern.callback

    yield from walk(get_resolver().url_patterns, "")


def _methods(view: Any) -> set[str]:
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return {"get"}  # function views of the API are GET only (require_safe)
    return {name for name in view_class.http_method_names if name not in ("head", "options")}


# -- the document ------------------------------------------------------------------------------


def test_the_document_is_valid_openapi_3_1() -> None:
    document = openapi_document()
    assert document["openapi"] == "3.1.0"
    validate(document)


def test_it_is_served_to_anyone_as_json(client: Client) -> None:
    response = client.get(DOCUMENT)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == openapi_document()


def test_every_api_route_and_method_is_documented() -> None:
    routes = {path: _methods(view) for path, view in _api_routes() if path not in UNDOCUMENTED}
    documented = {path: set(item) for path, item in openapi_document()["paths"].items()}

    assert routes == documented


def test_the_query_parameters_are_the_fields_of_the_query_model() -> None:
    parameters = openapi_document()["paths"][EVENTS]["get"]["parameters"]

    assert [p["name"] for p in parameters] == list(EventListQuery.model_fields)
    assert {p["in"] for p in parameters} == {"query"}
    assert not any(p["required"] for p in parameters)


# -- the views' answers against it -------------------------------------------------------------


@pytest.mark.usefixtures("db")
def test_the_happy_paths_match_the_document(
    client: Client, contract: Contract, event_body: Body, service_headers: Headers, login: Any
) -> None:
    producer = service_headers("users-fastapi")
    acted = event_body(actor={"type": "service", "id": "admin-django", "acting_for": "sam"})
    plain = event_body(trace_id=None, payload={})
    responses = [
        post(client, {"events": [acted, plain]}, producer),  # 201
        post(client, {"events": [acted]}, producer),  # 200: seen before
        client.get(EVENTS, headers=service_headers("admin-django")),
        client.get(EVENTS, {"limit": 1}, headers=service_headers("legacy-flask")),
        client.get(
            EVENTS, {"service": "users-fastapi", "after": "2020-01-01T00:00:00Z"}, headers=producer
        ),
        login("rita", group=READ_ONLY).get(EVENTS, {"actor": "sam"}),  # staff by session
    ]

    assert [r.status_code for r in responses] == [201, 200, 200, 200, 200, 200]
    assert responses[3].json()["next_cursor"] is not None
    assert {item["trace_id"] for item in responses[2].json()["items"]} >= {None}
    for response in responses:
        contract.check_request(response)
        contract.check_response(response)


@pytest.mark.usefixtures("db")
def test_every_documented_error_is_what_the_views_answer(
    client: Client,
    contract: Contract,
    event_body: Body,
    service_headers: Headers,
    login: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from django.conf import settings

    producer, reader = service_headers("users-fastapi"), service_headers("admin-django")
    too_big = {"events": [event_body(payload={"pad": "x" * settings.CONFIG.max_body_bytes})]}
    answers = {
        ("get", 401): client.get(EVENTS),
        ("get", 403): login("nobody", is_staff=False).get(EVENTS),
        ("get", 422): client.get(EVENTS, {"limit": 10**9}, headers=producer),
        ("post", 401): post(client, {"events": [event_body()]}, {}),
        ("post", 403): post(client, {"events": [event_body(service="admin-django")]}, reader),
        ("post", 413): post(client, too_big, producer),
        ("post", 415): post(client, "x", producer, content_type="text/plain"),
        ("post", 422): post(client, {"events": [event_body(id="not-a-uuid")]}, producer),
    }

    def unreachable(**_: Any) -> Any:
        raise OperationalError("connection refused")

    monkeypatch.setattr(selectors, "audit_event_list", unreachable)
    monkeypatch.setattr(services, "audit_event_record_many", unreachable)
    answers[("get", 503)] = client.get(EVENTS, headers=producer)
    answers[("post", 503)] = post(client, {"events": [event_body()]}, producer)

    document = openapi_document()["paths"][EVENTS]
    for (method, status), response in answers.items():
        assert response.status_code == status, (method, status, response.content[:300])
        assert str(status) in document[method]["responses"], (method, status)
        contract.check_response(response)
    # And every error the document lists for an operation was answered above.
    for method, operation in document.items():
        listed = {int(s) for s in operation["responses"] if int(s) >= 400}
        answered = {status for m, status in answers if m == method}
        # 414 is gunicorn's (a request line over its limit), never a view's: see the kit's tests.
        assert listed - {414} <= answered, (method, sorted(listed - answered))


@pytest.mark.usefixtures("db")
def test_the_contract_check_catches_a_wrong_answer(
    client: Client, contract: Contract, event_body: Body, service_headers: Headers
) -> None:
    producer = service_headers("users-fastapi")
    post(client, {"events": [event_body()]}, producer)
    response = client.get(EVENTS, headers=producer)
    contract.check_response(response)
    page = response.json()

    page["items"][0]["recorded_at"] = 12
    response.content = json.dumps(page).encode()
    with pytest.raises(OpenAPIError):
        contract.check_response(response)

    response.status_code = 418
    response.content = json.dumps({**page, "items": []}).encode()
    with pytest.raises(OpenAPIError):
        contract.check_response(response)
