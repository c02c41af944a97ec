"""API discovery: `/version`, legacy `/api` `/apis` `/api/v1` `/apis/<g>/<v>`, and aggregated discovery.

Aggregated discovery answers `/api` and `/apis` with an `APIGroupDiscoveryList` in the version the
client asked for, with exactly the Content-Type that version needs
(`application/json;g=apidiscovery.k8s.io;v=<v2|v2beta1>;as=APIGroupDiscoveryList`): kubectl 1.30+ asks
for v2 then v2beta1, kubectl 1.27-1.29 only for v2beta1, and a mismatch makes kubectl see no resources.
Without that Accept, the legacy documents are served. The legacy `/api/v1` list is needed even by new
clients (`kubectl drain` looks for `pods/eviction` there).

All documents are built once from the kind registry and cached as bytes. The review groups
(authentication.k8s.io and authorization.k8s.io: TokenReview, SubjectAccessReview, ...) hold no stored
kinds, so the kind registry lacks them; they are added here from the table that serves them
(`pinnace.apiserver.authz.reviews`), create-only and without a storageVersionHash, as kube-apiserver
lists them, in both the legacy and the aggregated documents.
"""

from __future__ import annotations

import hashlib
import platform
from typing import Any

import orjson

from pinnace.api.kinds import KUBERNETES_VERSION, Registry, ResourceInfo
from pinnace.apiserver.authz.reviews import _RESOURCES as REVIEW_RESOURCES

AGGREGATED_TYPES = {
    "v2": "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
    "v2beta1": "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
}
# The preferred version of a group with several (autoscaling: v2, as in Kubernetes 1.32).
_PREFERRED = {"autoscaling": "v2"}


def version_info() -> dict[str, str]:
    major, minor, _patch = KUBERNETES_VERSION.lstrip("v").split(".")
    machine = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "minCompatibilityMajor": major,
        "minCompatibilityMinor": str(int(minor) - 1),
        "gitVersion": KUBERNETES_VERSION,
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2024-12-11T00:00:00Z",
        "goVersion": "go1.23.4",
        "compiler": "gc",
        "platform": f"linux/{machine}",
    }


def aggregated_version(accept: str | None) -> str | None:
    """"v2" or "v2beta1" when the Accept header asks for aggregated discovery, in its order of preference."""
    if not accept or "APIGroupDiscoveryList" not in accept:
        return None
    for part in accept.split(","):
        params = dict(p.strip().split("=", 1) for p in part.split(";")[1:] if "=" in p)
        if params.get("as") == "APIGroupDiscoveryList" and params.get("g") == "apidiscovery.k8s.io":
            if params.get("v") in AGGREGATED_TYPES:
                return params["v"]
    return None


# kube-apiserver lists the review groups right after events.k8s.io in `/apis`.
_REVIEW_GROUPS_AFTER = "events.k8s.io"


def review_infos() -> list[ResourceInfo]:
    """The create-only review resources (served by pinnace.apiserver.authz.reviews), as ResourceInfo."""
    return [
        ResourceInfo(group, "v1", kind, plural, kind.lower(), namespaced, verbs=("create",))
        for group, resources in REVIEW_RESOURCES.items()
        for plural, kind, namespaced in resources
    ]


def _storage_hash(info: ResourceInfo) -> str:
    digest = hashlib.sha256(f"{info.group}/{info.version}/{info.kind}".encode()).digest()
    import base64

    return base64.b64encode(digest[:8]).decode()


class Discovery:
    """Discovery documents for the built-in kinds, metrics.k8s.io (served by the API server itself,
    pinnace.apiserver.metricsapi) and `extra` ones (custom resources)."""

    def __init__(self, registry: Registry, extra: list[ResourceInfo] | None = None) -> None:
        from pinnace.apiserver.metricsapi import INFOS as METRICS_INFOS

        self.registry = registry
        self.reviews = review_infos()
        self._unstored = frozenset(info.name for info in self.reviews)
        self.extra = [*self.reviews, *METRICS_INFOS, *(extra or ())]
        groups = registry.group_versions()
        if _REVIEW_GROUPS_AFTER in groups:  # kube-apiserver's order of groups
            ordered: dict[str, list[str]] = {}
            for group, versions in groups.items():
                ordered[group] = versions
                if group == _REVIEW_GROUPS_AFTER:
                    ordered.update((g, []) for g in sorted(REVIEW_RESOURCES) if g not in groups)
            groups = ordered
        self.groups = groups
        for info in self.extra:
            versions = self.groups.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        self._cache: dict[Any, bytes] = {}

    def _in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return self.registry.in_group_version(group, version) + [
            r for r in self.extra if r.group == group and r.version == version
        ]

    def _versions(self, group: str) -> list[str]:
        versions = list(self.groups[group])
        preferred = _PREFERRED.get(group)
        if preferred in versions:
            versions.remove(preferred)
            versions.insert(0, preferred)
        return versions

    # ---- legacy ----

    def api_versions(self, server_address: str) -> bytes:
        return orjson.dumps(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
            }
        )

    def _group(self, group: str) -> dict:
        versions = [{"groupVersion": f"{group}/{v}", "version": v} for v in self._versions(group)]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    def api_group_list(self) -> bytes:
        key = "groups"
        if key not in self._cache:
            groups = [self._group(g) for g in self.groups if g]
            self._cache[key] = orjson.dumps({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        return self._cache[key]

    def api_group(self, group: str) -> bytes | None:
        if group not in self.groups or not group:
            return None
        return orjson.dumps({"kind": "APIGroup", "apiVersion": "v1", **self._group(group)})

    def resource_list(self, group: str, version: str) -> bytes | None:
        key = ("resources", group, version)
        if key in self._cache:
            return self._cache[key]
        infos = self._in_group_version(group, version)
        if not infos:
            return None
        resources = []
        for info in sorted(infos, key=lambda r: r.plural):
            entry: dict[str, Any] = {
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": list(info.verbs),
            }
            if info.short_names:
                entry["shortNames"] = list(info.short_names)
            if info.categories:
                entry["categories"] = list(info.categories)
            if info.name not in self._unstored:
                entry["storageVersionHash"] = _storage_hash(info)
            resources.append(entry)
            for name, sub in info.subresources.items():
                sub_entry: dict[str, Any] = {"name": f"{info.plural}/{name}", "singularName": "", "namespaced": info.namespaced}
                if (sub.group, sub.version) != (info.group, info.version):
                    sub_entry["group"] = sub.group
                    sub_entry["version"] = sub.version
                sub_entry["kind"] = sub.kind
                sub_entry["verbs"] = list(sub.verbs)
                resources.append(sub_entry)
        gv = f"{group}/{version}" if group else version
        body = orjson.dumps({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
        self._cache[key] = body
        return body

    # ---- aggregated ----

    def aggregated(self, legacy: bool, version: str) -> bytes:
        key = ("aggregated", legacy, version)
        if key in self._cache:
            return self._cache[key]
        items = []
        for group in self.groups:
            if bool(group) == legacy:
                continue
            versions = []
            for v in self._versions(group):
                resources = []
                for info in sorted(self._in_group_version(group, v), key=lambda r: r.plural):
                    entry: dict[str, Any] = {
                        "resource": info.plural,
                        "responseKind": {"group": info.group, "version": info.version, "kind": info.kind},
                        "scope": "Namespaced" if info.namespaced else "Cluster",
                        "singularResource": info.singular,
                        "verbs": list(info.verbs),
                    }
                    if info.short_names:
                        entry["shortNames"] = list(info.short_names)
                    if info.categories:
                        entry["categories"] = list(info.categories)
                    if info.subresources:
                        entry["subresources"] = [
                            {
                                "subresource": name,
                                "responseKind": {"group": sub.group, "version": sub.version, "kind": sub.kind},
                                "verbs": list(sub.verbs),
                            }
                            for name, sub in info.subresources.items()
                        ]
                    resources.append(entry)
                versions.append({"version": v, "resources": resources, "freshness": "Current"})
            metadata: dict[str, Any] = {"creationTimestamp": None}
            if group:
                metadata["name"] = group
            items.append({"metadata": metadata, "versions": versions})
        body = orjson.dumps(
            {
                "kind": "APIGroupDiscoveryList",
                "apiVersion": f"apidiscovery.k8s.io/{version}",
                "metadata": {},
                "items": items,
            }
        )
        self._cache[key] = body
        return body
