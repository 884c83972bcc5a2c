"""The support console in a real browser (Debian's Chromium driven by Playwright).

An acting staff member logs in at ``/admin``, finds a user, deactivates them
and sees the entry in the audit trail; that user can then no longer order. A
read-only staff member sees the same pages without any action. Everything goes
through the ingress, like a person's browser would.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from polyframe_testing.tools import unavailable

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Bound of every browser wait (a page load, a click's effect), not a speed assertion.
PAGE_TIMEOUT_MS = 15_000
#: An event reaches the audit trail through its producer's outbox (about half a second).
AUDIT_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        unavailable(f"{CHROMIUM} is missing: apt-get install chromium (never `playwright install`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def new_page(browser: Any, platform: Any) -> Iterator[Any]:
    """A page in a fresh browser context (no cookies) whose relative URLs hit the ingress."""
    context = browser.new_context(base_url=platform.base_url)
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def _log_in(page: Any, username: str, password: str) -> None:
    from playwright.sync_api import expect

    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text(username)


def _open_user(page: Any, email: str) -> None:
    from playwright.sync_api import expect

    page.goto("/admin/support/users/")
    page.fill("#email", email)
    page.click("#user-search input[type=submit]")
    page.click(f"#users a:text-is('{email}')")
    expect(page.locator("#user")).to_contain_text(email)


def _audit_rows(page: Any, action: str) -> Any:
    """Rows of ``action`` in the audit list on ``page``, reloading it until the event arrives."""
    rows = page.locator("#result_list tbody tr", has_text=action)
    deadline = time.monotonic() + AUDIT_TIMEOUT_S
    while rows.count() == 0 and time.monotonic() < deadline:
        page.wait_for_timeout(250)
        page.reload()
    return rows


def _member(client: httpx.Client, register: Any, log_in: Any) -> tuple[Any, str]:
    account = register(client)
    return account, log_in(client, account.email, account.password)


def _order(client: httpx.Client, token: str) -> httpx.Response:
    return client.post(
        "/api/orders",
        json={
            "currency": "EUR",
            "items": [{"sku": "MUG-7", "quantity": 1, "unit_price_cents": 999}],
        },
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex},
    )


def test_acting_staff_deactivate_a_user_and_see_it_in_the_audit_trail(
    new_page: Any,
    client: httpx.Client,
    register: Any,
    log_in: Any,
    staff_account: Any,
    problem: Any,
) -> None:
    from playwright.sync_api import expect

    account, token = _member(client, register, log_in)
    assert _order(client, token).status_code == 201  # an active member may order
    username, password = staff_account("support-acting")
    page = new_page

    _log_in(page, username, password)
    _open_user(page, account.email)
    expect(page.locator("#user-active")).to_have_text("yes")
    expect(page.locator("form.refund")).to_have_count(1)  # the order above, paid
    page.click("#deactivate")
    expect(page.locator("#user-active")).to_have_text("no")
    expect(page.locator("#reactivate")).to_be_visible()

    # The audit entry names the staff member the console acted for.
    page.click("text=Audit trail of this user")
    rows = _audit_rows(page, "user.deactivated")
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text(username)
    expect(rows).to_contain_text("admin-django")

    # And the member can no longer order, although their token is still valid.
    refused = _order(client, token)
    assert "deactivated" in problem(refused, 403)["detail"]


def test_read_only_staff_see_everything_and_no_action(
    new_page: Any, client: httpx.Client, register: Any, log_in: Any, staff_account: Any
) -> None:
    from playwright.sync_api import expect

    account, token = _member(client, register, log_in)
    assert _order(client, token).status_code == 201
    username, password = staff_account("support-readonly")
    page = new_page

    _log_in(page, username, password)
    _open_user(page, account.email)
    expect(page.locator("#user-active")).to_have_text("yes")
    expect(page.locator("#orders tbody tr")).to_have_count(1)
    expect(page.locator("#user-actions")).to_have_count(0)
    expect(page.locator("#deactivate, #reactivate, form.refund")).to_have_count(0)
    # The trail is readable to them as well.
    page.click("text=Audit trail of this user")
    expect(_audit_rows(page, "user.registered")).to_have_count(1)
