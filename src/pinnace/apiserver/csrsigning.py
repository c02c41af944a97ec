"""Node client certificates through CertificateSigningRequests: who asked, approval, signing.

The pieces Kubernetes splits between the CSR REST strategy, kube-controller-manager's `csrapproving`
and `csrsigning` controllers, run here inside the API server because it holds the cluster CA key:

- `CSRRequester` (admission, always on): a new CSR records who asked for it in `spec.username`,
  `spec.uid`, `spec.groups` and `spec.extra`, and starts with an empty status, whatever the body says.
  Approval decisions rest on these fields, so a requester must never choose them.
- `CSRSigner.approve`: a CSR for the signer `kubernetes.io/kube-apiserver-client-kubelet` is approved
  automatically when it is a well-formed node client request (subject `CN=system:node:<name>`,
  `O=system:nodes`, client usages only) made by a bootstrap token (`system:bootstrappers`), by a cluster
  admin (`system:masters`), or by the node itself renewing (`spec.username` equals the subject). Kubernetes
  checks the same through SubjectAccessReviews on `certificatesigningrequests/nodeclient`; pinnace keeps
  the fixed rule. A node name already joined with another key is refused (Denied, `NodeNameInUse`) while
  that Node exists: node names are unique, and a second machine cannot take over the first's identity.
- `CSRSigner.sign`: an Approved CSR for that signer gets `status.certificate`, signed by the cluster CA,
  valid for `spec.expirationSeconds` (default one year). A request whose subject is not a node's is marked
  Failed, whoever approved it.

The signer keeps no watch open (CSRs are rare): admission wakes it after every CSR create or approval on
this server, and it looks over all CSRs every `resync_seconds` too, for requests another server took in
and did not finish. With several API servers (HA) every server runs a signer; writes are compare-and-swap
on the CSR's resourceVersion, so exactly one of them approves and signs each request.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import logging
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pinnace.apiserver import certs as certificates
from pinnace.apiserver.errors import ApiError, Conflict, NotFound
from pinnace.store import StoreError

log = logging.getLogger(__name__)

RESOURCE = "certificates.k8s.io/v1/certificatesigningrequests"
KUBELET_CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
NODE_PREFIX = "system:node:"
NODE_GROUP = "system:nodes"
# Usages a kubelet client certificate may carry (Kubernetes' csrsigning allows the same set).
CLIENT_USAGES = frozenset({"digital signature", "key encipherment", "client auth"})
DEFAULT_SECONDS = 365 * 24 * 3600


class CSRRequester:
    """Admission: stamp the requester into a new CSR and drop any status it was posted with; wake this
    server's signer once a CSR was created or approved."""

    name = "CertificateSigningRequestRequester"
    mutating = True

    def handles(self, request: Any) -> bool:
        return request.info.name == RESOURCE and request.operation in ("CREATE", "UPDATE")

    async def admit(self, request: Any) -> None:
        signer = getattr(request.server, "csr_signer", None)
        if signer is not None:
            request.on_done.append(signer.poke)
        if request.operation != "CREATE" or request.subresource:
            return
        csr = request.object
        if not isinstance(csr, dict):
            return
        spec = csr.setdefault("spec", {})
        user = request.user
        spec["username"] = user.name
        spec["groups"] = list(user.groups)
        spec.pop("uid", None)
        spec.pop("extra", None)
        csr["status"] = {}


def now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(csr: dict, kind: str) -> dict | None:
    for item in (csr.get("status") or {}).get("conditions") or ():
        if item.get("type") == kind and item.get("status", "True") == "True":
            return item
    return None


def parse_request(csr: dict) -> x509.CertificateSigningRequest:
    """The PKCS#10 request in `spec.request` (base64 of PEM), signature checked; ValueError if bad."""
    try:
        pem = base64.b64decode((csr.get("spec") or {}).get("request") or "", validate=True)
        request = x509.load_pem_x509_csr(pem)
    except (ValueError, TypeError) as error:
        raise ValueError(f"spec.request is not a PEM certificate request: {error}") from None
    if not request.is_signature_valid:
        raise ValueError("the certificate request's signature does not match its key")
    return request


def node_subject(request: x509.CertificateSigningRequest) -> str:
    """The node name a request asks a kubelet client certificate for; ValueError when it is not one."""
    names = request.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = [str(a.value) for a in request.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    common_name = str(names[0].value) if len(names) == 1 else ""
    if not common_name.startswith(NODE_PREFIX) or len(common_name) == len(NODE_PREFIX):
        raise ValueError(f'subject CN must be "system:node:<nodeName>", not {common_name!r}')
    if orgs != [NODE_GROUP]:
        raise ValueError(f'subject O must be exactly ["system:nodes"], not {orgs!r}')
    if len(request.subject.rdns) != 2:
        raise ValueError("subject may hold only CN and O")
    with contextlib.suppress(x509.ExtensionNotFound):
        sans = request.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if list(sans):
            raise ValueError("a client certificate request may not carry subject alternative names")
    return common_name[len(NODE_PREFIX):]


def key_fingerprint(request: x509.CertificateSigningRequest) -> str:
    der = request.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def sign(csr: dict, request: x509.CertificateSigningRequest, ca_cert: x509.Certificate, ca_key: Any) -> bytes:
    """A client certificate for the request's key and subject, signed by the cluster CA (PEM)."""
    seconds = int((csr.get("spec") or {}).get("expirationSeconds") or DEFAULT_SECONDS)
    seconds = max(600, min(seconds, DEFAULT_SECONDS))  # Kubernetes' minimum is 10 minutes
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(request.subject)
        .issuer_name(ca_cert.subject)
        .public_key(request.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clocks a little behind
        .not_valid_after(now + datetime.timedelta(seconds=seconds))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def pending(csr: dict) -> bool:
    """A request of the kubelet client signer that still waits for approval or a certificate."""
    if (csr.get("spec") or {}).get("signerName") != KUBELET_CLIENT_SIGNER:
        return False
    if (csr.get("status") or {}).get("certificate"):
        return False
    return condition(csr, "Denied") is None and condition(csr, "Failed") is None


def may_request(csr: dict, node: str) -> bool:
    """Whether the requester may obtain a client certificate for `node` without a human approving."""
    spec = csr.get("spec") or {}
    groups = set(spec.get("groups") or ())
    if "system:bootstrappers" in groups or "system:masters" in groups:
        return True
    return spec.get("username") == NODE_PREFIX + node and NODE_GROUP in groups  # a node renewing itself


class CSRSigner:
    """Approves and signs node client CSRs; one per API server, following the CSR watch cache."""

    def __init__(self, server: Any, resync_seconds: float = 30.0) -> None:
        self.server = server
        self.resync_seconds = resync_seconds
        self.info = server.kinds.by_resource(RESOURCE)
        self.nodes = server.kinds.by_resource("v1/nodes")
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.server.csr_signer = self  # found by CSRRequester, which pokes it
        self.wake.set()  # requests left from before a restart
        self.task = asyncio.create_task(self._work(), name="csr signer")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None

    def poke(self) -> None:
        self.wake.set()
        # Once more a moment later, in case the poke came before the write it announces was stored.
        asyncio.get_running_loop().call_later(0.2, self.wake.set)

    async def _csrs(self) -> list[dict]:
        page = await self.server.registry.list_page(self.info, None, revision=None, limit=0, continue_token=None)
        return list(page.items)

    async def _work(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), self.resync_seconds)
            self.wake.clear()
            try:
                csrs = await self._csrs()
            except (ApiError, StoreError) as error:
                log.warning("listing certificate signing requests failed: %s", error)
                continue
            for csr in csrs:
                if not pending(csr):
                    continue
                await self._handle_with_retries(csr["metadata"]["name"])

    async def _handle_with_retries(self, name: str) -> None:
        # Handling a request twice changes nothing: every step re-reads it and checks its state.
        for attempt in range(5):
            try:
                await self.handle(name)
                return
            except Conflict:
                await asyncio.sleep(0.05 * (attempt + 1))  # another server got there first: look again
            except NotFound:
                return
            except (ApiError, StoreError) as error:
                log.warning("certificate signing request %s: %s", name, error)
                await asyncio.sleep(0.5 * (attempt + 1))

    async def handle(self, name: str) -> None:
        registry = self.server.registry
        csr = await registry.get(self.info, None, name)
        spec = csr.get("spec") or {}
        status = csr.get("status") or {}
        if spec.get("signerName") != KUBELET_CLIENT_SIGNER or status.get("certificate"):
            return
        if condition(csr, "Denied") or condition(csr, "Failed"):
            return
        try:
            request = parse_request(csr)
            node = node_subject(request)
            usages = set(spec.get("usages") or ())
            if not usages or not usages <= CLIENT_USAGES or "client auth" not in usages:
                raise ValueError(f"usages must be client auth (with digital signature, key encipherment), not {sorted(usages)}")
        except ValueError as error:
            if condition(csr, "Approved"):
                await self._set_condition(csr, "Failed", "SignerValidationFailure", str(error))
            return  # not a node client request: left for a human (kubectl certificate approve/deny)
        if not condition(csr, "Approved"):
            if not may_request(csr, node):
                return
            holder = await self._other_key_for(node, key_fingerprint(request), name)
            if holder is not None:
                await self._set_condition(
                    csr, "Denied", "NodeNameInUse",
                    f'node "{node}" has already joined with another key (certificate signing request '
                    f'{holder}); choose another node name, or delete the Node "{node}" first',
                )
                return
            csr = await self._set_condition(csr, "Approved", "AutoApproved",
                                            "Auto approving kubelet client certificate after the bootstrap token was checked.")
        ca_cert, ca_key = await asyncio.to_thread(certificates.load_ca, self.server.certs)
        pem = sign(csr, request, ca_cert, ca_key)
        csr.setdefault("status", {})["certificate"] = base64.b64encode(pem).decode()
        await registry.update(self.info, None, name, csr, subresource="status")
        log.info("signed a client certificate for node %s (certificate signing request %s)", node, name)

    async def _other_key_for(self, node: str, fingerprint: str, own: str) -> str | None:
        """The name of a signed CSR that gave `node` a different key, while that Node exists."""
        try:
            await self.server.registry.get(self.nodes, None, node)
        except NotFound:
            return None  # the node left (or never registered): its name is free again
        for other in await self._csrs():
            if other["metadata"]["name"] == own or not (other.get("status") or {}).get("certificate"):
                continue
            if (other.get("spec") or {}).get("signerName") != KUBELET_CLIENT_SIGNER:
                continue
            try:
                request = parse_request(other)
                if node_subject(request) == node and key_fingerprint(request) != fingerprint:
                    return str(other["metadata"]["name"])
            except ValueError:
                continue
        return None

    async def _set_condition(self, csr: dict, kind: str, reason: str, message: str) -> dict:
        stamp = now_iso()
        status = csr.setdefault("status", {})
        conditions = [c for c in status.get("conditions") or () if c.get("type") != kind]
        conditions.append({"type": kind, "status": "True", "reason": reason, "message": message,
                           "lastUpdateTime": stamp, "lastTransitionTime": stamp})
        status["conditions"] = conditions
        updated, _ = await self.server.registry.update(self.info, None, csr["metadata"]["name"], csr, subresource="status")
        return updated
