"""A pod's containers started as its spec says: environment (``secretKeyRef``,
``configMapKeyRef``, ``fieldRef``), user and security context, limits, mounts, and restarts
with the kubelet's back-off.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from polyframe_release import kinds
from polyframe_release.podsandbox import PodSandbox
from polyframe_release.podspec import (
    BACKOFF_MAX,
    BACKOFF_RESET,
    BACKOFF_START,
    ENGINE_VARIABLES,
    POD_LABEL,
    RUN_LABEL,
    TOKEN_PATH,
    TOKEN_VOLUME,
    ConfigError,
    ContainerRun,
    Probe,
    SpecError,
    expand,
    quantity,
)
from polyframe_release.store import now_iso


class PodContainers(PodSandbox):
    """Creates and starts the pod's container instances."""

    def _env(self, container: ContainerRun) -> dict[str, str]:
        env: dict[str, str] = dict(self.node.cluster_env)
        for entry in container.spec.get("env") or []:
            name = entry["name"]
            if "value" in entry:
                env[name] = expand(str(entry["value"]), env)
                continue
            source = entry.get("valueFrom") or {}
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                value = self.store.secret_value(ref["name"], ref["key"])
                if value is None:
                    if ref.get("optional"):
                        continue
                    secret = self.store.get("Secret", ref["name"])
                    raise ConfigError(
                        f'secret "{ref["name"]}" not found'
                        if secret is None
                        else f"couldn't find key {ref['key']} in Secret "
                        f"{self.node.namespace}/{ref['name']}"
                    )
                env[name] = value
            elif "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                data = self.store.config_map_bytes(ref["name"])
                if data is None or ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(
                        f'configmap "{ref["name"]}" not found'
                        if data is None
                        else f"couldn't find key {ref['key']} in ConfigMap "
                        f"{self.node.namespace}/{ref['name']}"
                    )
                env[name] = data[ref["key"]].decode()
            elif "fieldRef" in source:
                env[name] = self._field(source["fieldRef"]["fieldPath"])
            else:
                raise SpecError(f"env {name}: valueFrom {sorted(source)} not implemented")
        return env

    def _field(self, path: str) -> str:
        meta = self.pod["metadata"]
        simple = {
            "metadata.name": meta["name"],
            "metadata.namespace": self.node.namespace,
            "metadata.uid": meta.get("uid", ""),
            "spec.nodeName": "polyframe-release",
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", "default"),
            "status.hostIP": "127.0.0.1",
            "status.podIP": self.ip or "",
            "status.podIPs": self.ip or "",
        }
        assert set(simple) == kinds.FIELD_PATHS  # one list of what is implemented
        if path in simple:
            return str(simple[path])
        match = kinds.LABEL_FIELD.fullmatch(path)
        if match:
            return str((meta.get(match[1]) or {}).get(match[2], ""))
        raise SpecError(f"fieldRef {path} not implemented")

    def _user(self, container: ContainerRun) -> tuple[int | None, int | None]:
        pod_context = self.pod["spec"].get("securityContext") or {}
        context = container.spec.get("securityContext") or {}
        user = context.get("runAsUser", pod_context.get("runAsUser"))
        group = context.get("runAsGroup", pod_context.get("runAsGroup"))
        return (None if user is None else int(user)), (None if group is None else int(group))

    def _check_non_root(self, container: ContainerRun, user: int | None) -> int | None:
        """The uid the container runs as; ConfigError when runAsNonRoot forbids it (kubelet)."""
        pod_context = self.pod["spec"].get("securityContext") or {}
        context = container.spec.get("securityContext") or {}
        non_root = context.get("runAsNonRoot", pod_context.get("runAsNonRoot"))
        if non_root and user == 0:
            raise ConfigError(
                f"container's runAsUser breaks non-root policy (pod: "
                f'"{self.node.namespace}/{self.name}", container: {container.name})'
            )
        if user is None:
            image_user = str(
                (self.node.image_config(container.spec["image"]) or {}).get("User") or "0"
            )
            name = image_user.split(":")[0]
            if not name.isdigit():
                if non_root:
                    raise ConfigError(
                        f"container has runAsNonRoot and image has non-numeric user ({name}), "
                        "cannot verify user is non-root"
                    )
                return None
            user = int(name)
        if non_root and user == 0:
            raise ConfigError("container has runAsNonRoot and image will run as root")
        return user

    def _run_args(self, container: ContainerRun, instance: str, env: dict[str, str]) -> list[str]:
        spec = container.spec
        pod_spec = self.pod["spec"]
        context = spec.get("securityContext") or {}
        pod_context = pod_spec.get("securityContext") or {}
        assert self.infra is not None
        args = [
            "run",
            "--detach",
            "--name",
            instance,
            "--label",
            f"{RUN_LABEL}={self.node.run_id}",
            "--label",
            f"{POD_LABEL}={self.name}",
            "--network",
            f"container:{self.infra}",
            "--uts",
            f"container:{self.infra}",
            "--pull",
            "never",
            "--pids-limit",
            "-1",
            "--read-only-tmpfs=false",
            "--log-driver",
            "k8s-file",
        ]
        user, group = self._user(container)
        if user is not None:
            # No runAsGroup: the primary group is the image's for that user, as with containerd.
            args += ["--user", str(user) if group is None else f"{user}:{group}"]
        elif group is not None:
            raise SpecError(
                f"container {container.name}: runAsGroup without runAsUser not implemented"
            )
        fs_group = self._fs_group()
        if fs_group is not None:
            args += ["--group-add", str(fs_group)]
        if context.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if context.get("privileged"):
            raise SpecError(f"container {container.name}: privileged containers are not run")
        capabilities = context.get("capabilities") or {}
        for cap in capabilities.get("drop") or []:
            args += ["--cap-drop", str(cap)]
        for cap in capabilities.get("add") or []:
            args += ["--cap-add", str(cap)]
        if context.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get(
            "type"
        )
        if seccomp in (None, "Unconfined"):
            args += ["--security-opt", "seccomp=unconfined"]
        elif seccomp != "RuntimeDefault":
            raise SpecError(f"container {container.name}: seccompProfile {seccomp} not implemented")
        resources = spec.get("resources") or {}
        limits, requests = resources.get("limits") or {}, resources.get("requests") or {}
        if "memory" in limits:
            memory = str(int(quantity(limits["memory"])))
            args += ["--memory", memory, "--memory-swap", memory]
        if "cpu" in limits:
            args += ["--cpus", f"{quantity(limits['cpu']):.3f}"]
        if "cpu" in requests:
            args += ["--cpu-shares", str(max(2, int(quantity(requests["cpu"]) * 1024)))]
        for mount in spec.get("volumeMounts") or []:
            source = self._mount_source(mount)
            options = f"type=bind,source={source},destination={mount['mountPath']}"
            if mount.get("readOnly") or self._read_only_volume(mount["name"]):
                options += ",ro=true"
            args += ["--mount", options]
        if self._automounts_token():
            token = self.volumes_dir / TOKEN_VOLUME
            args += ["--mount", f"type=bind,source={token},destination={TOKEN_PATH},ro=true"]
        if spec.get("workingDir"):
            args += ["--workdir", str(spec["workingDir"])]
        # The values go through a 0600 file (never the command line); the file is removed as
        # soon as the engine has read it (_start). A value on several lines cannot be written
        # there: it comes from the engine's environment by name (--env NAME).
        args += ["--env-file", str(self._env_file(instance))]
        for name, value in env.items():
            if "\n" in value:
                args += ["--env", name]
        command = [expand(str(part), env) for part in spec.get("command") or []]
        arguments = [expand(str(part), env) for part in spec.get("args") or []]
        if command:
            args += ["--entrypoint", json.dumps(command)]
        return [*args, spec["image"], *arguments]

    def _read_only_volume(self, name: str) -> bool:
        """Secret, ConfigMap and projected volumes the kubelet always mounts read-only; a
        claim when the pod says so."""
        volume = next(v for v in self.pod["spec"].get("volumes") or [] if v["name"] == name)
        claim = volume.get("persistentVolumeClaim") or {}
        return bool({"secret", "configMap", "projected"} & set(volume)) or bool(
            claim.get("readOnly")
        )

    def _env_file(self, instance: str) -> Path:
        return self.node.run_dir / "env" / f"{instance}.env"

    def _mount_source(self, mount: dict[str, Any]) -> Path:
        volumes: dict[str, dict[str, Any]] = {
            str(v["name"]): v for v in self.pod["spec"].get("volumes") or []
        }
        volume = volumes.get(mount["name"])
        if volume is None:
            raise SpecError(f"volumeMount {mount['name']}: no such volume in the pod")
        if "persistentVolumeClaim" in volume:
            base = self.node.run_dir / "claims" / str(volume["persistentVolumeClaim"]["claimName"])
            if not base.is_dir():
                raise ConfigError(f'persistentvolumeclaim "{base.name}" not found')
        else:
            base = self.volumes_dir / str(mount["name"])
        sub = mount.get("subPath")
        if sub:
            if sub.startswith("/") or ".." in Path(sub).parts:
                raise SpecError(f"volumeMount {mount['name']}: subPath {sub!r} escapes the volume")
            target = base / str(sub)
            if not target.exists():
                target.mkdir(parents=True)
                fs_group = self._fs_group()
                os.chown(target, 0, fs_group if fs_group is not None else 0)
                target.chmod(0o2777 if fs_group is not None else 0o777)
            return target
        return base

    def _start(self, container: ContainerRun) -> bool:
        """Create and start one instance of ``container``; False when it cannot yet."""
        container.retry_at = 0.0
        try:
            env = self._env(container)
            user, _group = self._user(container)
            container.uid = self._check_non_root(container, user)
        except ConfigError as exc:
            container.stuck_since = container.stuck_since or time.monotonic()
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(exc)}
            }
            self.event("Failed", f"Error: {exc}", warning=True)
            container.retry_at = time.monotonic() + 2.0
            self.publish()
            return False
        instance = self.node.container_name(self.name, container.name, str(container.restart_count))
        self.node.engine.run("rm", "--force", "--ignore", instance, check=False)
        self.node.deaths.forget(instance)
        args = self._run_args(container, instance, env)
        env_file = self._env_file(instance)
        multiline = {name: value for name, value in env.items() if "\n" in value}
        reserved = sorted(set(multiline) & ENGINE_VARIABLES)
        if reserved:
            raise SpecError(f"container {container.name}: {reserved} on several lines")
        env_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(env_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for name, value in env.items():
                if name not in multiline:
                    handle.write(f"{name}={value}\n")
        try:
            done = subprocess.run(
                [self.node.engine.name, *args],
                env={**self.node.engine.environ(), **multiline},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            env_file.unlink(missing_ok=True)
        if done.returncode != 0:
            message = (done.stderr or done.stdout).strip()[-500:]
            container.state = {"waiting": {"reason": "RunContainerError", "message": message}}
            self.event("Failed", f"Error: {message}", warning=True)
            self._schedule_restart(container)
            self.publish()
            return False
        container.current = instance
        container.stuck_since = 0.0
        container.state = {"running": {"startedAt": now_iso()}}
        container.started_at = time.monotonic()
        container.ready = False
        container.started = not container.spec.get("startupProbe")
        container.probes = {}
        now = time.monotonic()
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = container.spec.get(kind)
            if probe:
                delay = float(probe.get("initialDelaySeconds", 0))
                container.probes[kind] = Probe(kind, probe, next_due=now + delay)
        if not container.init and "readinessProbe" not in container.probes:
            container.ready = container.started
        self.event("Started", f"Started container {container.name}")
        return True

    def _crash_loop_state(self, container: ContainerRun) -> dict[str, Any]:
        delay = max(0.0, container.retry_at - time.monotonic())
        return {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container={container.name} "
                f"pod={self.name}",
            }
        }

    def _schedule_restart(self, container: ContainerRun) -> None:
        """The kubelet's back-off: the first restart at once, then 10 s doubled up to 5
        minutes; forgotten after 10 minutes of running."""
        ran = time.monotonic() - container.started_at if container.started_at else 0.0
        if ran >= BACKOFF_RESET:
            container.backoff = 0.0
        container.retry_at = time.monotonic() + container.backoff
        container.backoff = (
            BACKOFF_START if container.backoff == 0 else min(BACKOFF_MAX, container.backoff * 2)
        )
