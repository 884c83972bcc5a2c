"""Which kinds the runner emulates, which it leaves to a cluster, and every field it implements.

A field of an emulated kind that the runner does not implement fails the run, naming the
object and the field (:func:`unsupported_fields`): a render that says more than the runner
does is never run as if it said less. Kinds only a cluster enforces are listed at start.
"""

from __future__ import annotations

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
    return found


def describe(obj: dict[str, Any]) -> str:
    return f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
