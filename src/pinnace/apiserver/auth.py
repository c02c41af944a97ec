"""Authentication: who is asking. Requests without valid credentials get 401.

Three ways in, as in Kubernetes:
- bearer tokens kept in the data directory: the admin token (`system:admin`, group `system:masters`)
  and the node join token (`system:bootstrap:node-join`, group `system:bootstrappers`), which may only
  ask for a node client certificate through a CertificateSigningRequest (pinnace.apiserver.csrsigning);
- service-account tokens (issued and checked by pinnace.apiserver.serviceaccounts);
- client certificates signed by the cluster CA (checked by TLS): CN is the user, O the groups.

What an authenticated user may do is decided next, by pinnace.apiserver.security (RBAC).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class User:
    name: str
    groups: tuple[str, ...] = ()


ADMIN = User("system:admin", ("system:masters", "system:authenticated"))
# As a Kubernetes bootstrap token: good for one thing, trading itself for a node's own certificate.
NODE_BOOTSTRAP = User("system:bootstrap:node-join", ("system:bootstrappers", "system:authenticated"))
INSECURE = User("system:unsecured", ("system:masters", "system:authenticated"))


class Authenticator:
    def __init__(self, data_dir: Path, admin_token: str) -> None:
        self.tokens: dict[str, User] = {admin_token: ADMIN}
        self.join_token = self._secret_file(data_dir / "node.token", lambda: secrets.token_urlsafe(24).encode()).decode()
        self.tokens[self.join_token] = NODE_BOOTSTRAP

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
        """The user of a static token (service-account tokens: pinnace.apiserver.serviceaccounts)."""
        return self.tokens.get(token)

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
