"""The kind registry: which resources the API serves, their scope, verbs and subresources.

Facts come from two published sources, never from hand-written field lists:
- `lightkube-models` ships one generated module per group/version whose `ApiInfo` blocks carry each
  resource's plural, verbs, scope (its base class) and subresources. Its resource modules import a
  package that is not installed here, so the modules are read as source with `ast`, not imported.
- `kubernetes-validate`'s Kubernetes 1.32 definitions decide which kinds exist in 1.32 (lightkube-models
  follows a newer Kubernetes) and name each kind's schema definition.

What neither carries, shortNames and categories, is the small table `_FACTS` below (kubectl's `get po`,
`get all`), with the values kube-apiserver 1.32 reports.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

KUBERNETES_VERSION = "v1.32.0"

# The group/versions served (the list), as lightkube module names.
SERVED_MODULES = (
    "core_v1",
    "apps_v1",
    "batch_v1",
    "autoscaling_v1",
    "autoscaling_v2",
    "coordination_v1",
    "discovery_v1",
    "events_v1",
    "rbac_authorization_v1",
    "policy_v1",
    "networking_v1",
    "storage_v1",
    "scheduling_v1",
    "node_v1",
    "apiregistration_v1",
    "admissionregistration_v1",
    "certificates_v1",
    "apiextensions_v1",
)

# Order of groups in discovery, as kube-apiserver lists them (kubectl prints api-resources in this order).
GROUP_ORDER = (
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
)

# plural (optionally "group/plural") -> (shortNames, categories), as kube-apiserver 1.32 serves them.
_FACTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "pods": (("po",), ("all",)),
    "services": (("svc",), ("all",)),
    "replicationcontrollers": (("rc",), ("all",)),
    "deployments": (("deploy",), ("all",)),
    "replicasets": (("rs",), ("all",)),
    "statefulsets": (("sts",), ("all",)),
    "daemonsets": (("ds",), ("all",)),
    "jobs": ((), ("all",)),
    "cronjobs": (("cj",), ("all",)),
    "horizontalpodautoscalers": (("hpa",), ("all",)),
    "namespaces": (("ns",), ()),
    "nodes": (("no",), ()),
    "configmaps": (("cm",), ()),
    "endpoints": (("ep",), ()),
    "events": (("ev",), ()),
    "limitranges": (("limits",), ()),
    "persistentvolumeclaims": (("pvc",), ()),
    "persistentvolumes": (("pv",), ()),
    "resourcequotas": (("quota",), ()),
    "serviceaccounts": (("sa",), ()),
    "componentstatuses": (("cs",), ()),
    "customresourcedefinitions": (("crd", "crds"), ("api-extensions",)),
    "apiservices": ((), ("api-extensions",)),
    "mutatingwebhookconfigurations": ((), ("api-extensions",)),
    "validatingwebhookconfigurations": ((), ("api-extensions",)),
    "validatingadmissionpolicies": ((), ("api-extensions",)),
    "validatingadmissionpolicybindings": ((), ("api-extensions",)),
    "ingresses": (("ing",), ()),
    "networkpolicies": (("netpol",), ()),
    "poddisruptionbudgets": (("pdb",), ()),
    "priorityclasses": (("pc",), ()),
    "storageclasses": (("sc",), ()),
    "certificatesigningrequests": (("csr",), ()),
}

_VERB_NAMES = {"post": "create", "put": "update"}
_VERB_ORDER = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, slots=True)
class SubresourceInfo:
    name: str  # "status", "scale", "binding", ...
    group: str  # the group/version/kind of the subresource's body (Scale is autoscaling/v1)
    version: str
    kind: str
    verbs: tuple[str, ...]


@dataclass(frozen=True, eq=False)  # one instance per resource: compared and hashed by identity
class ResourceInfo:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    subresources: dict[str, SubresourceInfo] = field(default_factory=dict)
    definition: str = ""  # the schema definition name, "io.k8s.api.core.v1.Pod"

    @functools.cached_property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @functools.cached_property
    def name(self) -> str:
        """The resource name used across pinnace: "v1/pods", "apps/v1/deployments"."""
        return f"{self.api_version}/{self.plural}"

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def group_version(self) -> str:
        return self.api_version


class Registry:
    """Every served resource, looked up by resource name, by kind, or by the names kubectl accepts."""

    def __init__(self, resources: list[ResourceInfo]) -> None:
        self.resources = resources
        self._by_resource = {r.name: r for r in resources}
        self._by_kind = {(r.api_version, r.kind): r for r in resources}
        self._by_gv_plural = {(r.group, r.version, r.plural): r for r in resources}

    def by_resource(self, name: str) -> ResourceInfo:
        """`"apps/v1/deployments"` or `"v1/pods"`; raises KeyError when not served."""
        return self._by_resource[name]

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo:
        return self._by_kind[(api_version, kind)]

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        return self._by_gv_plural.get((group, version, plural))

    def group_versions(self) -> dict[str, list[str]]:
        """group -> versions served, groups in discovery order ("" is the legacy core group)."""
        seen: dict[str, list[str]] = {}
        for r in self.resources:
            versions = seen.setdefault(r.group, [])
            if r.version not in versions:
                versions.append(r.version)
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        return dict(sorted(seen.items(), key=lambda item: (order.get(item[0], len(order)), item[0])))

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [r for r in self.resources if r.group == group and r.version == version]


def _lightkube_dir() -> Path:
    spec = importlib.util.find_spec("lightkube")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the lightkube-models package is not installed; pip install lightkube-models")
    return Path(next(iter(spec.submodule_search_locations))) / "resources"


def schema_dir(version: str = KUBERNETES_VERSION, strict: bool = True) -> Path:
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the kubernetes-validate package is not installed; pip install kubernetes-validate")
    base = Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema"
    return base / f"{version}-local{'-strict' if strict else ''}"


@functools.cache
def _gvk_definitions() -> dict[tuple[str, str, str], str]:
    """(group, version, kind) -> definition name, from the 1.32 schema definitions."""
    with open(schema_dir() / "_definitions.json", "rb") as f:
        defs = json.load(f)["$defs"]
    result = {}
    for name, definition in defs.items():
        for gvk in definition.get("x-kubernetes-group-version-kind", ()):
            result[(gvk.get("group", ""), gvk["version"], gvk["kind"])] = name
    return result


def _api_infos(path: Path) -> list[tuple[bool, dict]]:
    """Each class's (namespaced, ApiInfo keyword arguments) in one lightkube resources module."""
    tree = ast.parse(path.read_text())
    infos = []
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        bases = [ast.unparse(b) for b in node.bases]
        namespaced = any(b.startswith("res.Namespaced") for b in bases)
        for stmt in node.body:
            if (
                isinstance(stmt, ast.Assign)
                and stmt.targets
                and isinstance(stmt.targets[0], ast.Name)
                and stmt.targets[0].id == "_api_info"
                and isinstance(stmt.value, ast.Call)
            ):
                kwargs = {}
                for kw in stmt.value.keywords:
                    if isinstance(kw.value, ast.Call):  # ResourceDef(group, version, kind)
                        kwargs[kw.arg] = tuple(ast.literal_eval(a) for a in kw.value.args)
                    else:
                        kwargs[kw.arg] = ast.literal_eval(kw.value)
                infos.append((namespaced, kwargs))
    return infos


def _verbs(raw: list[str]) -> tuple[str, ...]:
    verbs = {_VERB_NAMES.get(v, v) for v in raw if not v.startswith("global_")}
    return tuple(v for v in _VERB_ORDER if v in verbs)


# Subresources the Kubernetes API serves that lightkube-models does not model (its generator skips
# connect verbs): the streaming ones the kubelet answers and the proxies.
_CONNECT_SUBRESOURCES: dict[tuple[str, str, str], dict[str, tuple[str, tuple[str, ...]]]] = {
    ("", "v1", "Pod"): {
        "attach": ("PodAttachOptions", ("create", "get")),
        "exec": ("PodExecOptions", ("create", "get")),
        "portforward": ("PodPortForwardOptions", ("create", "get")),
        "proxy": ("PodProxyOptions", ("create", "delete", "get", "patch", "update")),
    },
    ("", "v1", "Node"): {"proxy": ("NodeProxyOptions", ("create", "delete", "get", "patch", "update"))},
    ("", "v1", "Service"): {"proxy": ("ServiceProxyOptions", ("create", "delete", "get", "patch", "update"))},
}


@functools.cache
def registry() -> Registry:
    gvk_defs = _gvk_definitions()
    directory = _lightkube_dir()
    resources: list[ResourceInfo] = []
    for module in SERVED_MODULES:
        infos = _api_infos(directory / f"{module}.py")
        subresources: dict[tuple[str, str, str], dict[str, SubresourceInfo]] = {}
        mains = []
        for namespaced, info in infos:
            if "action" in info:
                parent = info["parent"]
                body = info["resource"]
                subresources.setdefault(parent, {})[info["action"]] = SubresourceInfo(
                    info["action"], body[0], body[1], body[2], _verbs(info["verbs"])
                )
            elif "plural" in info:
                mains.append((namespaced, info))
        for parent, extra in _CONNECT_SUBRESOURCES.items():
            for name, (body_kind, verbs) in extra.items():
                subresources.setdefault(parent, {}).setdefault(name, SubresourceInfo(name, "", "v1", body_kind, verbs))
        for namespaced, info in mains:
            group, version, kind = info["resource"]
            definition = gvk_defs.get((group, version, kind))
            if definition is None:
                continue  # a kind newer than Kubernetes 1.32
            verbs = _verbs(info["verbs"])
            if not verbs:
                continue
            plural = info["plural"]
            short_names, categories = _FACTS.get(f"{group}/{plural}", _FACTS.get(plural, ((), ())))
            if group == "events.k8s.io":
                categories = ()
            resources.append(
                ResourceInfo(
                    group=group,
                    version=version,
                    kind=kind,
                    plural=plural,
                    singular=kind.lower(),
                    namespaced=namespaced,
                    short_names=short_names,
                    categories=categories,
                    verbs=verbs,
                    subresources=dict(sorted(subresources.get((group, version, kind), {}).items())),
                    definition=definition,
                )
            )
    return Registry(resources)
