"""Cluster-only checks: what only a live Kubernetes release can show.

They read the release through the ``cluster`` fixture (tools/polyframe-e2e-cluster, on the
official ``kubernetes`` client), which has waited for the rollout; outside a cluster each
skips, saying what is missing. The pod-loss checks delete one web Pod of each service while
a steady stream of requests goes through the ingress, and expect no failed request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from polyframe_e2e_cluster.describe import describe_pod

pytestmark = pytest.mark.e2e

SERVICES = ("users-fastapi", "legacy-flask", "admin-django")
#: Pause between two requests of the stream (one request at a time).
STREAM_PAUSE = 0.02
#: Requests before the delete (the stream must work before anything is broken) and after
#: the Deployment is whole again.
BEFORE_SECONDS = 2.0
AFTER_SECONDS = 3.0
#: The deleted Pod's preStop pause and drain, then a replacement that becomes ready.
REPLACEMENT_TIMEOUT = 180.0


def test_every_migration_job_completed(cluster: Any) -> None:
    jobs = cluster.migration_jobs()
    missing = sorted(set(cluster.services()) - set(jobs))
    assert not missing, (
        f"no migration Job of {missing} in {cluster}: each install and upgrade creates one "
        "per service (<release>-<service>-migrate-<revision>), kept until the next revision"
    )
    assert cluster.unfinished_jobs() == []


def test_every_pod_runs_as_non_root_with_a_read_only_root_filesystem(cluster: Any) -> None:
    pods = cluster.pods()
    assert pods, f"no Pod in {cluster}"
    assert cluster.pods_not_restricted() == []


def test_the_helm_test_pods_succeeded(cluster: Any) -> None:
    tests = cluster.helm_test_pods()
    if not tests:
        pytest.skip(
            f"no `helm test` Pod in {cluster}: run `helm test {cluster.release} -n "
            f"{cluster.namespace}` before the suite (make kind-e2e does)"
        )
    tested = {(p.metadata.labels or {}).get("app.kubernetes.io/name") for p in tests}
    assert tested == set(cluster.services()), f"helm test Pods of {sorted(tested)}"
    failed = [
        "\n".join(describe_pod(pod))
        for pod in tests
        if pod.status is None or pod.status.phase != "Succeeded"
    ]
    assert not failed, "\n".join(failed)


# -- losing a Pod -----------------------------------------------------------------------------


@dataclass
class Stream:
    """GET ``path`` through the ingress, one request after the other, until stopped."""

    base_url: str
    path: str
    headers: dict[str, str]
    #: (monotonic time the request was sent, status code or the transport error)
    results: list[tuple[float, str]] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name=f"stream {self.path}", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(timeout=30)

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=10) as client:
            while not self.stopped.is_set():
                sent = time.monotonic()
                try:
                    outcome = str(client.get(self.path).status_code)
                except httpx.HTTPError as exc:
                    outcome = repr(exc)
                self.results.append((sent, outcome))
                self.stopped.wait(STREAM_PAUSE)


def _request_for(
    service: str, client: httpx.Client, register: Any, log_in: Any
) -> tuple[str, dict[str, str]]:
    """A cheap request served by ``service`` through the ingress: (path, headers)."""
    if service == "users-fastapi":
        return "/api/users/.well-known/jwks.json", {}
    if service == "legacy-flask":
        account = register(client)
        token = log_in(client, account.email, account.password)
        return "/api/orders", {"Authorization": f"Bearer {token}"}
    return "/admin/login/", {}  # Django's full stack: sessions, CSRF, templates


@pytest.mark.parametrize("service", SERVICES)
def test_losing_a_pod_fails_no_request(
    cluster: Any,
    service: str,
    client: httpx.Client,
    register: Any,
    log_in: Any,
    report_measurement: Any,
) -> None:
    """Two replicas and a PodDisruptionBudget: deleting one Pod (gracefully: its preStop
    pause lets the endpoints and the ingress drop it, then the server drains) while requests
    stream through the ingress fails none of them."""
    reason = cluster.pod_loss_skip_reason(service)
    if reason is not None:
        pytest.skip(reason)
    deployment = cluster.web_deployment(service)
    budget = cluster.disruption_budget_of(deployment)
    assert (budget.status.disruptions_allowed or 0) >= 1, (
        f"PodDisruptionBudget {budget.metadata.name} allows no disruption now "
        f"({budget.status.current_healthy} healthy of {budget.status.expected_pods}): "
        f"{service} is not whole before the check"
    )
    ready = [
        pod
        for pod in cluster.pods_of(deployment)
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]
    assert len(ready) >= 2, f"{service}: {len(ready)} ready Pod(s)"
    victim = ready[0].metadata.name
    path, headers = _request_for(service, client, register, log_in)
    first = client.get(path, headers=headers)
    assert first.status_code == 200, (
        f"GET {path} through the ingress answers {first.status_code} before any Pod is "
        f"deleted: {first.text[:300]}"
    )

    stream = Stream(str(client.base_url).rstrip("/"), path, headers)
    stream.start()
    try:
        time.sleep(BEFORE_SECONDS)
        deleted = time.monotonic()
        cluster.delete_pod(victim)
        deadline = deleted + REPLACEMENT_TIMEOUT
        while cluster.pod_exists(victim):
            assert time.monotonic() < deadline, f"{victim} still exists {REPLACEMENT_TIMEOUT:g}s on"
            time.sleep(0.5)
        gone = time.monotonic()
        cluster.wait_until_ready(max(1.0, deadline - gone), interval=1.0)
        whole = time.monotonic()
        time.sleep(AFTER_SECONDS)
    finally:
        stream.stop()

    results = stream.results
    after_delete = [r for r in results if r[0] >= deleted]
    failures = [
        f"+{sent - deleted:.2f}s: {outcome}" for sent, outcome in results if outcome != "200"
    ]
    report_measurement(
        f"pod loss, {service}",
        f"{len(results)} requests ({len(after_delete)} after deleting {victim}), "
        f"{len(failures)} failed; Pod gone after {gone - deleted:.1f}s, "
        f"Deployment whole again after {whole - deleted:.1f}s",
    )
    assert len(after_delete) >= 20, f"only {len(after_delete)} requests after the delete"
    assert not failures, (
        f"{len(failures)} of {len(results)} requests to {path} failed around the deletion of "
        f"{victim} (times relative to the delete): {failures[:10]}"
    )
