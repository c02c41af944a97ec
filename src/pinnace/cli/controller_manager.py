"""`pinnace controller-manager`: run the controllers against an API server, leader-elected."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from pinnace.cli.server import LeaderElected, add_leader_election_flags, leader_election_timing
from pinnace.client import Client
from pinnace.controllers.base import ControllerConfig
from pinnace.controllers.manager import CONTROLLERS, LEASE_NAME, ControllerManager


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("controller-manager", help="run the controllers (ReplicaSet, Deployment, ...)",
                                   description=__doc__)
    parser.add_argument("--kubeconfig", help="kubeconfig of the API server (default: KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--controllers", default="*",
                        help=f"comma-separated subset of: {','.join(CONTROLLERS)} (default: all)")
    parser.add_argument("--leader-elect", default=True, action=argparse.BooleanOptionalAction,
                        help="hold the kube-system/kube-controller-manager Lease while running (default: on)")
    parser.add_argument("--cluster-cidr", default=ControllerConfig.cluster_cidr, help="pod CIDR to split per node")
    parser.add_argument("--node-monitor-grace-period", type=float, default=ControllerConfig.node_monitor_grace_period,
                        help="seconds without a Lease renewal before a node is Ready=Unknown")
    parser.add_argument("--default-toleration-seconds", type=int, default=ControllerConfig.default_toleration_seconds,
                        help="how long pods stay on a not-ready or unreachable node")
    parser.add_argument("--root-ca-file", help="CA certificate published as kube-root-ca.crt (default: the client's)")
    parser.add_argument("--workers", type=int, default=ControllerConfig.workers, help="workers per controller")
    add_leader_election_flags(parser)
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    root_ca = None
    if args.root_ca_file:
        with open(args.root_ca_file) as file:
            root_ca = file.read()
    config = ControllerConfig(cluster_cidr=args.cluster_cidr, node_monitor_grace_period=args.node_monitor_grace_period,
                              default_toleration_seconds=args.default_toleration_seconds, root_ca=root_ca,
                              workers=args.workers)
    names = None if args.controllers in ("*", "") else [n.strip() for n in args.controllers.split(",") if n.strip()]
    timing = leader_election_timing(args) if args.leader_elect else None
    client = await Client.from_kubeconfig(args.kubeconfig, args.context)
    manager: ControllerManager | LeaderElected = ControllerManager(client, config, controllers=names, leader_elect=False)
    if args.leader_elect:
        manager = LeaderElected(manager, client, LEASE_NAME, "kube-system", timing)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await manager.start()
    try:
        await stop.wait()
    finally:
        await manager.stop()
        await client.close()
    return 0
