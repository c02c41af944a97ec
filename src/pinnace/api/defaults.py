"""The defaults kube-apiserver fills in on create (and update), for the fields users rely on.

Matches Kubernetes' generated defaulters. What admission plugins set (the ServiceAccount's
`serviceAccountName`, Priority's `priority`, DefaultTolerationSeconds' 300 s tolerations) comes from
those plugins alone, so disabling one takes its defaults away, as in Kubernetes. Allocation of Service cluster IPs and node ports is not a
default but a registry action: see pinnace.apiserver.strategies.
"""

from __future__ import annotations

from collections.abc import Callable


def image_pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image, else IfNotPresent (digests count as tagged)."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return "Always"
    return "Always" if last.rsplit(":", 1)[1] == "latest" else "IfNotPresent"


def _container(container: dict) -> None:
    container.setdefault("imagePullPolicy", image_pull_policy(container.get("image") or ""))
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("resources", {})
    for port in container.get("ports") or ():
        port.setdefault("protocol", "TCP")
    for env in container.get("env") or ():
        source = env.get("valueFrom") or {}
        if "fieldRef" in source:
            source["fieldRef"].setdefault("apiVersion", "v1")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(probe_name)
        if probe:
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            http = probe.get("httpGet")
            if http:
                http.setdefault("path", "/")
                http.setdefault("scheme", "HTTP")


def pod_spec(spec: dict) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    for container in spec.get("containers") or ():
        _container(container)
    for container in spec.get("initContainers") or ():
        _container(container)
    for volume in spec.get("volumes") or ():
        for source, mode_field in (("configMap", "defaultMode"), ("secret", "defaultMode")):
            if source in volume:
                volume[source].setdefault(mode_field, 420)
        if "hostPath" in volume:
            volume["hostPath"].setdefault("type", "")


def pod(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    pod_spec(spec)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    status = obj.setdefault("status", {})
    status.setdefault("phase", "Pending")
    status.setdefault("qosClass", qos_class(spec))


def qos_class(spec: dict) -> str:
    """Guaranteed, Burstable or BestEffort, as the kubelet and kube-apiserver compute it."""
    requests_seen = False
    guaranteed = True
    for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        resources = container.get("resources") or {}
        requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
        if requests or limits:
            requests_seen = True
        for name in ("cpu", "memory"):
            if name not in limits:
                guaranteed = False
            elif name in requests and str(requests[name]) != str(limits[name]):
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _template(obj: dict) -> None:
    template = obj.setdefault("spec", {}).get("template")
    if isinstance(template, dict):
        pod_spec(template.setdefault("spec", {}))


def deployment(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    _template(obj)


def replica_set(obj: dict) -> None:
    obj.setdefault("spec", {}).setdefault("replicas", 1)
    _template(obj)


def replication_controller(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    template = spec.get("template") or {}
    # An RC without a selector selects its template's labels.
    if not spec.get("selector") and (template.get("metadata") or {}).get("labels"):
        spec["selector"] = dict(template["metadata"]["labels"])
    _template(obj)


def stateful_set(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type") == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("persistentVolumeClaimRetentionPolicy", {"whenDeleted": "Retain", "whenScaled": "Retain"})
    _template(obj)


def daemon_set(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    strategy = spec.setdefault("updateStrategy", {"type": "RollingUpdate"})
    if strategy.get("type") == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", 1)
        rolling.setdefault("maxSurge", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    _template(obj)


def job(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("parallelism", 1)
    if spec.get("completionMode", "NonIndexed") == "NonIndexed" or "completions" not in spec:
        spec.setdefault("completions", spec["parallelism"] if spec.get("completionMode") == "Indexed" else 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
    _template(obj)


def cron_job(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("concurrencyPolicy", "Allow")
    spec.setdefault("suspend", False)
    spec.setdefault("successfulJobsHistoryLimit", 3)
    spec.setdefault("failedJobsHistoryLimit", 1)
    job_template = spec.get("jobTemplate")
    if isinstance(job_template, dict):
        template = (job_template.get("spec") or {}).get("template")
        if isinstance(template, dict):
            pod_spec(template.setdefault("spec", {}))


def service(obj: dict) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    if spec["type"] == "ExternalName":
        return
    spec.setdefault("sessionAffinity", "None")
    for port in spec.get("ports") or ():
        port.setdefault("protocol", "TCP")
        if "port" in port:
            port.setdefault("targetPort", port["port"])
    spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
    if spec.get("clusterIP") != "None":
        spec.setdefault("ipFamilies", ["IPv4"])
        spec.setdefault("ipFamilyPolicy", "SingleStack")
    if spec.get("sessionAffinity") == "ClientIP":
        spec.setdefault("sessionAffinityConfig", {"clientIP": {"timeoutSeconds": 10800}})
    obj.setdefault("status", {}).setdefault("loadBalancer", {})


def namespace(obj: dict) -> None:
    name = (obj.get("metadata") or {}).get("name")
    if name:
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
    obj.setdefault("status", {}).setdefault("phase", "Active")


def secret(obj: dict) -> None:
    obj.setdefault("type", "Opaque")


def node(obj: dict) -> None:
    obj.setdefault("spec", {})
    obj.setdefault("status", {})


def horizontal_pod_autoscaler(obj: dict) -> None:
    obj.setdefault("spec", {}).setdefault("minReplicas", 1)


def pod_disruption_budget(obj: dict) -> None:
    obj.setdefault("spec", {})


DEFAULTERS: dict[str, Callable[[dict], None]] = {
    "v1/pods": pod,
    "v1/services": service,
    "v1/namespaces": namespace,
    "v1/secrets": secret,
    "v1/nodes": node,
    "v1/replicationcontrollers": replication_controller,
    "v1/podtemplates": lambda obj: pod_spec(obj.setdefault("template", {}).setdefault("spec", {})),
    "apps/v1/deployments": deployment,
    "apps/v1/replicasets": replica_set,
    "apps/v1/statefulsets": stateful_set,
    "apps/v1/daemonsets": daemon_set,
    "batch/v1/jobs": job,
    "batch/v1/cronjobs": cron_job,
    "autoscaling/v1/horizontalpodautoscalers": horizontal_pod_autoscaler,
    "autoscaling/v2/horizontalpodautoscalers": horizontal_pod_autoscaler,
}


def apply_defaults(resource: str, obj: dict) -> None:
    """Fill in `resource`'s defaults in place ("v1/pods", "apps/v1/deployments", ...)."""
    defaulter = DEFAULTERS.get(resource)
    if defaulter is not None:
        defaulter(obj)
