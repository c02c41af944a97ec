"""`pinnace server` security flags: a static token file, an audit policy and log, Secrets encrypted at
rest with an EncryptionConfiguration, each in kube-apiserver's file format, through real kubectl."""

from __future__ import annotations

import base64
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_static_tokens_audit_and_encryption_from_flags(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text('s3cret-token,alice,1001,"devs"\n')
    policy = tmp_path / "audit-policy.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n")
    key = base64.b64encode(os.urandom(32)).decode()
    encryption = tmp_path / "encryption.yaml"
    encryption.write_text(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
        f"- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: k1\n        secret: {key}\n"
        "  - identity: {}\n"
    )
    data_dir, audit_log, port = tmp_path / "data", tmp_path / "audit.log", free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "pinnace", "server", "--data-dir", str(data_dir), "--port", str(port),
         "--bind-address", "127.0.0.1", "--no-controllers", "--token-auth-file", str(tokens),
         "--audit-policy-file", str(policy), "--audit-log-path", str(audit_log),
         "--encryption-provider-config", str(encryption)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert server.stdout is not None
        for line in server.stdout:
            if line.startswith("admin kubeconfig"):
                break
        else:
            pytest.fail("pinnace server did not start")
        env = {**os.environ, "KUBECONFIG": str(data_dir / "kubeconfig.yaml")}
        cache = ["--cache-dir", str(tmp_path / "kube-cache")]

        def kubectl(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run(["kubectl", *cache, *args], env=env, capture_output=True, text=True, timeout=60)

        created = kubectl("create", "secret", "generic", "db", "--from-literal=password=hunter2-plaintext")
        assert created.returncode == 0, created.stderr
        whoami = kubectl("auth", "whoami", "--token", "s3cret-token", "-o", "json")
        assert whoami.returncode == 0, whoami.stderr
        assert json.loads(whoami.stdout)["status"]["userInfo"]["username"] == "alice"
        denied = kubectl("get", "secrets", "--token", "s3cret-token")
        assert denied.returncode != 0 and 'User "alice" cannot list resource "secrets"' in denied.stderr

        # Audit: JSON lines of audit.k8s.io/v1 Events naming user, verb and response code.
        deadline = time.monotonic() + 10
        events: list[dict] = []
        while time.monotonic() < deadline:
            if audit_log.exists():
                events = [json.loads(line) for line in audit_log.read_text().splitlines() if line.strip()]
                if any(e.get("user", {}).get("username") == "alice" and e.get("verb") == "list" for e in events):
                    break
            time.sleep(0.1)
        alice = [e for e in events if e.get("user", {}).get("username") == "alice" and e.get("verb") == "list"]
        assert alice and alice[0]["kind"] == "Event" and alice[0]["responseStatus"]["code"] == 403

        # Encryption at rest: the Secret reads back, and the store file does not hold its value.
        shown = kubectl("get", "secret", "db", "-o", "jsonpath={.data.password}")
        assert base64.b64decode(shown.stdout).decode() == "hunter2-plaintext"
        stored = b"".join(
            bytes(row[0]) for row in sqlite3.connect(data_dir / "state.db").execute("select value from log where value is not null")
        ) if (data_dir / "state.db").exists() else b""
        assert stored and b"hunter2-plaintext" not in stored and base64.b64encode(b"hunter2-plaintext") not in stored
    finally:
        server.terminate()
        server.wait(30)


def test_a_missing_security_file_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pinnace", "server", "--data-dir", str(tmp_path), "--port", str(free_port()),
         "--audit-policy-file", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "--audit-policy-file" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
