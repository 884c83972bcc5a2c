"""The Flask adapter: problem+json for every error, request ids, body limit, access log, health.

Two tiny apps: a plain ``flask.Flask`` with :func:`install`, and a flask-openapi3
app whose request validation answers through :func:`validation_error_response`.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import jsonschema  # type: ignore[import-untyped]
import pytest
from flask import Flask, Response, abort, request
from flask.testing import FlaskClient
from flask_openapi3.blueprint import APIBlueprint
from flask_openapi3.openapi import OpenAPI
from pydantic import BaseModel, Field, ValidationError, create_model
from werkzeug.test import TestResponse

from service_kit import metrics
from service_kit.client import ServiceUnavailableError
from service_kit.context import current_request_id
from service_kit.cycle import ENQUEUED_ENVIRON
from service_kit.flask import (
    UNMATCHED_ROUTE,
    add_health_routes,
    install,
    route_template,
    validation_error_response,
)
from service_kit.health import CheckFailedError, SyncCheck
from service_kit.problems import (
    CONFLICT,
    DEPENDENCY_UNAVAILABLE,
    INTERNAL,
    MALFORMED_BODY,
    PROBLEM_CONTENT_TYPE,
    PROBLEM_SCHEMA,
    UNAUTHENTICATED,
    VALIDATION,
    conflict,
    invalid_field,
    openapi_problem_responses,
    status_title,
    unauthenticated,
)
from service_kit.telemetry import Telemetry
from service_kit.tracecontext import propagate, trace_id_from

MAX_BODY = 64
SECRET_TEXT = "db password is hunter2"
ORDER_ID = uuid.UUID("0b7e3c1e-94b4-4a8c-9a51-6a1c2f0e4d11")


# --- the plain Flask app --------------------------------------------------------------


def build_app(checks: Mapping[str, SyncCheck] | None = None) -> Flask:
    app = Flask(__name__)
    install(app, max_body_bytes=MAX_BODY)
    add_health_routes(app, "demo", lambda: checks or {})

    @app.post("/items")
    def create_item() -> tuple[dict[str, Any], int]:
        return {"received": request.get_json(silent=True)}, 201

    @app.get("/api/orders/<uuid:order_id>")
    def get_order(order_id: uuid.UUID) -> dict[str, str]:
        return {"id": str(order_id)}

    @app.get("/boom")
    def boom() -> NoReturn:
        raise RuntimeError(SECRET_TEXT)

    @app.get("/missing-arg")
    def missing_arg() -> dict[str, str]:
        return {"value": request.args["required"]}  # BadRequestKeyError: a 400

    @app.get("/abort/<int:status>")
    def aborting(status: int) -> NoReturn:
        abort(status, f"aborted with {status}")

    @app.get("/conflict")
    def conflicting() -> NoReturn:
        raise conflict("Email already taken")

    @app.get("/invalid")
    def invalid() -> NoReturn:
        raise invalid_field("start", "must be before end", location="query")

    @app.get("/login-required")
    def login_required() -> NoReturn:
        raise unauthenticated()

    @app.get("/unavailable")
    def unavailable() -> NoReturn:
        raise ServiceUnavailableError("users", "ConnectError to 10.0.0.7")

    @app.get("/request-id")
    def request_id() -> dict[str, str | None]:
        return {"request_id": current_request_id()}

    return app


@pytest.fixture
def client() -> FlaskClient:
    return build_app().test_client()


def assert_problem(response: TestResponse, status: int) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    body: dict[str, Any] = json.loads(response.get_data())
    assert body["status"] == status
    assert {"type", "title", "status", "detail", "instance"} <= set(body)
    jsonschema.validate(body, PROBLEM_SCHEMA)
    assert response.headers["X-Request-ID"]
    return body


# --- success path ---------------------------------------------------------------------


def test_success_is_plain_json(client: FlaskClient) -> None:
    response = client.post("/items", json={"name": "a"})
    assert response.status_code == 201
    assert response.headers["Content-Type"] == "application/json"
    assert response.get_json() == {"received": {"name": "a"}}
    assert response.headers["X-Request-ID"]


def test_json_suffix_media_type_accepted(client: FlaskClient) -> None:
    response = client.post(
        "/items", data=b'{"a": 1}', headers={"Content-Type": "application/merge-patch+json"}
    )
    assert response.status_code == 201
    assert response.get_json() == {"received": {"a": 1}}


def test_body_method_without_body_reaches_the_view(client: FlaskClient) -> None:
    response = client.post("/items")
    assert response.status_code == 201
    assert response.get_json() == {"received": None}


def test_get_with_odd_content_type_is_not_checked(client: FlaskClient) -> None:
    response = client.get("/request-id", data=b"x=1", content_type="text/plain")
    assert response.status_code == 200


# --- request bodies -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
def test_non_json_body_is_415(client: FlaskClient, method: str) -> None:
    response = client.open("/items", method=method, data=b"name=a", content_type="text/plain")
    body = assert_problem(response, 415)
    assert body["title"] == "Unsupported Media Type"
    assert body["detail"] == "Send the body as application/json, not text/plain"
    assert body["instance"] == "/items"


def test_form_body_is_415(client: FlaskClient) -> None:
    body = assert_problem(client.post("/items", data={"name": "a"}), 415)
    assert "application/x-www-form-urlencoded" in body["detail"]


def test_malformed_json_is_422(client: FlaskClient, malformed_body_answer: Any) -> None:
    response = client.post(
        "/items", data=b'{"name": "a",', headers={"Content-Type": "application/json"}
    )
    body = assert_problem(response, 422)
    assert {key: body[key] for key in malformed_body_answer} == malformed_body_answer
    assert body["instance"] == "/items"


def test_body_at_limit_accepted(client: FlaskClient) -> None:
    prefix, suffix = b'{"name":"', b'"}'
    content = prefix + b"x" * (MAX_BODY - len(prefix) - len(suffix)) + suffix
    assert len(content) == MAX_BODY
    response = client.post("/items", data=content, content_type="application/json")
    assert response.status_code == 201


def test_body_too_large_is_413(client: FlaskClient, log_stream: Any) -> None:
    content = json.dumps({"name": "x" * 200}).encode()
    response = client.post("/items", data=content, content_type="application/json")
    body = assert_problem(response, 413)
    assert body["title"] == status_title(413)
    assert body["detail"] == "The request body is too large"
    assert body["instance"] == "/items"
    (access,) = [e for e in log_stream.entries() if e["logger"] == "service_kit.access"]
    assert access["status"] == 413


def _chunked(client: FlaskClient, content: bytes) -> Any:
    """A POST whose body arrives in chunks, without a Content-Length (as gunicorn hands it)."""
    return client.post(
        "/items",
        input_stream=io.BytesIO(content),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def test_a_chunked_body_too_large_is_413(client: FlaskClient) -> None:
    response = _chunked(client, json.dumps({"name": "x" * 200}).encode())
    assert assert_problem(response, 413)["detail"] == "The request body is too large"


def test_a_chunked_body_is_read_and_checked_like_any_other(client: FlaskClient) -> None:
    assert _chunked(client, b'{"name": "a"}').status_code == 201
    assert assert_problem(_chunked(client, b'{"name": '), 422)["type"] == MALFORMED_BODY


def _broken_reads() -> list[Exception]:
    """What gunicorn's read of a chunked body raises (the real classes): the client closed
    mid-body (NoMoreData, an IOError) or broke its chunk framing (a ParseException)."""
    from gunicorn.http.errors import InvalidChunkSize, NoMoreData

    return [NoMoreData(b""), InvalidChunkSize(b"zz")]


class _BrokenChunks(io.BytesIO):
    """gunicorn's chunked body that breaks, as a gthread worker hands it on."""

    def __init__(self, error: Exception) -> None:
        super().__init__()
        self.error = error

    def read(self, size: int | None = -1) -> bytes:
        raise self.error


@pytest.mark.parametrize("error", _broken_reads(), ids=lambda e: type(e).__name__)
def test_a_body_the_client_broke_off_is_a_400_not_a_500(
    client: FlaskClient, log_stream: Any, error: Exception
) -> None:
    response = client.post(
        "/items",
        input_stream=_BrokenChunks(error),
        headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    body = assert_problem(response, 400)
    assert body["type"] == MALFORMED_BODY
    assert body["title"] == "Incomplete request body"
    assert not [e for e in log_stream.entries() if e["level"] == "error"]


def test_install_sets_the_body_limit() -> None:
    app = Flask(__name__)
    install(app, max_body_bytes=123)
    assert app.config["MAX_CONTENT_LENGTH"] == 123


# --- HTTP errors ----------------------------------------------------------------------


def test_unknown_route_is_404_problem(client: FlaskClient) -> None:
    response = client.get("/no/such/route")
    body = assert_problem(response, 404)
    assert body["title"] == "Not Found"
    assert body["type"] == "about:blank"
    assert body["instance"] == "/no/such/route"
    assert b"<html" not in response.get_data().lower()


def test_converter_mismatch_is_404(client: FlaskClient) -> None:
    assert_problem(client.get("/api/orders/not-a-uuid"), 404)


def test_wrong_method_is_405_with_allow(client: FlaskClient) -> None:
    response = client.delete("/items")
    body = assert_problem(response, 405)
    assert body["title"] == "Method Not Allowed"
    allowed = {method.strip() for method in response.headers["Allow"].split(",")}
    assert "POST" in allowed
    assert "DELETE" not in allowed


def test_werkzeug_bad_request_is_400_problem(client: FlaskClient) -> None:
    response = client.get("/missing-arg")
    body = assert_problem(response, 400)
    assert body["title"] == "Bad Request"
    assert "required" not in body["detail"]  # the missing key is not echoed outside debug
    assert b"<html" not in response.get_data().lower()


@pytest.mark.parametrize("status", [400, 403, 404, 409, 418, 429])
def test_abort_keeps_status_and_description(client: FlaskClient, status: int) -> None:
    body = assert_problem(client.get(f"/abort/{status}"), status)
    assert body["detail"] == f"aborted with {status}"
    assert body["instance"] == f"/abort/{status}"


def test_problem_error(client: FlaskClient) -> None:
    body = assert_problem(client.get("/conflict"), 409)
    assert body == {
        "type": CONFLICT,
        "title": "Conflict",
        "status": 409,
        "detail": "Email already taken",
        "instance": "/conflict",
    }


def test_invalid_field_from_view(client: FlaskClient) -> None:
    body = assert_problem(client.get("/invalid"), 422)
    assert body["type"] == VALIDATION
    assert body["errors"] == [
        {"field": "start", "location": "query", "detail": "must be before end"}
    ]


def test_problem_headers_are_sent(client: FlaskClient) -> None:
    response = client.get("/login-required")
    body = assert_problem(response, 401)
    assert body["type"] == UNAUTHENTICATED
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="polyframe"'


def test_service_unavailable_is_503(client: FlaskClient, log_stream: Any) -> None:
    response = client.get("/unavailable", headers={"X-Request-ID": "rid-503"})
    body = assert_problem(response, 503)
    assert body["type"] == DEPENDENCY_UNAVAILABLE
    assert body["title"] == "Dependency unavailable"
    assert "users" in body["detail"]
    assert response.headers["Retry-After"] == "2"
    assert "10.0.0.7" not in response.get_data(as_text=True)
    (warning,) = [e for e in log_stream.entries() if e["logger"] == "service_kit.errors"]
    assert warning["level"] == "warning"
    assert warning["peer"] == "users"
    assert warning["reason"] == "ConnectError to 10.0.0.7"
    assert warning["request_id"] == "rid-503"


# --- unhandled exceptions -------------------------------------------------------------


def test_unhandled_exception_is_opaque_500(client: FlaskClient, log_stream: Any) -> None:
    response = client.get("/boom", headers={"X-Request-ID": "trace-me-1"})
    body = assert_problem(response, 500)
    assert body["type"] == INTERNAL
    assert body["instance"] == "/boom"
    text = response.get_data(as_text=True)
    for leak in (SECRET_TEXT, "hunter2", "Traceback", "RuntimeError"):
        assert leak not in text
    assert response.headers["X-Request-ID"] == "trace-me-1"

    logged = log_stream.unhandled("GET", "/boom", "RuntimeError", SECRET_TEXT)  # log only
    assert logged["request_id"] == "trace-me-1"
    (access,) = log_stream.access()
    assert access["status"] == 500
    assert access["request_id"] == "trace-me-1"


def test_unhandled_exception_in_testing_mode_is_still_a_problem() -> None:
    app = build_app()
    app.config["TESTING"] = True  # would make Flask re-raise without install()'s settings
    assert_problem(app.test_client().get("/boom"), 500)


# --- request ids ----------------------------------------------------------------------


@pytest.mark.parametrize("incoming", ["abc-123", "a.b:c_d", "0" * 128])
def test_well_formed_request_id_echoed(client: FlaskClient, incoming: str) -> None:
    response = client.get("/request-id", headers={"X-Request-ID": incoming})
    assert response.headers["X-Request-ID"] == incoming
    assert response.get_json() == {"request_id": incoming}
    assert current_request_id() is None  # the context is reset after the request


@pytest.mark.parametrize("incoming", ["x" * 129, "a b", "<script>", "é", "a/b"])
def test_malformed_request_id_replaced(client: FlaskClient, incoming: str) -> None:
    response = client.get("/request-id", headers={"X-Request-ID": incoming})
    replaced = response.headers["X-Request-ID"]
    assert replaced != incoming
    assert len(replaced) == 32
    assert response.get_json() == {"request_id": replaced}


def test_request_id_generated_when_absent(client: FlaskClient) -> None:
    first = client.get("/request-id").headers["X-Request-ID"]
    second = client.get("/request-id").headers["X-Request-ID"]
    assert first != second
    assert len(first) == 32


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/no/such/route", 404), ("DELETE", "/items", 405), ("GET", "/boom", 500)],
)
def test_request_id_on_problem_answers(
    client: FlaskClient, method: str, path: str, status: int
) -> None:
    response = client.open(path, method=method, headers={"X-Request-ID": "rid-err"})
    assert response.status_code == status
    assert response.headers.getlist("X-Request-ID") == ["rid-err"]
    assert current_request_id() is None


# --- route templates and the access log -----------------------------------------------


@pytest.mark.parametrize(
    ("rule", "path", "template"),
    [
        ("/api/orders/<uuid:order_id>", f"/api/orders/{ORDER_ID}", "/api/orders/{order_id}"),
        ("/api/things/<name>", "/api/things/x", "/api/things/{name}"),
        ("/a/<int:n>/b/<path:rest>", "/a/1/b/c/d", "/a/{n}/b/{rest}"),
        ("/c/<string(length=2):code>", "/c/ab", "/c/{code}"),
        ("/k/<any(red, blue):kind>", "/k/red", "/k/{kind}"),
        ("/plain", "/plain", "/plain"),
    ],
)
def test_route_template(rule: str, path: str, template: str) -> None:
    app = Flask(__name__)
    app.add_url_rule(rule, "view", lambda **_: "")
    with app.test_request_context(path):
        assert route_template() == template


def test_route_template_unmatched() -> None:
    app = Flask(__name__)
    with app.test_request_context("/nowhere"):
        assert route_template() == UNMATCHED_ROUTE


def test_access_log_line(client: FlaskClient, log_stream: Any) -> None:
    client.get(f"/api/orders/{ORDER_ID}", headers={"X-Request-ID": "rid-1"})
    client.get(f"/api/orders/{uuid.uuid4()}")
    client.post("/items", json={"a": 1})
    client.get("/no/such/route")
    client.delete("/items")
    client.get("/healthz")
    client.get("/readyz")
    access = [e for e in log_stream.entries() if e["logger"] == "service_kit.access"]
    assert [(e["method"], e["route"], e["status"]) for e in access] == [
        ("GET", "/api/orders/{order_id}", 200),
        ("GET", "/api/orders/{order_id}", 200),
        ("POST", "/items", 201),
        ("GET", UNMATCHED_ROUTE, 404),
        ("DELETE", UNMATCHED_ROUTE, 405),
    ]
    first = access[0]
    assert first["message"] == "request"
    assert first["request_id"] == "rid-1"
    assert isinstance(first["duration_ms"], float | int)
    assert first["duration_ms"] >= 0
    assert str(ORDER_ID) not in json.dumps(access)  # ids stay out of the route label


def test_the_clock_starts_when_the_server_queued_the_request(
    client: FlaskClient, log_stream: Any
) -> None:
    """gunicorn's worker puts the enqueue time in the environ: the wait for a thread counts."""
    queued = time.perf_counter() - 5.0  # as if it waited 5 s for a thread
    client.get(f"/api/orders/{ORDER_ID}", environ_overrides={ENQUEUED_ENVIRON: queued})
    (line,) = log_stream.access()
    assert line["duration_ms"] >= 5000


# --- health ---------------------------------------------------------------------------


def test_healthz_never_runs_readiness() -> None:
    def failing() -> str | None:
        raise CheckFailedError("down")

    response = build_app({"db": failing}).test_client().get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "service": "demo", "checks": {}}


def test_readyz_ok() -> None:
    response = build_app({"db": lambda: "sqlite"}).test_client().get("/readyz")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["service"] == "demo"
    assert body["checks"]["db"]["status"] == "ok"
    assert body["checks"]["db"]["detail"] == "sqlite"


def test_readyz_names_the_failing_check(failing_checks: Any) -> None:
    response = build_app(failing_checks.checks()).test_client().get("/readyz")
    failing_checks.assert_reported(
        response.status_code,
        response.headers["Cache-Control"],
        response.get_json(),
        response.get_data(as_text=True),
    )


def test_readiness_is_asked_per_request() -> None:
    calls: list[int] = []

    def readiness() -> Mapping[str, SyncCheck]:
        calls.append(1)
        return {}

    app = Flask(__name__)
    install(app)
    add_health_routes(app, "demo", readiness)
    client = app.test_client()
    client.get("/readyz")
    client.get("/readyz")
    client.get("/healthz")
    assert len(calls) == 2


# --- flask-openapi3 request validation ------------------------------------------------


class WidgetCreate(BaseModel):
    name: str = Field(min_length=1)
    quantity: int = Field(gt=0)


class WidgetQuery(BaseModel):
    limit: int = Field(default=10, ge=1, le=100)


class WidgetPath(BaseModel):
    widget_id: int = Field(gt=0)


class WidgetHeaders(BaseModel):
    x_tenant: str = Field(pattern=r"^[a-z]+$")


def build_openapi_app() -> OpenAPI:
    app = OpenAPI(
        __name__,
        validation_error_status=422,
        validation_error_callback=validation_error_response,
    )
    install(app, max_body_bytes=MAX_BODY)
    bp = APIBlueprint("widgets", __name__, url_prefix="/api/widgets")

    @bp.post("")
    def create_widget(body: WidgetCreate, query: WidgetQuery) -> tuple[dict[str, Any], int]:
        return {"name": body.name, "quantity": body.quantity, "limit": query.limit}, 201

    @bp.get("/<widget_id>")
    def get_widget(path: WidgetPath) -> dict[str, int]:
        return {"id": path.widget_id}

    @bp.get("/tenant")
    def tenant(header: WidgetHeaders) -> dict[str, str]:
        return {"tenant": header.x_tenant}

    app.register_api(bp)
    return app


@pytest.fixture
def api() -> FlaskClient:
    return build_openapi_app().test_client()


def test_openapi_valid_request(api: FlaskClient) -> None:
    response = api.post("/api/widgets?limit=5", json={"name": "bolt", "quantity": 3})
    assert response.status_code == 201
    assert response.get_json() == {"name": "bolt", "quantity": 3, "limit": 5}
    assert api.get("/api/widgets/7").get_json() == {"id": 7}


def test_openapi_invalid_body_field(api: FlaskClient, quantity_error: dict[str, str]) -> None:
    response = api.post("/api/widgets", json={"name": "bolt", "quantity": 0})
    body = assert_problem(response, 422)
    assert body["type"] == VALIDATION
    assert body["title"] == "Validation failed"
    assert body["detail"] == "Invalid value for: quantity"
    assert body["instance"] == "/api/widgets"
    (error,) = body["errors"]
    assert {key: error[key] for key in quantity_error} == quantity_error
    assert error["detail"]


def test_openapi_several_body_fields(api: FlaskClient) -> None:
    body = assert_problem(api.post("/api/widgets", json={"name": "", "quantity": "many"}), 422)
    assert sorted(error["field"] for error in body["errors"]) == ["name", "quantity"]
    assert {error["location"] for error in body["errors"]} == {"body"}
    assert body["detail"] == "Invalid value for: name, quantity"


def test_openapi_missing_body(api: FlaskClient) -> None:
    body = assert_problem(api.post("/api/widgets"), 422)
    assert body["type"] == VALIDATION
    assert [error["location"] for error in body["errors"]] == ["body"]


def test_openapi_invalid_query_field(api: FlaskClient) -> None:
    response = api.post("/api/widgets?limit=1000", json={"name": "bolt", "quantity": 1})
    body = assert_problem(response, 422)
    assert body["errors"] == [
        {
            "field": "limit",
            "location": "query",
            "detail": body["errors"][0]["detail"],
            "code": "less_than_equal",
        }
    ]
    assert "pointer" not in body["errors"][0]


def test_openapi_invalid_path_field(api: FlaskClient) -> None:
    body = assert_problem(api.get("/api/widgets/abc"), 422)
    (error,) = body["errors"]
    assert error["field"] == "widget_id"
    assert error["location"] == "path"
    assert error["code"] == "int_parsing"


def test_openapi_invalid_header(api: FlaskClient) -> None:
    body = assert_problem(api.get("/api/widgets/tenant", headers={"X-Tenant": "NOPE1"}), 422)
    (error,) = body["errors"]
    assert error["field"] == "x_tenant"
    assert error["location"] == "header"
    assert api.get("/api/widgets/tenant", headers={"X-Tenant": "acme"}).status_code == 200


def test_openapi_malformed_json_caught_before_validation(api: FlaskClient) -> None:
    response = api.post("/api/widgets", data=b"{", content_type="application/json")
    body = assert_problem(response, 422)
    assert body["type"] == MALFORMED_BODY


def test_openapi_non_json_body_is_415(api: FlaskClient) -> None:
    response = api.post("/api/widgets", data=b"name=bolt", content_type="text/plain")
    assert_problem(response, 415)


def test_openapi_access_log_and_request_id(api: FlaskClient, log_stream: Any) -> None:
    response = api.get("/api/widgets/abc", headers={"X-Request-ID": "rid-val"})
    assert response.headers["X-Request-ID"] == "rid-val"
    (access,) = [e for e in log_stream.entries() if e["logger"] == "service_kit.access"]
    assert (access["route"], access["status"]) == ("/api/widgets/{widget_id}", 422)


class _Model(BaseModel):
    value: int


@pytest.mark.parametrize(
    ("model_name", "location"),
    [
        ("OrderQuery", "query"),
        ("OrderPath", "path"),
        ("OrderHeaders", "header"),
        ("OrderCreate", "body"),
        ("Order", "body"),
        ("QueryOrder", "body"),  # only the suffix counts
    ],
)
def test_validation_error_location_from_model_name(model_name: str, location: str) -> None:
    model = create_model(model_name, __base__=_Model)
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"value": "x"})
    app = Flask(__name__)
    with app.test_request_context("/somewhere"):
        response = validation_error_response(caught.value)
    assert response.status_code == 422
    assert response.headers["Content-Type"] == PROBLEM_CONTENT_TYPE
    body = json.loads(response.get_data())
    assert body["instance"] == "/somewhere"
    assert body["errors"][0]["field"] == "value"
    assert body["errors"][0]["location"] == location
    assert body["errors"][0]["code"] == "int_parsing"


def test_validation_error_nested_field_path() -> None:
    class Line(BaseModel):
        quantity: int = Field(gt=0)

    class OrderCreate(BaseModel):
        items: list[Line]

    with pytest.raises(ValidationError) as caught:
        OrderCreate.model_validate({"items": [{"quantity": 1}, {"quantity": 0}]})
    with Flask(__name__).test_request_context("/orders"):
        body = json.loads(validation_error_response(caught.value).get_data())
    (error,) = body["errors"]
    assert error["field"] == "items.1.quantity"
    assert error["pointer"] == "#/items/1/quantity"
    assert "https://errors.pydantic.dev" not in json.dumps(body)


def test_openapi_document_lists_problem_responses() -> None:
    app = OpenAPI(
        __name__,
        responses=dict(openapi_problem_responses(404, 415)),
        validation_error_status=422,
        validation_error_callback=validation_error_response,
    )
    install(app)

    @app.get("/things/<thing_id>")
    def get_thing(path: WidgetPath) -> dict[str, int]:
        return {"id": path.widget_id}

    operation = app.api_doc["paths"]["/things/{thing_id}"]["get"]
    for status in ("404", "415"):
        schema = operation["responses"][status]["content"][PROBLEM_CONTENT_TYPE]["schema"]
        assert schema["required"] == ["type", "title", "status", "detail", "instance"]
    assert "422" in operation["responses"]


def test_openapi_blueprint_responses_accept_the_problem_schema() -> None:
    app = OpenAPI(
        __name__, validation_error_status=422, validation_error_callback=validation_error_response
    )
    install(app)
    responses: dict[Any, Any] = openapi_problem_responses(404, 422)
    bp = APIBlueprint("docs", __name__, url_prefix="/api/docs", abp_responses=responses)

    @bp.get("/<widget_id>")
    def get_widget(path: WidgetPath) -> dict[str, int]:
        return {"id": path.widget_id}

    app.register_api(bp)
    documented = app.api_doc["paths"]["/api/docs/{widget_id}"]["get"]["responses"]
    for status in ("404", "422"):
        schema = documented[status]["content"][PROBLEM_CONTENT_TYPE]["schema"]
        assert schema["properties"]["instance"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}


# --- telemetry ------------------------------------------------------------------------------

DURATION = "http_server_request_duration_seconds"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
OPENMETRICS = "application/openmetrics-text; version=1.0.0"


def _not_ready() -> str:
    raise CheckFailedError("not yet")


def build_instrumented_app(telemetry: Telemetry, readiness: Any = None) -> Flask:
    app = Flask(__name__)
    install(app, max_body_bytes=1024, telemetry=telemetry)
    check = readiness.check if readiness is not None else _not_ready
    add_health_routes(app, "demo", lambda: {"db": check})
    in_flight = {"service_name": telemetry.service, "framework": telemetry.framework}

    @app.post("/things/<int:thing_id>")
    def create_thing(thing_id: int) -> tuple[dict[str, Any], int]:
        active = metrics.REGISTRY.get_sample_value(
            "http_server_active_requests", {**in_flight, "http_request_method": "POST"}
        )
        return {"id": thing_id, "active": active}, 201

    @app.get("/things/<int:thing_id>")
    def get_thing(thing_id: int) -> dict[str, int]:
        return {"id": thing_id}

    @app.route("/status/<int:code>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    def status(code: int) -> Response:
        return Response(status=code)

    @app.get("/boom")
    def boom() -> NoReturn:
        raise RuntimeError(SECRET_TEXT)

    @app.get("/outgoing")
    def outgoing() -> dict[str, str]:
        headers: dict[str, str] = {}
        propagate(headers)  # what the kit's client adds to a call to a peer
        return headers

    return app


def test_telemetry_records_a_request(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask")
    client = build_instrumented_app(telemetry).test_client()
    body = json.dumps({"name": "tea", "quantity": 2}).encode()
    response = client.post("/things/7", data=body, content_type="application/json")
    assert response.status_code == 201
    assert response.json == {"id": 7, "active": 1.0}  # in flight while the view ran
    samples.assert_one_request(
        telemetry, "/things/{thing_id}", 201, sent=len(body), answered=len(response.data)
    )


def test_telemetry_records_errors_once_under_their_route(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask")
    client = build_instrumented_app(telemetry).test_client()
    assert client.get("/boom").status_code == 500
    assert client.get("/things/not-a-number").status_code == 404
    assert client.delete("/things/3").status_code == 405
    assert (
        client.post("/things/1", data=b"x" * 2048, content_type="application/json").status_code
        == 413
    )
    found = samples.requests(telemetry.service)
    assert found == {
        ("GET", "/boom", "500"),
        ("GET", UNMATCHED_ROUTE, "404"),
        ("DELETE", UNMATCHED_ROUTE, "405"),
        ("POST", "/things/{thing_id}", "413"),
    }
    assert samples.value(f"{DURATION}_count", service_name=telemetry.service) == 4
    assert samples.value("http_server_active_requests", service_name=telemetry.service) == 0


def test_operational_paths_are_not_counted(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask")
    client = build_instrumented_app(telemetry).test_client()
    for path in ("/healthz", "/readyz", "/metrics"):
        client.get(path)
    samples.assert_none_counted(telemetry.service)


def test_disabled_telemetry_records_nothing_and_metrics_still_answers(
    make_telemetry: Callable[..., Telemetry], samples: Any
) -> None:
    telemetry = make_telemetry("flask", enabled=False)
    client = build_instrumented_app(telemetry).test_client()
    assert client.get("/things/3").status_code == 200
    scrape = client.get("/metrics")
    assert scrape.status_code == 200
    assert scrape.content_type.startswith("text/plain; version=0.0.4")
    assert f'service_name="{telemetry.service}"' not in scrape.text
    samples.assert_none_counted(telemetry.service)


def test_metrics_route_serves_both_formats(make_telemetry: Callable[..., Telemetry]) -> None:
    telemetry = make_telemetry("flask")
    client = build_instrumented_app(telemetry).test_client()
    client.get("/things/3")
    classic = client.get("/metrics")
    openmetrics = client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert classic.content_type.startswith("text/plain; version=0.0.4")
    assert openmetrics.content_type.startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    for response in (classic, openmetrics):
        assert f'service_name="{telemetry.service}"' in response.text


def test_exemplar_points_to_the_request_s_trace(
    make_telemetry: Callable[..., Telemetry], spans: Any
) -> None:
    telemetry = make_telemetry("flask")
    client = build_instrumented_app(telemetry).test_client()
    spans.clear()
    client.get("/things/3", headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"})
    scrape = client.get("/metrics", headers={"Accept": OPENMETRICS}).text
    (line,) = [
        line
        for line in scrape.splitlines()
        if line.startswith(f"{DURATION}_bucket")
        and f'service_name="{telemetry.service}"' in line
        and " # {" in line
    ]
    assert f'# {{trace_id="{TRACE_ID}"}}' in line
    (server,) = [s for s in spans.get_finished_spans() if s.attributes.get("http.route")]
    # The route label of the metrics, not Werkzeug's rule (``/things/<int:thing_id>``).
    assert server.attributes["http.route"] == "/things/{thing_id}"
    assert server.name == "GET /things/{thing_id}"
    assert format(server.context.trace_id, "032x") == TRACE_ID


def test_cold_start_recorded_on_the_first_passing_readyz(
    make_telemetry: Callable[..., Telemetry],
    samples: Any,
    readiness: Any,
    server_age: Callable[[float], None],
) -> None:
    telemetry = make_telemetry("flask")
    server_age(2.25)
    client = build_instrumented_app(telemetry, readiness).test_client()
    assert client.get("/readyz").status_code == 503
    assert samples.series("polyframe_cold_start_seconds", service_name=telemetry.service) == []
    readiness.ready = True
    assert client.get("/readyz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert samples.value("polyframe_cold_start_seconds", service_name=telemetry.service) == 2.25


def test_label_cardinality_stays_bounded(
    make_telemetry: Callable[..., Telemetry], samples: Any, odd_traffic: Any
) -> None:
    """Hundreds of distinct raw paths, odd methods and statuses make a handful of series."""
    telemetry = make_telemetry("flask")
    client = build_instrumented_app(telemetry).test_client()
    traffic = odd_traffic(20260302)
    for method, path in traffic.requests():
        client.open(path, method=method)
    body = client.get("/metrics").text
    series = samples.series(f"{DURATION}_count", service_name=telemetry.service)
    routes = {"/things/{thing_id}", "/status/{code}", UNMATCHED_ROUTE}
    traffic.assert_bounded(series, routes, body, most=60)
    assert {labels["http_response_status_code"] for labels in series} >= {"_OTHER", "599", "418"}


def test_a_request_without_traceparent_is_one_trace_in_log_span_and_call(
    make_telemetry: Callable[..., Telemetry], spans: Any, log_stream: Any
) -> None:
    client = build_instrumented_app(make_telemetry("flask")).test_client()
    spans.clear()
    answer = client.get("/outgoing")
    (server,) = [s for s in spans.get_finished_spans() if s.name == "GET /outgoing"]
    trace_id = format(server.context.trace_id, "032x")
    (access,) = log_stream.access()
    assert (access["trace_id"], access["span_id"]) == (
        trace_id,
        format(server.context.span_id, "016x"),
    )
    assert trace_id_from(answer.json["traceparent"]) == trace_id


def test_a_query_that_is_not_utf8_is_no_500() -> None:
    """Found by polyframe-fuzz (tools/polyframe-fuzz/regressions/legacy-flask/fixed): raw
    bytes in the query (WSGI hands them on as latin-1 text) made Werkzeug's ``request.args``
    raise UnicodeDecodeError, a 500. They reach the app percent-encoded."""
    app = build_app()

    @app.get("/args")
    def args() -> dict[str, Any]:
        return {"args": request.args.to_dict(flat=False), "query": request.query_string.decode()}

    response = app.test_client().get(
        "/args", environ_overrides={"QUERY_STRING": "a=\xd9\xdf&b=%41"}
    )
    assert response.status_code == 200
    assert response.json == {"args": {"a": ["%D9%DF"], "b": ["A"]}, "query": "a=%D9%DF&b=%41"}
