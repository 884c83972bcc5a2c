"""``polyframe-release up``, ``down`` and ``e2e``: the release started from the render and
stopped (in the foreground, detached, or around the e2e runs), and what a killed run left.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from polyframe_release import e2e, images, render, runner, runstate, standins
from polyframe_release.cli_images import runner_image, third_party
from polyframe_release.engine import detect
from polyframe_release.paths import REPO_ROOT


def start_release(
    options: argparse.Namespace, log: Callable[[str], None] = print
) -> runner.Release:
    """Render, check, and run the release until it is ready (or raise, having removed it)."""
    if options.engine == "docker":
        raise runner.ReleaseError(
            "the release runner drives podman (pod sandboxes, its event stream): use --engine "
            "podman; with a docker engine and kind, make kind-e2e runs the release on kind"
        )
    engine = detect("podman")
    built_with = images.build_engine(options.state_dir / "images.json")
    if built_with != engine.name:
        raise runner.ReleaseError(
            f"the images were built with {built_with}, the release runs them with podman: "
            "make images ENGINE=podman"
        )
    state_dir: Path = options.state_dir
    previous = runstate.read_state(state_dir)
    if previous is not None:
        if _alive(int(previous.get("pid", 0))):
            raise runner.ReleaseError(
                f"a release runs already (run {previous['run_id']}, pid {previous['pid']}, "
                f"{previous['ingress']}): stop it first (make release-down)"
            )
        left = runstate.remove_run(engine, previous["run_id"])
        log(f"removed what a stopped run ({previous['run_id']}) left: {len(left)} container(s)")
        (state_dir / runstate.STATE_FILE).unlink(missing_ok=True)
    built = images.read_build_file(state_dir / "images.json")
    spec = render.release_spec(options.profile)
    rendered = render.render(spec, built)
    rendered.save(state_dir)
    log(
        f"rendered {spec.chart.relative_to(REPO_ROOT)} with "
        f"{', '.join(str(f.relative_to(REPO_ROOT)) for f in spec.values_files)} "
        f"(Helm v4 engine): {len(rendered.objects)} objects"
    )
    standins.ensure(
        engine, third_party(rendered, built), mode=options.stand_ins, mirror=options.debian_mirror
    )
    python_image = runner_image(engine, options)
    release = runner.Release(
        rendered,
        engine,
        state_dir,
        ingress_port=options.port,
        log=log,
        ready_timeout=options.ready_timeout,
    )
    runstate.write_state(state_dir, release, os.getpid(), ready=False)
    try:
        release.up(python_image)
    except BaseException:
        log("stopping what started …")
        release.down()
        (state_dir / runstate.STATE_FILE).unlink(missing_ok=True)
        raise
    runstate.write_state(state_dir, release, os.getpid(), ready=True)
    return release


def _sigterm_stops() -> None:
    """SIGTERM (a CI cancel, `make release-down`) unwinds like Ctrl-C, and the release is
    removed; the first of them counts, the ones after it (uv run forwards SIGTERM, a second
    Ctrl-C) cannot cut the removal short."""

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _announce(release: runner.Release) -> None:
    assert release.ingress is not None
    kubeconfig = release.state_dir / "kubeconfig"
    print(
        f"\nPolyframe's kind release runs as containers (run {release.run_id}):\n"
        f"  ingress      {release.ingress.url}  (/api/users/docs, /api/orders/docs, /admin/)\n"
        f"  kubectl      KUBECONFIG={kubeconfig} kubectl -n {release.render.namespace} get pods\n"
        f"  render       {release.state_dir / render.RENDER_FILE}\n"
        f"  pod logs     {release.run_dir / 'logs'}\n"
        f"  stop         make release-down",
        flush=True,
    )


def cmd_up(options: argparse.Namespace) -> int:
    if options.detach:
        return _up_detached(options)
    _sigterm_stops()
    release: runner.Release | None = None
    try:
        release = start_release(options)
        _announce(release)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        if release is not None:
            print("stopping the release (pods deleted gracefully) …", flush=True)
            release.down()
            (options.state_dir / runstate.STATE_FILE).unlink(missing_ok=True)
            print("stopped", flush=True)
    return 0


def _up_detached(options: argparse.Namespace) -> int:
    """``up`` in a background process of its own; return when it is ready (or failed)."""
    log = options.state_dir / "logs" / "runner.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "polyframe_release.cli",
        "up",
        "--state-dir",
        str(options.state_dir),
        "--engine",
        options.engine,
        "--port",
        str(options.port),
        "--profile",
        options.profile,
        "--ready-timeout",
        str(options.ready_timeout),
        "--stand-ins",
        options.stand_ins,
        "--debian-mirror",
        options.debian_mirror,
    ]
    state = options.state_dir / runstate.STATE_FILE
    with log.open("w", encoding="utf-8") as sink:
        child = subprocess.Popen(
            argv, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    shown = 0
    try:
        while True:
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
            for line in lines[shown:]:
                print(line, flush=True)
            shown = len(lines)
            if child.poll() is not None:
                print(
                    f"the release runner stopped (exit {child.returncode}); its log: {log}",
                    file=sys.stderr,
                )
                return 1
            loaded = runstate.read_state(options.state_dir) if state.is_file() else None
            if loaded is not None and loaded.get("pid") == child.pid and loaded.get("ready"):
                print(f"(running in the background, pid {child.pid}; log {log})", flush=True)
                return 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("interrupted: stopping the release that was starting …", flush=True)
        child.send_signal(signal.SIGTERM)
        child.wait(timeout=600)
        return 130


def cmd_down(options: argparse.Namespace) -> int:
    if options.run:
        left = runstate.remove_run(detect("podman"), options.run)
        print(f"run {options.run}: removed {len(left)} container(s) and its network")
        return 0
    state = runstate.read_state(options.state_dir)
    if state is None:
        print(f"no release runs from {options.state_dir} (no {runstate.STATE_FILE})")
        return 0
    pid = int(state.get("pid", 0))
    if _alive(pid):
        print(f"stopping run {state['run_id']} (pid {pid}): pods deleted gracefully …", flush=True)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 300
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
    left = runstate.remove_run(detect("podman"), state["run_id"])
    if left:
        print(f"removed {len(left)} container(s) the runner left: {', '.join(left)}")
    (options.state_dir / runstate.STATE_FILE).unlink(missing_ok=True)
    for folder in ("pods", "claims", "api", "env"):  # a killed run's Secrets as files
        shutil.rmtree(options.state_dir / "runs" / state["run_id"] / folder, ignore_errors=True)
    print(f"run {state['run_id']} stopped; nothing of it is left")
    return 0


def cmd_e2e(options: argparse.Namespace) -> int:
    _sigterm_stops()
    release = start_release(options)
    try:
        _announce(release)
        return e2e.run(release, options)
    finally:
        print("stopping the release (pods deleted gracefully) …", flush=True)
        release.down()
        (options.state_dir / runstate.STATE_FILE).unlink(missing_ok=True)
