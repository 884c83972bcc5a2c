"""The API server: bearer tokens (401), RBAC in the source's namespace (403, with the API
server's message), get, list, ``pods/log`` and graceful Pod deletion; nothing else (405).
The state comes from an :class:`ObjectSource`, the runner's; give it TLS for kubectl.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit

from polyframe_release.kubeapi.rbac import User
from polyframe_release.kubeapi.resources import (
    RESOURCES,
    TRUE,
    APIError,
    Target,
    api_status,
    bad_request,
    discovery_document,
    field_at,
    field_selector,
    holds,
    label_selector,
    not_allowed,
    not_served,
    parse_target,
)
from polyframe_release.kubeapi.tables import as_table, wants_table
from polyframe_release.kubeapi.tls import TLSFiles

_log = logging.getLogger(__name__)

#: What ``/version`` says: the API this imitates is kind's (1.31, as the plugin's kube_api_shapes);
#: kubectl judges version skew by it, and gcloud's kubectl picks its binary by it.
VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0+polyframe-release"}


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


# -- the server ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """One answer: status code, body and its content type."""

    code: int
    body: bytes
    content_type: str = "application/json"


def _json(code: int, body: Mapping[str, Any], content_type: str = "application/json") -> Response:
    return Response(code, json.dumps(body, separators=(",", ":")).encode(), content_type)


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
            discovery = discovery_document(parts)
            if discovery is not None and method == "GET":
                return _json(200, discovery)
            if discovery is not None:
                raise not_allowed(method.lower())
            request = parse_target(method, parts, query)
            self._authorize(user, request)
            return self._serve(request, query, accept, body)
        except APIError as error:
            return _json(error.code, error.status)
        except Exception as exc:  # the source failed: said to the client, logged here
            _log.exception("%s %s failed", method, url.path)
            return _json(500, api_status(500, "InternalError", f"Internal error occurred: {exc}"))

    def _authenticate(self, authorization: str | None) -> User:
        scheme, _, token = (authorization or "").strip().partition(" ")
        user = self.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise APIError(401, "Unauthorized", "Unauthorized")
        return user

    def _authorize(self, user: User, request: Target) -> None:
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
        raise APIError(403, "Forbidden", message, name=r.name, group=r.group, kind=r.resource)

    def _serve(
        self, request: Target, query: Mapping[str, str], accept: str, body: bytes
    ) -> Response:
        r = request
        known = RESOURCES.get(r.resource)
        if known is None or known.group != r.group or r.sub not in ("", "log"):
            raise not_served()
        if r.sub and r.resource != "pods":
            raise not_served()
        if r.resource == "namespaces":
            objects = [self._namespace()]
        elif r.namespace is None and (r.name or r.verb != "list"):
            raise not_served()  # a namespaced resource's objects live in a namespace
        elif r.namespace in (None, self.source.namespace) and r.verb in ("list", "get"):
            objects = self.source.list(r.resource)
        else:
            objects = []
        if r.verb == "list":
            try:
                labels = label_selector(query.get("labelSelector", ""))
                fields = field_selector(r.resource, query.get("fieldSelector", ""))
            except ValueError as exc:
                raise bad_request(str(exc)) from exc
            items = [
                o
                for o in objects
                if all(holds(req, (o.get("metadata") or {}).get("labels") or {}) for req in labels)
                and all((field_at(o, f) == v) == equal for f, equal, v in fields)
            ]
            return _reply(r.resource, items, query, accept, listed=objects)
        if r.verb == "get":
            found = next((o for o in objects if field_at(o, "metadata.name") == r.name), None)
            if found is None:
                raise r.not_found()
            if r.sub:
                return self._log(r.name, query)
            return _reply(r.resource, [found], query, accept)
        if r.verb == "delete" and r.resource == "pods" and not r.sub:
            return self._delete(r, query, body)
        raise not_allowed(r.verb)

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
            raise bad_request(f"tailLines: Invalid value: {tail!r}: must be an integer >= 0")
        try:
            text = self.source.log(
                pod,
                query.get("container") or None,
                previous=query.get("previous") in TRUE,
                tail_lines=None if tail is None else int(tail),
            )
        except LookupError as exc:
            raise bad_request(str(exc.args[0]) if exc.args else f"no log of pod {pod}") from exc
        return Response(200, text.encode(), "text/plain")

    def _delete(self, request: Target, query: Mapping[str, str], body: bytes) -> Response:
        """A graceful delete: 200 with the Pod as it is now (terminating), as the API answers."""
        try:
            options = json.loads(body) if body.strip() else {}
        except ValueError as exc:
            raise bad_request(f"DeleteOptions: {exc}") from exc
        if not isinstance(options, dict):
            raise bad_request("DeleteOptions: not an object")
        if query.get("dryRun") or options.get("dryRun"):
            raise bad_request("dryRun is not supported by the polyframe release runner")
        grace = options.get("gracePeriodSeconds", query.get("gracePeriodSeconds"))
        if grace is not None and not str(grace).lstrip("-").isdigit():
            raise bad_request(f"gracePeriodSeconds: Invalid value: {grace!r}: not an integer")
        found = None
        if request.namespace == self.source.namespace:
            grace_seconds = None if grace is None else int(grace)
            found = self.source.delete("pods", request.name, grace_seconds)
        if found is None:
            raise request.not_found()
        return _json(200, {"kind": "Pod", "apiVersion": "v1", **found})


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
    versions = (field_at(o, "metadata.resourceVersion") for o in listed or items)
    latest = str(max((int(v) for v in versions if v.isdigit()), default=1))
    typed = [{"kind": known.kind, "apiVersion": api_version, **o} for o in items]
    if wants_table(accept):
        table = as_table(resource, typed, query.get("includeObject", "Metadata"))
        table["metadata"] = {"resourceVersion": latest}
        return _json(200, table, "application/json;as=Table;v=v1;g=meta.k8s.io")
    if listed is None:
        return _json(200, typed[0])
    # As the API server lists them: the items without their own kind and apiVersion.
    bare = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
    kind = {"kind": f"{known.kind}List", "apiVersion": api_version}
    return _json(200, {**kind, "metadata": {"resourceVersion": latest}, "items": bare})


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
            self._send(_json(503, api_status(503, "ServiceUnavailable", "the server is stopping")))
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
        self._send(_json(code, api_status(code, phrase.replace(" ", ""), message or phrase)))

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
