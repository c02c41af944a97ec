"""The securityContext a container runs with: the pod's, overridden field by field by the container's.

As in Kubernetes, the pod-level fields that also exist on containers (runAsUser, runAsGroup,
runAsNonRoot, seLinuxOptions, seccompProfile, appArmorProfile) are defaults that the container's own
securityContext overrides; fsGroup and supplementalGroups only exist on the pod and apply to every
container. Runtimes without isolation ignore the result.
"""

from __future__ import annotations

POD_DEFAULTS = ("runAsUser", "runAsGroup", "runAsNonRoot", "seLinuxOptions", "seccompProfile", "appArmorProfile")
POD_ONLY = ("fsGroup", "supplementalGroups")


def effective_security_context(pod: dict, container: dict) -> dict:
    pod_context = pod["spec"].get("securityContext") or {}
    result = {key: pod_context[key] for key in POD_DEFAULTS + POD_ONLY if pod_context.get(key) is not None}
    result.update({k: v for k, v in (container.get("securityContext") or {}).items() if v is not None})
    return result


def pod_is_privileged(pod: dict) -> bool:
    """A privileged container needs a privileged sandbox (the CRI refuses it otherwise)."""
    containers = (pod["spec"].get("initContainers") or []) + (pod["spec"].get("containers") or [])
    return any((c.get("securityContext") or {}).get("privileged") for c in containers)
