"""Field types and a base model shared by the services' request models: no NUL in text,
limits checked as declared; why: docs/architecture.md, "Input the database cannot store".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    field_validator,
)

NUL = "\x00"
NUL_MESSAGE = "must not contain the NUL character (U+0000)"
SURROGATE_MESSAGE = "must not contain a lone surrogate (U+D800 to U+DFFF): it is not UTF-8"
#: What no database here stores in text: NUL (PostgreSQL), and a lone surrogate, which JSON
#: can send (``"\\ud800"``) but no UTF-8 can hold (PostgreSQL's driver fails to encode it).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _unstorable(value: Any) -> str | None:
    """Why text in ``value`` (keys included) cannot be stored, if it cannot."""
    if isinstance(value, str):
        found = _UNSTORABLE.search(value)
        if found is None:
            return None
        return NUL_MESSAGE if found.group() == NUL else SURROGATE_MESSAGE
    if isinstance(value, dict):
        for key, item in value.items():
            reason = _unstorable(key) or _unstorable(item)
            if reason:
                return reason
    elif isinstance(value, list | tuple):
        for item in value:
            reason = _unstorable(item)
            if reason:
                return reason
    return None


def refuse_nul(value: Any) -> Any:
    """A validator: ``value`` unchanged, unless text in it holds a NUL character or a lone
    surrogate (neither can be stored)."""
    reason = _unstorable(value)
    if reason:
        raise ValueError(reason)
    return value


#: A free-form JSON object (an audit event's payload) without a NUL or a lone surrogate
#: anywhere inside (a typed ``str`` field refuses a lone surrogate by itself).
JsonObject = Annotated[dict[str, Any], AfterValidator(refuse_nul)]


class StrictInput(BaseModel):
    """A request model: unknown fields refused (no mass assignment), no NUL in any text.

    Nested models should derive from it too: each checks its own text fields, so the
    error names the innermost field.
    """

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul_in_text(cls, value: Any) -> Any:
        if isinstance(value, str) and NUL in value:
            raise ValueError(NUL_MESSAGE)
        return value


def _stripped_not_blank(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be blank")
    return stripped


#: Text stored without its surrounding whitespace, once its limits have passed; blank
#: text (only whitespace) is refused.
Trimmed = Annotated[str, AfterValidator(_stripped_not_blank)]


def in_utc(moment: datetime) -> datetime:
    """``moment`` (with an offset) in UTC; ValueError if UTC cannot hold it.

    Python takes offsets up to 24 hours, PostgreSQL only up to 15:59, and a query with
    ``-22:36`` failed there (a 500): every time that goes to a database goes in UTC.
    """
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the range of dates") from None


def _iso_text(value: Any) -> Any:
    if isinstance(value, datetime):  # already parsed (a model built in code)
        return value if value.tzinfo is None else in_utc(value)
    if not isinstance(value, str):
        raise ValueError("must be a date-time string (RFC 3339)")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError("must be a date-time string (RFC 3339)") from None
    return moment if moment.tzinfo is None else in_utc(moment)


#: A point in time with its offset, sent as text (``format: date-time``), in UTC once
#: validated. pydantic alone also takes a number, or a numeric string, as seconds since
#: 1970, which the document (a date-time string) does not allow.
DateTimeText = Annotated[AwareDatetime, BeforeValidator(_iso_text)]


#: How much of a refused body is read (and thrown away) before answering, at most.
DISCARD_LIMIT = 16 * 1024 * 1024
_DISCARD_CHUNK = 64 * 1024


def discard_body(stream: Any, limit: int = DISCARD_LIMIT) -> None:
    """Read what is left of a refused request body (a 413) and throw it away, up to ``limit``.

    A server that answers before the client (the ingress) has sent the whole body, then
    closes or reuses the connection with the rest unread, makes the kernel reset it: the
    ingress then answers 502 instead of the 413. Reading the rest first avoids that race;
    a body beyond ``limit`` is cut off as before.
    """
    if stream is None:
        return
    left = limit
    try:
        while left > 0:
            chunk = stream.read(min(_DISCARD_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
    except Exception:  # best effort: whatever the stream does, the 413 is answered
        return
