"""RBAC escalation prevention: nobody grants more than they hold.

Creating or updating a Role or ClusterRole needs every rule it contains (in the Role's namespace, or
cluster-wide for a ClusterRole), or the `escalate` verb on roles/clusterroles. Creating or updating a
binding needs every rule of the referenced role, or the `bind` verb on that role (optionally limited
by resourceNames). Same checks and same message shape as Kubernetes' RBAC REST storage.
"""

from __future__ import annotations

from typing import Any

from pinnace.apiserver.admission import AdmissionRequest, forbidden
from pinnace.apiserver.authz.attributes import Attributes
from pinnace.apiserver.authz.rbac import RBAC_GROUP, Rule

_ROLES = {"roles", "clusterroles"}
_BINDINGS = {"rolebindings", "clusterrolebindings"}


class RBACEscalation:
    name = "RBACEscalation"
    mutating = False

    def __init__(self, server: Any) -> None:
        self.server = server

    def handles(self, request: AdmissionRequest) -> bool:
        return (request.group == RBAC_GROUP and request.operation in ("CREATE", "UPDATE")
                and request.resource in _ROLES | _BINDINGS and request.object is not None)

    async def admit(self, request: AdmissionRequest) -> None:
        security = self.server.security
        if not security.rbac_enabled:
            return
        rbac = security.rbac
        user = request.user
        namespace = request.namespace if request.resource in ("roles", "rolebindings") else ""
        obj = request.object or {}
        if request.resource in _ROLES:
            verb_attrs = Attributes("escalate", True, RBAC_GROUP, "v1", request.resource, "", namespace, request.name)
            if rbac.authorize(user, verb_attrs).allowed:
                return
            wanted = [r for r in map(Rule.of, obj.get("rules") or ()) if r]
            if request.resource == "clusterroles" and obj.get("aggregationRule"):
                wanted = []  # aggregated rules are checked when the aggregated roles themselves are written
        else:
            ref = obj.get("roleRef") or {}
            kind, role_name = ref.get("kind"), ref.get("name") or ""
            plural = "clusterroles" if kind == "ClusterRole" else "roles"
            bind = Attributes("bind", True, RBAC_GROUP, "v1", plural, "", namespace, role_name)
            if rbac.authorize(user, bind).allowed:
                return
            if kind == "ClusterRole":
                wanted = list(rbac.cluster_role_rules(role_name))
            else:
                wanted = list(rbac.roles.get((namespace, role_name), ()))
        missing = rbac.covers(user, namespace, wanted)
        if missing:
            scope = f'in namespace "{namespace}"' if namespace else "at the cluster scope"
            details = ", ".join(_describe(r) for r in missing)
            raise forbidden(request, f'user "{user.name}" (groups={list(user.groups)!r}) is attempting to grant RBAC '
                                     f"permissions not currently held {scope}: {details}")


def _describe(rule: Rule) -> str:
    if rule.non_resource_urls:
        return f"{{NonResourceURLs:{list(rule.non_resource_urls)}, Verbs:{list(rule.verbs)}}}"
    names = f", ResourceNames:{list(rule.resource_names)}" if rule.resource_names else ""
    return f"{{APIGroups:{list(rule.api_groups)}, Resources:{list(rule.resources)}{names}, Verbs:{list(rule.verbs)}}}"
