"""RBAC: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings (rbac.authorization.k8s.io/v1).

The authorizer follows the four resources through the API server's own watch caches and keeps an
index of bindings by subject and namespace, so a decision costs the bindings of the asking user
(and its groups) in the request's namespace plus its cluster-wide bindings, however many bindings
the cluster holds. Decisions are memoised per (user, groups, attributes) until any RBAC object
changes.

Semantics are Kubernetes': rules only allow; a RoleBinding grants a Role of its namespace or a
ClusterRole inside its namespace; a ClusterRoleBinding grants a ClusterRole everywhere; `*` matches
any verb, group, resource or non-resource URL, `pods/*`-style and `*/scale`-style resources match
subresources, a trailing `*` in a non-resource URL is a prefix; ClusterRoles with an
`aggregationRule` hold the rules of every ClusterRole their selectors match (computed here rather
than written back by a controller). Members of `system:masters` are allowed everything without a
lookup, as kube-apiserver's privileged-group authorizer does.

Escalation prevention (`check_escalation`): writing a Role or ClusterRole needs every rule it holds,
or the `escalate` verb on it; writing a binding needs every rule of the role it references, or the
`bind` verb on that role.

Freshness: the index is fed by the store itself (`ObservedStore` in pinnace.apiserver.security sees
every write this server makes, before the write is acknowledged), so a binding is in force, or
revoked, the moment its write returns. Writes by other API servers sharing an etcd reach it through a
periodic re-list. Each object's last applied revision is kept, so writes finishing out of order
never let an older version win.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pinnace.api.selectors import SelectorError, label_selector_from_dict
from pinnace.apiserver.authz.attributes import Attributes

log = logging.getLogger(__name__)

MASTERS = "system:masters"
RBAC_GROUP = "rbac.authorization.k8s.io"
RESOURCES = ("roles", "clusterroles", "rolebindings", "clusterrolebindings")
_CACHE_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    reason: str = ""


def _strings(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


@dataclass(frozen=True, slots=True)
class Rule:
    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def of(cls, rule: Any) -> Rule | None:
        if not isinstance(rule, dict):
            return None
        return cls(
            _strings(rule.get("verbs")),
            _strings(rule.get("apiGroups")),
            _strings(rule.get("resources")),
            _strings(rule.get("resourceNames")),
            _strings(rule.get("nonResourceURLs")),
        )

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"verbs": list(self.verbs)}
        if self.non_resource_urls:
            out["nonResourceURLs"] = list(self.non_resource_urls)
        else:
            out["apiGroups"] = list(self.api_groups)
            out["resources"] = list(self.resources)
            if self.resource_names:
                out["resourceNames"] = list(self.resource_names)
        return out

    def allows(self, attrs: Attributes) -> bool:
        if "*" not in self.verbs and attrs.verb not in self.verbs:
            return False
        if not attrs.resource_request:
            return any(url_matches(pattern, attrs.path) for pattern in self.non_resource_urls)
        if "*" not in self.api_groups and attrs.group not in self.api_groups:
            return False
        if not resource_matches(self.resources, attrs.resource, attrs.subresource):
            return False
        return not self.resource_names or attrs.name in self.resource_names


def url_matches(pattern: str, path: str) -> bool:
    if pattern == "*" or pattern == path:
        return True
    return pattern.endswith("*") and path.startswith(pattern[:-1])


def resource_matches(patterns: Iterable[str], resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    for pattern in patterns:
        if pattern == "*" or pattern == combined:
            return True
        if subresource and (pattern == f"*/{subresource}" or pattern == f"{resource}/*"):
            return True
    return False


def subject_keys(user: Any) -> list[str]:
    """Index keys a request's user is known by: its name and each of its groups."""
    return [f"User:{user.name}", *(f"Group:{group}" for group in user.groups)]


def _binding_subject_keys(binding: dict) -> list[str]:
    keys = []
    for subject in binding.get("subjects") or ():
        if not isinstance(subject, dict):
            continue
        kind, name = subject.get("kind"), subject.get("name")
        if not isinstance(name, str):
            continue
        if kind == "ServiceAccount":
            namespace = subject.get("namespace") or (binding.get("metadata") or {}).get("namespace") or ""
            keys.append(f"User:system:serviceaccount:{namespace}:{name}")
        elif kind in ("User", "Group"):
            keys.append(f"{kind}:{name}")
    return keys


@dataclass(slots=True)
class _Binding:
    namespace: str  # "" for ClusterRoleBindings
    name: str
    role_kind: str
    role_name: str


class RBACAuthorizer:
    def __init__(self) -> None:
        self.roles: dict[tuple[str, str], tuple[Rule, ...]] = {}
        self.cluster_roles: dict[str, dict] = {}
        self._cluster_rules: dict[str, tuple[Rule, ...]] = {}
        # subject key -> namespace ("" for cluster-wide) -> bindings
        self._by_subject: dict[str, dict[str, list[_Binding]]] = defaultdict(lambda: defaultdict(list))
        self._bindings: dict[tuple[str, str, str], tuple[_Binding, list[str]]] = {}
        self._decisions: dict[tuple, Decision] = {}
        self._revisions: dict[tuple[str, str, str], int] = {}  # newest revision applied per object

    # ---- the index ----

    def changed(self) -> None:
        self._decisions.clear()
        self._cluster_rules.clear()

    def apply(self, resource: str, namespace: str, name: str, obj: dict | None, revision: int = 0) -> None:
        """One RBAC object written (`obj`) or deleted (None) at `revision` (0: unconditionally)."""
        object_key = (resource, namespace, name)
        if revision:
            if revision <= self._revisions.get(object_key, 0):
                return
            self._revisions[object_key] = revision
        deleted = obj is None
        obj = obj or {}
        if resource == "roles":
            if deleted:
                self.roles.pop((namespace, name), None)
            else:
                self.roles[(namespace, name)] = tuple(r for r in map(Rule.of, obj.get("rules") or ()) if r)
        elif resource == "clusterroles":
            if deleted:
                self.cluster_roles.pop(name, None)
            else:
                self.cluster_roles[name] = obj
        else:
            self._unindex(resource, namespace, name)
            if not deleted:
                self._index(resource, namespace, name, obj)
        self.changed()

    def _unindex(self, resource: str, namespace: str, name: str) -> None:
        entry = self._bindings.pop((resource, namespace, name), None)
        if entry is None:
            return
        binding, keys = entry
        for key in keys:
            bucket = self._by_subject.get(key, {}).get(namespace)
            if bucket is not None:
                bucket[:] = [b for b in bucket if b is not binding]

    def _index(self, resource: str, namespace: str, name: str, obj: dict) -> None:
        ref = obj.get("roleRef") or {}
        if not isinstance(ref, dict):
            return
        binding = _Binding(namespace if resource == "rolebindings" else "", name, ref.get("kind") or "", ref.get("name") or "")
        keys = _binding_subject_keys(obj)
        self._bindings[(resource, namespace, name)] = (binding, keys)
        for key in keys:
            self._by_subject[key][binding.namespace].append(binding)

    def reset(self, objects: dict[str, list[dict]]) -> None:
        """Rebuild from a full list (at start, and the periodic re-list); the caller re-applies the
        writes it saw while listing, which the per-object revisions order correctly."""
        self.roles.clear()
        self.cluster_roles.clear()
        self._by_subject.clear()
        self._bindings.clear()
        self._revisions.clear()
        for resource in RESOURCES:
            for obj in objects.get(resource, ()):
                meta = obj.get("metadata") or {}
                revision = int(meta.get("resourceVersion") or 0)
                self.apply(resource, meta.get("namespace") or "", meta.get("name") or "", obj, revision)
        self.changed()

    # ---- rules ----

    def cluster_role_rules(self, name: str, _seen: frozenset[str] = frozenset()) -> tuple[Rule, ...]:
        cached = self._cluster_rules.get(name)
        if cached is not None:
            return cached
        role = self.cluster_roles.get(name)
        if role is None or name in _seen:
            return ()
        rules = [r for r in map(Rule.of, role.get("rules") or ()) if r]
        aggregation = role.get("aggregationRule")
        if isinstance(aggregation, dict):
            selectors = []
            for raw in aggregation.get("clusterRoleSelectors") or ():
                try:
                    selectors.append(label_selector_from_dict(raw))
                except (SelectorError, AttributeError, TypeError):
                    continue
            seen = _seen | {name}
            for other_name, other in sorted(self.cluster_roles.items()):
                labels = (other.get("metadata") or {}).get("labels") or {}
                if other_name != name and any(not s.empty and s.matches(labels) for s in selectors):
                    for rule in self.cluster_role_rules(other_name, seen):
                        if rule not in rules:
                            rules.append(rule)
        result = tuple(rules)
        if not _seen:
            self._cluster_rules[name] = result
        return result

    def _binding_rules(self, binding: _Binding) -> tuple[Rule, ...]:
        if binding.role_kind == "ClusterRole":
            return self.cluster_role_rules(binding.role_name)
        if binding.role_kind == "Role" and binding.namespace:
            return self.roles.get((binding.namespace, binding.role_name), ())
        return ()

    def _bindings_for(self, user: Any, namespace: str) -> Iterable[_Binding]:
        for key in subject_keys(user):
            by_namespace = self._by_subject.get(key)
            if not by_namespace:
                continue
            yield from by_namespace.get("", ())
            if namespace:
                yield from by_namespace.get(namespace, ())

    def rules_for(self, user: Any, namespace: str) -> list[Rule]:
        """Every rule that applies to `user` in `namespace` (cluster-wide ones included)."""
        if MASTERS in user.groups:
            return [Rule(("*",), ("*",), ("*",)), Rule(("*",), non_resource_urls=("*",))]
        rules: list[Rule] = []
        for binding in self._bindings_for(user, namespace):
            for rule in self._binding_rules(binding):
                if rule not in rules:
                    rules.append(rule)
        return rules

    # ---- decisions ----

    def authorize(self, user: Any, attrs: Attributes, request_key: tuple | None = None) -> Decision:
        """`request_key` (method, path, watch flag) identifies `attrs` more cheaply than the attributes
        themselves for the decision memo; callers without one get it keyed on the attributes."""
        if MASTERS in user.groups:
            return Decision(True, "system:masters")
        cache_key = (user.name, user.groups, request_key if request_key is not None else attrs)
        decision = self._decisions.get(cache_key)
        if decision is not None:
            return decision
        decision = Decision(False)
        for binding in self._bindings_for(user, attrs.namespace):
            if any(rule.allows(attrs) for rule in self._binding_rules(binding)):
                kind = "RoleBinding" if binding.namespace else "ClusterRoleBinding"
                where = f" of {binding.role_kind} \"{binding.role_name}\""
                decision = Decision(True, f'RBAC: allowed by {kind} "{binding.name}"{where}')
                break
        if len(self._decisions) > _CACHE_LIMIT:
            self._decisions.clear()
        self._decisions[cache_key] = decision
        return decision

    def covers(self, user: Any, namespace: str, wanted: Iterable[Rule]) -> list[Rule]:
        """The rules of `wanted` the user does not hold in full (empty: holds them all)."""
        held = self.rules_for(user, namespace)
        missing = []
        for rule in wanted:
            if not all(any(h.allows(a) for h in held) for a in _atoms(rule)):
                missing.append(rule)
        return missing


def _atoms(rule: Rule) -> Iterable[Attributes]:
    """A rule broken into single (verb, group, resource, name) requests; wildcards stay literal, so
    only a wildcard in a held rule covers a wildcard in a granted one, as Kubernetes checks it."""
    if rule.non_resource_urls:
        for verb in rule.verbs:
            for url in rule.non_resource_urls:
                yield Attributes(verb, False, path=url)
        return
    for verb in rule.verbs:
        for group in rule.api_groups:
            for resource in rule.resources:
                base, _, sub = resource.partition("/")
                for name in rule.resource_names or ("",):
                    yield Attributes(verb, True, group, "", base, sub, "", name)
