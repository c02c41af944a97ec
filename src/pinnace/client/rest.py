"""The async REST client every pinnace component uses to talk to the API server.

A resource is named `"<group>/<version>/<plural>"` (`"v1/pods"` for the core group), which maps to
`/api/v1/...` or `/apis/<group>/<version>/...`. Whether a resource is namespaced comes from discovery
(`/api/v1`, `/apis/<g>/<v>`, fetched once per group-version and cached); when discovery cannot be read the
client falls back to "namespaced if a namespace is known". On a namespaced resource a missing namespace
means: the object's own `metadata.namespace`, else the client's default namespace (from the kubeconfig
context); for `list` and `watch` it means all namespaces.

Failures:
- the server answered with an error: the typed `ApiError` subclass for its `Status` (see errors.py);
- the server could not be reached, or the connection broke: `ConnectionFailed` (an `OSError`).

Retries (jittered exponential back-off, at most `max_retries`), matching what is safe:
- 429, and any 5xx carrying `Retry-After`: the server did not act on the request, so every verb is retried,
  after the `Retry-After` delay when given;
- a connection that could not be opened: the request was never sent, so every verb is retried;
- 502/503/504 without `Retry-After`, or a connection that broke mid-request: only GET (and PUT, whose
  resourceVersion precondition turns a duplicate into a Conflict rather than a double write).

Several API servers (an HA control plane): `Client(server="https://a:6443,https://b:6443")` or
`Client(servers=[...])`. Requests go to one server at a time; when a connection to it cannot be opened
(or breaks, for the verbs above that may be retried) the client moves on to the next server at once, and
backs off only after every server has failed once. A watch that cannot connect moves the client on too,
so the caller's re-watch (informers re-list and re-watch) lands on a live server. All servers must share
the cluster CA and credentials, as the servers of one pinnace control plane do.

A client-side token bucket (`qps`, `burst`) paces request starts, like client-go's; watches are paced on
connect only. Connections are pooled (keep-alive) by one aiohttp session per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from pinnace.client.errors import ApiError, NotFound, error_from_status
from pinnace.client.kubeconfig import ClientConfig, load_incluster_config, load_kubeconfig
from pinnace.client.ratelimit import TokenBucket, jittered_backoff

log = logging.getLogger("pinnace.client")

PATCH_CONTENT_TYPES = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    # Server-side apply is declared as YAML; JSON is a subset of YAML, so JSON bodies are sent as-is.
    "apply": "application/apply-patch+yaml",
}

_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT"})

# Metadata-only reads (client-go's metadata client): the server answers PartialObjectMetadata(List),
# or plain JSON if it cannot.
ACCEPT_PARTIAL = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json"
ACCEPT_PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"


class ConnectionFailed(ConnectionError):
    """The API server could not be reached, or the connection broke before an answer was read."""


def parse_resource(resource: str) -> tuple[str, str, str]:
    """`"apps/v1/deployments"` -> ("apps", "v1", "deployments"); `"v1/pods"` -> ("", "v1", "pods")."""
    parts = resource.strip("/").split("/")
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ValueError(f"resource must be '<group>/<version>/<plural>' or 'v1/<plural>', got {resource!r}")


def group_version_path(group: str, version: str) -> str:
    return f"/api/{version}" if not group else f"/apis/{group}/{version}"


def resource_path(resource: str, namespace: str | None = None, name: str | None = None,
                  subresource: str | None = None) -> str:
    group, version, plural = parse_resource(resource)
    path = group_version_path(group, version)
    if namespace:
        path += f"/namespaces/{quote(namespace, safe='')}"
    path += f"/{plural}"
    if name is not None:
        if not name:
            raise ValueError(f"empty name for {resource}")
        path += f"/{quote(name, safe='')}"
    if subresource:
        path += f"/{subresource}"
    return path


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date: rare from API servers; fall back to our own back-off


class Client:
    """Async Kubernetes REST client. Create inside or outside a running loop; the HTTP session is opened
    on first use. Always `await client.close()` (or use `async with`)."""

    def __init__(
        self,
        server: str = "",
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        insecure: bool = False,
        *,
        config: ClientConfig | None = None,
        namespace: str | None = None,
        qps: float | None = 100.0,
        burst: int = 200,
        max_retries: int = 5,
        timeout: float = 30.0,
        user_agent: str = "pinnace",
        field_manager: str = "pinnace",
        servers: list[str] | None = None,
    ) -> None:
        urls = split_servers(servers or (config.server if config is not None else server))
        if not urls:
            raise ValueError("no API server URL given")
        if config is None:
            config = ClientConfig(server=urls[0], token=token, ca_file=ca_file, cert_file=cert_file,
                                  key_file=key_file, insecure=insecure)
        self.config = config
        self.servers = urls
        self._current = 0
        self.namespace = namespace or config.namespace or "default"
        self.max_retries = max_retries
        self.timeout = timeout
        self.user_agent = user_agent
        self.field_manager = field_manager
        self.retry_base = 0.1  # seconds; the first retry waits 0.1-0.15 s, doubling up to retry_cap
        self.retry_cap = 5.0
        self._limiter = TokenBucket(qps, burst) if qps else None
        self._session: aiohttp.ClientSession | None = None
        self._ssl = config.ssl_context()
        self._headers = {"Accept": "application/json", "User-Agent": user_agent}
        if config.token:
            self._headers["Authorization"] = f"Bearer {config.token}"
        self._auth = aiohttp.BasicAuth(config.username, config.password or "") if config.username else None
        # group-version -> {plural: resource dict}; filled from discovery on demand.
        self._discovery: dict[str, dict[str, dict[str, Any]]] = {}
        self._discovery_locks: dict[str, asyncio.Lock] = {}
        self._warned: set[str] = set()
        self._refreshed: dict[str, float] = {}

    @classmethod
    async def from_kubeconfig(cls, path: str | os.PathLike[str] | None = None, context: str | None = None,
                              **kwargs: Any) -> Client:
        """A client for the kubeconfig at `path` (default: `KUBECONFIG`, else ~/.kube/config)."""
        config = load_kubeconfig(path, context)
        return cls(config.server, config=config, **kwargs)

    @classmethod
    def in_cluster(cls, **kwargs: Any) -> Client:
        """A client for code running in a pod: the service account's token, CA and namespace."""
        config = load_incluster_config()
        return cls(config.server, config=config, **kwargs)

    @classmethod
    def from_config(cls, config: ClientConfig, **kwargs: Any) -> Client:
        return cls(config.server, config=config, **kwargs)

    async def __aenter__(self) -> Client:
        return self

    @property
    def server(self) -> str:
        """The API server URL requests go to now (one of `servers`)."""
        return self.servers[self._current]

    @server.setter
    def server(self, value: str) -> None:
        self.servers = split_servers(value)
        self._current = 0

    def _fail_over(self, failed: str) -> bool:
        """Move on from `failed` to the next server; False when there is only one. Several requests may
        fail on the same server at once: only the first moves the client, the others follow it."""
        if len(self.servers) < 2:
            return False
        if self.server == failed:
            self._current = (self._current + 1) % len(self.servers)
            log.info("API server %s unreachable; moving to %s", failed, self.server)
        return True

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # limit=0: watches hold their connection for minutes; a bounded pool would let many
            # informers starve ordinary requests.
            connector = aiohttp.TCPConnector(limit=0, ssl=self._ssl if self._ssl is not None else True,
                                             keepalive_timeout=60)
            self._session = aiohttp.ClientSession(base_url=None, connector=connector, headers=self._headers,
                                                  auth=self._auth, skip_auto_headers=("Content-Type",))
        return self._session

    # -- low level -----------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: float | None = None,
        idempotent: bool | None = None,
        decode: bool = True,
        accept: str | None = None,
    ) -> Any:
        """Send one request (with the retries described in the module docstring) and return the decoded
        JSON body (or text when `decode` is false or the body is not JSON)."""
        method = method.upper()
        if idempotent is None:
            idempotent = method in _IDEMPOTENT
        data = None
        headers: dict[str, str] | None = None
        if body is not None:
            data = body if isinstance(body, bytes) else orjson.dumps(body)
            headers = {"Content-Type": content_type}
        if accept is not None:
            headers = {**(headers or {}), "Accept": accept}
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.timeout, sock_connect=10)
        attempt = 0
        unanswered = 0  # servers tried in a row without an answer: back off only once all were tried
        while True:
            if self._limiter is not None:
                await self._limiter.acquire()
            base = self.server
            url = base + path
            try:
                async with self.session.request(method, url, params=params, data=data, headers=headers,
                                                timeout=client_timeout,
                                                server_hostname=self.config.tls_server_name) as response:
                    payload = await response.read()
                    if "Warning" in response.headers:
                        self._warn(response.headers.getall("Warning"))
                    if response.status < 400:
                        return self._decode(payload, response.content_type, decode)
                    error = error_from_status(self._decode(payload, response.content_type, True), response.status)
                    retry_after = _retry_after(response.headers)
                    if attempt < self.max_retries and self._retryable(response.status, retry_after, idempotent):
                        delay = retry_after if retry_after is not None else self._backoff(attempt)
                        log.debug("%s %s: %s; retrying in %.2fs", method, path, error, delay)
                        attempt += 1
                        await asyncio.sleep(delay)
                        continue
                    raise error
            except (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError) as error:
                # A certificate the client does not trust (or that does not trust us) will not change.
                raise ConnectionFailed(f"{method} {url}: TLS failure: {error}") from error
            except aiohttp.ClientConnectorError as error:
                # The connection was never opened, so the request was never sent: safe for every verb.
                unanswered += 1
                if self._fail_over(base) and unanswered < len(self.servers):
                    continue
                if attempt >= self.max_retries:
                    raise ConnectionFailed(f"{method} {url}: {error}") from error
                unanswered = 0
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as error:
                if not idempotent or attempt >= self.max_retries:
                    self._fail_over(base)
                    raise ConnectionFailed(f"{method} {url}: {error or type(error).__name__}") from error
                unanswered += 1
                if self._fail_over(base) and unanswered < len(self.servers):
                    continue
                unanswered = 0
            delay = self._backoff(attempt)
            attempt += 1
            log.debug("%s %s: connection failed; retrying in %.2fs", method, path, delay)
            await asyncio.sleep(delay)

    def _warn(self, headers: list[str]) -> None:
        # `Warning: 299 - "message"` (deprecations, ignored fields): kubectl prints each; log each once.
        for header in headers:
            _, _, text = header.partition(" - ")
            text = text.strip().strip('"') or header
            if text not in self._warned:
                self._warned.add(text)
                log.warning("API server warning: %s", text)

    @staticmethod
    def _retryable(code: int, retry_after: float | None, idempotent: bool) -> bool:
        if code == 429:
            return True
        if code >= 500 and retry_after is not None:
            return True
        return idempotent and code in (502, 503, 504)

    def _backoff(self, attempt: int) -> float:
        return jittered_backoff(attempt, self.retry_base, self.retry_cap)

    @staticmethod
    def _decode(payload: bytes, content_type: str, decode: bool) -> Any:
        if not decode:
            return payload.decode("utf-8", "replace")
        if not payload:
            return {}
        if content_type in ("application/json", "") or content_type.endswith("+json") or payload[:1] in b"{[":
            try:
                return orjson.loads(payload)
            except orjson.JSONDecodeError:
                pass
        return payload.decode("utf-8", "replace")

    # -- discovery -----------------------------------------------------------------------------------

    async def api_resources(self, group_version: str, refresh: bool = False) -> dict[str, dict[str, Any]]:
        """The APIResourceList of one group-version ("v1", "apps/v1"), as {plural: resource}, cached."""
        cached = self._discovery.get(group_version)
        if cached is not None and not refresh:
            return cached
        lock = self._discovery_locks.setdefault(group_version, asyncio.Lock())
        async with lock:
            cached = self._discovery.get(group_version)
            if cached is not None and not refresh:
                return cached
            path = f"/api/{group_version}" if "/" not in group_version else f"/apis/{group_version}"
            document = await self.request("GET", path)
            resources = {r["name"]: r for r in document.get("resources", []) if isinstance(r, dict)}
            self._discovery[group_version] = resources
            return resources

    def invalidate_discovery(self) -> None:
        self._discovery.clear()

    async def resource_for(self, api_version: str, kind: str) -> str:
        """The resource string for a kind: `resource_for("apps/v1", "Deployment")` -> "apps/v1/deployments"."""
        for refresh in (False, True):  # a CRD created after the first look needs one fresh discovery
            try:
                resources = await self.api_resources(api_version, refresh=refresh)
            except NotFound:
                resources = {}
            for plural, info in resources.items():
                if "/" not in plural and info.get("kind") == kind:
                    return f"{api_version}/{plural}"
        raise NotFound({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                        "code": 404, "message": f'no resource of kind "{kind}" in "{api_version}"'})

    async def is_namespaced(self, resource: str) -> bool | None:
        """True/False from discovery; None when discovery does not know the resource."""
        group, version, plural = parse_resource(resource)
        group_version = f"{group}/{version}" if group else version
        try:
            resources = await self.api_resources(group_version)
        except (ApiError, ConnectionFailed) as error:
            log.debug("discovery of %s failed: %s", group_version, error)
            return None
        info = resources.get(plural)
        if info is None and self._may_refresh(group_version):
            # Perhaps a CustomResourceDefinition established after the first look: one fresh discovery.
            try:
                info = (await self.api_resources(group_version, refresh=True)).get(plural)
            except (ApiError, ConnectionFailed):
                info = None
        return None if info is None else bool(info.get("namespaced"))

    def _may_refresh(self, group_version: str, interval: float = 10.0) -> bool:
        now = time.monotonic()
        if now - self._refreshed.get(group_version, -interval) < interval:
            return False
        self._refreshed[group_version] = now
        return True

    async def _namespace_for(self, resource: str, namespace: str | None, obj: Mapping[str, Any] | None = None) -> str | None:
        namespaced = await self.is_namespaced(resource)
        if namespaced is False:
            return None
        namespace = namespace or ((obj or {}).get("metadata") or {}).get("namespace")
        if namespaced is None:
            return namespace or None
        return namespace or self.namespace

    # -- verbs ---------------------------------------------------------------------------------------

    async def get(self, resource: str, name: str, namespace: str | None = None, *,
                  resource_version: str | None = None) -> dict[str, Any]:
        namespace = await self._namespace_for(resource, namespace)
        params = {"resourceVersion": resource_version} if resource_version is not None else None
        return await self.request("GET", resource_path(resource, namespace, name), params=params)

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | Mapping[str, str] | None = None,
        limit: int | None = None,
        resource_version: str | None = None,
        *,
        continue_token: str | None = None,
        resource_version_match: str | None = None,
        timeout: float | None = None,
        metadata_only: bool = False,
    ) -> dict[str, Any]:
        """One List (page); `metadata.continue` is set when `limit` cut it short. Namespace None: all.
        `metadata_only`: items are PartialObjectMetadata (kind, apiVersion, metadata), far smaller."""
        params = _selector_params(label_selector, field_selector)
        if limit:
            params["limit"] = str(limit)
        if continue_token:
            params["continue"] = continue_token
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if resource_version_match:
            params["resourceVersionMatch"] = resource_version_match
        namespace = namespace if namespace else None
        return await self.request("GET", resource_path(resource, namespace), params=params, timeout=timeout,
                                  accept=ACCEPT_PARTIAL_LIST if metadata_only else None)

    async def list_all(self, resource: str, namespace: str | None = None,
                       label_selector: str | Mapping[str, str] | None = None,
                       field_selector: str | Mapping[str, str] | None = None,
                       page_size: int = 500) -> dict[str, Any]:
        """Every page of a list, joined into one List object (items + the snapshot's resourceVersion)."""
        items: list[dict[str, Any]] = []
        token: str | None = None
        while True:
            page = await self.list(resource, namespace, label_selector, field_selector, limit=page_size,
                                   continue_token=token)
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                page["items"] = items
                page.setdefault("metadata", {}).pop("continue", None)
                return page

    async def create(self, resource: str, obj: Mapping[str, Any], namespace: str | None = None, *,
                     dry_run: bool = False, field_manager: str | None = None) -> dict[str, Any]:
        namespace = await self._namespace_for(resource, namespace, obj)
        return await self.request("POST", resource_path(resource, namespace), body=obj,
                                  params=_write_params(dry_run, field_manager))

    async def update(self, resource: str, obj: Mapping[str, Any], namespace: str | None = None, *,
                     dry_run: bool = False, field_manager: str | None = None) -> dict[str, Any]:
        """PUT the whole object; the server rejects it with Conflict if its resourceVersion is stale."""
        return await self._put(resource, obj, namespace, None, dry_run, field_manager)

    async def update_status(self, resource: str, obj: Mapping[str, Any], namespace: str | None = None, *,
                            dry_run: bool = False, field_manager: str | None = None) -> dict[str, Any]:
        return await self._put(resource, obj, namespace, "status", dry_run, field_manager)

    async def replace_subresource(self, resource: str, name: str, subresource: str, body: Mapping[str, Any],
                                  namespace: str | None = None) -> dict[str, Any]:
        """PUT a subresource such as `scale`."""
        namespace = await self._namespace_for(resource, namespace, body)
        return await self.request("PUT", resource_path(resource, namespace, name, subresource), body=body)

    async def _put(self, resource: str, obj: Mapping[str, Any], namespace: str | None, subresource: str | None,
                   dry_run: bool, field_manager: str | None) -> dict[str, Any]:
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            raise ValueError(f"update of {resource} needs metadata.name")
        namespace = await self._namespace_for(resource, namespace, obj)
        return await self.request("PUT", resource_path(resource, namespace, name, subresource), body=obj,
                                  params=_write_params(dry_run, field_manager))

    async def patch(
        self,
        resource: str,
        name: str,
        patch: Any,
        namespace: str | None = None,
        patch_type: str = "merge",
        subresource: str | None = None,
        field_manager: str | None = None,
        force: bool = False,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """PATCH with `patch_type` "merge" | "strategic" | "json" (a list of ops) | "apply" (server-side
        apply; `field_manager` defaults to the client's, and `force` takes over conflicting fields)."""
        try:
            content_type = PATCH_CONTENT_TYPES[patch_type]
        except KeyError:
            raise ValueError(f"patch_type must be one of {sorted(PATCH_CONTENT_TYPES)}") from None
        if patch_type == "apply":
            field_manager = field_manager or self.field_manager
        params = _write_params(dry_run, field_manager)
        if force:
            params["force"] = "true"
        namespace = await self._namespace_for(resource, namespace, patch if isinstance(patch, Mapping) else None)
        # A server-side apply creates the object when it is missing, so a retry after a broken connection
        # is harmless; other patches are not generally idempotent (json "add" to a list).
        return await self.request("PATCH", resource_path(resource, namespace, name, subresource), body=patch,
                                  content_type=content_type, params=params, idempotent=patch_type == "apply")

    async def apply(self, resource: str, obj: Mapping[str, Any], namespace: str | None = None, *,
                    field_manager: str | None = None, force: bool = False, subresource: str | None = None,
                    dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply of a full (partial) object: the shorthand for `patch(..., patch_type="apply")`."""
        name = (obj.get("metadata") or {}).get("name")
        if not name:
            raise ValueError("apply needs metadata.name")
        return await self.patch(resource, name, obj, namespace, "apply", subresource, field_manager, force,
                                dry_run=dry_run)

    async def delete(
        self,
        resource: str,
        name: str,
        namespace: str | None = None,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        preconditions: Mapping[str, str] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """DELETE; returns the object (still terminating, with deletionTimestamp) or a Success Status."""
        namespace = await self._namespace_for(resource, namespace)
        body = _delete_options(grace_period_seconds, propagation_policy, preconditions, dry_run)
        return await self.request("DELETE", resource_path(resource, namespace, name), body=body)

    async def delete_collection(
        self,
        resource: str,
        namespace: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | Mapping[str, str] | None = None,
        grace_period_seconds: int | None = None,
        propagation_policy: str | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        namespace = await self._namespace_for(resource, namespace)
        body = _delete_options(grace_period_seconds, propagation_policy, None, dry_run)
        return await self.request("DELETE", resource_path(resource, namespace),
                                  params=_selector_params(label_selector, field_selector), body=body)

    async def post_subresource(self, resource: str, name: str, subresource: str, body: Mapping[str, Any],
                               namespace: str | None = None) -> dict[str, Any]:
        """POST to a subresource: `pods/binding`, `pods/eviction`, `serviceaccounts/token`."""
        namespace = await self._namespace_for(resource, namespace, body)
        return await self.request("POST", resource_path(resource, namespace, name, subresource), body=body)

    async def get_subresource(self, resource: str, name: str, subresource: str, namespace: str | None = None,
                              params: Mapping[str, str] | None = None, decode: bool = True) -> Any:
        """GET a subresource: `scale`, `status`, or `log` (text; pass decode=False)."""
        namespace = await self._namespace_for(resource, namespace)
        return await self.request("GET", resource_path(resource, namespace, name, subresource), params=params,
                                  decode=decode)

    # -- watch ---------------------------------------------------------------------------------------

    async def watch(
        self,
        resource: str,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | Mapping[str, str] | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
        *,
        read_timeout: float | None = None,
        metadata_only: bool = False,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yield `(type, object)` for ADDED / MODIFIED / DELETED / BOOKMARK events after `resource_version`.

        Ends normally when the server closes the stream (its `timeoutSeconds`). An ERROR event is raised as
        its typed error (`Expired` for 410: re-list), a broken stream as `ConnectionFailed`, which is also
        what a stream silent for `read_timeout` seconds becomes (a peer that vanished without closing the
        connection; with bookmarks a healthy watch is never silent for long). Close the iterator when
        leaving early (`contextlib.aclosing`) to release the connection at once.
        """
        batches = self.watch_batches(resource, namespace, resource_version, label_selector, field_selector,
                                     timeout_seconds, allow_bookmarks, read_timeout=read_timeout,
                                     metadata_only=metadata_only)
        async with contextlib.aclosing(batches):
            async for batch in batches:
                for event in batch:
                    yield event

    async def watch_batches(
        self,
        resource: str,
        namespace: str | None = None,
        resource_version: str | None = None,
        label_selector: str | Mapping[str, str] | None = None,
        field_selector: str | Mapping[str, str] | None = None,
        timeout_seconds: int | None = None,
        allow_bookmarks: bool = True,
        *,
        read_timeout: float | None = None,
        metadata_only: bool = False,
    ) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
        """watch(), yielding the events of each network read as one list: for consumers such as informers
        that process many events per second, this saves an async-generator step per event."""
        params = _selector_params(label_selector, field_selector)
        params["watch"] = "true"
        if resource_version is not None:
            params["resourceVersion"] = resource_version
        if allow_bookmarks:
            params["allowWatchBookmarks"] = "true"
        if timeout_seconds is not None:
            params["timeoutSeconds"] = str(int(timeout_seconds))
        base = self.server
        url = base + resource_path(resource, namespace if namespace else None)
        # By default no read timeout: a quiet watch without bookmarks legitimately sends nothing for minutes.
        # The total is bounded by the server-side timeout plus slack, so a dead peer is noticed eventually.
        total = timeout_seconds + 60 if timeout_seconds else None
        client_timeout = aiohttp.ClientTimeout(total=total, sock_connect=10, sock_read=read_timeout)
        if self._limiter is not None:
            await self._limiter.acquire()
        try:
            headers = {"Accept": ACCEPT_PARTIAL} if metadata_only else None
            async with self.session.get(url, params=params, timeout=client_timeout, headers=headers,
                                        server_hostname=self.config.tls_server_name) as response:
                if response.status >= 400:
                    payload = await response.read()
                    raise error_from_status(self._decode(payload, response.content_type, True), response.status)
                async for batch in _watch_batches(response):
                    yield batch
        except aiohttp.ClientConnectorError as error:
            self._fail_over(base)  # the caller's next watch (or re-list) goes to the next server
            raise ConnectionFailed(f"watch {url}: {error}") from error
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as error:
            # A broken stream may be a server that went away: try the next one on re-watch. A healthy
            # server that merely closed the stream ends it normally and keeps the client where it is.
            self._fail_over(base)
            raise ConnectionFailed(f"watch {url}: {error or type(error).__name__}") from error


def split_servers(servers: str | list[str] | tuple[str, ...]) -> list[str]:
    """`"https://a:6443, https://b:6443"` or a list -> ["https://a:6443", "https://b:6443"]."""
    items = servers.split(",") if isinstance(servers, str) else [u for s in servers for u in s.split(",")]
    return [u.strip().rstrip("/") for u in items if u.strip()]


def _events_of(lines: list[bytes]) -> list[tuple[str, dict[str, Any]]]:
    batch: list[tuple[str, dict[str, Any]]] = []
    loads = orjson.loads
    for line in lines:
        if not line or line.isspace():
            continue
        event = loads(line)
        event_type = event.get("type")
        obj = event.get("object")
        if event_type == "ERROR":
            # Deliver what came before the error first: a consumer must not lose those events.
            raise _ErrorAfter(batch, error_from_status(obj, obj.get("code") if isinstance(obj, dict) else None))
        batch.append((event_type, obj))
    return batch


class _ErrorAfter(Exception):
    def __init__(self, batch: list[tuple[str, dict[str, Any]]], error: ApiError) -> None:
        self.batch = batch
        self.error = error


async def _watch_batches(response: aiohttp.ClientResponse) -> AsyncIterator[list[tuple[str, dict[str, Any]]]]:
    # The stream is JSON objects, one per line. Partial lines are kept as a list of pieces so a large
    # object arriving in many chunks is joined once, not re-copied on every chunk.
    pieces: list[bytes] = []
    try:
        async for chunk in response.content.iter_any():
            if b"\n" not in chunk:
                pieces.append(chunk)
                continue
            if pieces:
                pieces.append(chunk)
                chunk = b"".join(pieces)
                pieces = []
            lines = chunk.split(b"\n")
            tail = lines.pop()
            if tail:
                pieces.append(tail)
            batch = _events_of(lines)
            if batch:
                yield batch
        if pieces:
            batch = _events_of([b"".join(pieces)])
            if batch:
                yield batch
    except _ErrorAfter as stop:
        if stop.batch:
            yield stop.batch
        raise stop.error from None


def _selector_params(label_selector: str | Mapping[str, str] | None,
                     field_selector: str | Mapping[str, str] | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = _selector_string(label_selector)
    if field_selector:
        params["fieldSelector"] = _selector_string(field_selector)
    return params


def _selector_string(selector: str | Mapping[str, str]) -> str:
    if isinstance(selector, str):
        return selector
    return ",".join(f"{k}={v}" for k, v in selector.items())


def _write_params(dry_run: bool, field_manager: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if dry_run:
        params["dryRun"] = "All"
    if field_manager:
        params["fieldManager"] = field_manager
    return params


def _delete_options(grace_period_seconds: int | None, propagation_policy: str | None,
                    preconditions: Mapping[str, str] | None, dry_run: bool) -> dict[str, Any] | None:
    options: dict[str, Any] = {}
    if grace_period_seconds is not None:
        options["gracePeriodSeconds"] = int(grace_period_seconds)
    if propagation_policy:
        options["propagationPolicy"] = propagation_policy
    if preconditions:
        options["preconditions"] = dict(preconditions)
    if dry_run:
        options["dryRun"] = ["All"]
    if not options:
        return None
    return {"kind": "DeleteOptions", "apiVersion": "v1", **options}

