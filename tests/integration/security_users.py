"""Users for the security tests: kubeconfigs with client certificates signed by the cluster CA,
static tokens, or ServiceAccount tokens, and a kubectl runner per kubeconfig."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from tests.conftest import kubectl_path

from pinnace.apiserver import certs


def _kubeconfig(server: Any, path: Path, user: dict) -> Path:
    ca = base64.b64encode(server.ca_path.read_bytes()).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pinnace", "cluster": {"server": server.url, "certificate-authority-data": ca}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "c", "context": {"cluster": "pinnace", "user": "u", "namespace": "default"}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def cert_kubeconfig(server: Any, directory: Path, name: str, groups: tuple[str, ...] = ()) -> Path:
    ca_cert, ca_key = certs.load_ca(server.certs)
    cert, key = certs.issue(ca_cert, ca_key, name, organizations=groups)
    user = {"client-certificate-data": base64.b64encode(cert).decode(),
            "client-key-data": base64.b64encode(key).decode()}
    return _kubeconfig(server, directory / f"{name.replace(':', '_')}.kubeconfig", user)


def token_kubeconfig(server: Any, directory: Path, label: str, token: str) -> Path:
    return _kubeconfig(server, directory / f"{label.replace(':', '_')}.kubeconfig", {"token": token})


def kubectl_as(config: Path, tmp: Path):
    home = tmp / "home"
    home.mkdir(exist_ok=True)

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess:
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "KUBECONFIG": str(config)}
        command = [kubectl_path(), f"--kubeconfig={config}", f"--cache-dir={tmp / 'cache'}", *args]
        return subprocess.run(command, input=input, capture_output=True, text=True, timeout=60, env=env)

    return run
