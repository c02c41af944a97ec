"""`pinnace server`: the API server alone, on the embedded SQLite store or an etcd cluster.

Writes an admin kubeconfig to `<data-dir>/kubeconfig.yaml` and prints how to use it, and the token
node agents join with. SIGTERM or Ctrl-C drains watches and exits cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from pinnace.cli.common import default_data_dir, say


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("server", help="run the Kubernetes API server")
    parser.add_argument("--data-dir", default=None, help=f"state, certificates and kubeconfig (default: {default_data_dir()})")
    parser.add_argument("--port", type=int, default=6443, help="HTTPS port (default 6443)")
    parser.add_argument("--bind-address", default="0.0.0.0", help="address of the HTTPS listener (default 0.0.0.0)")
    parser.add_argument(
        "--store", default="sqlite",
        help="'sqlite' (embedded, in the data dir), 'sqlite:///path/state.db' or 'etcd://h1:2379,h2:2379[/prefix]'",
    )
    parser.add_argument(
        "--insecure-port", type=int, default=None,
        help="also serve plain HTTP without authentication on 127.0.0.1:N (local tools and tests only)",
    )
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    from pinnace.apiserver.server import ApiServer, ServerConfig
    from pinnace.cli.main import CliError
    from pinnace.store import StoreError

    data_dir = Path(args.data_dir or default_data_dir()).expanduser().resolve()
    config = ServerConfig(
        data_dir=data_dir, port=args.port, bind_address=args.bind_address, store=args.store,
        insecure_port=args.insecure_port,
    )
    server = ApiServer(config)
    try:
        await server.start()
    except (OSError, StoreError) as error:
        raise CliError(f"the API server could not start: {error}") from None
    say(f"pinnace API server on {server.url}" + (f" (plain HTTP on {server.insecure_url})" if server.insecure_url else ""))
    say(f"admin kubeconfig: {server.kubeconfig_path}   (export KUBECONFIG={server.kubeconfig_path})")
    say(f"node join token: {server.join_token}")
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stopped.set)
    try:
        await stopped.wait()
    finally:
        await server.stop()
    return 0
