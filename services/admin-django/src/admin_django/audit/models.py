"""The audit trail: one row per change anywhere in the platform."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Length
from django.db.models.lookups import LessThanOrEqual


class ActorType(models.TextChoices):
    USER = "user"
    STAFF = "staff"
    SERVICE = "service"


class AuditEvent(models.Model):
    #: Chosen by the producer; unique, so a redelivered event is recorded once.
    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    #: The producing service (``users-fastapi``, ``legacy-flask``, ``admin-django``).
    service = models.CharField(max_length=50, db_index=True)
    actor_type = models.CharField(max_length=20, choices=ActorType.choices)
    actor_id = models.CharField(max_length=150, db_index=True)
    #: For a service actor: the staff member it acted for.
    acting_for = models.CharField(max_length=150, blank=True, default="", db_index=True)
    action = models.CharField(max_length=100, db_index=True)
    subject_type = models.CharField(max_length=50)
    subject_id = models.CharField(max_length=100)
    trace_id = models.CharField(max_length=32, blank=True, default="", db_index=True)
    payload = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("occurred_at", "id")
        indexes = (
            models.Index(fields=("subject_type", "subject_id", "occurred_at")),
            # The order of every listing (keyset pagination): a page is read straight off
            # the index instead of sorting every event of the same instant.
            models.Index(fields=("occurred_at", "event_id"), name="audit_event_order"),
        )
        # What full_clean() checks and bulk_create() (the ingest path) skips, checked by the
        # database instead: nothing more, so every row that passes validation passes these.
        constraints = (
            models.CheckConstraint(
                condition=Q(actor_type__in=ActorType.values), name="audit_event_actor_type_valid"
            ),
            # Fields without ``blank=True``: the empty string is the one blank text.
            models.CheckConstraint(
                condition=~Q(service="")
                & ~Q(actor_id="")
                & ~Q(action="")
                & ~Q(subject_type="")
                & ~Q(subject_id=""),
                name="audit_event_text_not_blank",
            ),
            # Each ``max_length`` (PostgreSQL's varchar holds to it; SQLite's text does not).
            models.CheckConstraint(
                condition=Q(
                    *(
                        LessThanOrEqual(Length(name), limit)
                        for name, limit in (
                            ("service", 50),
                            ("actor_type", 20),
                            ("actor_id", 150),
                            ("acting_for", 150),
                            ("action", 100),
                            ("subject_type", 50),
                            ("subject_id", 100),
                            ("trace_id", 32),
                        )
                    )
                ),
                name="audit_event_text_lengths",
            ),
        )

    def __str__(self) -> str:
        subject = f"{self.subject_type}:{self.subject_id}"
        return f"{self.occurred_at:%Y-%m-%d %H:%M:%S} {self.service} {self.action} {subject}"
