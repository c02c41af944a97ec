"""`pinnace server`: the control plane of one machine: the API server, the scheduler and the controllers.

Writes an admin kubeconfig to `<data-dir>/kubeconfig.yaml` and prints how to use it, and the token
node agents join with (`pinnace agent --server URL --token TOKEN`). SIGTERM or Ctrl-C drains watches and
exits cleanly.

High availability: start `pinnace server --store etcd://h1:2379,h2:2379,h3:2379` on several machines that
share the cluster's certificates and tokens (`--ca-from` copies them from a first server's data dir).
Every server serves the API and keeps itself in the `kubernetes` Service's endpoints; the scheduler and
controller manager of every server campaign for their Leases, so exactly one of each works at a time and
another takes over within the lease duration when its server goes away. `--no-controllers` runs the API
server alone (the scheduler and controllers then run elsewhere: `pinnace scheduler`, `pinnace controller-manager`).
Their leases are timed as kube-scheduler's and kube-controller-manager's: `--leader-elect-lease-duration`
(15s), `--leader-elect-renew-deadline` (10s), `--leader-elect-retry-period` (2s), in Go duration syntax.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinnace.cli.common import default_data_dir, say


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("server", help="run the Kubernetes API server")
    parser.add_argument("--data-dir", default=None, help=f"state, certificates and kubeconfig (default: {default_data_dir()})")
    parser.add_argument("--port", type=int, default=6443, help="HTTPS port (default 6443)")
    parser.add_argument("--bind-address", default="0.0.0.0", help="address of the HTTPS listener (default 0.0.0.0)")
    parser.add_argument(
        "--advertise-address", default=None,
        help="address the `kubernetes` Service's endpoints carry; pods and nodes must reach it "
             "(default: --bind-address, else this host's first non-loopback address)",
    )
    parser.add_argument(
        "--store", default="sqlite",
        help="'sqlite' (embedded, in the data dir), 'sqlite:///path/state.db' or 'etcd://h1:2379,h2:2379[/prefix]'",
    )
    parser.add_argument(
        "--insecure-port", type=int, default=None,
        help="also serve plain HTTP without authentication on 127.0.0.1:N (local tools and tests only)",
    )
    parser.add_argument(
        "--ca-from", default=None, metavar="DIR",
        help="join an existing control plane: copy the cluster CA, signing keys and tokens from DIR (another "
             "server's data dir or its pki/ dir, copied to this machine) before the first start",
    )
    parser.add_argument(
        "--controllers", default=True, action=argparse.BooleanOptionalAction,
        help="also run the leader-elected scheduler and controller manager in this process (default: yes)",
    )
    security = parser.add_argument_group("security (kube-apiserver's flags and file formats)")
    security.add_argument("--authorization-mode", choices=("RBAC", "AlwaysAllow"), default="RBAC")
    security.add_argument("--token-auth-file", default=None, help="static tokens: CSV lines token,user,uid,\"group1,group2\"")
    security.add_argument("--audit-policy-file", default=None, help="an audit.k8s.io/v1 Policy (YAML)")
    security.add_argument("--audit-log-path", default=None, help="where audit events go as JSON lines (default <data dir>/audit.log)")
    security.add_argument("--encryption-provider-config", default=None,
                          help="an apiserver.config.k8s.io/v1 EncryptionConfiguration: Secrets encrypted at rest")
    security.add_argument(
        "--enable-admission-plugins", action="append", default=[], metavar="NAMES",
        help="admission plugins to turn on besides the default ones (comma-separated, kube-apiserver's names; "
             "default on: NamespaceLifecycle, LimitRanger, ServiceAccount, NodeRestriction, PodSecurity, Priority, "
             "DefaultTolerationSeconds, MutatingAdmissionWebhook, ValidatingAdmissionWebhook, ResourceQuota)",
    )
    security.add_argument("--disable-admission-plugins", action="append", default=[], metavar="NAMES",
                          help="admission plugins to turn off, even default ones (comma-separated)")
    add_leader_election_flags(parser)
    parser.set_defaults(func=run)


# ---- leader election timing, as kube-scheduler and kube-controller-manager spell it ----

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)([^0-9.]*)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration ("15s", "500ms", "1m30s", "1.5h"; "0" alone needs no unit), as
    time.ParseDuration reads it; ValueError with Go's wording otherwise."""
    original = text
    text = text.strip()
    sign = 1.0
    if text[:1] in ("+", "-"):
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f'time: invalid duration "{original}"')
    total, position = 0.0, 0
    while position < len(text):
        match = _DURATION_PART.match(text, position)  # always matches: both parts are optional
        assert match is not None
        number, unit = match.group(1), match.group(2)
        if number in ("", "."):
            raise ValueError(f'time: invalid duration "{original}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{original}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{original}"')
        total += float(number) * _DURATION_UNITS[unit]
        position = match.end()
    return sign * total


def _duration_flag(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


@dataclass(frozen=True)
class LeaderElectionTiming:
    """kube-scheduler's and kube-controller-manager's defaults."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def check(self) -> LeaderElectionTiming:
        """Raise ValueError as client-go's NewLeaderElector and the component-base validation do."""
        if self.lease_duration <= 0:
            raise ValueError("--leader-elect-lease-duration must be greater than zero")
        if self.renew_deadline <= 0:
            raise ValueError("--leader-elect-renew-deadline must be greater than zero")
        if self.retry_period <= 0:
            raise ValueError("--leader-elect-retry-period must be greater than zero")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(f"--leader-elect-lease-duration ({self.lease_duration:g}s) must be greater than "
                             f"--leader-elect-renew-deadline ({self.renew_deadline:g}s)")
        if self.renew_deadline <= self.retry_period * 1.2:  # client-go's JitterFactor
            raise ValueError(f"--leader-elect-renew-deadline ({self.renew_deadline:g}s) must be greater than "
                             f"--leader-elect-retry-period ({self.retry_period:g}s) * 1.2")
        return self


def add_leader_election_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("leader election (kube-scheduler's and kube-controller-manager's flags)")
    group.add_argument("--leader-elect-lease-duration", type=_duration_flag, default=None, metavar="DURATION",
                       help="how long non-leaders wait after a renewal before they may take the lease over (default 15s)")
    group.add_argument("--leader-elect-renew-deadline", type=_duration_flag, default=None, metavar="DURATION",
                       help="how long the leader keeps retrying a renewal before it stops leading (default 10s)")
    group.add_argument("--leader-elect-retry-period", type=_duration_flag, default=None, metavar="DURATION",
                       help="how long to wait between attempts to acquire or renew (default 2s)")


def leader_election_timing(args: argparse.Namespace, defaults: LeaderElectionTiming | None = None) -> LeaderElectionTiming:
    """The timing the flags give (flags not given: `defaults`); a clear CliError when it cannot work."""
    from pinnace.cli.main import CliError

    base = defaults or LeaderElectionTiming()
    timing = LeaderElectionTiming(
        lease_duration=_given(getattr(args, "leader_elect_lease_duration", None), base.lease_duration),
        renew_deadline=_given(getattr(args, "leader_elect_renew_deadline", None), base.renew_deadline),
        retry_period=_given(getattr(args, "leader_elect_retry_period", None), base.retry_period),
    )
    try:
        return timing.check()
    except ValueError as error:
        raise CliError(str(error)) from None


def _given(value: float | None, default: float) -> float:
    return default if value is None else value


class LeaderElected:
    """A component (Scheduler, ControllerManager, built without its own leader election) that runs only
    while this process holds its Lease, under a LeaderElector with the given timing: it is started on
    winning the lease and cancelled on losing it, and campaigns again after."""

    def __init__(self, component: Any, client: Any, lease_name: str, namespace: str = "kube-system",
                 timing: LeaderElectionTiming | None = None, identity: str | None = None) -> None:
        from pinnace.client import LeaderElector

        timing = timing or LeaderElectionTiming()
        self.component = component
        self.elector = LeaderElector(client, lease_name, namespace=namespace, identity=identity,
                                     lease_duration=timing.lease_duration, renew_deadline=timing.renew_deadline,
                                     retry_period=timing.retry_period)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.elector.run(self.component.run),
                                             name=f"leader election {self.elector.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.component.stop()


def security_config(args: argparse.Namespace):
    """The SecurityConfig the flags describe; a named file that does not exist is a clear error."""
    from pinnace.apiserver.admission import _names, resolve_plugins
    from pinnace.apiserver.security import SecurityConfig
    from pinnace.cli.main import CliError

    for flag in ("token_auth_file", "audit_policy_file", "encryption_provider_config"):
        path = getattr(args, flag, None)
        if path and not Path(path).is_file():
            raise CliError(f"--{flag.replace('_', '-')}: {path} does not exist")
    enable = tuple(_names(getattr(args, "enable_admission_plugins", None)))
    disable = tuple(_names(getattr(args, "disable_admission_plugins", None)))
    try:
        resolve_plugins(enable, disable)
    except ValueError as error:
        raise CliError(f"admission plugins: {error}") from None
    return SecurityConfig(
        enable_admission_plugins=enable,
        disable_admission_plugins=disable,
        authorization_mode=getattr(args, "authorization_mode", "RBAC"),
        token_auth_file=getattr(args, "token_auth_file", None),
        audit_policy_file=getattr(args, "audit_policy_file", None),
        audit_log_path=getattr(args, "audit_log_path", None),
        encryption_provider_config=getattr(args, "encryption_provider_config", None),
    )


async def run(args: argparse.Namespace) -> int:
    from pinnace.apiserver.server import ApiServer, ServerConfig
    from pinnace.cli.main import CliError
    from pinnace.kubelet.bootstrap import format_token
    from pinnace.store import StoreError

    data_dir = Path(args.data_dir or default_data_dir()).expanduser().resolve()
    security = security_config(args)
    timing = leader_election_timing(args)
    if args.ca_from:
        try:
            copied = share_pki(Path(args.ca_from).expanduser(), data_dir / "pki")
        except OSError as error:
            raise CliError(f"--ca-from: {error}") from None
        if copied:
            say(f"cluster certificates and tokens from {args.ca_from}: {', '.join(copied)}")
    config = ServerConfig(
        data_dir=data_dir, port=args.port, bind_address=args.bind_address, store=args.store,
        insecure_port=args.insecure_port, advertise_address=args.advertise_address,
        security=security,
    )
    server = ApiServer(config)
    try:
        await server.start()
    except (OSError, StoreError, ValueError) as error:
        raise CliError(f"the API server could not start: {error}") from None
    say(f"pinnace API server on {server.url}" + (f" (plain HTTP on {server.insecure_url})" if server.insecure_url else ""))
    say(f"admin kubeconfig: {server.kubeconfig_path}   (export KUBECONFIG={server.kubeconfig_path})")
    say(f"node join token: {format_token(server.ca_path.read_bytes(), server.join_token)}")
    say(f"  join a node: pinnace agent --server https://{server.advertise_address()}:{server.port} --token <token>")
    components = await start_control_loops(server, timing) if args.controllers else []
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        for component, client in reversed(components):
            await component.stop()
            await client.close()
        await server.stop()
    return 0


# What a second server needs from the first: the same CA (so every serving and client certificate is
# trusted everywhere), the service-account signing key (tokens verify on every server) and the tokens.
# Each server keeps its own serving certificate, made for its own addresses.
SHARED_PKI = ("ca.crt", "ca.key", "sa-signer.key", "admin.token", "node.token")


def share_pki(source: Path, target: Path) -> list[str]:
    """Copy the shared files from `source` (a data dir or its pki/) into `target`; the names copied.
    Files already present are kept: a server never swaps its CA under running clients."""
    if (source / "pki" / "ca.crt").exists():
        source = source / "pki"
    if not (source / "ca.crt").exists() or not (source / "ca.key").exists():
        raise FileNotFoundError(f"{source} holds no cluster CA (ca.crt and ca.key)")
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in SHARED_PKI:
        src, dst = source / name, target / name
        if src.exists() and not dst.exists():
            tmp = dst.with_suffix(dst.suffix + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if name == "ca.crt" else 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(src.read_bytes())
            tmp.replace(dst)
            copied.append(name)
    return copied


async def start_control_loops(server: object, timing: LeaderElectionTiming | None = None) -> list[tuple[Any, Any]]:
    """The scheduler and the controller manager, leader-elected with `timing`, each with its own client
    of this server. Returns (component, client) pairs; the components are LeaderElected wrappers."""
    from pinnace.client import Client
    from pinnace.controllers.manager import LEASE_NAME, ControllerManager
    from pinnace.scheduler.scheduler import Scheduler

    started: list[tuple[Any, Any]] = []
    for name, qps in (("controller-manager", 500.0), ("scheduler", 1000.0)):
        client = await Client.from_kubeconfig(server.kubeconfig_path, user_agent=name, qps=qps,  # type: ignore[attr-defined]
                                              burst=int(qps * 2))
        if name == "scheduler":
            scheduler = Scheduler(client, leader_elect=False)
            component = LeaderElected(scheduler, client, scheduler.config.lease_name,
                                      scheduler.config.lease_namespace, timing)
        else:
            component = LeaderElected(ControllerManager(client, leader_elect=False), client, LEASE_NAME,
                                      "kube-system", timing)
        await component.start()
        started.append((component, client))
    return started
