"""The support console: users (from users-fastapi) and their orders (from legacy-flask).

Thin views: they check the role, call the owning service through
:mod:`admin_django.support.clients`, and render. A service that is down makes
the page say so; it never turns into an error page.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from admin_django.support import clients, roles
from service_kit.client import ServiceUnavailableError

log = logging.getLogger("admin_django.support")


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {
        **admin.site.each_context(request),
        "title": title,
        "can_act": roles.can_act(request.user),
        **extra,
    }


def _require_view(request: HttpRequest) -> str:
    if not roles.can_view(request.user):
        raise PermissionDenied("You are not in a support group")
    return request.user.get_username()


@staff_member_required
@require_http_methods(["GET"])
def user_list(request: HttpRequest) -> HttpResponse:
    staff = _require_view(request)
    email = request.GET.get("email", "").strip()[:320] or None
    cursor = request.GET.get("cursor", "")[:512] or None
    page: dict[str, Any] | None = None
    unavailable = None
    error = None
    try:
        page = clients.users_list(staff=staff, email=email, cursor=cursor)
    except ServiceUnavailableError:
        unavailable = "users"
    except clients.PeerError as exc:
        error = exc.detail
    return render(
        request,
        "support/user_list.html",
        _context(
            request, "Users", page=page, email=email or "", unavailable=unavailable, error=error
        ),
    )


@staff_member_required
@require_http_methods(["GET", "POST"])
def user_detail(request: HttpRequest, user_id: uuid.UUID) -> HttpResponse:
    staff = _require_view(request)
    if request.method == "POST":
        return _act(request, staff, user_id)
    account = orders = unavailable_users = unavailable_orders = None
    error = None
    try:
        account = clients.user_get(staff=staff, user_id=user_id)
    except ServiceUnavailableError:
        unavailable_users = True
    except clients.PeerError as exc:
        error = exc.detail
    try:
        orders = clients.orders_list(
            staff=staff, user_id=user_id, cursor=request.GET.get("cursor", "")[:512] or None
        )
    except ServiceUnavailableError:
        unavailable_orders = True
    except clients.PeerError as exc:
        error = error or exc.detail
    return render(
        request,
        "support/user_detail.html",
        _context(
            request,
            f"User {account['email'] if account else user_id}",
            user_id=user_id,
            # Not "user": that is the logged-in staff member, whom the admin's header names.
            account=account,
            orders=orders,
            unavailable_users=unavailable_users,
            unavailable_orders=unavailable_orders,
            error=error,
        ),
    )


def _act(request: HttpRequest, staff: str, user_id: uuid.UUID) -> HttpResponse:
    if not roles.can_act(request.user):
        raise PermissionDenied("Read-only support staff cannot act")
    action = request.POST.get("action")
    try:
        if action in ("deactivate", "reactivate"):
            clients.user_set_active(staff=staff, user_id=user_id, active=action == "reactivate")
            messages.success(request, f"User {action}d.")
        elif action == "refund":
            order_id = uuid.UUID(request.POST.get("order_id", ""))
            reason = request.POST.get("reason", "").strip()
            clients.order_refund(staff=staff, order_id=order_id, reason=reason)
            messages.success(request, f"Order {order_id} refunded.")
        else:
            messages.error(request, "Unknown action.")
    except ValueError:
        messages.error(request, "That is not an order id.")
    except ServiceUnavailableError as exc:
        messages.error(
            request, f"The {exc.peer} service is unavailable right now; nothing was changed."
        )
    except clients.PeerError as exc:
        messages.error(request, f"Refused: {exc.detail}")
    log.info("support action", extra={"action": action, "user_id": str(user_id), "staff": staff})
    return HttpResponseRedirect(reverse("support:user-detail", args=[user_id]))
