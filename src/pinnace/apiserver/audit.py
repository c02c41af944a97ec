"""Audit log: a policy file decides the level per request; events are JSON lines of audit.k8s.io/v1.

Policy (audit.k8s.io/v1 `Policy`, the same YAML kube-apiserver reads): rules are checked in order and
the first match gives the level (None, Metadata, Request, RequestResponse); a rule matches on `users`,
`userGroups`, `verbs`, `resources` (`group`, `resources` incl. `pods/log`-style and `*`,
`resourceNames`), `namespaces` and `nonResourceURLs` (trailing `*` is a prefix). No rule matching means
no event. `omitStages` is accepted; pinnace writes one event per request at stage ResponseComplete
(ResponseStarted for watches and other streams is folded into it, written when the stream ends).

Request bodies are the object admission saw (after decoding; for patches, the patched object),
responses the JSON the client received; a Secret's data is logged only if the policy asks for
Request or RequestResponse on secrets — as in Kubernetes, write the policy accordingly.
"""

from __future__ import annotations

import datetime
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import yaml

from pinnace.apiserver.authz.attributes import Attributes
from pinnace.apiserver.authz.rbac import resource_matches, url_matches

log = logging.getLogger(__name__)

LEVELS = ("None", "Metadata", "Request", "RequestResponse")


@dataclass(frozen=True, slots=True)
class PolicyRule:
    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    def matches(self, user: Any, attrs: Attributes) -> bool:
        if self.users and user.name not in self.users:
            return False
        if self.user_groups and not any(g in self.user_groups for g in user.groups):
            return False
        if self.verbs and attrs.verb not in self.verbs:
            return False
        if not attrs.resource_request:
            if self.resources or self.namespaces:
                return False
            return not self.non_resource_urls or any(url_matches(p, attrs.path) for p in self.non_resource_urls)
        if self.non_resource_urls:
            return False
        if self.namespaces and attrs.namespace not in self.namespaces:
            return False
        if self.resources:
            for group, resources, names in self.resources:
                if group != attrs.group:
                    continue
                if resources and not resource_matches(resources, attrs.resource, attrs.subresource):
                    continue
                if names and attrs.name not in names:
                    continue
                return True
            return False
        return True


def load_policy(path: str | Path) -> list[PolicyRule]:
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("kind") != "Policy":
        raise ValueError(f"{path}: not an audit.k8s.io Policy")
    rules = []
    for raw in doc.get("rules") or ():
        level = raw.get("level", "None")
        if level not in LEVELS:
            raise ValueError(f"{path}: unknown audit level {level!r}")
        resources = tuple(
            (r.get("group", ""), tuple(r.get("resources") or ()), tuple(r.get("resourceNames") or ()))
            for r in raw.get("resources") or ()
        )
        rules.append(PolicyRule(
            level, tuple(raw.get("users") or ()), tuple(raw.get("userGroups") or ()), tuple(raw.get("verbs") or ()),
            resources, tuple(raw.get("namespaces") or ()), tuple(raw.get("nonResourceURLs") or ()),
        ))
    return rules


def _stamp(when: datetime.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditLog:
    def __init__(self, policy_path: str | Path, log_path: str | Path) -> None:
        self.rules = load_policy(policy_path)
        self.path = Path(log_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._file = os.fdopen(fd, "ab", buffering=0)

    def level(self, user: Any, attrs: Attributes) -> str:
        for rule in self.rules:
            if rule.matches(user, attrs):
                return rule.level
        return "None"

    def record(self, *, user: Any, attrs: Attributes, request: Any, code: int, received: datetime.datetime,
               request_object: Any = None, response_body: bytes | None = None, decision: str = "",
               reason: str = "", annotations: dict[str, str] | None = None) -> None:
        level = self.level(user, attrs)
        if level == "None":
            return
        event: dict[str, Any] = {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": level,
            "auditID": request.headers.get("Audit-ID") or str(uuid.uuid4()),
            "stage": "ResponseComplete",
            "requestURI": request.path_qs,
            "verb": attrs.verb,
            "user": {"username": user.name, "groups": list(user.groups)},
            "sourceIPs": [request.remote or ""],
            "userAgent": request.headers.get("User-Agent", ""),
        }
        if attrs.resource_request:
            ref: dict[str, Any] = {"resource": attrs.resource}
            if attrs.namespace:
                ref["namespace"] = attrs.namespace
            if attrs.name:
                ref["name"] = attrs.name
            ref["apiGroup"] = attrs.group
            ref["apiVersion"] = attrs.version
            if attrs.subresource:
                ref["subresource"] = attrs.subresource
            event["objectRef"] = ref
        event["responseStatus"] = {"metadata": {}, "code": code}
        if level in ("Request", "RequestResponse") and request_object is not None:
            event["requestObject"] = request_object
        if level == "RequestResponse" and response_body:
            try:
                event["responseObject"] = orjson.loads(response_body)
            except orjson.JSONDecodeError:
                pass  # YAML or a stream: the metadata part of the event still stands
        now = datetime.datetime.now(datetime.UTC)
        event["requestReceivedTimestamp"] = _stamp(received)
        event["stageTimestamp"] = _stamp(now)
        notes = dict(annotations or {})
        if decision:
            notes["authorization.k8s.io/decision"] = decision
            notes["authorization.k8s.io/reason"] = reason
        if notes:
            event["annotations"] = notes
        try:
            self._file.write(orjson.dumps(event) + b"\n")
        except (OSError, TypeError) as error:
            log.warning("audit event not written: %s", error)

    def close(self) -> None:
        self._file.close()
