"""polyframe-kubernetes: the platform's pods as the cluster sees them, from cAdvisor
(``container_*``) and kube-state-metrics (``kube_*``): restarts, OOM kills, CPU throttling,
memory against the limit, autoscalers at their maximum.

Filtered by ``pod`` (the ``pod`` variable lists the pods of the chosen services); containers
"" and "POD" (cAdvisor's pod-level and pause-container series) are left out.
"""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as models

from polyframe_dashboards.kit import NS, Item, dashboard, q, row, ts

BY = "namespace, pod, container"
LEGEND = "{{pod}} {{container}}"
CONTAINERS = 'container!="", container!="POD"'
#: HorizontalPodAutoscalers are named after their Deployment (the release + the service).
HPA = f'{NS}, horizontalpodautoscaler=~".*$service.*"'
POD = 'pod=~"$pod"'
OOM = 'reason="OOMKilled"'
MEMORY = 'resource="memory"'
BYTES = 'unit="byte"'


def pods(metric: str, *matchers: str) -> str:
    return f"{metric}{{{', '.join((NS, POD, *matchers))}}}"


RESTARTS = f"sum by ({BY}) (increase({pods('kube_pod_container_status_restarts_total')}[15m]))"
OOM_KILLED = f"max by ({BY}) ({pods('kube_pod_container_status_last_terminated_reason', OOM)})"
THROTTLED = (
    f"sum by ({BY}) (rate({pods('container_cpu_cfs_throttled_periods_total', CONTAINERS)}"
    f"[$__rate_interval])) / sum by ({BY}) "
    f"(rate({pods('container_cpu_cfs_periods_total', CONTAINERS)}[$__rate_interval]))"
)
MEMORY_OF_LIMIT = (
    f"sum by ({BY}) ({pods('container_memory_working_set_bytes', CONTAINERS)}) "
    f"/ sum by ({BY}) "
    f"({pods('kube_pod_container_resource_limits', MEMORY, BYTES)})"
)
HPA_OF_MAX = (
    "max by (namespace, horizontalpodautoscaler) "
    f"(kube_horizontalpodautoscaler_status_current_replicas{{{HPA}}}) "
    "/ max by (namespace, horizontalpodautoscaler) "
    f"(kube_horizontalpodautoscaler_spec_max_replicas{{{HPA}}})"
)


def build() -> models.Dashboard:
    items: list[Item] = [
        row("Containers that died"),
        ts(
            "Restarts (last 15 min)",
            "Container restarts by pod (kube-state-metrics): a crash, a failed liveness probe "
            "(the outbox dispatcher's when its loop is stuck), or an OOM kill.",
            [q(RESTARTS, LEGEND)],
            bars=True,
            width=12,
        ),
        ts(
            "Last termination was an OOM kill",
            "1 while a container's last termination was the kernel's OOM killer: its memory "
            "limit is too low for what it holds (see the memory panel).",
            [q(OOM_KILLED, LEGEND)],
            width=12,
            maximum=1,
            threshold=1,
        ),
        row("Resources against their limits"),
        ts(
            "CPU throttling",
            "Share of CFS periods in which the container was throttled (cAdvisor): above a few "
            "percent, latency suffers although average CPU looks low.",
            [q(THROTTLED, LEGEND)],
            unit="percentunit",
            width=12,
            threshold=0.25,
            maximum=1,
        ),
        ts(
            "Memory against the limit",
            "Working set (what the OOM killer counts) over the container's memory limit. At 1 "
            "the container is killed.",
            [q(MEMORY_OF_LIMIT, LEGEND)],
            unit="percentunit",
            width=12,
            threshold=0.9,
            maximum=1,
        ),
        row("Autoscaling"),
        ts(
            "Autoscalers: replicas against their maximum",
            "Current replicas over maxReplicas per HorizontalPodAutoscaler: at 1 it cannot add "
            "pods any more, and more load means saturation.",
            [q(HPA_OF_MAX, "{{horizontalpodautoscaler}}")],
            unit="percentunit",
            width=24,
            threshold=1,
            maximum=1,
        ),
    ]
    return dashboard(
        "polyframe-kubernetes",
        "Polyframe / Kubernetes: pods, limits, autoscaling",
        "The platform's containers as the cluster sees them (cAdvisor and kube-state-metrics): "
        "restarts, OOM kills, CPU throttling, memory against the limit, autoscalers at their "
        "maximum.",
        ["kubernetes"],
        items,
        cluster=True,
    )
