"""``meta.k8s.io/v1`` Tables for ``kubectl get``: the columns the API server's printers show
for Pods and Deployments (Name and Age for the rest).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from polyframe_release.kubeapi.resources import field_at

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
    if field_at(pod, "metadata.deletionTimestamp"):
        return "Terminating"
    status = pod.get("status") or {}
    inits = status.get("initContainerStatuses") or []
    for index, container in enumerate(inits):
        exit_code = field_at(container, "state.terminated.exitCode")
        waiting = field_at(container, "state.waiting.reason")
        if exit_code == "0":
            continue
        if exit_code:
            return "Init:" + (
                field_at(container, "state.terminated.reason") or f"ExitCode:{exit_code}"
            )
        if waiting and waiting != "PodInitializing":
            return f"Init:{waiting}"
        return f"Init:{index}/{len(inits)}"
    reason = status.get("reason") or status.get("phase") or "Unknown"
    running = False
    for container in reversed(status.get("containerStatuses") or []):
        exit_code = field_at(container, "state.terminated.exitCode")
        if field_at(container, "state.waiting.reason"):
            reason = field_at(container, "state.waiting.reason")
        elif exit_code:
            reason = field_at(container, "state.terminated.reason") or f"ExitCode:{exit_code}"
        elif field_at(container, "state.running") and container.get("ready"):
            running = True
    return "Running" if reason == "Completed" and running else reason


def _cells(resource: str, obj: Mapping[str, Any], now: datetime) -> list[str]:
    meta, spec, status = (obj.get(k) or {} for k in ("metadata", "spec", "status"))
    name, age = meta.get("name", ""), _age(_time(meta.get("creationTimestamp")), now)
    if resource == "pods":
        statuses = status.get("containerStatuses") or []
        ready = sum(1 for c in statuses if c.get("ready"))
        restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
        ended = (_time(field_at(c, "lastState.terminated.finishedAt")) for c in statuses)
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


def as_table(resource: str, objects: list[dict[str, Any]], include: str) -> dict[str, Any]:
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


def wants_table(accept: str) -> bool:
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
