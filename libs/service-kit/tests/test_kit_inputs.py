"""Field types of the request models: limits on what was sent, then the trimming."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel, Field, ValidationError

from service_kit.inputs import DateTimeText, JsonObject, StrictInput, Trimmed, discard_body


class Name(BaseModel):
    name: Trimmed = Field(min_length=1, max_length=5)


def test_trimmed_text_is_stored_without_surrounding_whitespace() -> None:
    assert Name(name=" ab ").name == "ab"


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ("  abcd ", "at most 5 characters"),  # 4 characters once trimmed, 7 as sent
        ("abcdef", "at most 5 characters"),
        ("   ", "must not be blank"),
        ("", "at least 1 character"),
    ],
    ids=["long-with-spaces", "long", "blank", "empty"],
)
def test_limits_apply_to_what_was_sent(sent: str, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Name(name=sent)


def test_the_json_schema_keeps_the_limits() -> None:
    schema = Name.model_json_schema()["properties"]["name"]
    assert (schema["minLength"], schema["maxLength"]) == (1, 5)


class Actor(StrictInput):
    id: str
    name: Trimmed | None = None


class Event(StrictInput):
    actor: Actor
    tags: list[str] = []
    payload: JsonObject = {}


@pytest.mark.parametrize(
    ("event", "location"),
    [
        ({"actor": {"id": "a\x00b"}}, ("actor", "id")),
        ({"actor": {"id": "a", "name": "\x00"}}, ("actor", "name")),
        ({"actor": {"id": "a"}, "payload": {"deep": [{"x": "\x00"}]}}, ("payload",)),
        ({"actor": {"id": "a"}, "payload": {"k\x00": 1}}, ("payload",)),
    ],
    ids=["nested-field", "optional-field", "deep-in-payload", "payload-key"],
)
def test_nul_in_text_is_refused_naming_the_field(
    event: dict[str, Any], location: tuple[str, ...]
) -> None:
    with pytest.raises(ValidationError) as caught:
        Event.model_validate(event)
    (error,) = caught.value.errors()
    assert error["loc"] == location
    assert "NUL" in error["msg"]


def test_text_without_nul_and_unknown_fields() -> None:
    event = Event.model_validate({"actor": {"id": "a"}, "payload": {"k": ["v", 1, None]}})
    assert event.payload == {"k": ["v", 1, None]}
    with pytest.raises(ValidationError, match="Extra inputs"):
        Event.model_validate({"actor": {"id": "a", "role": "staff"}})


class Moment(BaseModel):
    at: DateTimeText


def test_a_date_time_is_text_with_an_offset() -> None:
    assert Moment(at="2026-01-01T00:00:00Z").at.utcoffset() is not None
    assert Moment(at="2026-01-01T01:00:00+01:00").at == datetime(2026, 1, 1, tzinfo=UTC)


def test_a_date_time_is_in_utc_once_validated() -> None:
    """PostgreSQL refuses offsets past 15:59, which Python (and RFC 3339 text) allows."""
    at = Moment(at="6684-02-07T02:16:42-22:36").at
    assert at.utcoffset() == timedelta(0)
    assert (at.day, at.hour, at.minute) == (8, 0, 52)


@pytest.mark.parametrize(
    "sent",
    [
        1_700_000_000,
        "1700000000",
        1.5,
        "2026-01-01T00:00:00",
        "2026-01-01",
        "yesterday",
        None,
        "0001-01-01T00:00:00+05:00",
    ],
    ids=["number", "numeric-text", "float", "naive", "date-only", "word", "null", "before-year-1"],
)
def test_numbers_and_times_without_an_offset_are_refused(sent: Any) -> None:
    with pytest.raises(ValidationError):
        Moment(at=sent)


def test_discard_body_reads_what_is_left_up_to_the_limit() -> None:
    stream = io.BytesIO(b"x" * 1000)
    discard_body(stream, limit=300)
    assert stream.tell() == 300
    discard_body(stream)
    assert stream.read() == b""


def test_discard_body_survives_a_broken_stream() -> None:
    class Broken:
        def read(self, _size: int) -> bytes:
            raise ConnectionResetError

    discard_body(Broken())
    discard_body(None)
