"""TLS: the client verifies the server against the kubeconfig's CA and presents its client certificate."""

import base64
import datetime
import ipaddress
import ssl

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pinnace.client import Client, ConnectionFailed

from .fake_apiserver import FakeApiServer


def make_cert(common_name, issuer_key=None, issuer_name=None, ca=False, server=False):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    elif not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    cert = builder.sign(issuer_key or key, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert_pem, key_pem, key, name


@pytest.fixture
async def tls_server(tmp_path):
    ca_pem, _, ca_key, ca_name = make_cert("test-ca", ca=True)
    server_pem, server_key, _, _ = make_cert("127.0.0.1", ca_key, ca_name, server=True)
    client_pem, client_key, _, _ = make_cert("admin", ca_key, ca_name)
    (tmp_path / "ca.crt").write_bytes(ca_pem)
    (tmp_path / "server.crt").write_bytes(server_pem)
    (tmp_path / "server.key").write_bytes(server_key)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    context.load_verify_locations(tmp_path / "ca.crt")
    context.verify_mode = ssl.CERT_REQUIRED
    server = FakeApiServer()
    await start_tls(server, context)
    yield server, ca_pem, client_pem, client_key
    await server.stop()


async def start_tls(server, context):
    from aiohttp import web

    from .fake_apiserver import free_port

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    server.runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
    await server.runner.setup()
    port = free_port()
    await web.TCPSite(server.runner, "127.0.0.1", port, ssl_context=context).start()
    server.url = f"https://127.0.0.1:{port}"


def kubeconfig(path, server, ca_pem, client_pem, client_key):
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    path.write_text(yaml.safe_dump({
        "clusters": [{"name": "c", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": "u", "user": {"client-certificate-data": b64(client_pem), "client-key-data": b64(client_key)}}],
        "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "ctx",
    }))
    return path


async def test_client_certificate_and_ca_data_from_kubeconfig(tls_server, tmp_path):
    server, ca_pem, client_pem, client_key = tls_server
    client = await Client.from_kubeconfig(kubeconfig(tmp_path / "kc", server.url, ca_pem, client_pem, client_key))
    try:
        assert (await client.list("v1/pods"))["kind"] == "PodList"
    finally:
        await client.close()


async def test_unknown_ca_is_refused(tls_server, tmp_path):
    server, _, client_pem, client_key = tls_server
    other_ca, _, _, _ = make_cert("other-ca", ca=True)
    client = await Client.from_kubeconfig(kubeconfig(tmp_path / "kc", server.url, other_ca, client_pem, client_key))
    try:
        with pytest.raises(ConnectionFailed):
            await client.list("v1/pods")
    finally:
        await client.close()
