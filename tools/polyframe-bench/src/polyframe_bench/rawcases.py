"""The cases of ``polyframe-bench rawfuzz`` (:mod:`polyframe_bench.rawfuzz` sends them):
hostile bytes, not schemas.

Each case starts from one of a few valid requests to the platform's real routes
(:func:`seeds`, some with a member's bearer token so that they reach the handlers) and
stacks one to three mutations on it: the request line (methods, bad UTF-8, broken percent
escapes, dot segments, overlong targets), the header block (duplicates, 64 KB values,
obs-fold, bare CR or LF, NUL, Content-Length with Transfer-Encoding, bad chunk sizes,
conflicting lengths), the body (truncated, oversize, random bytes, JSON with deep nesting,
huge numbers, long strings, odd unicode) or the framing (pipelined, half-closed). Case
``i`` of seed ``S`` draws from its own PRNG (``random.Random(f"{S}/{i}")``), so
``--seed S --case i`` replays it alone.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, replace
from typing import Any

from polyframe_bench import rawmutations as mutations

USERS, ORDERS, AUDIT = "/api/users", "/api/orders", "/api/audit"
ORDER: dict[str, Any] = {
    "currency": "EUR",
    "items": [{"sku": "BOOK-42", "quantity": 1, "unit_price_cents": 990}],
}


@dataclass(frozen=True)
class Request:
    """One HTTP/1.1 request as parts; :meth:`encode` writes Content-Length unless told not."""

    method: bytes
    target: bytes
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes = b""
    version: bytes = b"HTTP/1.1"
    #: False once a mutation set its own framing (Content-Length / Transfer-Encoding).
    auto_length: bool = True
    name: str = ""

    def header(self, name: bytes, value: bytes) -> Request:
        return replace(self, headers=(*self.headers, (name, value)))

    def without(self, name: bytes) -> Request:
        lower = name.lower()
        return replace(self, headers=tuple(h for h in self.headers if h[0].lower() != lower))

    def encode(self) -> bytes:
        headers = list(self.headers)
        if self.auto_length and (self.body or self.method in (b"POST", b"PUT", b"PATCH")):
            headers.append((b"Content-Length", str(len(self.body)).encode()))
        head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        return (
            self.method
            + b" "
            + self.target
            + b" "
            + self.version
            + b"\r\n"
            + head
            + b"\r\n"
            + self.body
        )


@dataclass(frozen=True)
class Case:
    index: int
    seed: int
    #: The mutations applied, e.g. ``"header: obs-fold + body: deep nesting"``.
    category: str
    #: The route the case was cut from (its seed request's name).
    route: str
    data: bytes
    #: Requests in ``data`` (pipelined cases send several) and whether the last is a HEAD
    #: (its answer has no body; a pipelined case's first request never is one).
    requests: int = 1
    head: bool = False
    half_close: bool = False


# -- seeds ----------------------------------------------------------------------------------


def seeds(host: str, token: str | None) -> list[Request]:
    """Valid requests to the platform's routes (deploy/routes.yaml); bearer-token ones only
    when ``token`` is given."""
    base = ((b"Host", host.encode()), (b"User-Agent", b"polyframe-rawfuzz"))
    closing = (*base, (b"Connection", b"close"))
    json_type = (b"Content-Type", b"application/json")
    bearer = ((b"Authorization", b"Bearer " + token.encode()),) if token else ()
    some_id = str(uuid.UUID(int=0x1234)).encode()
    email = f"rawfuzz-{uuid.uuid4().hex[:8]}@example.com"

    def request(
        method: str, target: str, *headers: tuple[bytes, bytes], body: bytes = b"", name: str = ""
    ) -> Request:
        return Request(
            method.encode(),
            target.encode(),
            (*closing, *headers),
            body,
            name=name or f"{method} {target}",
        )

    found = [
        request("GET", f"{USERS}/.well-known/jwks.json"),
        request("GET", f"{USERS}/openapi.json"),
        request(
            "POST",
            f"{USERS}/login",
            json_type,
            body=json.dumps({"email": email, "password": "not the password"}).encode(),
        ),
        request(
            "POST",
            f"{USERS}/register",
            json_type,
            body=json.dumps(
                {"email": email, "password": "a long passphrase", "full_name": "Raw Fuzz"}
            ).encode(),
        ),
        request("GET", f"{ORDERS}?limit=5"),
        request("GET", f"{AUDIT}/events?limit=5"),
        request("GET", "/admin/login/"),
        request(
            "POST",
            "/admin/login/",
            (b"Content-Type", b"application/x-www-form-urlencoded"),
            body=b"username=someone&password=wrong&next=%2Fadmin%2F",
        ),
    ]
    if token:
        found += [
            request("GET", f"{USERS}/me", *bearer),
            request("GET", f"{ORDERS}?limit=5", *bearer, name=f"GET {ORDERS} (member)"),
            request("GET", f"{ORDERS}/{some_id.decode()}", *bearer),
            request(
                "POST",
                ORDERS,
                *bearer,
                json_type,
                (b"Idempotency-Key", uuid.uuid4().hex.encode()),
                body=json.dumps(ORDER).encode(),
            ),
            request("POST", f"{ORDERS}/{some_id.decode()}/cancel", *bearer),
            request("GET", f"{AUDIT}/events?limit=5", *bearer, name=f"GET {AUDIT}/events (member)"),
        ]
    return found


#: Each mutation a case may draw, by the category its answers are counted under.
MUTATIONS: dict[str, mutations.Mutation] = {
    "line: method": mutations.m_method,
    "line: path": mutations.m_path,
    "line: query": mutations.m_query,
    "line: version": mutations.m_version,
    "header: duplicate": mutations.m_duplicate,
    "header: 64 KB": mutations.m_big_header,
    "header: many": mutations.m_many_headers,
    "header: obs-fold": mutations.m_obs_fold,
    "header: CR/LF/NUL": mutations.m_bad_bytes,
    "header: content-type": mutations.m_content_type,
    "header: authorization": mutations.m_auth,
    "header: other": mutations.m_misc_header,
    "framing: CL/TE/chunks": mutations.m_smuggle,
    "body: truncated": mutations.m_truncated,
    "body: oversize": mutations.m_oversize,
    "body: random bytes": mutations.m_random_body,
    "body: JSON-ish": mutations.m_json,
}


def _havoc(rng: random.Random, data: bytes) -> bytes:
    """Byte-level noise on the encoded request: flips, inserts, deletes."""
    buffer = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        if not buffer:
            break
        at = rng.randrange(len(buffer))
        op = rng.randrange(3)
        if op == 0:
            buffer[at] = rng.getrandbits(8)
        elif op == 1:
            buffer[at:at] = rng.choice([b"\r", b"\n", b"\x00", b"\r\n", b" ", b":", b"%", b"\xff"])
        else:
            del buffer[at : at + rng.randint(1, 8)]
    return bytes(buffer)


def make_case(seed: int, index: int, base: list[Request]) -> Case:
    """Case ``index`` of the run with ``seed``: the same bytes whenever it is made again."""
    rng = random.Random(f"{seed}/{index}")
    request = rng.choice(base)
    names = rng.sample(sorted(MUTATIONS), k=rng.choice([1, 1, 1, 2, 2, 3]))
    for name in names:
        request = MUTATIONS[name](rng, request)
    data = request.encode()
    requests, head = 1, request.method == b"HEAD"
    shape = rng.random()
    if shape < 0.10:
        names.append("bytes: havoc")
        data = _havoc(rng, data)
    elif shape < 0.20:  # pipelined: a valid request first (kept alive), the mutated one after
        names.append("framing: pipelined")
        first = rng.choice(base).without(b"Connection")
        data = first.encode() + data
        requests += 1
    half_close = "body: truncated" in names or rng.random() < 0.1
    if half_close and "body: truncated" not in names:
        names.append("framing: half-closed")
    return Case(index, seed, " + ".join(names), request.name, data, requests, head, half_close)
