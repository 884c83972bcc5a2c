"""Why a release is not ready, in words: each workload's and Job's pods, their containers'
states, recent warnings and the error lines of their last log, and whether waiting can help.
"""

from __future__ import annotations

import json
import re

from polyframe_release.controllers import Controllers
from polyframe_release.pods import PodWorker
from polyframe_release.store import Store

#: The lines of a crashed container's log searched for the cause.
LOG_WINDOW = 60
ERROR_LINE = re.compile(r"(?i)error|exception|critical|fatal|refus|required|denied|not found")


def problems(store: Store, controllers: Controllers) -> tuple[list[str], bool]:
    """What keeps the release from being ready, one line each; and whether waiting is
    pointless: every one of them is a failed Job or a workload with a pod that will not
    become ready without a change (PodWorker.hopeless). Waiting for the last of them to
    be known gives every cause in one report, not only the first."""
    found: list[str] = []
    stuck: list[bool] = []
    workloads = [
        *(("Deployment", d, "availableReplicas", "available") for d in store.all("Deployment")),
        *(("StatefulSet", s, "readyReplicas", "ready") for s in store.all("StatefulSet")),
    ]
    for kind, obj, field_name, word in workloads:
        status = obj.get("status") or {}
        want = int(obj["spec"].get("replicas", 1))
        if status.get(field_name, 0) >= want and status.get("replicas", 0) == want:
            continue
        pods = controllers.pods_of(kind, obj["metadata"]["name"])
        reasons = [f"pod {p.name}: {why}" for p in pods if (why := p.hopeless())]
        stuck.append(bool(reasons))
        found.append(
            f"{kind}/{obj['metadata']['name']}: {status.get(field_name, 0)} of {want} {word}"
            + (f" ({'; '.join(reasons)})" if reasons else "")
            + f"; {explain_pods(store, pods)}"
        )
    for job in store.all("Job"):
        conditions = {c["type"]: c for c in (job.get("status") or {}).get("conditions", [])}
        pods = controllers.pods_of("Job", job["metadata"]["name"])
        if conditions.get("Failed", {}).get("status") == "True":
            stuck.append(True)
            found.append(
                f"Job/{job['metadata']['name']}: {conditions['Failed']['reason']}; "
                f"{explain_pods(store, pods)}"
            )
        elif conditions.get("Complete", {}).get("status") != "True":
            # Still working (or backing off): what waits for it may yet become ready.
            stuck.append(False)
            found.append(
                f"Job/{job['metadata']['name']}: not complete; {explain_pods(store, pods)}"
            )
    return found, bool(stuck) and all(stuck)


def explain_pods(store: Store, pods: list[PodWorker]) -> str:
    if not pods:
        return "no pod"
    lines = []
    for pod in pods:
        states = []
        for container in [*pod.inits, *pod.containers]:
            state = container.state
            if "waiting" in state:
                detail = state["waiting"].get("reason", "")
                if state["waiting"].get("message"):
                    detail += f" ({state['waiting']['message']})"
            elif "terminated" in state:
                ended = state["terminated"]
                detail = f"terminated {ended.get('reason')} exit {ended.get('exitCode')}"
            else:
                detail = "running" + (", ready" if container.ready else ", not ready")
            restarts = f", {container.restart_count} restarts" if container.restart_count else ""
            states.append(f"{container.name}: {detail}{restarts}")
        warnings = _recent_warnings(store, pod.name)
        log = _last_log_lines(pod)
        line = (
            f"pod {pod.name} {pod.phase}{' (' + pod.reason + ')' if pod.reason else ''}: "
            + "; ".join(states)
        )
        if warnings:
            line += "\n      events: " + " | ".join(warnings)
        if log:
            line += "\n      last log lines: " + log
        lines.append(line)
    return "\n    " + "\n    ".join(lines)


def _recent_warnings(store: Store, pod: str) -> list[str]:
    events = [
        e
        for e in store.list("events")
        if e["involvedObject"]["name"] == pod and e["type"] == "Warning"
    ]
    return [f"{e['reason']}: {e['message']} (x{e['count']})" for e in events[-3:]]


def _last_log_lines(pod: PodWorker) -> str:
    """What the last instance that ended said about why: its first error lines (the cause
    comes before the server's own exit messages), else its last lines."""
    for container in [*pod.inits, *pod.containers]:
        if container.previous_log is None:
            continue
        lines = [
            line.strip()
            for line in container.previous_log.read_text(errors="replace").splitlines()
            if line.strip()
        ][-LOG_WINDOW:]
        errors = [found for line in lines if (found := _error_text(line))][:4]
        chosen = errors or lines[-5:]
        return f"{container.name}: " + " / ".join(line[:300] for line in chosen)
    return ""


def _error_text(line: str) -> str:
    """The error a log line reports, or '': a JSON line at level error or above (its message
    and error's), or a plain line (a traceback's, stderr's) that reads like an error."""
    if line.startswith("{"):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict):
            if str(record.get("level", "")).lower() not in {"error", "critical", "fatal"}:
                return ""
            error = record.get("error")
            detail = error.get("message") or error.get("type") if isinstance(error, dict) else ""
            return f"{record.get('message', '')}{': ' + str(detail) if detail else ''}"
    return line if ERROR_LINE.search(line) else ""
