"""Ports on 127.0.0.1 picked at run time.

Every port of one pick is held open until all are chosen, so one pick never hands out the same
port twice: two probes bound and closed one after the other may get the same number back from
the kernel, and a server then fails to bind its second listener ("Address already in use").
"""

from __future__ import annotations

import contextlib
import socket


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that nothing listened on when they were picked."""
    with contextlib.ExitStack() as held:
        ports: list[int] = []
        for _ in range(count):
            probe = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            probe.bind((host, 0))
            ports.append(int(probe.getsockname()[1]))
        return ports


def free_port(host: str = "127.0.0.1") -> int:
    """One port that nothing listens on now (the server to use it binds it later itself; a
    client connecting to it before then is refused)."""
    return free_ports(1, host)[0]
