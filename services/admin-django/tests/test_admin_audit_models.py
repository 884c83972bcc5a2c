"""The audit model's check constraints: the database refuses exactly what ``full_clean()``
refuses and ``bulk_create()`` (the ingest path) never checks; rows valid before still migrate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import DataError, IntegrityError, connection, models, transaction
from django.db.migrations.executor import MigrationExecutor

from admin_django.audit.models import AuditEvent

Row = Callable[..., dict[str, Any]]

TEXT_FIELDS = [
    field
    for field in AuditEvent._meta.get_fields()
    if isinstance(field, models.CharField) and field.max_length
]
BEFORE_CONSTRAINTS = ("audit", "0002_audit_event_order")


def _longest(field: models.CharField[Any, Any]) -> str:
    """The longest value validation accepts (a choice for a field with choices)."""
    if field.choices:
        return max((str(value) for value, _ in field.choices), key=len)
    assert field.max_length is not None
    return "x" * field.max_length


def refusals(row: dict[str, Any]) -> tuple[bool, bool]:
    """(validation refuses ``row``, the database refuses it through ``bulk_create``)."""
    try:
        AuditEvent(**row).full_clean()
    except ValidationError:
        validation = True
    else:
        validation = False
    try:
        with transaction.atomic():
            AuditEvent.objects.bulk_create([AuditEvent(**row)])
    except (IntegrityError, DataError):  # PostgreSQL's varchar refuses with a DataError
        database = True
    else:
        database = False
    return validation, database


def test_the_text_fields_are_the_ones_constrained() -> None:
    names = {field.name for field in TEXT_FIELDS}
    assert names == {
        "service",
        "actor_type",
        "actor_id",
        "acting_for",
        "action",
        "subject_type",
        "subject_id",
        "trace_id",
    }


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize("field", TEXT_FIELDS, ids=lambda field: field.name)
def test_one_character_over_max_length_is_refused_by_both(
    event_row: Row, field: models.CharField[Any, Any]
) -> None:
    assert refusals(event_row(**{field.name: "x" * (field.max_length + 1)})) == (True, True)


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize("field", TEXT_FIELDS, ids=lambda field: field.name)
def test_the_longest_valid_value_is_accepted_by_both(
    event_row: Row, field: models.CharField[Any, Any]
) -> None:
    assert refusals(event_row(**{field.name: _longest(field)})) == (False, False)


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize("field", TEXT_FIELDS, ids=lambda field: field.name)
def test_the_empty_string_is_refused_by_both_exactly_where_blank_is_not_allowed(
    event_row: Row, field: models.CharField[Any, Any]
) -> None:
    refused = not field.blank
    assert refusals(event_row(**{field.name: ""})) == (refused, refused)


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize("actor_type", ["robot", "USER", "user "])
def test_an_actor_type_outside_the_choices_is_refused_by_both(
    event_row: Row, actor_type: str
) -> None:
    assert refusals(event_row(actor_type=actor_type)) == (True, True)


@pytest.mark.usefixtures("db")
@pytest.mark.parametrize("actor_type", ["user", "staff", "service"])
def test_every_actor_type_choice_is_accepted_by_both(event_row: Row, actor_type: str) -> None:
    assert refusals(event_row(actor_type=actor_type)) == (False, False)


def test_rows_valid_before_the_constraints_migrate_unchanged(
    empty_database: str, event_row: Row
) -> None:
    """Rows written at the previous migration that pass validation pass the constraints."""
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE_CONSTRAINTS])
    executor.loader.build_graph()
    old = executor.loader.project_state(BEFORE_CONSTRAINTS).apps.get_model("audit", "AuditEvent")
    rows = [
        event_row(**{field.name: _longest(field) for field in TEXT_FIELDS}),
        event_row(acting_for="", trace_id="", payload={}),
    ]
    for row in rows:
        AuditEvent(**row).full_clean()
    old.objects.bulk_create([old(**row) for row in rows])

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    stored = {event.event_id: event for event in AuditEvent.objects.all()}
    assert set(stored) == {row["event_id"] for row in rows}
    assert stored[rows[0]["event_id"]].actor_id == "x" * 150
