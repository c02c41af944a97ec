"""Node client CSRs: which requests are node requests, who may get one approved, what gets signed."""

from __future__ import annotations

import base64
import datetime
from types import SimpleNamespace

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pinnace.apiserver import certs
from pinnace.apiserver.csrsigning import (
    CSRRequester,
    key_fingerprint,
    may_request,
    node_subject,
    parse_request,
    sign,
)


def request_pem(cn: str, orgs: tuple[str, ...] = ("system:nodes",), key=None, san: str | None = None) -> bytes:
    key = key or ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attributes))
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def csr(pem: bytes, username: str = "system:bootstrap:node-join", groups=("system:bootstrappers",)) -> dict:
    return {"metadata": {"name": "c"}, "spec": {"request": base64.b64encode(pem).decode(), "username": username,
                                                "groups": list(groups), "usages": ["client auth"]}}


@pytest.mark.parametrize("cn, orgs, san, node", [
    ("system:node:n1", ("system:nodes",), None, "n1"),
    ("system:node:", ("system:nodes",), None, None),  # no node name
    ("system:admin", ("system:nodes",), None, None),
    ("system:node:n1", ("system:masters",), None, None),  # a node may not ask for admin groups
    ("system:node:n1", ("system:nodes", "system:masters"), None, None),
    ("system:node:n1", ("system:nodes",), "evil.example", None),  # client certificates carry no names
])
def test_only_kubelet_client_subjects_are_node_requests(cn, orgs, san, node):
    request = parse_request(csr(request_pem(cn, orgs, san=san)))
    if node is None:
        with pytest.raises(ValueError):
            node_subject(request)
    else:
        assert node_subject(request) == node


@pytest.mark.parametrize("username, groups, allowed", [
    ("system:bootstrap:node-join", ("system:bootstrappers", "system:authenticated"), True),
    ("system:admin", ("system:masters",), True),
    ("system:node:n1", ("system:nodes",), True),  # renewing its own certificate
    ("system:node:n2", ("system:nodes",), False),  # another node's name
    ("alice", ("system:authenticated",), False),
])
def test_who_gets_node_certificates_approved_automatically(username, groups, allowed):
    assert may_request({"spec": {"username": username, "groups": list(groups)}}, "n1") is allowed


def test_a_garbled_request_is_refused():
    with pytest.raises(ValueError):
        parse_request({"spec": {"request": base64.b64encode(b"not a csr").decode()}})


async def test_the_requester_is_recorded_and_a_posted_status_dropped():
    body = csr(request_pem("system:node:n1"), username="system:admin", groups=("system:masters",))
    body["status"] = {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "Zm9v"}
    signer = SimpleNamespace(poke=lambda: None)
    request = SimpleNamespace(object=body, operation="CREATE", subresource="", on_done=[],
                              server=SimpleNamespace(csr_signer=signer),
                              user=SimpleNamespace(name="system:bootstrap:node-join",
                                                   groups=("system:bootstrappers", "system:authenticated")))
    await CSRRequester().admit(request)
    assert request.on_done == [signer.poke]  # the signer looks at it once it is stored
    assert body["spec"]["username"] == "system:bootstrap:node-join"
    assert body["spec"]["groups"] == ["system:bootstrappers", "system:authenticated"]
    assert body["status"] == {}


def test_the_signed_certificate_is_the_requests_key_and_subject_for_client_auth(tmp_path):
    ca_cert, ca_key = certs.make_ca(tmp_path)
    key = ec.generate_private_key(ec.SECP256R1())
    body = csr(request_pem("system:node:n1", key=key))
    body["spec"]["expirationSeconds"] = 3600
    request = parse_request(body)
    cert = x509.load_pem_x509_certificate(sign(body, request, ca_cert, ca_key))
    assert cert.subject.rfc4514_string() == "CN=system:node:n1,O=system:nodes"
    assert cert.issuer == ca_cert.subject
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == x509.ExtendedKeyUsage(
        [ExtendedKeyUsageOID.CLIENT_AUTH])
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(minutes=50) < lifetime <= datetime.timedelta(hours=1)
    assert key_fingerprint(request) == key_fingerprint(parse_request(csr(request_pem("system:node:x", key=key))))
