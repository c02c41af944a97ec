"""Admission: plugins that may change or refuse a write after authorization, before it is stored.

Each plugin is one module with one class: `name`, `handles(request) -> bool` (cheap: kind and
operation), and `async admit(request)` that edits `request.object` in place (mutating plugins) or raises
an `ApiError` (usually 403 Forbidden naming the object, as Kubernetes does). `Chain` runs the mutating
plugins, then the validating ones, in kube-apiserver's default order:

NamespaceLifecycle (in the registry: creating in a missing or terminating namespace, deleting
default/kube-system/kube-public), RBAC escalation prevention, LimitRanger, ServiceAccount,
NodeRestriction, PodSecurity, Priority, DefaultTolerationSeconds, MutatingAdmissionWebhook,
ValidatingAdmissionWebhook, ResourceQuota.

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


def default_chain(server: Any, names: tuple[str, ...] | None = None) -> Chain:
    from pinnace.apiserver.admission import (
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

    plugins: list[Any] = [
        escalation.RBACEscalation(server),
        limit_ranger.LimitRanger(server),
        service_account.ServiceAccount(server),
        node_restriction.NodeRestriction(server),
        pod_security.PodSecurity(server),
        priority.Priority(server),
        default_toleration_seconds.DefaultTolerationSeconds(),
        webhooks.MutatingWebhooks(server),
        webhooks.ValidatingWebhooks(server),
        resource_quota.ResourceQuota(server),
    ]
    if names is not None:
        plugins = [p for p in plugins if p.name in names]
    # Always on, whatever the plugin list: who asked for a certificate is recorded by the server, as
    # Kubernetes' CSR strategy does, never taken from the request body.
    from pinnace.apiserver.csrsigning import CSRRequester

    plugins.insert(0, CSRRequester())
    return Chain(plugins)


def forbidden(request: AdmissionRequest, message: str) -> Any:
    """403 as Kubernetes words admission refusals: `pods "web" is forbidden: <message>`."""
    from pinnace.apiserver.errors import Forbidden, qualified

    name = request.name or ((request.object or {}).get("metadata") or {}).get("name") or ""
    target = qualified(request.resource, request.group)
    head = f'{target} "{name}"' if name else target
    return Forbidden(f"{head} is forbidden: {message}", name=name or None, group=request.group or None,
                     kind=request.resource)
