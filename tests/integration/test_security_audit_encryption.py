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

