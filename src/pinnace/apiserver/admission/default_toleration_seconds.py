"""DefaultTolerationSeconds: pods tolerate `not-ready` and `unreachable` NoExecute taints for 300s.

As in Kubernetes, a pod without its own toleration for `node.kubernetes.io/not-ready` or
`node.kubernetes.io/unreachable` (NoExecute) gets one with `tolerationSeconds: 300`, so its node
going away evicts it after five minutes rather than at once.
"""

from __future__ import annotations

from pinnace.apiserver.admission import AdmissionRequest

SECONDS = 300
TAINTS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


class DefaultTolerationSeconds:
    name = "DefaultTolerationSeconds"
    mutating = True

    def handles(self, request: AdmissionRequest) -> bool:
        return request.is_("v1/pods", "CREATE") and isinstance((request.object or {}).get("spec"), dict)

    async def admit(self, request: AdmissionRequest) -> None:
        spec = (request.object or {})["spec"]
        tolerations = spec.get("tolerations")
        if tolerations is None:
            tolerations = []
        if not isinstance(tolerations, list):
            return
        for taint in TAINTS:
            covered = any(
                isinstance(t, dict)
                and (t.get("key") == taint or (not t.get("key") and t.get("operator") == "Exists"))
                and t.get("effect") in (None, "", "NoExecute")
                for t in tolerations
            )
            if not covered:
                tolerations.append({"key": taint, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": SECONDS})
        spec["tolerations"] = tolerations
