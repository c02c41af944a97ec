"""Admission plugins, encryption, audit policy, tokens and limits as pure functions."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from pathlib import Path

import pytest

from pinnace.apiserver.admission import pod_security
from pinnace.apiserver.admission.resource_quota import usage_of
from pinnace.apiserver.admission.webhooks import rule_matches
from pinnace.apiserver.audit import load_policy
from pinnace.apiserver.auth import User
from pinnace.apiserver.authz.attributes import Attributes
from pinnace.apiserver.encryption import EncryptedStore, load_config
from pinnace.apiserver.errors import BadRequest, TooManyRequests
from pinnace.apiserver.limits import UserLimits, check_depth
from pinnace.apiserver.security import load_token_file
from pinnace.apiserver.serviceaccounts import ISSUER, TokenSigner, user_from_claims
from pinnace.store.base import KeyValue


def container(**security) -> dict:
    return {"name": "c", "image": "x", **({"securityContext": security} if security else {})}


RESTRICTED = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
              "seccompProfile": {"type": "RuntimeDefault"}}


@pytest.mark.parametrize("level, spec, violations", [
    ("privileged", {"hostNetwork": True, "containers": [container(privileged=True)]}, []),
    ("baseline", {"containers": [container()]}, []),
    ("baseline", {"hostPID": True, "containers": [container()]}, ["host namespaces"]),
    ("baseline", {"containers": [container(privileged=True)]}, ["privileged"]),
    ("baseline", {"containers": [container(capabilities={"add": ["SYS_ADMIN"]})]}, ["non-default capabilities"]),
    ("baseline", {"containers": [container()], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}, ["hostPath volumes"]),
    ("baseline", {"containers": [{**container(), "ports": [{"containerPort": 80, "hostPort": 80}]}]}, ["hostPort"]),
    ("restricted", {"containers": [container(**RESTRICTED)]}, []),
    ("restricted", {"containers": [container()]},
     ["allowPrivilegeEscalation != false", "unrestricted capabilities", "runAsNonRoot != true", "seccompProfile"]),
    ("restricted", {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container(allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]})]}, []),
    ("restricted", {"containers": [container(**RESTRICTED, runAsUser=0)]}, ["runAsUser=0"]),
])
def test_pod_security_levels(level, spec, violations) -> None:
    found = pod_security.check(level, spec, {})
    assert [v.split(" (")[0] for v in found] == violations


def test_quota_usage_of_a_pod() -> None:
    pod = {"spec": {"containers": [{"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
                                   {"resources": {"requests": {"cpu": "250m"}}}],
                    "initContainers": [{"resources": {"requests": {"cpu": "2"}}}]}}
    usage = usage_of("v1/pods", pod)
    assert usage["pods"] == 1 and usage["count/pods"] == 1
    assert usage["requests.cpu"] == 2  # the init container's request is the larger
    assert usage["limits.cpu"] == 1 and usage["requests.memory"] == 64 * 1024 * 1024
    assert usage_of("apps/v1/deployments", {})["count/deployments.apps"] == 1


def test_webhook_rules() -> None:
    class Info:
        group, version, plural, namespaced, name = "", "v1", "pods", True, "v1/pods"

    class Req:
        operation, info, resource, group, subresource = "CREATE", Info, "pods", "", ""

    assert rule_matches({"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}, Req)
    assert not rule_matches({"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}, Req)
    assert not rule_matches({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"],
                             "scope": "Cluster"}, Req)
    Req.subresource = "status"
    assert not rule_matches({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}, Req)
    assert rule_matches({"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}, Req)


class MemoryStore:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def create(self, key: str, value: bytes) -> int:
        self.data[key] = value
        return len(self.data)

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        return KeyValue(key, self.data[key], 1, 1) if key in self.data else None


def test_encryption_round_trip_and_rotation(tmp_path: Path) -> None:
    key1, key2 = base64.b64encode(os.urandom(32)).decode(), base64.b64encode(os.urandom(16)).decode()
    config = tmp_path / "enc.yaml"

    def write(providers: str) -> None:
        config.write_text(f"kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\n"
                          f"resources:\n- resources: [secrets]\n  providers:\n{providers}")

    write(f"  - aesgcm: {{keys: [{{name: k1, secret: '{key1}'}}]}}\n  - identity: {{}}\n")
    inner = MemoryStore()
    store = EncryptedStore(inner, load_config(config))

    async def scenario() -> None:
        await store.create("/registry/secrets/ns/s", b'{"data":{"p":"secret"}}')
        await store.create("/registry/configmaps/ns/c", b'{"data":{"p":"plain"}}')
        inner.data["/registry/secrets/ns/old"] = b'{"written":"before encryption"}'
        assert inner.data["/registry/secrets/ns/s"].startswith(b"k8s:enc:aesgcm:v1:k1:")
        assert b"secret" not in inner.data["/registry/secrets/ns/s"]
        assert inner.data["/registry/configmaps/ns/c"] == b'{"data":{"p":"plain"}}'
        assert (await store.get("/registry/secrets/ns/s")).value == b'{"data":{"p":"secret"}}'
        assert (await store.get("/registry/secrets/ns/old")).value == b'{"written":"before encryption"}'
        # Rotation: a new first key (aescbc) encrypts, the old one still decrypts.
        write(f"  - aescbc: {{keys: [{{name: k2, secret: '{key2}'}}]}}\n  - aesgcm: {{keys: [{{name: k1, secret: '{key1}'}}]}}\n")
        rotated = EncryptedStore(inner, load_config(config))
        assert (await rotated.get("/registry/secrets/ns/s")).value == b'{"data":{"p":"secret"}}'
        await rotated.create("/registry/secrets/ns/t", b'{"x":1}')
        assert inner.data["/registry/secrets/ns/t"].startswith(b"k8s:enc:aescbc:v1:k2:")
        assert (await rotated.get("/registry/secrets/ns/t")).value == b'{"x":1}'
        # A ciphertext moved to another key does not decrypt (the key is authenticated data).
        inner.data["/registry/secrets/ns/moved"] = inner.data["/registry/secrets/ns/s"]
        with pytest.raises(Exception, match="no configured key decrypts"):
            await rotated.get("/registry/secrets/ns/moved")

    asyncio.run(scenario())


def test_audit_policy_first_match_wins(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("""
kind: Policy
apiVersion: audit.k8s.io/v1
rules:
- {level: None, users: [system:kube-proxy]}
- {level: RequestResponse, resources: [{group: "", resources: [pods/log]}]}
- {level: Request, namespaces: [prod], verbs: [create]}
- {level: Metadata}
""")
    rules = load_policy(path)

    def level(user: str, attrs: Attributes) -> str:
        return next(r.level for r in rules if r.matches(User(user, ()), attrs))

    assert level("system:kube-proxy", Attributes("get", True, "", "v1", "pods")) == "None"
    assert level("a", Attributes("get", True, "", "v1", "pods", "log", "x")) == "RequestResponse"
    assert level("a", Attributes("create", True, "", "v1", "pods", "", "prod")) == "Request"
    assert level("a", Attributes("get", False, path="/healthz")) == "Metadata"


def test_tokens_sign_verify_and_expire(tmp_path: Path) -> None:
    signer = TokenSigner(tmp_path / "sa.key")
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": [ISSUER], "exp": now + 600, "nbf": now, "iat": now,
              "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "sa", "uid": "u1"}}}
    token = signer.sign(claims)
    user = user_from_claims(signer.verify(token))
    assert user is not None and user.name == "system:serviceaccount:ns:sa" and "system:serviceaccounts:ns" in user.groups
    assert TokenSigner(tmp_path / "sa.key").verify(token) == claims  # the key persists across restarts
    header, payload, signature = token.split(".")
    assert signer.verify(f"{header}.{payload}x.{signature}") is None
    assert signer.verify("a.b.c") is None and signer.verify("....") is None
    assert user_from_claims({**claims, "exp": now - 1}) is None
    assert user_from_claims({**claims, "aud": ["someone-else"]}) is None
    assert TokenSigner(tmp_path / "other.key").verify(token) is None


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text('t1,alice,uid1,"dev,ops"\nt2,bob,uid2\n')
    users = load_token_file(path)
    assert users["t1"] == User("alice", ("dev", "ops", "system:authenticated"))
    assert users["t2"].groups == ("system:authenticated",)


def test_rate_limit_and_watch_cap() -> None:
    limits = UserLimits(qps=1, burst=3, max_watches=2)
    user, root = User("u", ()), User("root", ("system:masters",))
    for _ in range(3):
        limits.take(user)
    with pytest.raises(TooManyRequests) as refused:
        limits.take(user)
    assert refused.value.retry_after == 1
    for _ in range(10):
        limits.take(root)  # exempt
    first, second = limits.open_watch(user), limits.open_watch(user)
    with pytest.raises(TooManyRequests):
        limits.open_watch(user)
    limits.close_watch(first)
    limits.close_watch(limits.open_watch(user))
    limits.close_watch(second)


@pytest.mark.parametrize("body, ok", [
    (b"[" * 150 + b"]" * 150, True),
    (b"[" * 250 + b"]" * 250, False),
    (b'{"a":"' + b"[" * 500 + b'"}', True),  # brackets inside strings do not count
    (("a:\n" + "".join(" " * (i + 1) + "b:\n" for i in range(150))).encode(), False),
    (("a:\n" + "".join(" " * (i + 1) + "b:\n" for i in range(40))).encode(), True),
])
def test_nesting_depth(body: bytes, ok: bool) -> None:
    if ok:
        check_depth(body)
    else:
        with pytest.raises(BadRequest):
            check_depth(body)
