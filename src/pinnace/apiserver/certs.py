"""The cluster's TLS material, made on first start and kept in the data directory.

- `ca.crt`/`ca.key`: the cluster CA (ECDSA P-256, 10 years). It signs the serving certificate, the
  client certificates of users and node agents, and is what kubeconfigs trust.
- `server.crt`/`server.key`: the API server's serving certificate, with SANs for `localhost`,
  `kubernetes`, `kubernetes.default(.svc(.cluster.local))`, 127.0.0.1, ::1, the Service IP
  10.43.0.1 and this host's addresses. It is re-issued when an address it lacks is needed.
- `admin.token`: the admin bearer token (a random 32-byte secret, URL-safe base64).
Key files are written with mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBERNETES_SERVICE_IP = "10.43.0.1"
DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")


@dataclass(frozen=True)
class ClusterCerts:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    admin_token: str


def host_addresses() -> list[str]:
    """This host's IPv4/IPv6 addresses (best effort; loopback always included)."""
    found = {"127.0.0.1", "::1"}
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            found.add(str(info[4][0]).split("%")[0])
    except OSError:
        pass
    try:
        import psutil

        for addresses in psutil.net_if_addrs().values():
            for address in addresses:
                if address.family in (socket.AF_INET, socket.AF_INET6):
                    found.add(address.address.split("%")[0])
    except ImportError:
        pass
    valid = []
    for address in found:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            continue
        valid.append(address)
    return sorted(valid)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _load_key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def make_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pinnace-ca@{int(datetime.datetime.now().timestamp())}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(directory / "ca.key", _key_pem(key), private=True)
    _write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    dns_names: tuple[str, ...] = (),
    ip_addresses: tuple[str, ...] = (),
    server: bool = False,
    days: int = 365,
) -> tuple[bytes, bytes]:
    """A certificate signed by the cluster CA, as (cert PEM, key PEM). Client certs name the user in CN
    and its groups in O, as Kubernetes' x509 authenticator reads them."""
    key = ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attributes))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _serving_cert_covers(path: Path, addresses: list[str]) -> bool:
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    have = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    expires = cert.not_valid_after_utc
    return set(addresses) <= have and expires > datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=30)


def ensure(directory: Path, extra_addresses: tuple[str, ...] = ()) -> ClusterCerts:
    """Load the cluster's TLS material from `directory`, making what is missing."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key_path = directory / "ca.crt", directory / "ca.key"
    if ca_crt.exists() and ca_key_path.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        ca_key = _load_key(ca_key_path)
    else:
        ca_cert, ca_key = make_ca(directory)
    addresses = sorted({*host_addresses(), KUBERNETES_SERVICE_IP, *extra_addresses} - {"0.0.0.0", "::"})
    server_crt, server_key = directory / "server.crt", directory / "server.key"
    if not (server_key.exists() and _serving_cert_covers(server_crt, addresses)):
        cert_pem, key_pem = issue(
            ca_cert, ca_key, "kube-apiserver", dns_names=(*DNS_NAMES, socket.gethostname()),
            ip_addresses=tuple(addresses), server=True,
        )
        _write(server_key, key_pem, private=True)
        _write(server_crt, cert_pem)
    token_path = directory / "admin.token"
    if token_path.exists():
        token = token_path.read_text().strip()
    else:
        token = secrets.token_urlsafe(32)
        _write(token_path, token.encode() + b"\n", private=True)
    return ClusterCerts(ca_crt, ca_key_path, server_crt, server_key, token)


def load_ca(certs: ClusterCerts) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    return x509.load_pem_x509_certificate(certs.ca_cert.read_bytes()), _load_key(certs.ca_key)
