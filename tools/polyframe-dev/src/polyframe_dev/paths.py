"""Where the repository is (the tool runs from its workspace checkout)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path


@cache
def repo_root() -> Path:
    override = os.environ.get("POLYFRAME_ROOT")
    if override:
        return Path(override).resolve()
    for candidate in (Path.cwd(), *Path.cwd().parents, *Path(__file__).resolve().parents):
        if (candidate / "deploy" / "routes.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        "cannot find the Polyframe checkout (deploy/routes.yaml); run from the repository "
        "or set POLYFRAME_ROOT"
    )
