"""Admission: plugins that may change or refuse a write after authorization, before it is stored.

Each plugin is one module with one class: `name`, `handles(request) -> bool` (cheap: kind and
operation), and `async admit(request)` that edits `request.object` in place (mutating plugins) or raises
an `ApiError` (usually 403 Forbidden naming the object, as Kubernetes does). `Chain` runs the mutating
plugins, then the validating ones, in kube-apiserver's default order:

NamespaceLifecycle (in the registry: creating in a missing or terminating namespace, deleting
default/kube-system/kube-public), RBAC escalation prevention, AlwaysAdmit, LimitRanger, ServiceAccount,
NodeRestriction, PodSecurity, Priority, DefaultTolerationSeconds, MutatingAdmissionWebhook,
ValidatingAdmissionWebhook, ResourceQuota, AlwaysDeny.

Which plugins run is kube-apiserver's `--enable-admission-plugins` / `--disable-admission-plugins`
(`resolve_plugins`): Kubernetes 1.32's default set as far as pinnace implements it, plus NodeRestriction
(on in every kubeadm cluster; pinnace's node credentials rely on it). RBAC escalation prevention and the
CSR requester stamp are not admission plugins in Kubernetes and are always on.

Where pinnace differs: admission sees the object as decoded and checked for types, before the
registry sets server-owned metadata and applies schema defaults; plugins that read defaulted fields
(`restartPolicy`, `imagePullPolicy`) treat absent as the default.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass
class AdmissionRequest:
    operation: str  # CREATE, UPDATE, DELETE, CONNECT
    info: Any  # ResourceInfo
    namespace: str
    name: str
    subresource: str
    object: dict | None
    old: dict | None
    user: Any
    dry_run: bool
    server: Any
    warnings: list[str] = field(default_factory=list)
    audit_annotations: dict[str, str] = field(default_factory=dict)
    on_done: list[Callable[[], None]] = field(default_factory=list)  # run when the request is answered

    async def load_old(self) -> dict | None:
        """The stored object an UPDATE or DELETE changes (read on first use: most plugins never need it)."""
        if self.old is None and self.operation in ("UPDATE", "DELETE") and self.name:
            from pinnace.apiserver.errors import NotFound

            try:
                self.old = await self.server.registry.get(self.info, self.namespace or None, self.name)
            except NotFound:
                self.old = None
        return self.old

    @property
    def resource(self) -> str:
        return self.info.plural

    @property
    def group(self) -> str:
        return self.info.group

    def is_(self, resource: str, *operations: str, subresource: str = "") -> bool:
        """`req.is_("v1/pods", "CREATE")`: this resource (and subresource), one of these operations."""
        return self.info.name == resource and self.subresource == subresource and (
            not operations or self.operation in operations
        )

    @property
    def labels(self) -> dict:
        obj = self.object if self.object is not None else self.old
        return ((obj or {}).get("metadata") or {}).get("labels") or {}


class Plugin(Protocol):
    name: str
    mutating: bool

    def handles(self, request: AdmissionRequest) -> bool: ...

    async def admit(self, request: AdmissionRequest) -> None: ...


class Chain:
    def __init__(self, plugins: list[Plugin]) -> None:
        self.mutating = [p for p in plugins if p.mutating]
        self.validating = [p for p in plugins if not p.mutating]

    async def admit(self, request: AdmissionRequest) -> None:
        for plugin in self.mutating:
            if plugin.handles(request):
                await plugin.admit(request)
        for plugin in self.validating:
            if plugin.handles(request):
                await plugin.admit(request)


# kube-apiserver 1.32's admission plugins, in the order it runs them (AllOrderedPlugins).
ALL_ORDERED_PLUGINS = (
    "AlwaysAdmit", "NamespaceAutoProvision", "NamespaceLifecycle", "NamespaceExists",
    "LimitPodHardAntiAffinityTopology", "LimitRanger", "ServiceAccount", "NodeRestriction",
    "TaintNodesByCondition", "AlwaysPullImages", "ImagePolicyWebhook", "PodSecurity", "PodNodeSelector",
    "Priority", "DefaultTolerationSeconds", "PodTolerationRestriction", "EventRateLimit",
    "ExtendedResourceToleration", "DefaultStorageClass", "StorageObjectInUseProtection",
    "OwnerReferencesPermissionEnforcement", "PersistentVolumeClaimResize", "RuntimeClass",
    "CertificateApproval", "CertificateSigning", "ClusterTrustBundleAttest", "CertificateSubjectRestriction",
    "DefaultIngressClass", "DenyServiceExternalIPs", "MutatingAdmissionPolicy", "MutatingAdmissionWebhook",
    "ValidatingAdmissionPolicy", "ValidatingAdmissionWebhook", "ResourceQuota", "AlwaysDeny",
)
# On in kube-apiserver 1.32 unless --disable-admission-plugins names them (DefaultOffAdmissionPlugins' complement).
KUBE_DEFAULT_ON = frozenset({
    "NamespaceLifecycle", "LimitRanger", "ServiceAccount", "DefaultStorageClass", "PersistentVolumeClaimResize",
    "DefaultTolerationSeconds", "MutatingAdmissionWebhook", "ValidatingAdmissionWebhook", "ResourceQuota",
    "StorageObjectInUseProtection", "Priority", "TaintNodesByCondition", "RuntimeClass", "CertificateApproval",
    "CertificateSigning", "ClusterTrustBundleAttest", "CertificateSubjectRestriction", "DefaultIngressClass",
    "PodSecurity", "ValidatingAdmissionPolicy", "MutatingAdmissionPolicy",
})
# What pinnace implements. NamespaceLifecycle lives in the registry and cannot be turned off.
IMPLEMENTED = frozenset({
    "AlwaysAdmit", "NamespaceLifecycle", "LimitRanger", "ServiceAccount", "NodeRestriction", "PodSecurity",
    "Priority", "DefaultTolerationSeconds", "MutatingAdmissionWebhook", "ValidatingAdmissionWebhook",
    "ResourceQuota", "AlwaysDeny",
})
ALWAYS_ON = frozenset({"NamespaceLifecycle"})
# Kubernetes' default set that pinnace implements, plus NodeRestriction: kube-apiserver leaves it off, but
# every kubeadm (and k3s) cluster turns it on, and pinnace's node identities rely on it.
DEFAULT_PLUGINS = (KUBE_DEFAULT_ON & IMPLEMENTED) | {"NodeRestriction"}


def _names(values: Any) -> list[str]:
    """Comma-separated names (flags may repeat): ["A,B", "C"] -> ["A", "B", "C"]."""
    if isinstance(values, str):
        values = [values]
    return [n.strip() for value in values or () for n in str(value).split(",") if n.strip()]


def resolve_plugins(enable: Any = (), disable: Any = ()) -> frozenset[str]:
    """The enabled plugins for kube-apiserver's --enable-admission-plugins / --disable-admission-plugins:
    pinnace's defaults, plus `enable`, minus `disable`. ValueError (naming the plugin) for a name
    kube-apiserver does not know, one in both lists, one pinnace does not implement being enabled, or
    one that pinnace cannot turn off being disabled. Disabling a plugin pinnace lacks is allowed (a no-op)."""
    enabled, disabled = _names(enable), _names(disable)
    errors = [f'{flag}-admission-plugins plugin "{name}" is unknown'
              for flag, names in (("enable", enabled), ("disable", disabled))
              for name in names if name not in ALL_ORDERED_PLUGINS]
    both = sorted(set(enabled) & set(disabled))
    if both:
        errors.append(f"[{' '.join(both)}] in enable-admission-plugins and disable-admission-plugins overlapped")
    missing = [n for n in dict.fromkeys(enabled) if n in ALL_ORDERED_PLUGINS and n not in IMPLEMENTED]
    if missing:
        errors.append(f"enable-admission-plugins: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                      f"not implemented by pinnace (it implements {', '.join(sorted(IMPLEMENTED))})")
    for name in dict.fromkeys(disabled):
        if name in ALWAYS_ON:
            errors.append(f"disable-admission-plugins plugin \"{name}\" cannot be disabled in pinnace: "
                          "the registry enforces it")
    if errors:
        raise ValueError("; ".join(errors))
    return frozenset((DEFAULT_PLUGINS | set(enabled)) - set(disabled))


def default_chain(server: Any, names: Any = None) -> Chain:
    """The chain of the enabled plugins (`names`; None: pinnace's defaults), in kube-apiserver's order.

    RBAC escalation prevention and the CSR requester stamp are no admission plugins in Kubernetes (the
    RBAC and CSR registries do them) and are always on."""
    from pinnace.apiserver.admission import (
        always,
        default_toleration_seconds,
        escalation,
        limit_ranger,
        node_restriction,
        pod_security,
        priority,
        resource_quota,
        service_account,
        webhooks,
    )
    from pinnace.apiserver.csrsigning import CSRRequester

    enabled = DEFAULT_PLUGINS if names is None else frozenset(names)
    unknown = sorted(n for n in enabled if n not in IMPLEMENTED)
    if unknown:
        raise ValueError(f"admission plugins not implemented by pinnace: {', '.join(unknown)}")
    plugins: list[Any] = [
        always.AlwaysAdmit(),
        limit_ranger.LimitRanger(server),
        service_account.ServiceAccount(server),
        node_restriction.NodeRestriction(server),
        pod_security.PodSecurity(server),
        priority.Priority(server),
        default_toleration_seconds.DefaultTolerationSeconds(),
        webhooks.MutatingWebhooks(server),
        webhooks.ValidatingWebhooks(server),
        resource_quota.ResourceQuota(server),
        always.AlwaysDeny(),
    ]
    plugins = [p for p in plugins if p.name in enabled]
    # Always on, whatever the plugin list: who asked for a certificate is recorded by the server, as
    # Kubernetes' CSR strategy does, never taken from the request body.
    return Chain([CSRRequester(), escalation.RBACEscalation(server), *plugins])


def forbidden(request: AdmissionRequest, message: str) -> Any:
    """403 as Kubernetes words admission refusals: `pods "web" is forbidden: <message>`."""
    from pinnace.apiserver.errors import Forbidden, qualified

    name = request.name or ((request.object or {}).get("metadata") or {}).get("name") or ""
    target = qualified(request.resource, request.group)
    head = f'{target} "{name}"' if name else target
    return Forbidden(f"{head} is forbidden: {message}", name=name or None, group=request.group or None,
                     kind=request.resource)
