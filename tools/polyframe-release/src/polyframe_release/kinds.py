"""Which kinds the runner emulates, which it leaves to a cluster, and every field it implements.

A field of an emulated kind that the runner does not implement fails the run, naming the
object and the field (:func:`unsupported_fields`): a render that says more than the runner
does is never run as if it said less. Kinds only a cluster enforces are listed at start.
"""

from __future__ import annotations

import re
from typing import Any

#: Kinds only a cluster enforces: listed at start, not run.
NOT_EMULATED = {
    "NetworkPolicy": "traffic is not filtered (a CNI enforces NetworkPolicy)",
    "PodDisruptionBudget": "status reported from pod readiness; evictions are not emulated",
    "Role": "enforced only for the e2e ServiceAccount's token on the runner's API",
    "RoleBinding": "read for the e2e ServiceAccount's Role",
    "HorizontalPodAutoscaler": "replicas stay as rendered",
    "ServiceMonitor": "no Prometheus operator",
    "PrometheusRule": "no Prometheus operator",
    "HTTPRoute": "no Gateway API implementation (the Ingress is routed)",
}

#: A leaf: any value, interpreted by the runner.
LEAF = True
#: A map with free keys (labels, annotations, selectors, Secret data).
MAP = "map"


def _list(item: Any) -> list[Any]:
    return [item]


PROBE = {
    "httpGet": {
        "path": LEAF,
        "port": LEAF,
        "scheme": LEAF,
        "httpHeaders": _list({"name": LEAF, "value": LEAF}),
    },
    "exec": {"command": LEAF},
    "tcpSocket": {"port": LEAF},
    "initialDelaySeconds": LEAF,
    "periodSeconds": LEAF,
    "timeoutSeconds": LEAF,
    "failureThreshold": LEAF,
    "successThreshold": LEAF,
}

SECURITY_CONTEXT = {
    "runAsNonRoot": LEAF,
    "runAsUser": LEAF,
    "runAsGroup": LEAF,
    "allowPrivilegeEscalation": LEAF,
    "readOnlyRootFilesystem": LEAF,
    "privileged": LEAF,
    "capabilities": {"drop": LEAF, "add": LEAF},
    "seccompProfile": {"type": LEAF},
}

KEY_REF = {"name": LEAF, "key": LEAF, "optional": LEAF}

CONTAINER = {
    "name": LEAF,
    "image": LEAF,
    "imagePullPolicy": LEAF,
    "command": LEAF,
    "args": LEAF,
    "workingDir": LEAF,
    "env": _list(
        {
            "name": LEAF,
            "value": LEAF,
            "valueFrom": {
                "secretKeyRef": KEY_REF,
                "configMapKeyRef": KEY_REF,
                "fieldRef": {"fieldPath": LEAF, "apiVersion": LEAF},
            },
        }
    ),
    "ports": _list({"name": LEAF, "containerPort": LEAF, "protocol": LEAF}),
    "startupProbe": PROBE,
    "livenessProbe": PROBE,
    "readinessProbe": PROBE,
    "lifecycle": {"preStop": {"exec": {"command": LEAF}}},
    "resources": {
        "limits": {"cpu": LEAF, "memory": LEAF},
        "requests": {"cpu": LEAF, "memory": LEAF},
    },
    "securityContext": SECURITY_CONTEXT,
    "volumeMounts": _list({"name": LEAF, "mountPath": LEAF, "readOnly": LEAF, "subPath": LEAF}),
    "terminationMessagePolicy": LEAF,
}

ITEMS = _list({"key": LEAF, "path": LEAF, "mode": LEAF})

POD_SPEC = {
    "serviceAccountName": LEAF,
    "automountServiceAccountToken": LEAF,
    "enableServiceLinks": LEAF,
    "restartPolicy": LEAF,
    "terminationGracePeriodSeconds": LEAF,
    "securityContext": {
        "runAsNonRoot": LEAF,
        "runAsUser": LEAF,
        "runAsGroup": LEAF,
        "fsGroup": LEAF,
        "seccompProfile": {"type": LEAF},
    },
    "initContainers": _list(CONTAINER),
    "containers": _list(CONTAINER),
    "volumes": _list(
        {
            "name": LEAF,
            "emptyDir": {"sizeLimit": LEAF, "medium": LEAF},
            "secret": {"secretName": LEAF, "items": ITEMS, "defaultMode": LEAF, "optional": LEAF},
            "configMap": {"name": LEAF, "items": ITEMS, "defaultMode": LEAF, "optional": LEAF},
            "projected": {
                "defaultMode": LEAF,
                "sources": _list(
                    {
                        "secret": {"name": LEAF, "items": ITEMS},
                        "configMap": {"name": LEAF, "items": ITEMS},
                    }
                ),
            },
            "persistentVolumeClaim": {"claimName": LEAF, "readOnly": LEAF},
        }
    ),
}

METADATA = {"name": LEAF, "namespace": LEAF, "labels": MAP, "annotations": MAP}
TEMPLATE = {"metadata": {"labels": MAP, "annotations": MAP}, "spec": POD_SPEC}
SELECTOR = {"matchLabels": MAP}

#: kind -> the fields the runner implements.
EMULATED: dict[str, dict[str, Any]] = {
    "Secret": {"metadata": METADATA, "type": LEAF, "data": MAP, "stringData": MAP},
    "ConfigMap": {"metadata": METADATA, "data": MAP},
    "ServiceAccount": {"metadata": METADATA, "automountServiceAccountToken": LEAF},
    "Service": {
        "metadata": METADATA,
        "spec": {
            "type": LEAF,
            "clusterIP": LEAF,
            "selector": MAP,
            "ports": _list(
                {
                    "name": LEAF,
                    "port": LEAF,
                    "targetPort": LEAF,
                    "protocol": LEAF,
                    "appProtocol": LEAF,
                }
            ),
        },
    },
    "Deployment": {
        "metadata": METADATA,
        "spec": {
            "replicas": LEAF,
            "revisionHistoryLimit": LEAF,
            "selector": SELECTOR,
            "strategy": {"type": LEAF, "rollingUpdate": {"maxSurge": LEAF, "maxUnavailable": LEAF}},
            "minReadySeconds": LEAF,
            "progressDeadlineSeconds": LEAF,
            "template": TEMPLATE,
        },
    },
    "StatefulSet": {
        "metadata": METADATA,
        "spec": {
            "replicas": LEAF,
            "serviceName": LEAF,
            "selector": SELECTOR,
            "podManagementPolicy": LEAF,
            "template": TEMPLATE,
            "volumeClaimTemplates": _list(
                {
                    "metadata": {"name": LEAF, "labels": MAP, "annotations": MAP},
                    "spec": {"accessModes": LEAF, "resources": {"requests": {"storage": LEAF}}},
                }
            ),
        },
    },
    "Job": {
        "metadata": METADATA,
        "spec": {
            "backoffLimit": LEAF,
            "activeDeadlineSeconds": LEAF,
            "ttlSecondsAfterFinished": LEAF,
            "podFailurePolicy": {
                "rules": _list(
                    {
                        "action": LEAF,
                        "onExitCodes": {"containerName": LEAF, "operator": LEAF, "values": LEAF},
                        "onPodConditions": _list({"type": LEAF, "status": LEAF}),
                    }
                )
            },
            "template": TEMPLATE,
        },
    },
    "Pod": {"metadata": METADATA, "spec": POD_SPEC},
    "Ingress": {
        "metadata": METADATA,
        "spec": {
            "ingressClassName": LEAF,
            "rules": _list(
                {
                    "host": LEAF,
                    "http": {
                        "paths": _list(
                            {
                                "path": LEAF,
                                "pathType": LEAF,
                                "backend": {
                                    "service": {
                                        "name": LEAF,
                                        "port": {"name": LEAF, "number": LEAF},
                                    }
                                },
                            }
                        )
                    },
                }
            ),
        },
    },
}

#: Annotations that change behaviour: the runner implements these; any other such annotation
#: (by prefix) fails the run.
IMPLEMENTED_ANNOTATIONS = {"helm.sh/hook", "helm.sh/hook-weight", "helm.sh/hook-delete-policy"}
BEHAVIOUR_ANNOTATION_PREFIXES = (
    "helm.sh/",
    "traefik.ingress.kubernetes.io/",
    "ingress.kubernetes.io/",
    "nginx.ingress.kubernetes.io/",
    "kubectl.kubernetes.io/default-container",
)


def _walk(value: Any, allowed: Any, path: str, found: list[str]) -> None:
    if allowed is LEAF or allowed == MAP:
        return
    if isinstance(allowed, list):
        if not isinstance(value, list):
            found.append(f"{path} (expected a list)")
            return
        for index, item in enumerate(value):
            _walk(item, allowed[0], f"{path}[{index}]", found)
        return
    if not isinstance(value, dict):
        found.append(f"{path} (expected an object)")
        return
    for key, item in value.items():
        if key not in allowed:
            found.append(f"{path}.{key}" if path else key)
        else:
            _walk(item, allowed[key], f"{path}.{key}" if path else key, found)


def unsupported_fields(obj: dict[str, Any]) -> list[str]:
    """The fields of ``obj`` the runner does not implement (empty: it can run it as rendered)."""
    kind = obj.get("kind", "")
    allowed = EMULATED.get(kind)
    if allowed is None:
        return []
    found: list[str] = []
    _walk({k: v for k, v in obj.items() if k not in {"apiVersion", "kind"}}, allowed, "", found)
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    for key in annotations:
        if key.startswith(BEHAVIOUR_ANNOTATION_PREFIXES) and key not in IMPLEMENTED_ANNOTATIONS:
            found.append(f"metadata.annotations[{key}]")
    return found + _unsupported_values(obj)


def _pod_spec(obj: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    if obj.get("kind") == "Pod":
        return "spec", obj.get("spec") or {}
    if obj.get("kind") in {"Deployment", "StatefulSet", "Job"}:
        return "spec.template.spec", ((obj.get("spec") or {}).get("template") or {}).get(
            "spec"
        ) or {}
    return None


#: The ``fieldRef`` paths the runner fills (PodWorker._field), besides labels and annotations.
FIELD_PATHS = frozenset(
    {
        "metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
        "spec.serviceAccountName", "status.hostIP", "status.podIP", "status.podIPs",
    }
)  # fmt: skip
LABEL_FIELD = re.compile(r"metadata\.(labels|annotations)\['([^']+)'\]")
#: DNS-1123: object names (subdomain) and volume names (label), as the API server checks them.
SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def escapes(relative: str) -> bool:
    """A path that leaves the folder it is relative to (absolute, or through ``..``)."""
    return relative.startswith("/") or ".." in relative.split("/")


def _unsupported_values(obj: dict[str, Any]) -> list[str]:
    """Fields the runner knows, set to a value it does not implement (or the API server would
    refuse): found before anything runs, never by a pod that fails over and over."""
    problems = []
    name = str((obj.get("metadata") or {}).get("name", ""))
    if not SUBDOMAIN.fullmatch(name) or len(name) > 253:
        problems.append(f"metadata.name {name!r} (not a DNS-1123 name)")
    if obj.get("kind") == "Service":
        kind = (obj.get("spec") or {}).get("type", "ClusterIP")
        if kind != "ClusterIP":
            problems.append(f"spec.type {kind} (only ClusterIP is implemented)")
    found = _pod_spec(obj)
    if found is None:
        return problems
    path, spec = found
    # Unset means true: the kubelet would add every Service's {NAME}_SERVICE_HOST variables.
    if spec.get("enableServiceLinks", True) is not False:
        problems.append(f"{path}.enableServiceLinks (only false is implemented)")
    pod_context = spec.get("securityContext") or {}
    volumes: dict[str, Any] = {
        claim["metadata"]["name"]: {"persistentVolumeClaim": {}}
        for claim in (obj.get("spec") or {}).get("volumeClaimTemplates") or []
        if obj.get("kind") == "StatefulSet"
    }
    for index, volume in enumerate(spec.get("volumes") or []):
        volumes[volume.get("name")] = volume
        at = f"{path}.volumes[{index}]"
        if not LABEL.fullmatch(str(volume.get("name", ""))):
            problems.append(f"{at}.name {volume.get('name')!r} (not a DNS-1123 label)")
        if (volume.get("emptyDir") or {}).get("medium"):
            problems.append(f"{at}.emptyDir.medium (only the node's disk is implemented)")
        sources = [volume.get("secret"), volume.get("configMap")] + [
            source.get("secret") or source.get("configMap")
            for source in (volume.get("projected") or {}).get("sources") or []
        ]
        for source in filter(None, sources):
            for item in source.get("items") or []:
                if escapes(str(item.get("path", ""))):
                    problems.append(f"{at}: item path {item.get('path')!r} leaves the volume")
    for group in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(group) or []):
            at = f"{path}.{group}[{index}]"
            problems += _container_values(at, container, pod_context, volumes)
    return problems


def _container_values(
    at: str, container: dict[str, Any], pod_context: dict[str, Any], volumes: dict[str, Any]
) -> list[str]:
    problems = []
    context = container.get("securityContext") or {}
    if container.get("imagePullPolicy") == "Always":
        problems.append(f"{at}.imagePullPolicy Always (the runner never pulls)")
    if context.get("privileged"):
        problems.append(f"{at}.securityContext.privileged (privileged containers are not run)")
    user = context.get("runAsUser", pod_context.get("runAsUser"))
    group = context.get("runAsGroup", pod_context.get("runAsGroup"))
    if group is not None and user is None:
        problems.append(f"{at}: runAsGroup without runAsUser (not implemented)")
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in (None, "RuntimeDefault", "Unconfined"):
        problems.append(f"{at}: seccompProfile {seccomp} (RuntimeDefault, Unconfined only)")
    for entry in container.get("env") or []:
        field_path = ((entry.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if field_path and field_path not in FIELD_PATHS and not LABEL_FIELD.fullmatch(field_path):
            problems.append(f"{at}.env[{entry.get('name')}]: fieldRef {field_path}")
    for mount in container.get("volumeMounts") or []:
        if mount.get("name") not in volumes:
            problems.append(f"{at}.volumeMounts[{mount.get('name')}]: no such volume in the pod")
        if mount.get("subPath") and escapes(str(mount["subPath"])):
            problems.append(f"{at}.volumeMounts[{mount.get('name')}].subPath leaves the volume")
    named = {port.get("name") for port in container.get("ports") or []}
    for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
        handler = (container.get(kind) or {}).get("httpGet") or (container.get(kind) or {}).get(
            "tcpSocket"
        )
        port = (handler or {}).get("port")
        if isinstance(port, str) and not port.isdigit() and port not in named:
            problems.append(f"{at}.{kind}: no container port named {port!r}")
    return problems


def describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
