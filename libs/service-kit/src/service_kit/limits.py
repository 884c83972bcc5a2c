"""Structural limits on a request, checked before anything parses it: the one place for them.

Every adapter (FastAPI, Flask, Django) only wires these checks into its framework; the
settings are the kit's (``<PREFIX>JSON_MAX_DEPTH``, …, :class:`InputLimits`). A breach is a
:class:`InputLimitError` (a problem with the ``input-limit`` type URN, 413/422/431), logged once
and counted by ``polyframe_input_rejected_total{limit}`` (:meth:`RequestCycle.rejected
<service_kit.cycle.RequestCycle.rejected>`). Design: docs/architecture.md, "Limits before
parsing".

JSON is scanned before it is parsed (:func:`scan`), in passes of the regular-expression
engine and of ``str`` methods over the whole text, never a Python loop over its characters:
strings measured, then blanked; number tokens split out, measured, and only the few that can
be out of range (19 digits and more, an exponent of 3 digits) converted; containers removed
innermost first, a level per pass, their commas counted. Only then does :func:`loads` hand it
to :func:`json.loads`, which therefore never recurses deeper than the limit, never meets a
number ``int()`` refuses (``int_max_str_digits``) and never makes ``inf`` out of ``1e999``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, fields
from itertools import accumulate, repeat
from typing import Any
from urllib.parse import parse_qsl

from service_kit.problems import ProblemError, input_limit_exceeded

log = logging.getLogger("service_kit.limits")

#: The databases' integer (PostgreSQL ``bigint``, SQLite ``INTEGER``): a JSON integer outside
#: it cannot be stored anywhere, so it is refused as a limit, not as a setting.
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


@dataclass(frozen=True, slots=True)
class InputLimits:
    """Every structural limit of a request; the defaults are the settings' defaults.

    The field names are the settings' names (``USERS_JSON_MAX_DEPTH``, ``ORDERS_…``,
    ``ADMIN_…``); :meth:`of` reads them from a service's settings.
    """

    #: Containers (objects, arrays) inside one another.
    json_max_depth: int = 32
    #: Members of one JSON object.
    json_max_members: int = 256
    #: Elements of one JSON array.
    json_max_elements: int = 1_024
    #: Characters of one JSON string (keys too), as sent: an escape counts as written.
    json_max_string_length: int = 16_384
    #: Characters of one JSON number (sign, digits, point and exponent): its precision.
    json_max_number_length: int = 64
    #: Parameters of the query string (``a=1&b=2``: 2).
    query_max_params: int = 64
    #: Parameters of the query string with the same name.
    query_max_repeats: int = 8
    #: Request header fields.
    headers_max_count: int = 100
    #: Bytes of one header field, name and value together.
    header_max_bytes: int = 8_192

    @classmethod
    def of(cls, settings: Any) -> InputLimits:
        """The limits a service's settings set (any field they lack keeps its default)."""
        default = cls()
        return cls(
            **{f.name: getattr(settings, f.name, getattr(default, f.name)) for f in fields(cls)}
        )


#: Every limit a breach names (``limit`` label of ``polyframe_input_rejected_total``); each
#: one's setting, if it has one, in README.md's Security section.
LIMITS = (
    "body_size",
    "json_depth",
    "json_members",
    "json_elements",
    "json_string_length",
    "json_number_length",
    "json_number_range",
    "json_constant",
    "query_params",
    "query_repeats",
    "header_count",
    "header_size",
    "form_fields",
    "form_files",
)


class InputLimitError(ProblemError):
    """A request over one of the limits: ``limit`` names it (one of :data:`LIMITS`)."""

    def __init__(self, limit: str, detail: str, status: int = 422) -> None:
        problem = input_limit_exceeded(status, detail)
        super().__init__(problem.status, problem.detail)
        self.problem = problem
        self.limit = limit


def report(limit: str, method: str, path: str) -> None:
    """The one log line of a refused request (never its content: it is hostile)."""
    log.info("input refused", extra={"limit": limit, "method": method, "path": path})


# -- query string and headers ------------------------------------------------------------------


def check_query(query: str | bytes, limits: InputLimits) -> None:
    """Refuse a query string with too many parameters, or one name repeated too often."""
    if not query:
        return
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if text.count("&") + 1 > limits.query_max_params:
        pairs = [part for part in text.split("&") if part]
        if len(pairs) > limits.query_max_params:
            raise InputLimitError(
                "query_params",
                f"The query string has more than {limits.query_max_params} parameters "
                "(limit query_max_params)",
            )
    names = Counter(name for name, _ in parse_qsl(text, keep_blank_values=True))
    if names and max(names.values()) > limits.query_max_repeats:
        raise InputLimitError(
            "query_repeats",
            f"A query parameter is repeated more than {limits.query_max_repeats} times "
            "(limit query_max_repeats)",
        )


def check_headers(headers: Iterable[tuple[str | bytes, str | bytes]], limits: InputLimits) -> None:
    """Refuse too many header fields, or one too large (431)."""
    count = 0
    for name, value in headers:
        count += 1
        if len(name) + len(value) > limits.header_max_bytes:
            raise InputLimitError(
                "header_size",
                f"A request header is larger than {limits.header_max_bytes} bytes "
                "(limit header_max_bytes)",
                431,
            )
    if count > limits.headers_max_count:
        raise InputLimitError(
            "header_count",
            f"The request has more than {limits.headers_max_count} header fields "
            "(limit headers_max_count)",
            431,
        )


# -- JSON --------------------------------------------------------------------------------------

#: A JSON string, escapes included; one never closed runs to the end (the parser then says
#: the body is malformed). No backtracking: linear in the body.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?')
#: Innermost containers (no bracket inside), arrays and objects apart, then either.
_INNER_ARRAY = re.compile(r"\[[^\[\]{}]*\]")
_INNER_OBJECT = re.compile(r"\{[^\[\]{}]*\}")
_INNER = re.compile(r"[\[{][^\[\]{}]*[\]}]")
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_LEVEL = {"[": 1, "{": 1, "]": -1, "}": -1}
#: Every ASCII character that is not part of a number becomes a space: what is left, split,
#: is the number tokens (and the odd ``e`` of ``true``/``false``).
_NUMBERS_ONLY = str.maketrans({chr(c): " " for c in range(128) if chr(c) not in "0123456789+-.eE"})
#: A number with an exponent of three digits or more (1e309 is inf; 1e999 too).
_BIG_EXPONENT = re.compile(r"[eE][-+]?\d{3,}")


def scan(text: str, limits: InputLimits) -> None:
    """Check a JSON document against ``limits`` without parsing it (:class:`InputLimitError`).

    Malformed JSON is not this function's business: it checks what it can and leaves the
    verdict to the parser. Every check is a pass of the regular-expression engine or of a
    ``str`` method over the text, never a Python loop over its characters or tokens:
    strings measured, then blanked; numbers split out and measured; containers removed
    innermost first, a level per pass (their commas counted), so the passes are the depth.
    """
    strings = _STRING.findall(text)
    if strings:
        if max(map(len, strings)) > limits.json_max_string_length + 2:  # with its quotes
            raise InputLimitError(
                "json_string_length",
                f"A JSON string is longer than {limits.json_max_string_length} characters "
                "(limit json_max_string_length)",
            )
        text = _STRING.sub('""', text)  # what is left: brackets, numbers, names, punctuation
    _check_numbers(text, limits)
    if text.count("[") + text.count("{") > limits.json_max_depth or text.count(",") >= min(
        limits.json_max_members, limits.json_max_elements
    ):
        _check_containers(text, limits)


def _check_numbers(text: str, limits: InputLimits) -> None:
    if "NaN" in text or "Infinity" in text:
        raise InputLimitError("json_constant", "NaN and Infinity are not JSON numbers (refused)")
    tokens = text.translate(_NUMBERS_ONLY).split()
    if not tokens:
        return
    longest = max(map(len, tokens))
    if longest > limits.json_max_number_length:
        raise InputLimitError(
            "json_number_length",
            f"A JSON number is longer than {limits.json_max_number_length} characters "
            "(limit json_max_number_length)",
        )
    # 2**63 has 19 digits; 1e309 is inf: only such tokens are converted and compared.
    big_exponent = _BIG_EXPONENT.search(text) is not None
    if longest < 19 and not big_exponent:
        return
    for token in tokens:
        # ASCII digits only: ``"²".isdigit()`` is True, and int() of it raised (a 500).
        if len(token) >= 19 and token.isascii() and token.lstrip("-").isdigit():
            if not INT64_MIN <= int(token) <= INT64_MAX:
                raise _out_of_range()
        elif big_exponent and ("e" in token or "E" in token):
            try:
                if math.isinf(float(token)):
                    raise _out_of_range()
            except ValueError:
                continue  # not a number: the parser says so


def _check_containers(text: str, limits: InputLimits) -> None:
    """Depth, members and elements: each pass finds the innermost containers, counts their
    commas (n commas: n + 1 members or elements in valid JSON), and replaces them by a
    scalar; the passes needed to remove them all are the depth."""
    for level in range(limits.json_max_depth + 1):
        arrays = _INNER_ARRAY.findall(text)
        objects = _INNER_OBJECT.findall(text)
        if not arrays and not objects:
            # None left; or brackets that never close, which the parser would descend
            # before it finds the body malformed: they count as levels too.
            unclosed = _NOT_BRACKET.sub("", text)
            if unclosed and level + max(accumulate(map(_LEVEL.__getitem__, unclosed))) > (
                limits.json_max_depth
            ):
                raise _too_deep(limits)
            return
        if level == limits.json_max_depth:
            raise _too_deep(limits)
        if objects and max(map(str.count, objects, repeat(","))) >= limits.json_max_members:
            raise InputLimitError(
                "json_members",
                f"A JSON object has more than {limits.json_max_members} members "
                "(limit json_max_members)",
            )
        if arrays and max(map(str.count, arrays, repeat(","))) >= limits.json_max_elements:
            raise InputLimitError(
                "json_elements",
                f"A JSON array has more than {limits.json_max_elements} elements "
                "(limit json_max_elements)",
            )
        text = _INNER.sub("0", text)


def _too_deep(limits: InputLimits) -> InputLimitError:
    return InputLimitError(
        "json_depth",
        f"The JSON body is nested deeper than {limits.json_max_depth} levels "
        "(limit json_max_depth)",
    )


def _out_of_range() -> InputLimitError:
    return InputLimitError(
        "json_number_range",
        f"A JSON number is out of range: integers from {INT64_MIN} to {INT64_MAX}, "
        "finite numbers (limit json_number_range)",
    )


def decode(data: str | bytes) -> str | None:
    """The text of a JSON body as :func:`json.loads` would read it; None if it is not text."""
    if isinstance(data, str):
        return data
    try:
        return data.decode(json.detect_encoding(data), "strict")
    except (UnicodeDecodeError, LookupError):
        return None


def check_json(data: str | bytes, limits: InputLimits) -> None:
    """:func:`scan` a body (bytes as sent); one that is not text is left to the parser."""
    text = decode(data)
    if text is not None:
        scan(text, limits)


def loads(data: str | bytes, limits: InputLimits) -> Any:
    """The one JSON parse of a request body: limits scanned first, then :func:`json.loads`.

    :class:`InputLimitError` past a limit; :class:`ValueError` for what is not JSON.
    """
    text = decode(data)
    if text is None:
        raise ValueError("the body is not UTF-8, UTF-16 or UTF-32 text")
    scan(text, limits)
    return json.loads(text)
