"""The Job controller: one pod at a time; a failed pod replaced after the controller's
back-off (10 s doubled) until ``backoffLimit`` failures, the pod failure policy,
``activeDeadlineSeconds``, and the Complete or Failed condition.
"""

from __future__ import annotations

import time
from typing import Any

from polyframe_release.podcontrol import PodControl, make_condition, name_suffix
from polyframe_release.pods import PodWorker
from polyframe_release.store import now_iso

JOB_BACKOFF_START = 10.0
JOB_BACKOFF_MAX = 360.0


class JobControl(PodControl):
    """Jobs, each run to completion or failure."""

    def _job(self, job: dict[str, Any]) -> None:
        name = job["metadata"]["name"]
        spec = job["spec"]
        status = dict(job.get("status") or {})
        if any(c["status"] == "True" for c in status.get("conditions", [])):
            return  # Complete or Failed: nothing more happens
        pods = self.pods_of("Job", name)
        status.setdefault("startTime", now_iso())
        self.started.setdefault(f"job/{name}", time.monotonic())
        succeeded = [p for p in pods if p.phase == "Succeeded" and p.finished.is_set()]
        failed = [p for p in pods if p.phase == "Failed" and p.finished.is_set()]
        active = [p for p in pods if not p.finished.is_set()]
        restarts = sum(c.restart_count for p in active for c in [*p.inits, *p.containers])
        backoff_limit = int(spec.get("backoffLimit", 6))
        deadline = spec.get("activeDeadlineSeconds")
        actions = [pod_failure_action(spec.get("podFailurePolicy"), p) for p in failed]
        counted = sum(1 for action in actions if action == "Count")
        status.update({"active": len(active), "succeeded": len(succeeded), "failed": len(failed)})
        if "FailJob" in actions:
            status["conditions"] = [
                make_condition(
                    "Failed",
                    True,
                    "PodFailurePolicy",
                    "a pod failed as the Job's podFailurePolicy says is fatal (action FailJob)",
                )
            ]
            self.store.event(
                job, "PodFailurePolicy", "Job failed by its podFailurePolicy", warning=True
            )
            for worker in active:
                worker.delete(0)
        elif succeeded:
            status["completionTime"] = now_iso()
            status["conditions"] = [make_condition("Complete", True, "Completed", "Job completed")]
            self.store.event(job, "Completed", "Job completed")
        elif counted + restarts > backoff_limit:
            status["conditions"] = [
                make_condition(
                    "Failed",
                    True,
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                )
            ]
            self.store.event(
                job,
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
                warning=True,
            )
            for worker in active:
                worker.delete(0)
        elif deadline is not None and time.monotonic() - self.started[f"job/{name}"] > float(
            deadline
        ):
            status["conditions"] = [
                make_condition(
                    "Failed",
                    True,
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                )
            ]
            self.store.event(
                job,
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
                warning=True,
            )
            for worker in active:
                worker.delete(0)
        elif not active:
            counted, not_before = self.job_backoff.get(name, (0, 0.0))
            if len(failed) > counted:
                delay = min(JOB_BACKOFF_MAX, JOB_BACKOFF_START * 2 ** (len(failed) - 1))
                self.job_backoff[name] = (len(failed), time.monotonic() + delay)
            elif time.monotonic() >= not_before:
                pod_name = f"{name}-{name_suffix()}"
                self.create_pod(
                    job,
                    pod_name,
                    spec["template"],
                    {"job-name": name, "batch.kubernetes.io/job-name": name},
                )
                self.store.event(job, "SuccessfulCreate", f"Created pod: {pod_name}")
                status["active"] = 1
        self._status(job, status)


def pod_failure_action(policy: dict[str, Any] | None, worker: PodWorker) -> str:
    """What a Job's podFailurePolicy does with a failed pod: the first matching rule's action
    (FailJob, Ignore, Count), Count when none matches (the Job controller's rules)."""
    conditions = {c["type"]: c["status"] for c in worker.conditions.values()}
    for rule in (policy or {}).get("rules") or []:
        on_codes = rule.get("onExitCodes")
        if on_codes is not None:
            codes = [
                int(c.state.get("terminated", {}).get("exitCode", 0))
                for c in worker.containers
                if on_codes.get("containerName") in (None, c.name) and "terminated" in c.state
            ]
            values = {int(v) for v in on_codes.get("values") or []}
            inside = [code in values for code in codes if code != 0]
            if (on_codes["operator"] == "In" and any(inside)) or (
                on_codes["operator"] == "NotIn" and any(not hit for hit in inside)
            ):
                return str(rule["action"])
        for wanted in rule.get("onPodConditions") or []:
            if conditions.get(wanted["type"]) == wanted.get("status", "True"):
                return str(rule["action"])
    return "Count"
