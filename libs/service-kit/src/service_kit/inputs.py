"""Field types and a base model shared by the services' request models.

Text never contains NUL (U+0000): PostgreSQL stores no NUL in a text column or in a
``jsonb`` value, and its driver's error would otherwise be a 500; SQLite would keep it.
:class:`StrictInput` refuses it in every text field (422 naming the field), and
:data:`JsonObject` anywhere inside a free-form object, keys included.

Limits are checked on what the client sent, so the limits an OpenAPI document declares
(``maxLength``, ``pattern``) are the ones enforced. A model-wide
``str_strip_whitespace`` strips first and checks afterwards: ``" " * 10 + 256 characters``
then passes a ``maxLength`` of 256 that the document promises to refuse, and a password
silently loses its surrounding spaces. :data:`Trimmed` strips after the checks instead.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, field_validator

NUL = "\x00"
NUL_MESSAGE = "must not contain the NUL character (U+0000)"


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False


def refuse_nul(value: Any) -> Any:
    """A validator: ``value`` unchanged, unless text in it holds a NUL character."""
    if _contains_nul(value):
        raise ValueError(NUL_MESSAGE)
    return value


#: A free-form JSON object (an audit event's payload) without a NUL anywhere inside.
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
