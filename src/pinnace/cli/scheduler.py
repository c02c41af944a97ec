"""`pinnace scheduler`: assign pending pods to nodes, leader-elected, against an API server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from pinnace.client import Client


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("scheduler", help="assign pending pods to nodes", description=__doc__)
    parser.add_argument("--kubeconfig", help="kubeconfig of the API server (default: KUBECONFIG, ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--config", help="KubeSchedulerConfiguration YAML file (profiles, plugins, weights)")
    parser.add_argument("--leader-elect", default=None, action=argparse.BooleanOptionalAction,
                        help="hold the kube-system/kube-scheduler Lease while scheduling (default: on, "
                             "or leaderElection.leaderElect from --config)")
    parser.add_argument("--kube-api-qps", type=float, default=1000.0,
                        help="requests per second to the API server (bindings, status, events); 0: unlimited")
    parser.add_argument("--kube-api-burst", type=int, default=2000, help="burst above --kube-api-qps")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError
    from pinnace.scheduler.profile import SchedulerConfig
    from pinnace.scheduler.scheduler import Scheduler

    try:
        config = SchedulerConfig.load(args.config) if args.config else SchedulerConfig()
    except (OSError, ValueError) as failure:
        raise CliError(f"cannot use scheduler configuration {args.config}: {failure}") from failure
    # Every pod costs a binding and an event, so the client's default budget would cap throughput.
    client = await Client.from_kubeconfig(args.kubeconfig, args.context, qps=args.kube_api_qps or None,
                                          burst=args.kube_api_burst)
    scheduler = Scheduler(client, config, leader_elect=args.leader_elect)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await scheduler.start()
    try:
        await stop.wait()
    finally:
        await scheduler.stop()
        await client.close()
    return 0
