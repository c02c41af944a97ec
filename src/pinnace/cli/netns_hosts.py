"""Hosts of their own on one machine: a network namespace per host, joined by one bridge.

As kind makes each node a container on a docker network, `pinnace up --nodes N` (as root) and the HA
tests make each extra host a named network namespace with one interface, `eth0`, plugged into a bridge
of the machine's root namespace. The bridge holds the network's first address: that is the machine
itself, as a host among the others. Every host reaches every other directly on that layer-2 network,
which is what host-gw pod routes need, and reaches the machine's other addresses through its default
route via the bridge.

Only the network is separate: processes started with `command()` enter the host's network namespace
through `nsenter --net` and share the machine's file system and mount namespace (unlike `ip netns
exec`, which also unshares the mounts, so the named pod namespaces a node agent pins under
/var/run/netns would be invisible outside it). Netlink goes through pyroute2; the calls are quick but
synchronous, so async callers run them in a thread.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from dataclasses import dataclass

from pyroute2 import IPRoute

from pinnace.kubelet.network.bridge import (
    NETNS_DIR,
    BridgeNetwork,
    create_netns,
    delete_link,
    enable_forwarding,
    link_index,
    netns_exists,
    remove_netns,
    setns,
)

DEFAULT_BRIDGE = "pinnace-hosts"
DEFAULT_CIDR = "10.44.0.0/24"


@dataclass(frozen=True)
class HostNetwork:
    """The bridge and the subnet the hosts share; address 0 (the subnet's first) is the machine."""

    bridge: str = DEFAULT_BRIDGE
    cidr: str = DEFAULT_CIDR

    @property
    def prefixlen(self) -> int:
        return ipaddress.ip_network(self.cidr).prefixlen

    @property
    def gateway(self) -> str:
        return self.address(0)

    def address(self, index: int) -> str:
        """Host `index`'s address: 0 is the machine itself (on the bridge), 1.. the namespace hosts."""
        hosts = list(ipaddress.ip_network(self.cidr).hosts())
        if not 0 <= index < len(hosts):
            raise ValueError(f"host {index} does not fit in {self.cidr}")
        return str(hosts[index])

    def ensure(self) -> None:
        """The bridge, up, with the machine's address on it; IP forwarding on, so hosts reach beyond."""
        BridgeNetwork(self.bridge, self.gateway, self.prefixlen).ensure_bridge()

    def remove(self) -> None:
        """Delete the bridge (the routes through it go with it)."""
        BridgeNetwork(self.bridge, self.gateway, self.prefixlen).delete_bridge()

    def exists(self) -> bool:
        with IPRoute() as ipr:
            return link_index(ipr, self.bridge) is not None


@dataclass(frozen=True)
class NetnsHost:
    """One host: network namespace `name` with `eth0` at `network.address(index)` on the bridge."""

    network: HostNetwork
    name: str
    index: int

    @property
    def address(self) -> str:
        return self.network.address(self.index)

    @property
    def path(self) -> str:
        return os.path.join(NETNS_DIR, self.name)

    @property
    def veth(self) -> str:
        # The machine's end of the host's cable; interface names are limited to 15 bytes.
        return "pnh" + hashlib.sha1(self.name.encode()).hexdigest()[:10]

    def exists(self) -> bool:
        return netns_exists(self.name)

    def create(self) -> None:
        """Make the namespace and plug it in; a host that exists already is re-plugged as new."""
        if self.index == 0:
            raise ValueError("host 0 is the machine itself, not a namespace")
        self.network.ensure()
        self.destroy()
        peer_tmp = "pnx" + self.veth[3:]
        machine_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            host_ns = create_netns(self.name, machine_ns)
            try:
                with IPRoute() as ipr:
                    ipr.link("add", ifname=self.veth, kind="veth", peer={"ifname": peer_tmp, "net_ns_fd": host_ns})
                    bridge_index = link_index(ipr, self.network.bridge)
                    veth_index = link_index(ipr, self.veth)
                    if bridge_index is None or veth_index is None:
                        raise OSError(f"bridge {self.network.bridge} or veth {self.veth} is missing")
                    ipr.link("set", index=veth_index, master=bridge_index, state="up")
                # setns moves only this thread; it comes back before the fds close.
                setns(host_ns)
                try:
                    with IPRoute() as ns:
                        ns.link("set", index=link_index(ns, "lo"), state="up")
                        index = link_index(ns, peer_tmp)
                        ns.link("set", index=index, ifname="eth0")
                        ns.addr("add", index=index, address=self.address, prefixlen=self.network.prefixlen)
                        ns.link("set", index=index, state="up")
                        ns.route("add", dst="0.0.0.0/0", gateway=self.network.gateway)
                    enable_forwarding()  # /proc/sys/net is the opening thread's namespace's
                finally:
                    setns(machine_ns)
            finally:
                os.close(host_ns)
        finally:
            os.close(machine_ns)

    def destroy(self) -> None:
        """Remove the namespace (its eth0, and so the machine's end of the veth, die with it)."""
        remove_netns(self.name)
        with IPRoute() as ipr:
            delete_link(ipr, self.veth)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this host's network namespace (only the network; see the module's doc)."""
        return ["nsenter", f"--net={self.path}", "--", *argv]
