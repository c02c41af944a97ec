"""Pod networking for the process runtime: a node bridge, and per pod a network namespace joined to it
by a veth pair, the way the CNI `bridge` plugin does it.

The bridge holds the pod CIDR's first address and is every pod's default gateway, so the host reaches
pods by IP and pods on this node reach each other over the bridge. Netlink calls go through pyroute2
(never the `ip` command); they are quick but synchronous, so callers run them in a thread.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import logging
import os
import socket

from pyroute2 import IPRoute, NetlinkError

log = logging.getLogger(__name__)

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2
_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def delete_link(ipr: IPRoute, name: str) -> None:
    """Delete a link if it exists. By name, not through a link dump: a dump that races with other
    link changes on the host comes back incomplete ("Dump was interrupted")."""
    try:
        ipr.link("del", ifname=name)
    except NetlinkError as error:
        if error.code != 19:  # ENODEV: already gone (a veth dies with its peer)
            raise


def link_index(ipr: IPRoute, name: str) -> int | None:
    """A link's index by name, with a single RTM_GETLINK (see delete_link)."""
    try:
        return ipr.link("get", ifname=name)[0]["index"]
    except NetlinkError as error:
        if error.code == 19:
            return None
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
            index = link_index(ipr, self.bridge)
            if index is None:
                try:
                    ipr.link("add", ifname=self.bridge, kind="bridge")
                except NetlinkError as error:
                    if error.code != 17:  # EEXIST: another agent created it meanwhile
                        raise
                index = link_index(ipr, self.bridge)
                if index is None:
                    raise OSError(f"bridge {self.bridge} vanished after creation")
            addresses = [a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=index, family=socket.AF_INET)]
            if self.gateway not in addresses:
                ipr.addr("add", index=index, address=self.gateway, prefixlen=self.prefixlen)
            ipr.link("set", index=index, state="up")
        # Pods on other nodes' bridges (several nodes on one host) and beyond are reached through the
        # host, which must route: Kubernetes requires IP forwarding on every node.
        try:
            enable_forwarding()
        except OSError as error:
            log.warning("cannot enable IP forwarding: %s", error)

    def delete_bridge(self) -> None:
        with IPRoute() as ipr:
            delete_link(ipr, self.bridge)

    def setup_pod(self, netns_name: str, sandbox_id: str, address: str) -> None:
        """Create the namespace, the veth pair, and give the pod `address` with loopback up.

        Runs in a thread and moves only that thread between namespaces (setns and unshare of the
        network namespace are per thread), so nothing forks: pyroute2's own netns helpers fork a child
        per call, which costs a copy of the kubelet's page tables each time.
        """
        host_if = veth_name(sandbox_id)
        peer_tmp = "pnp" + host_if[3:]
        host_ns = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            pod_ns = create_netns(netns_name, host_ns)
            try:
                with IPRoute() as ipr:
                    delete_link(ipr, host_if)
                    ipr.link("add", ifname=host_if, kind="veth", peer={"ifname": peer_tmp, "net_ns_fd": pod_ns})
                    bridge_index = link_index(ipr, self.bridge)
                    host_index = link_index(ipr, host_if)
                    if bridge_index is None or host_index is None:
                        raise OSError(f"bridge {self.bridge} or veth {host_if} is missing")
                    ipr.link("set", index=host_index, master=bridge_index, state="up")
                setns(pod_ns)
                try:
                    with IPRoute() as ns:  # its netlink socket belongs to the pod's namespace
                        ns.link("set", index=link_index(ns, "lo"), state="up")
                        index = link_index(ns, peer_tmp)
                        ns.link("set", index=index, ifname="eth0")
                        ns.addr("add", index=index, address=address, prefixlen=self.prefixlen)
                        ns.link("set", index=index, state="up")
                        ns.route("add", dst="0.0.0.0/0", gateway=self.gateway)
                finally:
                    setns(host_ns)
            finally:
                os.close(pod_ns)
        finally:
            os.close(host_ns)

    def teardown_pod(self, netns_name: str, sandbox_id: str) -> None:
        # Removing the namespace destroys the peer, and with it the host end of the veth.
        remove_netns(netns_name)
        with IPRoute() as ipr:
            delete_link(ipr, veth_name(sandbox_id))


def enable_forwarding() -> None:
    """IPv4 forwarding on in the calling thread's network namespace (/proc/sys/net is per namespace)."""
    with open("/proc/sys/net/ipv4/ip_forward", "r+") as forward:
        if forward.read().strip() != "1":
            forward.seek(0)
            forward.write("1")


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def create_netns(name: str, host_ns: int) -> int:
    """A named network namespace (a bind mount under /var/run/netns, as `ip netns add` makes); returns an fd.

    The calling thread unshares into a fresh namespace, pins it with the bind mount, and returns to
    `host_ns`."""
    os.makedirs(NETNS_DIR, exist_ok=True)
    path = os.path.join(NETNS_DIR, name)
    if os.path.exists(path):
        return os.open(path, os.O_RDONLY)
    open(path, "w").close()  # the mount point
    if _libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        os.unlink(path)
        raise OSError(code, f"unshare: {os.strerror(code)}")
    try:
        if _libc.mount(b"/proc/thread-self/ns/net", path.encode(), None, MS_BIND, None) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"mount {path}: {os.strerror(code)}")
        return os.open(path, os.O_RDONLY)
    finally:
        setns(host_ns)


def remove_netns(name: str) -> None:
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        return
    _libc.umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def netns_exists(netns_name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, netns_name))
