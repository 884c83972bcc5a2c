"""Diagnostics of a release for CI: Pod logs (and the previous container's), recent events, and
the workloads' status, written into a folder; what the API refuses goes to ``errors.txt``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from polyframe_e2e_cluster.cluster import Cluster
from polyframe_e2e_cluster.describe import (
    api_error,
    describe_deployment,
    describe_event,
    describe_pod,
)


def collect_diagnostics(cluster: Cluster, folder: Path) -> Path:
    """Pod logs, recent events and the workloads' status of the release, into ``folder``.

    Never raises for what the API refuses: each refusal is written to ``errors.txt``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    now = datetime.now(UTC)

    def attempt(what: str, action: Callable[[], None]) -> None:
        try:
            action()
        except Exception as exc:  # diagnostics must never hide the failure
            errors.append(f"{what}: {api_error(exc)}")

    def dump(name: str, objects: list[Any]) -> None:
        data = cluster.api.sanitize_for_serialization(objects)
        (folder / name).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")

    def save_log(pod: str, container: str, target: Path, previous: bool = False) -> None:
        target.write_text(cluster.pod_log(pod, container, previous=previous))

    def summary() -> None:
        look = cluster.rollout()
        text = "ready" if look.ready else cluster.explain(look)
        (folder / "summary.txt").write_text(
            f"{cluster}, at {now.isoformat(timespec='seconds')}\n{text}\n"
        )

    def deployments() -> None:
        found = cluster.deployments()
        dump("deployments.json", found)
        lines = []
        for deployment in found:
            problem, _ = describe_deployment(deployment)
            status = deployment.status
            lines.append(
                f"{deployment.metadata.name}: {deployment.spec.replicas} wanted, "
                f"{status.updated_replicas or 0} updated, {status.ready_replicas or 0} ready, "
                f"{status.available_replicas or 0} available"
                + (f"\n  {problem}" if problem else "")
            )
            for condition in status.conditions or []:
                lines.append(
                    f"  {condition.type} {condition.status}: {condition.reason or ''} "
                    f"{condition.message or ''}".rstrip()
                )
        (folder / "deployments.txt").write_text("\n".join(lines) + "\n")

    def pods() -> None:
        found = cluster.pods()
        dump("pods.json", found)
        lines = [line for pod in found for line in describe_pod(pod)]
        (folder / "pods.txt").write_text("\n".join(lines) + "\n")
        for pod in found:
            statuses = [
                *((pod.status.init_container_statuses if pod.status else None) or []),
                *((pod.status.container_statuses if pod.status else None) or []),
            ]
            for status in statuses:
                logs = folder / "logs" / pod.metadata.name
                logs.mkdir(parents=True, exist_ok=True)
                name = status.name
                if (
                    status.state is not None
                    and status.state.waiting is not None
                    and not (status.restart_count)
                ):
                    continue  # never started: nothing to read
                attempt(
                    f"log of {pod.metadata.name}/{name}",
                    partial(save_log, pod.metadata.name, name, logs / f"{name}.log"),
                )
                if status.restart_count:
                    attempt(
                        f"previous log of {pod.metadata.name}/{name}",
                        partial(
                            save_log, pod.metadata.name, name, logs / f"{name}.previous.log", True
                        ),
                    )

    def events() -> None:
        found = cluster.events()
        dump("events.json", found)
        text = "\n".join(describe_event(e, now) for e in found[-500:])
        (folder / "events.txt").write_text(text + "\n")

    def jobs() -> None:
        dump("jobs.json", cluster.jobs())

    def budgets() -> None:
        dump("poddisruptionbudgets.json", cluster.disruption_budgets())

    for what, action in (
        ("summary", summary),
        ("deployments", deployments),
        ("pods and logs", pods),
        ("events", events),
        ("jobs", jobs),
        ("poddisruptionbudgets", budgets),
    ):
        attempt(what, action)
    if errors:
        (folder / "errors.txt").write_text("\n".join(errors) + "\n")
    return folder
