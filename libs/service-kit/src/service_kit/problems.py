"""RFC 9457 problem details: the one error shape of all three services.

Every error answer is ``application/problem+json`` with ``type``, ``title``,
``status``, ``detail`` and ``instance``; validation failures add ``errors``,
a list of field errors that each name the offending field. Framework
adapters translate their own exceptions into :class:`Problem` and nothing
else builds error bodies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
#: Problem types are URNs: stable identifiers, not links that must resolve.
TYPE_PREFIX = "urn:polyframe:problem:"

# Problem types with a meaning of their own; a plain HTTP error is "about:blank".
VALIDATION = f"{TYPE_PREFIX}validation-error"
MALFORMED_BODY = f"{TYPE_PREFIX}malformed-body"
UNAUTHENTICATED = f"{TYPE_PREFIX}unauthenticated"
FORBIDDEN = f"{TYPE_PREFIX}forbidden"
NOT_FOUND = f"{TYPE_PREFIX}not-found"
CONFLICT = f"{TYPE_PREFIX}conflict"
DEPENDENCY_UNAVAILABLE = f"{TYPE_PREFIX}dependency-unavailable"
#: A request over one of the structural limits (service_kit.limits), its body size included.
INPUT_LIMIT = f"{TYPE_PREFIX}input-limit"
INTERNAL = f"{TYPE_PREFIX}internal-error"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: ``field`` is a dotted path (``items.0.quantity``)."""

    field: str
    detail: str
    location: str = "body"
    code: str | None = None

    def as_dict(self) -> dict[str, Any]:
        pointer = "/" + "/".join(self.field.split(".")) if self.field else ""
        body: dict[str, Any] = {
            "field": self.field,
            "location": self.location,
            "pointer": f"#{pointer}" if self.location == "body" else None,
            "detail": self.detail,
        }
        if self.code:
            body["code"] = self.code
        return {k: v for k, v in body.items() if v is not None}


@dataclass(slots=True)
class Problem:
    status: int
    title: str | None = None
    detail: str | None = None
    type: str = "about:blank"
    instance: str | None = None
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type,
            "title": self.title or status_title(self.status),
            "status": self.status,
            "detail": self.detail or status_title(self.status),
            "instance": self.instance,
        }
        if self.errors:
            body["errors"] = [error.as_dict() for error in self.errors]
        return body


class ProblemError(Exception):
    """Raise from application code to answer with a problem; adapters render it."""

    def __init__(
        self,
        status: int,
        detail: str | None = None,
        *,
        title: str | None = None,
        type: str = "about:blank",
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail or status_title(status))
        self.problem = Problem(
            status=status,
            title=title,
            detail=detail,
            type=type,
            errors=list(errors or []),
            headers=dict(headers or {}),
        )

    @classmethod
    def of(cls, problem: Problem) -> ProblemError:
        """Raise an already built problem."""
        error = cls(problem.status, problem.detail)
        error.problem = problem
        return error


def status_title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def field_errors(errors: Iterable[Mapping[str, Any]], location: str) -> list[FieldError]:
    """pydantic's errors (``exc.errors(include_url=False)``) of one part of the request."""
    return [
        FieldError(
            field=".".join(str(part) for part in error["loc"]),
            detail=error["msg"],
            location=location,
            code=error["type"],
        )
        for error in errors
    ]


def validation_problem(errors: list[FieldError], detail: str | None = None) -> Problem:
    names = ", ".join(sorted({e.field or e.location for e in errors})) or "the request"
    return Problem(
        status=422,
        title="Validation failed",
        detail=detail or f"Invalid value for: {names}",
        type=VALIDATION,
        errors=errors,
    )


def unauthenticated(
    detail: str = "Missing or invalid credentials", *, scheme: str = "Bearer"
) -> ProblemError:
    """401 with the challenge of the scheme the route expects (Bearer: users; Basic: services)."""
    return ProblemError(
        401,
        detail,
        type=UNAUTHENTICATED,
        headers={"WWW-Authenticate": f'{scheme} realm="polyframe"'},
    )


def forbidden(detail: str = "You are not allowed to do this") -> ProblemError:
    return ProblemError(403, detail, type=FORBIDDEN)


def not_found(detail: str = "Not found") -> ProblemError:
    return ProblemError(404, detail, type=NOT_FOUND)


def conflict(detail: str) -> ProblemError:
    return ProblemError(409, detail, type=CONFLICT)


def dependency_unavailable(detail: str, retry_after: int = 2) -> ProblemError:
    return ProblemError(
        503,
        detail,
        title="Dependency unavailable",
        type=DEPENDENCY_UNAVAILABLE,
        headers={"Retry-After": str(retry_after)},
    )


def database_unavailable() -> ProblemError:
    """503 when the service's own database cannot be reached (it retries by itself)."""
    return dependency_unavailable("The database is unavailable right now; try again shortly")


def internal_error() -> Problem:
    """What a client sees of an unhandled exception: nothing of its internals."""
    return Problem(
        status=500,
        title="Internal Server Error",
        detail="The server failed to handle this request; quote the request id when reporting it.",
        type=INTERNAL,
    )


def malformed_body(errors: list[FieldError] | None = None) -> Problem:
    """422 for a body that is not JSON at all (as opposed to JSON with invalid fields)."""
    problem = validation_problem(
        errors or [FieldError(field="", detail="The body is not valid JSON", code="json_invalid")],
        detail="The request body is not valid JSON",
    )
    problem.type = MALFORMED_BODY
    problem.title = "Malformed request body"
    return problem


def incomplete_body() -> Problem:
    """400 for a body the server could not read to its end: the client closed the connection
    or broke its chunked encoding mid-body (the server's read raised). The client's fault,
    never a 5xx: anyone could burn the error budget with half-sent bodies."""
    return Problem(
        status=400,
        title="Incomplete request body",
        detail=(
            "The request body ended before its declared end (the connection closed or its "
            "chunked encoding broke); send the whole body again"
        ),
        type=MALFORMED_BODY,
    )


def unsupported_media_type(received: str | None) -> Problem:
    """415 for a body that is not ``application/json``."""
    return Problem(
        status=415, detail=f"Send the body as application/json, not {received or 'none'}"
    )


def body_too_large(limit: int | None = None) -> Problem:
    """413 for a body over ``limit`` bytes (None: the limit the framework enforced)."""
    if limit is None:
        return Problem(status=413, detail="The request body is too large", type=INPUT_LIMIT)
    return Problem(status=413, detail=f"The request body exceeds {limit} bytes", type=INPUT_LIMIT)


def input_limit_exceeded(status: int, detail: str) -> Problem:
    """A request over a structural limit (:mod:`service_kit.limits`): ``detail`` names the
    limit and its value, never the input."""
    return Problem(status=status, title="Input limit exceeded", detail=detail, type=INPUT_LIMIT)


#: Headers of a framework's own error response that its problem+json replacement keeps:
#: the ones its status is meaningless without (RFC 9110 sections 15.5.6, 11.6.1, 10.2.3).
KEPT_ERROR_HEADERS = frozenset({"allow", "www-authenticate", "retry-after"})


def framework_error(
    status: int, detail: str | None = None, headers: Iterable[tuple[str, str]] = ()
) -> Problem:
    """A framework's own error answer (404, 405, …) as a problem, with the headers it needs."""
    problem = Problem(status=status, detail=detail)
    for name, value in headers:
        if name.lower() in KEPT_ERROR_HEADERS:
            problem.headers[name] = value
    return problem


def invalid_field(field: str, detail: str, *, location: str = "body") -> ProblemError:
    """A 422 naming one field, for checks made after schema validation."""
    return ProblemError.of(
        validation_problem([FieldError(field=field, detail=detail, location=location)])
    )


#: JSON Schema of a problem body, for the services' OpenAPI documents.
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        # anyOf rather than a list of types: the same in JSON Schema and OpenAPI 3.1, and
        # flask-openapi3's Schema model refuses a list of types.
        "instance": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "location", "detail"],
                "properties": {
                    "field": {"type": "string"},
                    "location": {"type": "string"},
                    "pointer": {"type": "string"},
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                },
            },
        },
    },
}


def openapi_problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json answers."""
    return {
        status: {
            "description": f"{status_title(status)} (RFC 9457 problem details)",
            "content": {PROBLEM_CONTENT_TYPE: {"schema": PROBLEM_SCHEMA}},
        }
        for status in statuses
    }
