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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
from pathlib import Path

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
    parser.set_defaults(func=run)


def security_config(args: argparse.Namespace):
    """The SecurityConfig the flags describe; a named file that does not exist is a clear error."""
    from pinnace.apiserver.security import SecurityConfig
    from pinnace.cli.main import CliError

    for flag in ("token_auth_file", "audit_policy_file", "encryption_provider_config"):
        path = getattr(args, flag, None)
        if path and not Path(path).is_file():
            raise CliError(f"--{flag.replace('_', '-')}: {path} does not exist")
    return SecurityConfig(
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
        security=security_config(args),
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
    components = await start_control_loops(server) if args.controllers else []
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


async def start_control_loops(server: object) -> list[tuple[object, object]]:
    """The scheduler and the controller manager, leader-elected, each with its own client of this server."""
    from pinnace.client import Client
    from pinnace.controllers.manager import ControllerManager
    from pinnace.scheduler.scheduler import Scheduler

    started: list[tuple[object, object]] = []
    for name, make, qps in (("controller-manager", ControllerManager, 500.0), ("scheduler", Scheduler, 1000.0)):
        client = await Client.from_kubeconfig(server.kubeconfig_path, user_agent=name, qps=qps,  # type: ignore[attr-defined]
                                              burst=int(qps * 2))
        component = make(client)
        await component.start()
        started.append((component, client))
    return started
