"""Audit events as JSON lines under a policy file, and Secrets encrypted at rest in the SQLite file."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import ServerThread
from tests.integration.security_users import cert_kubeconfig, kubectl_as

from pinnace.apiserver.security import SecurityConfig
from pinnace.apiserver.server import ApiServer, ServerConfig

POLICY = """
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  nonResourceURLs: ["/api*", "/version", "/openapi*"]
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
- level: RequestResponse
  resources: [{group: "", resources: [configmaps]}]
- level: Request
  verbs: [create, update, patch, delete]
- level: Metadata
"""

ENCRYPTION = """
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aesgcm:
      keys: [{{name: key1, secret: {key}}}]
  - identity: {{}}
"""


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[ApiServer]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "encryption.yaml").write_text(ENCRYPTION.format(key=base64.b64encode(os.urandom(32)).decode()))
    security = SecurityConfig(audit_policy_file=str(tmp_path / "policy.yaml"), audit_log_path=str(tmp_path / "audit.log"),
                              encryption_provider_config=str(tmp_path / "encryption.yaml"))
    runner = ServerThread(ServerConfig(data_dir=tmp_path / "server", port=0, bind_address="127.0.0.1",
                                       event_sweep_interval=3600.0, security=security))
    server = runner.start()
    try:
        yield server
    finally:
        runner.stop()


def _events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_audit_lines_and_encrypted_secrets(secured: ApiServer, tmp_path: Path) -> None:
    admin = kubectl_as(secured.kubeconfig_path, tmp_path)
    assert admin("create", "secret", "generic", "db", "--from-literal=password=hunter2-very-secret").returncode == 0
    assert admin("create", "configmap", "settings", "--from-literal=mode=fast").returncode == 0
    shown = admin("get", "secret", "db", "-o", "jsonpath={.data.password}")
    assert base64.b64decode(shown.stdout) == b"hunter2-very-secret"
    mallory = kubectl_as(cert_kubeconfig(secured, tmp_path, "mallory"), tmp_path)
    assert mallory("get", "secret", "db").returncode != 0

    events = _events(tmp_path / "audit.log")
    assert all(e["apiVersion"] == "audit.k8s.io/v1" and e["kind"] == "Event" for e in events)
    assert not any(e["requestURI"].startswith("/api?") or e["requestURI"] == "/api" for e in events)  # level None
    secret_create = next(e for e in events if e["verb"] == "create" and e["objectRef"]["resource"] == "secrets")
    assert secret_create["level"] == "Metadata" and "requestObject" not in secret_create
    assert secret_create["user"]["username"] == "system:admin" and secret_create["responseStatus"]["code"] == 201
    assert secret_create["objectRef"]["namespace"] == "default"
    cm_create = next(e for e in events if e["verb"] == "create" and e["objectRef"]["resource"] == "configmaps")
    assert cm_create["level"] == "RequestResponse"
    assert cm_create["requestObject"]["data"] == {"mode": "fast"} and cm_create["responseObject"]["metadata"]["name"] == "settings"
    denied = next(e for e in events if e["user"]["username"] == "mallory" and e["objectRef"]["resource"] == "secrets")
    assert denied["responseStatus"]["code"] == 403 and denied["verb"] == "get"
    assert denied["annotations"]["authorization.k8s.io/decision"] == "forbid"

    # At rest: the SQLite file never holds the secret's value, only the k8s:enc:aesgcm envelope.
    files = b"".join(p.read_bytes() for p in secured.data_dir.glob("**/*.db*"))
    assert base64.b64encode(b"hunter2-very-secret") not in files and b"hunter2-very-secret" not in files
    assert b"k8s:enc:aesgcm:v1:key1:" in files
    assert b"fast" in files  # configmaps are not encrypted: the check above is meaningful



def _call(server: ApiServer, method: str, path: str, token: str | None = None, body: bytes | None = None) -> int:
    import ssl
    import urllib.error
    import urllib.request

    context = ssl.create_default_context(cafile=str(server.ca_path))
    request = urllib.request.Request(server.url + path, method=method, data=body,
                                     headers={"User-Agent": "audit-test/1.0", "Content-Type": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_failed_authentication_is_audited_as_kube_apiserver_does(secured: ApiServer, tmp_path: Path) -> None:
    """kube-apiserver's WithFailedAuthenticationAudit: the policy is evaluated without a user, and one
    event is written at stage ResponseStarted with `user: {}` and a message naming what was tried."""
    assert _call(secured, "GET", "/api/v1/namespaces/default/pods?limit=5", token="not-a-token") == 401
    assert _call(secured, "GET", "/api/v1/namespaces") == 401
    assert _call(secured, "POST", "/api/v1/namespaces/default/configmaps", token="nope",
                 body=b'{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"}}') == 401
    assert _call(secured, "GET", "/version") == 200  # public: no 401, and the policy says None for it
    assert _call(secured, "GET", "/api", token="bad") == 401  # level None in the policy: no event

    events = [e for e in _events(tmp_path / "audit.log") if e["responseStatus"]["code"] == 401]
    assert len(events) == 3, events
    listing, anonymous, create = events
    assert listing["stage"] == "ResponseStarted" and listing["level"] == "Metadata"
    assert listing["user"] == {}
    assert listing["verb"] == "list" and listing["requestURI"] == "/api/v1/namespaces/default/pods?limit=5"
    assert listing["objectRef"] == {"resource": "pods", "namespace": "default", "apiGroup": "", "apiVersion": "v1"}
    assert listing["responseStatus"] == {"metadata": {}, "message": "Authentication failed, attempted: bearer",
                                         "code": 401}
    assert listing["userAgent"] == "audit-test/1.0" and listing["sourceIPs"] == ["127.0.0.1"]
    assert "annotations" not in listing and "requestObject" not in listing
    assert listing["requestReceivedTimestamp"] <= listing["stageTimestamp"]
    assert anonymous["responseStatus"]["message"] == "Authentication failed, no credentials provided"
    assert anonymous["verb"] == "list" and anonymous["objectRef"]["resource"] == "namespaces"
    # the configmaps rule (RequestResponse) applies, but an unauthenticated body is never read or logged
    assert create["level"] == "RequestResponse" and create["verb"] == "create"
    assert "requestObject" not in create and "responseObject" not in create
    assert create["objectRef"]["resource"] == "configmaps"


def test_rules_naming_users_never_match_a_failed_authentication(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text("""
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: RequestResponse
  users: [system:anonymous]
- level: Request
  userGroups: [system:unauthenticated]
- level: Metadata
  resources: [{group: "", resources: [secrets]}]
  omitStages: [ResponseStarted]
- level: Metadata
  resources: [{group: "", resources: [configmaps]}]
""")
    security = SecurityConfig(audit_policy_file=str(tmp_path / "policy.yaml"), audit_log_path=str(tmp_path / "audit.log"))
    runner = ServerThread(ServerConfig(data_dir=tmp_path / "server", port=0, bind_address="127.0.0.1",
                                       event_sweep_interval=3600.0, security=security))
    server = runner.start()
    try:
        assert _call(server, "GET", "/api/v1/namespaces/default/configmaps/c", token="x") == 401
        assert _call(server, "GET", "/api/v1/namespaces/default/secrets", token="x") == 401  # stage omitted
        assert _call(server, "GET", "/api/v1/namespaces/default/configmaps", token=server.admin_token) == 200
    finally:
        runner.stop()
    events = _events(tmp_path / "audit.log")
    failed = [e for e in events if e["responseStatus"]["code"] == 401]
    assert [(e["level"], e["objectRef"]["name"]) for e in failed] == [("Metadata", "c")]
    assert failed[0]["verb"] == "get" and failed[0]["user"] == {}
    ok = [e for e in events if e["responseStatus"]["code"] == 200]
    assert ok and ok[0]["stage"] == "ResponseComplete" and ok[0]["user"]["username"] == "system:admin"
