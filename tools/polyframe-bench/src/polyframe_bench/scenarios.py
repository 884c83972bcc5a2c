"""What is measured: one named load (URL, request shape, connections) per scenario.

Per service: its cheapest authenticated read (directly, through Traefik, and with
instrumentation off) and one write; the order creation (an I/O-bound request
that calls the users service) at 50 and 200 connections; the bare framework
apps on the same server settings, and each framework's floor answering the
service's read (:mod:`polyframe_bench.floor`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from polyframe_bench.platform import BareProcess, Platform

LUA = Path(__file__).parent / "lua" / "request.lua"
READ_CONNECTIONS = 50


@dataclass(frozen=True, slots=True)
class Target:
    url: str
    #: The server whose process tree's CPU is charged to these requests.
    server_pid: int
    method: str = "GET"
    auth: str | None = None
    body: str | None = None
    unique: str = ""

    def env(self, nonce: int) -> dict[str, str]:
        env = {"BENCH_METHOD": self.method, "BENCH_NONCE": str(nonce), "BENCH_UNIQUE": self.unique}
        if self.auth:
            env["BENCH_AUTH"] = self.auth
        if self.body:
            env["BENCH_BODY"] = self.body
        return env


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    #: ``users-fastapi`` …, or the bare app's name.
    subject: str
    kind: str  # read | write | io | bare
    via: str  # direct | ingress
    instrumented: bool
    connections: int
    #: Makes the target just before each run (a fresh token: they live 15 minutes).
    build: Callable[[], Target] = field(compare=False)

    def target(self) -> Target:
        return self.build()


def _basic(platform: Platform, service: str) -> str:
    import base64

    token = base64.b64encode(f"{service}:{platform.secret(service)}".encode()).decode()
    return f"Basic {token}"


#: Each service's read scenario: its path and its credentials on a platform.
SERVICE_READS: dict[str, tuple[Callable[[Platform], str], Callable[[Platform], str]]] = {
    "users-fastapi": (lambda p: "/api/users/me", lambda p: p.bearer()),
    "legacy-flask": (lambda p: f"/api/orders/{p.order_id}", lambda p: p.bearer()),
    "admin-django": (
        lambda p: "/api/audit/events?limit=1",
        lambda p: _basic(p, "legacy-flask"),
    ),
}
#: The same read on the service's floor app (no credentials: the row is in the path).
FLOOR_READS: dict[str, Callable[[Platform], str]] = {
    "users-fastapi": lambda p: f"/users/{p.user_id}",
    "legacy-flask": lambda p: f"/orders/{p.order_id}",
    "admin-django": lambda p: "/audit/events?limit=1",
}


def service_scenarios(on: Platform, off: Platform, *, quick: bool) -> list[Scenario]:
    """The services' loads on the instrumented platform ``on`` and its twin ``off``."""
    scenarios: list[Scenario] = []

    def reads(
        service: str, path: Callable[[Platform], str], auth: Callable[[Platform], str]
    ) -> None:
        for platform, instrumented in ((on, True), (off, False)):
            for via in ("direct", "ingress") if instrumented else ("direct",):

                def build(
                    platform: Platform = platform, via: str = via, service: str = service
                ) -> Target:
                    base = platform.service(service) if via == "direct" else platform.ingress
                    return Target(
                        base + path(platform), platform.server_pid(service), auth=auth(platform)
                    )

                flag = "on" if instrumented else "off"
                scenarios.append(
                    Scenario(
                        f"{service} read {via} instr-{flag}",
                        service,
                        "read",
                        via,
                        instrumented,
                        READ_CONNECTIONS,
                        build,
                    )
                )

    for service, (path, auth) in SERVICE_READS.items():
        reads(service, path, auth)
    if quick:
        return [s for s in scenarios if s.via == "direct"]

    order = '{"currency":"EUR","items":[{"sku":"BENCH-1","quantity":1,"unit_price_cents":100}]}'
    # Writes go to both platforms alike, so that both hold the same amount of data when
    # their reads are compared (and what instrumentation costs a write is measured too).
    for platform, instrumented in ((on, True), (off, False)):
        flag = "on" if instrumented else "off"

        def register(platform: Platform = platform) -> Target:
            return Target(
                platform.service("users-fastapi") + "/api/users/register",
                platform.server_pid("users-fastapi"),
                method="POST",
                unique="register",
            )

        def audit(platform: Platform = platform) -> Target:
            return Target(
                platform.service("admin-django") + "/api/audit/events",
                platform.server_pid("admin-django"),
                method="POST",
                auth=_basic(platform, "users-fastapi"),
                unique="audit",
            )

        scenarios += [
            Scenario(
                f"users-fastapi write (register) direct instr-{flag}",
                "users-fastapi",
                "write",
                "direct",
                instrumented,
                16,
                register,
            ),
            Scenario(
                f"admin-django write (audit event) direct instr-{flag}",
                "admin-django",
                "write",
                "direct",
                instrumented,
                READ_CONNECTIONS,
                audit,
            ),
        ]
        for connections in (50, 200) if instrumented else (50,):

            def create(platform: Platform = platform) -> Target:
                return Target(
                    platform.ingress + "/api/orders",
                    platform.server_pid("legacy-flask"),
                    method="POST",
                    auth=platform.bearer(),
                    body=order,
                )

            scenarios.append(
                Scenario(
                    f"legacy-flask create order (calls users) ingress c{connections} instr-{flag}",
                    "legacy-flask",
                    "io",
                    "ingress",
                    instrumented,
                    connections,
                    create,
                )
            )
    return scenarios


def bare_scenarios(bare: list[BareProcess]) -> list[Scenario]:
    scenarios = []
    for each in bare:

        def build(each: BareProcess = each) -> Target:
            assert each.process is not None
            return Target(each.url + "/hello", each.process.pid)

        scenarios.append(
            Scenario(
                f"{each.server.name} hello direct",
                each.server.name,
                "bare",
                "direct",
                False,
                READ_CONNECTIONS,
                build,
            )
        )
    return scenarios


def floor_scenarios(platform: Platform, floors: list[BareProcess]) -> list[Scenario]:
    """Each floor answering its service's read: the row of ``platform``, whose database it reads."""
    scenarios = []
    for each in floors:
        service = each.server.floor_of
        assert service is not None

        def build(each: BareProcess = each, service: str = service) -> Target:
            assert each.process is not None
            return Target(each.url + FLOOR_READS[service](platform), each.process.pid)

        scenarios.append(
            Scenario(
                f"{each.server.name} read direct",
                each.server.name,
                "floor",
                "direct",
                False,
                READ_CONNECTIONS,
                build,
            )
        )
    return scenarios
