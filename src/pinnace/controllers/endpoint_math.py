"""What a Service's Endpoints and EndpointSlices should contain, computed from its pods. No I/O.

Kubernetes' rules (pkg/controller/endpoint and endpointslice):
- A pod is an endpoint when it has an IP and has not finished; a pod being deleted is left out of
  Endpoints (unless `publishNotReadyAddresses`) and kept in slices as `terminating`.
- Ready pods go to `addresses`, the others to `notReadyAddresses`; `publishNotReadyAddresses` makes every
  pod count as ready.
- A named `targetPort` is looked up in each pod's container ports, so pods may differ; a pod that lacks
  the name is left out of that port. Pods with the same resolved ports share an Endpoints subset and
  slices, since a slice has one port list.
- Slices hold at most 100 endpoints. Existing slices keep the endpoints they have, so a pod turning ready
  rewrites one slice and not all of them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pinnace.controllers.objects import Object, is_being_deleted
from pinnace.controllers.pods import is_ready, is_terminal

MAX_ENDPOINTS_PER_SLICE = 100
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
HEADLESS_LABEL = "service.kubernetes.io/headless"

PortKey = tuple[tuple[str, int, str, str | None], ...]  # (name, port, protocol, appProtocol) per port


def pod_ip(pod: Mapping[str, Any]) -> str | None:
    status = pod.get("status") or {}
    return status.get("podIP") or next((entry.get("ip") for entry in status.get("podIPs") or ()), None)


def resolve_target_port(service_port: Mapping[str, Any], pod: Mapping[str, Any]) -> int | None:
    """The pod's port number for a Service port (a number, or a container port name looked up per pod)."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    for container in (pod.get("spec") or {}).get("containers") or ():
        for port in container.get("ports") or ():
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                return int(port["containerPort"])
    return None


def pod_ports(service: Mapping[str, Any], pod: Mapping[str, Any]) -> PortKey:
    ports = []
    for service_port in (service.get("spec") or {}).get("ports") or ():
        number = resolve_target_port(service_port, pod)
        if number is None:
            continue
        ports.append((service_port.get("name") or "", number, service_port.get("protocol") or "TCP",
                      service_port.get("appProtocol")))
    return tuple(ports)


def include_in_endpoints(pod: Mapping[str, Any], publish_not_ready: bool) -> bool:
    if not pod_ip(pod) or is_terminal(pod):
        return False
    return publish_not_ready or not is_being_deleted(pod)


def target_ref(pod: Mapping[str, Any]) -> Object:
    meta = pod["metadata"]
    return {"kind": "Pod", "namespace": meta.get("namespace"), "name": meta["name"], "uid": meta.get("uid")}


def _hostname(service: Mapping[str, Any], pod: Mapping[str, Any]) -> str | None:
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        return spec["hostname"]
    return None


def endpoints_subsets(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> list[Object]:
    """The `subsets` of a Service's Endpoints, sorted so that equal inputs give equal output."""
    spec = service.get("spec") or {}
    publish_not_ready = bool(spec.get("publishNotReadyAddresses"))
    groups: dict[PortKey, tuple[list[Object], list[Object]]] = {}
    for pod in pods:
        if not include_in_endpoints(pod, publish_not_ready):
            continue
        ports = pod_ports(service, pod)
        if spec.get("ports") and not ports:
            continue  # none of the Service's ports exist on this pod
        address: Object = {"ip": pod_ip(pod), "targetRef": target_ref(pod)}
        if (pod.get("spec") or {}).get("nodeName"):
            address["nodeName"] = pod["spec"]["nodeName"]
        hostname = _hostname(service, pod)
        if hostname:
            address["hostname"] = hostname
        ready, not_ready = groups.setdefault(ports, ([], []))
        (ready if publish_not_ready or is_ready(pod) else not_ready).append(address)
    subsets = []
    for ports, (ready, not_ready) in sorted(groups.items(), key=lambda item: item[0]):
        subset: Object = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        if ports:
            subset["ports"] = [_port_dict(p) for p in ports]
        subsets.append(subset)
    return subsets


def _port_dict(port: tuple[str, int, str, str | None]) -> Object:
    name, number, protocol, app_protocol = port
    result: Object = {"port": number, "protocol": protocol}
    if name:
        result["name"] = name
    if app_protocol:
        result["appProtocol"] = app_protocol
    return result


# --- EndpointSlices ---------------------------------------------------------------------------------


def address_type(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def slice_endpoint(service: Mapping[str, Any], pod: Mapping[str, Any]) -> Object:
    publish_not_ready = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    terminating = is_being_deleted(pod)
    ready = is_ready(pod)
    endpoint: Object = {
        "addresses": [pod_ip(pod)],
        # ready: serving and not terminating (or everything, with publishNotReadyAddresses)
        "conditions": {"ready": publish_not_ready or (ready and not terminating),
                       "serving": publish_not_ready or ready, "terminating": terminating},
        "targetRef": target_ref(pod),
    }
    if (pod.get("spec") or {}).get("nodeName"):
        endpoint["nodeName"] = pod["spec"]["nodeName"]
    hostname = _hostname(service, pod)
    if hostname:
        endpoint["hostname"] = hostname
    return endpoint


def desired_slice_endpoints(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
                            ) -> dict[tuple[str, PortKey], dict[str, Object]]:
    """{(addressType, ports): {ip: endpoint}} for every endpoint the Service's slices should hold."""
    spec = service.get("spec") or {}
    result: dict[tuple[str, PortKey], dict[str, Object]] = {}
    for pod in pods:
        ip = pod_ip(pod)
        if not ip or is_terminal(pod):
            continue
        ports = pod_ports(service, pod)
        if spec.get("ports") and not ports:
            continue
        result.setdefault((address_type(ip), ports), {})[ip] = slice_endpoint(service, pod)
    return result


def slice_ports(ports: PortKey) -> list[Object]:
    result = []
    for name, number, protocol, app_protocol in ports:
        entry: Object = {"name": name, "port": number, "protocol": protocol}
        if app_protocol:
            entry["appProtocol"] = app_protocol
        result.append(entry)
    return result


def slice_port_key(slice_: Mapping[str, Any]) -> PortKey:
    return tuple(sorted((p.get("name") or "", int(p.get("port") or 0), p.get("protocol") or "TCP", p.get("appProtocol"))
                        for p in slice_.get("ports") or ()))


def plan_slices(desired: Mapping[tuple[str, PortKey], Mapping[str, Object]],
                existing: Sequence[Mapping[str, Any]]) -> tuple[list[tuple[Mapping[str, Any], list[Object]]],
                                                                list[tuple[str, PortKey, list[Object]]],
                                                                list[Mapping[str, Any]]]:
    """Map desired endpoints onto existing slices with as few writes as possible.

    Returns (updates: [(slice, endpoints)] only for slices whose content changes,
             creates: [(addressType, ports, endpoints)], deletes: [slice]).
    """
    updates: list[tuple[Mapping[str, Any], list[Object]]] = []
    creates: list[tuple[str, PortKey, list[Object]]] = []
    deletes: list[Mapping[str, Any]] = []
    remaining = {group: dict(endpoints) for group, endpoints in desired.items()}
    # Keys sorted so each desired port group is compared in the same order as slice_port_key.
    remaining = {(t, tuple(sorted(p))): e for (t, p), e in remaining.items()}
    kept: list[tuple[Mapping[str, Any], tuple[str, PortKey], list[Object]]] = []
    for slice_ in sorted(existing, key=lambda s: s["metadata"]["name"]):
        group = (slice_.get("addressType") or "IPv4", slice_port_key(slice_))
        pool = remaining.get(group)
        if pool is None:
            deletes.append(slice_)
            continue
        endpoints = []
        for endpoint in slice_.get("endpoints") or ():
            ip = (endpoint.get("addresses") or [None])[0]
            if ip in pool and len(endpoints) < MAX_ENDPOINTS_PER_SLICE:
                endpoints.append(pool.pop(ip))
        kept.append((slice_, group, endpoints))
    # Fill kept slices that have room, then create new ones for what is left.
    for slice_, group, endpoints in kept:
        pool = remaining[group]
        while pool and len(endpoints) < MAX_ENDPOINTS_PER_SLICE:
            endpoints.append(pool.pop(next(iter(pool))))
        if not endpoints:
            deletes.append(slice_)
        elif _endpoints_differ(slice_.get("endpoints") or [], endpoints):
            updates.append((slice_, endpoints))
    for (type_, ports), pool in remaining.items():
        items = sorted(pool.values(), key=lambda e: e["addresses"][0])
        for start in range(0, len(items), MAX_ENDPOINTS_PER_SLICE):
            creates.append((type_, ports, items[start:start + MAX_ENDPOINTS_PER_SLICE]))
    return updates, creates, deletes


def _endpoints_differ(current: Sequence[Mapping[str, Any]], wanted: Sequence[Mapping[str, Any]]) -> bool:
    def normal(endpoints: Sequence[Mapping[str, Any]]) -> list:
        return sorted((_strip(e) for e in endpoints), key=lambda e: e["addresses"][0])
    return normal(current) != normal(wanted)


def _strip(endpoint: Mapping[str, Any]) -> Object:
    """An endpoint without the fields the server may add or drop (so equal means equal)."""
    result = {k: v for k, v in endpoint.items() if v is not None and k != "zone"}
    conditions = result.get("conditions") or {}
    result["conditions"] = {k: bool(v) for k, v in conditions.items() if v is not None}
    return result
