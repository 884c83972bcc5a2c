"""A local Prometheus for ``make up``, configured from ``observability/prometheus``.

The configuration in the repository names the default ports; the copy written
here names the ports this run really uses (each scrape job's targets are
replaced) and the absolute path of the rule files. Prometheus itself is
Debian's ``prometheus`` package when installed: it is not on PyPI.

``--alert-for-max`` (drills and the e2e test only, never the default) loads copies of the
rule files instead, each alert's ``for:`` cut to at most that long (:func:`shorten_for`, the
one place that alters a rule): the shipped ``for:`` is minutes, which an end-to-end run cannot
wait for at every alert. Nothing else in a rule changes, and every shortened alert carries
an annotation saying so.
"""

from __future__ import annotations

import re
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


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
#: The annotation a shortened alert carries (its value names the shipped ``for:``).
SHORTENED_ANNOTATION = "polyframe_dev_shortened_for"


def seconds(duration: str) -> float:
    """A Prometheus duration (``90s``, ``1h30m``, ``0s``) in seconds."""
    parts = _DURATION.findall(duration)
    if not duration or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def shorten_for(groups: dict[str, Any], at_most: str) -> dict[str, Any]:
    """A rule file's document with every alert's ``for:`` at most ``at_most``.

    Only ``for:`` changes (and an annotation is added to say so); expressions, labels and
    recording rules stay as shipped, so what fires is the shipped alert, only sooner.
    """
    cap = seconds(at_most)
    shortened: dict[str, Any] = {**groups, "groups": []}
    for group in groups["groups"]:
        rules = []
        for rule in group["rules"]:
            shipped = rule.get("for")
            if "alert" in rule and shipped is not None and seconds(str(shipped)) > cap:
                annotations = {**rule.get("annotations", {}), SHORTENED_ANNOTATION: str(shipped)}
                rule = {**rule, "for": at_most, "annotations": annotations}
            rules.append(rule)
        shortened["groups"].append({**group, "rules": rules})
    return shortened


def write_shortened_rules(patterns: list[str], folder: Path, at_most: str) -> list[str]:
    """Shortened (:func:`shorten_for`) copies in ``folder`` of the files ``patterns`` match."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.yaml"):
        stale.unlink()
    written = []
    for pattern in patterns:
        pattern_path = Path(pattern)
        for source in sorted(pattern_path.parent.glob(pattern_path.name)):
            document = yaml.safe_load(source.read_text())
            target = folder / source.name
            header = (
                f"# NOT THE SHIPPED RULES: {source} with every alert's `for:` at most {at_most}\n"
                "# (polyframe-dev up --alert-for-max; drills and tests only).\n"
            )
            body = yaml.safe_dump(shorten_for(document, at_most), sort_keys=False)
            target.write_text(header + body)
            written.append(str(target))
    return written


def config(
    targets: dict[str, list[str]],
    *,
    interval: str = "5s",
    alert_for_max: str | None = None,
    rules_dir: Path | None = None,
) -> dict[str, Any]:
    """The repository's configuration with ``targets`` (job name -> host:port list).

    With ``alert_for_max``, the rules are shortened copies written to ``rules_dir``.
    """
    source = observability_dir()
    document: dict[str, Any] = yaml.safe_load((source / "prometheus.yml").read_text())
    document["global"]["scrape_interval"] = interval
    document["global"]["evaluation_interval"] = interval
    document["rule_files"] = [str(source / pattern) for pattern in document["rule_files"]]
    if alert_for_max is not None:
        if rules_dir is None:
            raise ValueError("shortened rules need a folder to be written to")
        document["rule_files"] = write_shortened_rules(
            document["rule_files"], rules_dir, alert_for_max
        )
    jobs = {job["job_name"]: job for job in document["scrape_configs"]}
    unknown = sorted(set(targets) - set(jobs))
    if unknown:
        raise ValueError(f"no scrape job for {unknown} in {source / 'prometheus.yml'}")
    for name, job in jobs.items():
        labels = job["static_configs"][0].get("labels", {})
        job["static_configs"] = [{"targets": targets.get(name, []), "labels": labels}]
    return document


def write_config(
    folder: Path,
    targets: dict[str, list[str]],
    *,
    interval: str = "5s",
    alert_for_max: str | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "prometheus.yml"
    document = config(
        targets, interval=interval, alert_for_max=alert_for_max, rules_dir=folder / "rules"
    )
    path.write_text(yaml.safe_dump(document, sort_keys=False))
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
