"""`pinnace agent`: the node agent (kubelet) of one node, against a running API server."""

from __future__ import annotations

import argparse
import asyncio
import socket

from pinnace.cli.common import default_data_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "agent",
        help="run the node agent (kubelet) on this machine",
        description="Register this machine as a Node and run the pods bound to it.",
    )
    parser.add_argument("--server", help="API server URL, or several comma-separated (HA: the agent fails over); "
                                         "else the kubeconfig's")
    parser.add_argument("--token", help="the join token `pinnace server` prints (or a bearer token) for --server")
    parser.add_argument("--ca-file", help="CA bundle that signed the API server's certificate")
    parser.add_argument("--insecure-skip-tls-verify", action="store_true", help="do not verify the API server")
    parser.add_argument("--kubeconfig", help="kubeconfig (default: KUBECONFIG or ~/.kube/config) when --server is not given")
    parser.add_argument("--node-name", default=socket.gethostname().split(".")[0].lower(), help="this node's name")
    parser.add_argument("--runtime", choices=("process", "cri"), default="process", help="container engine")
    parser.add_argument("--data-dir", help="state, logs and volumes (default: <pinnace data dir>/nodes/<node>)")
    parser.add_argument("--pod-cidr", help="pod CIDR to use when the Node has none (no node IPAM controller)")
    parser.add_argument("--bridge", help="node bridge for pod networking (default: pinnace0)")
    parser.add_argument("--node-ip", help="address to report and serve on (default: first non-loopback IPv4)")
    parser.add_argument("--port", type=int, default=10250, help="kubelet API port, TLS (0 disables)")
    parser.add_argument("--read-only-port", type=int, default=10255, help="read-only API port (0 disables)")
    parser.add_argument("--read-only-address", default="127.0.0.1", help="address of the read-only API")
    parser.add_argument("--cluster-domain", default="cluster.local", help="cluster DNS domain")
    parser.add_argument("--client-ca-file", help="accept only client certificates signed by this CA on --port")
    parser.add_argument("--cri-endpoint", help="with --runtime cri: an existing CRI socket (default: start our own containerd)")
    parser.add_argument("--cluster-dns", default=None, help="nameserver of pods with dnsPolicy ClusterFirst (default: 10.43.0.10)")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError
    from pinnace.client import Client
    from pinnace.kubelet.agent import Kubelet, KubeletConfig, KubeletError

    data_dir = args.data_dir or str(default_data_dir() / "nodes" / args.node_name)
    config = KubeletConfig(
        node_name=args.node_name,
        remove_pods_on_stop=False,  # a restarted agent adopts its running pods
        data_dir=data_dir,
        runtime=args.runtime,
        pod_cidr=args.pod_cidr,
        bridge=args.bridge,
        node_ip=args.node_ip,
        port=args.port,
        read_only_port=args.read_only_port,
        read_only_address=args.read_only_address,
        client_ca_file=args.client_ca_file,
        cri_endpoint=args.cri_endpoint,
        cluster_dns=[args.cluster_dns] if args.cluster_dns else None,
        cluster_domain=args.cluster_domain,
    )
    if args.server:
        # A join token is traded for this node's own certificate (kept in the data dir for later starts).
        from pinnace.kubelet.bootstrap import BootstrapError, agent_client

        try:
            client = await agent_client(args.server, args.token, data_dir, args.node_name,
                                        ca_file=args.ca_file, insecure=args.insecure_skip_tls_verify)
        except BootstrapError as error:
            raise CliError(str(error)) from None
    else:
        client = await Client.from_kubeconfig(args.kubeconfig)
    try:
        kubelet = Kubelet(client, config)
    except KubeletError as error:
        await client.close()
        raise CliError(str(error)) from error
    try:
        await kubelet.start()
        print(f"node {config.node_name} registered; kubelet API on :{kubelet.port}, read-only on "
              f"{config.read_only_address}:{kubelet.read_only_port}", flush=True)
        if kubelet.host_network_warning:
            print(f"warning: {kubelet.host_network_warning}", flush=True)
        await asyncio.Event().wait()
    finally:
        await kubelet.stop()
        await client.close()
    return 0
