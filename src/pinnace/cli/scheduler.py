"""`pinnace scheduler`: assign pending pods to nodes, leader-elected, against an API server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal

from pinnace.cli.server import (
    LeaderElected,
    LeaderElectionTiming,
    add_leader_election_flags,
    leader_election_timing,
    parse_duration,
)
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
    add_leader_election_flags(parser)
    parser.set_defaults(func=run)


def _config_timing(path: str | None) -> LeaderElectionTiming:
    """leaderElection.leaseDuration/renewDeadline/retryPeriod of a KubeSchedulerConfiguration (Go
    durations); the flags, when given, win over them."""
    timing = LeaderElectionTiming()
    if not path:
        return timing
    import yaml

    from pinnace.cli.main import CliError

    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    leader = (raw.get("leaderElection") or {}) if isinstance(raw, dict) else {}
    values = {}
    for key, field in (("leaseDuration", "lease_duration"), ("renewDeadline", "renew_deadline"),
                       ("retryPeriod", "retry_period")):
        if leader.get(key) not in (None, ""):
            try:
                values[field] = parse_duration(str(leader[key]))
            except ValueError as error:
                raise CliError(f"{path}: leaderElection.{key}: {error}") from None
    return dataclasses.replace(timing, **values)


async def run(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError
    from pinnace.scheduler.profile import SchedulerConfig
    from pinnace.scheduler.scheduler import Scheduler

    try:
        config = SchedulerConfig.load(args.config) if args.config else SchedulerConfig()
    except (OSError, ValueError) as failure:
        raise CliError(f"cannot use scheduler configuration {args.config}: {failure}") from failure
    leader_elect = config.leader_elect if args.leader_elect is None else args.leader_elect
    timing = leader_election_timing(args, _config_timing(args.config)) if leader_elect else None
    # Every pod costs a binding and an event, so the client's default budget would cap throughput.
    client = await Client.from_kubeconfig(args.kubeconfig, args.context, qps=args.kube_api_qps or None,
                                          burst=args.kube_api_burst)
    scheduler: Scheduler | LeaderElected = Scheduler(client, config, leader_elect=False)
    if leader_elect:
        scheduler = LeaderElected(scheduler, client, config.lease_name, config.lease_namespace, timing)
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
