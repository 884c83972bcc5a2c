"""Field types shared by the services' request models.

Limits are checked on what the client sent, so the limits an OpenAPI document declares
(``maxLength``, ``pattern``) are the ones enforced. A model-wide
``str_strip_whitespace`` strips first and checks afterwards: ``" " * 10 + 256 characters``
then passes a ``maxLength`` of 256 that the document promises to refuse, and a password
silently loses its surrounding spaces. :data:`Trimmed` strips after the checks instead.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def _stripped_not_blank(value: str) -> str:
    stripped = value.strip()
    if not stripped:
        raise ValueError("must not be blank")
    return stripped


#: Text stored without its surrounding whitespace, once its limits have passed; blank
#: text (only whitespace) is refused.
Trimmed = Annotated[str, AfterValidator(_stripped_not_blank)]
