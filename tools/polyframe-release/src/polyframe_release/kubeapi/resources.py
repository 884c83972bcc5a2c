"""What the API serves and how it reads a request, as the API server does: the resources and
groups, request targets, label and field selectors, legacy discovery, and ``Status`` errors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Resource:
    group: str
    kind: str
    short_names: tuple[str, ...] = ()
    in_all: bool = False  # in ``kubectl get all``
    namespaced: bool = True


#: Every resource served (all at version v1), by its plural name, in its own API group.
RESOURCES = {
    "pods": Resource("", "Pod", ("po",), in_all=True),
    "events": Resource("", "Event", ("ev",)),
    "services": Resource("", "Service", ("svc",), in_all=True),
    "endpoints": Resource("", "Endpoints", ("ep",)),
    "configmaps": Resource("", "ConfigMap", ("cm",)),
    "secrets": Resource("", "Secret"),
    "serviceaccounts": Resource("", "ServiceAccount", ("sa",)),
    "persistentvolumeclaims": Resource("", "PersistentVolumeClaim", ("pvc",)),
    "namespaces": Resource("", "Namespace", ("ns",), namespaced=False),
    "deployments": Resource("apps", "Deployment", ("deploy",), in_all=True),
    "statefulsets": Resource("apps", "StatefulSet", ("sts",), in_all=True),
    "replicasets": Resource("apps", "ReplicaSet", ("rs",), in_all=True),
    "jobs": Resource("batch", "Job", (), in_all=True),
    "cronjobs": Resource("batch", "CronJob", ("cj",), in_all=True),
    "poddisruptionbudgets": Resource("policy", "PodDisruptionBudget", ("pdb",)),
    "ingresses": Resource("networking.k8s.io", "Ingress", ("ing",)),
    "networkpolicies": Resource("networking.k8s.io", "NetworkPolicy", ("netpol",)),
    "roles": Resource("rbac.authorization.k8s.io", "Role"),
    "rolebindings": Resource("rbac.authorization.k8s.io", "RoleBinding"),
}
GROUPS = ("apps", "batch", "policy", "networking.k8s.io", "rbac.authorization.k8s.io")
#: Field selectors each resource accepts beyond metadata.name and metadata.namespace (a subset
#: of the API server's; any other field is refused, as there).
FIELDS = {
    "pods": ("spec.nodeName", "spec.serviceAccountName", "status.phase", "status.podIP"),
    "events": (
        *("involvedObject.kind", "involvedObject.namespace", "involvedObject.name"),
        *("involvedObject.uid", "involvedObject.apiVersion", "involvedObject.fieldPath"),
        *("reason", "type"),
    ),
    "secrets": ("type",),
}
TRUE = {"1", "t", "T", "true", "TRUE", "True"}  # Go's strconv.ParseBool


# -- requests and errors as the API server sees and says them ----------------------------------


def api_status(code: int, reason: str, message: str, **details: str) -> dict[str, Any]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    extra = {"details": {k: v for k, v in details.items() if v}} if details else {}
    return {**body, "message": message, "reason": reason, **extra, "code": code}


class APIError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = api_status(code, reason, message, **details)


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def not_served() -> APIError:
    return APIError(404, "NotFound", "the server could not find the requested resource")


@dataclass(frozen=True)
class Target:
    """What a resource request asks, as the API server's RequestInfo says it."""

    verb: str
    group: str
    namespace: str | None  # None: cluster-wide
    resource: str
    name: str
    sub: str

    @property
    def qualified(self) -> str:
        return f"{self.resource}.{self.group}" if self.group else self.resource

    def not_found(self) -> APIError:
        return APIError(
            404,
            "NotFound",
            f'{self.qualified} "{self.name}" not found',
            name=self.name,
            group=self.group,
            kind=self.resource,
        )


def parse_target(method: str, parts: list[str], query: Mapping[str, str]) -> Target:
    """``/api/v1/...`` or ``/apis/{group}/v1/...``: namespaced, cluster-wide, or a namespace."""
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) > 3 and parts[1] in GROUPS and parts[2] == "v1":
        group, rest = parts[1], parts[3:]
    else:
        raise not_served()
    namespace: str | None = None
    if rest[:1] == ["namespaces"] and len(rest) <= 2:  # a Namespace is its own namespace
        resource, name, sub = "namespaces", rest[1] if len(rest) == 2 else "", ""
        namespace = name or None
    elif rest[:1] == ["namespaces"] and 3 <= len(rest) <= 5:
        namespace, resource, name, sub = (*rest[1:], "", "")[:4]
    elif 1 <= len(rest) <= 3:
        resource, name, sub = (*rest, "", "")[:3]
    else:
        raise not_served()
    if method == "GET":
        verb = "watch" if query.get("watch") in TRUE else "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
    return Target(verb, group, namespace, resource, name, sub)


# -- selectors ------------------------------------------------------------------------------------

_NAME = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_KEY = rf"(?:[a-z0-9](?:[-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_NAME}"
_VALUE = rf"(?:{_NAME})?"
_TERM = re.compile(
    rf"\s*(?:!\s*(?P<absent>{_KEY})|(?P<key>{_KEY})(?:\s*(?P<op>==|=|!=)\s*(?P<value>{_VALUE})"
    rf"|\s+(?P<set>in|notin)\s*\((?P<values>[^()]*)\))?)\s*"
)
#: (key, operator, values); operators =, !=, in, notin, exists, !exists.
_Requirement = tuple[str, str, tuple[str, ...]]


def label_selector(text: str) -> list[_Requirement]:
    """A label selector in the API server's syntax; ValueError names the bad requirement."""
    if not text.strip():
        return []
    found: list[_Requirement] = []
    for term in re.split(r",(?![^()]*\))", text):
        match = _TERM.fullmatch(term)
        values = tuple(v.strip() for v in (match["values"] or "").split(",")) if match else ()
        if match is None or (
            match["set"] and (values == ("",) or not all(re.fullmatch(_VALUE, v) for v in values))
        ):
            raise ValueError(f"unable to parse requirement: {term.strip()!r}")
        if match["absent"]:
            found.append((match["absent"], "!exists", ()))
        elif match["op"]:
            found.append((match["key"], "!=" if match["op"] == "!=" else "=", (match["value"],)))
        else:
            found.append((match["key"], match["set"] or "exists", values if match["set"] else ()))
    return found


def holds(requirement: _Requirement, labels: Mapping[str, str]) -> bool:
    key, op, values = requirement
    if op in ("=", "in"):
        return key in labels and labels[key] in values
    if op in ("!=", "notin"):
        return labels.get(key) not in values
    return (key in labels) == (op == "exists")


def field_selector(resource: str, text: str) -> list[tuple[str, bool, str]]:
    """``(field, equal, value)`` terms; ValueError for bad syntax or an unsupported field."""
    found = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        match = re.fullmatch(r"([A-Za-z.]+)\s*(==|=|!=)\s*(.*)", term)
        if match is None:
            raise ValueError(f"invalid selector: {term!r}: expected field=value or field!=value")
        field, op, value = match.groups()
        if field not in ("metadata.name", "metadata.namespace", *FIELDS.get(resource, ())):
            raise ValueError(f"field label not supported: {field}")
        found.append((field, op != "!=", value.strip()))
    return found


def field_at(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


def not_allowed(verb: str) -> APIError:
    return APIError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({verb}: the "
        "polyframe release runner serves get, list, pod logs and pod deletion only)",
    )


# -- discovery ----------------------------------------------------------------------------------


def discovery_document(parts: list[str]) -> dict[str, Any] | None:
    """Legacy discovery (kubectl falls back to it from the aggregated kind), or None."""
    if parts == ["api"]:
        return {"kind": "APIVersions", "versions": ["v1"]}
    if parts == ["apis"]:
        return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [*map(_group, GROUPS)]}
    if parts == ["api", "v1"]:
        return _resource_list("")
    if parts[:1] == ["apis"] and len(parts) in (2, 3) and parts[1] in GROUPS:
        if len(parts) == 2:
            return {"kind": "APIGroup", "apiVersion": "v1", **_group(parts[1])}
        if parts[2] == "v1":
            return _resource_list(parts[1])
    return None


def _group(name: str) -> dict[str, Any]:
    version = {"groupVersion": f"{name}/v1", "version": "v1"}
    return {"name": name, "versions": [version], "preferredVersion": version}


def _resource_list(group: str) -> dict[str, Any]:
    resources: list[dict[str, Any]] = []
    for name, known in RESOURCES.items():
        if known.group != group:
            continue
        entry: dict[str, Any] = {
            "name": name,
            "singularName": known.kind.lower(),
            "namespaced": known.namespaced,
            "kind": known.kind,
            "verbs": ["delete", "get", "list"] if name == "pods" else ["get", "list"],
        }
        if known.short_names:
            entry["shortNames"] = list(known.short_names)
        if known.in_all:
            entry["categories"] = ["all"]
        resources.append(entry)
        if name == "pods":
            log = {"name": "pods/log", "singularName": "", "namespaced": True, "kind": "Pod"}
            resources.append({**log, "verbs": ["get"]})
    version = f"{group}/v1" if group else "v1"
    return {"kind": "APIResourceList", "groupVersion": version, "resources": resources}
