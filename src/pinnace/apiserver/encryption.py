"""Encryption of Secrets (or any resource) at rest, configured as kube-apiserver's
`EncryptionConfiguration` (apiserver.config.k8s.io/v1):

```yaml
kind: EncryptionConfiguration
apiVersion: apiserver.config.k8s.io/v1
resources:
  - resources: [secrets]
    providers:
      - aesgcm: {keys: [{name: key1, secret: <base64 of 16, 24 or 32 bytes>}]}
      - identity: {}
```

The first provider encrypts every write; reads try the provider the stored value names, so keys can
be rotated (add a key first, rewrite the objects, drop the old key) and `identity` reads values
written before encryption was turned on. Stored values look like Kubernetes': the prefix
`k8s:enc:aesgcm:v1:<key name>:` then a 12-byte nonce and the AES-GCM ciphertext+tag (`aescbc`: a
16-byte IV and AES-CBC with PKCS#7 padding). The key name and the storage key are bound into the
AES-GCM additional data, so a ciphertext moved to another key does not decrypt.

`EncryptedStore` wraps any `Store`; the registry and watch caches see plain JSON as before.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pinnace.store.base import CorruptValue, Event, KeyValue, ListResult


class EncryptionConfigError(ValueError):
    pass


@dataclass(frozen=True)
class Provider:
    kind: str  # "aesgcm", "aescbc" or "identity"
    keys: tuple[tuple[str, bytes], ...] = ()

    @property
    def prefix(self) -> bytes:
        return f"k8s:enc:{self.kind}:v1:{self.keys[0][0]}:".encode() if self.keys else b""

    def encrypt(self, key: str, value: bytes) -> bytes:
        if self.kind == "identity":
            return value
        name, secret = self.keys[0]
        head = f"k8s:enc:{self.kind}:v1:{name}:".encode()
        if self.kind == "aesgcm":
            nonce = os.urandom(12)
            return head + nonce + AESGCM(secret).encrypt(nonce, value, key.encode())
        iv = os.urandom(16)
        padder = padding.PKCS7(128).padder()
        data = padder.update(value) + padder.finalize()
        encryptor = Cipher(algorithms.AES(secret), modes.CBC(iv)).encryptor()
        return head + iv + encryptor.update(data) + encryptor.finalize()

    def decrypt(self, key: str, name: str, payload: bytes) -> bytes | None:
        secret = dict(self.keys).get(name)
        if secret is None:
            return None
        try:
            if self.kind == "aesgcm":
                return AESGCM(secret).decrypt(payload[:12], payload[12:], key.encode())
            decryptor = Cipher(algorithms.AES(secret), modes.CBC(payload[:16])).decryptor()
            data = decryptor.update(payload[16:]) + decryptor.finalize()
            unpadder = padding.PKCS7(128).unpadder()
            return unpadder.update(data) + unpadder.finalize()
        except Exception:
            return None


@dataclass(frozen=True)
class ResourceEncryption:
    prefixes: tuple[str, ...]  # storage key prefixes the rule covers
    providers: tuple[Provider, ...]


def _storage_prefix(resource: str) -> str:
    # "secrets" -> /registry/secrets/, "widgets.example.com" -> /registry/example.com/widgets/
    plural, _, group = resource.partition(".")
    return f"/registry/{group}/{plural}/" if group else f"/registry/{plural}/"


def load_config(path: str | Path) -> list[ResourceEncryption]:
    doc = yaml.safe_load(Path(path).read_text())
    if not isinstance(doc, dict) or doc.get("kind") != "EncryptionConfiguration":
        raise EncryptionConfigError(f"{path}: not an EncryptionConfiguration")
    rules = []
    for entry in doc.get("resources") or ():
        providers = []
        for raw in entry.get("providers") or ():
            (kind, body), = raw.items()
            if kind == "identity":
                providers.append(Provider("identity"))
                continue
            if kind not in ("aesgcm", "aescbc"):
                raise EncryptionConfigError(f"{path}: provider {kind!r} is not supported (aesgcm, aescbc, identity)")
            keys = []
            for key in (body or {}).get("keys") or ():
                secret = base64.b64decode(key["secret"])
                if len(secret) not in (16, 24, 32):
                    raise EncryptionConfigError(f"{path}: key {key['name']!r} must be 16, 24 or 32 bytes")
                keys.append((str(key["name"]), secret))
            if not keys:
                raise EncryptionConfigError(f"{path}: provider {kind} has no keys")
            providers.append(Provider(kind, tuple(keys)))
        if not providers:
            raise EncryptionConfigError(f"{path}: a resources entry has no providers")
        rules.append(ResourceEncryption(tuple(_storage_prefix(r) for r in entry.get("resources") or ()), tuple(providers)))
    return rules


class EncryptedStore:
    """A `Store` that encrypts the values under the configured prefixes; everything else passes through."""

    def __init__(self, inner: Any, rules: list[ResourceEncryption]) -> None:
        self.inner = inner
        self.rules = rules

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _rule(self, key: str) -> ResourceEncryption | None:
        for rule in self.rules:
            if key.startswith(rule.prefixes):
                return rule
        return None

    def _seal(self, key: str, value: bytes) -> bytes:
        rule = self._rule(key)
        return rule.providers[0].encrypt(key, value) if rule is not None else value

    def _open(self, key: str, value: bytes | None) -> bytes | None:
        if value is None or not value.startswith(b"k8s:enc:"):
            return value  # plain JSON: never encrypted, or written before encryption was on
        try:
            _k8s, _enc, kind, _v1, name, _rest = value.split(b":", 5)
        except ValueError:
            raise CorruptValue(f"{key}: malformed encrypted value") from None
        payload = value[len(b"k8s:enc:") + len(kind) + len(b":v1:") + len(name) + 1 :]
        rule = self._rule(key)
        for provider in rule.providers if rule else ():
            if provider.kind == kind.decode():
                plain = provider.decrypt(key, name.decode(), payload)
                if plain is not None:
                    return plain
        raise CorruptValue(f"{key}: no configured key decrypts this value (key {name.decode()!r})")

    def _kv(self, kv: KeyValue | None) -> KeyValue | None:
        if kv is None or self._rule(kv.key) is None:
            return kv
        return replace(kv, value=self._open(kv.key, kv.value))

    async def create(self, key: str, value: bytes) -> int:
        return await self.inner.create(key, self._seal(key, value))

    async def update(self, key: str, value: bytes, expected_revision: int | None) -> int:
        return await self.inner.update(key, self._seal(key, value), expected_revision)

    async def get(self, key: str, revision: int | None = None) -> KeyValue | None:
        return self._kv(await self.inner.get(key, revision))

    async def delete(self, key: str, expected_revision: int | None = None) -> KeyValue:
        kv = self._kv(await self.inner.delete(key, expected_revision))
        assert kv is not None
        return kv

    async def list(self, prefix: str, *, revision: int | None = None, limit: int = 0,
                   start_after: str | None = None) -> ListResult:
        result = await self.inner.list(prefix, revision=revision, limit=limit, start_after=start_after)
        if not any(rule_prefix.startswith(prefix) or prefix.startswith(rule_prefix)
                   for rule in self.rules for rule_prefix in rule.prefixes):
            return result
        return replace(result, items=[self._kv(kv) for kv in result.items])  # type: ignore[misc]

    async def watch(self, prefix: str, after_revision: int) -> AsyncIterator[Event]:
        async for event in self.inner.watch(prefix, after_revision):
            if self._rule(event.key) is None:
                yield event
            else:
                yield replace(event, value=self._open(event.key, event.value),
                              prev_value=self._open(event.key, event.prev_value))
