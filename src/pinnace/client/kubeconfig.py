"""Kubeconfig loading: which server, which credentials, which namespace.

Follows kubectl's rules: the files named in `KUBECONFIG` (separated by `os.pathsep`) are merged, the first
file to define a name (cluster, user, context) or `current-context` wins; without `KUBECONFIG`,
`~/.kube/config` is used. Relative file paths inside a kubeconfig are relative to that file. Credentials may
be given inline (`*-data`, base64) or as files; `token-file` is read at load time. Exec and auth-provider
plugins are not supported (pinnace issues tokens and certificates itself).
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class KubeconfigError(Exception):
    """The kubeconfig is missing, malformed, or lacks the named context."""


@dataclass
class ClientConfig:
    """Everything the REST client needs to reach one API server as one user."""

    server: str
    token: str | None = None
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_file: str | None = None
    cert_data: bytes | None = None
    key_file: str | None = None
    key_data: bytes | None = None
    insecure: bool = False
    username: str | None = None
    password: str | None = None
    namespace: str = "default"
    tls_server_name: str | None = None

    def ssl_context(self) -> ssl.SSLContext | bool | None:
        """The TLS settings for aiohttp: None for plain HTTP, False to skip verification, else a context."""
        if not self.server.startswith("https"):
            return None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_data:
            context.load_verify_locations(cadata=self.ca_data.decode())
        elif self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        if self.cert_data or self.cert_file:
            _load_client_cert(context, self)
        return context


def _load_client_cert(context: ssl.SSLContext, config: ClientConfig) -> None:
    # ssl can only load a certificate chain from files, so inline data goes through private temp files
    # that are removed as soon as they are loaded.
    paths: list[str] = []
    try:
        cert_path = config.cert_file
        key_path = config.key_file
        if config.cert_data:
            cert_path = _private_temp(config.cert_data, paths)
        if config.key_data:
            key_path = _private_temp(config.key_data, paths)
        context.load_cert_chain(cert_path, key_path)  # type: ignore[arg-type]
    finally:
        for path in paths:
            os.unlink(path)


def _private_temp(data: bytes, paths: list[str]) -> str:
    fd, path = tempfile.mkstemp(prefix="pinnace-tls-")
    paths.append(path)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return path


def default_kubeconfig_paths() -> list[Path]:
    env = os.environ.get("KUBECONFIG")
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [Path.home() / ".kube" / "config"]


def _named(items: list[dict[str, Any]] | None, base: Path, into: dict[str, tuple[dict[str, Any], Path]], field: str) -> None:
    for item in items or []:
        name = item.get("name")
        if name is not None and name not in into:
            into[name] = (item.get(field) or {}, base)


def load_kubeconfig(path: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None,
                    context: str | None = None) -> ClientConfig:
    """Merge the kubeconfig file(s) and resolve `context` (default: `current-context`)."""
    if path is None:
        paths = default_kubeconfig_paths()
    elif isinstance(path, list):
        paths = [Path(p).expanduser() for p in path]
    else:
        paths = [Path(p).expanduser() for p in str(path).split(os.pathsep) if p]
    clusters: dict[str, tuple[dict[str, Any], Path]] = {}
    users: dict[str, tuple[dict[str, Any], Path]] = {}
    contexts: dict[str, tuple[dict[str, Any], Path]] = {}
    current: str | None = None
    found = False
    for file in paths:
        if not file.exists():
            # kubectl ignores missing files in KUBECONFIG; it only fails when none exists.
            continue
        found = True
        try:
            doc = yaml.safe_load(file.read_text()) or {}
        except yaml.YAMLError as error:
            raise KubeconfigError(f"{file}: not valid YAML: {error}") from error
        if not isinstance(doc, dict):
            raise KubeconfigError(f"{file}: not a kubeconfig (expected a mapping)")
        base = file.resolve().parent
        _named(doc.get("clusters"), base, clusters, "cluster")
        _named(doc.get("users"), base, users, "user")
        _named(doc.get("contexts"), base, contexts, "context")
        if current is None and doc.get("current-context"):
            current = doc["current-context"]
    if not found:
        raise KubeconfigError(f"no kubeconfig found (looked at {', '.join(str(p) for p in paths)})")
    name = context or current
    if not name:
        if len(contexts) == 1:
            name = next(iter(contexts))
        else:
            raise KubeconfigError("no context given and the kubeconfig has no current-context")
    if name not in contexts:
        raise KubeconfigError(f'context "{name}" not found in kubeconfig')
    ctx, _ = contexts[name]
    cluster_name = ctx.get("cluster")
    if cluster_name not in clusters:
        raise KubeconfigError(f'cluster "{cluster_name}" of context "{name}" not found in kubeconfig')
    cluster, cluster_base = clusters[cluster_name]
    user, user_base = users.get(ctx.get("user") or "", ({}, Path.cwd()))
    server = cluster.get("server")
    if not server:
        raise KubeconfigError(f'cluster "{cluster_name}" has no server')

    def file_of(value: str | None, base: Path) -> str | None:
        if not value:
            return None
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)

    def data_of(value: str | None) -> bytes | None:
        return base64.b64decode(value) if value else None

    token = user.get("token")
    token_file = file_of(user.get("tokenFile") or user.get("token-file"), user_base)
    if not token and token_file:
        token = Path(token_file).read_text().strip()
    return ClientConfig(
        server=server.rstrip("/"),
        token=token,
        ca_file=file_of(cluster.get("certificate-authority"), cluster_base),
        ca_data=data_of(cluster.get("certificate-authority-data")),
        cert_file=file_of(user.get("client-certificate"), user_base),
        cert_data=data_of(user.get("client-certificate-data")),
        key_file=file_of(user.get("client-key"), user_base),
        key_data=data_of(user.get("client-key-data")),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        username=user.get("username"),
        password=user.get("password"),
        namespace=ctx.get("namespace") or "default",
        tls_server_name=cluster.get("tls-server-name"),
    )


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def load_incluster_config(directory: str | os.PathLike[str] | None = None,
                          environ: dict[str, str] | None = None) -> ClientConfig:
    """The configuration of a pod: `KUBERNETES_SERVICE_HOST`/`_PORT` and the mounted service account."""
    env = os.environ if environ is None else environ
    folder = Path(directory) if directory is not None else SERVICE_ACCOUNT_DIR
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeconfigError("not running in a pod: KUBERNETES_SERVICE_HOST/PORT are not set")
    token_file = folder / "token"
    if not token_file.exists():
        raise KubeconfigError(f"no service account token at {token_file}")
    namespace_file = folder / "namespace"
    ca_file = folder / "ca.crt"
    return ClientConfig(
        server=f"https://{_host_for_url(host)}:{port}",
        token=token_file.read_text().strip(),
        ca_file=str(ca_file) if ca_file.exists() else None,
        namespace=namespace_file.read_text().strip() if namespace_file.exists() else "default",
    )


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
