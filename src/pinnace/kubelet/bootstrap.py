"""TLS bootstrap: a node trades the cluster's join token for its own client certificate.

As the kubelet's `--bootstrap-kubeconfig` flow in Kubernetes:
1. The join token `pinnace server` prints is `pn1.<sha256 of the CA certificate (DER), hex>.<secret>`.
   The node fetches the CA from the server's public `/cacerts`, checks it against the hash, and only then
   trusts the server with the secret (so a server in the middle learns nothing). A bare secret works too,
   with `ca_file` (or `insecure`) saying how to trust the server.
2. It makes a private key (kept in `<data_dir>/pki/`, so the node keeps its identity across restarts and
   re-joins) and posts a CertificateSigningRequest for `CN=system:node:<name>, O=system:nodes`, signer
   `kubernetes.io/kube-apiserver-client-kubelet`, authenticated by the secret (group `system:bootstrappers`).
3. The API server approves and signs it (pinnace.apiserver.csrsigning); the node waits for
   `status.certificate`, or fails with the reason if the request was denied (a node name taken by another
   machine, for one).
4. It writes `<data_dir>/kubeconfig.yaml` (CA, certificate and key inline, every server URL) and uses it
   from then on; the next start reuses it without the token while the certificate is valid.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pinnace.client import AlreadyExists, ApiError, Client
from pinnace.client.rest import ConnectionFailed, split_servers

log = logging.getLogger(__name__)

SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
TOKEN_PREFIX = "pn1"
RENEW_BEFORE = datetime.timedelta(days=30)  # re-bootstrap (when a token is at hand) this close to expiry


class BootstrapError(Exception):
    """Joining failed for a reason the user can act on (bad token, CA mismatch, request denied)."""


@dataclass(frozen=True)
class JoinToken:
    secret: str
    ca_hash: str | None = None  # hex sha256 of the CA certificate's DER bytes


def format_token(ca_pem: bytes, secret: str) -> str:
    return f"{TOKEN_PREFIX}.{ca_hash(ca_pem)}.{secret}"


def parse_token(token: str) -> JoinToken:
    parts = token.strip().split(".")
    if len(parts) == 3 and parts[0] == TOKEN_PREFIX and len(parts[1]) == 64:
        return JoinToken(parts[2], parts[1].lower())
    return JoinToken(token.strip())


def ca_hash(ca_pem: bytes) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(ca_pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def kubeconfig_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / "kubeconfig.yaml"


def usable_kubeconfig(data_dir: str | os.PathLike[str]) -> Path | None:
    """The node kubeconfig from an earlier join, if its certificate is still good for a while."""
    path = kubeconfig_path(data_dir)
    try:
        config = yaml.safe_load(path.read_text())
        user = config["users"][0]["user"]
        cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    except (OSError, ValueError, KeyError, IndexError, TypeError, yaml.YAMLError):
        return None
    if cert.not_valid_after_utc - RENEW_BEFORE < datetime.datetime.now(datetime.UTC):
        return None
    return path


async def fetch_ca(servers: list[str], expected_hash: str) -> bytes:
    """The CA certificate from the first server that answers `/cacerts`, checked against the token."""
    unverified = ssl.create_default_context()
    unverified.check_hostname = False
    unverified.verify_mode = ssl.CERT_NONE  # trust comes from the hash, not from this connection
    errors = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        for server in servers:
            try:
                async with session.get(server + "/cacerts", ssl=unverified) as response:
                    body = await response.read()
                    if response.status != 200:
                        errors.append(f"{server}: HTTP {response.status}")
                        continue
            except (aiohttp.ClientError, TimeoutError) as error:
                errors.append(f"{server}: {error or type(error).__name__}")
                continue
            try:
                got = ca_hash(body)
            except ValueError:
                errors.append(f"{server}: /cacerts is not a PEM certificate")
                continue
            if got != expected_hash:
                raise BootstrapError(
                    f"the CA certificate of {server} does not match the join token (sha256 {got}); "
                    "is this the right server and token?"
                )
            return body
    raise BootstrapError("could not fetch the cluster CA: " + "; ".join(errors))


def node_key(directory: Path) -> ec.EllipticCurvePrivateKey:
    """This node's private key, made once: the same key re-joins as the same node."""
    path = directory / "kubelet-client.key"
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return key


def certificate_request(key: ec.EllipticCurvePrivateKey, node_name: str) -> bytes:
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}"),
    ])
    request = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return request.public_bytes(serialization.Encoding.PEM)


def csr_name(node_name: str, request_pem: bytes) -> str:
    # Deterministic per node and key: a node restarted mid-join finds its own request again.
    return f"node-csr-{node_name[:200]}-{hashlib.sha256(request_pem).hexdigest()[:10]}"


async def request_certificate(client: Client, node_name: str, request_pem: bytes, timeout: float = 120.0) -> bytes:
    """Post the CSR (or find it again) and wait until it is signed; the certificate PEM."""
    name = csr_name(node_name, request_pem)
    body = {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"name": name},
        "spec": {"request": base64.b64encode(request_pem).decode(), "signerName": SIGNER,
                 "usages": ["digital signature", "key encipherment", "client auth"]},
    }
    resource = "certificates.k8s.io/v1/certificatesigningrequests"
    try:
        await client.create(resource, body)
    except AlreadyExists:
        pass
    deadline = asyncio.get_running_loop().time() + timeout
    delay = 0.1
    while True:
        # Polling, not a watch: a join happens once, and a poll survives a server failing over.
        try:
            csr = await client.get(resource, name)
        except ConnectionFailed as error:
            log.warning("waiting for the node certificate: %s", error)
            csr = {}
        status = csr.get("status") or {}
        for condition in status.get("conditions") or ():
            if condition.get("type") in ("Denied", "Failed") and condition.get("status", "True") == "True":
                raise BootstrapError(
                    f"the cluster refused the certificate for node {node_name} ({condition.get('reason')}): "
                    f"{condition.get('message')}"
                )
        if status.get("certificate"):
            return base64.b64decode(status["certificate"])
        if asyncio.get_running_loop().time() > deadline:
            raise BootstrapError(
                f"certificate signing request {name} was not signed within {timeout:.0f}s "
                f"(approve it with: kubectl certificate approve {name})"
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def bootstrap(servers: str | list[str], token: str, data_dir: str | os.PathLike[str], node_name: str,
                    *, ca_file: str | None = None, insecure: bool = False) -> Path:
    """Join: the path of a node kubeconfig with this node's own client certificate (see module doc)."""
    urls = split_servers(servers)
    if not urls:
        raise BootstrapError("no API server URL given")
    join = parse_token(token)
    pki = Path(data_dir) / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    ca_pem: bytes | None = None
    if join.ca_hash is not None and ca_file is None and not insecure:
        ca_pem = await fetch_ca(urls, join.ca_hash)
    elif ca_file is not None:
        ca_pem = Path(ca_file).read_bytes()
    elif not insecure:
        raise BootstrapError("the token carries no CA hash: give --ca-file, or use the token `pinnace server` prints")
    ca_path = pki / "ca.crt"
    if ca_pem is not None:
        ca_path.write_bytes(ca_pem)
    key = node_key(pki)
    request_pem = certificate_request(key, node_name)
    client = Client(servers=urls, token=join.secret, ca_file=str(ca_path) if ca_pem else None, insecure=insecure,
                    user_agent=f"pinnace-bootstrap/{node_name}")
    try:
        cert_pem = await request_certificate(client, node_name, request_pem)
    except ApiError as error:
        raise BootstrapError(f"joining as node {node_name} failed: {error}") from error
    finally:
        await client.close()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    cluster: dict = {"server": ",".join(urls)}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    else:
        cluster["insecure-skip-tls-verify"] = True
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "pinnace", "cluster": cluster}],
        "users": [{"name": f"system:node:{node_name}", "user": {
            "client-certificate-data": base64.b64encode(cert_pem).decode(),
            "client-key-data": base64.b64encode(key_pem).decode(),
        }}],
        "contexts": [{"name": "pinnace", "context": {"cluster": "pinnace", "user": f"system:node:{node_name}"}}],
        "current-context": "pinnace",
    }
    path = kubeconfig_path(data_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(yaml.safe_dump(config, sort_keys=False))
    tmp.replace(path)
    log.info("node %s joined: client certificate written to %s", node_name, path)
    return path


async def agent_client(servers: str, token: str | None, data_dir: str | os.PathLike[str], node_name: str,
                       *, ca_file: str | None = None, insecure: bool = False) -> Client:
    """The client `pinnace agent --server URL[,URL...] [--token T]` runs its kubelet with.

    - a node kubeconfig from an earlier join in `data_dir`: its certificate (the token is not needed again);
    - a join token (the `pn1.` form, or any token the server maps to `system:bootstrappers`): join first;
    - any other token (an admin's, say): used as it is, as before joining existed.
    """
    from pinnace.client.kubeconfig import load_kubeconfig

    urls = split_servers(servers)
    path = usable_kubeconfig(data_dir)
    if path is None and token and await _is_join_token(urls, token, ca_file, insecure):
        path = await bootstrap(urls, token, data_dir, node_name, ca_file=ca_file, insecure=insecure)
    if path is not None:
        # The servers given now win over those recorded at join time: a control plane may have grown.
        return Client(servers=urls, config=load_kubeconfig(path), user_agent=f"pinnace-kubelet/{node_name}")
    return Client(servers=urls, token=token, ca_file=ca_file, insecure=insecure, user_agent=f"pinnace-kubelet/{node_name}")


async def _is_join_token(urls: list[str], token: str, ca_file: str | None, insecure: bool) -> bool:
    if parse_token(token).ca_hash is not None:
        return True
    # A bare secret: ask the server who it is (SelfSubjectReview), as `kubectl auth whoami` does.
    async with Client(servers=urls, token=token, ca_file=ca_file, insecure=insecure) as client:
        try:
            review = await client.create("authentication.k8s.io/v1/selfsubjectreviews",
                                         {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        except ApiError:
            return False
    groups = ((review.get("status") or {}).get("userInfo") or {}).get("groups") or []
    return "system:bootstrappers" in groups
