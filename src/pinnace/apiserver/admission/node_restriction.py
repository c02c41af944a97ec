"""NodeRestriction: a node's credentials touch only that node's objects.

Applies to users named `system:node:<nodeName>` in group `system:nodes` (a client certificate with
CN `system:node:<name>`, O `system:nodes`), as in Kubernetes:
- Node: create, update (status too) or delete only its own Node object, and never change its own
  labels under `node-restriction.kubernetes.io/`;
- Lease (kube-node-lease): only the lease named after the node;
- Pod: create only mirror pods bound to itself; update status, delete or evict only pods bound to it;
- ServiceAccount token (TokenRequest): only bound to a pod on this node, for that pod's ServiceAccount
  (what the kubelet asks for projected serviceAccountToken volumes).
The refusal is a 403: `node "n1" is not allowed to modify node "n2"`.
"""

from __future__ import annotations

from typing import Any

from pinnace.apiserver.admission import AdmissionRequest, forbidden

PREFIX = "system:node:"
RESTRICTED_LABEL = "node-restriction.kubernetes.io/"


def node_name(user: Any) -> str | None:
    if user.name.startswith(PREFIX) and "system:nodes" in user.groups:
        return user.name[len(PREFIX):]
    return None


class NodeRestriction:
    name = "NodeRestriction"
    mutating = False

    def __init__(self, server: Any) -> None:
        self.server = server

    def handles(self, request: AdmissionRequest) -> bool:
        if node_name(request.user) is None:
            return False
        if request.info.name == "v1/serviceaccounts":
            return request.subresource == "token"
        return request.info.name in ("v1/nodes", "v1/pods", "coordination.k8s.io/v1/leases")

    async def admit(self, request: AdmissionRequest) -> None:
        node = node_name(request.user)
        assert node is not None
        await request.load_old()
        name = request.name or ((request.object or {}).get("metadata") or {}).get("name") or ""
        if request.resource == "nodes":
            if name != node:
                raise forbidden(request, f'node "{node}" is not allowed to modify node "{name}"')
            if request.operation in ("CREATE", "UPDATE") and request.subresource == "":
                new = _restricted_labels(request.object)
                old = _restricted_labels(request.old)
                if new != old:
                    raise forbidden(request, f'node "{node}" is not allowed to modify labels: {sorted(set(new) ^ set(old))}')
        elif request.resource == "serviceaccounts":
            await self._admit_token(request, node)
        elif request.resource == "leases":
            if request.namespace != "kube-node-lease" or name != node:
                raise forbidden(request, f'can only access node lease with the same name as the requesting node ("{node}")')
        else:
            pod = request.object if request.operation == "CREATE" else (request.old or request.object)
            bound_to = ((pod or {}).get("spec") or {}).get("nodeName")
            if request.operation == "CREATE" and not request.subresource:
                annotations = ((pod or {}).get("metadata") or {}).get("annotations") or {}
                if "kubernetes.io/config.mirror" not in annotations:
                    raise forbidden(request, f'pod does not have "kubernetes.io/config.mirror" annotation, node "{node}" can only create mirror pods')
            if bound_to != node:
                raise forbidden(request, f'node "{node}" can only {_verb(request)} pods with spec.nodeName set to itself')

    async def _admit_token(self, request: AdmissionRequest, node: str) -> None:
        from pinnace.apiserver.errors import NotFound

        spec = (request.object or {}).get("spec")
        ref = spec.get("boundObjectRef") if isinstance(spec, dict) else None
        if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref["name"]:
            raise forbidden(request, f'node "{node}" requested token not bound to a pod')
        if ref.get("kind") != "Pod":
            raise forbidden(request, f'node "{node}" requested token bound to a {ref.get("kind")}')
        name = ref["name"]
        try:
            pod = await self.server.registry.get(self.server.kinds.by_resource("v1/pods"), request.namespace, name)
        except NotFound:
            raise forbidden(request, f'node "{node}" requested token bound to a pod that does not exist') from None
        if ref.get("uid") and ref["uid"] != pod["metadata"].get("uid"):
            raise forbidden(request, f'the UID in the bound object reference ({ref["uid"]}) does not match the '
                                     "UID in record. The object might have been deleted and then recreated")
        pod_spec = pod.get("spec") or {}
        if pod_spec.get("nodeName") != node:
            raise forbidden(request, f'node "{node}" requested token bound to a pod scheduled on a different node')
        if (pod_spec.get("serviceAccountName") or "default") != request.name:
            raise forbidden(request, f'node "{node}" requested token for service account "{request.name}", '
                                     f'but pod {request.namespace}/{name} runs as "{pod_spec.get("serviceAccountName")}"')


def _restricted_labels(obj: dict | None) -> dict:
    labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
    return {k: v for k, v in labels.items() if isinstance(k, str) and k.startswith(RESTRICTED_LABEL)}


def _verb(request: AdmissionRequest) -> str:
    if request.subresource == "eviction":
        return "evict"
    return {"CREATE": "create", "UPDATE": "update", "DELETE": "delete"}.get(request.operation, "modify")
