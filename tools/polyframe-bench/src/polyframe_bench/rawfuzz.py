"""``polyframe-bench rawfuzz``: hostile bytes, not schemas, over raw TCP to the ingress.

The cases (valid requests to the real routes, mutated) are :mod:`polyframe_bench.rawcases`;
this module sends them and judges the answers. Every case is bounded (a socket timeout, a
size cap) and the run too (a count and a time limit). Each response's status is recorded by
mutation category; ``none`` is a connection closed without an answer, ``reset`` a reset,
``timeout`` no answer within the bound.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from polyframe_bench.rawcases import USERS, Case, make_case, seeds

#: Bytes read from one connection at most (a 3 MB answer would be a fault of its own).
MAX_READ = 1024 * 1024


@dataclass
class Outcome:
    case: Case
    #: One entry per answer: a status code (``"400"``), or ``none``/``reset``/``timeout``.
    statuses: list[str]
    #: Each 5xx answer that is a fault (status and the start of its body).
    server_errors: list[str] = field(default_factory=list)
    #: Each 5xx the ingress's HTTP server gave to framing it cannot forward (:func:`refusal`).
    refusals: list[str] = field(default_factory=list)


# -- sending ----------------------------------------------------------------------------------


Answer = tuple[str, bytes, bytes]


def _parse(buffer: bytes, head_only: bool, requests: int = 1) -> tuple[list[Answer], bool]:
    """The complete answers at the start of ``buffer`` (status, content type, first bytes of
    the body), and whether the last one's body runs to the connection's end (no length).
    ``head_only``: the answer to request number ``requests`` (the last) has no body."""
    answers: list[Answer] = []
    rest = buffer
    while True:
        end = rest.find(b"\r\n\r\n")
        if end < 0:
            return answers, False
        head = rest[:end].split(b"\r\n")
        parts = head[0].split(b" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            answers.append(("garbled", b"", rest[:200]))
            return answers, False
        status = parts[1].decode()
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        rest = rest[end + 4 :]
        kind = headers.get(b"content-type", b"").split(b";")[0].strip()
        if status.startswith("1"):
            continue
        if (head_only and len(answers) == requests - 1) or status in ("204", "304"):
            answers.append((status, kind, b""))
            continue
        if b"content-length" in headers and headers[b"content-length"].isdigit():
            length = int(headers[b"content-length"])
            if len(rest) < length:
                return answers, False
            answers.append((status, kind, rest[:300]))
            rest = rest[length:]
            continue
        if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            done = rest.find(b"\r\n0\r\n\r\n")
            if rest.startswith(b"0\r\n\r\n"):
                done = -2
            if done == -1:
                return answers, False
            answers.append((status, kind, rest[:300]))
            rest = rest[done + 7 :]
            continue
        answers.append((status, kind, rest[:300]))
        return answers, True


def send(host: str, port: int, case: Case, timeout: float) -> Outcome:
    """Send ``case`` on a connection of its own and read what comes back (bounded)."""
    buffer = b""
    error: str | None = None
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            try:
                sock.sendall(case.data)
                if case.half_close:
                    sock.shutdown(socket.SHUT_WR)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may answer (e.g. 413) and close before it read everything
            while len(buffer) < MAX_READ:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                answers, to_close = _parse(buffer, case.head, case.requests)
                if len(answers) >= case.requests and not to_close:
                    break
    except TimeoutError:
        error = "timeout"
    except ConnectionResetError:
        error = "reset"
    except OSError as exc:
        error = f"error: {exc.__class__.__name__}"
    answers, _ = _parse(buffer, case.head, case.requests)
    statuses = [status for status, _, _ in answers]
    if not answers:
        statuses = [error or "none"]
    elif len(answers) < case.requests and error:
        statuses.append(error)
    outcome = Outcome(case, statuses)
    for status, kind, body in answers:
        if status.isdigit() and int(status) >= 500:
            shown = f"{status} {kind.decode(errors='replace')} {body[:300]!r}"
            (
                outcome.refusals if refusal(case, status, kind, body) else outcome.server_errors
            ).append(shown)
    return outcome


#: Mutations that break the framing itself: what follows the head cannot be forwarded as is.
BROKEN_FRAMING = frozenset(
    {"body: truncated", "framing: CL/TE/chunks", "line: version", "line: method", "bytes: havoc"}
)
#: The plain-text answers of Traefik's HTTP server (Go's net/http) and of its proxy to a
#: request it could not read whole: an HTTP version it does not speak (505), a transfer coding
#: or method it does not implement (501), a chunked body that breaks off (500) or a body
#: shorter than its Content-Length (502). Traefik has no setting for these statuses.
INGRESS_REFUSALS = {
    "505": (b"", b"505 HTTP Version Not Supported"),
    "501": (b"", b"Unsupported transfer encoding", b"Not Implemented"),
    "500": (b"Internal Server Error",),
    "502": (b"Bad Gateway",),
}


def broke_framing(case: Case) -> bool:
    return bool(BROKEN_FRAMING & set(case.category.split(" + ")))


def refusal(case: Case, status: str, kind: bytes, body: bytes) -> bool:
    """True if a 5xx is the ingress refusing a request whose framing the case broke; never a
    service's answer (problem+json), nor one to a request whose framing was intact."""
    if kind == b"application/problem+json" or status not in INGRESS_REFUSALS:
        return False
    if not broke_framing(case):
        return False
    if not body:  # an answer to HEAD has none; Go's 501/505 may have none either
        return case.head or b"" in INGRESS_REFUSALS[status]
    return any(body.startswith(text) for text in INGRESS_REFUSALS[status] if text)


# -- a run ------------------------------------------------------------------------------------


@dataclass
class Results:
    seed: int
    sent: int = 0
    seconds: float = 0.0
    #: category -> status -> count (a case with two mutations counts under each of them).
    by_category: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    by_route: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    statuses: Counter[str] = field(default_factory=Counter)
    #: Cases answered with a 5xx that is a fault.
    failures: list[Outcome] = field(default_factory=list)
    #: Cases whose broken framing the ingress refused with a 5xx of its own (:func:`refusal`).
    refused: list[Outcome] = field(default_factory=list)
    #: Cases with broken framing that got no answer before the bound (a body that never ends):
    #: when the connection closes, Traefik's proxy may count a 5xx the client never saw.
    unanswered_broken: int = 0

    def proxy_refusals(self) -> int:
        """The most 5xx Traefik's proxy may have counted for the cases' broken framing."""
        statuses = (s for o in self.refused for s in o.statuses)
        return sum(s in ("500", "502") for s in statuses) + self.unanswered_broken

    def add(self, outcome: Outcome) -> None:
        self.sent += 1
        for status in outcome.statuses:
            self.statuses[status] += 1
            self.by_route[outcome.case.route][status] += 1
            for name in outcome.case.category.split(" + "):
                self.by_category[name][status] += 1
        if outcome.server_errors:
            self.failures.append(outcome)
        elif outcome.refusals:
            self.refused.append(outcome)
        elif broke_framing(outcome.case) and not any(s.isdigit() for s in outcome.statuses):
            self.unanswered_broken += 1

    def reached_services(self) -> int:
        """Answers that are not Traefik's own refusals of the bytes (400 with no body shape)."""
        return sum(
            n for s, n in self.statuses.items() if s.isdigit() and s not in ("400", "431", "414")
        )

    def table(self) -> str:
        lines = [
            f"raw fuzz, seed {self.seed}: {self.sent} cases in {self.seconds:.1f} s, "
            f"{len(self.failures)} answered a faulty 5xx, {len(self.refused)} with broken "
            "framing refused by the ingress's own 5xx; "
            f"statuses {dict(sorted(self.statuses.items()))}"
        ]
        for name, counts in sorted(self.by_category.items()):
            lines.append(f"  {name:<24} {dict(sorted(counts.items()))}")
        lines.append("  by route:")
        for name, counts in sorted(self.by_route.items()):
            lines.append(f"  {name:<40} {dict(sorted(counts.items()))}")
        return "\n".join(lines)

    def describe_failures(
        self, secrets: tuple[str, ...] = (), limit: int = 10, refused: bool = False
    ) -> str:
        """Each 5xx case (or each refused one): seed, index, bytes (secrets masked) to replay."""
        out = []
        for outcome in (self.refused if refused else self.failures)[:limit]:
            data = outcome.case.data
            for secret in secrets:
                data = data.replace(secret.encode(), b"<secret>")
            shown = (
                data
                if len(data) <= 1500
                else data[:1000] + b"...<%d bytes>..." % len(data) + data[-300:]
            )
            out.append(
                f"seed {outcome.case.seed} case {outcome.case.index} ({outcome.case.category}; "
                f"{outcome.case.route}): {outcome.statuses}\n    sent {shown!r}\n"
                f"    got {outcome.server_errors or outcome.refusals}"
            )
        return "\n".join(out)


def run(
    url: str,
    *,
    seed: int,
    requests: int = 2000,
    seconds: float = 45.0,
    token: str | None = None,
    concurrency: int = 4,
    timeout: float = 10.0,
    cases: list[int] | None = None,
    stop: threading.Event | None = None,
    progress: Callable[[str], None] | None = None,
) -> Results:
    """Fuzz the ingress at ``url`` with at most ``requests`` cases in at most ``seconds``
    (or exactly ``cases``); stops early when ``stop`` is set."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{url}: an http:// URL of the ingress is needed")
    host, port = parts.hostname, parts.port or 80
    base = seeds(f"{host}:{port}", token)
    results = Results(seed)
    started = time.monotonic()
    deadline = started + seconds
    indexes: Iterator[int] = iter(cases if cases is not None else range(requests))
    next_report = started + 5
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="rawfuzz") as pool:
        running: set[Future[Outcome]] = set()
        while True:
            while (
                len(running) < concurrency
                and time.monotonic() < deadline
                and not (stop and stop.is_set())
            ):
                index = next(indexes, None)
                if index is None:
                    break
                running.add(pool.submit(send, host, port, make_case(seed, index, base), timeout))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results.add(future.result())
            if progress and time.monotonic() >= next_report:
                next_report += 5
                progress(
                    f"{results.sent} cases, {len(results.failures)} answered 5xx, "
                    f"statuses {dict(results.statuses.most_common(6))}"
                )
    results.seconds = time.monotonic() - started
    return results


def member_token(url: str) -> str:
    """Register a new member at ``url`` and log in; the bearer token."""
    email = f"rawfuzz-{uuid.uuid4().hex}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    with httpx.Client(base_url=url, timeout=15) as client:
        registered = client.post(
            f"{USERS}/register",
            json={"email": email, "password": password, "full_name": "Raw Fuzz"},
        )
        registered.raise_for_status()
        answer = client.post(f"{USERS}/login", json={"email": email, "password": password})
        answer.raise_for_status()
        return str(answer.json()["access_token"])
