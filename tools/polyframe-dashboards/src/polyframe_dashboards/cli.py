"""``polyframe-dashboards``: write every dashboard's JSON (``make dashboards``), or check it.

The files are what Grafana and the Helm chart's ConfigMaps read; tests/observability fails when
they differ from :func:`render`, so edit the modules here, run this, commit both.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard

from polyframe_dashboards import django, fastapi, flask, frameworks, kubernetes, overview, slo

#: One module per dashboard; the file is named after the uid.
BUILDERS: tuple[Callable[[], Dashboard], ...] = (
    overview.build,
    frameworks.build,
    fastapi.build,
    flask.build,
    django.build,
    slo.build,
    kubernetes.build,
)
OUT = Path("observability") / "grafana" / "dashboards"


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard (keys sorted: stable diffs)."""
    encoder = JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False)
    files = {}
    for build in BUILDERS:
        board = build()
        # Through json once more: the SDK's encoder leaves enum members to their to_json.
        text = encoder.encode(board)
        files[f"{board.uid}.json"] = (
            json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        )
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="polyframe-dashboards", description=__doc__)
    parser.add_argument("--out", type=Path, default=OUT, help=f"folder to write (default {OUT})")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file differs"
    )
    args = parser.parse_args(argv)
    files = render()
    stale = sorted(
        name
        for name, text in files.items()
        if not (args.out / name).is_file() or (args.out / name).read_text("utf-8") != text
    )
    extra = sorted(p.name for p in args.out.glob("*.json") if p.name not in files)
    if args.check:
        for name in stale + extra:
            print(f"{args.out / name}: differs from polyframe-dashboards", file=sys.stderr)
        return 1 if stale or extra else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name in stale:
        (args.out / name).write_text(files[name], encoding="utf-8")
        print(f"wrote {args.out / name}")
    for name in extra:
        print(f"{args.out / name}: no module writes it (remove it if it is gone)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
