"""`pinnace dns`: cluster DNS for Services and Pods, forwarding other names upstream."""

from __future__ import annotations

import argparse
import asyncio

from pinnace.dns.server import (
    CLUSTER_DNS_IP,
    DnsConfig,
    DnsServer,
    ensure_kube_dns_service,
    resolv_conf_nameservers,
)


def host_port(text: str, default_port: int = 53) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text, default_port
    return host.strip("[]"), int(port)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("dns", help="run cluster DNS",
                                   description="Answer <svc>.<ns>.svc.<domain> and pod names; forward the rest.")
    parser.add_argument("--kubeconfig", help="kubeconfig of the cluster (default: KUBECONFIG or ~/.kube/config)")
    parser.add_argument("--listen", action="append", metavar="HOST:PORT",
                        help="address to answer on, UDP and TCP (repeatable; default 127.0.0.1:10053)")
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument("--upstream", action="append", metavar="HOST[:PORT]",
                        help="forward other names here (repeatable; default: nameservers in /etc/resolv.conf)")
    parser.add_argument("--no-upstream", action="store_true", help="refuse names outside the cluster domain")
    parser.add_argument("--register", metavar="ADDRESS",
                        help=f"create kube-system/kube-dns ({CLUSTER_DNS_IP}) with endpoints at ADDRESS and "
                             "the first listen port")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    from pinnace.client import Client

    listen = [host_port(a) for a in args.listen or ["127.0.0.1:10053"]]
    if args.no_upstream:
        upstream = None
    elif args.upstream:
        upstream = [host_port(u) for u in args.upstream]
    else:
        upstream = resolv_conf_nameservers() or None
    client = await Client.from_kubeconfig(args.kubeconfig)
    server = DnsServer(client, DnsConfig(listen=listen, cluster_domain=args.cluster_domain, upstream=upstream))
    try:
        await server.start()
        if args.register:
            await ensure_kube_dns_service(client, args.register, server.addresses[0][1])
        print("dns answering on " + ", ".join(f"{h}:{p}" for h, p in server.addresses), flush=True)
        await asyncio.Event().wait()
    finally:
        await server.stop()
        await client.close()
    return 0
