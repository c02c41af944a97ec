"""Per-kind behaviour of create, update and delete: what Kubernetes' registry strategies do.

A `Strategy` answers the questions the generic registry (pinnace.apiserver.registry) asks:
- on create: which defaults apply, whether the posted `status` is kept (kinds with a status
  subresource start with an empty status, except Nodes, whose agent registers with its status);
- on update: which parts the main resource may change (it ignores `status` for kinds with a status
  subresource; the `status` subresource changes nothing else), the immutability rules users hit
  (most of a Pod's spec, a Deployment's selector, a Service's clusterIP, a ConfigMap or Secret marked
  `immutable`), and kind-specific validation;
- on delete: the grace period (Pods: 30 s by default, immediate when unscheduled or finished).

Service cluster IPs (10.43.0.0/16) and node ports (30000-32767) are allocated here as store keys under
`/registry/pinnace/allocations/...`: creating the key claims the value atomically, so two API servers on
one etcd never hand out the same address, and deleting the Service releases it.
"""

from __future__ import annotations

import ipaddress
import random
from dataclasses import dataclass, field

from pinnace.api import defaults
from pinnace.api.crd import names_problems as crd_names_problems
from pinnace.api.crd import storage_version as crd_storage_version
from pinnace.api.selectors import SelectorError, label_selector_from_dict
from pinnace.apiserver.errors import Invalid, cause
from pinnace.store.base import KeyExists, KeyNotFound, Store

SERVICE_CIDR = ipaddress.ip_network("10.43.0.0/16")
KUBERNETES_SERVICE_IP = "10.43.0.1"
DNS_SERVICE_IP = "10.43.0.10"
NODE_PORT_RANGE = (30000, 32767)
ALLOCATION_PREFIX = "/registry/pinnace/allocations"

# Pod spec fields that may change after creation (Kubernetes' ValidatePodUpdate).
_POD_MUTABLE_SPEC = ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds", "schedulingGates")


_CRDS = "apiextensions.k8s.io/v1/customresourcedefinitions"


@dataclass
class Strategy:
    resource: str  # "v1/pods"
    kind: str
    group: str
    plural: str
    has_status: bool = False
    keeps_status_on_create: bool = False
    allow_create_on_update: bool = False
    return_deleted_object: bool = False
    tracks_generation: bool = True
    extra: dict = field(default_factory=dict)

    # ---- create ----

    def prepare_create(self, obj: dict) -> None:
        if self.has_status and not self.keeps_status_on_create:
            obj.pop("status", None)
        defaults.apply_defaults(self.resource, obj)
        if self.resource == "batch/v1/jobs":
            _job_selector(obj)
        elif self.resource == _CRDS:
            # As Kubernetes' CRD strategy: a new CRD's status starts empty but for the storage version,
            # which `storedVersions` records from the first write on (migrations read it).
            storage = crd_storage_version(obj)
            obj["status"] = {"acceptedNames": {"kind": "", "plural": ""}, "storedVersions": [storage] if storage else []}

    # ---- update ----

    def prepare_update(self, new: dict, old: dict) -> None:
        """Main-resource update: status is not the main resource's to change."""
        if self.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        defaults.apply_defaults(self.resource, new)
        if self.resource == _CRDS:
            # A new storage version joins `storedVersions`; versions stored before are never dropped here.
            storage = crd_storage_version(new)
            status = new.get("status") or {}
            stored = list(status.get("storedVersions") or [])
            if storage and storage not in stored:
                new["status"] = {**status, "storedVersions": [*stored, storage]}  # old's status stays as it was

    def prepare_status_update(self, new: dict, old: dict) -> dict:
        """The status subresource: only `status` changes; returns the object to store."""
        result = dict(old)
        result["metadata"] = dict(old["metadata"])
        # Metadata stays as stored: as in kube-apiserver, a status write changes status only.
        if "status" in new:
            result["status"] = new["status"]
        else:
            result.pop("status", None)
        return result

    # ---- validation ----

    def validate(self, obj: dict, old: dict | None) -> list[dict]:
        causes: list[dict] = []
        validator = _VALIDATORS.get(self.resource)
        if validator is not None:
            causes.extend(validator(obj))
        if old is not None:
            immutability = _IMMUTABILITY.get(self.resource)
            if immutability is not None:
                causes.extend(immutability(obj, old))
        return causes

    def spec_changed(self, new: dict, old: dict) -> bool:
        """Whether the generation must move: anything but metadata and status changed."""
        for key in new.keys() | old.keys():
            if key in ("metadata", "status", "kind", "apiVersion"):
                continue
            if new.get(key) != old.get(key):
                return True
        return False

    # ---- delete ----

    def grace_period(self, obj: dict, requested: int | None) -> int:
        """Seconds before the object disappears (0: at once)."""
        if self.resource != "v1/pods":
            return 0
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0  # no agent will confirm the kill: delete at once, as Kubernetes does
        if requested is not None:
            return max(requested, 0)
        return int(spec.get("terminationGracePeriodSeconds", 30))


def _job_selector(obj: dict) -> None:
    """Jobs select their pods by a generated controller-uid label unless `manualSelector` is set."""
    spec = obj.setdefault("spec", {})
    if spec.get("manualSelector"):
        return
    meta = obj["metadata"]
    uid, name = meta.get("uid", ""), meta.get("name", "")
    spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    labels = spec.setdefault("template", {}).setdefault("metadata", {}).setdefault("labels", {})
    labels.update(
        {
            "batch.kubernetes.io/controller-uid": uid,
            "batch.kubernetes.io/job-name": name,
            "controller-uid": uid,
            "job-name": name,
        }
    )


# ---- kind-specific validation ----

def _required(value: object, path: str) -> list[dict]:
    if value in (None, "", [], {}):
        return [cause(path, "Required value", "FieldValueRequired")]
    return []


def _validate_pod_spec(spec: dict, prefix: str) -> list[dict]:
    causes = _required(spec.get("containers"), f"{prefix}.containers")
    seen: set[str] = set()
    for kind in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(kind) or ()):
            path = f"{prefix}.{kind}[{i}]"
            causes += _required(container.get("name"), f"{path}.name")
            causes += _required(container.get("image"), f"{path}.image")
            name = container.get("name")
            if name in seen:
                causes.append(cause(f"{path}.name", f'Duplicate value: "{name}"', "FieldValueDuplicate"))
            seen.add(name)
            for j, port in enumerate(container.get("ports") or ()):
                number = port.get("containerPort")
                if isinstance(number, int) and not 0 < number < 65536:
                    causes.append(
                        cause(f"{path}.ports[{j}].containerPort", f"Invalid value: {number}: must be between 1 and 65535, inclusive")
                    )
    policy = spec.get("restartPolicy")
    if policy not in (None, "Always", "OnFailure", "Never"):
        causes.append(
            cause(
                f"{prefix}.restartPolicy",
                f'Unsupported value: "{policy}": supported values: "Always", "OnFailure", "Never"',
                "FieldValueNotSupported",
            )
        )
    return causes


def _validate_pod(obj: dict) -> list[dict]:
    return _validate_pod_spec(obj.get("spec") or {}, "spec")


def _validate_workload(obj: dict) -> list[dict]:
    """Deployments, ReplicaSets, StatefulSets, DaemonSets: a selector that matches the template."""
    spec = obj.get("spec") or {}
    causes: list[dict] = []
    selector = spec.get("selector")
    template = spec.get("template") or {}
    labels = (template.get("metadata") or {}).get("labels") or {}
    if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
        causes.append(cause("spec.selector", "Required value", "FieldValueRequired"))
    else:
        try:
            matches = label_selector_from_dict(selector).matches(labels)
        except SelectorError as error:
            causes.append(cause("spec.selector", f"Invalid value: {error}"))
        else:
            if not matches:
                causes.append(
                    cause(
                        "spec.template.metadata.labels",
                        f"Invalid value: {_go_map(labels)}: `selector` does not match template `labels`",
                    )
                )
    replicas = spec.get("replicas")
    if isinstance(replicas, int) and replicas < 0:
        causes.append(cause("spec.replicas", f"Invalid value: {replicas}: must be greater than or equal to 0"))
    causes += _validate_pod_spec(template.get("spec") or {}, "spec.template.spec")
    return causes


def _validate_job(obj: dict) -> list[dict]:
    template = (obj.get("spec") or {}).get("template") or {}
    pod_spec = template.get("spec") or {}
    causes = _validate_pod_spec(pod_spec, "spec.template.spec")
    policy = pod_spec.get("restartPolicy")
    if policy not in ("OnFailure", "Never"):
        causes.append(
            cause(
                "spec.template.spec.restartPolicy",
                f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
                "FieldValueNotSupported",
            )
        )
    return causes


def _validate_service(obj: dict) -> list[dict]:
    spec = obj.get("spec") or {}
    causes: list[dict] = []
    kind = spec.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        causes.append(
            cause(
                "spec.type",
                f'Unsupported value: "{kind}": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"',
                "FieldValueNotSupported",
            )
        )
    if kind == "ExternalName":
        causes += _required(spec.get("externalName"), "spec.externalName")
        return causes
    if not spec.get("ports") and spec.get("clusterIP") != "None":
        causes.append(cause("spec.ports", "Required value", "FieldValueRequired"))
    names = set()
    for i, port in enumerate(spec.get("ports") or ()):
        number = port.get("port")
        if not isinstance(number, int) or not 0 < number < 65536:
            causes.append(cause(f"spec.ports[{i}].port", f"Invalid value: {number}: must be between 1 and 65535, inclusive"))
        if len(spec["ports"]) > 1 and not port.get("name"):
            causes.append(cause(f"spec.ports[{i}].name", "Required value", "FieldValueRequired"))
        if port.get("name") in names:
            causes.append(cause(f"spec.ports[{i}].name", f'Duplicate value: "{port.get("name")}"', "FieldValueDuplicate"))
        names.add(port.get("name"))
    return causes


def _go_map(labels: dict) -> str:
    """How Go's %v prints a map[string]string (kubectl users see it in messages)."""
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items())) + "}"


def _validate_crd(obj: dict) -> list[dict]:
    return [cause("spec", problem) for problem in crd_names_problems(obj)]


_VALIDATORS = {
    "apiextensions.k8s.io/v1/customresourcedefinitions": _validate_crd,
    "v1/pods": _validate_pod,
    "apps/v1/deployments": _validate_workload,
    "apps/v1/replicasets": _validate_workload,
    "apps/v1/statefulsets": _validate_workload,
    "apps/v1/daemonsets": _validate_workload,
    "batch/v1/jobs": _validate_job,
    "v1/services": _validate_service,
}


# ---- immutability ----

def _immutable(path: str, new: object, old: object, message: str = "field is immutable") -> list[dict]:
    if new != old:
        return [cause(path, f"Invalid value: {_show(new)}: {message}")]
    return []


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "core.PodSpec{...}" if "containers" in value else "{...}"
    return str(value)


def _pod_immutability(new: dict, old: dict) -> list[dict]:
    new_spec, old_spec = dict(new.get("spec") or {}), dict(old.get("spec") or {})
    for name in _POD_MUTABLE_SPEC:
        new_spec.pop(name, None)
        old_spec.pop(name, None)
    # Container images may change; nothing else about a container may.
    for kind in ("containers", "initContainers"):
        new_list = [dict(c) for c in new_spec.get(kind) or []]
        old_list = [dict(c) for c in old_spec.get(kind) or []]
        if len(new_list) == len(old_list):
            for n, o in zip(new_list, old_list, strict=True):
                n.pop("image", None)
                o.pop("image", None)
        new_spec[kind], old_spec[kind] = new_list, old_list
    # The scheduler binds through pods/binding; a plain update may set nodeName only once.
    if not old_spec.get("nodeName"):
        old_spec.pop("nodeName", None)
        new_spec.pop("nodeName", None)
    if new_spec != old_spec:
        return [
            cause(
                "spec",
                "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
                "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only "
                "additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be "
                "set to 1 if it was previously negative)",
                "FieldValueForbidden",
            )
        ]
    return []


def _selector_immutability(new: dict, old: dict) -> list[dict]:
    return _immutable("spec.selector", (new.get("spec") or {}).get("selector"), (old.get("spec") or {}).get("selector"))


def _data_immutability(new: dict, old: dict) -> list[dict]:
    if not old.get("immutable"):
        return []
    causes = []
    if not new.get("immutable"):
        causes.append(cause("immutable", "Forbidden: field is immutable when `immutable` is set", "FieldValueForbidden"))
    for name in ("data", "binaryData", "stringData", "type"):
        if new.get(name) != old.get(name):
            causes.append(cause(name, "Forbidden: field is immutable when `immutable` is set", "FieldValueForbidden"))
    return causes


def _service_immutability(new: dict, old: dict) -> list[dict]:
    new_spec, old_spec = new.get("spec") or {}, old.get("spec") or {}
    old_ip = old_spec.get("clusterIP")
    if old_ip and old_ip != "None" and new_spec.get("type") != "ExternalName":
        return _immutable("spec.clusterIP", new_spec.get("clusterIP"), old_ip)
    return []


def _job_immutability(new: dict, old: dict) -> list[dict]:
    return _immutable(
        "spec.template", (new.get("spec") or {}).get("template"), (old.get("spec") or {}).get("template")
    ) + _selector_immutability(new, old)


_IMMUTABILITY = {
    "v1/pods": _pod_immutability,
    "apps/v1/deployments": _selector_immutability,
    "apps/v1/replicasets": _selector_immutability,
    "apps/v1/statefulsets": _selector_immutability,
    "apps/v1/daemonsets": _selector_immutability,
    "batch/v1/jobs": _job_immutability,
    "v1/configmaps": _data_immutability,
    "v1/secrets": _data_immutability,
    "v1/services": _service_immutability,
}

# Kinds whose create keeps the posted status (the node agent registers a Node with its status).
_KEEPS_STATUS = frozenset({"v1/nodes", "v1/persistentvolumes", "certificates.k8s.io/v1/certificatesigningrequests"})
# PUT of a missing object creates it (Kubernetes' AllowCreateOnUpdate).
_CREATE_ON_UPDATE = frozenset({"v1/events", "v1/endpoints", "coordination.k8s.io/v1/leases", "events.k8s.io/v1/events"})
# DELETE answers with the object rather than a Status.
_RETURNS_OBJECT = frozenset({"v1/pods", "v1/services", "v1/namespaces", "v1/nodes"})
# Kinds without `metadata.generation` in Kubernetes (plain data, no spec).
_NO_GENERATION = frozenset({"v1/configmaps", "v1/secrets", "v1/events", "events.k8s.io/v1/events", "v1/endpoints"})


def strategy_for(resource: str, kind: str, group: str, plural: str, subresources: dict) -> Strategy:
    return Strategy(
        resource=resource,
        kind=kind,
        group=group,
        plural=plural,
        has_status="status" in subresources,
        keeps_status_on_create=resource in _KEEPS_STATUS,
        allow_create_on_update=resource in _CREATE_ON_UPDATE,
        return_deleted_object=resource in _RETURNS_OBJECT,
        tracks_generation=resource not in _NO_GENERATION,
    )


# ---- Service allocations ----


class ServiceAllocator:
    """Cluster IPs and node ports, each claimed by creating one store key (released by deleting it)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        hosts = SERVICE_CIDR.num_addresses
        self._first = int(SERVICE_CIDR.network_address) + 1
        self._count = hosts - 2  # neither the network nor the broadcast address

    @staticmethod
    def _ip_key(ip: str) -> str:
        return f"{ALLOCATION_PREFIX}/serviceips/{ip}"

    @staticmethod
    def _port_key(port: int) -> str:
        return f"{ALLOCATION_PREFIX}/nodeports/{port}"

    async def _claim(self, key: str, owner: str) -> bool:
        try:
            await self.store.create(key, owner.encode())
        except KeyExists:
            current = await self.store.get(key)
            # The owner re-claiming what it holds (an update re-checking its IP) is fine.
            return current is not None and current.value == owner.encode()
        return True

    async def allocate_ip(self, owner: str, requested: str | None = None) -> str:
        if requested:
            try:
                address = ipaddress.ip_address(requested)
            except ValueError:
                raise Invalid.fields(
                    "Service", "", owner.rsplit("/", 1)[-1],
                    [cause("spec.clusterIPs", f'Invalid value: ["{requested}"]: must be a valid IP address')],
                ) from None
            if address not in SERVICE_CIDR:
                raise Invalid.fields(
                    "Service", "", owner.rsplit("/", 1)[-1],
                    [cause("spec.clusterIPs", f'Invalid value: ["{requested}"]: failed to allocate IP {requested}: '
                           f"the provided IP ({requested}) is not in the valid range. The range of valid IPs is {SERVICE_CIDR}")],
                )
            if not await self._claim(self._ip_key(requested), owner):
                raise Invalid.fields(
                    "Service", "", owner.rsplit("/", 1)[-1],
                    [cause("spec.clusterIPs", f'Invalid value: ["{requested}"]: failed to allocate IP {requested}: '
                           "provided IP is already allocated")],
                )
            return requested
        reserved = {KUBERNETES_SERVICE_IP, DNS_SERVICE_IP}
        for _ in range(64):
            ip = str(ipaddress.ip_address(self._first + random.randrange(self._count)))
            if ip in reserved:
                continue
            if await self._claim(self._ip_key(ip), owner):
                return ip
        raise Invalid.fields(
            "Service", "", owner.rsplit("/", 1)[-1], [cause("spec.clusterIPs", "Internal error: range is full")]
        )

    async def allocate_port(self, owner: str, requested: int | None = None) -> int:
        low, high = NODE_PORT_RANGE
        name = owner.rsplit("/", 1)[-1]
        if requested:
            if not low <= requested <= high:
                raise Invalid.fields(
                    "Service", "", name,
                    [cause("spec.ports[0].nodePort", f"Invalid value: {requested}: provided port is not in the valid range. "
                           f"The range of valid ports is {low}-{high}")],
                )
            if not await self._claim(self._port_key(requested), owner):
                raise Invalid.fields(
                    "Service", "", name,
                    [cause("spec.ports[0].nodePort", f"Invalid value: {requested}: provided port is already allocated")],
                )
            return requested
        for _ in range(64):
            port = random.randint(low, high)
            if await self._claim(self._port_key(port), owner):
                return port
        raise Invalid.fields("Service", "", name, [cause("spec.ports[0].nodePort", "Internal error: range is full")])

    async def release_ip(self, ip: str | None) -> None:
        if ip and ip != "None":
            try:
                await self.store.delete(self._ip_key(ip))
            except KeyNotFound:
                pass

    async def release_port(self, port: int | None) -> None:
        if port:
            try:
                await self.store.delete(self._port_key(port))
            except KeyNotFound:
                pass

    async def allocate(self, obj: dict, old: dict | None, owner: str) -> list[tuple[str, object]]:
        """Fill in clusterIP and nodePorts; returns what was newly claimed (to release on failure)."""
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        claimed: list[tuple[str, object]] = []
        kind = spec.get("type", "ClusterIP")
        try:
            if kind == "ExternalName":
                spec.pop("clusterIP", None)
                spec.pop("clusterIPs", None)
            else:
                old_ip = old_spec.get("clusterIP") if old_spec.get("type") != "ExternalName" else None
                if not spec.get("clusterIP") and old_ip:
                    spec["clusterIP"] = old_ip  # an update that leaves it out keeps the allocated one
                ip = spec.get("clusterIP")
                if ip != "None" and (not ip or ip != old_ip):
                    ip = await self.allocate_ip(owner, ip or None)
                    claimed.append(("ip", ip))
                    spec["clusterIP"] = ip
                spec["clusterIPs"] = [spec["clusterIP"]]
            old_ports = {
                (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort") for p in old_spec.get("ports") or ()
            }
            wants_ports = kind in ("NodePort", "LoadBalancer")
            for port in spec.get("ports") or ():
                if not wants_ports:
                    port.pop("nodePort", None)
                    continue
                previous = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
                if not port.get("nodePort") and previous:
                    port["nodePort"] = previous
                if port.get("nodePort") and port["nodePort"] == previous:
                    continue
                number = await self.allocate_port(owner, port.get("nodePort"))
                claimed.append(("port", number))
                port["nodePort"] = number
        except Exception:
            await self.release(claimed)
            raise
        return claimed

    async def release(self, claimed: list[tuple[str, object]]) -> None:
        for what, value in claimed:
            if what == "ip":
                await self.release_ip(str(value))
            else:
                await self.release_port(int(value))  # type: ignore[arg-type]

    async def release_unused(self, new: dict | None, old: dict) -> None:
        """After an update or delete: free what `old` held and `new` no longer does."""
        new_spec = (new or {}).get("spec") or {}
        old_spec = old.get("spec") or {}
        if old_spec.get("clusterIP") and old_spec.get("clusterIP") != new_spec.get("clusterIP"):
            await self.release_ip(old_spec["clusterIP"])
        new_ports = {p.get("nodePort") for p in new_spec.get("ports") or () if p.get("nodePort")}
        for port in old_spec.get("ports") or ():
            if port.get("nodePort") and port["nodePort"] not in new_ports:
                await self.release_port(port["nodePort"])
