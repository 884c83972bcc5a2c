"""Keyset (cursor) pagination shared by the list endpoints of every service.

Lists are ordered by ``(created_at, id)``; the cursor is an opaque token that
encodes the last item of a page. Unlike offsets, it stays correct while rows
are inserted, and costs the same on page 1 and page 10,000.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import UTC, datetime

from service_kit.problems import invalid_field

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20
#: Longer query values are refused before any decoding.
MAX_CURSOR_LENGTH = 512


def encode_cursor(created_at: datetime, item_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(item_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    """The position a cursor names; a 422 naming ``cursor`` if it is not one we issued."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        created, item_id = json.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(created, str) or not isinstance(item_id, str):
            raise TypeError("cursor fields are not strings")  # uuid.UUID(5) is AttributeError
        created_at = datetime.fromisoformat(created)
        if created_at.tzinfo is None:
            raise ValueError("cursor timestamp without time zone")
        # In UTC: PostgreSQL refuses offsets past 15:59 that Python accepts (a 500 before).
        return created_at.astimezone(UTC), uuid.UUID(item_id)
    except (ValueError, TypeError, OverflowError, binascii.Error, json.JSONDecodeError):
        raise invalid_field(
            "cursor", "The cursor is not one this service issued", location="query"
        ) from None
