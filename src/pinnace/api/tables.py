"""Server-side printing: objects as meta.k8s.io `Table`s with kubectl's familiar columns.

The columns and cells follow kube-apiserver's printers (pkg/printers/internalversion): priority 0
columns are what `kubectl get` prints, priority 1 columns appear with `-o wide`. Ages are rendered on the
server ("5m", "2d3h"), as Kubernetes does. Kinds without a printer get Kubernetes' default table
(Name, Created At).

`rows[].object` is a PartialObjectMetadata by default, the full object with `includeObject=Object`,
nothing with `includeObject=None`; kubectl reads namespaces and labels (`-A`, `--show-labels`) from it.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

from pinnace.api.kinds import ResourceInfo

Column = tuple[str, str, str, int]  # name, type, format, priority
Cells = Callable[[dict], list[Any]]

_DESCRIPTIONS = {
    "Name": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    "Age": "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
}


def human_duration(seconds: float) -> str:
    """Kubernetes' duration.HumanDuration: "45s", "5m", "3h20m", "2d3h", "400d", "2y100d"."""
    s = int(seconds)
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m{rem}s" if rem else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        rem = minutes % 60
        return f"{hours}h{rem}m" if rem else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rem = hours % 24
        return f"{hours // 24}d{rem}h" if rem else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y{days}d" if days else f"{hours // 24 // 365}y"
    return f"{hours // 24 // 365}y"


def age(timestamp: str | None) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        when = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return "<unknown>"
    return human_duration((datetime.datetime.now(datetime.UTC) - when).total_seconds())


def _created(obj: dict) -> str:
    return age((obj.get("metadata") or {}).get("creationTimestamp"))


def _name(obj: dict) -> str:
    return (obj.get("metadata") or {}).get("name", "")


def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def _selector_text(selector: dict | None) -> str:
    if not selector:
        return "<none>"
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>"
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or ():
        op, values = expr.get("operator"), ",".join(expr.get("values") or ())
        parts.append({"In": f"{expr['key']} in ({values})", "NotIn": f"{expr['key']} notin ({values})",
                      "Exists": expr["key"], "DoesNotExist": f"!{expr['key']}"}.get(op, expr["key"]))
    return ",".join(parts) or "<none>"


def _template_containers(obj: dict) -> tuple[str, str]:
    containers = (((_spec(obj).get("template") or {}).get("spec") or {}).get("containers")) or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


# ---- pods ----

def pod_status_reason(pod: dict) -> str:
    """What kubectl shows in a pod's STATUS column (a shortened version of its printer's logic)."""
    status = _status(pod)
    reason = status.get("reason") or status.get("phase") or "Unknown"
    for container in status.get("initContainerStatuses") or ():
        state = container.get("state") or {}
        if (state.get("terminated") or {}).get("exitCode") == 0:
            continue
        if state.get("terminated"):
            reason = "Init:" + (state["terminated"].get("reason") or f"ExitCode:{state['terminated'].get('exitCode')}")
            break
        if state.get("waiting") and state["waiting"].get("reason") not in (None, "PodInitializing"):
            reason = "Init:" + state["waiting"]["reason"]
            break
    else:
        running = False
        for container in reversed(status.get("containerStatuses") or []):
            state = container.get("state") or {}
            if (state.get("waiting") or {}).get("reason"):
                reason = state["waiting"]["reason"]
            elif (state.get("terminated") or {}).get("reason"):
                reason = state["terminated"]["reason"]
            elif state.get("terminated"):
                code = state["terminated"].get("exitCode", 0)
                signal = state["terminated"].get("signal")
                reason = f"Signal:{signal}" if signal else f"ExitCode:{code}"
            elif state.get("running") and container.get("ready"):
                running = True
        if reason == "Completed" and running:
            reason = "Running"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    return reason


def _pod_cells(pod: dict) -> list[Any]:
    spec, status = _spec(pod), _status(pod)
    containers = spec.get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
    gates = spec.get("readinessGates") or []
    if gates:
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
        gate_text = f"{sum(1 for g in gates if conditions.get(g.get('conditionType')) == 'True')}/{len(gates)}"
    else:
        gate_text = "<none>"
    return [
        _name(pod),
        f"{ready}/{len(containers)}",
        pod_status_reason(pod),
        restarts,
        _created(pod),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        gate_text,
    ]


# ---- services ----

def _service_cells(svc: dict) -> list[Any]:
    spec = _spec(svc)
    kind = spec.get("type", "ClusterIP")
    external = spec.get("externalIPs") or []
    ingress = [i.get("ip") or i.get("hostname") for i in (_status(svc).get("loadBalancer") or {}).get("ingress") or []]
    if kind == "ExternalName":
        external_text = spec.get("externalName", "<none>")
    elif kind == "LoadBalancer":
        external_text = ",".join(ingress + external) or "<pending>"
    else:
        external_text = ",".join(external) or "<none>"
    ports = []
    for port in spec.get("ports") or ():
        text = f"{port.get('port')}"
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        ports.append(f"{text}/{port.get('protocol', 'TCP')}")
    selector = spec.get("selector")
    return [
        _name(svc),
        kind,
        spec.get("clusterIP") or "<none>",
        external_text,
        ",".join(ports) or "<none>",
        _created(svc),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) if selector else "<none>",
    ]


def _deployment_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _template_containers(obj)
    return [
        _name(obj),
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _created(obj),
        names,
        images,
        _selector_text(spec.get("selector")),
    ]


def _replicaset_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _template_containers(obj)
    return [
        _name(obj),
        spec.get("replicas", 0),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _created(obj),
        names,
        images,
        _selector_text(spec.get("selector")),
    ]


def _statefulset_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _template_containers(obj)
    return [_name(obj), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 0)}", _created(obj), names, images]


def _daemonset_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _template_containers(obj)
    node_selector = ((spec.get("template") or {}).get("spec") or {}).get("nodeSelector") or {}
    return [
        _name(obj),
        status.get("desiredNumberScheduled", 0),
        status.get("currentNumberScheduled", 0),
        status.get("numberReady", 0),
        status.get("updatedNumberScheduled", 0),
        status.get("numberAvailable", 0),
        ",".join(f"{k}={v}" for k, v in sorted(node_selector.items())) or "<none>",
        _created(obj),
        names,
        images,
        _selector_text(spec.get("selector")),
    ]


def _job_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    names, images = _template_containers(obj)
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    if conditions.get("Complete") == "True":
        state = "Complete"
    elif conditions.get("Failed") == "True":
        state = "Failed"
    elif (obj.get("metadata") or {}).get("deletionTimestamp"):
        state = "Terminating"
    elif conditions.get("Suspended") == "True":
        state = "Suspended"
    else:
        state = "Running"
    completions = spec.get("completions")
    completion_text = f"{status.get('succeeded', 0)}/{completions}" if completions is not None else f"{status.get('succeeded', 0)}/1 of {spec.get('parallelism', 1)}"
    duration = ""
    if status.get("startTime"):
        start = datetime.datetime.strptime(status["startTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
        end = (
            datetime.datetime.strptime(status["completionTime"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
            if status.get("completionTime") else datetime.datetime.now(datetime.UTC)
        )
        duration = human_duration((end - start).total_seconds())
    return [_name(obj), state, completion_text, duration, _created(obj), names, images, _selector_text(spec.get("selector"))]


def _cronjob_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    template = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {}
    containers = (template.get("spec") or {}).get("containers") or []
    return [
        _name(obj),
        spec.get("schedule", ""),
        spec.get("timeZone") or "<none>",
        "True" if spec.get("suspend") else "False",
        len(status.get("active") or []),
        age(status.get("lastScheduleTime")) if status.get("lastScheduleTime") else "<none>",
        _created(obj),
        ",".join(c.get("name", "") for c in containers),
        ",".join(c.get("image", "") for c in containers),
        _selector_text((spec.get("jobTemplate") or {}).get("spec", {}).get("selector")),
    ]


def _node_cells(node: dict) -> list[Any]:
    spec, status = _spec(node), _status(node)
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or ()}
    ready = conditions.get("Ready")
    state = "Ready" if ready == "True" else "NotReady" if ready in ("False",) else "Unknown"
    if spec.get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = (node.get("metadata") or {}).get("labels") or {}
    roles = sorted(
        {k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/") and "/" in k}
        | ({labels["kubernetes.io/role"]} if labels.get("kubernetes.io/role") else set())
    )
    info = status.get("nodeInfo") or {}
    addresses = status.get("addresses") or []
    internal = next((a.get("address") for a in addresses if a.get("type") == "InternalIP"), "<none>")
    external = next((a.get("address") for a in addresses if a.get("type") == "ExternalIP"), "<none>")
    return [
        _name(node),
        state,
        ",".join(roles) or "<none>",
        _created(node),
        info.get("kubeletVersion", ""),
        internal,
        external,
        info.get("osImage", "<unknown>") or "<unknown>",
        info.get("kernelVersion", "<unknown>") or "<unknown>",
        info.get("containerRuntimeVersion", "<unknown>") or "<unknown>",
    ]


def _event_cells(event: dict) -> list[Any]:
    involved = event.get("involvedObject") or {}
    source = event.get("source") or {}
    last = event.get("lastTimestamp") or event.get("eventTime") or (event.get("metadata") or {}).get("creationTimestamp")
    first = event.get("firstTimestamp") or event.get("eventTime") or (event.get("metadata") or {}).get("creationTimestamp")
    kind = (involved.get("kind") or "").lower()
    source_text = source.get("component", "") + (f", {source['host']}" if source.get("host") else "")
    return [
        age(last[:19] + "Z" if last and len(last) > 20 else last),
        event.get("type", ""),
        event.get("reason", ""),
        f"{kind}/{involved.get('name', '')}",
        involved.get("fieldPath", ""),
        source_text,
        (event.get("message") or "").strip(),
        age(first[:19] + "Z" if first and len(first) > 20 else first),
        event.get("count", 1),
        _name(event),
    ]


def _endpoints_cells(obj: dict) -> list[Any]:
    addresses = []
    for subset in obj.get("subsets") or ():
        ports = subset.get("ports") or [{}]
        for address in subset.get("addresses") or ():
            for port in ports:
                addresses.append(f"{address.get('ip')}:{port['port']}" if port.get("port") else address.get("ip"))
    text = ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")
    return [_name(obj), text or "<none>", _created(obj)]


def _endpointslice_cells(obj: dict) -> list[Any]:
    ports = ",".join(str(p.get("port")) for p in obj.get("ports") or () if p.get("port") is not None) or "<unset>"
    addresses = [a for e in obj.get("endpoints") or () for a in e.get("addresses") or ()]
    text = ",".join(addresses[:3]) + (f" + {len(addresses) - 3} more..." if len(addresses) > 3 else "")
    return [_name(obj), obj.get("addressType", ""), ports, text or "<unset>", _created(obj)]


def _ingress_cells(obj: dict) -> list[Any]:
    spec = _spec(obj)
    hosts = ",".join(r.get("host", "*") or "*" for r in spec.get("rules") or ()) or "*"
    ingress = (_status(obj).get("loadBalancer") or {}).get("ingress") or []
    address = ",".join(i.get("ip") or i.get("hostname") or "" for i in ingress)
    ports = "80, 443" if spec.get("tls") else "80"
    return [_name(obj), spec.get("ingressClassName") or "<none>", hosts, address, ports, _created(obj)]


def _hpa_targets(spec: dict, status: dict) -> str:
    """kubectl's formatHPAMetrics: "cpu: 80%/50%" per metric, current from status.currentMetrics[i]."""
    metrics = spec.get("metrics")
    if metrics is None and spec.get("targetCPUUtilizationPercentage") is not None:  # autoscaling/v1
        current = status.get("currentCPUUtilizationPercentage")
        return f"cpu: {'<unknown>' if current is None else f'{current}%'}/{spec['targetCPUUtilizationPercentage']}%"
    if not metrics:
        return "<none>"
    statuses = status.get("currentMetrics") or []
    parts = []
    for i, metric in enumerate(metrics):
        kind = metric.get("type")
        field = {"Resource": "resource", "ContainerResource": "containerResource", "Pods": "pods",
                 "Object": "object", "External": "external"}.get(kind or "")
        if field is None:
            parts.append("<unknown type>")
            continue
        source = metric.get(field) or {}
        target = source.get("target") or {}
        current_status = ((statuses[i] if i < len(statuses) else {}) or {}).get(field) or {}
        current = current_status.get("current") or {}
        if field in ("resource", "containerResource"):
            prefix = source.get("name", "") if field == "resource" else f"{source.get('name', '')}/{source.get('container', '')}"
            if target.get("averageValue") is not None:
                parts.append(f"{prefix}: {current.get('averageValue', '<unknown>')}/{target['averageValue']}")
            else:
                now = current.get("averageUtilization")
                goal = target.get("averageUtilization")
                parts.append(f"{prefix}: {'<unknown>' if now is None else f'{now}%'}/"
                             f"{'<auto>' if goal is None else f'{goal}%'}")
        else:
            value = "value" if target.get("type") == "Value" or (target.get("value") is not None
                                                                  and target.get("averageValue") is None) else "averageValue"
            suffix = " (avg)" if value == "averageValue" and field != "pods" else ""
            parts.append(f"{current.get(value, '<unknown>')}/{target.get(value, '<unknown>')}{suffix}")
    if len(parts) > 2:
        return f"{', '.join(parts[:2])} + {len(parts) - 2} more..."
    return ", ".join(parts)


def _hpa_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    ref = spec.get("scaleTargetRef") or {}
    return [
        _name(obj),
        f"{ref.get('kind', '')}/{ref.get('name', '')}",
        _hpa_targets(spec, status),
        spec.get("minReplicas", "<unset>"),
        spec.get("maxReplicas", 0),
        status.get("currentReplicas", 0),
        _created(obj),
    ]


def _pdb_cells(obj: dict) -> list[Any]:
    spec, status = _spec(obj), _status(obj)
    return [
        _name(obj),
        spec.get("minAvailable", "N/A"),
        spec.get("maxUnavailable", "N/A"),
        status.get("disruptionsAllowed", 0),
        _created(obj),
    ]


def _rolebinding_cells(obj: dict) -> list[Any]:
    ref = obj.get("roleRef") or {}
    subjects = obj.get("subjects") or []
    users = ",".join(s.get("name", "") for s in subjects if s.get("kind") == "User")
    groups = ",".join(s.get("name", "") for s in subjects if s.get("kind") == "Group")
    accounts = ",".join(f"{s.get('namespace', '')}/{s.get('name', '')}" for s in subjects if s.get("kind") == "ServiceAccount")
    return [_name(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", _created(obj), users, groups, accounts]


def _default_cells(obj: dict) -> list[Any]:
    return [_name(obj), (obj.get("metadata") or {}).get("creationTimestamp")]


_POD_COLUMNS: list[Column] = [
    ("Name", "string", "name", 0), ("Ready", "string", "", 0), ("Status", "string", "", 0),
    ("Restarts", "string", "", 0), ("Age", "string", "", 0), ("IP", "string", "", 1), ("Node", "string", "", 1),
    ("Nominated Node", "string", "", 1), ("Readiness Gates", "string", "", 1),
]
_WORKLOAD_WIDE: list[Column] = [("Containers", "string", "", 1), ("Images", "string", "", 1), ("Selector", "string", "", 1)]

PRINTERS: dict[str, tuple[list[Column], Cells]] = {
    "v1/pods": (_POD_COLUMNS, _pod_cells),
    "v1/services": (
        [("Name", "string", "name", 0), ("Type", "string", "", 0), ("Cluster-IP", "string", "", 0),
         ("External-IP", "string", "", 0), ("Port(s)", "string", "", 0), ("Age", "string", "", 0),
         ("Selector", "string", "", 1)],
        _service_cells,
    ),
    "apps/v1/deployments": (
        [("Name", "string", "name", 0), ("Ready", "string", "", 0), ("Up-to-date", "string", "", 0),
         ("Available", "string", "", 0), ("Age", "string", "", 0), *_WORKLOAD_WIDE],
        _deployment_cells,
    ),
    "apps/v1/replicasets": (
        [("Name", "string", "name", 0), ("Desired", "integer", "", 0), ("Current", "integer", "", 0),
         ("Ready", "integer", "", 0), ("Age", "string", "", 0), *_WORKLOAD_WIDE],
        _replicaset_cells,
    ),
    "v1/replicationcontrollers": (
        [("Name", "string", "name", 0), ("Desired", "integer", "", 0), ("Current", "integer", "", 0),
         ("Ready", "integer", "", 0), ("Age", "string", "", 0), *_WORKLOAD_WIDE],
        _replicaset_cells,
    ),
    "apps/v1/statefulsets": (
        [("Name", "string", "name", 0), ("Ready", "string", "", 0), ("Age", "string", "", 0),
         ("Containers", "string", "", 1), ("Images", "string", "", 1)],
        _statefulset_cells,
    ),
    "apps/v1/daemonsets": (
        [("Name", "string", "name", 0), ("Desired", "integer", "", 0), ("Current", "integer", "", 0),
         ("Ready", "integer", "", 0), ("Up-to-date", "integer", "", 0), ("Available", "integer", "", 0),
         ("Node Selector", "string", "", 0), ("Age", "string", "", 0), *_WORKLOAD_WIDE],
        _daemonset_cells,
    ),
    "batch/v1/jobs": (
        [("Name", "string", "name", 0), ("Status", "string", "", 0), ("Completions", "string", "", 0),
         ("Duration", "string", "", 0), ("Age", "string", "", 0), *_WORKLOAD_WIDE],
        _job_cells,
    ),
    "batch/v1/cronjobs": (
        [("Name", "string", "name", 0), ("Schedule", "string", "", 0), ("Timezone", "string", "", 0),
         ("Suspend", "boolean", "", 0), ("Active", "integer", "", 0), ("Last Schedule", "string", "", 0),
         ("Age", "string", "", 0), *_WORKLOAD_WIDE],
        _cronjob_cells,
    ),
    "v1/namespaces": (
        [("Name", "string", "name", 0), ("Status", "string", "", 0), ("Age", "string", "", 0)],
        lambda o: [_name(o), _status(o).get("phase", ""), _created(o)],
    ),
    "v1/nodes": (
        [("Name", "string", "name", 0), ("Status", "string", "", 0), ("Roles", "string", "", 0),
         ("Age", "string", "", 0), ("Version", "string", "", 0), ("Internal-IP", "string", "", 1),
         ("External-IP", "string", "", 1), ("OS-Image", "string", "", 1), ("Kernel-Version", "string", "", 1),
         ("Container-Runtime", "string", "", 1)],
        _node_cells,
    ),
    "v1/configmaps": (
        [("Name", "string", "name", 0), ("Data", "string", "", 0), ("Age", "string", "", 0)],
        lambda o: [_name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), _created(o)],
    ),
    "v1/secrets": (
        [("Name", "string", "name", 0), ("Type", "string", "", 0), ("Data", "string", "", 0), ("Age", "string", "", 0)],
        lambda o: [_name(o), o.get("type", ""), len(o.get("data") or {}), _created(o)],
    ),
    "v1/serviceaccounts": (
        [("Name", "string", "name", 0), ("Secrets", "string", "", 0), ("Age", "string", "", 0)],
        lambda o: [_name(o), len(o.get("secrets") or []), _created(o)],
    ),
    "v1/events": (
        [("Last Seen", "string", "", 0), ("Type", "string", "", 0), ("Reason", "string", "", 0),
         ("Object", "string", "", 0), ("Subobject", "string", "", 1), ("Source", "string", "", 1),
         ("Message", "string", "", 0), ("First Seen", "string", "", 1), ("Count", "string", "", 1),
         ("Name", "string", "", 1)],
        _event_cells,
    ),
    "v1/endpoints": (
        [("Name", "string", "name", 0), ("Endpoints", "string", "", 0), ("Age", "string", "", 0)],
        _endpoints_cells,
    ),
    "discovery.k8s.io/v1/endpointslices": (
        [("Name", "string", "name", 0), ("AddressType", "string", "", 0), ("Ports", "string", "", 0),
         ("Endpoints", "string", "", 0), ("Age", "string", "", 0)],
        _endpointslice_cells,
    ),
    "coordination.k8s.io/v1/leases": (
        [("Name", "string", "name", 0), ("Holder", "string", "", 0), ("Age", "string", "", 0)],
        lambda o: [_name(o), _spec(o).get("holderIdentity", ""), _created(o)],
    ),
    "networking.k8s.io/v1/ingresses": (
        [("Name", "string", "name", 0), ("Class", "string", "", 0), ("Hosts", "string", "", 0),
         ("Address", "string", "", 0), ("Ports", "string", "", 0), ("Age", "string", "", 0)],
        _ingress_cells,
    ),
    "autoscaling/v2/horizontalpodautoscalers": (
        [("Name", "string", "name", 0), ("Reference", "string", "", 0), ("Targets", "string", "", 0),
         ("MinPods", "string", "", 0), ("MaxPods", "string", "", 0), ("Replicas", "string", "", 0),
         ("Age", "string", "", 0)],
        _hpa_cells,
    ),
    "policy/v1/poddisruptionbudgets": (
        [("Name", "string", "name", 0), ("Min Available", "string", "", 0), ("Max Unavailable", "string", "", 0),
         ("Allowed Disruptions", "integer", "", 0), ("Age", "string", "", 0)],
        _pdb_cells,
    ),
    "rbac.authorization.k8s.io/v1/rolebindings": (
        [("Name", "string", "name", 0), ("Role", "string", "", 0), ("Age", "string", "", 0),
         ("Users", "string", "", 1), ("Groups", "string", "", 1), ("ServiceAccounts", "string", "", 1)],
        _rolebinding_cells,
    ),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": (
        [("Name", "string", "name", 0), ("Role", "string", "", 0), ("Age", "string", "", 0),
         ("Users", "string", "", 1), ("Groups", "string", "", 1), ("ServiceAccounts", "string", "", 1)],
        _rolebinding_cells,
    ),
    "scheduling.k8s.io/v1/priorityclasses": (
        [("Name", "string", "name", 0), ("Value", "integer", "", 0), ("Global-Default", "boolean", "", 0),
         ("Age", "string", "", 0), ("PreemptionPolicy", "string", "", 0)],
        lambda o: [_name(o), o.get("value", 0), bool(o.get("globalDefault")), _created(o),
                   o.get("preemptionPolicy", "PreemptLowerPriority")],
    ),
    "storage.k8s.io/v1/storageclasses": (
        [("Name", "string", "name", 0), ("Provisioner", "string", "", 0), ("ReclaimPolicy", "string", "", 0),
         ("VolumeBindingMode", "string", "", 0), ("AllowVolumeExpansion", "string", "", 0), ("Age", "string", "", 0)],
        lambda o: [_name(o), o.get("provisioner", ""), o.get("reclaimPolicy", "Delete"),
                   o.get("volumeBindingMode", "Immediate"), bool(o.get("allowVolumeExpansion")), _created(o)],
    ),
    "apps/v1/controllerrevisions": (
        [("Name", "string", "name", 0), ("Controller", "string", "", 0), ("Revision", "integer", "", 0),
         ("Age", "string", "", 0)],
        lambda o: [_name(o), next((f"{r.get('kind', '').lower()}.{r.get('apiVersion', '').split('/')[0]}/{r.get('name')}"
                                   for r in (o.get("metadata") or {}).get("ownerReferences") or () if r.get("controller")), "<none>"),
                   o.get("revision", 0), _created(o)],
    ),
    "v1/persistentvolumeclaims": (
        [("Name", "string", "name", 0), ("Status", "string", "", 0), ("Volume", "string", "", 0),
         ("Capacity", "string", "", 0), ("Access Modes", "string", "", 0), ("StorageClass", "string", "", 0),
         ("Age", "string", "", 0)],
        lambda o: [_name(o), _status(o).get("phase", ""), _spec(o).get("volumeName", ""),
                   (_status(o).get("capacity") or {}).get("storage", ""), ",".join(_status(o).get("accessModes") or []),
                   _spec(o).get("storageClassName") or "<unset>", _created(o)],
    ),
}
PRINTERS["autoscaling/v1/horizontalpodautoscalers"] = PRINTERS["autoscaling/v2/horizontalpodautoscalers"]

_DEFAULT_COLUMNS: list[Column] = [("Name", "string", "name", 0), ("Created At", "date", "", 0)]


def column_definitions(info: ResourceInfo) -> list[dict]:
    columns = PRINTERS.get(info.name, (_DEFAULT_COLUMNS, _default_cells))[0]
    return [
        {"name": name, "type": kind, "format": fmt, "description": _DESCRIPTIONS.get(name, name), "priority": priority}
        for name, kind, fmt, priority in columns
    ]


def partial(obj: dict) -> dict:
    return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata") or {}}


def to_table(info: ResourceInfo, objects: list[dict], include_object: str = "Metadata", version: str = "v1") -> dict:
    if include_object not in ("None", "Metadata", "Object"):
        include_object = "Metadata"
    cells = PRINTERS.get(info.name, (_DEFAULT_COLUMNS, _default_cells))[1]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": cells(obj)}
        if include_object == "Object":
            row["object"] = obj
        elif include_object == "Metadata":
            row["object"] = partial(obj)
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": {},
        "columnDefinitions": column_definitions(info),
        "rows": rows,
    }
