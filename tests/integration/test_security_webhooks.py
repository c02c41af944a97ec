"""Admission webhooks over HTTPS: a small AdmissionReview v1 server in the test that denies, one that
mutates with a JSON patch, failurePolicy, and selectors."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web

from pinnace.apiserver import certs


class WebhookServer:
    """HTTPS on 127.0.0.1 with a certificate from the cluster CA; records the reviews it got."""

    def __init__(self, api_server, directory: Path) -> None:
        ca_cert, ca_key = certs.load_ca(api_server.certs)
        cert, key = certs.issue(ca_cert, ca_key, "webhook", ip_addresses=("127.0.0.1",), server=True)
        (directory / "hook.crt").write_bytes(cert)
        (directory / "hook.key").write_bytes(key)
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(directory / "hook.crt", directory / "hook.key")
        self.ca_bundle = base64.b64encode(api_server.ca_path.read_bytes()).decode()
        self.reviews: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.port = 0

    async def _validate(self, request: web.Request) -> web.Response:
        review = orjson.loads(await request.read())
        self.reviews.append(review)
        obj = review["request"]["object"] or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        allowed = labels.get("deny") != "yes"
        response = {"uid": review["request"]["uid"], "allowed": allowed}
        if not allowed:
            response["status"] = {"code": 403, "message": "configmaps labelled deny=yes are not welcome"}
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})

    async def _mutate(self, request: web.Request) -> web.Response:
        review = orjson.loads(await request.read())
        self.reviews.append(review)
        obj = review["request"]["object"] or {}
        ops = []
        if not (obj.get("metadata") or {}).get("labels"):
            ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
        ops.append({"op": "add", "path": "/metadata/labels/mutated-by", "value": "hook"})
        patch = base64.b64encode(json.dumps(ops).encode()).decode()
        response = {"uid": review["request"]["uid"], "allowed": True, "patchType": "JSONPatch", "patch": patch,
                    "warnings": ["mutated by the test webhook"]}
        return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})

    async def _slow(self, request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.json_response({})

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/validate", self._validate)
        app.router.add_post("/mutate", self._mutate)
        app.router.add_post("/slow", self._slow)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=self.context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()

    def url(self, path: str) -> str:
        return f"https://127.0.0.1:{self.port}{path}"


@pytest.fixture
def webhook(api_server, tmp_path: Path) -> Iterator[WebhookServer]:
    server = WebhookServer(api_server, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _config(kind: str, name: str, url: str, ca: str, resources: list[str], extra: str = "") -> str:
    return f"""
apiVersion: admissionregistration.k8s.io/v1
kind: {kind}
metadata: {{name: {name}}}
webhooks:
- name: {name}.example.com
  clientConfig: {{url: "{url}", caBundle: "{ca}"}}
  rules: [{{apiGroups: [""], apiVersions: [v1], operations: [CREATE, UPDATE], resources: {json.dumps(resources)}}}]
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 2
{extra}"""


def test_validating_webhook_denies(kubectl, webhook: WebhookServer) -> None:
    config = _config("ValidatingWebhookConfiguration", "deny", webhook.url("/validate"), webhook.ca_bundle, ["configmaps"],
                     "  namespaceSelector: {matchExpressions: [{key: skip-webhooks, operator: DoesNotExist}]}\n")
    assert kubectl("apply", "-f", "-", input=config).returncode == 0
    assert kubectl("create", "configmap", "fine").returncode == 0
    denied = kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, labels: {deny: 'yes'}}\n")
    assert denied.returncode != 0
    assert 'admission webhook "deny.example.com" denied the request: configmaps labelled deny=yes are not welcome' in denied.stderr
    review = webhook.reviews[-1]["request"]
    assert review["operation"] == "CREATE" and review["resource"] == {"group": "", "version": "v1", "resource": "configmaps"}
    assert review["userInfo"]["username"] == "system:admin" and review["namespace"] == "default"
    # The namespace selector keeps the webhook out of namespaces that opt out.
    assert kubectl("create", "namespace", "quiet").returncode == 0
    assert kubectl("label", "namespace", "quiet", "skip-webhooks=1").returncode == 0
    allowed = kubectl("apply", "-n", "quiet", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: bad, labels: {deny: 'yes'}}\n")
    assert allowed.returncode == 0, allowed.stderr


def test_mutating_webhook_patches(kubectl, webhook: WebhookServer) -> None:
    config = _config("MutatingWebhookConfiguration", "label", webhook.url("/mutate"), webhook.ca_bundle, ["secrets"])
    assert kubectl("apply", "-f", "-", input=config).returncode == 0
    created = kubectl("create", "secret", "generic", "s1", "--from-literal=a=b")
    assert created.returncode == 0, created.stderr
    assert "mutated by the test webhook" in created.stderr  # a Warning header
    secret = json.loads(kubectl("get", "secret", "s1", "-o", "json").stdout)
    assert secret["metadata"]["labels"] == {"mutated-by": "hook"}


def test_failure_policy(kubectl, webhook: WebhookServer) -> None:
    ignore = _config("ValidatingWebhookConfiguration", "gone", "https://127.0.0.1:1/nothing", webhook.ca_bundle,
                     ["services"], "  failurePolicy: Ignore\n")
    fail = _config("ValidatingWebhookConfiguration", "slow", webhook.url("/slow"), webhook.ca_bundle,
                   ["endpoints"], "  failurePolicy: Fail\n")
    assert kubectl("apply", "-f", "-", input=ignore + "---" + fail).returncode == 0
    ok = kubectl("create", "service", "clusterip", "svc", "--tcp=80:80")
    assert ok.returncode == 0, ok.stderr
    timed_out = kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: Endpoints\nmetadata: {name: ep}\n")
    assert timed_out.returncode != 0 and 'failed calling webhook "slow.example.com"' in timed_out.stderr
