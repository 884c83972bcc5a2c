"""What the Kubernetes API says, in words: Pods, containers, Deployments and events as the
lines a failure message and the diagnostics print.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class ClusterNotReadyError(Exception):
    """The release did not roll out (or the API refused to say): the message says why."""


@dataclass(frozen=True)
class Problem:
    """What keeps one object of the release from being ready."""

    kind: str
    name: str
    #: One line, or several (a Pod and its containers).
    text: str


@dataclass
class Rollout:
    """One look at the release: what is not ready yet, and whether waiting can still help."""

    problems: list[Problem] = field(default_factory=list)
    #: Kubernetes itself gave up (ProgressDeadlineExceeded): waiting longer cannot help.
    hopeless: bool = False

    @property
    def ready(self) -> bool:
        return not self.problems


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "?"
    seconds = max(0, int((now - moment).total_seconds()))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60}m ago"


def describe_container(status: Any, *, init: bool = False) -> str:
    """``container web: waiting CrashLoopBackOff (back-off …), 4 restarts, last: Error exit 1``."""
    kind = "init container" if init else "container"
    parts = []
    state = status.state
    if state is not None and state.waiting is not None:
        waiting = f"waiting {state.waiting.reason or ''}".rstrip()
        if state.waiting.message:
            waiting += f" ({state.waiting.message})"
        parts.append(waiting)
    elif state is not None and state.terminated is not None:
        ended = state.terminated
        parts.append(f"terminated {ended.reason or ''}, exit code {ended.exit_code}".strip())
        if ended.message:
            parts.append(ended.message.strip()[:300])
    elif state is not None and state.running is not None:
        parts.append("running" + ("" if status.ready else ", not ready"))
    if status.restart_count:
        parts.append(f"{status.restart_count} restart{'s' if status.restart_count != 1 else ''}")
    last = status.last_state.terminated if status.last_state is not None else None
    if last is not None:
        text = f"last: {last.reason or 'terminated'}, exit code {last.exit_code}"
        if last.message:
            text += f" ({last.message.strip()[:300]})"
        parts.append(text)
    pulling = ("ImagePullBackOff", "ErrImagePull", "InvalidImageName")
    pending = state.waiting if state is not None else None
    if status.image and pending is not None and pending.reason in pulling:
        parts.append(f"image {status.image}")
    return f"{kind} {status.name}: {', '.join(parts) or 'no state yet'}"


def find_condition(conditions: Iterable[Any] | None, kind: str) -> Any:
    return next((c for c in conditions or () if c.type == kind), None)


def describe_pod(pod: Any) -> list[str]:
    """Why a Pod is not ready: its phase, failing conditions, and every container's state."""
    status = pod.status
    phase = (status.phase if status else None) or "Unknown"
    head = f"Pod {pod.metadata.name}: {phase}"
    if status is not None and status.reason:
        head += f" ({status.reason}: {status.message or ''})".replace(": )", ")")
    ready = find_condition(status.conditions if status else None, "Ready")
    if ready is not None and ready.status != "True":
        head += ", not ready"
        if ready.reason:
            head += f" ({ready.reason})"
    lines = [head]
    for condition in (status.conditions if status else None) or []:
        if condition.type in ("PodScheduled", "Initialized") and condition.status != "True":
            lines.append(
                f"  {condition.type} {condition.status}: {condition.reason or ''} "
                f"{condition.message or ''}".rstrip()
            )
    for container in (status.init_container_statuses if status else None) or []:
        if not (container.state and container.state.terminated and not container.restart_count):
            lines.append("  " + describe_container(container, init=True))
    for container in (status.container_statuses if status else None) or []:
        lines.append("  " + describe_container(container))
    return lines


def describe_deployment(deployment: Any) -> tuple[str | None, bool]:
    """What keeps a Deployment from having rolled out (as ``kubectl rollout status`` judges),
    or None; and whether Kubernetes has given up on it (ProgressDeadlineExceeded)."""
    name = deployment.metadata.name
    want = deployment.spec.replicas if deployment.spec.replicas is not None else 1
    status = deployment.status
    if status is None:
        return f"Deployment {name}: no status yet", False
    generation = deployment.metadata.generation or 0
    if (status.observed_generation or 0) < generation:
        return (
            f"Deployment {name}: its controller has not seen generation {generation} yet "
            f"(observed {status.observed_generation or 0})",
            False,
        )
    conditions = "; ".join(
        f"{c.type} {c.status}: {c.reason or ''}{' - ' + c.message if c.message else ''}"
        for c in status.conditions or []
        if c.status != "True" or c.type == "Progressing"
    )
    progressing = find_condition(status.conditions, "Progressing")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return f"Deployment {name}: stuck, Kubernetes gave up ({conditions})", True
    updated = status.updated_replicas or 0
    total = status.replicas or 0
    available = status.available_replicas or 0
    if updated < want:
        problem = f"{updated} of {want} replicas updated"
    elif total > updated:
        problem = f"{total - updated} old replica(s) still running"
    elif available < updated:
        problem = f"{available} of {updated} updated replicas available"
    else:
        return None, False
    return f"Deployment {name}: {problem} ({conditions or 'no conditions'})", False


def _event_time(event: Any) -> datetime | None:
    moment = event.last_timestamp or event.event_time or event.first_timestamp
    if moment is None and event.series is not None:
        moment = event.series.last_observed_time
    if moment is None:
        moment = event.metadata.creation_timestamp
    return moment  # type: ignore[no-any-return]


def _event_count(event: Any) -> int:
    if event.series is not None and event.series.count:
        return int(event.series.count)
    return int(event.count or 1)


def describe_event(event: Any, now: datetime) -> str:
    count = _event_count(event)
    times = f" x{count}" if count > 1 else ""
    target = f"{event.involved_object.kind}/{event.involved_object.name}"
    return (
        f"{event.type or 'Normal'} {event.reason or ''}{times} ({_ago(_event_time(event), now)}) "
        f"{target}: {(event.message or '').strip()}"
    )


def sorted_events(events: Iterable[Any]) -> list[Any]:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return sorted(events, key=lambda e: _event_time(e) or epoch)


def selects(selector: Any, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (the client's model) against a set of labels."""
    if selector is None:
        return False
    for key, value in (selector.match_labels or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.match_expressions or []:
        present, values = expression.key in labels, expression.values or []
        if expression.operator == "In" and labels.get(expression.key) not in values:
            return False
        if expression.operator == "NotIn" and labels.get(expression.key) in values:
            return False
        if expression.operator == "Exists" and not present:
            return False
        if expression.operator == "DoesNotExist" and present:
            return False
    return True


def created(obj: Any) -> datetime:
    """When an object was created (the oldest possible moment if the API did not say)."""
    return obj.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC)


def controller_kind(pod: Any) -> str | None:
    for owner in pod.metadata.owner_references or []:
        if owner.controller:
            return str(owner.kind)
    return None


def api_error(exc: BaseException) -> str:
    """An ApiException as ``403 Forbidden: <the server's message>``; anything else as repr."""
    status = getattr(exc, "status", None)
    if status is None:
        return repr(exc)
    message = getattr(exc, "body", None) or ""
    with contextlib.suppress(ValueError, TypeError):
        message = json.loads(message).get("message", message)
    return f"{status} {getattr(exc, 'reason', '')}: {message}".strip()
