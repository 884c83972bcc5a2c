"""Who may do what: RBAC Roles' rules, evaluated as Kubernetes' RBAC authorizer does, and the
user a bearer token authenticates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """One rule of an RBAC Role, evaluated as Kubernetes' RBAC authorizer does."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    resource_names: tuple[str, ...] = ()

    def allows(self, verb: str, group: str, resource: str, subresource: str, name: str) -> bool:
        """``resource`` is the plural name, ``subresource`` e.g. ``log`` (``pods/log``)."""
        combined = f"{resource}/{subresource}" if subresource else resource
        return (
            any(v in ("*", verb) for v in self.verbs)
            and any(g in ("*", group) for g in self.api_groups)
            and any(
                r in ("*", combined) or (bool(subresource) and r == f"*/{subresource}")
                for r in self.resources
            )
            and (not self.resource_names or name in self.resource_names)
        )


@dataclass(frozen=True)
class User:
    """Whom a bearer token authenticates: the name RBAC messages give, and the rules of the Role
    bound to it in the source's namespace (None: cluster-admin, everywhere)."""

    name: str
    rules: tuple[Rule, ...] | None


def rules_from_role(role: Mapping[str, Any]) -> tuple[Rule, ...]:
    """The rules of a rendered Role (or ClusterRole) object."""
    if role.get("kind") not in ("Role", "ClusterRole"):
        raise ValueError(f"not a Role: kind {role.get('kind')!r}")
    return tuple(
        Rule(
            api_groups=tuple(rule.get("apiGroups") or ()),
            resources=tuple(rule.get("resources") or ()),
            verbs=tuple(rule.get("verbs") or ()),
            resource_names=tuple(rule.get("resourceNames") or ()),
        )
        for rule in role.get("rules") or ()
    )
