"""The audit trail in the Django admin: read-only, with filters and search."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest

from admin_django.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = (
        "occurred_at",
        "service",
        "action",
        "subject_type",
        "subject_id",
        "actor_type",
        "actor_id",
        "acting_for",
        "trace_id",
    )
    list_filter = ("service", "action", "actor_type", "subject_type", "occurred_at")
    search_fields = ("=event_id", "=subject_id", "actor_id", "acting_for", "=trace_id")
    date_hierarchy = "occurred_at"
    ordering = ("-occurred_at", "-id")
    list_per_page = 50
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: AuditEvent | None = None) -> list[str]:
        return [field.name for field in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEvent | None = None) -> bool:
        return False
