"""`pinnace up --nodes N`: when extra nodes become hosts of their own, how their agents are told to run,
and how `pinnace down` recognises what a cluster that did not stop cleanly left."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pinnace.cli import down, up
from pinnace.cli.main import build_parser
from pinnace.cli.netns_hosts import HostNetwork, NetnsHost


@pytest.mark.parametrize("euid, nsenter, bind, reason", [
    (0, "/usr/bin/nsenter", "0.0.0.0", None),
    (0, "/usr/bin/nsenter", "10.44.0.1", None),  # the machine's address on the hosts' bridge
    (1000, "/usr/bin/nsenter", "0.0.0.0", "not running as root"),
    (0, None, "0.0.0.0", "nsenter is not installed"),
    (0, "/usr/bin/nsenter", "127.0.0.1", "the API server listens on 127.0.0.1 only"),  # hosts could not reach it
])
def test_extra_nodes_are_hosts_only_as_root_with_nsenter_and_a_reachable_server(monkeypatch, euid, nsenter, bind, reason):
    monkeypatch.setattr(os, "geteuid", lambda: euid)
    monkeypatch.setattr(up.shutil, "which", lambda name: nsenter if name == "nsenter" else None)
    assert up.netns_hosts_unavailable(bind) == reason


def test_hosts_are_numbered_after_the_machine():
    network = HostNetwork()
    host = NetnsHost(network, "pinnace-node-2", 1)
    assert (network.gateway, host.address) == ("10.44.0.1", "10.44.0.2")
    assert len(host.veth) <= 15  # a Linux interface name
    # nsenter --net, not `ip netns exec`: the agent must see the pod namespaces it mounts under /var/run/netns.
    assert host.command(["true"]) == ["nsenter", "--net=/var/run/netns/pinnace-node-2", "--", "true"]


def test_agent_runs_kubelet_alone_and_keeps_pods_by_default():
    args = build_parser().parse_args(["agent", "--server", "https://10.44.0.1:6443"])
    assert (args.proxy_mode, args.remove_pods_on_stop, args.lease_renew_seconds) == ("none", False, 10.0)


def test_extra_node_agents_get_proxy_credentials_and_addresses(tmp_path: Path):
    cluster = argparse.Namespace(
        args=argparse.Namespace(runtime="process", proxy_mode="iptables", node_monitor_grace_period=4.0),
        network=HostNetwork(), server=argparse.Namespace(port=16443), data_dir=tmp_path, ca_path=tmp_path / "pki" / "ca.crt",
        lease_seconds=lambda: 1.0)
    nodes = up.HostNodes(cluster, ["n-2", "n-3"])  # type: ignore[arg-type]
    assert [(name, host.name, host.address) for name, _, host in nodes.nodes] == [
        ("n-2", "pinnace-n-2", "10.44.0.2"), ("n-3", "pinnace-n-3", "10.44.0.3")]
    record = nodes.record("n-3", 2, nodes.nodes[1][2])
    assert record["netns"] == "pinnace-n-3" and record["bridge"] == "pinnace2" and record["host_bridge"] == "pinnace-hosts"


def test_a_record_names_its_agent_only_while_that_agent_runs(tmp_path: Path):
    node_dir = tmp_path / "nodes" / "n-2"
    node_dir.mkdir(parents=True)
    # A process whose command line names the node's data dir and `agent`, as `pinnace agent --data-dir` does.
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "agent", "--data-dir", str(node_dir)])
    try:
        # Until the child has exec'd, /proc/<pid>/cmdline is still the forking parent's.
        deadline = time.monotonic() + 10
        while b"agent" not in Path(f"/proc/{process.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert down.agent_running(process.pid, node_dir)
        assert not down.agent_running(process.pid, tmp_path / "nodes" / "other")  # a reused pid is left alone
        assert not down.agent_running(os.getpid(), node_dir)
    finally:
        process.kill()
        process.wait()
    assert not down.agent_running(process.pid, node_dir)


async def test_down_finds_nothing_after_a_clean_stop(tmp_path: Path):
    node_dir = tmp_path / "nodes" / "n-2"
    up.write_record(node_dir, {"name": "n-2", "runtime": "process", "bridge": "pinnace1", "pid": 2**22 + 1})
    assert await down.stop_agent({"pid": 2**22 + 1}, node_dir) == 0
    assert await down.clean_node(node_dir, {"runtime": "process", "bridge": "pinnace1"}) == 0
