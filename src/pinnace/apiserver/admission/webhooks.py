"""User admission webhooks: MutatingWebhookConfiguration and ValidatingWebhookConfiguration.

For each matching webhook the API server POSTs an `admission.k8s.io/v1` AdmissionReview over HTTPS
and reads the answer, as kube-apiserver does:
- matching: `rules` (operations, apiGroups, apiVersions, resources incl. `pods/status` and `*`,
  scope), `namespaceSelector` (labels of the object's namespace; cluster-scoped objects always match),
  `objectSelector` (labels of the new or the old object), `matchPolicy` read as Equivalent;
- `clientConfig.url`, or `clientConfig.service` (reached through the Service's endpoints), verified
  against `caBundle` (or the system roots when absent);
- `timeoutSeconds` (default 10, at most 30); `failurePolicy` Fail (default) refuses the request when
  the webhook cannot be called or answers nonsense, Ignore lets it through;
- mutating webhooks run in order, each seeing the previous one's result, and may answer a base64
  `JSONPatch`; validating webhooks run concurrently;
- a denial is `admission webhook "<name>" denied the request: <message>` with the webhook's status
  code (403 when it gives none). Warnings from webhooks reach the client as Warning headers.
Configurations are read from the store on each write that could match; there are usually a handful.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import uuid
from typing import Any

import aiohttp
import orjson

from pinnace.api.patch import PatchError, json_patch
from pinnace.api.selectors import SelectorError, label_selector_from_dict
from pinnace.apiserver.admission import AdmissionRequest
from pinnace.apiserver.admission._objects import list_objects
from pinnace.apiserver.errors import ApiError, InternalError

log = logging.getLogger(__name__)

MUTATING = "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations"
VALIDATING = "admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


def rule_matches(rule: dict, request: AdmissionRequest) -> bool:
    operations = rule.get("operations") or []
    if "*" not in operations and request.operation not in operations:
        return False
    groups = rule.get("apiGroups") or []
    if "*" not in groups and request.group not in groups:
        return False
    versions = rule.get("apiVersions") or []
    if "*" not in versions and request.info.version not in versions:
        return False
    combined = f"{request.resource}/{request.subresource}" if request.subresource else request.resource
    resources = rule.get("resources") or []
    if not any(r in ("*/*", combined) or (r == "*" and not request.subresource)
               or (request.subresource and r == f"*/{request.subresource}")
               or (r == f"{request.resource}/*" and request.subresource) for r in resources):
        return False
    scope = rule.get("scope") or "*"
    if scope == "Namespaced" and not request.info.namespaced:
        return False
    return not (scope == "Cluster" and request.info.namespaced)


def _selector_matches(selector: Any, labels: dict) -> bool:
    if not selector:
        return True
    try:
        return label_selector_from_dict(selector).matches(labels)
    except (SelectorError, AttributeError, TypeError):
        return False


class _Webhooks:
    resource = ""
    mutating = False

    def __init__(self, server: Any) -> None:
        self.server = server

    def handles(self, request: AdmissionRequest) -> bool:
        # Webhook configurations themselves are never sent to webhooks (no lock-out), as in Kubernetes.
        return request.group != "admissionregistration.k8s.io" and request.operation in ("CREATE", "UPDATE", "DELETE", "CONNECT")

    async def matching(self, request: AdmissionRequest) -> list[dict]:
        found = []
        configs = await list_objects(self.server, self.resource, None)
        if configs:
            await request.load_old()
        for config in configs:
            for hook in config.get("webhooks") or ():
                if isinstance(hook, dict) and self._matches(hook, request):
                    found.append(hook)
        return found

    def _matches(self, hook: dict, request: AdmissionRequest) -> bool:
        if not any(isinstance(rule, dict) and rule_matches(rule, request) for rule in hook.get("rules") or ()):
            return False
        if request.info.namespaced:
            namespace = self.server.registry.namespaces.get(request.namespace) or {}
            if not _selector_matches(hook.get("namespaceSelector"), (namespace.get("metadata") or {}).get("labels") or {}):
                return False
        elif request.resource == "namespaces" and not _selector_matches(hook.get("namespaceSelector"), request.labels):
            return False
        old_labels = ((request.old or {}).get("metadata") or {}).get("labels") or {}
        new_labels = ((request.object or {}).get("metadata") or {}).get("labels") or {}
        selector = hook.get("objectSelector")
        return _selector_matches(selector, new_labels) or (request.old is not None and _selector_matches(selector, old_labels))

    def review(self, hook: dict, request: AdmissionRequest) -> dict:
        info = request.info
        user = request.user
        kind = {"group": info.group, "version": info.version, "kind": info.kind}
        resource = {"group": info.group, "version": info.version, "resource": info.plural}
        body: dict[str, Any] = {
            "uid": str(uuid.uuid4()),
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": request.name or ((request.object or {}).get("metadata") or {}).get("name") or "",
            "operation": request.operation,
            "userInfo": {"username": user.name, "groups": list(user.groups)},
            "object": request.object if request.operation != "DELETE" else None,
            "oldObject": request.old if request.operation in ("UPDATE", "DELETE") else None,
            "dryRun": request.dry_run,
            "options": None,
        }
        if request.subresource:
            body["subResource"] = request.subresource
        if request.namespace:
            body["namespace"] = request.namespace
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": body}

    async def call(self, hook: dict, request: AdmissionRequest) -> dict | None:
        """The webhook's `response`, or None when it failed and failurePolicy is Ignore."""
        name = hook.get("name", "")
        try:
            return await self._call(hook, request)
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError, ssl.SSLError) as error:
            if hook.get("failurePolicy", "Fail") == "Ignore":
                log.warning("admission webhook %s failed (ignored): %s", name, error)
                return None
            raise InternalError(f'Internal error occurred: failed calling webhook "{name}": {error}') from None

    async def _call(self, hook: dict, request: AdmissionRequest) -> dict:
        config = hook.get("clientConfig") or {}
        url = config.get("url") or await self._service_url(config.get("service") or {})
        context = ssl.create_default_context()
        bundle = config.get("caBundle")
        if bundle:
            context = ssl.create_default_context(cadata=base64.b64decode(bundle).decode())
        timeout = min(int(hook.get("timeoutSeconds") or 10), 30)
        review = self.review(hook, request)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
            async with session.post(url, data=orjson.dumps(review), ssl=context,
                                    headers={"Content-Type": "application/json"}) as reply:
                if reply.status != 200:
                    raise ValueError(f"the webhook answered HTTP {reply.status}")
                answer = orjson.loads(await reply.read())
        response = answer.get("response") if isinstance(answer, dict) else None
        if not isinstance(response, dict) or response.get("uid") != review["request"]["uid"]:
            raise ValueError("the webhook's AdmissionReview has no response for this request (uid mismatch)")
        return response

    async def _service_url(self, service: dict) -> str:
        namespace, name = service.get("namespace") or "", service.get("name") or ""
        port = service.get("port") or 443
        path = service.get("path") or "/"
        info = self.server.kinds.by_resource("v1/endpoints")
        try:
            endpoints = await self.server.registry.get(info, namespace, name)
        except ApiError:
            raise ValueError(f"service {namespace}/{name} has no endpoints") from None
        for subset in endpoints.get("subsets") or ():
            for address in subset.get("addresses") or ():
                target = port
                for p in subset.get("ports") or ():
                    target = p.get("port", target)
                    break
                return f"https://{address['ip']}:{target}{path}"
        raise ValueError(f"service {namespace}/{name} has no ready endpoints")

    def verdict(self, hook: dict, response: dict, request: AdmissionRequest) -> None:
        for warning in response.get("warnings") or ():
            request.warnings.append(str(warning))
        for key, value in (response.get("auditAnnotations") or {}).items():
            request.audit_annotations[f"{hook.get('name', '')}/{key}"] = str(value)
        if response.get("allowed") is True:
            return
        status = response.get("status") or {}
        message = status.get("message") or ""
        code = status.get("code") or 403
        if not isinstance(code, int) or not 400 <= code < 600:
            code = 403
        text = f'admission webhook "{hook.get("name", "")}" denied the request' + (f": {message}" if message else " without explanation")
        raise ApiError(text, code=code, reason=status.get("reason") or ("Forbidden" if code == 403 else "BadRequest"))


class MutatingWebhooks(_Webhooks):
    name = "MutatingAdmissionWebhook"
    resource = MUTATING
    mutating = True

    async def admit(self, request: AdmissionRequest) -> None:
        for hook in await self.matching(request):
            response = await self.call(hook, request)
            if response is None:
                continue
            self.verdict(hook, response, request)
            patch = response.get("patch")
            if not patch or request.object is None:
                continue
            if response.get("patchType", "JSONPatch") != "JSONPatch":
                raise InternalError(f'webhook "{hook.get("name")}" answered an unsupported patchType')
            try:
                ops = orjson.loads(base64.b64decode(patch))
                patched = json_patch(request.object, ops)
            except (ValueError, PatchError, orjson.JSONDecodeError) as error:
                raise InternalError(f'Internal error occurred: webhook "{hook.get("name")}" returned an invalid patch: {error}') from None
            request.object.clear()
            request.object.update(patched)


class ValidatingWebhooks(_Webhooks):
    name = "ValidatingAdmissionWebhook"
    resource = VALIDATING

    async def admit(self, request: AdmissionRequest) -> None:
        hooks = await self.matching(request)
        if not hooks:
            return
        responses = await asyncio.gather(*(self.call(hook, request) for hook in hooks))
        for hook, response in zip(hooks, responses, strict=True):
            if response is not None:
                self.verdict(hook, response, request)
