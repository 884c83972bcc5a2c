"""What a producer writes to its outbox, in the transaction of the change it describes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from service_kit.outbox import schema
from service_kit.tracecontext import current_trace_id, sampled_span_id


@dataclass(frozen=True, slots=True)
class Actor:
    type: str
    id: str
    acting_for: str | None = None


def outbox_values(
    *,
    action: str,
    subject_type: str,
    subject_id: str,
    actor: Actor,
    payload: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Column values of one event; the trace id is the current request's."""
    return {
        "id": uuid.uuid4(),
        "occurred_at": schema.utcnow(),
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "actor_type": actor.type,
        "actor_id": actor.id,
        "acting_for": actor.acting_for,
        "trace_id": current_trace_id(),
        "span_id": sampled_span_id(),
        "payload": dict(payload or {}),
        "attempts": 0,
        "next_attempt_at": schema.utcnow(),
    }
