"""Hostile and broken input, through the ingress, for each of the three services.

A body over the limit is a 413 (with a Content-Length or streamed in chunks), a body that is
not JSON a 415, broken JSON, wrong types and unknown fields a 422 whose ``errors`` name the
field, and absurd pagination is refused (422 naming the parameter) or bounded, never a 500
or a huge answer. Every answer is the same problem+json in all three services (the
``problem`` fixture), and its status is one the service's OpenAPI document declares for the
operation, as problem+json.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from polyframe_bench import rawcases, rawfuzz

pytestmark = pytest.mark.e2e

PROBLEM = "application/problem+json"
MALFORMED_BODY = "urn:polyframe:problem:malformed-body"
VALIDATION = "urn:polyframe:problem:validation-error"
#: Over every service's body limit (64 KiB for users and orders, 2 MiB for the audit trail).
OVERSIZED = 3 * 1024 * 1024
MAX_PAGE_SIZE = 100
DOCUMENTS = {
    "/api/users": "/api/users/openapi.json",
    "/api/orders": "/api/orders/openapi.json",
    "/api/audit": "/api/audit/openapi.json",
}
ITEM: dict[str, Any] = {"sku": "BOOK-42", "quantity": 1, "unit_price_cents": 990}
ORDER: dict[str, Any] = {"currency": "EUR", "items": [ITEM]}


@dataclass(frozen=True)
class Target:
    """One operation that reads a JSON body, with a valid body and how to be let in."""

    path: str
    headers: dict[str, str]
    valid: dict[str, Any]
    #: (a change that makes ``valid`` wrong, the field the problem must name)
    wrong_type: tuple[dict[str, Any], str]
    unknown_field: tuple[dict[str, Any], str]


def _event(service: str) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid4()),
        "occurred_at": "2026-01-01T00:00:00+00:00",
        "service": service,
        "actor": {"type": "user", "id": "e2e-bad-input"},
        "action": "e2e.bad_input",
        "subject": {"type": "test", "id": str(uuid.uuid4())},
    }


@pytest.fixture(scope="module")
def member(platform: Any, register: Any, log_in: Any) -> dict[str, str]:
    """The bearer header of a new member."""
    with httpx.Client(base_url=platform.base_url, timeout=15) as client:
        account = register(client)
        return {"Authorization": f"Bearer {log_in(client, account.email, account.password)}"}


SERVICES = ["users-fastapi", "legacy-flask", "admin-django"]


@pytest.fixture(scope="module")
def targets(
    member: dict[str, str], service_headers: Callable[..., dict[str, str]]
) -> dict[str, Target]:
    event = _event("users-fastapi")
    return {
        "users-fastapi": Target(
            "/api/users/register",
            {},
            {"email": "bad-input@example.com", "password": "a long passphrase", "full_name": "B"},
            ({"email": 12345}, "email"),
            ({"role": "staff"}, "role"),
        ),
        "legacy-flask": Target(
            "/api/orders",
            member,
            ORDER,
            ({"items": [{**ITEM, "quantity": "2"}]}, "items.0.quantity"),
            ({"total_cents": 1}, "total_cents"),
        ),
        "admin-django": Target(
            "/api/audit/events",
            service_headers("users-fastapi"),
            {"events": [event]},
            ({"events": [{**event, "occurred_at": 1_700_000_000}]}, "events.0.occurred_at"),
            ({"events": [{**event, "colour": "red"}]}, "events.0.colour"),
        ),
    }


@pytest.fixture(params=SERVICES)
def target(request: pytest.FixtureRequest, targets: dict[str, Target]) -> Target:
    """Each service's operation that reads a JSON body, in turn."""
    return targets[request.param]


@pytest.fixture(scope="module")
def lists(
    member: dict[str, str], service_headers: Callable[..., dict[str, str]]
) -> dict[str, tuple[str, dict[str, str]]]:
    return {
        "users-fastapi": ("/api/users", service_headers("admin-django")),
        "legacy-flask": ("/api/orders", member),
        "admin-django": ("/api/audit/events", service_headers("legacy-flask")),
    }


@pytest.fixture(params=SERVICES)
def listing(
    request: pytest.FixtureRequest, lists: dict[str, tuple[str, dict[str, str]]]
) -> tuple[str, dict[str, str]]:
    """Each service's cursor-paginated list (path, headers), in turn."""
    return lists[request.param]


@pytest.fixture(scope="module")
def documents(platform: Any) -> dict[str, dict[str, Any]]:
    with httpx.Client(base_url=platform.base_url, timeout=15) as client:
        return {prefix: client.get(path).json() for prefix, path in DOCUMENTS.items()}


@pytest.fixture
def refused(
    problem: Callable[[httpx.Response, int], dict[str, Any]], documents: dict[str, dict[str, Any]]
) -> Callable[[httpx.Response, int, str], dict[str, Any]]:
    """``refused(response, status, template)``: the shared problem shape with ``status``, a
    status the service's document declares for the operation, as problem+json; the body."""

    def check(response: httpx.Response, status: int, template: str) -> dict[str, Any]:
        body = problem(response, status)
        prefix = next(p for p in DOCUMENTS if template.startswith(p))
        operation = documents[prefix]["paths"][template][response.request.method.lower()]
        answer = operation["responses"].get(str(status))
        assert answer is not None, f"{template} does not declare {status}"
        assert PROBLEM in answer["content"], (template, status)
        return body

    return check


def _post(
    client: httpx.Client, target: Target, content: Any, content_type: str = "application/json"
) -> httpx.Response:
    return client.post(
        target.path, content=content, headers={**target.headers, "Content-Type": content_type}
    )


def _fields(body: dict[str, Any]) -> set[str]:
    return {error["field"] for error in body.get("errors", [])}


def _chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A body httpx streams with ``Transfer-Encoding: chunked`` (no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


# -- the body --------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_an_oversized_body_is_413(
    client: httpx.Client, target: Target, refused: Any, framing: str
) -> None:
    body = json.dumps({**target.valid, "padding": "x" * OVERSIZED}).encode()

    response = _post(client, target, body if framing == "content-length" else _chunks(body))

    refused(response, 413, target.path)


def test_a_chunked_body_within_the_limit_is_read_whole(
    client: httpx.Client, target: Target, refused: Any
) -> None:
    """Streamed in chunks, the body is read whole: the unknown field is seen and named."""
    change, field = target.unknown_field
    body = json.dumps({**target.valid, **change}).encode()

    response = _post(client, target, _chunks(body, size=16))

    assert _fields(refused(response, 422, target.path)) == {field}


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        ("text/plain", b"currency=EUR"),
        ("application/x-www-form-urlencoded", b"currency=EUR"),
        ("application/xml", b"<order/>"),
    ],
    ids=["text", "form", "xml"],
)
def test_a_body_that_is_not_json_is_415(
    client: httpx.Client, target: Target, refused: Any, content_type: str, content: bytes
) -> None:
    response = _post(client, target, content, content_type)

    assert "application/json" in refused(response, 415, target.path)["detail"]


@pytest.mark.parametrize(
    "content",
    [b'{"events": [', b"", b"\xff\xfe not utf-8", b"{'single': 'quotes'}"],
    ids=["truncated", "empty", "not-utf8", "single-quotes"],
)
def test_malformed_json_is_422_malformed_body(
    client: httpx.Client, target: Target, refused: Any, content: bytes
) -> None:
    body = refused(_post(client, target, content), 422, target.path)

    if content:
        assert body["type"] == MALFORMED_BODY, body
    else:  # no body at all: the body is what is missing
        assert body["type"] in (MALFORMED_BODY, VALIDATION), body


@pytest.mark.parametrize("kind", ["wrong-type", "unknown-field"])
def test_invalid_fields_are_422_naming_the_field(
    client: httpx.Client, target: Target, refused: Any, kind: str
) -> None:
    change, field = target.wrong_type if kind == "wrong-type" else target.unknown_field

    response = client.post(target.path, json={**target.valid, **change}, headers=target.headers)

    body = refused(response, 422, target.path)
    assert body["type"] == VALIDATION
    assert _fields(body) == {field}, body
    (error,) = body["errors"]
    assert error["location"] == "body"
    assert error["pointer"] == "#/" + field.replace(".", "/")
    assert error["detail"]
    assert field in body["detail"]


def test_a_json_body_that_is_not_an_object_is_422(
    client: httpx.Client, target: Target, refused: Any
) -> None:
    response = client.post(target.path, json=["not", "an", "object"], headers=target.headers)

    refused(response, 422, target.path)


# -- pagination ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": str(10**9)}, "limit"),
        ({"limit": str(10**30)}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"limit": "NaN"}, "limit"),
        ({"cursor": "garbage"}, "cursor"),
        ({"cursor": "eyJub3QiOiAiYSBsaXN0In0"}, "cursor"),  # base64 of a JSON object
        ({"cursor": "W1siMjAyNi0wMS0wMSJdXQ"}, "cursor"),  # base64 of [["2026-01-01"]]
        ({"cursor": "!" * 513}, "cursor"),
    ],
    ids=[
        "limit-1e9",
        "limit-1e30",
        "limit-negative",
        "limit-zero",
        "limit-float",
        "limit-nan",
        "cursor-garbage",
        "cursor-object",
        "cursor-wrong-shape",
        "cursor-too-long",
    ],
)
def test_absurd_pagination_is_422_naming_the_parameter(
    client: httpx.Client,
    listing: tuple[str, dict[str, str]],
    refused: Any,
    params: dict[str, str],
    field: str,
) -> None:
    path, headers = listing

    body = refused(client.get(path, params=params, headers=headers), 422, path)

    assert _fields(body) == {field}, body
    assert body["errors"][0]["location"] == "query"


@pytest.mark.parametrize("params", [{"offset": "-5"}, {"page": "-1", "per_page": str(10**9)}])
def test_parameters_from_other_pagination_styles_are_refused_or_bounded(
    client: httpx.Client, listing: tuple[str, dict[str, str]], params: dict[str, str]
) -> None:
    """There are no offsets or pages here: a 422 naming them, or the default bounded page."""
    path, headers = listing

    response = client.get(path, params=params, headers=headers)

    assert response.status_code in (200, 422), response.text
    if response.status_code == 422:
        assert response.headers["content-type"] == PROBLEM
        assert _fields(response.json()) == set(params)
    else:
        assert len(response.json()["items"]) <= MAX_PAGE_SIZE
        assert len(response.content) < 1024 * 1024


def test_the_largest_page_is_bounded(
    client: httpx.Client, listing: tuple[str, dict[str, str]]
) -> None:
    path, headers = listing

    response = client.get(path, params={"limit": str(MAX_PAGE_SIZE)}, headers=headers)

    assert response.status_code == 200, response.text
    assert len(response.json()["items"]) <= MAX_PAGE_SIZE


def test_a_request_line_over_the_servers_limit_is_a_4xx_problem(
    client: httpx.Client, listing: tuple[str, dict[str, str]]
) -> None:
    """A 6 KB cursor: uvicorn lets the app refuse it (422 naming cursor); gunicorn refuses a
    request line over 4094 bytes itself (414), in the same problem shape (``instance`` is
    null there: the path is what gunicorn could not read)."""
    path, headers = listing

    response = client.get(path, params={"cursor": "a" * 6000}, headers=headers)

    assert response.status_code in (414, 422), response.text[:300]
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail", "instance"} <= body.keys()
    assert body["status"] == response.status_code
    if response.status_code == 422:
        assert _fields(body) == {"cursor"}


# -- a refusal with a body behind it -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/orders", "/admin/login/", "/api/audit/events"])
def test_a_header_the_server_refuses_with_a_body_behind_it_is_a_4xx_never_a_502(
    platform: Any, path: str
) -> None:
    """gunicorn refuses a 70 KB header itself (431) and closes the connection. Closed with the
    body still unread, the socket sent a reset that could reach Traefik before the answer:
    Traefik then answered 502 (5-17% of tries, found by the raw fuzz, seed 7 case 674). The
    kit now reads and drops the rest (bounded) before it closes."""
    url = httpx.URL(platform.base_url)
    body = b"x" * 300_000
    data = (
        f"POST {path} HTTP/1.1\r\nHost: {url.host}:{url.port}\r\nConnection: close\r\n"
        f"Cookie: {'a' * 70_000}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    case = rawcases.Case(0, 0, "header: 64 KB", f"POST {path}", data)
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(
            pool.map(lambda _: rawfuzz.send(url.host, url.port or 80, case, 15), range(30))
        )
    statuses = Counter(status for outcome in outcomes for status in outcome.statuses)
    assert statuses.keys() <= {"431", "413", "400", "reset"}, statuses
    assert statuses["431"] + statuses["413"] + statuses["400"] > 0, statuses


@pytest.mark.parametrize("path", ["/api/users/register", "/api/orders", "/api/audit/events"])
def test_bytes_outside_ascii_in_the_request_line_with_a_body_behind_it_are_never_a_502(
    platform: Any, path: str
) -> None:
    """uvicorn's parser refuses ``\\xff\\xfe`` in a query itself and closed the connection over
    the 200 KB body behind it; the reset could reach Traefik before the 400, and Traefik
    answered 502 (the CI's raw fuzz, seed 3949370739 case 127). The kit's uvicorn protocol
    now answers problem+json and reads the rest first, as gunicorn's refusal (the same 400)
    already did."""
    url = httpx.URL(platform.base_url)
    body = b'{"pad": "' + b"x" * 200_000 + b'"}'
    data = (
        f"POST {path}?user_id=\xff\xfe HTTP/1.1\r\nHost: {url.host}:{url.port}\r\n"
        f"Connection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1") + body
    case = rawcases.Case(0, 0, "line: query", f"POST {path}", data)
    with ThreadPoolExecutor(6) as pool:
        outcomes = list(
            pool.map(lambda _: rawfuzz.send(url.host, url.port or 80, case, 15), range(30))
        )
    statuses = Counter(status for outcome in outcomes for status in outcome.statuses)
    assert statuses.keys() <= {"400", "401", "413", "reset"}, statuses
    assert statuses["400"] + statuses["401"] + statuses["413"] > 0, statuses


@pytest.mark.parametrize(
    "path", ["/api/users/me", f"/api/orders/{uuid.uuid4()}", "/api/audit/events"]
)
def test_a_websocket_handshake_is_answered_as_http(client: httpx.Client, path: str) -> None:
    """No service serves a WebSocket: each answers the handshake as HTTP with a 4xx problem
    (401 without a token; Flask's routing refuses a WebSocket request to an HTTP route with
    its 400). Stock uvicorn handed the handshake to its WebSocket stack, which answers it
    outside the problem shape (a plain 403 or 500, by the app), and hung a POST that asked
    for the upgrade."""
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "websocket",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }

    response = client.get(path, headers=headers)

    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.headers["content-type"] == PROBLEM
    assert response.json()["status"] == response.status_code


@pytest.mark.parametrize("upgrade", ["websocket", "h2c"])
def test_a_post_that_asks_for_an_upgrade_is_answered(client: httpx.Client, upgrade: str) -> None:
    """A log-in that asks for an upgrade is answered with a 4xx problem, never served as two
    requests and never left hanging. Traefik passes ``Upgrade: websocket`` on: the kit's
    uvicorn protocol refuses it (400; stock uvicorn hung it). Traefik drops ``h2c``: the
    log-in is served as any other (401, wrong password)."""
    headers = {"Connection": "Upgrade", "Upgrade": upgrade}
    credentials = {"email": "nobody@example.com", "password": "a long passphrase"}

    response = client.post("/api/users/login", json=credentials, headers=headers)

    assert 400 <= response.status_code < 500, response.text[:300]
    assert response.headers["content-type"] == PROBLEM
