"""The API server's security layer: authorization, admission, audit, encryption at rest, limits.

The server calls into it at a few fixed points and nowhere else:
- `wrap_store(store)` when the store opens (Secrets encryption at rest, `encryption.py`);
- `await start()` once the registry exists (default RBAC objects, the RBAC index, token signer,
  audit log), `stop()` on shutdown;
- `authenticate_token(token)` for bearer tokens the server itself does not know (ServiceAccount JWTs,
  the static token file);
- `audit_unauthenticated(request, received)` when authentication fails (the 401's audit event);
- `await serve(request, handler)` around every authenticated request, in the middleware: bound-token
  revocation, impersonation, the per-user rate limit, authorization (403 naming user, verb, resource),
  the review APIs (`kubectl auth can-i`, `whoami`), the per-user watch cap, Warning headers from
  admission, and one audit event per request;
- `await admit(request, target, operation, obj, old)` in the write handlers (the admission chain).

`SecurityConfig` is `ServerConfig.security`; every knob has a default that keeps a single-user cluster
working as before: the admin token and client certificates in `system:masters` may do everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from pinnace.apiserver import bootstrap_rbac
from pinnace.apiserver.admission import (
    ALWAYS_ON,
    AdmissionRequest,
    Chain,
    default_chain,
    resolve_plugins,
)
from pinnace.apiserver.audit import AuditLog
from pinnace.apiserver.auth import User
from pinnace.apiserver.authz import reviews
from pinnace.apiserver.authz.attributes import Attributes, forbidden, from_request
from pinnace.apiserver.authz.rbac import RBAC_GROUP, RESOURCES, Decision, RBACAuthorizer
from pinnace.apiserver.errors import ApiError, BadRequest, Unauthorized
from pinnace.apiserver.limits import UserLimits, check_depth
from pinnace.apiserver.serviceaccounts import ServiceAccountTokens, ServiceAccountUser
from pinnace.store.base import StoreError

log = logging.getLogger(__name__)

STATE = web.RequestKey("security", object)
RBAC_PREFIX = "/registry/rbac.authorization.k8s.io/"
# Small kinds admission reads on every pod write, kept in memory: resource -> storage key prefix.
CACHED = {
    "v1/limitranges": "/registry/limitranges/",
    "v1/resourcequotas": "/registry/resourcequotas/",
    "v1/serviceaccounts": "/registry/serviceaccounts/",
    "scheduling.k8s.io/v1/priorityclasses": "/registry/scheduling.k8s.io/priorityclasses/",
    "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations":
        "/registry/admissionregistration.k8s.io/mutatingwebhookconfigurations/",
    "admissionregistration.k8s.io/v1/validatingwebhookconfigurations":
        "/registry/admissionregistration.k8s.io/validatingwebhookconfigurations/",
}
RELIST_INTERVAL = 30.0
ALWAYS_ALLOW = Decision(True, "AlwaysAllow")


@dataclass
class SecurityConfig:
    authorization_mode: str = "RBAC"  # or "AlwaysAllow": every authenticated user may do everything
    # kube-apiserver's --enable-admission-plugins / --disable-admission-plugins: names added to and taken
    # from the default set (pinnace.apiserver.admission.DEFAULT_PLUGINS); unknown names are an error.
    enable_admission_plugins: tuple[str, ...] = ()
    disable_admission_plugins: tuple[str, ...] = ()
    admission_plugins: tuple[str, ...] | None = None  # exactly these instead (None: from the two above)
    token_auth_file: str | None = None  # CSV lines: token,user,uid,"group1,group2" (kube-apiserver's format)
    audit_policy_file: str | None = None
    audit_log_path: str | None = None  # default <data_dir>/audit.log when a policy is given
    encryption_provider_config: str | None = None
    mount_service_account_token: bool = True  # ServiceAccount admission adds the kube-api-access volume
    rate_limit_qps: float = 100.0  # per user, system:masters exempt; 0: off
    rate_limit_burst: int = 200
    max_watches_per_user: int = 250
    slow_watch_timeout: float = 30.0  # seconds a watcher may leave its stream unread before it is dropped
    exempt_groups: tuple[str, ...] = field(default=("system:masters",))


@dataclass
class _RequestState:
    """What one request's admission leaves for the end of the request."""

    warnings: list[str] = field(default_factory=list)
    audit_object: Any = None
    audit_annotations: dict[str, str] = field(default_factory=dict)
    on_done: list[Any] = field(default_factory=list)


def load_token_file(path: str | Path) -> dict[str, User]:
    users: dict[str, User] = {}
    with open(path, newline="") as f:
        for row in csv.reader(f):
            if len(row) < 2 or not row[0].strip() or row[0].startswith("#"):
                continue
            groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) if len(row) > 3 else ()
            users[row[0].strip()] = User(row[1].strip(), (*groups, "system:authenticated"))
    return users


class Security:
    def __init__(self, server: Any) -> None:
        self.server = server
        self.config: SecurityConfig = getattr(server.config, "security", None) or SecurityConfig()
        if self.config.authorization_mode not in ("RBAC", "AlwaysAllow"):
            raise ValueError(f"authorization mode {self.config.authorization_mode!r}: use RBAC or AlwaysAllow")
        if self.config.admission_plugins is not None:
            resolve_plugins(self.config.admission_plugins)  # the names must be known and implemented
            self.admission_plugins = frozenset(self.config.admission_plugins) | ALWAYS_ON
        else:
            self.admission_plugins = resolve_plugins(self.config.enable_admission_plugins,
                                                     self.config.disable_admission_plugins)
        self.rbac = RBACAuthorizer()
        self.rbac_enabled = self.config.authorization_mode == "RBAC"
        self.limits = UserLimits(self.config.rate_limit_qps, self.config.rate_limit_burst,
                                 self.config.max_watches_per_user, frozenset(self.config.exempt_groups))
        self.static_tokens: dict[str, User] = {}
        if self.config.token_auth_file:
            self.static_tokens = load_token_file(self.config.token_auth_file)
        self.tokens: ServiceAccountTokens = None  # type: ignore[assignment]
        self.chain: Chain | None = None
        self.audit: AuditLog | None = None
        self._buffer: list[tuple[str, bytes | None, int]] | None = None  # writes seen while re-listing
        self._cache: dict[str, dict[str, dict]] = {resource: {} for resource in CACHED}
        self._cache_revisions: dict[str, int] = {}
        self._relist_lock = asyncio.Lock()
        self._relister: asyncio.Task[None] | None = None
        self._user_key: Any = None
        self._attributes: dict[tuple, Attributes] = {}  # (method, path, watch) -> parsed attributes

    # ---- lifecycle ----

    def wrap_store(self, store: Any) -> Any:
        """Encryption at rest (when configured) under an observer that feeds RBAC writes to the index."""
        if self.config.encryption_provider_config:
            from pinnace.apiserver.encryption import EncryptedStore, load_config

            store = EncryptedStore(store, load_config(self.config.encryption_provider_config))
        return ObservedStore(store, (RBAC_PREFIX, *CACHED.values()), self._written,
                             every_write=getattr(self.server, "note_write", None))

    async def start(self) -> None:
        from pinnace.apiserver.server import USER

        self._user_key = USER
        server = self.server
        key_path = server.data_dir / "pki" / "sa-signer.key"
        self.tokens = await asyncio.to_thread(ServiceAccountTokens, server, key_path)
        if self.config.audit_policy_file:
            path = self.config.audit_log_path or str(server.data_dir / "audit.log")
            self.audit = await asyncio.to_thread(AuditLog, self.config.audit_policy_file, path)
        await self.relist()
        await bootstrap_rbac.ensure(server.registry, server.kinds)
        if not str(server.config.store).startswith("sqlite"):
            # Another API server may write into the same etcd: re-list RBAC and the caches now and then.
            self._relister = asyncio.create_task(self._relist_every(RELIST_INTERVAL), name="rbac relist")
        self.chain = default_chain(server, self.admission_plugins)

    def stop(self) -> None:
        if self._relister is not None:
            self._relister.cancel()
            self._relister = None
        if self.audit is not None:
            self.audit.close()
            self.audit = None

    # ---- RBAC index ----

    def _written(self, key: str, value: bytes | None, revision: int) -> None:
        """Every write this server makes under an observed prefix, as the store acknowledges it."""
        if self._buffer is not None:
            self._buffer.append((key, value, revision))
        try:
            obj = orjson.loads(value) if value is not None else None
        except orjson.JSONDecodeError:
            return
        if key.startswith(RBAC_PREFIX):
            rest = key[len(RBAC_PREFIX):].split("/")
            if rest[0] in RESOURCES:
                self.rbac.apply(rest[0], rest[1] if len(rest) == 3 else "", rest[-1], obj, revision)
            return
        for resource, prefix in CACHED.items():
            if key.startswith(prefix):
                self._cache_apply(resource, key, obj, revision)
                return

    def _cache_apply(self, resource: str, key: str, obj: dict | None, revision: int) -> None:
        if revision <= self._cache_revisions.get(key, 0):
            return  # an older write finishing late
        self._cache_revisions[key] = revision
        if obj is None:
            self._cache[resource].pop(key, None)
        else:
            obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
            self._cache[resource][key] = obj

    def cached(self, resource: str, namespace: str | None) -> list[dict] | None:
        """The objects of a cached resource (in a namespace), or None for resources not cached here."""
        objects = self._cache.get(resource)
        if objects is None:
            return None
        if namespace is None:
            return list(objects.values())
        return [o for o in objects.values() if (o.get("metadata") or {}).get("namespace") == namespace]

    def cached_object(self, resource: str, namespace: str | None, name: str) -> dict | None:
        key = CACHED[resource] + (f"{namespace}/{name}" if namespace else name)
        return self._cache[resource].get(key)

    async def relist(self) -> None:
        """Rebuild the RBAC index and the caches from a list; writes made meanwhile are replayed."""
        async with self._relist_lock:
            self._buffer = []
            try:
                store = self.server.store
                revision = await store.current_revision()
                objects: dict[str, list[dict]] = {}
                for resource in RESOURCES:
                    info = self.server.kinds.by_resource(f"{RBAC_GROUP}/v1/{resource}")
                    page = await self.server.registry.list_page(info, None, revision=revision, limit=0,
                                                                continue_token=None)
                    objects[resource] = page.items
                caches: dict[str, dict[str, dict]] = {}
                revisions: dict[str, int] = {}
                for resource, prefix in CACHED.items():
                    result = await store.list(prefix, revision=revision)
                    caches[resource] = {}
                    for kv in result.items:
                        revisions[kv.key] = kv.mod_revision
                        obj = orjson.loads(kv.value)
                        obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
                        caches[resource][kv.key] = obj
                self.rbac.reset(objects)
                self._cache = caches
                self._cache_revisions = revisions
                seen, self._buffer = self._buffer, None
                for key, value, written in seen:
                    if written > revision:
                        self._written(key, value, written)
            finally:
                self._buffer = None

    async def _relist_every(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.relist()
            except (StoreError, ApiError) as error:
                log.warning("RBAC re-list failed: %s", error)

    async def decide(self, user: Any, attrs: Attributes) -> Decision:
        if not self.rbac_enabled:
            return ALWAYS_ALLOW
        return self.rbac.authorize(user, attrs)

    # ---- authentication ----

    def authenticate_token(self, token: str) -> Any:
        user = self.static_tokens.get(token)
        if user is not None:
            return user
        return self.tokens.authenticate(token) if self.tokens is not None else None

    def user_for_token(self, token: str) -> Any:
        """Every kind of token this server accepts (TokenReview)."""
        return self.server.auth.from_token(token) or self.authenticate_token(token)

    async def _impersonate(self, request: web.Request, user: Any) -> Any:
        """`kubectl --as`/`--as-group`: allowed with the `impersonate` verb on users/groups/serviceaccounts."""
        name = request.headers.get("Impersonate-User")
        groups = request.headers.getall("Impersonate-Group", [])
        if not name:
            if groups:
                raise BadRequest("requested impersonation of groups without impersonating a user")
            return user
        if name.startswith("system:serviceaccount:") and name.count(":") == 3:
            _s, _a, namespace, account = name.split(":")
            checks = [Attributes("impersonate", True, "", "v1", "serviceaccounts", "", namespace, account)]
        else:
            checks = [Attributes("impersonate", True, "", "v1", "users", "", "", name)]
        checks += [Attributes("impersonate", True, "", "v1", "groups", "", "", g) for g in groups]
        for attrs in checks:
            if not (await self.decide(user, attrs)).allowed:
                raise forbidden(user, attrs)
        implied: tuple[str, ...] = ()
        if name.startswith("system:serviceaccount:") and name.count(":") == 3:
            implied = ("system:serviceaccounts", f"system:serviceaccounts:{name.split(':')[2]}")
        impersonated = User(name, (*groups, *implied, "system:authenticated"))
        request[self._user_key] = impersonated
        return impersonated

    # ---- the request path ----

    async def serve(self, request: web.Request, handler: Any) -> web.StreamResponse:
        user = request.get(self._user_key) if self._user_key is not None else None
        if user is None:
            return await handler(request)  # the public paths answered without credentials
        received = datetime.datetime.now(datetime.UTC)
        state = _RequestState()
        request[STATE] = state
        attrs: Attributes | None = None
        decision = Decision(True)
        watch_key: str | None = None
        watchdog: asyncio.Task[None] | None = None
        if isinstance(user, ServiceAccountUser) and not await self.tokens.still_valid(user):
            # A revoked bound token fails authentication, and is audited as such (no user).
            self.audit_unauthenticated(request, received)
            raise Unauthorized("Unauthorized")
        try:
            user = await self._impersonate(request, user)
            self.limits.take(user)
            request_key = (request.method, request.path, request.query.get("watch"))
            attrs = self._attributes.get(request_key)
            if attrs is None:
                if len(self._attributes) > 50_000:
                    self._attributes.clear()
                attrs = self._attributes[request_key] = from_request(request.method, request.path, request.query)
            decision = self.rbac.authorize(user, attrs, request_key) if self.rbac_enabled else ALWAYS_ALLOW
            if not decision.allowed:
                raise forbidden(user, attrs)
            if reviews.handles(request.path):
                response = await reviews.handle(self, request, user, self._read_object)
            else:
                if attrs.verb == "watch":
                    watch_key = self.limits.open_watch(user)
                    watchdog = asyncio.create_task(self._drop_when_stalled(request), name="slow watch client")
                response = await handler(request)
        except ApiError as error:
            self._audit(request, user, attrs, error.code, received, state, error.body(), decision)
            raise
        except (asyncio.CancelledError, ConnectionResetError, web.HTTPException):
            raise
        except Exception:
            self._audit(request, user, attrs, 500, received, state, None, decision)
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            self.limits.close_watch(watch_key)
            for callback in state.on_done:
                callback()
        if state.warnings and not response.prepared:
            for warning in state.warnings:
                text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in warning)
                response.headers.add("Warning", '299 - "' + text.replace('"', '\\"') + '"')
        body = getattr(response, "body", None)
        self._audit(request, user, attrs, response.status, received, state,
                    body if isinstance(body, bytes) else None, decision)
        return response

    async def _drop_when_stalled(self, request: web.Request) -> None:
        """End a watch whose client stopped reading: the transport has paused writing (its buffer is
        over the high-water mark) for `slow_watch_timeout` seconds. Aborting the connection wakes the
        handler's blocked write, which then cleans up; the server never buffers for it beyond the
        watch queue and one transport buffer."""
        limit = self.config.slow_watch_timeout
        if limit <= 0:
            return
        protocol = request.protocol
        stalled = 0.0
        step = min(1.0, limit / 4)
        while True:
            await asyncio.sleep(step)
            stalled = stalled + step if getattr(protocol, "writing_paused", False) else 0.0
            if stalled >= limit:
                log.info("dropping watch %s of a client that stopped reading", request.path_qs)
                transport = request.transport
                if transport is not None:
                    transport.abort()
                return

    async def _read_object(self, request: web.Request) -> Any:
        handlers = self.server.handlers
        raw = await handlers.read_body(request)
        check_depth(raw)
        return handlers.decode_body(raw, request.headers.get("Content-Type", "application/json"))

    def audit_unauthenticated(self, request: web.Request, received: datetime.datetime | None = None) -> None:
        """A request that failed authentication (401): one event at stage ResponseStarted with no user,
        as kube-apiserver's WithFailedAuthenticationAudit writes it (see pinnace.apiserver.audit)."""
        if self.audit is None:
            return
        attrs = from_request(request.method, request.path, request.query)
        self.audit.record_unauthenticated(attrs=attrs, request=request,
                                          received=received or datetime.datetime.now(datetime.UTC))

    def _audit(self, request: web.Request, user: Any, attrs: Attributes | None, code: int,
               received: datetime.datetime, state: _RequestState, body: bytes | None, decision: Decision) -> None:
        if self.audit is None:
            return
        if attrs is None:
            attrs = from_request(request.method, request.path, request.query)
        self.audit.record(
            user=user, attrs=attrs, request=request, code=code, received=received,
            request_object=state.audit_object, response_body=body,
            decision="allow" if decision.allowed else "forbid", reason=decision.reason,
            annotations=state.audit_annotations,
        )

    # ---- admission ----

    async def admit(self, request: web.Request, target: Any, operation: str, obj: dict | None = None,
                    old: dict | None = None) -> Any:
        """Run the admission chain on a write; returns the (possibly mutated) object to store."""
        state = request.get(STATE)
        if isinstance(obj, dict):
            if state is not None:
                state.audit_object = obj
        if self.chain is None or (obj is not None and not isinstance(obj, dict)):
            return obj
        info = target.info
        if obj is not None and info.definition.startswith("io.k8s."):
            _drop_nulls(obj)
        meta = (obj or {}).get("metadata") if isinstance((obj or {}).get("metadata"), dict) else {}
        namespace = target.namespace or (meta.get("namespace") if info.namespaced else "") or ""
        user = request.get(self._user_key)
        if user is None:
            from pinnace.apiserver.auth import INSECURE

            user = INSECURE
        admission = AdmissionRequest(
            operation=operation, info=info, namespace=namespace if info.namespaced else "",
            name=target.name or meta.get("name") or "", subresource=target.subresource or "",
            object=obj, old=old, user=user, dry_run=bool(request.query.getall("dryRun", [])), server=self.server,
        )
        try:
            await self.chain.admit(admission)
        finally:
            if state is not None:
                state.on_done.extend(admission.on_done)
                state.warnings.extend(admission.warnings)
                state.audit_annotations.update(admission.audit_annotations)
            else:
                for callback in admission.on_done:
                    callback()
        return admission.object


def _drop_nulls(value: Any, depth: int = 0) -> None:
    """Remove `null` fields from a built-in object: Go decodes them to zero values that are never
    written back, so `spec: null` means "no spec" there, and the defaulting code relies on that.
    A `null` list element becomes `{}` (the zero element), which validation then refuses by name."""
    if depth > 300:
        return
    if isinstance(value, dict):
        for key in [k for k, v in value.items() if v is None]:
            del value[key]
        for item in value.values():
            if isinstance(item, (dict, list)):
                _drop_nulls(item, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if item is None:
                value[index] = {}  # Go's zero element; validation then names what it lacks
            elif isinstance(item, (dict, list)):
                _drop_nulls(item, depth + 1)


async def issue_node_credentials(server: Any, node_name: str, directory: Path) -> tuple[Path, Path]:
    """A client certificate for `system:node:<node_name>` (group `system:nodes`), as kubelets use.

    Returns (cert path, key path). The NodeRestriction admission plugin then limits that node to its
    own Node, Lease and pods.
    """
    from pinnace.apiserver import certs

    ca_cert, ca_key = certs.load_ca(server.certs)
    cert, key = certs.issue(ca_cert, ca_key, f"system:node:{node_name}", organizations=("system:nodes",))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{node_name}.crt", directory / f"{node_name}.key"
    cert_path.write_bytes(cert)
    with contextlib.suppress(OSError):
        key_path.touch(mode=0o600)
    key_path.write_bytes(key)
    return cert_path, key_path


class ObservedStore:
    """A `Store` that reports every acknowledged write under its prefixes to `written(key, value, revision)`
    (value None for a delete). Wrapping the store, not watching it, makes the report synchronous with
    the write: no window where a revoked binding still authorizes. `every_write(key, revision)`, when
    given, hears of every write (the API server uses it to know how far its watch caches must get)."""

    def __init__(self, inner: Any, prefixes: tuple[str, ...], written: Any, every_write: Any = None) -> None:
        self.inner = inner
        self.prefix = prefixes  # str.startswith takes the tuple
        self.written = written
        self.every_write = every_write or (lambda key, revision: None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def create(self, key: str, value: bytes) -> int:
        revision = await self.inner.create(key, value)
        self.every_write(key, revision)
        if key.startswith(self.prefix):
            self.written(key, value, revision)
        return revision

    async def update(self, key: str, value: bytes, expected_revision: int | None) -> int:
        revision = await self.inner.update(key, value, expected_revision)
        self.every_write(key, revision)
        if key.startswith(self.prefix):
            self.written(key, value, revision)
        return revision

    async def delete(self, key: str, expected_revision: int | None = None) -> Any:
        deleted = await self.inner.delete(key, expected_revision)
        self.every_write(key, deleted.mod_revision)
        if key.startswith(self.prefix):
            self.written(key, None, deleted.mod_revision)
        return deleted
