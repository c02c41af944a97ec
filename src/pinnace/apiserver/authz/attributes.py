"""Request attributes: what an authorizer decides on, derived from the HTTP request as
kube-apiserver's RequestInfo resolver does.

Resource requests name a verb (get, list, watch, create, update, patch, delete, deletecollection),
an API group, a resource, optionally a subresource, a namespace and a name; everything else is a
non-resource request (a path and the lower-cased HTTP method as verb).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pinnace.apiserver.errors import Forbidden, qualified

_METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch"}


@dataclass(frozen=True, slots=True)
class Attributes:
    verb: str
    resource_request: bool
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def resource_with_subresource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def from_request(method: str, path: str, query: Any) -> Attributes:
    """The attributes of one request (unknown resources still get a decision, as in Kubernetes)."""
    parts = [p for p in path.strip("/").split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Attributes(verb=method.lower() if method != "HEAD" else "get", resource_request=False, path=path)
    namespace = ""
    if rest[0] == "namespaces" and len(rest) >= 3:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = "/".join(rest[2:]) if len(rest) > 2 else ""
    if resource == "namespaces" and name and not namespace:
        namespace = name  # a namespace is "in" itself, so a RoleBinding there can grant reading it
    if method in ("GET", "HEAD"):
        if not name:
            verb = "watch" if str(query.get("watch", "")).lower() in ("true", "1") else "list"
        else:
            verb = "get"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = _METHOD_VERBS.get(method, method.lower())
    return Attributes(verb, True, group, version, resource, subresource, namespace, name, path)


def forbidden(user: Any, attrs: Attributes, reason: str = "") -> Forbidden:
    """The 403 Status kube-apiserver writes, naming user, verb and resource."""
    suffix = f": {reason}" if reason else ""
    who = f'User "{user.name}"'
    if not attrs.resource_request:
        return Forbidden(f'forbidden: {who} cannot {attrs.verb} path "{attrs.path}"{suffix}')
    target = qualified(attrs.resource, attrs.group)
    named = f'{target} "{attrs.name}"' if attrs.name else target
    scope = f' in the namespace "{attrs.namespace}"' if attrs.namespace else " at the cluster scope"
    message = (
        f"{named} is forbidden: {who} cannot {attrs.verb} resource \"{attrs.resource_with_subresource}\" "
        f'in API group "{attrs.group}"{scope}{suffix}'
    )
    return Forbidden(message, name=attrs.name or None, group=attrs.group or None, kind=attrs.resource)
