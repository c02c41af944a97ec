"""Label and field selectors, parsed as Kubernetes parses them and matched on the parsed form.

Label selectors: equality (`a=b`, `a==b`, `a!=b`) and set-based (`a in (x,y)`, `a notin (x)`, `a`, `!a`)
requirements, ANDed. Field selectors: `field=value`, `field==value`, `field!=value`, ANDed, with `\\`
escapes for `,`, `=` and `!` in values. Each kind supports a fixed set of fields (`metadata.name`,
`metadata.namespace` for all; pods add `spec.nodeName`, `status.phase`, ...); others are a 400, as in
Kubernetes. Term order never matters: kubectl varies it from run to run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass


class SelectorError(ValueError):
    """The selector cannot be parsed or names an unsupported field; a 400 BadRequest upstream."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("=", "in"):
            return self.key in labels and labels[self.key] in self.values
        # "!=" and "notin" also match objects without the label, as in Kubernetes.
        return self.key not in labels or labels[self.key] not in self.values


class LabelSelector:
    def __init__(self, requirements: list[Requirement], match_nothing: bool = False) -> None:
        self.requirements = requirements
        self.match_nothing = match_nothing

    @property
    def empty(self) -> bool:
        return not self.requirements and not self.match_nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.match_nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def __repr__(self) -> str:
        return f"LabelSelector({self.requirements!r})"


_LABEL_TOKEN = re.compile(r"\s*(\(|\)|,|!=|==|=|!|[^\s(),=!]+)")
_KEY = re.compile(r"^([a-z0-9A-Z]([-a-z0-9A-Z.]*[a-z0-9A-Z])?/)?[a-zA-Z0-9]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$")


def _tokens(text: str) -> list[str]:
    tokens = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _LABEL_TOKEN.match(text, pos)
        if not m:
            raise SelectorError(f"unable to parse requirement: {text!r}")
        tokens.append(m.group(1))
        pos = m.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return tokens


def parse_label_selector(text: str | None) -> LabelSelector:
    """`app=web,tier in (a,b),!canary`; raises SelectorError on malformed input."""
    if not text or not text.strip():
        return LabelSelector([])
    tokens = _tokens(text)
    requirements: list[Requirement] = []
    i = 0

    def need(kind: str) -> str:
        nonlocal i
        if i >= len(tokens):
            raise SelectorError(f"unable to parse requirement: expected {kind} in {text!r}")
        token = tokens[i]
        i += 1
        return token

    while i < len(tokens):
        token = need("key")
        if token == "!":
            key = need("key")
            _check_key(key)
            requirements.append(Requirement(key, "!"))
        else:
            key = token
            _check_key(key)
            nxt = tokens[i] if i < len(tokens) else ","
            if nxt == ",":
                requirements.append(Requirement(key, "exists"))
            elif nxt in ("=", "==", "!="):
                i += 1
                value = tokens[i] if i < len(tokens) and tokens[i] not in (",", "(", ")") else ""
                if value:
                    i += 1
                requirements.append(Requirement(key, "!=" if nxt == "!=" else "=", (value,)))
            elif nxt in ("in", "notin"):
                i += 1
                if need("'('") != "(":
                    raise SelectorError(f"unable to parse requirement: expected '(' after {nxt} in {text!r}")
                values = []
                while True:
                    token = need("value or ')'")
                    if token == ")":
                        break
                    if token == ",":
                        continue
                    values.append(token)
                requirements.append(Requirement(key, nxt, tuple(values)))
            else:
                raise SelectorError(f"unable to parse requirement: unexpected {nxt!r} in {text!r}")
        if i < len(tokens):
            if tokens[i] != ",":
                raise SelectorError(f"unable to parse requirement: expected ',' in {text!r}")
            i += 1
    return LabelSelector(requirements)


def _check_key(key: str) -> None:
    if not _KEY.match(key):
        raise SelectorError(f"invalid label key {key!r}")


def label_selector_from_dict(selector: Mapping | None) -> LabelSelector:
    """A metav1.LabelSelector (`matchLabels` + `matchExpressions`). None or {} selects everything."""
    if not selector:
        return LabelSelector([])
    requirements = [Requirement(k, "=", (str(v),)) for k, v in (selector.get("matchLabels") or {}).items()]
    operators = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in selector.get("matchExpressions") or ():
        op = operators.get(expr.get("operator", ""))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid label selector operator")
        requirements.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return LabelSelector(requirements)


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool

    def matches(self, fields: Mapping[str, str]) -> bool:
        return (fields.get(self.field, "") == self.value) != self.negate


class FieldSelector:
    def __init__(self, requirements: list[FieldRequirement]) -> None:
        self.requirements = requirements

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        return all(r.matches(fields) for r in self.requirements)

    def value_of(self, field: str) -> str | None:
        """The value an equality term pins `field` to (lets a list of `metadata.name=x` read one key)."""
        for r in self.requirements:
            if r.field == field and not r.negate:
                return r.value
        return None

    def __repr__(self) -> str:
        return f"FieldSelector({self.requirements!r})"


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, current, escaped = [], [], False
    for ch in text:
        if escaped:
            current.append("\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == sep:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


def parse_field_selector(text: str | None, allowed: frozenset[str] | None = None) -> FieldSelector:
    """`spec.nodeName=n1,status.phase!=Failed`; `allowed` limits the field names (else 400)."""
    if not text or not text.strip():
        return FieldSelector([])
    requirements = []
    for term in _split_unescaped(text, ","):
        term = term.strip()
        if not term:
            continue
        m = re.match(r"^([^=!]+?)\s*(!=|==|=)(.*)$", term)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        field, op, value = m.group(1).strip(), m.group(2), _unescape(m.group(3).strip())
        if allowed is not None and field not in allowed:
            raise SelectorError(f'field label not supported: {field}')
        requirements.append(FieldRequirement(field, value, op == "!="))
    return FieldSelector(requirements)


# ---- The fields each kind can be selected on, and how to read them from an object ----

def _get(obj: Mapping, path: str) -> str:
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
        if cur is None:
            return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


_EXTRA_FIELDS: dict[str, tuple[str, ...]] = {
    "v1/pods": (
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    ),
    "v1/events": (
        "involvedObject.kind",
        "involvedObject.namespace",
        "involvedObject.name",
        "involvedObject.uid",
        "involvedObject.apiVersion",
        "involvedObject.resourceVersion",
        "involvedObject.fieldPath",
        "reason",
        "reportingComponent",
        "source",
        "type",
    ),
    "events.k8s.io/v1/events": (
        "regarding.kind",
        "regarding.namespace",
        "regarding.name",
        "regarding.uid",
        "regarding.apiVersion",
        "regarding.resourceVersion",
        "regarding.fieldPath",
        "reason",
        "reportingController",
        "type",
    ),
    "v1/nodes": ("spec.unschedulable",),
    "v1/namespaces": ("status.phase",),
    "v1/secrets": ("type",),
    "v1/services": ("spec.clusterIP", "spec.type"),
    "v1/replicationcontrollers": ("status.replicas",),
    "apps/v1/replicasets": ("status.replicas",),
    "batch/v1/jobs": ("status.successful",),
    "certificates.k8s.io/v1/certificatesigningrequests": ("spec.signerName",),
}

_BASE_FIELDS = ("metadata.name", "metadata.namespace")


def allowed_fields(resource: str) -> frozenset[str]:
    """The field selector labels `resource` ("v1/pods") supports."""
    return frozenset(_BASE_FIELDS + _EXTRA_FIELDS.get(resource, ()))


def field_getter(resource: str) -> Callable[[Mapping], dict[str, str]]:
    """A function giving an object's selectable fields as strings (missing fields are "")."""
    extra = _EXTRA_FIELDS.get(resource, ())

    def fields(obj: Mapping) -> dict[str, str]:
        meta = obj.get("metadata") or {}
        result = {"metadata.name": meta.get("name", ""), "metadata.namespace": meta.get("namespace", "")}
        for path in extra:
            if path == "source":  # core Event's "source" selects on source.component
                result[path] = _get(obj, "source.component")
            elif path == "spec.unschedulable":
                result[path] = "true" if (obj.get("spec") or {}).get("unschedulable") else "false"
            elif path == "spec.hostNetwork":
                result[path] = "true" if (obj.get("spec") or {}).get("hostNetwork") else "false"
            else:
                result[path] = _get(obj, path)
        return result

    return fields
