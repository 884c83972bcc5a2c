"""The cluster-mode pytest plugin (entry point ``pytest11``): the ``cluster`` fixture, the
rollout wait before the first test, and diagnostics on every failure in cluster mode.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from polyframe_e2e_cluster.cluster import Cluster, connect
from polyframe_e2e_cluster.describe import ClusterNotReadyError, api_error
from polyframe_e2e_cluster.diagnostics import collect_diagnostics
from polyframe_e2e_cluster.settings import ClusterSettings, cluster_settings, outside_cluster_reason

#: Diagnostics snapshots per run: the first failures say the most; later ones are listed only.
MAX_SNAPSHOTS = 5


@dataclass
class _State:
    settings: ClusterSettings | None
    reason: str
    cluster: Cluster | None = None
    snapshots: int = 0
    failures: list[str] = field(default_factory=list)
    #: The rollout did not finish: every test errors with it; one snapshot is enough.
    rollout_failed: bool = False
    rollout_snapshot: str | None = None


_STATE = pytest.StashKey[_State]()


def pytest_configure(config: pytest.Config) -> None:
    try:
        settings = cluster_settings(os.environ)
    except ValueError as exc:
        raise pytest.UsageError(str(exc)) from exc
    config.stash[_STATE] = _State(settings, outside_cluster_reason(os.environ))


def pytest_report_header(config: pytest.Config) -> str | None:
    state = config.stash.get(_STATE, None)
    if state is None or state.settings is None:
        return None
    s = state.settings
    namespace = s.namespace or "(the context's)"
    return (
        f"cluster mode: {s.base_url}, kube context {s.context}, namespace {namespace}, "
        f"release {s.release}; diagnostics on failure into {s.diagnostics_dir}"
    )


@pytest.fixture(scope="session")
def cluster(pytestconfig: pytest.Config) -> Cluster:
    """The release in the cluster, every Deployment rolled out and every Pod ready.

    Skips, with the reason, outside a cluster; fails, naming what is not ready and why, when
    the rollout does not finish within ``E2E_ROLLOUT_TIMEOUT``.
    """
    state = pytestconfig.stash[_STATE]
    if state.settings is None:
        pytest.skip(state.reason)
    if state.cluster is None:
        try:
            state.cluster = connect(state.settings)
        except Exception as exc:  # any configuration error, said plainly
            pytest.fail(
                f"cannot reach the Kubernetes API of context {state.settings.context}: "
                f"{api_error(exc)}",
                pytrace=False,
            )
    try:
        state.cluster.wait_until_ready(state.settings.rollout_timeout)
    except ClusterNotReadyError as exc:
        state.rollout_failed = True
        pytest.fail(str(exc), pytrace=False)
    return state.cluster


@pytest.fixture(autouse=True)
def _cluster_rolled_out(request: pytest.FixtureRequest) -> None:
    """In cluster mode, no test starts before the release has rolled out."""
    state = request.config.stash.get(_STATE, None)
    if state is not None and state.settings is not None:
        request.getfixturevalue("cluster")


@pytest.fixture(scope="session")
def cluster_mode(pytestconfig: pytest.Config) -> ClusterSettings | None:
    """The cluster mode's settings, or None outside a cluster."""
    return pytestconfig.stash[_STATE].settings


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """On any failure in cluster mode: the release's logs, events and status, for CI."""
    report: pytest.TestReport = yield
    state = item.config.stash.get(_STATE, None)
    if report.failed and state is not None and state.settings is not None:
        where = _snapshot(state, item.nodeid, report.when)
        report.sections.append(("cluster diagnostics", where))
    return report


def _snapshot(state: _State, nodeid: str, when: str) -> str:
    assert state.settings is not None
    root = state.settings.diagnostics_dir
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    if state.cluster is None:
        where = "not collected: the Kubernetes API was never reached (see the failure)"
    elif when == "setup" and state.rollout_failed and state.rollout_snapshot is not None:
        where = f"the rollout failure, collected into {state.rollout_snapshot}"
    elif state.snapshots >= MAX_SNAPSHOTS:
        where = f"not collected: {MAX_SNAPSHOTS} snapshots taken already (see {root})"
    else:
        state.snapshots += 1
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[-120:].strip("_")
        folder = collect_diagnostics(state.cluster, root / f"{state.snapshots:02d}-{safe}")
        where = f"collected into {folder}"
        if when == "setup" and state.rollout_failed:
            state.rollout_snapshot = str(folder)
    state.failures.append(f"{stamp} {nodeid} ({when}): {where}")
    root.mkdir(parents=True, exist_ok=True)
    (root / "failures.txt").write_text("\n".join(state.failures) + "\n")
    return where


def pytest_unconfigure(config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.cluster is not None:
        state.cluster.close()
        state.cluster = None
