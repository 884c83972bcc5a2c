"""``polyframe-release images``: the images of skaffold.yaml built, with their sizes and build
times, and the base images the release needs (present, pulled, or stand-ins).
"""

from __future__ import annotations

import argparse
import time

from polyframe_release import hooks, images, render, standin_builds, standins
from polyframe_release.engine import Engine, detect


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
            third_party(rendered, images.read_build_file(build_file)),
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


def runner_image(engine: Engine, options: argparse.Namespace) -> str:
    """The image of the pods' sandboxes and the Service proxies: the services' Python base."""
    for artifact in images.artifacts():
        for base in images.base_images(artifact.dockerfile):
            if standin_builds.PYTHON_IMAGE.match(base):
                standins.ensure(engine, [base], mode="auto", mirror=options.debian_mirror)
                return base
    raise images.BuildError("no Dockerfile of skaffold.yaml builds FROM a python image")


def third_party(rendered: render.Render, built: dict[str, str]) -> list[str]:
    """The images the release runs that are not built here (the in-cluster PostgreSQL's)."""
    return sorted(
        {
            c["image"]
            for obj in rendered.objects
            for c in hooks.pod_containers(obj)
            if c["image"] not in built.values()
        }
    )
