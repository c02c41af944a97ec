"""ServiceAccount tokens: signed JWTs from TokenRequest, and authentication with them.

`POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token` (what `kubectl create token` sends)
returns a JWT signed with ES256 under a key kept in the data directory (`pki/sa-signer.key`). Claims
follow Kubernetes' bound service account tokens: `iss`, `sub`
(`system:serviceaccount:<ns>:<name>`), `aud`, `exp`, `iat`, `nbf`, `jti` and a `kubernetes.io` claim
naming the namespace, the service account (name, uid) and, when `spec.boundObjectRef` names one, the
Pod (name, uid) or Secret the token is bound to. Expiry: `spec.expirationSeconds` (at least 600, at most
48 hours; one hour by default).

A token authenticates only while it has not expired, its signature holds, one of its audiences is the
API server's, its ServiceAccount still exists with the same uid and, when bound, the Pod still exists
with the same uid (checked on every request; deleting the pod revokes the token).

For the node agent: the projected `serviceAccountToken` volume source is served by calling this same
TokenRequest with `boundObjectRef: {kind: Pod, apiVersion: v1, name, uid}` and
`audiences`/`expirationSeconds` from the volume source (`issue_pod_token` does it in-process); the
token goes to the file named by `path`, next to `ca.crt` from the `kube-root-ca.crt` ConfigMap and
`namespace` from the downward API, which is what `load_incluster_config` reads.
"""

from __future__ import annotations

import base64
import datetime
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from pinnace.apiserver.errors import BadRequest, Invalid, NotFound, cause

ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER,)
MIN_SECONDS = 600
MAX_SECONDS = 48 * 3600
DEFAULT_SECONDS = 3600


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class ServiceAccountUser:
    """An authenticated service account; quacks like `pinnace.apiserver.auth.User`."""

    name: str
    groups: tuple[str, ...]
    uid: str = ""
    namespace: str = ""
    account: str = ""
    pod: tuple[str, str] | None = None  # (name, uid) the token is bound to
    extra: dict = field(default_factory=dict, hash=False, compare=False)


class TokenSigner:
    """ES256 JWTs under a P-256 key made on first start."""

    def __init__(self, key_path: Path) -> None:
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            assert isinstance(key, ec.EllipticCurvePrivateKey)
        else:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
        self._key = key
        self._public = key.public_key()
        der = self._public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        digest = hashes.Hash(hashes.SHA256())
        digest.update(der)
        self.key_id = _b64(digest.finalize())
        self._header = _b64(orjson.dumps({"alg": "ES256", "kid": self.key_id}))

    def sign(self, claims: dict) -> str:
        signing_input = f"{self._header}.{_b64(orjson.dumps(claims))}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def verify(self, token: str) -> dict | None:
        """The claims of a token this signer made, or None (bad form, signature or algorithm)."""
        parts = token.split(".")
        if len(parts) != 3 or len(token) > 16384:
            return None
        try:
            header = orjson.loads(_unb64(parts[0]))
            raw = _unb64(parts[2])
            if not isinstance(header, dict) or header.get("alg") != "ES256" or len(raw) != 64:
                return None
            signature = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
            self._public.verify(signature, f"{parts[0]}.{parts[1]}".encode(), ec.ECDSA(hashes.SHA256()))
            claims = orjson.loads(_unb64(parts[1]))
        except (ValueError, InvalidSignature, orjson.JSONDecodeError):
            return None
        return claims if isinstance(claims, dict) else None


def user_from_claims(claims: dict, now: float | None = None) -> ServiceAccountUser | None:
    now = time.time() if now is None else now
    if claims.get("iss") != ISSUER:
        return None
    exp, nbf = claims.get("exp"), claims.get("nbf", 0)
    if not isinstance(exp, int) or exp < now or not isinstance(nbf, int) or nbf > now + 60:
        return None
    audiences = claims.get("aud")
    if isinstance(audiences, str):
        audiences = [audiences]
    if not isinstance(audiences, list) or not any(a in API_AUDIENCES for a in audiences):
        return None
    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, dict):
        return None
    namespace = k8s.get("namespace")
    account = k8s.get("serviceaccount") or {}
    if not isinstance(namespace, str) or not isinstance(account, dict) or not isinstance(account.get("name"), str):
        return None
    pod = k8s.get("pod")
    bound = (str(pod.get("name")), str(pod.get("uid"))) if isinstance(pod, dict) else None
    extra: dict[str, list[str]] = {}
    if bound:
        extra["authentication.kubernetes.io/pod-name"] = [bound[0]]
        extra["authentication.kubernetes.io/pod-uid"] = [bound[1]]
    if isinstance(claims.get("jti"), str):
        extra["authentication.kubernetes.io/credential-id"] = [f"JTI={claims['jti']}"]
    return ServiceAccountUser(
        f"system:serviceaccount:{namespace}:{account['name']}",
        ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        uid=str(account.get("uid") or ""),
        namespace=namespace,
        account=account["name"],
        pod=bound,
        extra=extra,
    )


class ServiceAccountTokens:
    def __init__(self, server: Any, key_path: Path) -> None:
        self.server = server
        self.signer = TokenSigner(key_path)

    def authenticate(self, token: str) -> ServiceAccountUser | None:
        """The signature and claims part (sync, no I/O); `still_valid` checks the objects."""
        if token.count(".") != 2:
            return None
        claims = self.signer.verify(token)
        return user_from_claims(claims) if claims is not None else None

    async def still_valid(self, user: ServiceAccountUser) -> bool:
        """The ServiceAccount (and the Pod, for a bound token) still exist with the same uid."""
        kinds, registry = self.server.kinds, self.server.registry
        account = self.server.security.cached_object("v1/serviceaccounts", user.namespace, user.account)
        if account is None:
            return False
        if user.uid and account["metadata"].get("uid") != user.uid:
            return False
        if user.pod is not None:
            try:
                pod = await registry.get(kinds.by_resource("v1/pods"), user.namespace, user.pod[0])
            except NotFound:
                return False
            if pod["metadata"].get("uid") != user.pod[1]:
                return False
        return True

    async def issue(self, namespace: str, name: str, spec: dict) -> tuple[str, int, dict]:
        """A token for ServiceAccount namespace/name; returns (token, expiry, normalised spec)."""
        kinds, registry = self.server.kinds, self.server.registry
        account = await registry.get(kinds.by_resource("v1/serviceaccounts"), namespace, name)
        seconds = spec.get("expirationSeconds", DEFAULT_SECONDS)
        if seconds is None:
            seconds = DEFAULT_SECONDS
        if not isinstance(seconds, int) or isinstance(seconds, bool):
            raise BadRequest("spec.expirationSeconds must be an integer")
        if seconds < MIN_SECONDS:
            raise Invalid.fields("TokenRequest", "authentication.k8s.io", name, [cause(
                "spec.expirationSeconds", f"Invalid value: {seconds}: may not specify a duration less than 10 minutes")])
        seconds = min(seconds, MAX_SECONDS)
        audiences = spec.get("audiences") or list(API_AUDIENCES)
        if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
            raise BadRequest("spec.audiences must be a list of strings")
        now = int(time.time())
        k8s: dict[str, Any] = {"namespace": namespace,
                               "serviceaccount": {"name": name, "uid": account["metadata"].get("uid", "")}}
        ref = spec.get("boundObjectRef")
        if ref is not None:
            if not isinstance(ref, dict) or ref.get("kind") not in ("Pod", "Secret") or not isinstance(ref.get("name"), str):
                raise Invalid.fields("TokenRequest", "authentication.k8s.io", name, [cause(
                    "spec.boundObjectRef.kind", 'Unsupported value: supported values: "Pod", "Secret"', "FieldValueNotSupported")])
            plural = "v1/pods" if ref["kind"] == "Pod" else "v1/secrets"
            bound = await registry.get(kinds.by_resource(plural), namespace, ref["name"])
            uid = bound["metadata"].get("uid", "")
            if ref.get("uid") and ref["uid"] != uid:
                raise Invalid.fields("TokenRequest", "authentication.k8s.io", name, [cause(
                    "spec.boundObjectRef.uid", f"Invalid value: {ref['uid']!r}: the uid does not match the object")])
            k8s[ref["kind"].lower()] = {"name": ref["name"], "uid": uid}
            if ref["kind"] == "Pod" and (bound.get("spec") or {}).get("nodeName"):
                k8s["node"] = {"name": bound["spec"]["nodeName"]}
            ref = {**ref, "uid": uid}
        claims = {"aud": audiences, "exp": now + seconds, "iat": now, "iss": ISSUER, "jti": str(uuid.uuid4()),
                  "kubernetes.io": k8s, "nbf": now, "sub": f"system:serviceaccount:{namespace}:{name}"}
        out_spec = {"audiences": audiences, "expirationSeconds": seconds, "boundObjectRef": ref}
        return self.signer.sign(claims), now + seconds, out_spec

    async def token_request(self, request: web.Request, target: Any) -> web.StreamResponse:
        """serviceaccounts/<name>/token."""
        handlers = self.server.handlers
        raw = await handlers.read_body(request)
        body = handlers.decode_body(raw, request.headers.get("Content-Type", "application/json")) if raw.strip() else {}
        if not isinstance(body, dict):
            raise BadRequest("the body of the request must be a TokenRequest object")
        # Admission sees the TokenRequest too: NodeRestriction lets a node ask only for its own pods' tokens.
        admitted = await self.server.security.admit(request, target, "CREATE", body)
        if isinstance(admitted, dict):
            body = admitted
        spec = body.get("spec") or {}
        if not isinstance(spec, dict):
            raise BadRequest("spec must be an object")
        token, expires, spec = await self.issue(target.namespace or "", target.name or "", spec)
        result = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"name": target.name, "namespace": target.namespace,
                         "creationTimestamp": _stamp(time.time())},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": _stamp(expires)},
        }
        response = web.Response(body=orjson.dumps(result), status=201)
        response.content_type = "application/json"
        return response


async def issue_pod_token(server: Any, pod: dict, audiences: list[str] | None = None,
                          seconds: int = DEFAULT_SECONDS) -> str:
    """In-process TokenRequest for a pod's projected token (same checks as the REST call)."""
    meta = pod["metadata"]
    spec = {"expirationSeconds": seconds, "audiences": audiences or list(API_AUDIENCES),
            "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": meta["name"], "uid": meta.get("uid")}}
    account = (pod.get("spec") or {}).get("serviceAccountName") or "default"
    token, _expires, _spec = await server.security.tokens.issue(meta["namespace"], account, spec)
    return token


def _stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
