"""`pinnace down`: stop a cluster started with `pinnace up -d`; `--purge` also removes its data.

After a `pinnace up` that did not stop cleanly (killed, crashed), `pinnace down` removes what its nodes
left, from the records each node keeps in its data dir: agent processes of extra nodes, pods, their
network namespaces and cgroups, the extra nodes' host namespaces and the bridge they share.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import time
from pathlib import Path

from pinnace.cli.common import default_data_dir, pid_file, say

STOP_TIMEOUT = 60.0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("down", help="stop a cluster started with `pinnace up -d`")
    parser.add_argument("--data-dir", default=None, help="the cluster's data dir")
    parser.add_argument("--purge", action="store_true", help="also remove the cluster's data dir")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError

    data_dir = Path(args.data_dir or default_data_dir()).expanduser().resolve()
    path = pid_file(data_dir)
    pid = None
    if path.exists():
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            pid = None
    if pid is None:
        left = asyncio.run(clean_nodes(data_dir)) if data_dir.exists() else []
        if left:
            path.unlink(missing_ok=True)
            say(f"no cluster was running from {data_dir}; removed what it left: {', '.join(left)}")
        elif not args.purge:
            raise CliError(f"no cluster is running from {data_dir}")
    else:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise CliError(f"pinnace up (pid {pid}) did not stop within {STOP_TIMEOUT:.0f}s")
        say(f"stopped the cluster from {data_dir}")
        if data_dir.exists():
            asyncio.run(clean_nodes(data_dir))
    if args.purge and data_dir.exists():
        shutil.rmtree(data_dir)
        say(f"removed {data_dir}")
    return 0


async def clean_nodes(data_dir: Path) -> list[str]:
    """Remove what nodes of a cluster that did not stop cleanly left behind: agents, pods, namespaces,
    bridges, cgroups and their containerd. A cleanly stopped cluster leaves nothing, and this finds
    nothing; returns what it found (for the user), e.g. ["2 agent process(es)", "2 node host(s)"]."""
    from pinnace.cli.up import NODE_RECORD

    records = []
    for record_path in sorted(data_dir.glob(f"nodes/*/{NODE_RECORD}")):
        try:
            records.append((record_path.parent, json.loads(record_path.read_text())))
        except (OSError, ValueError):
            continue
    found = {"agent process(es)": 0, "pod sandbox(es)": 0, "node host(s)": 0, "host bridge(s)": 0}
    if records and os.geteuid() == 0 and shutil.which("iptables-save"):
        from pinnace.proxy.iptables import IptablesProxier

        await IptablesProxier().cleanup()  # the Service rules of the cluster's proxy
    for node_dir, record in records:
        found["agent process(es)"] += await stop_agent(record, node_dir)
    for node_dir, record in records:
        found["pod sandbox(es)"] += len(list((node_dir / "runtime" / "sandboxes").glob("*.json")))
        found["node host(s)"] += await clean_node(node_dir, record)
    for bridge in sorted({record["host_bridge"] for _, record in records if record.get("host_bridge")}):
        if os.geteuid() == 0:
            from pinnace.cli.netns_hosts import HostNetwork

            network = HostNetwork(bridge=bridge)
            if await asyncio.to_thread(network.exists):
                await asyncio.to_thread(network.remove)
                found["host bridge(s)"] += 1
    return [f"{count} {what}" for what, count in found.items() if count]


async def clean_node(node_dir: Path, record: dict) -> int:
    """Remove one node's pods (process or cri runtime) and, for a node that is a host of its own, that
    host's network namespace; the number of hosts removed (0 or 1). Its agent must be gone already."""
    if record.get("runtime") == "cri":
        if (node_dir / "containerd" / "config.toml").exists():
            from pinnace.kubelet.runtime.cri import remove_cri_node

            await remove_cri_node(str(node_dir), record["bridge"], record["cgroup_root"])
    elif (node_dir / "runtime").exists():
        from pinnace.kubelet.agent import cleanup_node

        await cleanup_node(str(node_dir), bridge=record["bridge"])
    if record.get("netns") and os.geteuid() == 0:
        from pinnace.cli.netns_hosts import HostNetwork, NetnsHost

        host = NetnsHost(HostNetwork(bridge=record.get("host_bridge") or HostNetwork.bridge),
                         record["netns"], int(record.get("index") or 1))
        if host.exists():
            await asyncio.to_thread(host.destroy)
            return 1
    return 0


async def stop_agent(record: dict, node_dir: Path, timeout: float = 30.0) -> int:
    """Stop the agent process an extra node's record names, if it still runs (SIGTERM, then SIGKILL after
    `timeout`); 1 if there was one. A pid reused by another process is left alone."""
    pid = record.get("pid")
    if not pid or not agent_running(int(pid), node_dir):
        return 0
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return 1
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not agent_running(pid, node_dir):
                return 1
            await asyncio.sleep(0.1)
    return 1


def agent_running(pid: int, node_dir: Path) -> bool:
    """Whether `pid` is a live `pinnace agent` of the node whose data dir is `node_dir`."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z" and b"agent" in argv and str(node_dir).encode() in argv
