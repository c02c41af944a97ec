"""The default ClusterRoles and ClusterRoleBindings Kubernetes ships, created on every start.

Users rely on `cluster-admin`, `admin`, `edit` and `view` (the last three aggregated from the
`system:aggregate-to-*` roles, so a CRD author can extend them by label), on `system:masters`
being bound to `cluster-admin`, and on every authenticated user being allowed discovery and
self-reviews (`system:discovery`, `system:basic-user`, `system:public-info-viewer`).

Component identities get least privilege, as in Kubernetes' bootstrap policy:
- `system:node` (group `system:nodes`, the node client certificates): what a kubelet needs for
  its Node, Lease, pods and their status, events, and reading what its pods mount. Which *objects* a
  node may change is narrowed further by the NodeRestriction admission plugin.
- `system:kube-scheduler`, `system:kube-controller-manager`, `system:node-proxier` (`system:kube-proxy`),
  `system:kube-dns`, `system:monitoring`.

Objects carry `kubernetes.io/bootstrapping: rbac-defaults` and the `autoupdate` annotation; an object
a user edited and marked `rbac.authorization.kubernetes.io/autoupdate: "false"` is left alone.
"""

from __future__ import annotations

from typing import Any

READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
ALL_RW = READ + WRITE
_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}


def _rule(verbs: list[str], groups: list[str], resources: list[str], names: list[str] | None = None) -> dict:
    rule: dict[str, Any] = {"verbs": verbs, "apiGroups": groups, "resources": resources}
    if names:
        rule["resourceNames"] = names
    return rule


def _urls(verbs: list[str], urls: list[str]) -> dict:
    return {"verbs": verbs, "nonResourceURLs": urls}


def _role(name: str, rules: list[dict], labels: dict | None = None, aggregate: list[str] | None = None) -> dict:
    role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {**_LABELS, **(labels or {})}, "annotations": dict(_ANNOTATIONS)},
        "rules": rules,
    }
    if aggregate:
        role["aggregationRule"] = {
            "clusterRoleSelectors": [{"matchLabels": {f"rbac.authorization.k8s.io/{label}": "true"}} for label in aggregate]
        }
    return role


def _binding(name: str, role: str, subjects: list[tuple[str, str]]) -> dict:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": dict(_LABELS), "annotations": dict(_ANNOTATIONS)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [
            {"kind": kind, "name": subject, **({"apiGroup": "rbac.authorization.k8s.io"} if kind != "ServiceAccount" else {})}
            for kind, subject in subjects
        ],
    }


_WORKLOADS = [
    ("", ["pods", "pods/attach", "pods/exec", "pods/portforward", "pods/proxy", "replicationcontrollers",
          "replicationcontrollers/scale", "persistentvolumeclaims", "configmaps", "secrets", "services",
          "services/proxy", "endpoints", "serviceaccounts", "pods/eviction"]),
    ("apps", ["daemonsets", "deployments", "deployments/rollback", "deployments/scale", "replicasets",
              "replicasets/scale", "statefulsets", "statefulsets/scale"]),
    ("autoscaling", ["horizontalpodautoscalers"]),
    ("batch", ["cronjobs", "jobs"]),
    ("networking.k8s.io", ["ingresses", "networkpolicies"]),
    ("policy", ["poddisruptionbudgets"]),
    ("discovery.k8s.io", ["endpointslices"]),
    ("coordination.k8s.io", ["leases"]),
]

_VIEWABLE = [
    ("", ["pods", "pods/log", "pods/status", "replicationcontrollers", "replicationcontrollers/scale",
          "replicationcontrollers/status", "persistentvolumeclaims", "persistentvolumeclaims/status",
          "configmaps", "services", "services/status", "endpoints", "serviceaccounts", "events",
          "bindings", "limitranges", "resourcequotas", "resourcequotas/status", "namespaces", "namespaces/status"]),
    ("apps", ["controllerrevisions", "daemonsets", "daemonsets/status", "deployments", "deployments/scale",
              "deployments/status", "replicasets", "replicasets/scale", "replicasets/status", "statefulsets",
              "statefulsets/scale", "statefulsets/status"]),
    ("autoscaling", ["horizontalpodautoscalers", "horizontalpodautoscalers/status"]),
    ("batch", ["cronjobs", "cronjobs/status", "jobs", "jobs/status"]),
    ("networking.k8s.io", ["ingresses", "ingresses/status", "networkpolicies"]),
    ("policy", ["poddisruptionbudgets", "poddisruptionbudgets/status"]),
    ("discovery.k8s.io", ["endpointslices"]),
    ("events.k8s.io", ["events"]),
]


def cluster_roles() -> list[dict]:
    view = [_rule(READ, [group], resources) for group, resources in _VIEWABLE]
    edit = [_rule(ALL_RW, [group], resources) for group, resources in _WORKLOADS]
    edit.append(_rule(["impersonate"], [""], ["serviceaccounts"]))
    edit.append(_rule(["create"], [""], ["serviceaccounts/token"]))
    admin = [
        _rule(ALL_RW, ["rbac.authorization.k8s.io"], ["roles", "rolebindings"]),
        _rule(["create"], ["authorization.k8s.io"], ["localsubjectaccessreviews"]),
    ]
    self_reviews = [
        _rule(["create"], ["authorization.k8s.io"], ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]),
        _rule(["create"], ["authentication.k8s.io"], ["selfsubjectreviews"]),
    ]
    node = [
        _rule(["create", "get", "list", "watch", "patch", "update"], [""], ["nodes", "nodes/status"]),
        _rule(["get", "list", "watch", "create", "delete"], [""], ["pods"]),
        _rule(["get", "update", "patch"], [""], ["pods/status"]),
        _rule(["create"], [""], ["pods/eviction", "serviceaccounts/token"]),
        _rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
        _rule(["get", "list", "watch"], [""], ["services", "endpoints", "configmaps", "secrets",
                                               "persistentvolumeclaims", "persistentvolumes", "namespaces"]),
        _rule(["get", "list", "watch"], ["discovery.k8s.io"], ["endpointslices"]),
        _rule(["get", "list", "watch"], ["node.k8s.io"], ["runtimeclasses"]),
        _rule(["get", "list", "watch"], ["storage.k8s.io"], ["csinodes", "csidrivers", "volumeattachments"]),
        _rule(["create", "delete", "get", "patch", "update", "list", "watch"], ["coordination.k8s.io"], ["leases"]),
        _rule(["create", "get", "list", "watch"], ["certificates.k8s.io"], ["certificatesigningrequests"]),
    ]
    scheduler = [
        _rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
        _rule(["create"], [""], ["pods/binding", "bindings"]),
        _rule(["patch", "update"], [""], ["pods/status"]),
        _rule(["delete", "get", "list", "watch"], [""], ["pods"]),
        _rule(READ, [""], ["nodes", "namespaces", "persistentvolumeclaims", "persistentvolumes",
                          "replicationcontrollers", "services"]),
        _rule(READ, ["apps"], ["replicasets", "statefulsets"]),
        _rule(READ, ["policy"], ["poddisruptionbudgets"]),
        _rule(READ, ["storage.k8s.io"], ["csinodes", "csidrivers", "csistoragecapacities", "storageclasses"]),
        _rule(["create", "get", "update"], ["coordination.k8s.io"], ["leases"]),
    ]
    return [
        _role("cluster-admin", [_rule(["*"], ["*"], ["*"]), _urls(["*"], ["*"])]),
        _role("admin", [], None, ["aggregate-to-admin"]),
        _role("edit", [], {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}, ["aggregate-to-edit"]),
        _role("view", [], {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}, ["aggregate-to-view"]),
        _role("system:aggregate-to-admin", admin, {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
        _role("system:aggregate-to-edit", edit, {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        _role("system:aggregate-to-view", view, {"rbac.authorization.k8s.io/aggregate-to-view": "true"}),
        # What metrics-server installs for the metrics.k8s.io group (served here): `kubectl top` for
        # every user holding view, edit or admin.
        _role("system:aggregated-metrics-reader", [_rule(READ, ["metrics.k8s.io"], ["pods", "nodes"])],
              {"rbac.authorization.k8s.io/aggregate-to-view": "true",
               "rbac.authorization.k8s.io/aggregate-to-edit": "true",
               "rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
        _role("system:basic-user", self_reviews),
        _role("system:discovery", [_urls(["get"], ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                                                   "/openapi", "/openapi/*", "/readyz", "/version", "/version/"])]),
        _role("system:public-info-viewer", [_urls(["get"], ["/healthz", "/livez", "/readyz", "/version", "/version/"])]),
        _role("system:monitoring", [_urls(["get"], ["/healthz", "/healthz/*", "/livez", "/livez/*", "/metrics",
                                                    "/readyz", "/readyz/*"])]),
        _role("system:node", node),
        _role("system:kube-scheduler", scheduler),
        # The node join token (group system:bootstrappers) may only ask for, and read back, a certificate.
        _role("system:node-bootstrapper", [
            _rule(["create", "get", "list", "watch"], ["certificates.k8s.io"], ["certificatesigningrequests"]),
        ]),
        _role("system:kube-controller-manager", [_rule(["*"], ["*"], ["*"])]),  # controllers touch every kind
        _role("system:node-proxier", [
            _rule(READ, [""], ["services", "endpoints", "nodes"]),
            _rule(READ, ["discovery.k8s.io"], ["endpointslices"]),
            _rule(["create", "patch", "update"], ["", "events.k8s.io"], ["events"]),
        ]),
        _role("system:kube-dns", [_rule(["list", "watch"], [""], ["endpoints", "services", "pods", "namespaces"]),
                                  _rule(["list", "watch"], ["discovery.k8s.io"], ["endpointslices"])]),
        _role("system:auth-delegator", [_rule(["create"], ["authentication.k8s.io"], ["tokenreviews"]),
                                        _rule(["create"], ["authorization.k8s.io"], ["subjectaccessreviews"])]),
    ]


def cluster_role_bindings() -> list[dict]:
    return [
        _binding("cluster-admin", "cluster-admin", [("Group", "system:masters")]),
        _binding("system:basic-user", "system:basic-user", [("Group", "system:authenticated")]),
        _binding("system:discovery", "system:discovery", [("Group", "system:authenticated")]),
        _binding("system:public-info-viewer", "system:public-info-viewer",
                 [("Group", "system:authenticated"), ("Group", "system:unauthenticated")]),
        _binding("system:monitoring", "system:monitoring", [("Group", "system:monitoring")]),
        _binding("system:node", "system:node", [("Group", "system:nodes")]),
        _binding("system:kube-scheduler", "system:kube-scheduler", [("User", "system:kube-scheduler")]),
        _binding("system:node-bootstrapper", "system:node-bootstrapper", [("Group", "system:bootstrappers")]),
        _binding("system:kube-controller-manager", "system:kube-controller-manager",
                 [("User", "system:kube-controller-manager")]),
        _binding("system:node-proxier", "system:node-proxier", [("User", "system:kube-proxy")]),
        _binding("system:kube-dns", "system:kube-dns", [("User", "system:kube-dns")]),
    ]


async def ensure(registry: Any, kinds: Any) -> None:
    """Create the defaults, or reconcile them when they still carry `autoupdate: "true"`."""
    from pinnace.apiserver.errors import AlreadyExists, ApiError

    for resource, objects in (("rbac.authorization.k8s.io/v1/clusterroles", cluster_roles()),
                              ("rbac.authorization.k8s.io/v1/clusterrolebindings", cluster_role_bindings())):
        info = kinds.by_resource(resource)
        for obj in objects:
            name = obj["metadata"]["name"]
            try:
                await registry.create(info, None, obj)
                continue
            except AlreadyExists:
                pass
            current = await registry.get(info, None, name)
            annotations = (current.get("metadata") or {}).get("annotations") or {}
            if annotations.get("rbac.authorization.kubernetes.io/autoupdate") == "false":
                continue
            fields = ("rules", "aggregationRule") if resource.endswith("clusterroles") else ("roleRef", "subjects")
            if all(current.get(f) == obj.get(f) for f in fields):
                continue
            for f in fields:
                if f in obj:
                    current[f] = obj[f]
            try:
                await registry.update(info, None, name, current)
            except ApiError as error:  # a concurrent start reconciled it first
                if error.code != 409:
                    raise
