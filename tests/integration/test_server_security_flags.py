"""`pinnace server` security flags: a static token file, an audit policy and log, Secrets encrypted at
rest with an EncryptionConfiguration, each in kube-apiserver's file format, through real kubectl."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.timeout(120)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_server(tmp_path: Path, data_dir: Path, *flags: str) -> Iterator[Callable[..., subprocess.CompletedProcess]]:
    """`pinnace server` with `flags` on a free port; yields kubectl (its admin kubeconfig, a cache of its own)."""
    server = subprocess.Popen(
        [sys.executable, "-m", "pinnace", "server", "--data-dir", str(data_dir), "--port", str(free_port()),
         "--bind-address", "127.0.0.1", *flags],
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

        def kubectl(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
            return subprocess.run(["kubectl", *cache, *args], env=env, capture_output=True, text=True, timeout=60,
                                  input=input)

        yield kubectl
    finally:
        server.terminate()
        server.wait(30)


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
    data_dir, audit_log = tmp_path / "data", tmp_path / "audit.log"
    with running_server(tmp_path, data_dir, "--no-controllers", "--token-auth-file", str(tokens),
                        "--audit-policy-file", str(policy), "--audit-log-path", str(audit_log),
                        "--encryption-provider-config", str(encryption)) as kubectl:
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


def test_a_missing_security_file_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pinnace", "server", "--data-dir", str(tmp_path), "--port", str(free_port()),
         "--audit-policy-file", str(tmp_path / "nope.yaml")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1
    assert "--audit-policy-file" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flags", "named"), [
    (["--enable-admission-plugins=NodeRestriction,AlwaysPullImages"], "AlwaysPullImages is not implemented by pinnace"),
    (["--enable-admission-plugins", "Bogus"], 'enable-admission-plugins plugin "Bogus" is unknown'),
    (["--disable-admission-plugins=LimitRanger,Nope"], 'disable-admission-plugins plugin "Nope" is unknown'),
    (["--enable-admission-plugins=Priority", "--disable-admission-plugins=Priority"], "[Priority] in enable"),
    (["--disable-admission-plugins=NamespaceLifecycle"], '"NamespaceLifecycle" cannot be disabled in pinnace'),
    (["--leader-elect-lease-duration=5s"], "must be greater than --leader-elect-renew-deadline (10s)"),
])
def test_bad_admission_and_leader_election_flags_are_clear_startup_errors(tmp_path: Path, flags, named) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pinnace", "server", "--data-dir", str(tmp_path), "--port", str(free_port()),
         "--bind-address", "127.0.0.1", *flags],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 1, result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "kubeconfig.yaml").exists()  # refused before anything started


def test_bad_duration_syntax_is_a_usage_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pinnace", "server", "--data-dir", str(tmp_path), "--leader-elect-retry-period=2"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert 'time: missing unit in duration "2"' in result.stderr


def test_admission_plugins_and_lease_timing_from_flags(tmp_path: Path) -> None:
    """`--disable-admission-plugins=LimitRanger` stops LimitRange defaults; the in-process scheduler's
    and controller manager's Leases carry `--leader-elect-lease-duration`."""
    data_dir = tmp_path / "data"
    with running_server(tmp_path, data_dir, "--disable-admission-plugins=LimitRanger",
                        "--enable-admission-plugins", "AlwaysAdmit", "--leader-elect-lease-duration=4s",
                        "--leader-elect-renew-deadline=3s", "--leader-elect-retry-period=500ms") as kubectl:
        leases: dict[str, dict] = {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(leases) < 2:
            for name in ("kube-scheduler", "kube-controller-manager"):
                got = kubectl("get", "lease", name, "-n", "kube-system", "-o", "json")
                if got.returncode == 0 and json.loads(got.stdout)["spec"].get("holderIdentity"):
                    leases[name] = json.loads(got.stdout)
            time.sleep(0.2)
        assert set(leases) == {"kube-scheduler", "kube-controller-manager"}
        assert all(lease["spec"]["leaseDurationSeconds"] == 4 for lease in leases.values())

        limits = ("apiVersion: v1\nkind: LimitRange\nmetadata: {name: d}\n"
                  "spec: {limits: [{type: Container, default: {cpu: 500m}, defaultRequest: {cpu: 100m}}]}\n")
        assert kubectl("apply", "-f", "-", input=limits).returncode == 0
        pod = ("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
               "spec: {containers: [{name: c, image: busybox, command: [sleep, '60']}]}\n")
        created = kubectl("apply", "-f", "-", input=pod)
        assert created.returncode == 0, created.stderr
        spec = json.loads(kubectl("get", "pod", "p", "-o", "json").stdout)["spec"]
        assert not spec["containers"][0].get("resources")
