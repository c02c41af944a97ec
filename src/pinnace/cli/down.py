"""`pinnace down`: stop a cluster started with `pinnace up -d`; `--purge` also removes its data."""

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
        if not args.purge:
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


async def clean_nodes(data_dir: Path) -> None:
    """Remove what nodes of a cluster that did not stop cleanly left behind: pods, namespaces, bridges,
    cgroups and their containerd. A cleanly stopped cluster leaves nothing, and this finds nothing."""
    from pinnace.cli.up import NODE_RECORD

    records = sorted(data_dir.glob(f"nodes/*/{NODE_RECORD}"))
    if records and os.geteuid() == 0 and shutil.which("iptables-save"):
        from pinnace.proxy.iptables import IptablesProxier

        await IptablesProxier().cleanup()  # the Service rules of the cluster's proxy
    for record_path in records:
        record = json.loads(record_path.read_text())
        node_dir = str(record_path.parent)
        if record.get("runtime") == "cri":
            if not (record_path.parent / "containerd" / "config.toml").exists():
                continue
            from pinnace.kubelet.runtime.cri import remove_cri_node

            await remove_cri_node(node_dir, record["bridge"], record["cgroup_root"])
        else:
            from pinnace.kubelet.agent import cleanup_node

            await cleanup_node(node_dir, bridge=record["bridge"])
