"""Admission through real kubectl: ResourceQuota, PodSecurity, LimitRanger, Priority,
DefaultTolerationSeconds and ServiceAccount defaults."""

from __future__ import annotations

import json

import pytest

from pinnace.apiserver.security import SecurityConfig


def _pod(name: str, extra: str = "", namespace: str = "default") -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
{extra}"""


def test_quota_exhaustion_is_refused_naming_the_quota(kubectl) -> None:
    quota = """
apiVersion: v1
kind: ResourceQuota
metadata: {name: small, namespace: default}
spec: {hard: {pods: "2", configmaps: "1"}}
"""
    assert kubectl("apply", "-f", "-", input=quota).returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("p1")).returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("p2")).returncode == 0
    third = kubectl("apply", "-f", "-", input=_pod("p3"))
    assert third.returncode != 0
    assert ('pods "p3" is forbidden: exceeded quota: small, requested: pods=1, used: pods=2, limited: pods=2'
            in third.stderr)
    assert kubectl("create", "configmap", "one").returncode == 0
    assert "exceeded quota: small" in kubectl("create", "configmap", "two").stderr
    status = json.loads(kubectl("get", "quota", "small", "-o", "json").stdout)["status"]
    assert status["used"]["pods"] == "2" and status["hard"]["pods"] == "2"
    # Freeing a pod frees quota.
    assert kubectl("delete", "pod", "p1", "--grace-period=0", "--force").returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("p3")).returncode == 0


def test_compute_quota_needs_requests_and_limit_range_defaults_them(kubectl) -> None:
    setup = """
apiVersion: v1
kind: Namespace
metadata: {name: compute}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: cpu, namespace: compute}
spec: {hard: {requests.cpu: "1", limits.memory: 1Gi}}
"""
    assert kubectl("apply", "-f", "-", input=setup).returncode == 0
    bare = kubectl("apply", "-f", "-", input=_pod("bare", namespace="compute"))
    assert "failed quota: cpu: must specify limits.memory,requests.cpu" in bare.stderr
    limits = """
apiVersion: v1
kind: LimitRange
metadata: {name: defaults, namespace: compute}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 300m, memory: 128Mi}
    max: {cpu: "2"}
"""
    assert kubectl("apply", "-f", "-", input=limits).returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("a", namespace="compute")).returncode == 0
    pod = json.loads(kubectl("get", "pod", "a", "-n", "compute", "-o", "json").stdout)
    resources = pod["spec"]["containers"][0]["resources"]
    assert resources == {"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "300m", "memory": "128Mi"}}
    assert kubectl("apply", "-f", "-", input=_pod("b", namespace="compute")).returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("c", namespace="compute")).returncode == 0
    over = kubectl("apply", "-f", "-", input=_pod("d", namespace="compute"))
    assert "exceeded quota: cpu, requested: requests.cpu=300m, used: requests.cpu=900m, limited: requests.cpu=1" in over.stderr
    big = _pod("big", namespace="compute", extra="    resources: {limits: {cpu: '3'}}\n")
    assert "maximum cpu usage per Container is 2, but limit is 3" in kubectl("apply", "-f", "-", input=big).stderr


PRIVILEGED = """
    securityContext: {privileged: true}
"""
RESTRICTED_OK = """
    securityContext:
      allowPrivilegeEscalation: false
      runAsNonRoot: true
      runAsUser: 1000
      capabilities: {drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
"""


def test_pod_security_restricted_rejects_a_privileged_pod(kubectl) -> None:
    namespace = """
apiVersion: v1
kind: Namespace
metadata:
  name: locked
  labels:
    pod-security.kubernetes.io/enforce: restricted
    pod-security.kubernetes.io/warn: restricted
"""
    assert kubectl("apply", "-f", "-", input=namespace).returncode == 0
    refused = kubectl("apply", "-f", "-", input=_pod("root", PRIVILEGED, "locked"))
    assert refused.returncode != 0
    assert 'pods "root" is forbidden: violates PodSecurity "restricted:latest": privileged (container "c" must not set securityContext.privileged=true)' in refused.stderr
    assert "allowPrivilegeEscalation != false" in refused.stderr and "runAsNonRoot != true" in refused.stderr
    ok = kubectl("apply", "-f", "-", input=_pod("fine", RESTRICTED_OK, "locked"))
    assert ok.returncode == 0, ok.stderr
    # Workloads only warn: the Deployment is created, kubectl prints the warning.
    deployment = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: locked}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: c, image: nginx, securityContext: {privileged: true}}]
"""
    warned = kubectl("apply", "-f", "-", input=deployment)
    assert warned.returncode == 0, warned.stderr
    assert 'Warning: would violate PodSecurity "restricted:latest"' in warned.stderr or \
        'Warning: violates PodSecurity "restricted:latest"' in warned.stderr
    # Baseline allows what restricted refuses, but not host namespaces.
    assert kubectl("label", "ns", "locked", "--overwrite", "pod-security.kubernetes.io/enforce=baseline",
                   "pod-security.kubernetes.io/warn-").returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("plain", "", "locked")).returncode == 0
    host = kubectl("apply", "-f", "-", input=_pod("host", "  hostNetwork: true\n", "locked"))
    assert 'violates PodSecurity "baseline:latest": host namespaces (hostNetwork=true)' in host.stderr


def test_pod_defaults_from_admission(kubectl) -> None:
    classes = """
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
"""
    assert kubectl("apply", "-f", "-", input=classes).returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("prio", "  priorityClassName: high\n")).returncode == 0
    pod = json.loads(kubectl("get", "pod", "prio", "-o", "json").stdout)
    assert pod["spec"]["priority"] == 1000
    assert pod["spec"]["serviceAccountName"] == "default"
    tolerations = {t["key"]: t for t in pod["spec"]["tolerations"]}
    assert tolerations["node.kubernetes.io/not-ready"]["tolerationSeconds"] == 300
    assert tolerations["node.kubernetes.io/unreachable"]["effect"] == "NoExecute"
    missing = kubectl("apply", "-f", "-", input=_pod("lost", "  priorityClassName: nope\n"))
    assert "no PriorityClass with name nope was found" in missing.stderr
    no_account = kubectl("apply", "-f", "-", input=_pod("who", "  serviceAccountName: ghost\n"))
    assert 'serviceaccount "ghost" not found' in no_account.stderr
    critical = kubectl("apply", "-f", "-", input=_pod("crit", "  priorityClassName: system-node-critical\n"))
    assert critical.returncode == 0, critical.stderr


def test_a_global_default_priority_class_applies_to_pods_that_name_none(kubectl) -> None:
    plain = kubectl("apply", "-f", "-", input=_pod("before-default"))
    assert plain.returncode == 0, plain.stderr
    before = json.loads(kubectl("get", "pod", "before-default", "-o", "json").stdout)["spec"]
    assert before["priority"] == 0 and "priorityClassName" not in before
    default_class = """
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: everyone}
value: 500
globalDefault: true
preemptionPolicy: Never
"""
    assert kubectl("apply", "-f", "-", input=default_class).returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("after-default")).returncode == 0
    after = json.loads(kubectl("get", "pod", "after-default", "-o", "json").stdout)["spec"]
    assert (after["priority"], after["priorityClassName"], after["preemptionPolicy"]) == (500, "everyone", "Never")


def test_service_account_token_volume_is_added_unless_opted_out(kubectl) -> None:
    def volumes_of(name: str) -> tuple[list[str], list[list[str]]]:
        pod = json.loads(kubectl("get", "pod", name, "-o", "json").stdout)
        names = [v["name"] for v in pod["spec"].get("volumes") or []]
        mounts = [[m["mountPath"] for m in c.get("volumeMounts") or []] for c in pod["spec"]["containers"]]
        return names, mounts

    # No `default` account yet (no controller manager here): the pod runs without a token.
    assert kubectl("apply", "-f", "-", input=_pod("early")).returncode == 0
    assert volumes_of("early") == ([], [[]])

    assert kubectl("create", "serviceaccount", "default").returncode == 0
    assert kubectl("create", "serviceaccount", "quiet").returncode == 0
    assert kubectl("patch", "serviceaccount", "quiet", "-p", '{"automountServiceAccountToken": false}').returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("mounted")).returncode == 0
    names, mounts = volumes_of("mounted")
    assert len(names) == 1 and names[0].startswith("kube-api-access-")
    assert mounts == [["/var/run/secrets/kubernetes.io/serviceaccount"]]
    pod = json.loads(kubectl("get", "pod", "mounted", "-o", "json").stdout)
    sources = pod["spec"]["volumes"][0]["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"

    assert kubectl("apply", "-f", "-", input=_pod("pod-opts-out", "  automountServiceAccountToken: false\n")).returncode == 0
    assert volumes_of("pod-opts-out") == ([], [[]])
    assert kubectl("apply", "-f", "-", input=_pod("account-opts-out", "  serviceAccountName: quiet\n")).returncode == 0
    assert volumes_of("account-opts-out") == ([], [[]])


LIMITS = """
apiVersion: v1
kind: LimitRange
metadata: {name: defaults, namespace: default}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 256Mi}
    defaultRequest: {cpu: 300m, memory: 128Mi}
"""


def _disabled(*names: str) -> dict:
    return {"security": SecurityConfig(disable_admission_plugins=names)}


@pytest.mark.parametrize("api_server", [_disabled("LimitRanger", "DefaultTolerationSeconds")], indirect=True)
def test_disabled_admission_plugins_stop_acting(api_server, kubectl) -> None:
    """--disable-admission-plugins=LimitRanger,DefaultTolerationSeconds: no defaults from a LimitRange;
    the plugins still on (ServiceAccount, Priority) go on working."""
    assert kubectl("apply", "-f", "-", input=LIMITS).returncode == 0
    created = kubectl("apply", "-f", "-", input=_pod("plain"))
    assert created.returncode == 0, created.stderr
    pod = json.loads(kubectl("get", "pod", "plain", "-o", "json").stdout)
    assert not pod["spec"]["containers"][0].get("resources")
    assert "kubernetes.io/limit-ranger" not in (pod["metadata"].get("annotations") or {})
    assert pod["spec"]["serviceAccountName"] == "default"
    chain = api_server.security.chain
    names = {p.name for p in chain.mutating + chain.validating}
    assert "LimitRanger" not in names and "DefaultTolerationSeconds" not in names
    assert {"ServiceAccount", "NodeRestriction", "ResourceQuota", "RBACEscalation"} <= names
    # (the 300 s tolerations themselves are also set by pinnace.api.defaults: see docs/security.md)


def test_the_same_pod_gets_both_defaults_with_the_default_plugins(kubectl) -> None:
    assert kubectl("apply", "-f", "-", input=LIMITS).returncode == 0
    assert kubectl("apply", "-f", "-", input=_pod("plain")).returncode == 0
    pod = json.loads(kubectl("get", "pod", "plain", "-o", "json").stdout)
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"}
    assert {t["key"] for t in pod["spec"]["tolerations"] if t.get("tolerationSeconds") == 300} == {
        "node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}


@pytest.mark.parametrize("api_server", [_disabled("ResourceQuota", "PodSecurity")], indirect=True)
def test_disabled_quota_and_pod_security_admit_what_they_would_refuse(api_server, kubectl) -> None:
    setup = """
apiVersion: v1
kind: Namespace
metadata: {name: locked, labels: {pod-security.kubernetes.io/enforce: restricted}}
---
apiVersion: v1
kind: ResourceQuota
metadata: {name: pods, namespace: locked}
spec: {hard: {pods: "0"}}
"""
    assert kubectl("apply", "-f", "-", input=setup).returncode == 0
    privileged = _pod("root", namespace="locked", extra="    securityContext: {privileged: true}\n")
    created = kubectl("apply", "-f", "-", input=privileged)
    assert created.returncode == 0, created.stderr


@pytest.mark.parametrize("api_server", [{"security": SecurityConfig(enable_admission_plugins=("AlwaysDeny",))}],
                         indirect=True)
def test_always_deny_refuses_every_write(api_server, kubectl) -> None:
    refused = kubectl("create", "configmap", "x", "--from-literal=a=b")
    assert refused.returncode != 0
    assert 'configmaps "x" is forbidden: admission control is denying all modifications' in refused.stderr
    assert kubectl("get", "configmaps").returncode == 0  # reads are no admission's business
