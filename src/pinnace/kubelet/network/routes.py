"""Pod traffic between machines, host-gw style: a route to every other node's pod CIDR via that node.

As flannel's `host-gw` backend: every node keeps, in its main routing table, `<node's spec.podCIDR> via
<node's InternalIP>` for every other node, so a packet from a local pod to a remote pod leaves through
the host's own interface and the remote host hands it to its bridge. No encapsulation, so the nodes must
share a layer-2 network (each InternalIP reachable directly, not through a router).

The routes carry their own protocol number (`RTPROT_PINNACE`), so this module only ever changes routes it
made: a node that leaves (its Node deleted, or its CIDR or address changed) loses its route, and routes
of the host's own configuration are never touched. Nodes whose InternalIP is an address of this host
(several nodes of `pinnace up --nodes N` sharing one network namespace) need no route: their bridges
are local already.

Level-triggered: every change to a Node, and a resync every `resync_seconds`, recomputes the whole set.
Routes stay when the agent stops, as its pods keep running; the next agent adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from typing import Any

import psutil
from pyroute2 import IPRoute, NetlinkError

log = logging.getLogger(__name__)

RTPROT_PINNACE = 80  # a protocol number of our own, unused by the kernel and common routing daemons
MAIN_TABLE = 254


def internal_ip(node: dict) -> str | None:
    for address in (node.get("status") or {}).get("addresses") or ():
        if address.get("type") == "InternalIP" and ":" not in str(address.get("address", "")):
            return str(address["address"])
    return None


def local_addresses() -> set[str]:
    return {a.address for addresses in psutil.net_if_addrs().values() for a in addresses if a.family == socket.AF_INET}


def desired_routes(nodes: list[dict], own_node: str, local: set[str]) -> dict[str, str]:
    """pod CIDR -> gateway for every other node that needs a route."""
    routes: dict[str, str] = {}
    for node in nodes:
        meta, spec = node.get("metadata") or {}, node.get("spec") or {}
        cidr, gateway = spec.get("podCIDR"), internal_ip(node)
        if meta.get("name") == own_node or not cidr or not gateway or gateway in local:
            continue
        if meta.get("deletionTimestamp"):
            continue
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if network.version == 4:
            routes[str(network)] = gateway
    return routes


def apply_routes(want: dict[str, str]) -> None:
    """Make this host's RTPROT_PINNACE routes exactly `want` (blocking netlink calls: run in a thread)."""
    with IPRoute() as ipr:
        have: dict[str, str | None] = {}
        for route in ipr.get_routes(family=socket.AF_INET, table=MAIN_TABLE, proto=RTPROT_PINNACE):
            dst = f"{route.get_attr('RTA_DST')}/{route['dst_len']}"
            have[dst] = route.get_attr("RTA_GATEWAY")
        for dst, gateway in have.items():
            if want.get(dst) != gateway:
                with contextlib.suppress(NetlinkError):
                    ipr.route("del", dst=dst, table=MAIN_TABLE, proto=RTPROT_PINNACE)
                    log.info("removed the route to pod network %s (via %s)", dst, gateway)
        for dst, gateway in want.items():
            if have.get(dst) == gateway:
                continue
            try:
                ipr.route("replace", dst=dst, gateway=gateway, table=MAIN_TABLE, proto=RTPROT_PINNACE)
                log.info("pod network %s routed via node %s", dst, gateway)
            except NetlinkError as error:
                # Typically ENETUNREACH: the node is not on a network this host shares (host-gw needs L2).
                log.warning("cannot route pod network %s via %s: %s", dst, gateway, error)


class NodeRoutes:
    """Keeps the host-gw routes of this node current from a Node informer."""

    def __init__(self, client: Any, node_name: str, resync_seconds: float = 30.0) -> None:
        from pinnace.client import InformerFactory

        self.node_name = node_name
        self.resync_seconds = resync_seconds
        self.factory = InformerFactory(client)
        self.nodes = self.factory.informer("v1/nodes")
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.nodes.add_handler(on_add=lambda _: self.changed.set(), on_update=lambda _o, _n: self.changed.set(),
                               on_delete=lambda _: self.changed.set())
        await self.factory.start()
        await self.factory.wait_synced()
        await self.sync()
        self.task = asyncio.create_task(self._run(), name="host-gw routes")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
            self.task = None
        await self.factory.stop()

    async def sync(self) -> None:
        want = desired_routes(self.nodes.list(), self.node_name, await asyncio.to_thread(local_addresses))
        await asyncio.to_thread(apply_routes, want)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), self.resync_seconds)
            self.changed.clear()
            try:
                await self.sync()
            except (OSError, NetlinkError) as error:
                log.warning("updating pod network routes failed: %s", error)
            await asyncio.sleep(0.2)  # coalesce bursts of Node status updates into one pass
