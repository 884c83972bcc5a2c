"""The routing table (``deploy/routes.yaml``): public prefix -> service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from polyframe_dev.paths import repo_root


@dataclass(frozen=True, slots=True)
class Route:
    service: str
    prefix: str

    @property
    def traefik_rule(self) -> str:
        # Exactly the prefix or below it: /api/users and /api/users/…, never /api/usersX.
        return f"Path(`{self.prefix}`) || PathPrefix(`{self.prefix}/`)"


def routing_table_path() -> Path:
    return repo_root() / "deploy" / "routes.yaml"


def load_routes(path: Path | None = None) -> list[Route]:
    document = yaml.safe_load((path or routing_table_path()).read_text(encoding="utf-8"))
    routes: list[Route] = []
    for service, spec in document["services"].items():
        for prefix in spec["prefixes"]:
            if not prefix.startswith("/") or prefix.endswith("/"):
                raise ValueError(f"{service}: prefix {prefix!r} must start and not end with '/'")
            routes.append(Route(service=service, prefix=prefix))
    seen: set[str] = set()
    for route in routes:
        if route.prefix in seen:
            raise ValueError(f"prefix {route.prefix} is routed twice")
        seen.add(route.prefix)
    return routes
