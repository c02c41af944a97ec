"""Audit log: a policy file decides the level per request; events are JSON lines of audit.k8s.io/v1.

Policy (audit.k8s.io/v1 `Policy`, the same YAML kube-apiserver reads): rules are checked in order and
the first match gives the level (None, Metadata, Request, RequestResponse); a rule matches on `users`,
`userGroups`, `verbs`, `resources` (`group`, `resources` incl. `pods/log`-style and `*`,
`resourceNames`), `namespaces` and `nonResourceURLs` (trailing `*` is a prefix). No rule matching means
no event. Pinnace writes one event per request at stage ResponseComplete (ResponseStarted for watches
and other streams is folded into it, written when the stream ends); `omitStages` (the policy's and the
matching rule's) drops an event whose stage it names.

A request that fails authentication (401) is audited as kube-apiserver's WithFailedAuthenticationAudit
does: the policy is evaluated with no user (rules naming `users` or `userGroups` do not match), and the
one event is at stage ResponseStarted with `"user": {}`, no request or response object, and
`responseStatus` `{"metadata": {}, "message": "Authentication failed, attempted: bearer", "code": 401}`
("... no credentials provided" when the request carried none).

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
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")


@dataclass(frozen=True, slots=True)
class PolicyRule:
    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()  # the policy's and the rule's

    def matches(self, user: Any, attrs: Attributes) -> bool:
        """`user` None: a request that failed authentication, matched by no rule naming users or groups."""
        if self.users and (user is None or user.name not in self.users):
            return False
        if self.user_groups and (user is None or not any(g in self.user_groups for g in user.groups)):
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
    omitted = _stages(path, doc.get("omitStages"))
    for raw in doc.get("rules") or ():
        level = raw.get("level", "None")
        if level not in LEVELS:
            raise ValueError(f"{path}: unknown audit level {level!r}")
        omit = tuple(dict.fromkeys((*omitted, *_stages(path, raw.get("omitStages")))))
        resources = tuple(
            (r.get("group", ""), tuple(r.get("resources") or ()), tuple(r.get("resourceNames") or ()))
            for r in raw.get("resources") or ()
        )
        rules.append(PolicyRule(
            level, tuple(raw.get("users") or ()), tuple(raw.get("userGroups") or ()), tuple(raw.get("verbs") or ()),
            resources, tuple(raw.get("namespaces") or ()), tuple(raw.get("nonResourceURLs") or ()), omit,
        ))
    return rules


def _stages(path: str | Path, raw: Any) -> tuple[str, ...]:
    stages = tuple(raw or ())
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"{path}: unknown audit stage {stage!r} in omitStages")
    return stages


def auth_methods(request: Any) -> str:
    """The message kube-apiserver puts in a failed authentication's audit event (getAuthMethods)."""
    methods = []
    auth = request.headers.get("Authorization", "").strip()
    if auth[:6].lower() == "basic ":
        methods.append("basic")
    parts = auth.split(" ")
    if len(parts) > 1 and parts[0].lower() == "bearer":
        methods.append("bearer")
    if request.query.get("access_token", "").strip():
        methods.append("access_token")
    transport = request.transport
    if transport is not None and transport.get_extra_info("peercert"):
        methods.append("x509")
    if methods:
        return "Authentication failed, attempted: " + ", ".join(methods)
    return "Authentication failed, no credentials provided"


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
        return self._rule(user, attrs)[0]

    def _rule(self, user: Any, attrs: Attributes) -> tuple[str, tuple[str, ...]]:
        for rule in self.rules:
            if rule.matches(user, attrs):
                return rule.level, rule.omit_stages
        return "None", ()

    def _head(self, level: str, stage: str, request: Any, attrs: Attributes, user: dict) -> dict[str, Any]:
        event: dict[str, Any] = {
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": level,
            "auditID": request.headers.get("Audit-ID") or str(uuid.uuid4()),
            "stage": stage,
            "requestURI": request.path_qs,
            "verb": attrs.verb,
            "user": user,
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
        return event

    def record_unauthenticated(self, *, attrs: Attributes, request: Any, received: datetime.datetime,
                               code: int = 401) -> None:
        """A request that failed authentication, as kube-apiserver audits it (no user, ResponseStarted)."""
        level, omit = self._rule(None, attrs)
        if level == "None" or "ResponseStarted" in omit:
            return
        event = self._head(level, "ResponseStarted", request, attrs, {})
        event["responseStatus"] = {"metadata": {}, "message": auth_methods(request), "code": code}
        event["requestReceivedTimestamp"] = _stamp(received)
        event["stageTimestamp"] = _stamp(datetime.datetime.now(datetime.UTC))
        self._write(event)

    def record(self, *, user: Any, attrs: Attributes, request: Any, code: int, received: datetime.datetime,
               request_object: Any = None, response_body: bytes | None = None, decision: str = "",
               reason: str = "", annotations: dict[str, str] | None = None) -> None:
        level, omit = self._rule(user, attrs)
        if level == "None" or "ResponseComplete" in omit:
            return
        event = self._head(level, "ResponseComplete", request, attrs,
                           {"username": user.name, "groups": list(user.groups)})
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
        self._write(event)

    def _write(self, event: dict[str, Any]) -> None:
        try:
            self._file.write(orjson.dumps(event) + b"\n")
        except (OSError, TypeError) as error:
            log.warning("audit event not written: %s", error)

    def close(self) -> None:
        self._file.close()
