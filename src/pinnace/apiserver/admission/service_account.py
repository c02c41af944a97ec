"""ServiceAccount admission: every pod runs as a service account.

Sets `spec.serviceAccountName` (and the deprecated `serviceAccount`) to `default` when absent and
refuses pods naming an account other than `default` that does not exist. The pod gets Kubernetes'
`kube-api-access-<suffix>` projected volume (a bound token, the `kube-root-ca.crt` ConfigMap and the
namespace from the downward API) mounted at `/var/run/secrets/kubernetes.io/serviceaccount` in every
container, unless the pod or its account sets `automountServiceAccountToken: false` (or
`SecurityConfig.mount_service_account_token` is off). Mirror pods (static pods) are left alone.

Where pinnace differs: Kubernetes refuses a pod whose `default` account does not exist yet; pinnace
admits it without the token volume (a node could not fetch a token for a missing account, and the pod
would wait forever), so pods created the moment a namespace appears, or on a server running no
controllers, still run.
"""

from __future__ import annotations

import random
from typing import Any

from pinnace.apiserver.admission import AdmissionRequest, forbidden
from pinnace.apiserver.admission._objects import containers

MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
MIRROR = "kubernetes.io/config.mirror"


def token_volume(name: str, seconds: int = 3607) -> dict:
    return {
        "name": name,
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": seconds, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    }


class ServiceAccount:
    name = "ServiceAccount"
    mutating = True

    def __init__(self, server: Any) -> None:
        self.server = server

    def handles(self, request: AdmissionRequest) -> bool:
        return request.is_("v1/pods", "CREATE") and request.object is not None

    async def admit(self, request: AdmissionRequest) -> None:
        pod = request.object or {}
        if MIRROR in ((pod.get("metadata") or {}).get("annotations") or {}):
            return
        spec = pod.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        account_name = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = account_name
        spec["serviceAccount"] = account_name
        account = self.server.security.cached_object("v1/serviceaccounts", request.namespace, account_name)
        if account is None and account_name != "default":
            raise forbidden(request, f'error looking up service account {request.namespace}/{account_name}: '
                                     f'serviceaccount "{account_name}" not found')
        if account is None or not self.server.security.config.mount_service_account_token:
            return
        automount = spec.get("automountServiceAccountToken")
        if automount is None and account is not None:
            automount = account.get("automountServiceAccountToken")
        if automount is False:
            return
        volumes = spec.setdefault("volumes", [])
        if not isinstance(volumes, list):
            return  # validation refuses the pod
        if any(isinstance(v, dict) and v.get("name", "").startswith("kube-api-access-") for v in volumes):
            return
        name = "kube-api-access-" + "".join(random.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        volumes.append(token_volume(name))
        for container in containers(pod):
            mounts = container.setdefault("volumeMounts", [])
            if isinstance(mounts, list) and not any(isinstance(m, dict) and m.get("mountPath") == MOUNT_PATH for m in mounts):
                mounts.append({"name": name, "readOnly": True, "mountPath": MOUNT_PATH})
