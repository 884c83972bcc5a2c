"""Where things are: the repository, its release files, and the runner's own folder."""

from __future__ import annotations

import os
from pathlib import Path


def _repo_root() -> Path:
    """The checkout this package is installed from (an editable workspace install)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "skaffold.yaml").is_file() and (parent / "deploy").is_dir():
            return parent
    return Path.cwd()


REPO_ROOT = Path(os.environ.get("POLYFRAME_REPO_ROOT") or _repo_root())
SKAFFOLD_FILE = REPO_ROOT / "skaffold.yaml"
RELEASE_DIR = REPO_ROOT / "deploy" / "release"
CONTAINERS_CONF = RELEASE_DIR / "containers.conf"
STAND_INS_DIR = RELEASE_DIR / "stand-ins"
#: The e2e Job of skaffold's verify stage: which Secret keys reach the suite.
VERIFY_JOB = REPO_ROOT / "deploy" / "kind" / "verify-job.yaml"
