"""Pod networking for the process runtime: a node bridge, and per pod a network namespace joined to it
by a veth pair, the way the CNI `bridge` plugin does it.

The bridge holds the pod CIDR's first address and is every pod's default gateway, so the host reaches
pods by IP and pods on this node reach each other over the bridge. Netlink calls go through pyroute2
(never the `ip` command); they are quick but synchronous, so callers run them in a thread.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket

from pyroute2 import IPRoute, NetlinkError, NetNS, netns

log = logging.getLogger(__name__)

NETNS_DIR = "/var/run/netns"


def _delete_link(ipr: IPRoute, name: str) -> None:
    """Delete a link if it exists; the kernel may remove it under us (a veth dies with its peer)."""
    if not ipr.link_lookup(ifname=name):
        return
    try:
        ipr.link("del", ifname=name)
    except NetlinkError as error:
        if error.code != 19:  # ENODEV: already gone
            raise


def veth_name(sandbox_id: str) -> str:
    # Interface names are limited to 15 bytes; a hash keeps them unique per sandbox.
    return "pnv" + hashlib.sha1(sandbox_id.encode()).hexdigest()[:10]


class BridgeNetwork:
    def __init__(self, bridge: str, gateway: str, prefixlen: int) -> None:
        self.bridge = bridge
        self.gateway = gateway
        self.prefixlen = prefixlen

    def ensure_bridge(self) -> None:
        with IPRoute() as ipr:
            found = ipr.link_lookup(ifname=self.bridge)
            if not found:
                try:
                    ipr.link("add", ifname=self.bridge, kind="bridge")
                except NetlinkError as error:
                    if error.code != 17:  # EEXIST: another agent created it meanwhile
                        raise
                found = ipr.link_lookup(ifname=self.bridge)
            index = found[0]
            addresses = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=socket.AF_INET)]
            if self.gateway not in addresses:
                ipr.addr("add", index=index, address=self.gateway, prefixlen=self.prefixlen)
            ipr.link("set", index=index, state="up")
        # Pods on other nodes' bridges (several nodes on one host) and beyond are reached through the
        # host, which must route: Kubernetes requires IP forwarding on every node.
        try:
            with open("/proc/sys/net/ipv4/ip_forward", "r+") as forward:
                if forward.read().strip() != "1":
                    forward.seek(0)
                    forward.write("1")
        except OSError as error:
            log.warning("cannot enable IP forwarding: %s", error)

    def delete_bridge(self) -> None:
        with IPRoute() as ipr:
            _delete_link(ipr, self.bridge)

    def setup_pod(self, netns_name: str, sandbox_id: str, address: str) -> None:
        """Create the namespace, the veth pair, and give the pod `address` with loopback up."""
        if netns_name not in netns.listnetns():
            netns.create(netns_name)
        host_if = veth_name(sandbox_id)
        peer_tmp = "pnp" + host_if[3:]
        with IPRoute() as ipr:
            _delete_link(ipr, host_if)
            ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": peer_tmp, "net_ns_fd": netns_name})
            bridge_index = ipr.link_lookup(ifname=self.bridge)[0]
            host_index = ipr.link_lookup(ifname=host_if)[0]
            ipr.link("set", index=host_index, master=bridge_index, state="up")
        with NetNS(netns_name) as ns:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            index = ns.link_lookup(ifname=peer_tmp)[0]
            ns.link("set", index=index, ifname="eth0")
            ns.addr("add", index=index, address=address, prefixlen=self.prefixlen)
            ns.link("set", index=index, state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=self.gateway)

    def teardown_pod(self, netns_name: str, sandbox_id: str) -> None:
        # Removing the namespace destroys the peer, and with it the host end of the veth.
        if netns_name in netns.listnetns():
            netns.remove(netns_name)
        with IPRoute() as ipr:
            _delete_link(ipr, veth_name(sandbox_id))


def netns_exists(netns_name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, netns_name))


def enter_netns(netns_name: str) -> None:
    """Move the calling thread (or a freshly forked child) into a named network namespace."""
    netns.setns(netns_name)
