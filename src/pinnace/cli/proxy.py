"""`pinnace proxy`: the service proxy of one node (iptables or userspace mode), or `--cleanup`."""

from __future__ import annotations

import argparse
import asyncio
import socket

from pinnace.proxy.proxier import Proxy, ProxyConfig, resolve_mode


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("proxy", help="run the service proxy on this node",
                                   description="Route Service ClusterIPs and NodePorts to ready endpoints.")
    parser.add_argument("--kubeconfig", help="kubeconfig of the cluster (default: KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--mode", choices=("auto", "iptables", "userspace"), default="auto",
                        help="auto: iptables as root when iptables-restore exists, else userspace")
    parser.add_argument("--node-name", default=socket.gethostname(), help="this node (for traffic policy Local)")
    parser.add_argument("--cluster-cidr", default="10.42.0.0/16", help="pod CIDR; with --no-masquerade-all only other sources are masqueraded")
    parser.add_argument("--no-masquerade-all", action="store_true",
                        help="do not masquerade pod-to-service traffic (needs br_netfilter for same-node pods)")
    parser.add_argument("--healthz-port", type=int, default=10256, help="port of /healthz and /metrics (0: any)")
    parser.add_argument("--healthz-host", default="127.0.0.1")
    parser.add_argument("--sync-period", type=float, default=30.0, help="seconds between full syncs")
    parser.add_argument("--min-sync-interval", type=float, default=1.0, help="seconds between syncs at most")
    parser.add_argument("--cleanup", action="store_true", help="remove every rule the proxy made, then exit")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    config = ProxyConfig(
        mode=args.mode,
        node_name=args.node_name,
        cluster_cidr=args.cluster_cidr,
        masquerade_all=False if args.no_masquerade_all else None,
        healthz_host=args.healthz_host,
        healthz_port=args.healthz_port,
        sync_period=args.sync_period,
        min_sync_interval=args.min_sync_interval,
    )
    if args.cleanup:
        if resolve_mode(args.mode) == "iptables":
            from pinnace.proxy.iptables import IptablesProxier

            await IptablesProxier().cleanup()
        print("proxy rules removed")
        return 0
    from pinnace.client import Client

    client = await Client.from_kubeconfig(args.kubeconfig)
    proxy = Proxy(client, config)
    try:
        await proxy.start()
        print(f"proxy running in {proxy.mode} mode" + (
            f", healthz on {proxy.healthz_address[0]}:{proxy.healthz_address[1]}" if proxy.healthz_address else ""),
            flush=True)
        await asyncio.Event().wait()
    finally:
        await proxy.stop()
        await client.close()
    return 0
