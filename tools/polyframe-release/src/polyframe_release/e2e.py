"""``make release-e2e``: against the running release, what ``make kind-e2e`` does on kind.

Its steps: docs/kubernetes.md, "The release without a cluster" (``make release-e2e``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from polyframe_release import images, kinds
from polyframe_release.hooks import hooks_of
from polyframe_release.paths import REPO_ROOT, VERIFY_JOB
from polyframe_release.runner import Release, ReleaseError
from polyframe_release.store import Store

VERIFY_TIMEOUT = 1800.0
DIAGNOSTICS = REPO_ROOT / "test-artifacts" / "e2e-release"


def credentials(store: Store, job: dict[str, Any]) -> dict[str, str]:
    """The verify Job's ``secretKeyRef`` environment, read from the release's Secrets."""
    found: dict[str, str] = {}
    for container in job["spec"]["template"]["spec"]["containers"]:
        for entry in container.get("env") or []:
            ref = (entry.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                continue
            value = store.secret_value(ref["name"], ref["key"])
            if value is None:
                raise ReleaseError(
                    f"{VERIFY_JOB.relative_to(REPO_ROOT)}: {entry['name']} reads key {ref['key']} "
                    f"of Secret {ref['name']}, which the release does not have"
                )
            found[entry["name"]] = value
    return found


def verify_job(built: dict[str, str]) -> dict[str, Any]:
    """The Job skaffold's verify stage creates (skaffold ≥ 2.8): the manifest's container named
    like skaffold.yaml's verify container gets its image (as built), command and args, and its
    env appended; the rest of the manifest stays. Named after the verify test, as skaffold does."""
    config = images.skaffold_config()
    verify = config["verify"][0]
    container = verify["container"]
    job: dict[str, Any] = yaml.safe_load(VERIFY_JOB.read_text(encoding="utf-8"))
    job["metadata"]["name"] = verify["name"]
    spec = job["spec"]["template"]["spec"]
    target = next((c for c in spec["containers"] if c["name"] == container["name"]), None)
    if target is None:
        raise ReleaseError(
            f"{VERIFY_JOB}: no container named {container['name']} (skaffold.yaml verify)"
        )
    image = container["image"]
    if image not in built:
        raise ReleaseError(f"skaffold.yaml's verify image {image} was not built: run make images")
    target["image"] = built[image]
    for key in ("command", "args"):
        if key in container:
            target[key] = container[key]
    target["env"] = [*(target.get("env") or []), *(container.get("env") or [])]
    return job


def host_environment(release: Release, creds: dict[str, str]) -> dict[str, str]:
    assert release.ingress is not None
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("E2E_") and key not in {"KUBECONFIG"}
    }
    env.update(creds)
    env.update(
        {
            "E2E_BASE_URL": release.ingress.url,
            "E2E_KUBE_CONTEXT": "polyframe-e2e",
            "KUBECONFIG": str(release.state_dir / "kubeconfig"),
            "E2E_KUBE_NAMESPACE": release.render.namespace,
            "E2E_HELM_RELEASE": release.render.release,
            "E2E_DIAGNOSTICS_DIR": str(DIAGNOSTICS / "host"),
        }
    )
    return env


def run_verify_job(release: Release, job: dict[str, Any]) -> int:
    """Run the verify Job in the release, its log on this terminal; 0 when it completed."""
    assert release.controllers is not None
    unsupported = kinds.unsupported_fields(job)
    if unsupported:
        raise ReleaseError(
            f"{VERIFY_JOB.relative_to(REPO_ROOT)}: not implemented by the release runner: "
            + ", ".join(unsupported)
        )
    release.apply(job)
    name = job["metadata"]["name"]
    deadline = time.monotonic() + VERIFY_TIMEOUT
    shown: dict[str, int] = {}
    outcome = "timed out"
    while time.monotonic() < deadline:
        for pod in release.controllers.pods_of("Job", name):
            try:
                text = pod.log(None, previous=False, tail_lines=None)
            except LookupError:
                continue
            lines = text.splitlines()
            for line in lines[shown.get(pod.name, 0) :]:
                print(f"  [{pod.name}] {line}", flush=True)
            shown[pod.name] = len(lines)
        status = (release.store.get("Job", name) or {}).get("status") or {}
        conditions = {c["type"]: c for c in status.get("conditions", [])}
        if conditions.get("Complete", {}).get("status") == "True":
            return 0
        if conditions.get("Failed", {}).get("status") == "True":
            outcome = conditions["Failed"]["reason"]
            break
        time.sleep(2.0)
    print(f"the verify Job {name} did not complete: {outcome}", flush=True)
    return 1


@dataclass(frozen=True)
class Memory:
    """One container's memory: its processes' resident memory (proportional: a page shared by
    several processes, PostgreSQL's shared buffers say, counts once in all), and its cgroup's
    charge (which counts the page cache too: what a memory limit is held against)."""

    container: str
    rss_mb: float
    cgroup_mb: float


def _resident_kb(pid: str) -> int:
    """A process's proportional resident set (Pss) in kB, its RSS where smaps is unreadable."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        try:
            text = Path(f"/proc/{pid}/status").read_text().replace("VmRSS:", "Pss:")
        except OSError:
            return 0
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def memory_report(release: Release) -> list[Memory]:
    """Every container of the run, largest resident set first."""
    prefix = f"pfr-{release.run_id}-"
    done = release.engine.run("stats", "--no-stream", "--format", "json", check=False, timeout=120)
    try:
        stats = json.loads(done.stdout or "[]")
    except ValueError:
        stats = []
    charged = {
        str(entry.get("name") or entry.get("Name") or ""): _megabytes(
            str(entry.get("mem_usage") or entry.get("MemUsage") or "0B").split("/")[0].strip()
        )
        for entry in stats
    }
    rows = []
    for name in sorted(n for n in charged if n.startswith(prefix)):
        pids = release.engine.run("top", name, "hpid", check=False, timeout=60).stdout.split()[1:]
        resident = sum(_resident_kb(pid) for pid in pids if pid.isdigit())
        rows.append(Memory(name.removeprefix(prefix), resident / 1024, charged[name]))
    return sorted(rows, key=lambda row: -row.rss_mb)


def _megabytes(text: str) -> float:
    units = {
        "B": 1e-6,
        "kB": 1e-3,
        "KB": 1e-3,
        "MB": 1.0,
        "GB": 1e3,
        "KiB": 1.024e-3,
        "MiB": 1.048576,
        "GiB": 1073.741824,
    }
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * units[unit]
            except ValueError:
                return 0.0
    return 0.0


def run(release: Release, options: argparse.Namespace) -> int:
    """helm test, the host's suite, the verify Job; a summary; the exit code (0: all passed)."""
    ready_seconds = time.monotonic() - release.started
    built = images.read_build_file(release.state_dir / "images.json")
    job = verify_job(built)
    if options.verify_tests:
        # skaffold.yaml's verify command runs ${E2E_TESTS:-tests/e2e}.
        container = job["spec"]["template"]["spec"]["containers"][0]
        container["env"].append({"name": "E2E_TESTS", "value": options.verify_tests})
    creds = credentials(release.store, job)
    print("\n== helm test (the test hooks' pods) ==", flush=True)
    failed_tests = release.helm_test()
    if not hooks_of(release.render.objects, "test"):
        failed_tests.append("the release has no test hook: helm test ran nothing")
    for failure in failed_tests:
        print(f"  helm test: {failure}", flush=True)
    print("\n== tests/e2e from this machine, in cluster mode ==", flush=True)
    started = time.monotonic()
    host = subprocess.run(
        [sys.executable, "-m", "pytest", "tests/e2e", *options.pytest_args],
        cwd=REPO_ROOT,
        env=host_environment(release, creds),
        check=False,
    ).returncode
    host_seconds = time.monotonic() - started
    cluster = 0
    cluster_seconds = 0.0
    if not options.no_verify_job:
        print("\n== tests/e2e in the release: skaffold's verify Job ==", flush=True)
        started = time.monotonic()
        cluster = run_verify_job(release, job)
        cluster_seconds = time.monotonic() - started
    print("\n== the release after the run ==", flush=True)
    print(f"  start-up to all ready: {ready_seconds:.0f} s")
    print(f"  {'container':<60} {'resident':>10} {'cgroup':>9}")
    for row in memory_report(release):
        print(f"  {row.container:<60} {row.rss_mb:>6.1f} MiB {row.cgroup_mb:>6.1f} MB")
    print(f"  tests/e2e from this machine: {_outcome(host)} in {host_seconds:.0f} s")
    if not options.no_verify_job:
        print(f"  tests/e2e in the release:    {_outcome(cluster)} in {cluster_seconds:.0f} s")
    if failed_tests:
        print(f"  helm test FAILED: {'; '.join(failed_tests)}")
    return 0 if host == 0 and cluster == 0 and not failed_tests else 1


def _outcome(code: int) -> str:
    return "passed" if code == 0 else f"FAILED (exit {code})"
