"""``polyframe-release``: Polyframe's kind release, run for real without a cluster.

``images`` builds the images skaffold builds (podman here, docker where its engine runs);
``up`` renders the umbrella chart with the kind values (Helm v4 engine) and runs what a
cluster would run from that render as containers; ``down`` removes all of it; ``e2e`` does
images, up, ``helm test``, tests/e2e in cluster mode against it, and down.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from polyframe_release import images, render, rootfs, runner, standins
from polyframe_release.cli_images import cmd_images
from polyframe_release.cli_release import cmd_down, cmd_e2e, cmd_up
from polyframe_release.engine import EngineError
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
