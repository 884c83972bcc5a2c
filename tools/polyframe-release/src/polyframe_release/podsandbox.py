"""A pod's sandbox: its images checked, its volumes written (Secret, ConfigMap, projected,
``emptyDir``, the ServiceAccount's token), and its network namespace started.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from polyframe_release.podspec import (
    DNS_DOMAIN,
    TOKEN_VOLUME,
    ConfigError,
    SpecError,
    infrastructure_args,
)
from polyframe_release.podstatus import PodStatus


class PodSandbox(PodStatus):
    """Prepares the sandbox every container of the pod joins."""

    def _prepare(self) -> bool:
        """Images present, volumes written, the sandbox up; False: retry later (events say why)."""
        for container in [*self.inits, *self.containers]:
            image = container.spec["image"]
            if self.node.image_config(image) is None:
                message = (
                    f"image {image} is not in local storage and the release runner never pulls: "
                    "build it (make images)"
                )
                container.state = {"waiting": {"reason": "ErrImageNeverPull", "message": message}}
                self.event("Failed", message, warning=True)
                self.publish()
                return False
        try:
            self._write_volumes()
        except ConfigError as exc:
            self.mount_failure = str(exc)
            self.stuck_since = self.stuck_since or time.monotonic()
            self.event("FailedMount", str(exc), warning=True)
            self.publish()
            return False
        self.stuck_since, self.mount_failure = 0.0, ""
        if self.infra is None:
            self._start_sandbox()
            self.event(
                "Scheduled",
                f"Successfully assigned {self.node.namespace}/{self.name} to the release runner",
            )
        return True

    def _fs_group(self) -> int | None:
        value = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        return None if value is None else int(value)

    def _automounts_token(self) -> bool:
        spec = self.pod["spec"]
        if "automountServiceAccountToken" in spec:
            return bool(spec["automountServiceAccountToken"])
        account = self.store.get("ServiceAccount", spec.get("serviceAccountName", "default")) or {}
        return bool(account.get("automountServiceAccountToken", True))

    def _write_token(self, group: int) -> None:
        """The ServiceAccount's token, the API's CA and the namespace, where a pod finds them."""
        account = self.pod["spec"].get("serviceAccountName", "default")
        token = self.node.service_account_tokens.get(account)
        if token is None:
            token = self.node.service_account_tokens.setdefault(account, os.urandom(24).hex())
        target = self.volumes_dir / TOKEN_VOLUME
        target.mkdir(parents=True, exist_ok=True)
        target.chmod(0o755)
        files = {"token": token.encode(), "namespace": self.node.namespace.encode()}
        if self.node.api_ca is not None:
            files["ca.crt"] = self.node.api_ca.read_bytes()
        for name, content in files.items():
            path = target / name
            path.write_bytes(content)
            os.chown(path, 0, group)
            path.chmod(0o644)

    def _write_volumes(self) -> None:
        fs_group = self._fs_group()
        group = fs_group if fs_group is not None else 0
        if self._automounts_token():
            self._write_token(group)
        for volume in self.pod["spec"].get("volumes") or []:
            target = self.volumes_dir / volume["name"]
            if "emptyDir" in volume:
                target.mkdir(parents=True, exist_ok=True)
                os.chown(target, 0, group)
                target.chmod(0o2777 if fs_group is not None else 0o777)
            elif "persistentVolumeClaim" in volume:
                continue  # the claim's folder (StatefulSet controller)
            else:
                files = self._volume_files(volume)
                mode = self._volume_mode(volume)
                if target.exists():
                    shutil.rmtree(target)
                target.mkdir(parents=True)
                target.chmod(0o755)
                for relative, (content, item_mode) in files.items():
                    path = target / relative
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(content)
                    os.chown(path, 0, group)
                    path.chmod(item_mode if item_mode is not None else mode)

    @staticmethod
    def _volume_mode(volume: dict[str, Any]) -> int:
        for kind in ("secret", "configMap", "projected"):
            if kind in volume and volume[kind].get("defaultMode") is not None:
                return int(volume[kind]["defaultMode"])
        return 0o644

    def _volume_files(self, volume: dict[str, Any]) -> dict[str, tuple[bytes, int | None]]:
        sources: list[tuple[str, dict[str, Any]]] = []
        if "secret" in volume:
            sources.append(("secret", {**volume["secret"], "name": volume["secret"]["secretName"]}))
        elif "configMap" in volume:
            sources.append(("configMap", volume["configMap"]))
        elif "projected" in volume:
            for source in volume["projected"]["sources"]:
                kind = next(iter(source))
                sources.append((kind, source[kind]))
        else:
            raise SpecError(f"volume {volume['name']}: kind {sorted(volume)} not implemented")
        files: dict[str, tuple[bytes, int | None]] = {}
        for kind, source in sources:
            data = (
                self.store.secret_bytes(source["name"])
                if kind == "secret"
                else self.store.config_map_bytes(source["name"])
            )
            what = "secret" if kind == "secret" else "configmap"
            if data is None:
                if source.get("optional"):
                    continue
                raise ConfigError(
                    f'MountVolume.SetUp failed for volume "{volume["name"]}" : {what} '
                    f'"{source["name"]}" not found'
                )
            items = source.get("items")
            if items is None:
                files.update({key: (value, None) for key, value in data.items()})
                continue
            for item in items:
                if item["key"] not in data:
                    if source.get("optional"):
                        continue
                    missing = (
                        f"references non-existent secret key: {item['key']}"
                        if kind == "secret"
                        else f"configmap references non-existent config key: {item['key']}"
                    )
                    raise ConfigError(
                        f'MountVolume.SetUp failed for volume "{volume["name"]}" : {missing}'
                    )
                mode = item.get("mode")
                files[item["path"]] = (data[item["key"]], None if mode is None else int(mode))
        return files

    def _start_sandbox(self) -> None:
        """The pod's network namespace: an IP on the project network, ports on 127.0.0.1."""
        name = self.node.container_name(self.name)
        ports = sorted(
            {
                int(port["containerPort"])
                for c in [*self.inits, *self.containers]
                for port in c.spec.get("ports") or []
                if port.get("protocol", "TCP") == "TCP"
            }
            | self._probe_ports()
        )
        args = [
            *infrastructure_args(
                name,
                run_id=self.node.run_id,
                role=self.name,
                network=self.node.network,
                memory="32m",
            ),
            "--hostname",
            self.name,
            "--entrypoint",
            "sleep",
        ]
        for domain in self._search_domains():
            args += ["--dns-search", domain]
        for port in ports:
            args += ["--publish", f"127.0.0.1::{port}"]
        self.node.engine.run(*args, self.node.pause_image, "infinity", timeout=120)
        self.infra = name
        info = self.node.engine.json("inspect", name)[0]
        network = (info.get("NetworkSettings") or {}).get("Networks", {}).get(
            self.node.network
        ) or {}
        self.ip = network.get("IPAddress")
        for binding, hosts in ((info.get("NetworkSettings") or {}).get("Ports") or {}).items():
            port = int(binding.split("/")[0])
            for host in hosts or []:
                self.ports[port] = int(host["HostPort"])
        self.publish()

    def _search_domains(self) -> list[str]:
        namespace = self.node.namespace
        return [f"{namespace}.svc.{DNS_DOMAIN}", f"svc.{DNS_DOMAIN}", DNS_DOMAIN]

    def _probe_ports(self) -> set[int]:
        found = set()
        for container in self.containers:
            for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
                probe = container.spec.get(kind) or {}
                handler = probe.get("httpGet") or probe.get("tcpSocket")
                if handler and isinstance(handler.get("port"), int):
                    found.add(int(handler["port"]))
        return found
