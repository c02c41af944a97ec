"""PodSecurity: the Pod Security Standards, chosen per namespace by label.

`pod-security.kubernetes.io/enforce`, `warn` and `audit` name a level (`privileged`, `baseline`,
`restricted`; the `-version` labels are accepted and read as `latest`). `enforce` refuses pods that
break the level (403 `violates PodSecurity "restricted:latest": ...`), `warn` returns the same text
as a Warning header, `audit` adds an annotation to the audit event. Workload templates (Deployments,
Jobs, ...) are checked too but only warn and audit, as in Kubernetes. Namespaces kube-system is exempt.

Baseline forbids host namespaces, privileged containers, added capabilities beyond the default set,
hostPath volumes, host ports, unsafe sysctls, non-default /proc mounts, Unconfined seccomp/AppArmor
and custom SELinux types. Restricted adds: only ephemeral-safe volume types,
`allowPrivilegeEscalation: false`, `runAsNonRoot: true`, no `runAsUser: 0`, seccomp RuntimeDefault or
Localhost, capabilities dropping ALL and adding at most NET_BIND_SERVICE.
"""

from __future__ import annotations

from typing import Any

from pinnace.apiserver.admission import AdmissionRequest, forbidden

LEVELS = ("privileged", "baseline", "restricted")
LABEL = "pod-security.kubernetes.io/"
EXEMPT_NAMESPACES = frozenset({"kube-system"})
_BASELINE_CAPS = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                            "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})
_SAFE_SYSCTLS = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                           "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                           "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                           "net.ipv4.tcp_keepalive_probes"})
_RESTRICTED_VOLUMES = frozenset({"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                                 "projected", "secret"})
_TEMPLATES = {"apps/v1/deployments", "apps/v1/replicasets", "apps/v1/statefulsets", "apps/v1/daemonsets",
              "batch/v1/jobs", "v1/replicationcontrollers", "v1/podtemplates", "batch/v1/cronjobs"}


def _all_containers(spec: dict) -> list[tuple[str, dict]]:
    out = []
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(field) or ():
            if isinstance(c, dict):
                out.append((str(c.get("name", "")), c))
    return out


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def check(level: str, spec: dict, meta: dict) -> list[str]:
    """The violations of `level` by a pod spec, each as Kubernetes words them."""
    if level == "privileged":
        return []
    problems: list[str] = []
    pod_sc = _d(spec.get("securityContext"))
    containers = _all_containers(spec)
    host = [f"{f}=true" for f in ("hostNetwork", "hostPID", "hostIPC") if spec.get(f)]
    if host:
        problems.append(f"host namespaces ({', '.join(host)})")
    privileged = [n for n, c in containers if _d(c.get("securityContext")).get("privileged")]
    if privileged:
        problems.append(f"privileged ({_names(privileged)} must not set securityContext.privileged=true)")
    added: dict[str, list[str]] = {}
    for n, c in containers:
        for cap in _d(_d(c.get("securityContext")).get("capabilities")).get("add") or ():
            if cap not in _BASELINE_CAPS:
                added.setdefault(n, []).append(str(cap))
    if added:
        caps = sorted({c for v in added.values() for c in v})
        problems.append(f"non-default capabilities ({_names(list(added))} must not include {_quoted(caps)} in securityContext.capabilities.add)")
    host_paths = [str(v.get("name")) for v in spec.get("volumes") or () if isinstance(v, dict) and "hostPath" in v]
    if host_paths:
        problems.append(f"hostPath volumes ({_quoted(host_paths, 'volume')})")
    ports = [str(p.get("hostPort")) for _, c in containers for p in c.get("ports") or () if isinstance(p, dict) and p.get("hostPort")]
    if ports:
        problems.append(f"hostPort (containers use hostPorts {', '.join(ports)})")
    sysctls = [str(s.get("name")) for s in pod_sc.get("sysctls") or () if isinstance(s, dict) and s.get("name") not in _SAFE_SYSCTLS]
    if sysctls:
        problems.append(f"forbidden sysctls ({', '.join(sysctls)})")
    proc = [n for n, c in containers if _d(c.get("securityContext")).get("procMount") not in (None, "Default")]
    if proc:
        problems.append(f"procMount ({_names(proc)} must not set securityContext.procMount)")
    unconfined = [n for n, c in containers if _d(_d(c.get("securityContext")).get("seccompProfile")).get("type") == "Unconfined"]
    if _d(pod_sc.get("seccompProfile")).get("type") == "Unconfined" or unconfined:
        problems.append("seccompProfile (pod or containers must not set securityContext.seccompProfile.type to \"Unconfined\")")
    if level == "restricted":
        problems += _restricted(spec, pod_sc, containers)
    return problems


def _restricted(spec: dict, pod_sc: dict, containers: list[tuple[str, dict]]) -> list[str]:
    problems = []
    bad_volumes = [str(v.get("name")) for v in spec.get("volumes") or ()
                   if isinstance(v, dict) and not any(k in _RESTRICTED_VOLUMES for k in v if k != "name")]
    if bad_volumes:
        problems.append(f"restricted volume types ({_quoted(bad_volumes, 'volume')} must use an allowed volume type)")
    escalation = [n for n, c in containers if _d(c.get("securityContext")).get("allowPrivilegeEscalation") is not False]
    if escalation:
        problems.append(f"allowPrivilegeEscalation != false ({_names(escalation)} must set securityContext.allowPrivilegeEscalation=false)")
    caps = [n for n, c in containers
            if "ALL" not in (_d(_d(c.get("securityContext")).get("capabilities")).get("drop") or ())]
    caps_added = [n for n, c in containers
                  if set(_d(_d(c.get("securityContext")).get("capabilities")).get("add") or ()) - {"NET_BIND_SERVICE"}]
    if caps or caps_added:
        problems.append(f"unrestricted capabilities ({_names(caps or caps_added)} must set securityContext.capabilities.drop=[\"ALL\"])")
    non_root_pod = pod_sc.get("runAsNonRoot") is True
    non_root = [n for n, c in containers if _d(c.get("securityContext")).get("runAsNonRoot") is not True and
                not (non_root_pod and _d(c.get("securityContext")).get("runAsNonRoot") is not False)]
    if non_root:
        problems.append(f"runAsNonRoot != true (pod or {_names(non_root)} must set securityContext.runAsNonRoot=true)")
    root = [n for n, c in containers if _d(c.get("securityContext")).get("runAsUser") == 0]
    if pod_sc.get("runAsUser") == 0 or root:
        problems.append("runAsUser=0 (pod and containers must not set runAsUser=0)")
    pod_seccomp = _d(pod_sc.get("seccompProfile")).get("type")
    seccomp = [n for n, c in containers
               if (_d(_d(c.get("securityContext")).get("seccompProfile")).get("type") or pod_seccomp) not in ("RuntimeDefault", "Localhost")]
    if seccomp:
        problems.append(f"seccompProfile (pod or {_names(seccomp)} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")")
    return problems


def _names(names: list[str]) -> str:
    if len(names) == 1:
        return f'container "{names[0]}"'
    return "containers " + ", ".join(f'"{n}"' for n in names)


def _quoted(items: list[str], noun: str = "") -> str:
    body = ", ".join(f'"{i}"' for i in items)
    return f"{noun}{'s' if len(items) > 1 else ''} {body}".strip() if noun else body


def namespace_levels(namespace: dict | None) -> dict[str, str]:
    labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    return {mode: labels[LABEL + mode] for mode in ("enforce", "warn", "audit")
            if labels.get(LABEL + mode) in LEVELS}


class PodSecurity:
    name = "PodSecurity"
    mutating = False

    def __init__(self, server: Any) -> None:
        self.server = server

    def handles(self, request: AdmissionRequest) -> bool:
        if request.object is None or request.operation not in ("CREATE", "UPDATE") or request.subresource:
            return False
        if request.namespace in EXEMPT_NAMESPACES:
            return False
        return request.info.name == "v1/pods" or request.info.name in _TEMPLATES

    async def admit(self, request: AdmissionRequest) -> None:
        namespace = self.server.registry.namespaces.get(request.namespace)
        levels = namespace_levels(namespace)
        if not levels:
            return
        obj = request.object or {}
        spec = _d(obj.get("spec"))
        if request.info.name != "v1/pods":
            template = _d(spec.get("template")) or _d(_d(_d(spec.get("jobTemplate")).get("spec")).get("template"))
            spec = _d(template.get("spec"))
        elif request.operation == "UPDATE" and await request.load_old() is not None:
            # Only spec changes are checked again (status and metadata updates of running pods pass).
            if _d((request.old or {}).get("spec")) == spec:
                return
        meta = _d(obj.get("metadata"))
        for mode, level in levels.items():
            problems = check(level, spec, meta)
            if not problems:
                continue
            text = f'violates PodSecurity "{level}:latest": ' + ", ".join(problems)
            if mode == "enforce" and request.info.name == "v1/pods":
                raise forbidden(request, text)
            if mode == "audit":
                request.audit_annotations["pod-security.kubernetes.io/audit-violations"] = text
            elif mode == "warn" or mode == "enforce":
                request.warnings.append(text if mode == "warn" else f"would {text}")
