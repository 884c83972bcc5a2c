"""A local Prometheus for ``make up``, configured from ``observability/prometheus``.

The configuration in the repository names the default ports; the copy written
here names the ports this run really uses (each scrape job's targets are
replaced) and the absolute path of the rule files. Prometheus itself is
Debian's ``prometheus`` package when installed: it is not on PyPI.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from polyframe_dev.paths import repo_root

INSTALL_HINT = "apt-get install prometheus (Debian/Ubuntu), or put a prometheus binary on PATH"


def observability_dir() -> Path:
    return repo_root() / "observability" / "prometheus"


def find_binary() -> str | None:
    return shutil.which("prometheus")


def config(targets: dict[str, list[str]], *, interval: str = "5s") -> dict[str, Any]:
    """The repository's configuration with ``targets`` (job name -> host:port list)."""
    source = observability_dir()
    document: dict[str, Any] = yaml.safe_load((source / "prometheus.yml").read_text())
    document["global"]["scrape_interval"] = interval
    document["global"]["evaluation_interval"] = interval
    document["rule_files"] = [str(source / pattern) for pattern in document["rule_files"]]
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    unknown = sorted(set(targets) - set(jobs))
    if unknown:
        raise ValueError(f"no scrape job for {unknown} in {source / 'prometheus.yml'}")
    for name, job in jobs.items():
        labels = job["static_configs"][0].get("labels", {})
        job["static_configs"] = [{"targets": targets.get(name, []), "labels": labels}]
    return document


def write_config(folder: Path, targets: dict[str, list[str]], *, interval: str = "5s") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config(targets, interval=interval), sort_keys=False))
    return path


def argv(binary: str, config_file: Path, data_dir: Path, port: int) -> list[str]:
    return [
        binary,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=2d",
        # Exemplars link a latency bucket to the trace of a request in it.
        "--enable-feature=exemplar-storage",
        "--log.format=json",
    ]
