"""From a pod's container spec to what the runtime runs: environment, command line, limits, QoS class.

Same rules as the kubelet:
- The environment is built in this order, later entries winning: Service variables (when
  `enableServiceLinks`, the default), `envFrom` sources in order, then `env` in order. `env` values
  may refer to variables defined before them as `$(VAR)`; `$$(VAR)` is an escaped literal; an
  undefined reference stays as written.
- `command` and `args` are expanded with the final environment the same way.
- A missing ConfigMap or Secret (or key) that is not `optional` makes the container wait with reason
  `CreateContainerConfigError`.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Awaitable, Callable
from decimal import Decimal

from pinnace.api.quantity import parse_quantity

Getter = Callable[[str, str, str], Awaitable[dict | None]]  # (resource, namespace, name) -> object or None


class ConfigError(Exception):
    """The container cannot be configured yet; reported as CreateContainerConfigError."""


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion (k8s.io/kubernetes/third_party/forked/golang/expansion)."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "$" and i + 1 < len(text):
            following = text[i + 1]
            if following == "$":
                out.append("$")
                i += 2
                continue
            if following == "(":
                end = text.find(")", i + 2)
                if end >= 0:
                    name = text[i + 2 : end]
                    out.append(env[name] if name in env else f"$({name})")
                    i = end + 1
                    continue
        out.append(char)
        i += 1
    return "".join(out)


def service_env(services: list[dict]) -> dict[str, str]:
    """`<SVC>_SERVICE_HOST`/`_PORT` and the docker-link variables for each Service with a cluster IP."""
    env: dict[str, str] = {}
    for service in services:
        spec = service.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        name = service["metadata"]["name"].upper().replace("-", "_")
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for port in ports:
            if port.get("name"):
                env[f"{name}_SERVICE_PORT_{port['name'].upper().replace('-', '_')}"] = str(port["port"])
        first = ports[0]
        protocol = first.get("protocol", "TCP")
        env[f"{name}_PORT"] = f"{protocol.lower()}://{ip}:{first['port']}"
        for port in ports:
            protocol = port.get("protocol", "TCP")
            prefix = f"{name}_PORT_{port['port']}_{protocol}"
            env[prefix] = f"{protocol.lower()}://{ip}:{port['port']}"
            env[prefix + "_PROTO"] = protocol.lower()
            env[prefix + "_PORT"] = str(port["port"])
            env[prefix + "_ADDR"] = ip
    return env


def field_ref(pod: dict, path: str) -> str:
    """A downward API `fieldRef` value."""
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    match = re.fullmatch(r"metadata\.(labels|annotations)\['(.*)'\]", path)
    if match:
        return (metadata.get(match.group(1)) or {}).get(match.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = metadata.get(path.split(".")[1]) or {}
        return "\n".join(f'{key}="{value}"' for key, value in sorted(items.items()))
    simple = {
        "metadata.name": metadata.get("name", ""),
        "metadata.namespace": metadata.get("namespace", ""),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", "default"),
        "status.hostIP": status.get("hostIP", ""),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs") or []),
        "status.hostIPs": ",".join(ip["ip"] for ip in status.get("hostIPs") or []),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldRef {path!r}")
    return simple[path]


def resource_field_ref(pod: dict, container_name: str | None, ref: dict, allocatable: dict[str, str]) -> str:
    """A downward API `resourceFieldRef`: limits default to the node's allocatable, as in Kubernetes."""
    name = ref.get("containerName") or container_name
    container = next(
        (c for c in (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or []) if c["name"] == name),
        None,
    )
    if container is None:
        raise ConfigError(f"resourceFieldRef: no container {name!r}")
    kind, _, resource = ref["resource"].partition(".")
    resources = (container.get("resources") or {}).get(kind) or {}
    value = resources.get(resource)
    if value is None and kind == "limits":
        value = allocatable.get(resource)
    if value is None:
        value = "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    amount = parse_quantity(value) / (divisor if divisor else Decimal(1))
    return str(math.ceil(amount))


def _secret_value(secret: dict, key: str) -> str | None:
    if key in (secret.get("stringData") or {}):
        return secret["stringData"][key]
    if key in (secret.get("data") or {}):
        return base64.b64decode(secret["data"][key]).decode(errors="replace")
    return None


async def build_env(
    pod: dict, container: dict, get: Getter, services: list[dict], allocatable: dict[str, str]
) -> dict[str, str]:
    namespace = pod["metadata"].get("namespace", "default")
    env: dict[str, str] = {}
    # `services` is already what the kubelet exposes: without enableServiceLinks only the `kubernetes`
    # Service, whose variables Kubernetes always sets (in-cluster clients find the API server by them).
    env.update(service_env(services))
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            ref = source["configMapRef"]
            obj = await get("v1/configmaps", namespace, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'configmap "{ref["name"]}" not found')
            for key, value in (obj.get("data") or {}).items():
                env[prefix + key] = value
        elif "secretRef" in source:
            ref = source["secretRef"]
            obj = await get("v1/secrets", namespace, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'secret "{ref["name"]}" not found')
            for key in list(obj.get("data") or {}) + list(obj.get("stringData") or {}):
                env[prefix + key] = _secret_value(obj, key) or ""
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(item.get("value", ""), env)
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            env[name] = field_ref(pod, source["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in source:
            env[name] = resource_field_ref(pod, container["name"], source["resourceFieldRef"], allocatable)
        elif "configMapKeyRef" in source or "secretKeyRef" in source:
            is_secret = "secretKeyRef" in source
            ref = source["secretKeyRef" if is_secret else "configMapKeyRef"]
            kind = "secret" if is_secret else "configmap"
            obj = await get("v1/secrets" if is_secret else "v1/configmaps", namespace, ref["name"])
            value = None
            if obj is not None:
                value = _secret_value(obj, ref["key"]) if is_secret else (obj.get("data") or {}).get(ref["key"])
            if value is None:
                if ref.get("optional"):
                    continue
                if obj is None:
                    raise ConfigError(f'{kind} "{ref["name"]}" not found')
                raise ConfigError(f"couldn't find key {ref['key']} in {kind.capitalize()} {namespace}/{ref['name']}")
            env[name] = value
    return env


def command_line(container: dict, env: dict[str, str]) -> list[str]:
    """`command` + `args`, expanded; the process runtime has no image entrypoint to fall back on."""
    command = [expand(part, env) for part in container.get("command") or []]
    args = [expand(part, env) for part in container.get("args") or []]
    if not command:
        return []
    return command + args


def qos_class(pod: dict) -> str:
    """Guaranteed, Burstable or BestEffort, computed as Kubernetes does."""
    containers = (pod["spec"].get("containers") or []) + (pod["spec"].get("initContainers") or [])
    requests: dict[str, Decimal] = {}
    limits: dict[str, Decimal] = {}
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        container_requests = {k: v for k, v in (resources.get("requests") or {}).items() if k in ("cpu", "memory")}
        container_limits = {k: v for k, v in (resources.get("limits") or {}).items() if k in ("cpu", "memory")}
        for key, value in container_requests.items():
            if parse_quantity(value) != 0:
                requests[key] = requests.get(key, Decimal(0)) + parse_quantity(value)
        for key, value in container_limits.items():
            if parse_quantity(value) != 0:
                limits[key] = limits.get(key, Decimal(0)) + parse_quantity(value)
        if set(container_limits) != {"cpu", "memory"}:
            guaranteed = False
        for key in ("cpu", "memory"):
            request = container_requests.get(key, container_limits.get(key))
            if key in container_limits and request is not None and parse_quantity(request) != parse_quantity(container_limits[key]):
                guaranteed = False
    if not requests and not limits:
        return "BestEffort"
    if guaranteed and set(limits) == {"cpu", "memory"}:
        return "Guaranteed"
    return "Burstable"


def resolv_conf(pod: dict, cluster_dns: list[str], cluster_domain: str) -> str | None:
    """The pod's /etc/resolv.conf per `dnsPolicy` and `dnsConfig`; None means the host's file."""
    spec = pod["spec"]
    policy = spec.get("dnsPolicy", "ClusterFirst")
    if policy == "Default" or (policy == "ClusterFirst" and spec.get("hostNetwork")):
        return None
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        if not cluster_dns:
            return None
        namespace = pod["metadata"].get("namespace", "default")
        nameservers = list(cluster_dns)
        searches = [f"{namespace}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain]
        options = ["ndots:5"]
    config = spec.get("dnsConfig") or {}
    nameservers += [n for n in config.get("nameservers") or [] if n not in nameservers]
    searches += [n for n in config.get("searches") or [] if n not in searches]
    for option in config.get("options") or []:
        name = option["name"]
        options = [o for o in options if o.split(":")[0] != name]
        options.append(f"{name}:{option['value']}" if option.get("value") is not None else name)
    if not nameservers:
        return None
    lines = [f"nameserver {server}" for server in nameservers[:3]]
    if searches:
        lines.append("search " + " ".join(searches[:6]))
    if options:
        lines.append("options " + " ".join(options))
    return "\n".join(lines) + "\n"
