"""The default values fit a kind cluster on a laptop: the whole platform within 1 GiB of requests.

Counted: every long-running pod of the umbrella chart's defaults (replicas x containers),
the in-cluster PostgreSQL included. Hooks that come and go (migration Jobs, one at a time,
and `helm test` pods) are reported separately. docs/kubernetes.md states the same totals.

The kind values run two web replicas of each service (with a PodDisruptionBudget) for the
e2e suite's pod-loss check: they request more, within 1.5 GiB (Docker gets about 3 GB on a
laptop, docs/kubernetes.md), and docs/kubernetes.md states their totals too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUDGET_MIB = 1024
KIND_BUDGET_MIB = 1536


def _mib(quantity: str) -> float:
    match = re.fullmatch(r"([0-9.]+)(Ki|Mi|Gi)", quantity)
    assert match, quantity
    return float(match.group(1)) * {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024}[match.group(2)]


def _millicores(quantity: str) -> float:
    return float(quantity[:-1]) if quantity.endswith("m") else float(quantity) * 1000


def requests_of(rendered: Any) -> tuple[float, float]:
    """(millicores, MiB) requested by the long-running pods of a render."""
    cpu = memory = 0.0
    for manifest, spec, _labels in rendered.pods():
        if manifest.kind not in ("Deployment", "StatefulSet"):
            continue
        replicas = manifest.obj["spec"].get("replicas", 1)
        for container in spec["containers"]:
            requests = container["resources"]["requests"]
            cpu += replicas * _millicores(str(requests["cpu"]))
            memory += replicas * _mib(str(requests["memory"]))
    return cpu, memory


def test_the_defaults_request_less_than_one_gibibyte(render_case: Any) -> None:
    cpu, memory = requests_of(render_case("polyframe", "default"))
    assert memory <= BUDGET_MIB, f"{memory:g} MiB requested"
    assert cpu <= 1000, f"{cpu:g}m CPU requested"


def test_the_kind_values_stay_within_their_budget(render_case: Any) -> None:
    cpu, memory = requests_of(render_case("polyframe", "kind"))
    assert memory <= KIND_BUDGET_MIB, f"{memory:g} MiB requested"
    assert cpu <= 1000, f"{cpu:g}m CPU requested"


@pytest.mark.parametrize(
    ("case", "sentence"),
    [
        ("default", r"Total requests of the defaults: \*\*(\d+)m CPU, (\d+) MiB memory\*\*"),
        ("kind", r"the kind values request \*\*(\d+)m CPU, (\d+) MiB memory\*\*"),
    ],
)
def test_the_documented_totals_are_the_rendered_ones(
    render_case: Any, case: str, sentence: str
) -> None:
    cpu, memory = requests_of(render_case("polyframe", case))
    docs = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    match = re.search(sentence, docs)
    assert match, f"docs/kubernetes.md does not state the total requests of the {case} values"
    assert (int(match.group(1)), int(match.group(2))) == (round(cpu), round(memory))


def test_more_replicas_count(render: Any) -> None:
    """The sum counts replicas: three web pods of a service request three times its memory."""
    base = requests_of(render("polyframe", {}))[1]
    more = requests_of(render("polyframe", {"users-fastapi": {"replicaCount": 3}}))[1]
    assert more - base == 2 * 128
