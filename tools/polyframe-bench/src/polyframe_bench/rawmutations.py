"""The mutations of ``polyframe-bench rawfuzz``'s cases (:mod:`polyframe_bench.rawcases`
stacks one to three on a valid request): the request line, the header block, the framing and
the body, each a function of the case's PRNG and the request so far."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyframe_bench.rawcases import Request

Mutation = Callable[[random.Random, "Request"], "Request"]
HOSTILE_NUMBERS = (
    "1e999999",
    "-1e999999",
    "1" * 5000,
    "-" + "9" * 400,
    "0." + "0" * 4000 + "1",
    "1.5e-99999",
    "9007199254740993",
    "NaN",
    "Infinity",
    "-0",
    "1E+",
    "0x10",
)
ODD_STRINGS = (
    "\ud800",  # a lone surrogate (json.dumps escapes it; the parser must cope)
    "\u202e\u0000\ufeff",
    "\U0001f600" * 2000,
    "a" * 60_000,
    "\\" * 3000,
    "é" * 20_000,
)


def _path_and_query(target: bytes) -> tuple[bytes, bytes]:
    path, _, query = target.partition(b"?")
    return path, query


def m_method(rng: random.Random, req: Request) -> Request:
    methods = [
        b"get",
        b"FOO",
        b"GET\x00",
        b"G" * 5000,
        b"CONNECT",
        b"TRACE",
        b"OPTIONS",
        b"HEAD",
        b"DELETE",
        b"PUT",
        b"PATCH",
        b"PRI",
        b"POST ",
        b"\xff\xfe",
        b"",
    ]
    return replace(req, method=rng.choice(methods))


def m_path(rng: random.Random, req: Request) -> Request:
    path, query = _path_and_query(req.target)
    choices = [
        path + b"/%ff%fe",
        path + b"/\xff\xc0\xaf",
        path + b"%",
        path + b"%zz",
        path + b"%00",
        path + b"/../../../etc/passwd",
        path + b"/%2e%2e/%2e%2e/admin/",
        b"/api/users/../orders",
        b"/api/orders/./../users/me",
        path + b"/" + b"a" * rng.choice([3000, 9000, 70_000]),
        b"/" + b"../" * 200 + b"api/users/me",
        b"//" + path,
        b"http://127.0.0.1" + path,
        b"*",
        path.lstrip(b"/"),
        path + b"\t",
        path + b"#fragment",
        path.replace(b"/", b"\\"),
        path.upper(),
        path + b";jsessionid=1",
        path + b"/" + str(uuid.UUID(int=rng.getrandbits(128))).encode() + b"%2F..",
    ]
    new = rng.choice(choices)
    return replace(req, target=new + (b"?" + query if query else b""))


def m_query(rng: random.Random, req: Request) -> Request:
    path, _query = _path_and_query(req.target)
    choices = [
        b"&".join(b"k%d=v" % i for i in range(rng.choice([200, 2000, 10_000]))),
        b"&".join(b"limit=1" for _ in range(rng.choice([50, 1000]))),
        b"limit=-1",
        b"limit=1e309",
        b"limit=99999999999999999999999999",
        b"limit=%ff",
        b"cursor=" + bytes(rng.getrandbits(8) for _ in range(64)).hex().encode(),
        b"cursor=%%%%",
        b"cursor=" + b"A" * 5000,
        b"user_id=" + b"\xff\xfe",
        b"a[b][c][d][e]=1",
        b"=&=&&&==",
        b"limit",
    ]
    return replace(req, target=path + b"?" + rng.choice(choices))


def m_version(rng: random.Random, req: Request) -> Request:
    return replace(
        req,
        version=rng.choice(
            [b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1x", b"HTTP/9.9", b"", b"http/1.1", b"HTTP/1.01"]
        ),
    )


def m_duplicate(rng: random.Random, req: Request) -> Request:
    if not req.headers:
        return req
    name, value = rng.choice(req.headers)
    other = rng.choice([value, b"other", b"", value + b", " + value])
    return req.header(name, other)


def m_big_header(rng: random.Random, req: Request) -> Request:
    size = rng.choice([8 * 1024, 64 * 1024, 70 * 1024])
    name = rng.choice([b"X-Big", b"Cookie", b"Authorization", b"Idempotency-Key", b"Accept"])
    return req.header(name, b"a" * size)


def m_many_headers(rng: random.Random, req: Request) -> Request:
    for i in range(rng.choice([100, 500, 2000])):
        req = req.header(b"X-H-%d" % i, b"v")
    return req


def m_obs_fold(rng: random.Random, req: Request) -> Request:
    return req.header(b"X-Folded", b"first\r\n second").header(
        b"Content-Type", b"application/json\r\n\tcharset=utf-8"
    )


def m_bad_bytes(rng: random.Random, req: Request) -> Request:
    value = rng.choice([b"a\rb", b"a\nb", b"a\x00b", b"\x7f\x80\xff", b"a\r\n\r\nGET / HTTP/1.1"])
    name = rng.choice([b"X-Bad", b"X Bad", b"X-Bad ", b"X-B\x00d", b"", b":authority"])
    return req.header(name, value)


def m_smuggle(rng: random.Random, req: Request) -> Request:
    """Content-Length with Transfer-Encoding, conflicting lengths, bad chunk sizes."""
    body = req.body or b"{}"
    kind = rng.randrange(8)
    req = req.without(b"Content-Length").without(b"Transfer-Encoding")
    req = replace(req, auto_length=False)
    smuggled = b"GET /api/users/me HTTP/1.1\r\nHost: x\r\n\r\n"
    if kind == 0:  # CL.TE
        chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n" + smuggled
        return replace(
            req.header(b"Content-Length", b"%d" % len(body)).header(
                b"Transfer-Encoding", b"chunked"
            ),
            body=chunked,
        )
    if kind == 1:  # conflicting lengths, two headers
        return replace(
            req.header(b"Content-Length", b"%d" % len(body)).header(
                b"Content-Length", b"%d" % (len(body) + 5)
            ),
            body=body + b"XXXXX",
        )
    if kind == 2:  # conflicting lengths, one header
        return replace(
            req.header(b"Content-Length", b"%d, %d" % (len(body), len(body) + 1)), body=body
        )
    if kind == 3:  # bad chunk sizes
        size = rng.choice(
            [b"zz", b"-1", b"ffffffffffffffffffff", b"1;" + b"e" * 5000, b" 2", b"0x2", b""]
        )
        return replace(
            req.header(b"Transfer-Encoding", b"chunked"),
            body=size + b"\r\n" + body + b"\r\n0\r\n\r\n",
        )
    if kind == 4:  # odd transfer codings
        coding = rng.choice(
            [b"chunked, identity", b"xchunked", b"chunked\x00", b" chunked", b"gzip", b"Chunked"]
        )
        return replace(
            req.header(b"Transfer-Encoding", coding),
            body=b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n",
        )
    if kind == 5:  # a length that is not a number
        return replace(
            req.header(
                b"Content-Length",
                rng.choice([b"-1", b"1e3", b"+5", b"99999999999999999999", b"0x10", b" "]),
            ),
            body=body,
        )
    if kind == 6:  # chunked, never finished
        return replace(
            req.header(b"Transfer-Encoding", b"chunked"), body=b"%x\r\n" % (len(body) + 100) + body
        )
    # a body smuggled after a zero length
    return replace(req.header(b"Content-Length", b"0"), body=smuggled)


def m_truncated(rng: random.Random, req: Request) -> Request:
    """A Content-Length above the bytes that follow (the connection is then half-closed)."""
    body = req.body or b'{"a": 1}'
    length = len(body) + rng.choice([1, 100, 10_000])
    cut = replace(
        req.without(b"Content-Length"), auto_length=False, body=body[: rng.randrange(len(body) + 1)]
    )
    return cut.header(b"Content-Length", b"%d" % length)


def m_oversize(rng: random.Random, req: Request) -> Request:
    size = rng.choice([65 * 1024, 200 * 1024, 2 * 1024 * 1024 + 10])
    return replace(req, body=b'{"pad": "' + b"x" * size + b'"}')


def m_random_body(rng: random.Random, req: Request) -> Request:
    return replace(
        req, body=bytes(rng.getrandbits(8) for _ in range(rng.choice([1, 16, 512, 4096])))
    )


def _hostile_value(rng: random.Random) -> Any:
    kind = rng.randrange(6)
    if kind == 0:
        return json.loads("[" * 5 + "]" * 5)
    if kind == 1:
        return rng.choice(ODD_STRINGS)
    if kind == 2:
        return {f"k{i}": i for i in range(rng.choice([1000, 20_000]))}
    if kind == 3:
        return list(range(rng.choice([1000, 30_000])))
    if kind == 4:
        return rng.choice([None, True, False, [], {}, 0, -1, 2**63, 2**64 + 1, -(2**63) - 1, 1.5])
    return "\x00"


def _raw_number(rng: random.Random) -> bytes:
    return rng.choice(HOSTILE_NUMBERS).encode()


def m_json(rng: random.Random, req: Request) -> Request:
    """JSON-ish bodies: the seed's own document with a leaf replaced, or a hostile shape."""
    kind = rng.randrange(7)
    try:
        document = json.loads(req.body) if req.body else {}
    except ValueError:
        document = {}
    if kind == 0:  # deep nesting
        depth = rng.choice([100, 1000, 10_000, 100_000])
        opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
        body = opener * depth + b"1" + closer * depth
    elif kind == 1:  # a huge or odd number where a number goes
        body = (
            json.dumps(_replace_leaf(rng, document, "@@N@@"))
            .encode()
            .replace(b'"@@N@@"', _raw_number(rng))
        )
    elif kind == 2:  # a leaf replaced by a hostile value
        body = json.dumps(_replace_leaf(rng, document, _hostile_value(rng))).encode()
    elif kind == 3:  # duplicate keys
        inner = (
            json.dumps(document).encode()[1:-1]
            if isinstance(document, dict) and document
            else b'"a":1'
        )
        body = b"{" + inner + b"," + inner + b"}"
    elif kind == 4:  # invalid UTF-8 / surrogates inside strings
        body = json.dumps(document).encode().replace(b'"', b'"\xed\xa0\x80', 1) + rng.choice(
            [b"", b"\xc0\xaf", b"\xff"]
        )
    elif kind == 5:  # truncated JSON
        encoded = json.dumps(document).encode()
        body = encoded[: rng.randrange(max(1, len(encoded)))]
    else:  # many members
        body = json.dumps(
            {
                **(document if isinstance(document, dict) else {}),
                **{f"f{i}": i for i in range(rng.choice([500, 50_000]))},
            }
        ).encode()
    req = (
        req
        if any(h[0].lower() == b"content-type" for h in req.headers)
        else req.header(b"Content-Type", b"application/json")
    )
    return replace(req, body=body)


def _replace_leaf(rng: random.Random, document: Any, value: Any) -> Any:
    if isinstance(document, dict) and document:
        key = rng.choice(sorted(document))
        if rng.random() < 0.5 and isinstance(document[key], (dict, list)):
            return {**document, key: _replace_leaf(rng, document[key], value)}
        return {**document, key: value}
    if isinstance(document, list) and document:
        index = rng.randrange(len(document))
        copy = list(document)
        copy[index] = _replace_leaf(rng, copy[index], value) if rng.random() < 0.5 else value
        return copy
    return value


def m_content_type(rng: random.Random, req: Request) -> Request:
    value = rng.choice(
        [
            b"application/json; charset=utf-16",
            b"application/json; charset=\xff",
            b"multipart/form-data",
            b"multipart/form-data; boundary=" + b"b" * 3000,
            b"application/x-www-form-urlencoded",
            b"text/plain",
            b"application/json;" * 500,
            b"",
        ]
    )
    req = req.without(b"Content-Type").header(b"Content-Type", value)
    if b"form" in value and rng.random() < 0.5:
        req = replace(
            req, body=b"&".join(b"f%d=%d" % (i, i) for i in range(rng.choice([1000, 20_000])))
        )
    return req


def m_auth(rng: random.Random, req: Request) -> Request:
    value = rng.choice(
        [
            b"Bearer ",
            b"Bearer " + b"a" * 9000,
            b"Bearer e30.e30.",
            b"Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.",
            b"Basic %%%%",
            b"Basic " + b"QUFB" * 2000,
            b"Bearer \xff\xfe",
            b"bearer x.y.z",
            b"Digest realm=x",
        ]
    )
    return req.without(b"Authorization").header(b"Authorization", value)


def m_misc_header(rng: random.Random, req: Request) -> Request:
    name, value = rng.choice(
        [
            (b"Expect", b"100-continue"),
            (b"Expect", b"999-weird"),
            (b"Connection", b"Upgrade"),
            (b"Upgrade", b"websocket"),
            (b"Content-Encoding", b"gzip"),
            (b"Accept-Encoding", b"gzip;q=" + b"9" * 500),
            (b"X-Forwarded-For", b"1.2.3.4, \xff"),
            (b"Range", b"bytes=0-1,2-3," * 300),
            (b"Idempotency-Key", b"\x00" * 10),
            (b"Idempotency-Key", b"k" * 5000),
            (b"Traceparent", b"00-" + b"f" * 32 + b"-" + b"0" * 16 + b"-01"),
            (b"X-Request-Id", b"\xff" * 300),
            (b"Host", b""),
        ]
    )
    if name == b"Host" and rng.random() < 0.5:
        return req.without(b"Host")
    return req.header(name, value)


def m_keep_alive(rng: random.Random, req: Request) -> Request:
    """Drop ``Connection: close``: the connection stays open after the answer."""
    return req.without(b"Connection")
