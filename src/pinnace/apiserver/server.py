"""The API server: an aiohttp application serving the Kubernetes REST API from a pinnace store.

`ApiServer(ServerConfig(...))`, `await start()`, `await stop()`. After `start()`: `.url` (https),
`.insecure_url` (plain HTTP on 127.0.0.1, only when `insecure_port` is set), `.kubeconfig_path`
(`<data_dir>/kubeconfig.yaml`, admin token), `.ca_path`, `.admin_token`, `.join_token`.

Request path: one middleware authenticates (bearer token or client certificate; the insecure
listener is trusted, and it binds loopback only), enforces the in-flight limit (429 with
`Retry-After`, as kube-apiserver's max-in-flight filter), turns `ApiError`s into Status bodies, and
records metrics; then one dispatcher parses the path and calls the verb's handler
(pinnace.apiserver.handlers). On first start the server makes its CA, serving certificate and admin
token, the default namespaces and the `kubernetes` Service.

`stop()` drains: it ends every watch stream (clients re-watch elsewhere or after restart), lets
requests in progress finish, then closes the store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import importlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from pinnace.api import kinds
from pinnace.api.kinds import ResourceInfo
from pinnace.api.meta import parse_time
from pinnace.apiserver import certs as certificates
from pinnace.apiserver import metricsapi
from pinnace.apiserver.auth import INSECURE, Authenticator
from pinnace.apiserver.crdcleanup import CustomResourceCleanup
from pinnace.apiserver.customresources import CustomResources
from pinnace.apiserver.discovery import AGGREGATED_TYPES, Discovery, aggregated_version, version_info
from pinnace.apiserver.errors import (
    AlreadyExists,
    ApiError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
)
from pinnace.apiserver.handlers import (
    ResourceHandlers,
    Target,
    error_response,
    internal_error_response,
    negotiate,
)
from pinnace.apiserver.metrics import Metrics
from pinnace.apiserver.registry import Registry, object_of, version_scoped_prefix
from pinnace.apiserver.security import Security, SecurityConfig
from pinnace.apiserver.strategies import KUBERNETES_SERVICE_IP
from pinnace.apiserver.watchcache import CachedEvent, WatchCache
from pinnace.store import StoreError, open_store

log = logging.getLogger(__name__)

_MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_STREAMING_SUBRESOURCES = frozenset({"log", "exec", "attach", "portforward", "proxy"})
# /cacerts: the cluster CA certificate, public, so a joining node can fetch it and check it against the
# hash in its join token before it trusts this server with the token.
_PUBLIC_PATHS = frozenset({"/healthz", "/livez", "/readyz", "/version", "/version/", "/cacerts"})
DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
# Per-request values the middleware reads back (who is asking; verb and resource for metrics).
USER = web.RequestKey("user", object)
VERB = web.RequestKey("verb", str)
RESOURCE = web.RequestKey("resource", str)


@dataclass
class ServerConfig:
    data_dir: str | Path
    port: int = 6443  # 0 picks a free port
    bind_address: str = "0.0.0.0"
    # The address the `kubernetes` Service's endpoints carry (kube-apiserver's --advertise-address): one
    # pods can reach. Default: bind_address, else this host's first non-loopback address.
    advertise_address: str | None = None
    store: str = "sqlite"
    insecure_port: int | None = None  # 0 picks a free port
    watch_timeout: int = 1800  # seconds a watch without timeoutSeconds stays open
    bookmark_interval: float = 60.0  # seconds between BOOKMARKs on an idle watch that allows them
    max_requests_inflight: int = 800  # non-mutating requests served at once (kube-apiserver's default 400+)
    max_mutating_requests_inflight: int = 400
    event_ttl: float = 3600.0  # Events are kept one hour, as in Kubernetes
    event_sweep_interval: float = 60.0
    security: SecurityConfig = field(default_factory=SecurityConfig)  # RBAC, admission, audit, encryption


class ApiServer:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.data_dir = Path(config.data_dir).expanduser()
        self.kinds = kinds.registry()
        self.metrics = Metrics()
        self.discovery = Discovery(self.kinds)
        self.metrics_api = metricsapi.MetricsApi(self)
        self.watchers: set[Any] = set()
        self.watch_tasks: set[asyncio.Task[Any]] = set()  # the handlers streaming those watches
        self.url = ""
        self.insecure_url: str | None = None
        self.port = 0
        self.insecure_port: int | None = None
        self.kubeconfig_path = self.data_dir / "kubeconfig.yaml"
        self.ca_path = self.data_dir / "pki" / "ca.crt"
        self.admin_token = ""
        self.join_token = ""
        self.store: Any = None
        self.registry: Registry = None  # type: ignore[assignment]
        self.handlers: ResourceHandlers = None  # type: ignore[assignment]
        self.custom: CustomResources | None = None
        self.openapi: Any = None
        self._caches: dict[str, WatchCache] = {}
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._components: list[Any] = []  # started after the listener, stopped first (start()/stop())
        self._inflight = 0
        self._mutating_inflight = 0
        self._stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self._version_body = orjson.dumps(version_info(), option=orjson.OPT_INDENT_2)

    # ---- lifecycle ----

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        extra = (self.config.bind_address,) if self.config.bind_address not in ("0.0.0.0", "::", "") else ()
        if self.config.advertise_address:
            extra += (self.config.advertise_address,)
        cluster_certs = await asyncio.to_thread(certificates.ensure, self.data_dir / "pki", extra)
        self.certs = cluster_certs
        self.ca_path = cluster_certs.ca_cert
        self.admin_token = cluster_certs.admin_token
        self.auth = await asyncio.to_thread(Authenticator, self.data_dir / "pki", cluster_certs.admin_token)
        self.join_token = self.auth.join_token
        self.security = Security(self)
        self.store = self.security.wrap_store(open_store(self.config.store, self.data_dir))
        await self.store.start()
        try:
            self.registry = Registry(self.store)
            self.handlers = ResourceHandlers(self)
            await self._follow_namespaces()
            await self._bootstrap_namespaces()
            await self.security.start()
            self.custom = CustomResources(self)
            app = self._make_app()
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=5)
            await self._runner.setup()
            await self.custom.start()  # after the app exists: it registers OpenAPI schemas
            self._tasks.append(asyncio.create_task(CustomResourceCleanup(self).run(), name="crd cleanup"))
            await self._listen(cluster_certs)
            await self._bootstrap_kubernetes_service()
            await self._start_components()
            self.write_kubeconfig()
            self._tasks.append(asyncio.create_task(self._sweep_events(), name="event ttl"))
        except BaseException:
            await self.stop()
            raise
        log.info("API server listening on %s%s", self.url, f" and {self.insecure_url}" if self.insecure_url else "")

    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=4 * 1024 * 1024)
        try:
            openapi = importlib.import_module("pinnace.apiserver.openapi")
        except ModuleNotFoundError:
            openapi = None
        if openapi is not None:
            self.openapi = openapi.add_routes(app, lambda: self.kinds)
        # `[\s\S]`, not `.`: a path with an encoded newline (`/api/v1/pods/%0A`) must still reach the
        # dispatcher and get a Status, not fall through to aiohttp's plain-text 404
        app.router.add_route("*", r"/{tail:[\s\S]*}", self._dispatch)
        return app

    async def _listen(self, cluster_certs: certificates.ClusterCerts) -> None:
        assert self._runner is not None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cluster_certs.server_cert, cluster_certs.server_key)
        context.load_verify_locations(cluster_certs.ca_cert)
        context.verify_mode = ssl.CERT_OPTIONAL  # client certificates are one way to authenticate
        context.set_alpn_protocols(["http/1.1"])
        site = web.TCPSite(self._runner, self.config.bind_address or "0.0.0.0", self.config.port, ssl_context=context)
        await site.start()
        self.port = _bound_port(site)
        host = self.config.bind_address
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        self.url = f"https://{_url_host(host)}:{self.port}"
        if self.config.insecure_port is not None:
            # Plain HTTP is for local tools and tests only: it never leaves the loopback interface.
            insecure = web.TCPSite(self._runner, "127.0.0.1", self.config.insecure_port)
            await insecure.start()
            self.insecure_port = _bound_port(insecure)
            self.insecure_url = f"http://127.0.0.1:{self.insecure_port}"

    async def stop(self) -> None:
        """Drain: end watches, finish requests in progress, close the store."""
        self._stopping = True
        # Watches first: a client whose watch ends re-watches at once, and such a request must find
        # the server refusing new watches (503), not open a watch cache on a store about to close.
        for subscriber in list(self.watchers):
            subscriber.end()
        while self._components:
            await self._components.pop().stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.custom is not None:
            await self.custom.stop()
        for subscriber in list(self.watchers):
            subscriber.end()
        await self._end_watch_streams()
        for cache in self._caches.values():
            await cache.stop()
        self._caches.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if getattr(self, "security", None) is not None:
            self.security.stop()
        if self.store is not None:
            await self.store.close()
            self.store = None

    async def _end_watch_streams(self, grace: float = 0.5) -> None:
        """Wait briefly for watch handlers to finish their streams, then cancel the ones still
        writing (a client that stopped reading): the listener's shutdown would otherwise wait its
        whole timeout for them."""
        pending = {task for task in self.watch_tasks if not task.done()}
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=grace)

    async def __aenter__(self) -> ApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- kubeconfig ----

    def kubeconfig(self, server: str | None = None) -> dict:
        ca = base64.b64encode(self.ca_path.read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "pinnace", "cluster": {"server": server or self.url, "certificate-authority-data": ca}}],
            "users": [{"name": "admin", "user": {"token": self.admin_token}}],
            "contexts": [{"name": "pinnace", "context": {"cluster": "pinnace", "user": "admin", "namespace": "default"}}],
            "current-context": "pinnace",
            "preferences": {},
        }

    def write_kubeconfig(self) -> Path:
        path = self.kubeconfig_path
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False))
        tmp.chmod(0o600)
        tmp.replace(path)
        return path

    # ---- watch caches and namespaces ----

    def watch_cache(self, info: ResourceInfo) -> WatchCache:
        prefix = version_scoped_prefix(info)
        cache = self._caches.get(prefix)
        if cache is None:
            if self._stopping:
                # A new cache would follow a store that is closing (and retry forever once closed).
                raise ServiceUnavailable("the server is shutting down")
            cache = self._caches[prefix] = WatchCache(self.store, prefix)
        return cache

    async def _follow_namespaces(self) -> None:
        """Keep `registry.namespaces` current from the namespaces watch cache (checked on every create)."""
        info = self.kinds.by_resource("v1/namespaces")
        cache = self.watch_cache(info)

        def on_event(event: CachedEvent) -> None:
            name = event.key.rsplit("/", 1)[-1]
            if event.type == "DELETED":
                self.registry.namespaces.pop(name, None)
            else:
                self.registry.namespaces[name] = event.object

        def on_restart() -> None:
            # Changes may have been missed: forget the table; lookups fall back to the store.
            self.registry.namespaces.clear()

        cache.add_listener(on_event, on_restart)
        await cache.start()
        page = await self.registry.list_page(info, None, revision=None, limit=0, continue_token=None)
        for ns in page.items:
            self.registry.namespaces.setdefault(ns["metadata"]["name"], ns)

    async def _bootstrap_namespaces(self) -> None:
        info = self.kinds.by_resource("v1/namespaces")
        for name in DEFAULT_NAMESPACES:
            with contextlib.suppress(AlreadyExists):
                ns = await self.registry.create(info, None, {"metadata": {"name": name}})
                self.registry.namespaces[name] = ns

    def advertise_address(self) -> str:
        if self.config.advertise_address:
            return self.config.advertise_address
        bind = self.config.bind_address
        if bind not in ("0.0.0.0", "::", ""):
            return bind
        for address in certificates.host_addresses():
            if ":" not in address and not address.startswith("127."):
                return address
        return "127.0.0.1"

    async def _bootstrap_kubernetes_service(self) -> None:
        """The `kubernetes` Service (10.43.0.1:443) and its endpoints point at this server."""
        services = self.kinds.by_resource("v1/services")
        service = {
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"component": "apiserver", "provider": "kubernetes"}},
            "spec": {"type": "ClusterIP", "clusterIP": KUBERNETES_SERVICE_IP,
                     "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": self.port}]},
        }
        with contextlib.suppress(AlreadyExists):
            await self.registry.create(services, "default", service)
        address, port = self.advertise_address(), self.port
        endpoints_info = self.kinds.by_resource("v1/endpoints")
        endpoints = {
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": address}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
        }
        await self._put(endpoints_info, "default", endpoints, lambda old: old.get("subsets") != endpoints["subsets"])
        slices = self.kinds.by_resource("discovery.k8s.io/v1/endpointslices")
        endpoint_slice = {
            "metadata": {"name": "kubernetes", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "kubernetes",
                                    "endpointslice.kubernetes.io/managed-by": "kube-apiserver"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
        }
        await self._put(slices, "default", endpoint_slice, lambda old: old.get("endpoints") != endpoint_slice["endpoints"] or old.get("ports") != endpoint_slice["ports"])
        # A restart on another port moves the Service's targetPort too.
        current = await self.registry.get(services, "default", "kubernetes")
        ports = current["spec"].get("ports") or []
        if ports and ports[0].get("targetPort") != port:
            ports[0]["targetPort"] = port
            await self.registry.update(services, "default", "kubernetes", current)

    async def _start_components(self) -> None:
        """Node CSR approval and signing (this process holds the CA key) and the lease that keeps this
        server in the `kubernetes` Service's endpoints next to the other servers of an HA control plane."""
        from pinnace.apiserver.csrsigning import CSRSigner
        from pinnace.apiserver.endpointleases import EndpointLeaseReconciler

        for component in (CSRSigner(self), EndpointLeaseReconciler(self)):
            await component.start()
            self._components.append(component)

    async def _put(self, info: ResourceInfo, namespace: str, obj: dict, changed: Any) -> None:
        try:
            await self.registry.create(info, namespace, dict(obj))
        except AlreadyExists:
            old = await self.registry.get(info, namespace, obj["metadata"]["name"])
            if changed(old):
                new = {**old, **{k: v for k, v in obj.items() if k != "metadata"}}
                await self.registry.update(info, namespace, obj["metadata"]["name"], new)

    async def _sweep_events(self) -> None:
        """Delete Events older than `event_ttl` (Kubernetes gives them a one-hour etcd lease)."""
        infos = [self.kinds.by_resource("v1/events"), self.kinds.by_resource("events.k8s.io/v1/events")]
        while True:
            await asyncio.sleep(self.config.event_sweep_interval)
            cutoff = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=self.config.event_ttl)
            for info in infos:
                try:
                    await self._expire_events(info, cutoff)
                except (StoreError, ApiError) as error:
                    log.warning("event sweep of %s failed: %s", info.name, error)

    async def _expire_events(self, info: ResourceInfo, cutoff: datetime.datetime) -> None:
        result = await self.store.list(version_scoped_prefix(info))
        for kv in result.items:
            event = object_of(kv)
            meta = event["metadata"]
            stamp = event.get("lastTimestamp") or event.get("deprecatedLastTimestamp") or meta.get("creationTimestamp")
            try:
                when = parse_time(stamp[:19] + "Z") if stamp else None
            except ValueError:
                when = None
            if when is not None and when < cutoff:
                with contextlib.suppress(StoreError):
                    await self.store.delete(kv.key, kv.mod_revision)

    # ---- request handling ----

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        started = time.perf_counter()
        long_running = request.query.get("watch", "").lower() in ("true", "1") or request.path.endswith(
            ("/log", "/exec", "/attach", "/portforward")
        )
        mutating = request.method in _MUTATING
        counted = False
        response: web.StreamResponse
        try:
            try:
                self._authenticate(request)
            except Unauthorized:
                self.security.audit_unauthenticated(request)  # authentication is the first step: received now
                raise
            if not long_running:
                if mutating:
                    if self._mutating_inflight >= self.config.max_mutating_requests_inflight:
                        raise TooManyRequests("Too many requests, please try again later.", retry_after=1)
                    self._mutating_inflight += 1
                elif self._inflight >= self.config.max_requests_inflight:
                    raise TooManyRequests("Too many requests, please try again later.", retry_after=1)
                else:
                    self._inflight += 1
                counted = True
            self.metrics.inflight = self._inflight + self._mutating_inflight
            response = await self.security.serve(request, handler)
        except ApiError as error:
            response = error_response(error)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("internal error serving %s %s", request.method, request.path_qs)
            response = internal_error_response(f"an internal error occurred serving {request.method} {request.path}")
        finally:
            if counted:
                if mutating:
                    self._mutating_inflight -= 1
                else:
                    self._inflight -= 1
        elapsed = time.perf_counter() - started
        verb = request.get(VERB) or request.method
        resource = request.get(RESOURCE, "")
        self.metrics.observe(verb, resource, response.status, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s %s %d %.1fms", request.method, request.path_qs, verb, response.status, elapsed * 1000)
        return response

    def _authenticate(self, request: web.Request) -> None:
        if not request.secure:
            request[USER] = INSECURE  # the loopback-only plain HTTP listener
            return
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            user = self.auth.from_token(header[7:].strip()) or self.security.authenticate_token(header[7:].strip())
            if user is not None:
                request[USER] = user
                return
            raise Unauthorized("Unauthorized")
        transport = request.transport
        peercert = transport.get_extra_info("peercert") if transport is not None else None
        user = self.auth.from_certificate(peercert)
        if user is not None:
            request[USER] = user
            return
        if request.path in _PUBLIC_PATHS:
            return
        raise Unauthorized("Unauthorized")

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        # The roots first: "/apis/" (the official client's ApisApi asks for it) is the root, not a group.
        if path in ("/api", "/api/"):
            return self._discovery_root(request, legacy=True)
        if path in ("/apis", "/apis/"):
            return self._discovery_root(request, legacy=False)
        if path.startswith("/api/") or path.startswith("/apis/"):
            return await self._resource_request(request, path)
        if path == "/cacerts":
            return web.Response(body=self.ca_path.read_bytes(), content_type="application/x-pem-file")
        if path in ("/version", "/version/"):
            return web.Response(body=self._version_body, content_type="application/json")
        if path in ("/healthz", "/livez", "/readyz") or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            if self._stopping and path.startswith("/readyz"):
                raise ServiceUnavailable("the server is shutting down")
            return web.Response(text="ok", content_type="text/plain")
        if path == "/metrics":
            return web.Response(text=self.metrics.render(), content_type="text/plain", charset="utf-8")
        if path == "/":
            paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/metrics", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]
            paths += sorted(f"/apis/{g}/{v}" for g, vs in self.discovery.groups.items() if g for v in vs)
            return web.Response(body=orjson.dumps({"paths": paths}), content_type="application/json")
        raise NotFound("the server could not find the requested resource")

    def _discovery_root(self, request: web.Request, legacy: bool) -> web.Response:
        version = aggregated_version(request.headers.get("Accept"))
        if version is not None:
            response = web.Response(body=self.discovery.aggregated(legacy, version))
            response.headers["Content-Type"] = AGGREGATED_TYPES[version]
            response.headers["Vary"] = "Accept"
            return response
        if legacy:
            host = request.host or f"127.0.0.1:{self.port}"
            body = self.discovery.api_versions(host)
        else:
            body = self.discovery.api_group_list()
        response = web.Response(body=body, content_type="application/json")
        response.headers["Vary"] = "Accept"
        return response

    async def _resource_request(self, request: web.Request, path: str) -> web.StreamResponse:
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            group, version, rest = "", parts[1] if len(parts) > 1 else "", parts[2:]
        else:
            if len(parts) < 3:
                body = self.discovery.api_group(parts[1]) if len(parts) == 2 else None
                if body is None:
                    raise NotFound("the server could not find the requested resource")
                return web.Response(body=body, content_type="application/json")
            group, version, rest = parts[1], parts[2], parts[3:]
            if group == metricsapi.GROUP and rest:
                return await self.metrics_api.handle(request, version, rest)
        if not rest:
            body = self.discovery.resource_list(group, version)
            if body is None:
                raise NotFound("the server could not find the requested resource")
            return web.Response(body=body, content_type="application/json")
        namespace = None
        if rest[0] == "namespaces" and len(rest) >= 3 and self.lookup(group, version, rest[2]) is not None and rest[2] != "namespaces":
            namespace, rest = rest[1], rest[2:]
        info = self.lookup(group, version, rest[0])
        # `<resource>/<name>/proxy/<path...>` carries a path of its own after the subresource.
        if info is None or (len(rest) > 3 and rest[2] != "proxy"):
            raise NotFound("the server could not find the requested resource")
        if namespace is not None and not info.namespaced:
            raise NotFound("the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if info.namespaced and name is not None and namespace is None:
            raise NotFound("the server could not find the requested resource")
        if subresource is not None and subresource not in info.subresources:
            raise NotFound("the server could not find the requested resource")
        request[RESOURCE] = info.plural if not subresource else f"{info.plural}/{subresource}"
        target = Target(info, namespace, name, subresource)
        method = request.method
        handlers = self.handlers
        if subresource in _STREAMING_SUBRESOURCES:
            request[VERB] = method
            return await self.node_proxy(request, target, subresource)  # the kubelet's own content types
        output = negotiate(request.headers.get("Accept"))
        if subresource is not None:
            request[VERB] = method
            return await handlers.subresource(request, target, output)
        if info.name == "v1/bindings" and method == "POST" and name is None:
            request[VERB] = "CREATE"
            return await handlers.binding(request, target, output)
        if name is None:
            if method == "GET":
                if request.query.get("watch", "").lower() in ("true", "1"):
                    verb, call = "watch", handlers.watch
                else:
                    verb, call = "list", handlers.list
            elif method == "POST":
                verb, call = "create", handlers.create
            elif method == "DELETE":
                verb, call = "deletecollection", handlers.delete_collection
            else:
                verb, call = method.lower(), None
        elif method == "GET":
            verb, call = "get", handlers.get
        elif method == "PUT":
            verb, call = "update", handlers.update
        elif method == "PATCH":
            verb, call = "patch", handlers.patch
        elif method == "DELETE":
            verb, call = "delete", handlers.delete
        else:
            verb, call = method.lower(), None
        request[VERB] = verb.upper() if verb != "deletecollection" else "DELETECOLLECTION"
        if call is None or verb not in info.verbs:
            raise MethodNotAllowed(
                f"the server does not allow this method on the requested resource ({method} {info.plural})",
                kind=info.plural, group=info.group,
            )
        if verb == "create" and info.namespaced and namespace is None:
            raise MethodNotAllowed(
                f"the server does not allow this method on the requested resource ({method} {info.plural})",
                kind=info.plural, group=info.group,
            )
        if verb == "create" and self.custom is not None and self.custom.is_terminating(info):
            # kube-apiserver's CRD handler: the kind stays served while its objects are deleted, for
            # every verb but create.
            raise MethodNotAllowed("create not allowed while custom resource definition is terminating",
                                   kind=info.plural, group=info.group)
        return await call(request, target, output)

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        """A served resource: built in, or declared by a CustomResourceDefinition."""
        info = self.kinds.lookup(group, version, plural)
        if info is None and self.custom is not None:
            info = self.custom.lookup(group, version, plural)
        return info

    def note_write(self, key: str, revision: int) -> None:
        """Every acknowledged store write (from the store wrapper): the watch cache of its resource
        learns how far it must get before `cached_objects` may answer from it."""
        for prefix, cache in self._caches.items():
            if key.startswith(prefix):
                cache.note_write(revision)
                return

    async def cached_objects(self, resource: str, namespace: str | None = None) -> list[dict]:
        """The objects of `resource` ("v1/limitranges"), in `namespace` if given, from memory.

        Served by the resource's watch cache, like an informer, with no store read per call; unlike an
        informer it first waits (briefly) for the events of every write this server has acknowledged,
        so a caller sees its own writes (ResourceQuota counts the pod created just before). Falls back
        to the store when the cache cannot catch up. The dicts are shared: never mutate them.
        """
        info = self.kinds.by_resource(resource)
        cache = self.watch_cache(info)
        objects = await cache.current_objects()
        if not await cache.caught_up():
            page = await self.registry.list_page(info, namespace if info.namespaced else None,
                                                 revision=None, limit=0, continue_token=None)
            return page.items
        if namespace is None or not info.namespaced:
            return list(objects.values())
        return [obj for obj in objects.values() if obj["metadata"].get("namespace") == namespace]

    def refresh_discovery(self) -> None:
        self.discovery = Discovery(self.kinds, self.custom.infos() if self.custom is not None else [])

    # ---- hooks for subresources owned elsewhere ----

    async def node_proxy(self, request: web.Request, target: Target, subresource: str) -> web.StreamResponse:
        """pods/log|exec|attach|portforward, nodes/proxy: streamed from the node agent."""
        try:
            module = importlib.import_module("pinnace.apiserver.node_proxy")
        except ModuleNotFoundError:
            module = None
        handler = getattr(module, "handle", None) if module is not None else None
        if handler is None:
            raise ServiceUnavailable(
                f"{target.info.plural}/{subresource} is not available: this server has no node proxy"
            )
        return await handler(self, request, target, subresource)


def _bound_port(site: web.TCPSite) -> int:
    server = site._server  # aiohttp keeps the asyncio server here; its sockets know the real port
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            return int(sock.getsockname()[1])
    raise RuntimeError("the listener has no socket")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
