"""The node's service proxy: watches Services and EndpointSlices and keeps a proxy mode in step.

`Proxy(client, ProxyConfig(mode=...))` is what `pinnace proxy`, `pinnace agent` and `pinnace up` run.
Like kube-proxy it is level-triggered: every sync computes the whole desired state from the informer
caches (`model.build_service_ports`) and hands it to the mode, which applies only what changed.
Events mark the state dirty; a sync runs as soon as one is due but at most once per
`min_sync_interval` (so a burst of endpoint changes costs one sync), and a full sync, which also
repairs rules someone else removed, runs every `sync_period`.

Modes: `iptables` (kernel DNAT; needs root and iptables), `userspace` (an asyncio relay on loopback
ports; needs nothing), `auto` (iptables when root and `iptables-restore` exist, else userspace).
In userspace mode the proxy publishes each Service's loopback ports in the annotation
`pinnace.io/userspace-ports`, merge-patching only that key and only when its value changes, so it
never rewrites fields that controllers own.

`/healthz` (200 once a sync succeeded recently, else 503) and `/metrics` (Prometheus text: rules,
services, endpoints, last sync time and duration) are served on `healthz_port` (kube-proxy's
10256 by default; 0 picks a free port, None disables).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from pinnace.proxy.iptables import IptablesProxier, RenderOptions
from pinnace.proxy.model import ServicePort, build_service_ports
from pinnace.proxy.userspace import UserspaceProxier

log = logging.getLogger(__name__)

USERSPACE_PORTS_ANNOTATION = "pinnace.io/userspace-ports"


@dataclass
class ProxyConfig:
    mode: str = "auto"  # "iptables" | "userspace" | "auto"
    node_name: str | None = None
    sync_period: float = 30.0
    min_sync_interval: float = 1.0
    healthz_host: str = "127.0.0.1"
    healthz_port: int | None = 10256
    cluster_cidr: str | None = "10.42.0.0/16"  # without masquerade_all: masquerade sources outside it
    masquerade_all: bool | None = None  # None: unless br_netfilter makes bridged replies visible
    netns: str | None = None  # iptables mode: program this network namespace instead of our own
    userspace_listen_host: str = "127.0.0.1"
    node_port_host: str = "0.0.0.0"
    publish_userspace_ports: bool = True


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "iptables" if os.geteuid() == 0 and shutil.which("iptables-restore") else "userspace"
    if mode not in ("iptables", "userspace"):
        raise ValueError(f"unknown proxy mode {mode!r} (iptables, userspace or auto)")
    return mode


def port_key(sp: ServicePort) -> str:
    return f"{sp.port_name or sp.port}/{sp.protocol}"


class Proxy:
    def __init__(self, client: Any, config: ProxyConfig | None = None, factory: Any = None) -> None:
        self.client = client
        self.config = config or ProxyConfig()
        self.mode = resolve_mode(self.config.mode)
        self.factory = factory
        self._own_factory = factory is None
        self.backend: IptablesProxier | UserspaceProxier
        if self.mode == "iptables":
            self.backend = IptablesProxier(
                RenderOptions(node_name=self.config.node_name, cluster_cidr=self.config.cluster_cidr),
                netns=self.config.netns, masquerade_all=self.config.masquerade_all)
        else:
            self.backend = UserspaceProxier(self.config.userspace_listen_host, self.config.node_port_host,
                                            self.config.node_name, port_hint=self._port_hint)
        self._dirty = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._publish_task: asyncio.Task | None = None
        self._runner: web.AppRunner | None = None
        self.healthz_address: tuple[str, int] | None = None
        self.service_ports: list[ServicePort] = []
        # metrics
        self.sync_count = 0
        self.sync_errors = 0
        self.last_sync_time: float | None = None  # wall clock of the last successful sync
        self.last_sync_duration = 0.0
        self._last_sync_start = 0.0
        self._last_full_sync = 0.0

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self.factory is None:
            from pinnace.client import InformerFactory

            self.factory = InformerFactory(self.client)
        self.services = self.factory.informer("v1/services")
        self.slices = self.factory.informer("discovery.k8s.io/v1/endpointslices")
        self.endpoints = self.factory.informer("v1/endpoints")
        for informer in (self.services, self.slices, self.endpoints):
            informer.add_handler(on_add=self._changed, on_update=self._updated, on_delete=self._changed)
        await self.factory.start()
        await self.factory.wait_synced()
        if self.config.healthz_port is not None:
            try:
                await self._start_health_server()
            except OSError as error:  # e.g. a second proxy on this host: proxying matters more than health
                log.warning("proxy health server not started on %s:%s: %s", self.config.healthz_host,
                            self.config.healthz_port, error)
                if self._runner is not None:
                    await self._runner.cleanup()
                    self._runner = None
        await self.sync(full=True)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop watching. iptables rules stay, so traffic keeps flowing across a restart (as kube-proxy)."""
        for task in (self._task, self._publish_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._publish_task = None
        if isinstance(self.backend, UserspaceProxier):
            await self.backend.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._own_factory and self.factory is not None:
            await self.factory.stop()

    async def cleanup(self) -> None:
        """Remove everything the proxy made (`pinnace proxy --cleanup`)."""
        await self.backend.cleanup()

    # ---- events and syncing -----------------------------------------------------------------

    def _changed(self, obj: Any) -> None:
        self._dirty.set()

    def _updated(self, old: Any, new: Any) -> None:
        # Our own annotation patches and periodic resyncs change nothing the proxy programs.
        if old.get("spec") == new.get("spec") and old.get("endpoints") == new.get("endpoints") \
                and old.get("subsets") == new.get("subsets") and old.get("ports") == new.get("ports") \
                and (old["metadata"].get("labels") == new["metadata"].get("labels")):
            return
        self._dirty.set()

    async def _loop(self) -> None:
        while True:
            until_full = self._last_full_sync + self.config.sync_period - time.monotonic()
            full = False
            try:
                await asyncio.wait_for(self._dirty.wait(), max(0.0, until_full))
            except TimeoutError:
                full = True
            wait = self._last_sync_start + self.config.min_sync_interval - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)  # batch: events arriving meanwhile join this sync
            try:
                await self.sync(full=full)
            except Exception:  # a failed sync is retried on the next event or period; keep the loop alive
                log.exception("proxy sync failed")
                await asyncio.sleep(self.config.min_sync_interval)

    async def sync(self, full: bool = False) -> None:
        self._dirty.clear()
        self._last_sync_start = time.monotonic()
        service_ports = build_service_ports(self.services.list(), self.slices.list(), self.endpoints.list())
        try:
            result = await self.backend.sync(service_ports, full=full)
        except Exception:
            self.sync_errors += 1
            self._dirty.set()
            raise
        self.service_ports = service_ports  # what is in effect now
        self.sync_count += 1
        self.last_sync_duration = result.duration
        self.last_sync_time = time.time()
        if result.full or full:
            self._last_full_sync = self._last_sync_start
        log.debug("proxy sync (%s, full=%s): %d rules in %.3fs", self.mode, result.full, result.rule_count,
                  result.duration)
        if isinstance(self.backend, UserspaceProxier) and self.config.publish_userspace_ports:
            if self._publish_task is None or self._publish_task.done():
                self._publish_task = asyncio.get_running_loop().create_task(self._publish_ports())

    # ---- userspace ports annotation ---------------------------------------------------------

    def _published(self, namespace: str, name: str) -> dict[str, str]:
        svc = self.services.get(f"{namespace}/{name}")
        raw = ((svc or {}).get("metadata", {}).get("annotations") or {}).get(USERSPACE_PORTS_ANNOTATION)
        try:
            value = json.loads(raw) if raw else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}

    def _port_hint(self, sp: ServicePort) -> int | None:
        address = self._published(sp.namespace, sp.name).get(port_key(sp), "")
        _, _, port = address.rpartition(":")
        return int(port) if port.isdigit() else None

    async def _publish_ports(self) -> None:
        from pinnace.client import ApiError

        assert isinstance(self.backend, UserspaceProxier)
        wanted: dict[tuple[str, str], dict[str, str]] = {}
        for relay in self.backend.relays.values():
            sp = relay.service_port
            host, port = relay.address
            wanted.setdefault((sp.namespace, sp.name), {})[port_key(sp)] = f"{host}:{port}"
        for (namespace, name), ports in wanted.items():
            if self._published(namespace, name) == ports:
                continue
            patch = {"metadata": {"annotations": {USERSPACE_PORTS_ANNOTATION: json.dumps(ports, sort_keys=True)}}}
            try:
                await self.client.patch("v1/services", name, patch, namespace=namespace, patch_type="merge")
            except ApiError as error:  # deleted meanwhile, or forbidden: the next sync tries again
                log.debug("cannot publish userspace ports of %s/%s: %s", namespace, name, error)

    # ---- health and metrics -----------------------------------------------------------------

    def healthy(self) -> bool:
        if self.last_sync_time is None:
            return False
        return time.time() - self.last_sync_time < 2 * self.config.sync_period + 5

    async def _start_health_server(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.healthz_host, self.config.healthz_port)
        await site.start()
        server = site._server  # aiohttp keeps the bound sockets there; needed for port 0
        self.healthz_address = server.sockets[0].getsockname()[:2]  # type: ignore[union-attr]

    async def _healthz(self, request: web.Request) -> web.Response:
        def iso(t: float | None) -> str | None:
            return datetime.fromtimestamp(t, UTC).isoformat() if t else None

        body = {"lastUpdated": iso(self.last_sync_time), "currentTime": iso(time.time()), "mode": self.mode}
        return web.json_response(body, status=200 if self.healthy() else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        endpoints = sum(len(sp.ready_endpoints) for sp in self.service_ports)
        lines = [
            "# HELP pinnace_proxy_sync_total Successful proxy syncs.",
            "# TYPE pinnace_proxy_sync_total counter",
            f"pinnace_proxy_sync_total {self.sync_count}",
            "# TYPE pinnace_proxy_sync_errors_total counter",
            f"pinnace_proxy_sync_errors_total {self.sync_errors}",
            "# HELP pinnace_proxy_sync_duration_seconds Duration of the last sync.",
            "# TYPE pinnace_proxy_sync_duration_seconds gauge",
            f"pinnace_proxy_sync_duration_seconds {self.last_sync_duration:.6f}",
            "# HELP pinnace_proxy_last_sync_timestamp_seconds Unix time of the last successful sync.",
            "# TYPE pinnace_proxy_last_sync_timestamp_seconds gauge",
            f"pinnace_proxy_last_sync_timestamp_seconds {self.last_sync_time or 0:.3f}",
            "# HELP pinnace_proxy_rules iptables rules (iptables mode) or relayed endpoints (userspace mode).",
            "# TYPE pinnace_proxy_rules gauge",
            f'pinnace_proxy_rules{{mode="{self.mode}"}} {self.backend.rule_count}',
            "# TYPE pinnace_proxy_service_ports gauge",
            f"pinnace_proxy_service_ports {len(self.service_ports)}",
            "# TYPE pinnace_proxy_ready_endpoints gauge",
            f"pinnace_proxy_ready_endpoints {endpoints}",
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain")
