"""Staff and services reading users; an acting service (de)activating them."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import datetime

import pytest

USERS = "/api/users"


def _cursor(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


async def _walk(api, headers: dict[str, str], **params: object) -> tuple[list[dict], list[int]]:
    """Follow ``next_cursor`` to the end; return every item and each page's size."""
    items: list[dict] = []
    sizes: list[int] = []
    cursor: str | None = None
    for _ in range(50):  # a runaway loop fails instead of hanging
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await api.client.get(USERS, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        sizes.append(len(page["items"]))
        cursor = page.get("next_cursor")
        if cursor is None:
            return items, sizes
    pytest.fail("pagination did not end")


# --- listing: who may ---------------------------------------------------------------------------


async def test_list_users_as_member_is_403(api) -> None:
    token = await api.member_token()

    response = await api.client.get(USERS, headers=api.bearer(token))

    api.problem(response, 403, "forbidden")


async def test_list_users_as_staff_is_200(api) -> None:
    member = await api.register()
    token = await api.staff_token()

    response = await api.client.get(USERS, headers=api.bearer(token))

    assert response.status_code == 200, response.text
    page = response.json()
    emails = {item["email"] for item in page["items"]}
    assert member["email"] in emails
    assert {item["role"] for item in page["items"]} == {"member", "staff"}
    assert page["next_cursor"] is None
    assert all("password" not in key for item in page["items"] for key in item)


@pytest.mark.parametrize("service", ["admin-django", "legacy-flask"])
async def test_list_users_with_a_service_credential_is_200(api, service) -> None:
    member = await api.register()

    response = await api.client.get(USERS, headers=api.service(service))

    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [member["id"]]


async def test_list_users_with_a_wrong_service_secret_is_401(api) -> None:
    response = await api.client.get(
        USERS, headers=api.service("admin-django", secret=api.service_secrets["legacy-flask"])
    )

    body = api.problem(response, 401, "unauthenticated")
    assert "service credential" in body["detail"]


async def test_list_users_with_an_unknown_service_is_401(api) -> None:
    response = await api.client.get(USERS, headers=api.service("mallory", secret="s3cr3t-value"))

    api.problem(response, 401, "unauthenticated")


async def test_list_users_with_a_malformed_basic_credential_is_401(api) -> None:
    response = await api.client.get(USERS, headers={"Authorization": "Basic !!!not-base64!!!"})

    api.problem(response, 401, "unauthenticated")


async def test_list_users_anonymously_is_401(api) -> None:
    response = await api.client.get(USERS)

    api.problem(response, 401, "unauthenticated")
    assert response.headers["www-authenticate"]


# --- listing: pages -----------------------------------------------------------------------------


async def test_cursor_pagination_walks_every_user_once_in_a_stable_order(api) -> None:
    created = [(await api.register())["id"] for _ in range(5)]
    headers = api.service("admin-django")

    items, sizes = await _walk(api, headers, limit=2)

    ids = [item["id"] for item in items]
    assert sizes == [2, 2, 1]
    assert len(ids) == len(set(ids)) == 5
    assert set(ids) == set(created)
    # The documented order: (created_at, id), and the same again on a second walk.
    keys = [(datetime.fromisoformat(i["created_at"]), uuid.UUID(i["id"]).hex) for i in items]
    assert keys == sorted(keys)
    again, _ = await _walk(api, headers, limit=2)
    assert [item["id"] for item in again] == ids
    # One big page holds the same users in the same order.
    whole, sizes = await _walk(api, headers, limit=100)
    assert [item["id"] for item in whole] == ids
    assert sizes == [5]


async def test_cursor_pagination_sees_a_user_created_mid_walk_once(api) -> None:
    for _ in range(3):
        await api.register()
    headers = api.service("admin-django")
    first = (await api.client.get(USERS, params={"limit": 2}, headers=headers)).json()

    late = await api.register()
    rest, _ = await _walk(api, headers, limit=2, cursor=first["next_cursor"])

    ids = [item["id"] for item in first["items"] + rest]
    assert len(ids) == len(set(ids)) == 4
    assert ids[-1] == late["id"]


async def test_list_users_email_filter_is_case_insensitive(api) -> None:
    ada = await api.register("Ada@example.com")
    await api.register("grace@example.com")

    response = await api.client.get(
        USERS, params={"email": "ADA@EXAMPLE.COM"}, headers=api.service("admin-django")
    )

    assert response.status_code == 200, response.text
    assert [item["id"] for item in response.json()["items"]] == [ada["id"]]

    none = await api.client.get(
        USERS, params={"email": "nobody@example.com"}, headers=api.service("admin-django")
    )
    assert none.json() == {"items": [], "next_cursor": None}


@pytest.mark.parametrize(
    "cursor",
    [
        "bogus",
        "!!!",
        _cursor({"not": "a list"}),
        _cursor(["yesterday", str(uuid.UUID(int=1))]),
        _cursor(["2026-01-01T00:00:00+00:00", "not-a-uuid"]),
        _cursor([1, 2]),
        # Well-formed, but not something the service issues: its timestamps carry a zone.
        _cursor(["2026-01-01T00:00:00", str(uuid.UUID(int=1))]),
    ],
    ids=["word", "symbols", "object", "bad-date", "bad-id", "numbers", "naive-date"],
)
async def test_list_users_bogus_cursor_is_422_naming_cursor(api, cursor) -> None:
    response = await api.client.get(
        USERS, params={"cursor": cursor}, headers=api.service("admin-django")
    )

    body = api.problem(response, 422, "validation-error")
    assert api.error_fields(body) == {"cursor"}
    assert body["errors"][0]["location"] == "query"


async def test_list_users_email_filter_with_a_nul_is_422(api) -> None:
    """PostgreSQL cannot compare text holding a NUL (a 500 there before)."""
    response = await api.client.get(
        USERS, params={"email": "ada\x00@example.com"}, headers=api.service("admin-django")
    )

    body = api.problem(response, 422, "validation-error")
    assert api.error_fields(body) == {"email"}
    assert body["errors"][0]["location"] == "query"


@pytest.mark.parametrize("limit", ["0", "-1", "101", "1000", "many"])
async def test_list_users_limit_out_of_range_is_422(api, limit) -> None:
    response = await api.client.get(
        USERS, params={"limit": limit}, headers=api.service("admin-django")
    )

    body = api.problem(response, 422, "validation-error")
    assert api.error_fields(body) == {"limit"}
    assert body["errors"][0]["location"] == "query"


# --- reading one --------------------------------------------------------------------------------


async def test_read_user_as_staff_and_as_service(api) -> None:
    member = await api.register()
    staff = await api.staff_token()

    by_staff = await api.client.get(f"{USERS}/{member['id']}", headers=api.bearer(staff))
    by_service = await api.client.get(
        f"{USERS}/{member['id']}", headers=api.service("legacy-flask")
    )

    assert by_staff.status_code == 200, by_staff.text
    assert by_staff.json() == member
    assert by_service.status_code == 200, by_service.text
    assert by_service.json() == member


async def test_read_unknown_user_is_404(api) -> None:
    response = await api.client.get(f"{USERS}/{uuid.uuid4()}", headers=api.service("admin-django"))

    api.problem(response, 404, "not-found")


async def test_read_user_with_a_malformed_id_is_422(api) -> None:
    response = await api.client.get(f"{USERS}/not-a-uuid", headers=api.service("admin-django"))

    body = api.problem(response, 422, "validation-error")
    assert api.error_fields(body) == {"user_id"}
    assert body["errors"][0]["location"] == "path"


async def test_read_user_as_member_is_403(api) -> None:
    member = await api.register()
    token = await api.login(member["email"])

    response = await api.client.get(f"{USERS}/{member['id']}", headers=api.bearer(token))

    api.problem(response, 403, "forbidden")


# --- deactivate / reactivate --------------------------------------------------------------------


async def test_acting_service_deactivates_and_reactivates(api) -> None:
    member = await api.register()
    headers = api.service("admin-django", acting_for="staff-name")

    off = await api.client.post(f"{USERS}/{member['id']}/deactivate", headers=headers)
    assert off.status_code == 200, off.text
    assert off.json()["is_active"] is False
    assert off.json()["id"] == member["id"]
    read = await api.client.get(f"{USERS}/{member['id']}", headers=headers)
    assert read.json()["is_active"] is False

    # Deactivating twice is harmless.
    again = await api.client.post(f"{USERS}/{member['id']}/deactivate", headers=headers)
    assert again.status_code == 200
    assert again.json()["is_active"] is False

    on = await api.client.post(f"{USERS}/{member['id']}/reactivate", headers=headers)
    assert on.status_code == 200, on.text
    assert on.json()["is_active"] is True
    assert (await api.login(member["email"])).count(".") == 2


@pytest.mark.parametrize("action", ["deactivate", "reactivate"])
async def test_acting_without_x_acting_for_is_403(api, action) -> None:
    member = await api.register()

    response = await api.client.post(
        f"{USERS}/{member['id']}/{action}", headers=api.service("admin-django")
    )

    body = api.problem(response, 403, "forbidden")
    assert "X-Acting-For" in body["detail"]


@pytest.mark.parametrize("action", ["deactivate", "reactivate"])
async def test_a_service_that_may_not_act_is_403(api, action) -> None:
    member = await api.register()

    response = await api.client.post(
        f"{USERS}/{member['id']}/{action}",
        headers=api.service("legacy-flask", acting_for="staff-name"),
    )

    api.problem(response, 403, "forbidden")


@pytest.mark.parametrize("action", ["deactivate", "reactivate"])
async def test_acting_with_a_user_token_is_403(api, action) -> None:
    member = await api.register()
    staff = await api.staff_token()

    response = await api.client.post(
        f"{USERS}/{member['id']}/{action}",
        headers={**api.bearer(staff), "X-Acting-For": "staff-name"},
    )

    api.problem(response, 403, "forbidden")


@pytest.mark.parametrize("action", ["deactivate", "reactivate"])
async def test_acting_without_credentials_is_401(api, action) -> None:
    member = await api.register()

    response = await api.client.post(
        f"{USERS}/{member['id']}/{action}", headers={"X-Acting-For": "staff-name"}
    )

    api.problem(response, 401, "unauthenticated")


async def test_acting_with_a_wrong_secret_is_401(api) -> None:
    member = await api.register()

    response = await api.client.post(
        f"{USERS}/{member['id']}/deactivate",
        headers=api.service(
            "admin-django", secret=api.service_secrets["legacy-flask"], acting_for="staff-name"
        ),
    )

    api.problem(response, 401, "unauthenticated")


async def test_acting_for_a_malformed_staff_name_is_400(api) -> None:
    member = await api.register()

    response = await api.client.post(
        f"{USERS}/{member['id']}/deactivate",
        headers=api.service("admin-django", acting_for="staff name; DROP"),
    )

    api.problem(response, 400)
    read = await api.client.get(f"{USERS}/{member['id']}", headers=api.service("admin-django"))
    assert read.json()["is_active"] is True


async def test_deactivating_an_unknown_user_is_404(api) -> None:
    response = await api.client.post(
        f"{USERS}/{uuid.uuid4()}/deactivate",
        headers=api.service("admin-django", acting_for="staff-name"),
    )

    api.problem(response, 404, "not-found")
