"""The Django adapter: problem+json under ``/api/``, request context, access log, health.

No project of its own: requests come from ``RequestFactory`` and go through the
middleware with stand-in views, or through Django's own ``BaseHandler`` with an
in-test URLconf. The whole repository is tested in one process, and admin-django's
suite configures Django for it (``DJANGO_SETTINGS_MODULE=admin_django.settings``) in
its ``pytest_configure``. So these tests never configure Django over it: they use the
configured settings if there are any, and otherwise a minimal configuration that is
removed again after this module (``settings._wrapped = empty``), leaving Django as
unconfigured as it was. ``readyz`` needs a database and is covered by admin-django's tests.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.handlers.base import BaseHandler
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseNotFound,
    HttpResponseRedirect,
)
from django.test import RequestFactory, override_settings
from django.urls import ResolverMatch, include, path, re_path, resolve
from django.views.decorators.http import require_http_methods
from pydantic import BaseModel, Field, ValidationError

from service_kit import django as kit_django
from service_kit.client import ServiceUnavailableError
from service_kit.context import current_request_id
from service_kit.cycle import ENQUEUED_ENVIRON, enqueued_at
from service_kit.django import (
    UNMATCHED_ROUTE,
    RequestContextMiddleware,
    healthz,
    json_body,
    json_response,
    metrics_view,
    problem_response,
    route_template,
    validation_error,
)
from service_kit.problems import (
    DEPENDENCY_UNAVAILABLE,
    INTERNAL,
    MALFORMED_BODY,
    PROBLEM_CONTENT_TYPE,
    UNAUTHENTICATED,
    VALIDATION,
    Problem,
    ProblemError,
    conflict,
    unauthenticated,
)
from service_kit.telemetry import Telemetry
from service_kit.tracecontext import current_trace_id

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
SECRET_TEXT = "db password is hunter2"
HEX32 = re.compile(r"[0-9a-f]{32}")

View = Callable[[HttpRequest], HttpResponse]


pytestmark = pytest.mark.usefixtures("django_configured")


@pytest.fixture
def rf() -> RequestFactory:
    return RequestFactory()


def problem_body(response: HttpResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response["Content-Type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = json.loads(response.content)
    assert body["status"] == status
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    return body


# --- a URLconf of stand-in views --------------------------------------------------------------


def ok_view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    return json_response(
        {
            "request_id": current_request_id(),
            "trace_id": current_trace_id(),
            "kwargs": {k: str(v) for k, v in kwargs.items()},
        }
    )


class Item(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class Order(BaseModel):
    customer: str = Field(min_length=1)
    items: list[Item] = Field(min_length=1)


def create_order(request: HttpRequest) -> HttpResponse:
    order = json_body(request, Order)
    return json_response(order.model_dump(), status=201)


def raising(exc: Exception) -> View:
    def view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
        raise exc

    return view


@require_http_methods(["GET", "POST"])
def get_or_post(request: HttpRequest) -> HttpResponse:
    return json_response({"method": request.method})


class Urls:
    """An in-test URLconf (``ROOT_URLCONF`` may be any object with ``urlpatterns``)."""

    urlpatterns = [
        path("healthz", healthz),
        path("api/orders", create_order),
        path("api/orders/<uuid:order_id>", ok_view),
        path("api/things/<slug>/", ok_view),
        path("api/methods", get_or_post),
        path("api/", include([path("nested/<int:number>/parts/<str:part>", ok_view)])),
        path("api/boom", raising(RuntimeError(SECRET_TEXT))),
        path("api/gone", raising(Http404(SECRET_TEXT))),
        path("api/forbidden", raising(PermissionDenied(SECRET_TEXT))),
        path("api/conflict", raising(conflict("Email already taken"))),
        path("api/login", raising(unauthenticated())),
        path("api/unavailable", raising(ServiceUnavailableError("users", "ConnectError 10.0.0.7"))),
        path("pages/ok", ok_view),
        path("pages/gone", raising(Http404(SECRET_TEXT))),
        path("pages/boom", raising(RuntimeError(SECRET_TEXT))),
    ]


def with_match(view: View) -> View:
    """A stand-in for Django's handler: resolve against ``Urls`` (as Django does), then call."""

    def get_response(request: HttpRequest) -> HttpResponse:
        request.resolver_match = resolve(request.path_info, urlconf=Urls)
        return view(request)

    return get_response


# --- route_template -------------------------------------------------------------------------


def test_route_template_unmatched(rf: RequestFactory) -> None:
    assert route_template(rf.get("/api/nowhere")) == UNMATCHED_ROUTE


@pytest.mark.parametrize(
    ("url", "template"),
    [
        ("/api/orders", "/api/orders"),
        ("/api/orders/0b7e3c1e-94b4-4a8c-9a51-6a1c2f0e4d11", "/api/orders/{order_id}"),
        ("/api/things/a-slug/", "/api/things/{slug}/"),
        ("/api/nested/7/parts/wheel", "/api/nested/{number}/parts/{part}"),
        ("/healthz", "/healthz"),
    ],
)
def test_route_template_of_the_matched_pattern(rf: RequestFactory, url: str, template: str) -> None:
    request = rf.get(url)
    request.resolver_match = resolve(url, urlconf=Urls)
    assert route_template(request) == template


def test_route_template_without_a_route(rf: RequestFactory) -> None:
    request = rf.get("/api/x")
    request.resolver_match = ResolverMatch(ok_view, (), {}, route=None)
    assert route_template(request) == UNMATCHED_ROUTE


# --- problem_response -------------------------------------------------------------------------


def test_problem_response(rf: RequestFactory) -> None:
    problem = Problem(status=409, detail="Already there", headers={"Retry-After": "3"})
    response = problem_response(problem, rf.get("/api/orders"))
    body = problem_body(response, 409)
    assert body == {
        "type": "about:blank",
        "title": "Conflict",
        "status": 409,
        "detail": "Already there",
        "instance": "/api/orders",
    }
    assert response["Retry-After"] == "3"


def test_problem_response_keeps_an_explicit_instance(rf: RequestFactory) -> None:
    problem = Problem(status=404, instance="/api/orders/1")
    body = problem_body(problem_response(problem, rf.get("/api/other")), 404)
    assert body["instance"] == "/api/orders/1"


def test_problem_response_without_a_request() -> None:
    assert problem_body(problem_response(Problem(status=400)), 400)["instance"] is None


# --- json_body --------------------------------------------------------------------------------


def post(rf: RequestFactory, body: bytes | str, content_type: str) -> HttpRequest:
    # As a real client sends it: RequestFactory leaves CONTENT_TYPE out when the body is empty.
    return rf.generic(
        "POST", "/api/orders", data=body, content_type=content_type, CONTENT_TYPE=content_type
    )


def test_json_body_valid(rf: RequestFactory) -> None:
    body = {"customer": "c-1", "items": [{"name": "tea", "quantity": 2}]}
    for content_type in ("application/json", "application/json; charset=utf-8"):
        order = json_body(post(rf, json.dumps(body), content_type), Order)
        assert order == Order.model_validate(body)


@pytest.mark.parametrize(
    ("content_type", "named"),
    [
        ("text/plain", "text/plain"),
        ("application/x-www-form-urlencoded", "application/x-www-form-urlencoded"),
        ("", "none"),
    ],
)
def test_json_body_refuses_other_media_types(
    rf: RequestFactory, content_type: str, named: str
) -> None:
    with pytest.raises(ProblemError) as caught:
        json_body(post(rf, '{"customer": "c"}', content_type), Order)
    problem = caught.value.problem
    assert problem.status == 415
    assert problem.detail == f"Send the body as application/json, not {named}"


@pytest.mark.parametrize("body", [b"{not json", b"", b'{"customer": "c",}', b"\xff\xfe{}"])
def test_json_body_malformed(rf: RequestFactory, body: bytes, malformed_body_answer: Any) -> None:
    with pytest.raises(ProblemError) as caught:
        json_body(post(rf, body, "application/json"), Order)
    response = problem_response(caught.value.problem, post(rf, body, "application/json"))
    problem = problem_body(response, 422)
    assert {key: problem[key] for key in malformed_body_answer} == malformed_body_answer


def test_json_body_names_the_invalid_fields(rf: RequestFactory) -> None:
    body = {"customer": "", "items": [{"name": "tea", "quantity": 0}]}
    with pytest.raises(ProblemError) as caught:
        json_body(post(rf, json.dumps(body), "application/json"), Order)
    problem = problem_body(problem_response(caught.value.problem), 422)
    assert problem["type"] == VALIDATION
    assert problem["title"] == "Validation failed"
    assert problem["detail"] == "Invalid value for: customer, items.0.quantity"
    errors = {error["field"]: error for error in problem["errors"]}
    assert set(errors) == {"customer", "items.0.quantity"}
    assert errors["items.0.quantity"]["pointer"] == "#/items/0/quantity"
    assert errors["items.0.quantity"]["location"] == "body"
    assert errors["items.0.quantity"]["code"] == "greater_than"
    assert errors["customer"]["code"] == "string_too_short"


def test_json_body_not_an_object(rf: RequestFactory) -> None:
    with pytest.raises(ProblemError) as caught:
        json_body(post(rf, "[1, 2]", "application/json"), Order)
    problem = caught.value.problem
    assert (problem.status, problem.type) == (422, VALIDATION)
    assert [error.field for error in problem.errors] == [""]


def test_json_body_too_large_raises_django_s_error(rf: RequestFactory) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=16):
        request = post(rf, json.dumps({"customer": "x" * 100}), "application/json")
        with pytest.raises(RequestDataTooBig):
            json_body(request, Order)


def chunked(rf: RequestFactory, body: bytes, *, terminated: bool = True) -> HttpRequest:
    """A POST whose body came in chunks (no Content-Length), as gunicorn hands it on."""
    request = rf.generic(
        "POST", "/api/orders", content_type="application/json", CONTENT_TYPE="application/json"
    )
    request.META.pop("CONTENT_LENGTH", None)
    request.META["HTTP_TRANSFER_ENCODING"] = "chunked"
    request.META["wsgi.input"] = io.BytesIO(body)
    if terminated:
        request.META["wsgi.input_terminated"] = True
    return request


def test_json_body_reads_a_chunked_body(rf: RequestFactory) -> None:
    """Django itself reads a body without a Content-Length as empty."""
    body = {"customer": "c-1", "items": [{"name": "tea", "quantity": 2}]}
    assert json_body(chunked(rf, json.dumps(body).encode()), Order) == Order.model_validate(body)


def test_json_body_chunked_too_large_raises_django_s_error(rf: RequestFactory) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=16):
        request = chunked(rf, json.dumps({"customer": "x" * 100}).encode())
        with pytest.raises(RequestDataTooBig):
            json_body(request, Order)


def test_json_body_chunked_without_a_server_that_ends_it_is_411(rf: RequestFactory) -> None:
    with pytest.raises(ProblemError) as caught:
        json_body(chunked(rf, b'{"customer": "c"}', terminated=False), Order)
    assert caught.value.problem.status == 411


@pytest.mark.parametrize("name", ["NoMoreData", "InvalidChunkSize"])
def test_json_body_the_client_broke_off_is_a_400(rf: RequestFactory, name: str) -> None:
    """The server's read fails mid-body (gunicorn's own errors, the real classes): the client
    closed (NoMoreData) or broke its chunks (InvalidChunkSize), a 400 problem, not a 500."""
    from gunicorn.http import errors

    error = getattr(errors, name)(b"")

    class Broken(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise error

    request = chunked(rf, b"")
    request.META["wsgi.input"] = Broken()
    with pytest.raises(ProblemError) as caught:
        json_body(request, Order)
    assert caught.value.problem.status == 400
    assert caught.value.problem.title == "Incomplete request body"


def test_validation_error_names_the_location() -> None:
    class Query(BaseModel):
        limit: int = Field(le=100)

    with pytest.raises(ValidationError) as caught:
        Query.model_validate({"limit": 1000})
    error = validation_error(caught.value, location="query")
    assert isinstance(error, ProblemError)
    body = problem_body(problem_response(error.problem), 422)
    assert body["type"] == VALIDATION
    assert body["detail"] == "Invalid value for: limit"
    assert body["errors"] == [
        {
            "field": "limit",
            "location": "query",
            "detail": "Input should be less than or equal to 100",
            "code": "less_than_equal",
        }
    ]


# --- RequestContextMiddleware: ids, trace, access log -------------------------------------------


def test_request_id_is_echoed(rf: RequestFactory) -> None:
    response = RequestContextMiddleware(with_match(ok_view))(
        rf.get("/api/orders", headers={"X-Request-ID": "req-123.abc"})
    )
    assert response["X-Request-ID"] == "req-123.abc"
    assert json.loads(response.content)["request_id"] == "req-123.abc"


@pytest.mark.parametrize("header", [None, "has spaces", "x" * 129, "semi;colon"])
def test_request_id_made_when_missing_or_malformed(rf: RequestFactory, header: str | None) -> None:
    headers = {"X-Request-ID": header} if header is not None else {}
    response = RequestContextMiddleware(with_match(ok_view))(rf.get("/api/orders", headers=headers))
    request_id = response["X-Request-ID"]
    assert request_id != header
    assert HEX32.fullmatch(request_id)
    assert json.loads(response.content)["request_id"] == request_id


def test_trace_id_from_traceparent(rf: RequestFactory) -> None:
    response = RequestContextMiddleware(with_match(ok_view))(
        rf.get("/api/orders", headers={"traceparent": TRACEPARENT})
    )
    assert json.loads(response.content)["trace_id"] == TRACE_ID
    assert current_trace_id() is None  # put back after the request
    assert current_request_id() is None


@pytest.mark.parametrize("header", [None, "garbage", f"ff-{TRACE_ID}-00f067aa0ba902b7-01"])
def test_new_trace_id_otherwise(rf: RequestFactory, header: str | None) -> None:
    middleware = RequestContextMiddleware(with_match(ok_view))
    headers = {"traceparent": header} if header is not None else {}
    first = json.loads(middleware(rf.get("/api/orders", headers=headers)).content)["trace_id"]
    second = json.loads(middleware(rf.get("/api/orders", headers=headers)).content)["trace_id"]
    assert HEX32.fullmatch(first)
    assert first != second
    assert TRACE_ID not in (first, second)


def test_context_put_back_when_the_view_raises(rf: RequestFactory) -> None:
    middleware = RequestContextMiddleware(with_match(raising(RuntimeError("boom"))))
    with pytest.raises(RuntimeError):
        middleware(rf.get("/api/orders", headers={"traceparent": TRACEPARENT}))
    assert current_trace_id() is None
    assert current_request_id() is None


def test_access_log_line(rf: RequestFactory, log_stream: Any) -> None:
    RequestContextMiddleware(with_match(ok_view))(
        rf.get(
            "/api/orders/0b7e3c1e-94b4-4a8c-9a51-6a1c2f0e4d11",
            headers={"X-Request-ID": "req-1", "traceparent": TRACEPARENT},
        )
    )
    (line,) = log_stream.access()
    assert line["message"] == "request"
    assert line["method"] == "GET"
    assert line["route"] == "/api/orders/{order_id}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float | int)
    assert line["duration_ms"] >= 0
    assert line["request_id"] == "req-1"
    assert line["trace_id"] == TRACE_ID


def test_the_clock_starts_when_the_server_queued_the_request(
    rf: RequestFactory, log_stream: Any
) -> None:
    """gunicorn's worker puts the enqueue time in the environ: the wait for a thread counts."""
    queued = time.perf_counter() - 5.0  # as if it waited 5 s for a thread
    RequestContextMiddleware(with_match(ok_view))(
        rf.get("/api/orders/0b7e3c1e-94b4-4a8c-9a51-6a1c2f0e4d11", **{ENQUEUED_ENVIRON: queued})
    )
    (line,) = log_stream.access()
    assert line["duration_ms"] >= 5000


@pytest.mark.parametrize("value", ["1.5", None, float("inf")])
def test_an_enqueue_time_that_is_not_one_is_ignored(value: Any) -> None:
    assert enqueued_at({ENQUEUED_ENVIRON: value}) is None
    assert enqueued_at({}) is None


def test_access_log_unmatched_route(rf: RequestFactory, log_stream: Any) -> None:
    RequestContextMiddleware(lambda request: HttpResponseNotFound("<h1>Not Found</h1>"))(
        rf.post("/api/nowhere/123")
    )
    (line,) = log_stream.access()
    assert (line["method"], line["route"], line["status"]) == ("POST", UNMATCHED_ROUTE, 404)


@pytest.mark.parametrize("url", ["/healthz", "/readyz", "/metrics"])
def test_probes_and_metrics_not_logged(rf: RequestFactory, log_stream: Any, url: str) -> None:
    def never(request: HttpRequest) -> HttpResponse:
        raise AssertionError("the kit answers these itself, before any other middleware")

    response = RequestContextMiddleware(never)(rf.get(url, headers={"Host": "10.1.2.3"}))
    assert response["X-Request-ID"]
    assert log_stream.access() == []


# --- RequestContextMiddleware: error responses under /api/ -----------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 410, 429, 500, 502, 503])
def test_api_error_responses_become_problems(
    rf: RequestFactory, log_stream: Any, status: int
) -> None:
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse(f"<h1>error</h1><p>{SECRET_TEXT}</p>", status=status)

    response = RequestContextMiddleware(view)(rf.get("/api/orders", headers={"X-Request-ID": "r1"}))
    body = problem_body(response, status)
    assert body["type"] == "about:blank"
    assert body["instance"] == "/api/orders"
    assert SECRET_TEXT not in response.content.decode()
    assert response["X-Request-ID"] == "r1"
    (line,) = log_stream.access()
    assert line["status"] == status


def test_api_405_keeps_allow(rf: RequestFactory) -> None:
    response = RequestContextMiddleware(lambda request: HttpResponseNotAllowed(["GET", "POST"]))(
        rf.delete("/api/methods")
    )
    problem_body(response, 405)
    assert response["Allow"] == "GET, POST"


@pytest.mark.parametrize(
    ("status", "header", "value"),
    [
        (401, "WWW-Authenticate", 'Basic realm="polyframe"'),
        (503, "Retry-After", "30"),
        (429, "Retry-After", "5"),
    ],
)
def test_api_problem_keeps_the_headers_its_status_needs(
    rf: RequestFactory, status: int, header: str, value: str
) -> None:
    def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("no", status=status, headers={header: value})

    response = RequestContextMiddleware(view)(rf.get("/api/orders"))
    problem_body(response, status)
    assert response[header] == value


def test_api_problem_responses_pass_through(rf: RequestFactory) -> None:
    original = problem_response(conflict("Email already taken").problem, rf.get("/api/x"))
    response = RequestContextMiddleware(lambda request: original)(rf.get("/api/x"))
    assert response is original
    assert problem_body(response, 409)["detail"] == "Email already taken"


@pytest.mark.parametrize(
    "make",
    [
        lambda: json_response({"ok": True}),
        lambda: json_response({"ok": True}, status=201),
        lambda: HttpResponseRedirect("/api/elsewhere"),
        lambda: HttpResponse(status=204),
    ],
)
def test_api_success_untouched(rf: RequestFactory, make: Callable[[], HttpResponse]) -> None:
    original = make()
    content_type = original["Content-Type"]
    response = RequestContextMiddleware(lambda request: original)(rf.get("/api/orders"))
    assert response is original
    assert response["Content-Type"] == content_type


@pytest.mark.parametrize("url", ["/admin/nowhere", "/", "/apiary/x", "/api"])
def test_error_responses_outside_api_untouched(rf: RequestFactory, url: str) -> None:
    original = HttpResponseNotFound("<h1>Not Found</h1>")
    response = RequestContextMiddleware(lambda request: original)(rf.get(url))
    assert response is original
    assert response["Content-Type"].startswith("text/html")
    assert response.content == b"<h1>Not Found</h1>"
    assert response["X-Request-ID"]


# --- process_exception ---------------------------------------------------------------------------


def test_problem_error_becomes_its_problem(rf: RequestFactory) -> None:
    middleware = RequestContextMiddleware(with_match(ok_view))
    response = middleware.process_exception(rf.get("/api/login"), unauthenticated())
    assert response is not None
    body = problem_body(response, 401)
    assert body["type"] == UNAUTHENTICATED
    assert body["instance"] == "/api/login"
    assert response["WWW-Authenticate"] == 'Bearer realm="polyframe"'


def test_service_unavailable_becomes_503(rf: RequestFactory, log_stream: Any) -> None:
    middleware = RequestContextMiddleware(with_match(ok_view))
    response = middleware.process_exception(
        rf.get("/api/users"), ServiceUnavailableError("users", "ConnectError 10.0.0.7")
    )
    assert response is not None
    body = problem_body(response, 503)
    assert body["type"] == DEPENDENCY_UNAVAILABLE
    assert "users" in body["detail"]
    assert "10.0.0.7" not in response.content.decode()
    assert response["Retry-After"] == "2"
    (warning,) = [e for e in log_stream.entries() if e["logger"] == "service_kit.errors"]
    assert warning["level"] == "warning"
    assert (warning["peer"], warning["reason"]) == ("users", "ConnectError 10.0.0.7")


@pytest.mark.parametrize(
    ("exc", "status", "detail"),
    [
        (RequestDataTooBig(SECRET_TEXT), 413, "The request body is too large"),
        (Http404(SECRET_TEXT), 404, "Not Found"),
        (PermissionDenied(SECRET_TEXT), 403, "Forbidden"),
    ],
)
def test_django_exceptions_become_problems(
    rf: RequestFactory, exc: Exception, status: int, detail: str
) -> None:
    middleware = RequestContextMiddleware(with_match(ok_view))
    response = middleware.process_exception(rf.post("/api/orders"), exc)
    assert response is not None
    body = problem_body(response, status)
    assert body["detail"] == detail
    assert SECRET_TEXT not in response.content.decode()


def test_unhandled_exception_is_an_opaque_500(rf: RequestFactory, log_stream: Any) -> None:
    middleware = RequestContextMiddleware(with_match(ok_view))
    try:
        raise RuntimeError(SECRET_TEXT)
    except RuntimeError as exc:
        response = middleware.process_exception(rf.post("/api/orders"), exc)
    assert response is not None
    body = problem_body(response, 500)
    assert body["type"] == INTERNAL
    assert SECRET_TEXT not in response.content.decode()
    # The log has the secret, the client does not.
    log_stream.unhandled("POST", "/api/orders", "RuntimeError", SECRET_TEXT)


@pytest.mark.parametrize(
    "exc",
    [
        conflict("taken"),
        ServiceUnavailableError("users", "down"),
        RequestDataTooBig("big"),
        Http404("gone"),
        PermissionDenied("no"),
        RuntimeError("boom"),
    ],
)
def test_exceptions_outside_api_left_to_django(rf: RequestFactory, exc: Exception) -> None:
    middleware = RequestContextMiddleware(with_match(ok_view))
    assert middleware.process_exception(rf.get("/admin/audit/"), exc) is None


# --- through Django's own request handling ------------------------------------------------------


@pytest.fixture
def handler() -> Iterator[BaseHandler]:
    """Django's handler with the kit's middleware first, as admin-django configures it."""
    with override_settings(
        ROOT_URLCONF=Urls,
        MIDDLEWARE=["service_kit.django.RequestContextMiddleware"],
        DEBUG=False,
        DEBUG_PROPAGATE_EXCEPTIONS=False,
    ):
        handler = BaseHandler()
        handler.load_middleware()
        yield handler


def test_handler_success(rf: RequestFactory, handler: BaseHandler, log_stream: Any) -> None:
    response = handler.get_response(
        rf.get("/api/nested/3/parts/wheel", headers={"traceparent": TRACEPARENT})
    )
    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["trace_id"] == TRACE_ID
    assert body["kwargs"] == {"number": "3", "part": "wheel"}
    assert body["request_id"] == response["X-Request-ID"]
    (line,) = log_stream.access()
    assert (line["route"], line["status"], line["trace_id"]) == (
        "/api/nested/{number}/parts/{part}",
        200,
        TRACE_ID,
    )


def test_handler_json_body(rf: RequestFactory, handler: BaseHandler) -> None:
    good = {"customer": "c-1", "items": [{"name": "tea", "quantity": 1}]}
    created = handler.get_response(post(rf, json.dumps(good), "application/json"))
    assert created.status_code == 201
    assert json.loads(created.content) == good
    assert problem_body(handler.get_response(post(rf, "{", "application/json")), 422)["type"] == (
        MALFORMED_BODY
    )
    assert problem_body(handler.get_response(post(rf, "x", "text/plain")), 415)
    invalid = problem_body(
        handler.get_response(post(rf, json.dumps({"customer": "c"}), "application/json")), 422
    )
    assert [error["field"] for error in invalid["errors"]] == ["items"]


def test_handler_body_too_large(rf: RequestFactory, handler: BaseHandler) -> None:
    with override_settings(DATA_UPLOAD_MAX_MEMORY_SIZE=16):
        response = handler.get_response(
            post(rf, json.dumps({"customer": "x" * 100}), "application/json")
        )
    assert problem_body(response, 413)["detail"] == "The request body is too large"


@pytest.mark.parametrize(
    ("url", "status", "problem_type"),
    [
        ("/api/conflict", 409, "urn:polyframe:problem:conflict"),
        ("/api/login", 401, UNAUTHENTICATED),
        ("/api/unavailable", 503, DEPENDENCY_UNAVAILABLE),
        ("/api/gone", 404, "about:blank"),
        ("/api/forbidden", 403, "about:blank"),
        ("/api/boom", 500, INTERNAL),
        ("/api/nowhere", 404, "about:blank"),  # no URL pattern matched
    ],
)
def test_handler_api_errors_are_problems(
    rf: RequestFactory,
    handler: BaseHandler,
    log_stream: Any,
    url: str,
    status: int,
    problem_type: str,
) -> None:
    response = handler.get_response(
        rf.get(url, headers={"X-Request-ID": "req-9", "traceparent": TRACEPARENT})
    )
    body = problem_body(response, status)
    assert body["type"] == problem_type
    assert body["instance"] == url
    assert SECRET_TEXT not in response.content.decode()
    assert response["X-Request-ID"] == "req-9"
    (line,) = log_stream.access()
    assert line["status"] == status
    assert line["route"] == (UNMATCHED_ROUTE if url == "/api/nowhere" else url)
    if status == 500:
        (error,) = [e for e in log_stream.entries() if e["logger"] == "service_kit.errors"]
        assert (error["request_id"], error["trace_id"]) == ("req-9", TRACE_ID)


def test_handler_api_405(rf: RequestFactory, handler: BaseHandler) -> None:
    response = handler.get_response(rf.delete("/api/methods"))
    problem_body(response, 405)
    assert response["Allow"] == "GET, POST"


@pytest.mark.parametrize(("url", "status"), [("/pages/gone", 404), ("/nowhere", 404)])
def test_handler_pages_keep_django_s_404(
    rf: RequestFactory, handler: BaseHandler, url: str, status: int
) -> None:
    response = handler.get_response(rf.get(url))
    assert response.status_code == status
    assert response["Content-Type"].startswith("text/html")
    assert b"Not Found" in response.content
    assert response["X-Request-ID"]


def test_handler_pages_keep_django_s_500(
    rf: RequestFactory, handler: BaseHandler, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.CRITICAL, logger="django.request"):
        response = handler.get_response(rf.get("/pages/boom"))
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert SECRET_TEXT not in response.content.decode()


# --- health and json_response ---------------------------------------------------------------


def test_healthz(rf: RequestFactory) -> None:
    with override_settings(POLYFRAME_SERVICE_NAME="demo-admin"):
        response = healthz(rf.get("/healthz"))
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == {"status": "ok", "service": "demo-admin", "checks": {}}


def test_healthz_through_the_handler_is_not_logged(
    rf: RequestFactory, handler: BaseHandler, log_stream: Any
) -> None:
    response = handler.get_response(rf.get("/healthz"))
    assert response.status_code == 200
    assert json.loads(response.content)["status"] == "ok"
    assert log_stream.access() == []


def test_json_response_any_json_value() -> None:
    response = json_response([1, {"a": None}], status=202)
    assert response.status_code == 202
    assert response["Content-Type"] == "application/json"
    assert json.loads(response.content) == [1, {"a": None}]


# --- telemetry ------------------------------------------------------------------------------

DURATION = "http_server_request_duration_seconds"


def in_flight_view(request: HttpRequest, **kwargs: Any) -> HttpResponse:
    state = request.polyframe_cycle.state  # type: ignore[attr-defined]
    return json_response({"method": state.method, "kwargs": {k: str(v) for k, v in kwargs.items()}})


def status_view(request: HttpRequest, code: int) -> HttpResponse:
    return HttpResponse(status=code)


class TelemetryUrls:
    urlpatterns = [
        path("healthz", healthz),
        path("readyz", ok_view),  # stands in: the real one needs a database
        path("metrics", metrics_view),
        path("api/things/<int:thing_id>", in_flight_view),
        path("api/status/<int:code>", status_view),
        re_path(r"^files/(?P<name>[^/]+)/$", ok_view),
        path(
            "admin/",
            include(
                [
                    re_path(r"^(?P<app_label>auth|audit)/$", ok_view),
                    re_path(r"(?P<url>.*)$", ok_view),  # the admin's catch-all
                ]
            ),
        ),
    ]


@pytest.fixture
def instrumented(
    monkeypatch: pytest.MonkeyPatch, make_telemetry: Callable[..., Telemetry]
) -> Iterator[tuple[BaseHandler, Telemetry]]:
    """Django's handler with the kit's middleware, recording into a telemetry of its own."""
    telemetry = make_telemetry("django")
    monkeypatch.setattr(kit_django, "_telemetry", telemetry)
    with override_settings(
        ROOT_URLCONF=TelemetryUrls,
        MIDDLEWARE=["service_kit.django.RequestContextMiddleware"],
        DEBUG=False,
        DEBUG_PROPAGATE_EXCEPTIONS=False,
    ):
        handler = BaseHandler()
        handler.load_middleware()
        yield handler, telemetry


@pytest.mark.parametrize(
    ("url", "template"),
    [
        ("/admin/", "/admin/{url}"),
        ("/admin/no/such/page", "/admin/{url}"),
        ("/admin/audit/", "/admin/{app_label}/"),
        ("/files/report.pdf/", "/files/{name}/"),
    ],
)
def test_route_template_of_a_regex_pattern(rf: RequestFactory, url: str, template: str) -> None:
    request = rf.get(url)
    request.resolver_match = resolve(url, urlconf=TelemetryUrls)
    assert route_template(request) == template


def test_telemetry_records_a_request(
    rf: RequestFactory, instrumented: tuple[BaseHandler, Telemetry], samples: Any
) -> None:
    handler, telemetry = instrumented
    body = json.dumps({"name": "tea"}).encode()
    response = handler.get_response(
        rf.post("/api/things/7", data=body, content_type="application/json")
    )
    assert response.status_code == 200
    assert json.loads(response.content)["method"] == "POST"
    samples.assert_one_request(
        telemetry, "/api/things/{thing_id}", 200, sent=len(body), answered=len(response.content)
    )
    # No statement ran: the database part was still observed, with zero queries.
    route = {"service_name": telemetry.service, "http_route": "/api/things/{thing_id}"}
    assert samples.value("polyframe_db_queries_per_request_count", **route) == 1
    assert samples.value("polyframe_db_queries_per_request_sum", **route) == 0


def test_telemetry_records_the_problem_answers(
    rf: RequestFactory, instrumented: tuple[BaseHandler, Telemetry], samples: Any
) -> None:
    handler, telemetry = instrumented
    assert handler.get_response(rf.get("/api/nowhere")).status_code == 404
    assert handler.get_response(rf.get("/api/status/503")).status_code == 503
    found = samples.requests(telemetry.service)
    assert found == {("GET", UNMATCHED_ROUTE, "404"), ("GET", "/api/status/{code}", "503")}


def test_admin_catch_all_is_one_route(
    rf: RequestFactory, instrumented: tuple[BaseHandler, Telemetry], samples: Any
) -> None:
    handler, telemetry = instrumented
    for url in ("/admin/", "/admin/x/y", "/admin/users/42/change/"):
        handler.get_response(rf.get(url))
    assert samples.series(f"{DURATION}_count", service_name=telemetry.service) == [
        {
            "service_name": telemetry.service,
            "framework": "django",
            "http_request_method": "GET",
            "http_route": "/admin/{url}",
            "http_response_status_code": "200",
        }
    ]


def test_operational_paths_are_not_counted(
    rf: RequestFactory, instrumented: tuple[BaseHandler, Telemetry], samples: Any
) -> None:
    handler, telemetry = instrumented
    for url in ("/healthz", "/readyz", "/metrics"):
        # The kit's own views answer them (/readyz: 503 here, without migrations).
        assert handler.get_response(rf.get(url)).status_code in (200, 503)
    samples.assert_none_counted(telemetry.service)


def test_disabled_telemetry_records_nothing_and_metrics_still_answers(
    rf: RequestFactory,
    instrumented: tuple[BaseHandler, Telemetry],
    samples: Any,
    monkeypatch: pytest.MonkeyPatch,
    make_telemetry: Callable[..., Telemetry],
) -> None:
    handler, _ = instrumented
    telemetry = make_telemetry("django", enabled=False)
    monkeypatch.setattr(kit_django, "_telemetry", telemetry)
    assert handler.get_response(rf.get("/files/a/")).status_code == 200
    scrape = handler.get_response(rf.get("/metrics", headers={"Accept": "text/plain"}))
    assert scrape.status_code == 200
    assert scrape["Content-Type"].startswith("text/plain; version=0.0.4")
    samples.assert_none_counted(telemetry.service)


def test_metrics_view_serves_openmetrics_when_asked(
    rf: RequestFactory, instrumented: tuple[BaseHandler, Telemetry]
) -> None:
    handler, telemetry = instrumented
    handler.get_response(rf.get("/files/a/"))
    scrape = handler.get_response(
        rf.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    )
    assert scrape["Content-Type"].startswith("application/openmetrics-text")
    assert scrape.content.endswith(b"# EOF\n")
    assert f'service_name="{telemetry.service}"'.encode() in scrape.content


def test_label_cardinality_stays_bounded(
    rf: RequestFactory,
    instrumented: tuple[BaseHandler, Telemetry],
    samples: Any,
    odd_traffic: Any,
) -> None:
    """Hundreds of distinct raw paths and odd methods make a handful of series."""
    handler, telemetry = instrumented
    traffic = odd_traffic(20260303, statuses=[200, 204, 404, 418, 500, 599])
    paths = [
        "/api/things/{number}?q={token}",
        "/api/things/{token}",
        "/api/status/{status}?t={token}",
        "/files/{token}/",
        "/admin/{token}/change/",
        "/api/{token}",
        "/{token}",
    ]
    for method, url in traffic.requests(paths):
        handler.get_response(rf.generic(method, url))
    body = handler.get_response(rf.get("/metrics")).content.decode()
    series = samples.series(f"{DURATION}_count", service_name=telemetry.service)
    routes = {
        "/api/things/{thing_id}",
        "/api/status/{code}",
        "/files/{name}/",
        "/admin/{url}",
        UNMATCHED_ROUTE,
    }
    traffic.assert_bounded(series, routes, body, most=100)


def test_kit_middleware_put_back_in_front_of_opentelemetry_s() -> None:
    otel = "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
    kit = "service_kit.django.RequestContextMiddleware"
    common = "django.middleware.common.CommonMiddleware"
    with override_settings(MIDDLEWARE=[otel, kit, common]):
        kit_django._kit_middleware_first()
        assert list(settings.MIDDLEWARE) == [kit, otel, common]
    with override_settings(MIDDLEWARE=[otel, common]):  # a project without the kit's
        kit_django._kit_middleware_first()
        assert list(settings.MIDDLEWARE) == [otel, common]


@pytest.mark.parametrize("url", ["/healthz", "/metrics"])
def test_probes_and_scrapes_by_ip_pass_the_host_check(rf: RequestFactory, url: str) -> None:
    """Kubelet and Prometheus come by pod IP, which ALLOWED_HOSTS does not list."""
    with override_settings(
        ROOT_URLCONF=TelemetryUrls,
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=[
            "service_kit.django.RequestContextMiddleware",
            "django.middleware.common.CommonMiddleware",  # the host check
        ],
        DEBUG=False,
    ):
        handler = BaseHandler()
        handler.load_middleware()
        assert handler.get_response(rf.get(url, HTTP_HOST="10.42.0.17:8103")).status_code == 200
        refused = handler.get_response(rf.get("/api/things/1", HTTP_HOST="10.42.0.17:8103"))
    assert problem_body(refused, 400)
