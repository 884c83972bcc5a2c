"""The audit trail's OpenAPI 3.1 document, made from the code that serves it.

Request bodies, query parameters and answers are the pydantic models of
:mod:`admin_django.audit.schemas` that the views validate with and answer through; error
answers are the kit's problem+json (:func:`service_kit.problems.openapi_problem_responses`), with
the statuses the views and the kit's middleware really give. Nothing is written
twice: a field added to a model is in the document, and the tests check the views'
real answers against it. ``GET /api/audit/openapi.json`` serves it, to anyone (like
the users and orders services' documents: it describes, it grants nothing).
"""

from __future__ import annotations

import functools
import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from admin_django.audit.schemas import BatchRecorded, EventBatch, EventListQuery, EventPage
from service_kit.problems import PROBLEM_CONTENT_TYPE, PROBLEM_SCHEMA, openapi_problem_responses

PREFIX = "/api/audit"
EVENTS = f"{PREFIX}/events"
DOCUMENT = f"{PREFIX}/openapi.json"
_REF = "#/components/schemas/{model}"
JSON = "application/json"

#: Errors of every operation: no or a wrong credential, not allowed, a request line over
#: gunicorn's limit (refused as a problem before Django sees it), the database down.
COMMON_ERRORS = (401, 403, 414, 503)
#: Errors of an operation that reads a JSON body (the kit's ``json_body``, Django's limit).
BODY_ERRORS = (413, 415, 422)


def _problems(*statuses: int) -> dict[str, Any]:
    """The kit's problem+json answers, their schema once in the components (``Problem``)."""
    problem = {"$ref": _REF.format(model="Problem")}
    return {
        str(status): {**answer, "content": {PROBLEM_CONTENT_TYPE: {"schema": problem}}}
        for status, answer in openapi_problem_responses(*statuses).items()
    }


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """``str | None`` as a query parameter: absent is the ``None``; a value is never null."""
    options = schema.get("anyOf")
    if options is None:
        return schema
    kept = [option for option in options if option.get("type") != "null"]
    rest = {key: value for key, value in schema.items() if key not in ("anyOf", "default")}
    if len(kept) == 1:
        return {**rest, **kept[0]}
    return {**rest, "anyOf": kept}


def query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    """The fields of a query model as OpenAPI parameters (``in: query``)."""
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    parameters = []
    for name, field_schema in schema["properties"].items():
        described = {key: value for key, value in field_schema.items() if key != "title"}
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": _without_null(described),
            }
        )
    return parameters


def _json(reference: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": reference}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document (built once per process; a copy is what callers should change)."""
    models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (EventBatch, "validation"),
        (EventPage, "serialization"),
        (BatchRecorded, "serialization"),
    ]
    refs, definitions = models_json_schema(models, ref_template=_REF)
    ref = {model: refs[(model, mode)] for model, mode in models}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Polyframe audit trail",
            "version": "0.1.0",
            "description": (
                "Every change in the platform, once: producers post batches (idempotent "
                "by event id), staff and services read the trail."
            ),
        },
        "paths": {
            EVENTS: {
                "get": {
                    "operationId": "list_audit_events",
                    "summary": "Filter the trail, oldest first (staff by session, services)",
                    "tags": ["audit"],
                    "parameters": query_parameters(EventListQuery),
                    "security": [{"service": []}, {"session": []}],
                    "responses": {
                        "200": _json(ref[EventPage], "A page of events and the next cursor"),
                        **_problems(*COMMON_ERRORS, 422),
                    },
                },
                "post": {
                    "operationId": "record_audit_events",
                    "summary": "Record a batch of events (producer services)",
                    "tags": ["audit"],
                    "requestBody": {
                        "required": True,
                        "content": {JSON: {"schema": ref[EventBatch]}},
                    },
                    "security": [{"service": []}],
                    "responses": {
                        "201": _json(ref[BatchRecorded], "At least one event was new"),
                        "200": _json(ref[BatchRecorded], "Every event was recorded before"),
                        **_problems(*COMMON_ERRORS, *BODY_ERRORS),
                    },
                },
            }
        },
        "components": {
            "schemas": {**definitions.get("$defs", {}), "Problem": PROBLEM_SCHEMA},
            "securitySchemes": {
                "service": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "A trusted service: its name and its credential",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": settings.SESSION_COOKIE_NAME,
                    "description": "A staff member logged in to the support console",
                },
            },
        },
    }


@require_safe
def openapi_view(_request: HttpRequest) -> HttpResponse:
    """``GET /api/audit/openapi.json`` (anyone)."""
    return HttpResponse(json.dumps(openapi_document()), content_type=JSON)
