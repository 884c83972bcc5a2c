"""schemathesis against each service's OpenAPI document, through the ingress.

For every operation of the three documents (users ``/api/users/openapi.json``, orders
``/api/orders/openapi.json``, audit ``/api/audit/openapi.json``) schemathesis generates
requests from the document itself, schema-valid ones (positive) and schema-violating ones
(negative), sends them through Traefik with the credentials the operation's rule names
(a user's token, a service's credential, a service acting for a staff member), and checks
every answer: never a 5xx; a status the document declares for the operation, with a
declared content type, a body that matches the declared schema, the declared headers;
and invalid input refused with a 4xx.

Bounded and reproducible for CI: :data:`EXAMPLES` requests per operation and mode,
derandomized (the same requests on every run, no example database), no deadline, no
shrinking (a failure is reported with its curl command as generated). Not vacuous: every
operation of every document must have an entry in :data:`CALLERS` and must have been sent
requests, every authenticated operation must have been answered something other than 401
(the credentials worked), and the reads and the order creation must have succeeded at
least once. Counts are reported in the e2e measurements.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.e2e

#: Requests per operation and generation mode (an operation without any input has one);
#: ``E2E_SCHEMATHESIS_EXAMPLES`` asks for more (a deeper run by hand; still reproducible).
EXAMPLES = int(os.environ.get("E2E_SCHEMATHESIS_EXAMPLES", "50"))
REQUEST_TIMEOUT = 15.0
STAFF = "e2e-schemathesis-staff"

DOCUMENTS = {
    "users-fastapi": "/api/users/openapi.json",
    "legacy-flask": "/api/orders/openapi.json",
    "admin-django": "/api/audit/openapi.json",
}

#: Who calls each operation: the caller its rule names (README's route tables). An
#: operation missing here fails the test: a new route needs its caller decided.
CALLERS = {
    ("POST", "/api/users/register"): "anonymous",
    ("POST", "/api/users/login"): "anonymous",
    ("GET", "/api/users/.well-known/jwks.json"): "anonymous",
    ("GET", "/api/users/me"): "user",
    ("GET", "/api/users"): "service",
    ("GET", "/api/users/{user_id}"): "service",
    ("POST", "/api/users/{user_id}/deactivate"): "acting-service",
    ("POST", "/api/users/{user_id}/reactivate"): "acting-service",
    ("GET", "/api/orders"): "user",
    ("POST", "/api/orders"): "user",
    ("GET", "/api/orders/{order_id}"): "user",
    ("POST", "/api/orders/{order_id}/cancel"): "user",
    ("POST", "/api/orders/{order_id}/refund"): "acting-service",
    ("GET", "/api/audit/events"): "reader",
    ("POST", "/api/audit/events"): "producer",
}
#: Operations that must have succeeded at least once (status), so a run that was refused
#: everything (credentials, a broken generator) cannot pass.
MUST_SUCCEED = {
    ("GET", "/api/users/me"): 200,
    ("GET", "/api/users"): 200,
    ("GET", "/api/orders"): 200,
    ("POST", "/api/orders"): 201,
    ("GET", "/api/audit/events"): 200,
}
#: The service credential each kind of caller uses (who trusts whom: README).
SERVICE_OF = {
    ("users-fastapi", "service"): "admin-django",
    ("users-fastapi", "acting-service"): "admin-django",
    ("legacy-flask", "acting-service"): "admin-django",
    ("admin-django", "reader"): "legacy-flask",
    ("admin-django", "producer"): "users-fastapi",
}

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
]
HYPOTHESIS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.data_too_large,
    ],
)
CONFIG = schemathesis.Config.from_dict(
    {
        # The document's own authentication parameters are not generated: each request
        # carries the real credential of its caller instead.
        "generation": {"with-security-parameters": False},
        # Any 4xx refuses invalid input (schemathesis' default list lacks 413 and 414, which
        # the services give for a body or a request line over their limits); 5xx never does.
        "checks": {"negative_data_rejection": {"expected-statuses": ["4xx"]}},
    }
)


@pytest.fixture(scope="module")
def member_token(platform: Any, register: Any, log_in: Any) -> str:
    with httpx.Client(base_url=platform.base_url, timeout=REQUEST_TIMEOUT) as client:
        account = register(client)
        token: str = log_in(client, account.email, account.password)
        return token


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    with requests.Session() as http:
        yield http


def _has_inputs(operation: Any) -> bool:
    return any(True for _ in operation.iter_parameters()) or len(operation.body) > 0


def _exchange(
    operation: Any,
    mode: GenerationMode,
    *,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    sent: Counter[tuple[str, str]],
    statuses: Counter[int],
) -> str | None:
    """Send ``operation`` its generated requests in ``mode`` and check every answer; the
    failure schemathesis reports (with a curl command to reproduce it), or None."""

    @HYPOTHESIS
    @given(case=operation.as_strategy(generation_mode=mode))
    def exchange(case: Any) -> None:
        response = case.call(
            base_url=base_url,
            session=session,
            headers=headers,
            timeout=REQUEST_TIMEOUT,
            allow_redirects=False,
        )
        sent[(operation.label, mode.value)] += 1
        statuses[response.status_code] += 1
        case.validate_response(
            response,
            checks=CHECKS,
            headers=headers,
            transport_kwargs={"base_url": base_url, "session": session},
        )

    try:
        exchange()
    except (Exception, FailureGroup) as exc:  # every operation is tried, then all reported
        return f"{operation.label} ({mode.value}):\n{exc}"
    return None


@pytest.mark.parametrize("service", list(DOCUMENTS))
def test_every_answer_conforms_to_the_document(
    service: str,
    platform: Any,
    member_token: str,
    service_headers: Callable[..., dict[str, str]],
    session: requests.Session,
    report_measurement: Callable[[str, str], None],
) -> None:
    document = httpx.get(f"{platform.base_url}{DOCUMENTS[service]}", timeout=REQUEST_TIMEOUT)
    assert document.status_code == 200, document.text
    assert document.headers["content-type"].startswith("application/json")
    schema = schemathesis.openapi.from_dict(document.json(), config=CONFIG)

    def credentials(caller: str) -> dict[str, str]:
        if caller == "anonymous":
            return {}
        if caller == "user":
            return {"Authorization": f"Bearer {member_token}"}
        acting_for = STAFF if caller == "acting-service" else None
        return service_headers(SERVICE_OF[(service, caller)], acting_for)

    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"schemathesis cannot read an operation: {result.err()}"
        operations.append(result.ok())
    labels = {(op.method.upper(), op.path) for op in operations}
    assert labels, f"{DOCUMENTS[service]} documents no operation"
    unknown = labels - set(CALLERS)
    assert not unknown, f"operations without a caller in CALLERS: {sorted(unknown)}"

    sent: Counter[tuple[str, str]] = Counter()
    statuses: dict[tuple[str, str], Counter[int]] = defaultdict(Counter)
    failures: list[str] = []
    started = time.monotonic()
    for operation in operations:
        key = (operation.method.upper(), operation.path)
        modes = [GenerationMode.POSITIVE]
        if _has_inputs(operation):
            modes.append(GenerationMode.NEGATIVE)
        for mode in modes:
            failure = _exchange(
                operation,
                mode,
                base_url=platform.base_url,
                session=session,
                headers=credentials(CALLERS[key]),
                sent=sent,
                statuses=statuses[key],
            )
            if failure is not None:
                failures.append(failure)
            assert sent[(operation.label, mode.value)] > 0, (
                f"schemathesis sent no {mode.value} request to {operation.label}"
            )
    elapsed = time.monotonic() - started

    total = sum(sent.values())
    report_measurement(
        f"schemathesis {service}",
        f"{total} requests over {len(operations)} operations in {elapsed:.1f}s; "
        + ", ".join(f"{label} {mode}: {count}" for (label, mode), count in sorted(sent.items())),
    )
    assert not failures, f"{len(failures)} operation(s) failed:\n\n" + "\n\n".join(failures)
    for key, counts in statuses.items():
        if CALLERS[key] != "anonymous":
            assert set(counts) != {401}, f"{key}: every answer was 401, the credential failed"
        expected = MUST_SUCCEED.get(key)
        if expected is not None:
            assert counts[expected] > 0, f"{key} never answered {expected}: {dict(counts)}"


def test_every_document_declares_the_problems_the_services_answer(platform: Any) -> None:
    """413, 415 and 422 where a body is read, 503 everywhere (the database can be down), and
    every declared error as problem+json with the shared shape."""
    for path in DOCUMENTS.values():
        document = httpx.get(f"{platform.base_url}{path}", timeout=REQUEST_TIMEOUT).json()
        assert document["openapi"].startswith("3.1"), path
        for template, item in document["paths"].items():
            for method, operation in item.items():
                label = f"{method.upper()} {template}"
                responses = operation["responses"]
                needed = {"422", "503"} | ({"413", "415"} if "requestBody" in operation else set())
                assert needed <= responses.keys(), (label, sorted(responses))
                for status, answer in responses.items():
                    if int(status) < 400:
                        continue
                    content = answer.get("content", {})
                    assert list(content) == ["application/problem+json"], (label, status)
                    problem = _resolve(document, content["application/problem+json"]["schema"])
                    assert {"type", "title", "status", "detail", "instance"} <= set(
                        problem["required"]
                    ), (label, status)


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    reference = schema.get("$ref")
    if reference is None:
        return schema
    target: Any = document
    for part in reference.removeprefix("#/").split("/"):
        target = target[part]
    resolved: dict[str, Any] = target
    return resolved


def test_the_audit_document_is_served_to_anyone(platform: Any) -> None:
    """Like the users and orders documents: it describes the API, it grants nothing."""
    response = httpx.get(f"{platform.base_url}/api/audit/openapi.json", timeout=REQUEST_TIMEOUT)
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert set(paths["/api/audit/events"]) == {"get", "post"}
