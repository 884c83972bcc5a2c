"""Traefik measures request durations in the services' buckets, locally and on kind.

The latency SLO takes the worse of the service's own share of requests over 500 ms and
Traefik's (which also sees the time a request waits behind a blocked event loop, before
uvicorn reads it): Traefik's default buckets (0.1, 0.3, 1.2, 5) have no 0.5 s bound, so
without these its side of the SLO would be empty.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from polyframe_dev import traefik
from service_kit.metrics import DURATION_BUCKETS

REPO = Path(__file__).resolve().parents[2]


def test_make_up_s_traefik_uses_the_services_buckets(tmp_path: Path) -> None:
    config = traefik.static_config(
        host="127.0.0.1", port=1, internal_port=2, dynamic_file=tmp_path / "dynamic.yaml"
    )
    assert tuple(config["metrics"]["prometheus"]["buckets"]) == DURATION_BUCKETS
    assert 0.5 in DURATION_BUCKETS  # the latency SLO's threshold


def test_kind_s_traefik_uses_the_services_buckets() -> None:
    values = yaml.safe_load((REPO / "deploy" / "kind" / "traefik-values.yaml").read_text())
    buckets = values["metrics"]["prometheus"]["buckets"]
    assert tuple(float(b) for b in buckets.split(",")) == DURATION_BUCKETS
