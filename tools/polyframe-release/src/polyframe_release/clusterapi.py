"""The release's Kubernetes API as a cluster has it: on 127.0.0.1 for the host and on the
network's gateway for pods (in-cluster config), TLS with a CA of the run, a token per
ServiceAccount holding the rules of the Roles bound to it, and kubeconfigs for the host.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyframe_release.kubeapi.rbac import User, rules_from_role
from polyframe_release.kubeapi.server import KubeAPIServer
from polyframe_release.kubeapi.tls import make_tls, write_kubeconfig
from polyframe_release.node import Node
from polyframe_release.render import Render
from polyframe_release.store import Store

E2E_SERVICE_ACCOUNT = "polyframe-e2e"


@dataclass
class ClusterAPI:
    """The two servers (one state, one set of tokens) and the tokens by ServiceAccount (and
    ``admin``, the kubeconfig's own user)."""

    host: KubeAPIServer
    pods: KubeAPIServer
    tokens: dict[str, str]

    def stop(self) -> None:
        self.host.stop()
        self.pods.stop()


def start(
    render: Render, store: Store, node: Node, *, gateway: str, run_dir: Path, state_dir: Path
) -> ClusterAPI:
    """Start both servers, give ``node`` what its pods mount (tokens, the CA, the API's
    address) and write ``state_dir/kubeconfig``."""
    tls = make_tls(run_dir / "api", ["127.0.0.1", gateway, "kubernetes.default.svc"])
    # Every ServiceAccount of the render gets a token, holding the rules of the Roles bound
    # to it (none: the API refuses it everything, as RBAC would).
    tokens: dict[str, str] = {}
    users: dict[str, User] = {}
    for account in render.of_kind("ServiceAccount"):
        name = account["metadata"]["name"]
        rules = tuple(
            rule
            for role in render.of_kind("Role")
            if _binds(render, role, name)
            for rule in rules_from_role(role)
        )
        token = secrets.token_urlsafe(32)
        tokens[name] = token
        users[token] = User(f"system:serviceaccount:{render.namespace}:{name}", rules)
    admin_token = secrets.token_urlsafe(32)
    users[admin_token] = User("polyframe-release-admin", None)
    tokens["admin"] = admin_token
    host = KubeAPIServer(store, host="127.0.0.1", port=0, tokens=users, tls=tls)
    host.start()
    pods = KubeAPIServer(store, host=gateway, port=0, tokens=users, tls=tls)
    try:
        pods.start()
    except BaseException:
        host.stop()
        raise
    pod_port = pods.url.rsplit(":", 1)[1]
    node.cluster_env.update(
        {
            "KUBERNETES_SERVICE_HOST": gateway,
            "KUBERNETES_SERVICE_PORT": pod_port,
            "KUBERNETES_SERVICE_PORT_HTTPS": pod_port,
            "KUBERNETES_PORT": f"tcp://{gateway}:{pod_port}",
        }
    )
    node.service_account_tokens = {k: v for k, v in tokens.items() if k != "admin"}
    node.api_ca = tls.ca_cert
    e2e = (
        {E2E_SERVICE_ACCOUNT: tokens[E2E_SERVICE_ACCOUNT]} if E2E_SERVICE_ACCOUNT in tokens else {}
    )
    write_kubeconfig(
        state_dir / "kubeconfig",
        server=host.url,
        namespace=render.namespace,
        users={"polyframe-release": admin_token, **e2e},
        current="polyframe-release",
        ca_file=tls.ca_cert,
    )
    return ClusterAPI(host, pods, tokens)


def _binds(render: Render, role: dict[str, Any], service_account: str) -> bool:
    """Whether a RoleBinding of the render binds ``role`` to ``service_account``."""
    for binding in render.of_kind("RoleBinding"):
        if binding["roleRef"].get("name") != role["metadata"]["name"]:
            continue
        for subject in binding.get("subjects") or []:
            if subject.get("kind") == "ServiceAccount" and subject.get("name") == service_account:
                return True
    return False
