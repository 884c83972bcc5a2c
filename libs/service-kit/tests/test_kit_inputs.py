"""Field types of the request models: limits on what was sent, then the trimming."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field, ValidationError

from service_kit.inputs import Trimmed


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
