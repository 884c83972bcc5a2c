"""Service-to-service credentials: Basic name:secret and X-Acting-For."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from service_kit.credentials import (
    authenticate_service,
    basic_credential,
    is_basic,
)
from service_kit.principal import Principal
from service_kit.problems import FORBIDDEN, UNAUTHENTICATED, ProblemError

TRUSTED = {
    "legacy-flask": SecretStr("flask-secret-5e1a"),
    "admin-django": SecretStr("django-secret-0c4d"),
}
MAY_ACT = ("admin-django",)


def raw_basic(text: str) -> str:
    return "Basic " + base64.b64encode(text.encode()).decode()


def authenticate(authorization: str | None, acting_for: str | None = None) -> Principal:
    return authenticate_service(authorization, acting_for, trusted=TRUSTED, may_act=MAY_ACT)


def test_basic_credential_shape() -> None:
    header = basic_credential("legacy-flask", "flask-secret-5e1a")
    assert header == raw_basic("legacy-flask:flask-secret-5e1a")
    assert is_basic(header)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Basic abc", True),
        ("basic abc", True),
        ("BASIC abc", True),
        ("Bearer abc", False),
        ("", False),
        (None, False),
        ("Basicabc", False),
    ],
)
def test_is_basic(value: str | None, expected: bool) -> None:
    assert is_basic(value) is expected


def test_right_credential_accepted() -> None:
    caller = authenticate(basic_credential("legacy-flask", "flask-secret-5e1a"))
    assert caller == Principal(service="legacy-flask", acting_for=None)


def test_secret_may_contain_a_colon() -> None:
    trusted = {"svc": SecretStr("a:b:c")}
    caller = authenticate_service(basic_credential("svc", "a:b:c"), None, trusted=trusted)
    assert caller.service == "svc"


def test_scheme_is_case_insensitive() -> None:
    header = basic_credential("legacy-flask", "flask-secret-5e1a").replace("Basic", "basic")
    assert authenticate(header).service == "legacy-flask"


def assert_401(authorization: str | None, acting_for: str | None = None) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        authenticate(authorization, acting_for)
    problem = caught.value.problem
    assert problem.status == 401
    assert problem.type == UNAUTHENTICATED
    assert "WWW-Authenticate" in problem.headers
    return caught.value


@pytest.mark.parametrize(
    "authorization",
    [
        basic_credential("legacy-flask", "wrong-secret"),
        basic_credential("legacy-flask", "flask-secret-5e1"),  # a prefix
        basic_credential("legacy-flask", "flask-secret-5e1aX"),  # longer
        basic_credential("legacy-flask", ""),
        basic_credential("legacy-flask", "django-secret-0c4d"),  # another service's secret
        basic_credential("LEGACY-FLASK", "flask-secret-5e1a"),  # names are exact
    ],
)
def test_wrong_secret_rejected(authorization: str) -> None:
    error = assert_401(authorization)
    assert "flask-secret-5e1a" not in str(error.problem.as_dict())


@pytest.mark.parametrize(
    "authorization",
    [
        basic_credential("orders-flask", "flask-secret-5e1a"),
        basic_credential("", "flask-secret-5e1a"),
        # The unknown-name reference is 32 NULs; a caller sending exactly that gets nothing.
        basic_credential("nobody", "\0" * 32),
    ],
)
def test_unknown_service_rejected(authorization: str) -> None:
    assert_401(authorization)


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic bGVnYWN5LWZsYXNr=extra",
        "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
        "Bearer " + base64.b64encode(b"legacy-flask:flask-secret-5e1a").decode(),
        "Digest username=legacy-flask",
    ],
)
def test_malformed_header_rejected(authorization: str | None) -> None:
    assert_401(authorization)


def test_name_without_secret_rejected() -> None:
    assert_401(raw_basic("legacy-flask"))


def test_acting_for_accepted_from_allowed_service() -> None:
    caller = authenticate(
        basic_credential("admin-django", "django-secret-0c4d"), "alice@example.org"
    )
    assert caller == Principal(service="admin-django", acting_for="alice@example.org")


def test_empty_acting_for_is_ignored() -> None:
    caller = authenticate(basic_credential("legacy-flask", "flask-secret-5e1a"), "")
    assert caller.acting_for is None


def test_acting_for_refused_from_other_service() -> None:
    with pytest.raises(ProblemError) as caught:
        authenticate(basic_credential("legacy-flask", "flask-secret-5e1a"), "alice")
    assert caught.value.problem.status == 403
    assert caught.value.problem.type == FORBIDDEN


def test_acting_for_refused_when_nobody_may_act() -> None:
    with pytest.raises(ProblemError) as caught:
        authenticate_service(
            basic_credential("admin-django", "django-secret-0c4d"), "alice", trusted=TRUSTED
        )
    assert caught.value.problem.status == 403


def test_credential_checked_before_acting_for() -> None:
    # A wrong secret is a 401 even when the acting name is also wrong.
    assert_401(basic_credential("admin-django", "nope"), "bad\nname")


@pytest.mark.parametrize(
    "acting_for",
    [
        "bad name",
        "alice\r\nX-Injected: 1",
        "alice\n",  # a trailing newline must not slip past the shape check
        "a" * 151,
        "<script>",
        "alice;drop",
        "é",
    ],
)
def test_malformed_acting_name_is_400(acting_for: str) -> None:
    with pytest.raises(ProblemError) as caught:
        authenticate(basic_credential("admin-django", "django-secret-0c4d"), acting_for)
    assert caught.value.problem.status == 400
    assert "X-Acting-For" in (caught.value.problem.detail or "")


@pytest.mark.parametrize("acting_for", ["a", "a" * 150, "first.last+tag@example-1.org", "x_y"])
def test_well_formed_acting_names(acting_for: str) -> None:
    caller = authenticate(basic_credential("admin-django", "django-secret-0c4d"), acting_for)
    assert caller.acting_for == acting_for
