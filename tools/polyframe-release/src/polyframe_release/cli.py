"""``polyframe-release``: Polyframe's kind release, run for real without a cluster.

``images`` builds the images skaffold builds (podman here, docker where its engine runs);
``up`` renders the umbrella chart with the kind values (Helm v4 engine) and runs what a
cluster would run from that render as containers; ``down`` removes all of it; ``e2e`` does
images, up, ``helm test``, tests/e2e in cluster mode against it, and down.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from polyframe_release import e2e, hooks, images, render, rootfs, runner, standin_builds, standins
from polyframe_release.engine import Engine, EngineError, detect
from polyframe_release.paths import REPO_ROOT

DEFAULT_STATE = REPO_ROOT / ".data" / "release"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--engine",
        choices=("auto", "podman", "docker"),
        default="auto",
        help="container engine (auto: docker when `docker info` answers, else podman)",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE,
        help=f"where builds, renders, logs and the runner's state go (default {DEFAULT_STATE})",
    )


def _images_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--stand-ins",
        choices=("auto", "rebuild", "never"),
        default="auto",
        help="base images that cannot be pulled: built here as stand-ins (auto), rebuilt "
        "even when present (rebuild), or a failure (never)",
    )
    parser.add_argument(
        "--debian-mirror",
        default=standins.DEFAULT_MIRROR,
        help=f"Debian archive for the stand-ins' debootstrap (default {standins.DEFAULT_MIRROR})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="polyframe-release",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "images",
        help="build the images of skaffold.yaml (three services and the e2e runner)",
        description="Build every image of skaffold.yaml's build.artifacts from its Dockerfile "
        "and context, tagged as skaffold's gitCommit policy tags them, and write the tags to "
        "STATE_DIR/images.json (skaffold's --file-output format). Prints each image's size and "
        "build time, and every stand-in base image in use.",
    )
    _common(build)
    _images_options(build)
    build.add_argument(
        "--only",
        action="append",
        metavar="IMAGE",
        help="build only this image (e.g. polyframe/users-fastapi); repeatable",
    )

    up = commands.add_parser(
        "up",
        help="run the kind release as containers (Ctrl-C, or `down`, stops it)",
        description="Render the umbrella chart as skaffold's kind profile deploys it (Helm v4 "
        "engine, the images of STATE_DIR/images.json), then run it as a cluster would: hooks in "
        "Helm's order, every Deployment's and StatefulSet's pods with their exact pod spec, "
        "probes as the kubelet runs them, Services as kube-proxy serves them (ready pods only), "
        "Traefik routed from the rendered Ingress on 127.0.0.1, and the release's Kubernetes API "
        "for kubectl and tests/e2e (STATE_DIR/kubeconfig). Waits until all is ready.",
    )
    _common(up)
    _up_options(up)
    up.add_argument(
        "--detach",
        action="store_true",
        help="return once the release is ready, leaving it running (stop it with `down`)",
    )

    down = commands.add_parser(
        "down",
        help="stop the running release: every pod deleted gracefully, every container and the "
        "network removed",
        description="Stop the release `up --detach` runs from STATE_DIR. With --run, remove "
        "what a run that was killed left behind (its containers and network, found by the run "
        "label the runner gives them; the run id is in every container's name, pfr-RUN-…).",
    )
    _common(down)
    down.add_argument("--run", metavar="RUN_ID", help="remove what run RUN_ID left behind")

    test = commands.add_parser(
        "e2e",
        help="run the release (as `up`), helm test, tests/e2e in cluster mode against it from "
        "this machine and in the release (skaffold's verify Job), then stop it",
        description="What `make kind-e2e` does on kind, against the release run as containers: "
        "`helm test`'s pods, tests/e2e from this machine in cluster mode (E2E_BASE_URL, "
        "E2E_KUBE_CONTEXT and the credentials of the verify Job's secretKeyRefs, read from the "
        "same render), then skaffold's verify Job (deploy/kind/verify-job.yaml with "
        "skaffold.yaml's "
        "verify container) run in the release. The release is stopped at the end, pass or fail. "
        "Arguments after `--` go to the host's pytest.",
    )
    _common(test)
    _up_options(test)
    test.add_argument(
        "--no-verify-job",
        action="store_true",
        help="skip the in-release run of the suite (skaffold's verify Job)",
    )
    test.add_argument(
        "--verify-tests",
        metavar="FILES",
        default="",
        help="run only these test files (space-separated) in the verify Job (E2E_TESTS); "
        "default: the whole suite, as skaffold verify runs it",
    )
    test.add_argument("pytest_args", nargs="*", help="extra pytest arguments for the host's run")
    return parser


def _up_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        help="the ingress's port on 127.0.0.1 (default: a free one)",
    )
    parser.add_argument(
        "--profile", default="kind", help="skaffold profile whose release is run (default kind)"
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=runner.READY_TIMEOUT,
        help=f"seconds for the release to become ready (default {runner.READY_TIMEOUT:g})",
    )
    _images_options(parser)


def cmd_images(options: argparse.Namespace) -> int:
    engine = detect(options.engine)
    chosen = images.artifacts()
    if options.only:
        unknown = set(options.only) - {a.image for a in chosen}
        if unknown:
            known = ", ".join(a.image for a in chosen)
            print(f"unknown image(s) {sorted(unknown)}: skaffold.yaml builds {known}")
            return 2
        chosen = [a for a in chosen if a.image in options.only]
    print(f"container engine: {engine.name}")
    started = time.monotonic()
    in_use = images.ensure_bases(
        engine, chosen, mode=options.stand_ins, mirror=options.debian_mirror
    )
    tag = images.git_tag()
    built = images.build(engine, chosen, tag, options.state_dir / "logs")
    build_file = options.state_dir / "images.json"
    if options.only and build_file.is_file():
        kept = images.read_build_file(build_file)
        built_names = {b.artifact.image for b in built}
        others = [
            images.Built(a, kept[a.image], 0.0, 0)
            for a in images.artifacts()
            if a.image in kept and a.image not in built_names
        ]
        built = [*others, *built]
    previous = images.read_build_file(build_file) if build_file.is_file() else {}
    images.write_build_file(build_file, built, engine.name)
    if not options.only:
        # The release also runs images it does not build (PostgreSQL): present, or stand-ins.
        rendered = render.render(render.release_spec("kind"), images.read_build_file(build_file))
        in_use += standins.ensure(
            engine,
            _third_party(rendered, images.read_build_file(build_file)),
            mode=options.stand_ins,
            mirror=options.debian_mirror,
        )
    # The tags this command built before and no longer names: gone, not piling up per commit
    # (their layers stay as the build cache).
    current = {b.tag for b in built}
    for old in sorted(set(previous.values()) - current):
        if engine.run("rmi", old, check=False).returncode == 0:
            print(f"removed the previous build's {old}")
    print(f"\n{'image':<42} {'size':>8} {'build':>7}")
    for entry in built:
        if entry.seconds:
            print(f"{entry.tag:<42} {entry.size / 1e6:>5.0f} MB {entry.seconds:>5.0f} s")
    print(f"\n{len(built)} image(s) in {time.monotonic() - started:.0f} s; tags in {build_file}")
    if in_use:
        print("stand-in base images in use (local storage only, never pushed):")
        for stand_in in in_use:
            print(f"  {stand_in}")
    return 0


# -- up / down ------------------------------------------------------------------------------


def _runner_image(engine: Engine, options: argparse.Namespace) -> str:
    """The image of the pods' sandboxes and the Service proxies: the services' Python base."""
    for artifact in images.artifacts():
        for base in images.base_images(artifact.dockerfile):
            if standin_builds.PYTHON_IMAGE.match(base):
                standins.ensure(engine, [base], mode="auto", mirror=options.debian_mirror)
                return base
    raise images.BuildError("no Dockerfile of skaffold.yaml builds FROM a python image")


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
    previous = runner.read_state(state_dir)
    if previous is not None:
        if _alive(int(previous.get("pid", 0))):
            raise runner.ReleaseError(
                f"a release runs already (run {previous['run_id']}, pid {previous['pid']}, "
                f"{previous['ingress']}): stop it first (make release-down)"
            )
        left = runner.remove_run(engine, previous["run_id"])
        log(f"removed what a stopped run ({previous['run_id']}) left: {len(left)} container(s)")
        (state_dir / runner.STATE_FILE).unlink(missing_ok=True)
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
        engine, _third_party(rendered, built), mode=options.stand_ins, mirror=options.debian_mirror
    )
    python_image = _runner_image(engine, options)
    release = runner.Release(
        rendered,
        engine,
        state_dir,
        ingress_port=options.port,
        log=log,
        ready_timeout=options.ready_timeout,
    )
    runner.write_state(state_dir, release, os.getpid(), ready=False)
    try:
        release.up(python_image)
    except BaseException:
        log("stopping what started …")
        release.down()
        (state_dir / runner.STATE_FILE).unlink(missing_ok=True)
        raise
    runner.write_state(state_dir, release, os.getpid(), ready=True)
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


def _third_party(rendered: render.Render, built: dict[str, str]) -> list[str]:
    """The images the release runs that are not built here (the in-cluster PostgreSQL's)."""
    return sorted(
        {
            c["image"]
            for obj in rendered.objects
            for c in hooks.pod_containers(obj)
            if c["image"] not in built.values()
        }
    )


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
            (options.state_dir / runner.STATE_FILE).unlink(missing_ok=True)
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
    state = options.state_dir / runner.STATE_FILE
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
            loaded = runner.read_state(options.state_dir) if state.is_file() else None
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
        left = runner.remove_run(detect("podman"), options.run)
        print(f"run {options.run}: removed {len(left)} container(s) and its network")
        return 0
    state = runner.read_state(options.state_dir)
    if state is None:
        print(f"no release runs from {options.state_dir} (no {runner.STATE_FILE})")
        return 0
    pid = int(state.get("pid", 0))
    if _alive(pid):
        print(f"stopping run {state['run_id']} (pid {pid}): pods deleted gracefully …", flush=True)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 300
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
    left = runner.remove_run(detect("podman"), state["run_id"])
    if left:
        print(f"removed {len(left)} container(s) the runner left: {', '.join(left)}")
    (options.state_dir / runner.STATE_FILE).unlink(missing_ok=True)
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
        (options.state_dir / runner.STATE_FILE).unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if hasattr(options, "state_dir"):
        # Absolute: the kubeconfig and the runner's files name paths in it.
        options.state_dir = options.state_dir.resolve()
    commands = {"images": cmd_images, "up": cmd_up, "down": cmd_down, "e2e": cmd_e2e}
    try:
        return commands[options.command](options)
    except (
        EngineError,
        images.BuildError,
        rootfs.StandInError,
        render.RenderError,
        runner.ReleaseError,
    ) as exc:
        print(f"polyframe-release {options.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
