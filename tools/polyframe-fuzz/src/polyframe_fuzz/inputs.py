"""One fuzz input → one HTTP request, and that request as a WSGI environ or an ASGI scope.

The bytes libFuzzer hands over are read with :class:`atheris.FuzzedDataProvider`: every
choice (route, method, headers, query, body) consumes some of them, so a mutation of the
bytes is a mutation of the request, and the corpus files are short. Most requests follow
the service's real routes (with fuzzed path parameters) and carry real credentials some
of the time; the rest are raw bytes where the path, a header or the body would be.
"""

from __future__ import annotations

import io
import json
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_from_bytes, unquote_to_bytes

import atheris

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
#: Fixed idempotency keys, so a key is sometimes replayed (with another body).
IDEMPOTENCY_KEYS = ("fuzz-key-1", "fuzz-key-2")
CONTENT_TYPES = (
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=fuzz",
    "text/plain",
    "application/json; charset=latin-1",
)
#: Texts a JSON body is built from: odd numbers, odd strings, odd escapes.
ODD_NUMBERS = ("1e999999", "-0", "1E-400", "9" * 400, "0.1" + "1" * 300, "1e309", "-1e308", "NaN")
ODD_TEXTS = (
    '"\\ud800"',
    '"\\u0000"',
    '"\u202e\ufeff"',
    '"' + "a" * 70_000 + '"',
    '"\\udfff\\ud800"',
)


@dataclass
class Route:
    """``method`` on ``template``: ``{…}`` placeholders are path parameters; ``fields`` are
    the names its query string or body uses (fuzzed values are given to these most often)."""

    method: str
    template: str
    fields: tuple[str, ...] = ()
    body: dict[str, Any] | None = None


@dataclass
class Credentials:
    """Header values a real caller would send: a valid bearer token per role, a trusted
    service's Basic credential, a session cookie (each may be missing for a service)."""

    authorizations: list[str] = field(default_factory=list)
    cookies: list[str] = field(default_factory=list)
    #: Path parameter values that exist (a user or order id the service knows).
    known_ids: list[str] = field(default_factory=list)


@dataclass
class FuzzRequest:
    method: str
    #: Raw (already percent-encoded where it came from a route) path bytes.
    path: bytes
    query: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def describe(self) -> str:
        head = f"{self.method} {self.path!r}" + (f"?{self.query!r}" if self.query else "")
        headers = "\n".join(f"  {name!r}: {value[:200]!r}" for name, value in self.headers)
        return f"{head}\n{headers}\n  body ({len(self.body)} bytes): {self.body[:400]!r}"


def _text(fdp: atheris.FuzzedDataProvider, most: int) -> str:
    return str(fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, most)))


def _bytes(fdp: atheris.FuzzedDataProvider, most: int) -> bytes:
    return bytes(fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, most)))


def _pick(fdp: atheris.FuzzedDataProvider, items: Sequence[Any]) -> Any:
    return items[fdp.ConsumeIntInRange(0, len(items) - 1)]


def _path_value(fdp: atheris.FuzzedDataProvider, credentials: Credentials) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 4)
    if kind == 0 and credentials.known_ids:
        return str(_pick(fdp, credentials.known_ids)).encode()
    if kind == 1:
        return str(uuid.UUID(bytes=fdp.ConsumeBytes(16).ljust(16, b"\0"))).encode()
    if kind == 2:
        return _bytes(fdp, 64)  # raw: '/', '%', NUL and non-UTF-8 all possible
    return quote_from_bytes(_text(fdp, 80).encode("utf-8", "surrogatepass"), safe="").encode()


def json_text(fdp: atheris.FuzzedDataProvider, fields: Sequence[str], depth: int = 0) -> str:
    """A JSON-ish text: mostly valid JSON, with deep nesting, huge numbers, long and odd
    strings and the names the route uses as keys."""
    kind = fdp.ConsumeIntInRange(0, 11 if depth < 12 else 5)
    if kind == 0:
        return str(_pick(fdp, ("null", "true", "false", "{}", "[]", "")))
    if kind == 1:
        return str(fdp.ConsumeInt(fdp.ConsumeIntInRange(1, 24)))
    if kind == 2:
        return str(_pick(fdp, ODD_NUMBERS))
    if kind == 3:
        return json.dumps(_text(fdp, 64))
    if kind == 4:
        return str(_pick(fdp, ODD_TEXTS))
    if kind == 5:
        return repr(fdp.ConsumeFloat())
    if kind == 6:  # nesting, far deeper than any document needs
        levels = fdp.ConsumeIntInRange(1, 100_000)
        opener, closer = _pick(fdp, (("[", "]"), ('{"a":', "}")))
        return str(opener * levels + json_text(fdp, fields, depth + 1) + closer * levels)
    if kind in (7, 8):  # an object, keyed mostly by the route's own names
        members = []
        for _ in range(fdp.ConsumeIntInRange(0, 6)):
            name = _pick(fdp, fields) if fields and fdp.ConsumeBool() else _text(fdp, 16)
            members.append(f"{json.dumps(name)}:{json_text(fdp, fields, depth + 1)}")
        return "{" + ",".join(members) + "}"
    if kind == 9:
        values = [json_text(fdp, fields, depth + 1) for _ in range(fdp.ConsumeIntInRange(0, 6))]
        return "[" + ",".join(values) + "]"
    if kind == 10:  # many members or elements at once
        count = fdp.ConsumeIntInRange(0, 50_000)
        return "[" + ",".join(["0"] * count) + "]"
    return _text(fdp, 32)  # not JSON at all


def _body(fdp: atheris.FuzzedDataProvider, route: Route | None) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 4)
    fields = route.fields if route else ()
    if kind == 0:
        return b""
    if kind == 1:
        return _bytes(fdp, 512)
    if kind == 2 and route is not None and route.body is not None:
        # The route's real body with one member replaced by something JSON-ish.
        body = dict(route.body)
        name = _pick(fdp, [*body, *fields])
        replacement = json_text(fdp, fields)
        text = json.dumps({key: value for key, value in body.items() if key != name})
        return (text[:-1] + ("," if len(text) > 2 else "") + f'"{name}":{replacement}}}').encode(
            "utf-8", "surrogatepass"
        )
    if kind == 3:  # a form body
        pairs = [
            f"{quote_from_bytes(str(_pick(fdp, fields or ('x',))).encode())}="
            f"{quote_from_bytes(_text(fdp, 32).encode())}"
            for _ in range(fdp.ConsumeIntInRange(0, 8))
        ]
        return "&".join(pairs).encode()
    return json_text(fdp, fields).encode("utf-8", "surrogatepass")


def _query(fdp: atheris.FuzzedDataProvider, route: Route | None) -> bytes:
    kind = fdp.ConsumeIntInRange(0, 3)
    if kind == 0:
        return b""
    if kind == 1:
        return _bytes(fdp, 128)
    names = (route.fields if route else ()) or ("limit", "cursor")
    pairs = []
    for _ in range(fdp.ConsumeIntInRange(0, 6)):
        name = str(_pick(fdp, names)) if fdp.ConsumeBool() else _text(fdp, 12)
        value = str(_pick(fdp, ODD_NUMBERS)) if fdp.ConsumeIntInRange(0, 5) == 0 else _text(fdp, 40)
        pairs.append(
            quote_from_bytes(name.encode("utf-8", "surrogatepass"), safe="")
            + "="
            + quote_from_bytes(value.encode("utf-8", "surrogatepass"), safe="")
        )
    return "&".join(pairs).encode()


def _headers(
    fdp: atheris.FuzzedDataProvider, credentials: Credentials, body: bytes
) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = [(b"host", b"localhost")]
    auth = fdp.ConsumeIntInRange(0, 4)
    if auth in (1, 2) and credentials.authorizations:
        headers.append((b"authorization", str(_pick(fdp, credentials.authorizations)).encode()))
    elif auth == 3:
        scheme = _pick(fdp, (b"Bearer ", b"Basic ", b""))
        headers.append((b"authorization", scheme + _bytes(fdp, 300)))
    if credentials.cookies and fdp.ConsumeIntInRange(0, 3) == 0:
        headers.append((b"cookie", str(_pick(fdp, credentials.cookies)).encode()))
    key = fdp.ConsumeIntInRange(0, 3)
    if key == 1:
        headers.append((b"idempotency-key", str(_pick(fdp, IDEMPOTENCY_KEYS)).encode()))
    elif key == 2:
        headers.append((b"idempotency-key", _bytes(fdp, 300)))
    content_type = fdp.ConsumeIntInRange(0, len(CONTENT_TYPES) + 1)
    if content_type < len(CONTENT_TYPES):
        headers.append((b"content-type", CONTENT_TYPES[content_type].encode()))
    elif content_type == len(CONTENT_TYPES):
        headers.append((b"content-type", _bytes(fdp, 80)))
    if fdp.ConsumeIntInRange(0, 7) == 0:  # a length that lies
        headers.append((b"content-length", str(fdp.ConsumeIntInRange(0, 10**12)).encode()))
    else:
        headers.append((b"content-length", str(len(body)).encode()))
    for _ in range(fdp.ConsumeIntInRange(0, 3) if fdp.ConsumeBool() else 0):
        name = _pick(
            fdp,
            (b"x-request-id", b"traceparent", b"x-acting-for", b"accept", b"x-forwarded-for"),
        )
        headers.append((name if fdp.ConsumeBool() else _bytes(fdp, 24) or b"x", _bytes(fdp, 200)))
    return headers


def decode(data: bytes, routes: Sequence[Route], credentials: Credentials) -> FuzzRequest:
    """The request ``data`` describes (any bytes make some request)."""
    fdp = atheris.FuzzedDataProvider(data)
    index = fdp.ConsumeIntInRange(0, len(routes) + 1)
    route = routes[index] if index < len(routes) else None
    if route is None:
        method = str(_pick(fdp, METHODS)) if fdp.ConsumeBool() else _text(fdp, 10) or "GET"
        path = b"/" + _bytes(fdp, 200)
    else:
        method = route.method if fdp.ConsumeIntInRange(0, 7) else str(_pick(fdp, METHODS))
        # Each {parameter} of the template in turn; a value may itself hold "{" (the
        # template is split first: rescanning the path looked for a "}" inside a value).
        first, *rest = re.split(rb"\{[^}]*\}", route.template.encode())
        path = first + b"".join(_path_value(fdp, credentials) + part for part in rest)
    query = _query(fdp, route)
    body = _body(fdp, route)
    headers = _headers(fdp, credentials, body)
    return FuzzRequest(method=method, path=path, query=query, headers=headers, body=body)


# -- the request as the servers hand it to the app -------------------------------------------


def wsgi_environ(request: FuzzRequest) -> dict[str, Any]:
    """The environ gunicorn would build (PEP 3333: native strings are latin-1)."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": _percent_decoded(request.path).decode("latin-1"),
        "RAW_URI": (request.path + (b"?" + request.query if request.query else b"")).decode(
            "latin-1"
        ),
        "QUERY_STRING": request.query.decode("latin-1"),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
        key = name.decode("latin-1").upper().replace("-", "_")
        if key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            environ[key] = value.decode("latin-1")
        else:
            key = f"HTTP_{key}"
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


def asgi_scope(request: FuzzRequest) -> dict[str, Any]:
    """The scope uvicorn would build for an HTTP/1.1 request."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": "http",
        "path": _percent_decoded(request.path).decode("utf-8", "replace"),
        "raw_path": request.path,
        "query_string": request.query,
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


def _percent_decoded(path: bytes) -> bytes:
    return unquote_to_bytes(path)
