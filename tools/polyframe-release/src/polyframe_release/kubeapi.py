"""The release's live state through the part of the Kubernetes API its readers use.

tests/e2e's cluster plugin (``polyframe_e2e_cluster``) reads a release through the
official ``kubernetes`` client, from a kubeconfig context or in-cluster settings, and people
read one with ``kubectl get``. Serving that part of the API over real HTTP, rather than handing
the plugin a fake client, keeps both unchanged: the runner's containers are read exactly as a
cluster's Pods are, and what fails here fails there.

So the server does what the API server does for those calls: bearer tokens (401), RBAC
evaluated as for a Role bound in the release's namespace (403, with the API server's message),
label and field selectors, ``Status`` errors with the real reasons, the ``pods/log``
subresource, graceful Pod deletion, legacy discovery and ``meta.k8s.io/v1`` Tables for
``kubectl get``. It serves nothing else: no watch, create, update or patch (405), one
namespace (the source's). The state itself comes from an :class:`ObjectSource`, the runner's.
kubectl sends no bearer token over plain HTTP: give the server TLS (:func:`make_tls`) for it.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import ssl
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_log = logging.getLogger(__name__)

#: What ``/version`` says: the API this imitates is kind's (1.31, as the plugin's kube_api_shapes);
#: kubectl judges version skew by it, and gcloud's kubectl picks its binary by it.
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0+polyframe-release"}
KUBECONFIG_CLUSTER = "polyframe-release"


@dataclass(frozen=True)
class _Resource:
    group: str
    kind: str
    short_names: tuple[str, ...] = ()
    in_all: bool = False  # in ``kubectl get all``
    namespaced: bool = True


#: Every resource served (all at version v1), by its plural name, in its own API group.
RESOURCES = {
    "pods": _Resource("", "Pod", ("po",), in_all=True),
    "events": _Resource("", "Event", ("ev",)),
    "services": _Resource("", "Service", ("svc",), in_all=True),
    "endpoints": _Resource("", "Endpoints", ("ep",)),
    "configmaps": _Resource("", "ConfigMap", ("cm",)),
    "secrets": _Resource("", "Secret"),
    "serviceaccounts": _Resource("", "ServiceAccount", ("sa",)),
    "persistentvolumeclaims": _Resource("", "PersistentVolumeClaim", ("pvc",)),
    "namespaces": _Resource("", "Namespace", ("ns",), namespaced=False),
    "deployments": _Resource("apps", "Deployment", ("deploy",), in_all=True),
    "statefulsets": _Resource("apps", "StatefulSet", ("sts",), in_all=True),
    "replicasets": _Resource("apps", "ReplicaSet", ("rs",), in_all=True),
    "jobs": _Resource("batch", "Job", (), in_all=True),
    "cronjobs": _Resource("batch", "CronJob", ("cj",), in_all=True),
    "poddisruptionbudgets": _Resource("policy", "PodDisruptionBudget", ("pdb",)),
    "ingresses": _Resource("networking.k8s.io", "Ingress", ("ing",)),
    "networkpolicies": _Resource("networking.k8s.io", "NetworkPolicy", ("netpol",)),
    "roles": _Resource("rbac.authorization.k8s.io", "Role"),
    "rolebindings": _Resource("rbac.authorization.k8s.io", "RoleBinding"),
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
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}  # Go's strconv.ParseBool


class ObjectSource(Protocol):
    """The runner's state: one namespace's objects as full Kubernetes JSON, already consistent.

    Called from the server's request threads, concurrently: it must be thread-safe.
    """

    @property
    def namespace(self) -> str: ...

    def list(self, resource: str) -> list[dict[str, Any]]:
        """Every object of ``resource`` (a plural name: ``pods``, ``deployments``, ...)."""
        ...

    def delete(
        self, resource: str, name: str, grace_period_seconds: int | None
    ) -> dict[str, Any] | None:
        """Start a graceful delete and return the object as it is now (with
        ``metadata.deletionTimestamp``), or None when there is no such object."""
        ...

    def log(
        self, pod: str, container: str | None, *, previous: bool, tail_lines: int | None
    ) -> str:
        """A container's log; raise LookupError(message) for a missing container or instance."""
        ...


# -- who may do what -----------------------------------------------------------------------------


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


# -- requests and errors as the API server sees and says them ----------------------------------


def _status(code: int, reason: str, message: str, **details: str) -> dict[str, Any]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
    extra = {"details": {k: v for k, v in details.items() if v}} if details else {}
    return {**body, "message": message, "reason": reason, **extra, "code": code}


class _APIError(Exception):
    def __init__(self, code: int, reason: str, message: str, **details: str) -> None:
        super().__init__(message)
        self.code = code
        self.status = _status(code, reason, message, **details)


def _bad_request(message: str) -> _APIError:
    return _APIError(400, "BadRequest", message)


def _not_served() -> _APIError:
    return _APIError(404, "NotFound", "the server could not find the requested resource")


@dataclass(frozen=True)
class _Target:
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

    def not_found(self) -> _APIError:
        return _APIError(
            404,
            "NotFound",
            f'{self.qualified} "{self.name}" not found',
            name=self.name,
            group=self.group,
            kind=self.resource,
        )


def _target(method: str, parts: list[str], query: Mapping[str, str]) -> _Target:
    """``/api/v1/...`` or ``/apis/{group}/v1/...``: namespaced, cluster-wide, or a namespace."""
    if parts[:2] == ["api", "v1"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) > 3 and parts[1] in GROUPS and parts[2] == "v1":
        group, rest = parts[1], parts[3:]
    else:
        raise _not_served()
    namespace: str | None = None
    if rest[:1] == ["namespaces"] and len(rest) <= 2:  # a Namespace is its own namespace
        resource, name, sub = "namespaces", rest[1] if len(rest) == 2 else "", ""
        namespace = name or None
    elif rest[:1] == ["namespaces"] and 3 <= len(rest) <= 5:
        namespace, resource, name, sub = (*rest[1:], "", "")[:4]
    elif 1 <= len(rest) <= 3:
        resource, name, sub = (*rest, "", "")[:3]
    else:
        raise _not_served()
    if method == "GET":
        verb = "watch" if query.get("watch") in _TRUE else "get" if name else "list"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
    return _Target(verb, group, namespace, resource, name, sub)


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


def _label_selector(text: str) -> list[_Requirement]:
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


def _holds(requirement: _Requirement, labels: Mapping[str, str]) -> bool:
    key, op, values = requirement
    if op in ("=", "in"):
        return key in labels and labels[key] in values
    if op in ("!=", "notin"):
        return labels.get(key) not in values
    return (key in labels) == (op == "exists")


def _field_selector(resource: str, text: str) -> list[tuple[str, bool, str]]:
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


def _field(obj: Mapping[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return "" if value is None else str(value)


# -- tables for kubectl get ---------------------------------------------------------------------

#: The columns ``kubectl get`` shows (as the API server's printers); Name and Age elsewhere.
_COLUMNS = {
    "pods": ("Name", "Ready", "Status", "Restarts", "Age"),
    "deployments": ("Name", "Ready", "Up-to-date", "Available", "Age"),
}


def _time(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _age(moment: datetime | None, now: datetime) -> str:
    """A duration as kubectl prints it (``HumanDuration``, up to days)."""
    if moment is None:
        return "<unknown>"
    seconds = max(0, int((now - moment).total_seconds()))
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return (f"{days}d{hours % 24}h" if hours % 24 else f"{days}d") if days < 8 else f"{days}d"


def _pod_status(pod: Mapping[str, Any]) -> str:
    """The STATUS kubectl shows for a Pod (the API server's ``printPod``, without node loss)."""
    if _field(pod, "metadata.deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    inits = status.get("initContainerStatuses") or []
    for index, container in enumerate(inits):
        exit_code = _field(container, "state.terminated.exitCode")
        waiting = _field(container, "state.waiting.reason")
        if exit_code == "0":
            continue
        if exit_code:
            return "Init:" + (
                _field(container, "state.terminated.reason") or f"ExitCode:{exit_code}"
            )
        if waiting and waiting != "PodInitializing":
            return f"Init:{waiting}"
        return f"Init:{index}/{len(inits)}"
    reason = status.get("reason") or status.get("phase") or "Unknown"
    running = False
    for container in reversed(status.get("containerStatuses") or []):
        exit_code = _field(container, "state.terminated.exitCode")
        if _field(container, "state.waiting.reason"):
            reason = _field(container, "state.waiting.reason")
        elif exit_code:
            reason = _field(container, "state.terminated.reason") or f"ExitCode:{exit_code}"
        elif _field(container, "state.running") and container.get("ready"):
            running = True
    return "Running" if reason == "Completed" and running else reason


def _cells(resource: str, obj: Mapping[str, Any], now: datetime) -> list[str]:
    meta, spec, status = (obj.get(k) or {} for k in ("metadata", "spec", "status"))
    name, age = meta.get("name", ""), _age(_time(meta.get("creationTimestamp")), now)
    if resource == "pods":
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
        ended = (_time(_field(c, "lastState.terminated.finishedAt")) for c in statuses)
        last = max(filter(None, ended), default=None)
        if restarts and last:
            restarts_text = f"{restarts} ({_age(last, now)} ago)"
        else:
            restarts_text = str(restarts)
        containers = len(spec.get("containers") or [])
        return [name, f"{ready}/{containers}", _pod_status(obj), restarts_text, age]
    if resource == "deployments":
        wanted = f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}"
        counts = [str(status.get(k, 0)) for k in ("updatedReplicas", "availableReplicas")]
        return [name, wanted, *counts, age]
    return [name, age]


def _table(resource: str, objects: list[dict[str, Any]], include: str) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table, the rows' objects as ``includeObject`` asks (kubectl's
    default: their metadata)."""
    now = datetime.now(UTC)
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": _cells(resource, obj, now)}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            metadata = obj.get("metadata") or {}
            kind = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1"}
            row["object"] = {**kind, "metadata": metadata}
        rows.append(row)
    columns = [
        {"name": c, "type": "string", "format": "name" if c == "Name" else "", "priority": 0}
        for c in _COLUMNS.get(resource, ("Name", "Age"))
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "columnDefinitions": columns,
        "rows": rows,
    }


def _wants_table(accept: str) -> bool:
    """Whether the client prefers a ``meta.k8s.io/v1`` Table to the objects (kubectl get)."""
    for media in accept.split(","):
        kind, *params = (p.strip() for p in media.split(";"))
        options = dict(p.partition("=")[::2] for p in params)
        if options.get("as") == "Table":
            if (options.get("g"), options.get("v")) == ("meta.k8s.io", "v1"):
                return True
        elif kind in ("application/json", "application/*", "*/*"):
            return False
    return False


# -- the server ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """One answer: status code, body and its content type."""

    code: int
    body: bytes
    content_type: str = "application/json"


def _json(code: int, body: Mapping[str, Any], content_type: str = "application/json") -> Response:
    return Response(code, json.dumps(body, separators=(",", ":")).encode(), content_type)


@dataclass(frozen=True)
class TLSFiles:
    """PEM files: the CA clients trust, and the server's certificate and key."""

    ca_cert: Path
    cert: Path
    key: Path


class KubeAPIServer:
    """The API of ``source``'s namespace over HTTP(S), for the bearer tokens in ``tokens``.

    ``start`` serves from a daemon thread, each connection in a thread of its own; ``stop``
    returns within about a tenth of a second.
    """

    def __init__(
        self,
        source: ObjectSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Mapping[str, User],
        tls: TLSFiles | None = None,
    ) -> None:
        self.source = source
        self.host = host
        self.port = port
        #: Bearer token -> its user; read at each request, so a change applies at once.
        self.tokens = dict(tokens)
        self._tls = tls
        self._created = datetime.now(UTC).replace(microsecond=0)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """``http(s)://host:port``, the port bound (``port=0``: a free one) once started."""
        if self._httpd is None:
            raise RuntimeError("the Kubernetes API server is not started")
        return f"{'https' if self._tls else 'http'}://{self.host}:{self._httpd.server_port}"

    def start(self) -> None:
        if self._httpd is not None:
            raise RuntimeError("the Kubernetes API server is started already")
        httpd = _HTTPServer((self.host, self.port), self)
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(self._tls.cert, self._tls.key)
            # Each handshake happens in its connection's thread (_Handler.setup): a slow client
            # never holds up the accepting thread.
            httpd.socket = context.wrap_socket(
                httpd.socket, server_side=True, do_handshake_on_connect=False
            )
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop accepting; connections clients keep alive get 503 at their next request."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.stopped = True
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- answering ----------------------------------------------------------------------------

    def answer(
        self, method: str, target: str, authorization: str | None, accept: str, body: bytes
    ) -> Response:
        """One request; every failure a ``Status``, never a traceback."""
        url = urlsplit(target)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            if method == "GET" and parts == ["version"]:
                return _json(200, VERSION)
            if method == "GET" and parts in (["healthz"], ["livez"], ["readyz"]):
                return Response(200, b"ok", "text/plain")
            user = self._authenticate(authorization)
            discovery = _discovery(parts)
            if discovery is not None and method == "GET":
                return _json(200, discovery)
            if discovery is not None:
                raise _not_allowed(method.lower())
            request = _target(method, parts, query)
            self._authorize(user, request)
            return self._serve(request, query, accept, body)
        except _APIError as error:
            return _json(error.code, error.status)
        except Exception as exc:  # the source failed: said to the client, logged here
            _log.exception("%s %s failed", method, url.path)
            return _json(500, _status(500, "InternalError", f"Internal error occurred: {exc}"))

    def _authenticate(self, authorization: str | None) -> User:
        scheme, _, token = (authorization or "").strip().partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise _APIError(401, "Unauthorized", "Unauthorized")
        return user

    def _authorize(self, user: User, request: _Target) -> None:
        """RBAC: a Role's rules count only in its namespace (the source's), never cluster-wide."""
        if user.rules is None:
            return
        r = request
        if r.namespace == self.source.namespace and any(
            rule.allows(r.verb, r.group, r.resource, r.sub, r.name) for rule in user.rules
        ):
            return
        what = f'{r.qualified} "{r.name}"' if r.name else r.qualified
        where = f'in the namespace "{r.namespace}"' if r.namespace else "at the cluster scope"
        message = (
            f'{what} is forbidden: User "{user.name}" cannot {r.verb} resource '
            f'"{f"{r.resource}/{r.sub}" if r.sub else r.resource}" in API group "{r.group}" {where}'
        )
        raise _APIError(403, "Forbidden", message, name=r.name, group=r.group, kind=r.resource)

    def _serve(
        self, request: _Target, query: Mapping[str, str], accept: str, body: bytes
    ) -> Response:
        r = request
        known = RESOURCES.get(r.resource)
        if known is None or known.group != r.group or r.sub not in ("", "log"):
            raise _not_served()
        if r.sub and r.resource != "pods":
            raise _not_served()
        if r.resource == "namespaces":
            objects = [self._namespace()]
        elif r.namespace is None and (r.name or r.verb != "list"):
            raise _not_served()  # a namespaced resource's objects live in a namespace
        elif r.namespace in (None, self.source.namespace) and r.verb in ("list", "get"):
            objects = self.source.list(r.resource)
        else:
            objects = []
        if r.verb == "list":
            try:
                labels = _label_selector(query.get("labelSelector", ""))
                fields = _field_selector(r.resource, query.get("fieldSelector", ""))
            except ValueError as exc:
                raise _bad_request(str(exc)) from exc
            items = [
                o
                for o in objects
                if all(_holds(req, (o.get("metadata") or {}).get("labels") or {}) for req in labels)
                and all((_field(o, f) == v) == equal for f, equal, v in fields)
            ]
            return _reply(r.resource, items, query, accept, listed=objects)
        if r.verb == "get":
            found = next((o for o in objects if _field(o, "metadata.name") == r.name), None)
            if found is None:
                raise r.not_found()
            if r.sub:
                return self._log(r.name, query)
            return _reply(r.resource, [found], query, accept)
        if r.verb == "delete" and r.resource == "pods" and not r.sub:
            return self._delete(r, query, body)
        raise _not_allowed(r.verb)

    def _namespace(self) -> dict[str, Any]:
        name = self.source.namespace
        metadata = {
            "name": name,
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"polyframe-release:{name}")),
            "resourceVersion": "1",
            "creationTimestamp": self._created.isoformat().replace("+00:00", "Z"),
            "labels": {"kubernetes.io/metadata.name": name},
        }
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": metadata,
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        }

    def _log(self, pod: str, query: Mapping[str, str]) -> Response:
        """What ``kubectl logs`` reads; ``follow`` and the time options are not served."""
        tail = query.get("tailLines")
        if tail is not None and not tail.isdigit():
            raise _bad_request(f"tailLines: Invalid value: {tail!r}: must be an integer >= 0")
        try:
            text = self.source.log(
                pod,
                query.get("container") or None,
                previous=query.get("previous") in _TRUE,
                tail_lines=None if tail is None else int(tail),
            )
        except LookupError as exc:
            raise _bad_request(str(exc.args[0]) if exc.args else f"no log of pod {pod}") from exc
        return Response(200, text.encode(), "text/plain")

    def _delete(self, request: _Target, query: Mapping[str, str], body: bytes) -> Response:
        """A graceful delete: 200 with the Pod as it is now (terminating), as the API answers."""
        try:
            options = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise _bad_request(f"DeleteOptions: {exc}") from exc
        if not isinstance(options, dict):
            raise _bad_request("DeleteOptions: not an object")
        if query.get("dryRun") or options.get("dryRun"):
            raise _bad_request("dryRun is not supported by the polyframe release runner")
        grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        if grace is not None and not str(grace).lstrip("-").isdigit():
            raise _bad_request(f"gracePeriodSeconds: Invalid value: {grace!r}: not an integer")
        found = None
        if request.namespace == self.source.namespace:
            grace_seconds = None if grace is None else int(grace)
            found = self.source.delete("pods", request.name, grace_seconds)
        if found is None:
            raise request.not_found()
        return _json(200, {"kind": "Pod", "apiVersion": "v1", **found})


def _not_allowed(verb: str) -> _APIError:
    return _APIError(
        405,
        "MethodNotAllowed",
        f"the server does not allow this method on the requested resource ({verb}: the "
        "polyframe release runner serves get, list, pod logs and pod deletion only)",
    )


def _reply(
    resource: str,
    items: list[dict[str, Any]],
    query: Mapping[str, str],
    accept: str,
    *,
    listed: Sequence[Mapping[str, Any]] | None = None,
) -> Response:
    """The object (``listed`` None) or the List of ``items`` (of all ``listed``), or a Table."""
    known = RESOURCES[resource]
    api_version = f"{known.group}/v1" if known.group else "v1"
    versions = (_field(o, "metadata.resourceVersion") for o in listed or items)
    latest = str(max((int(v) for v in versions if v.isdigit()), default=1))
    typed = [{"kind": known.kind, "apiVersion": api_version, **o} for o in items]
    if _wants_table(accept):
        table = _table(resource, typed, query.get("includeObject", "Metadata"))
        table["metadata"] = {"resourceVersion": latest}
        return _json(200, table, "application/json;as=Table;v=v1;g=meta.k8s.io")
    if listed is None:
        return _json(200, typed[0])
    # As the API server lists them: the items without their own kind and apiVersion.
    bare = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
    kind = {"kind": f"{known.kind}List", "apiVersion": api_version}
    return _json(200, {**kind, "metadata": {"resourceVersion": latest}, "items": bare})


def _discovery(parts: list[str]) -> dict[str, Any] | None:
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


class _HTTPServer(ThreadingHTTPServer):  # its request threads are daemons: stop never waits
    def __init__(self, address: tuple[str, int], api: KubeAPIServer) -> None:
        self.api = api
        self.stopped = False
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client gone mid-request or a failed TLS handshake: the client's problem, logged."""
        _log.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    server_version = "polyframe-release-kubeapi"
    #: Seconds a kept-alive connection may idle (or a TLS handshake take) before its thread ends.
    timeout = 60
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        if isinstance(self.connection, ssl.SSLSocket):
            self.connection.do_handshake()

    def do_GET(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if self.server.stopped:
            self.close_connection = True
            self._send(_json(503, _status(503, "ServiceUnavailable", "the server is stopping")))
        elif length < 0:
            self.send_error(400, "invalid Content-Length")
        else:
            body = self.rfile.read(length)
            authorization, accept = self.headers.get("Authorization"), self.headers.get("Accept")
            answer = self.server.api.answer
            self._send(answer(self.command, self.path, authorization, accept or "", body))

    do_DELETE = do_POST = do_PUT = do_PATCH = do_GET  # noqa: N815 (the names the base calls)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (a malformed request, an unknown method), as
        ``Status`` objects like every other error."""
        self.close_connection = True
        phrase = HTTPStatus(code).phrase
        self._send(_json(code, _status(code, phrase.replace(" ", ""), message or phrase)))

    def _send(self, response: Response) -> None:
        self.send_response(response.code)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("%s %s", self.address_string(), format % args)


# -- TLS and kubeconfig ----------------------------------------------------------------------------


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` readable by its owner only (0600), also over an existing file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        os.fchmod(file.fileno(), 0o600)
        file.write(data)


def _certificate(
    subject: str,
    public_key: ec.EllipticCurvePublicKey,
    issuer: str,
    issuer_key: ec.EllipticCurvePrivateKey,
    extensions: list[tuple[x509.ExtensionType, bool]],
) -> x509.Certificate:
    """A certificate valid from five minutes ago for a year, with its key identifiers (which
    strict X.509 verification, Python 3.13's default, requires)."""
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(*granted: str) -> x509.KeyUsage:
    names = (
        *("digital_signature", "content_commitment", "key_encipherment", "data_encipherment"),
        *("key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only"),
    )
    return x509.KeyUsage(**{name: name in granted for name in names})


def make_tls(folder: Path, hosts: list[str]) -> TLSFiles:
    """A CA of its own and a server certificate it signed, valid for every host name and IP in
    ``hosts`` (SANs), into ``folder`` (``ca.crt``, ``tls.crt``, ``tls.key``; 0600).

    The CA's key is never written: nothing else can be signed with it, so trusting ``ca.crt``
    trusts this one server only.
    """
    if not hosts:
        raise ValueError("make_tls needs at least one host name or IP address")
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = "polyframe-release-ca"
    ca = _certificate(
        ca_name,
        ca_key.public_key(),
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=True, path_length=0), True),
            (_key_usage("key_cert_sign", "crl_sign"), True),
        ],
    )
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    cert = _certificate(
        hosts[0],
        key.public_key(),
        ca_name,
        ca_key,
        [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (_key_usage("digital_signature"), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectAlternativeName(sans), False),
        ],
    )
    files = TLSFiles(folder / "ca.crt", folder / "tls.crt", folder / "tls.key")
    _write_private(files.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
    _write_private(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    pkcs8, plain = serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    _write_private(files.key, key.private_bytes(serialization.Encoding.PEM, pkcs8, plain))
    return files


def write_kubeconfig(
    path: Path,
    *,
    server: str,
    namespace: str,
    users: Mapping[str, str],
    current: str,
    ca_file: Path | None = None,
) -> None:
    """A kubeconfig (0600) for ``server``: one cluster, and for each user (name -> bearer
    token) a context of the same name in ``namespace``; ``current`` is the current context."""
    if current not in users:
        raise ValueError(f"current context {current!r} is none of the users {sorted(users)}")
    cluster = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority"] = str(ca_file)
    contexts = [
        {
            "name": user,
            "context": {"cluster": KUBECONFIG_CLUSTER, "user": user, "namespace": namespace},
        }
        for user in users
    ]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": KUBECONFIG_CLUSTER, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}} for user, token in users.items()],
        "contexts": contexts,
        "current-context": current,
    }
    _write_private(path, yaml.safe_dump(config, sort_keys=False).encode())
