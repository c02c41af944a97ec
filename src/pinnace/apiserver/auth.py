"""Authentication: who is asking. Requests without valid credentials get 401.

Three ways in, as in Kubernetes:
- bearer tokens kept in the data directory: the admin token (`system:admin`, group `system:masters`)
  and the node join token (`system:node-bootstrap`, group `system:nodes`) that agents use to register;
- service-account tokens issued by `serviceaccounts/<name>/token`: `sa1.<payload>.<mac>` where the
  payload names the namespace, account, uid and expiry and the MAC is HMAC-SHA256 under a key kept
  in the data directory (pinnace does not issue JWTs; the tokens are opaque to clients either way);
- client certificates signed by the cluster CA (checked by TLS): CN is the user, O the groups.

Authorization is not modelled: every authenticated user may do everything (RBAC objects are stored
and served, not enforced).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


ADMIN = User("system:admin", ("system:masters", "system:authenticated"))
NODE_BOOTSTRAP = User("system:node-bootstrap", ("system:nodes", "system:authenticated"))
INSECURE = User("system:unsecured", ("system:masters", "system:authenticated"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Authenticator:
    def __init__(self, data_dir: Path, admin_token: str) -> None:
        self.tokens: dict[str, User] = {admin_token: ADMIN}
        self.join_token = self._secret_file(data_dir / "node.token", lambda: secrets.token_urlsafe(24).encode()).decode()
        self.tokens[self.join_token] = NODE_BOOTSTRAP
        self._sa_key = self._secret_file(data_dir / "sa.key", lambda: os.urandom(32))

    @staticmethod
    def _secret_file(path: Path, make: Any) -> bytes:
        if path.exists():
            return path.read_bytes().strip()
        value = make()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(value)
        return value

    def from_token(self, token: str) -> User | None:
        user = self.tokens.get(token)
        if user is not None:
            return user
        if token.startswith("sa1."):
            return self._service_account(token)
        return None

    def from_certificate(self, peercert: dict | None) -> User | None:
        """`peercert` as ssl returns it for a certificate the TLS layer verified against the CA."""
        if not peercert:
            return None
        name, groups = "", []
        for rdn in peercert.get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    name = value
                elif key == "organizationName":
                    groups.append(value)
        if not name:
            return None
        return User(name, (*groups, "system:authenticated"))

    def issue_service_account_token(self, namespace: str, name: str, uid: str, seconds: int) -> tuple[str, int]:
        expires = int(time.time()) + seconds
        payload = _b64(orjson.dumps({"ns": namespace, "sa": name, "uid": uid, "exp": expires}))
        mac = _b64(hmac.new(self._sa_key, payload.encode(), hashlib.sha256).digest())
        return f"sa1.{payload}.{mac}", expires

    def _service_account(self, token: str) -> User | None:
        try:
            _prefix, payload, mac = token.split(".")
        except ValueError:
            return None
        expected = _b64(hmac.new(self._sa_key, payload.encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, mac):
            return None
        try:
            claims = orjson.loads(_unb64(payload))
        except (ValueError, orjson.JSONDecodeError):
            return None
        if claims.get("exp", 0) < time.time():
            return None
        namespace = claims.get("ns", "")
        return User(
            f"system:serviceaccount:{namespace}:{claims.get('sa', '')}",
            ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"),
        )
