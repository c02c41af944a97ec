"""`pinnace agent`: the node agent (kubelet) of one node, against a running API server.

With `--proxy-mode` the node's service proxy runs in the same process, as k3s agents embed kube-proxy:
one process per node programs that node's Service rules with the node's own credentials (a node may
read Services and EndpointSlices). SIGTERM or Ctrl-C stops the agent cleanly; its pods keep running for
the next agent to adopt, unless `--remove-pods-on-stop` (what `pinnace up` asks of its extra nodes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
from pathlib import Path

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
    parser.add_argument("--token-file", help="read --token from this file (keeps it off the command line)")
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
    parser.add_argument("--container-log-max-size", default="10Mi",
                        help="with --runtime cri: rotate a container's log file once it reaches this size "
                             "(a quantity, default 10Mi), as the kubelet's containerLogMaxSize")
    parser.add_argument("--container-log-max-files", type=int, default=5,
                        help="with --runtime cri: log files kept per container, the current one included "
                             "(at least 2, default 5), as the kubelet's containerLogMaxFiles")
    parser.add_argument("--cluster-dns", default=None, help="nameserver of pods with dnsPolicy ClusterFirst (default: 10.43.0.10)")
    parser.add_argument("--proxy-mode", choices=("none", "auto", "iptables", "userspace"), default="none",
                        help="also run this node's service proxy in the agent (auto: iptables as root); "
                             "default none: run `pinnace proxy` separately")
    parser.add_argument("--lease-renew-seconds", type=float, default=10.0,
                        help="seconds between renewals of the node's Lease (default 10: a quarter of the "
                             "controller manager's default 40 s node monitor grace period)")
    parser.add_argument("--remove-pods-on-stop", action="store_true",
                        help="on stop, also stop this node's pods and remove their sandboxes, volumes and "
                             "bridge (default: pods keep running and the next agent adopts them)")
    parser.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    from pinnace.cli.main import CliError
    from pinnace.client import Client
    from pinnace.kubelet.agent import Kubelet, KubeletConfig, KubeletError

    data_dir = args.data_dir or str(default_data_dir() / "nodes" / args.node_name)
    token = args.token
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as error:
            raise CliError(f"--token-file: {error}") from None
    config = KubeletConfig(
        node_name=args.node_name,
        remove_pods_on_stop=args.remove_pods_on_stop,
        lease_seconds=args.lease_renew_seconds,
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
        container_log_max_size=args.container_log_max_size,
        container_log_max_files=args.container_log_max_files,
        cluster_dns=[args.cluster_dns] if args.cluster_dns else None,
        cluster_domain=args.cluster_domain,
    )
    if args.server:
        # A join token is traded for this node's own certificate (kept in the data dir for later starts).
        from pinnace.kubelet.bootstrap import BootstrapError, agent_client

        try:
            client = await agent_client(args.server, token, data_dir, args.node_name,
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
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    proxy = proxy_client = None
    try:
        await kubelet.start()
        print(f"node {config.node_name} registered; kubelet API on :{kubelet.port}, read-only on "
              f"{config.read_only_address}:{kubelet.read_only_port}", flush=True)
        if kubelet.host_network_warning:
            print(f"warning: {kubelet.host_network_warning}", flush=True)
        if args.proxy_mode != "none":
            from pinnace.proxy.proxier import Proxy, ProxyConfig

            # A client of its own (the node's credentials, its own request budget), as a separate
            # kube-proxy process would have.
            proxy_client = await node_client(args, data_dir, token)
            proxy = Proxy(proxy_client, ProxyConfig(mode=args.proxy_mode, node_name=config.node_name))
            await proxy.start()
            print(f"proxy running in {proxy.mode} mode", flush=True)
        await stop.wait()
    finally:
        if proxy is not None:
            await proxy.stop()
            if args.remove_pods_on_stop:
                await proxy.cleanup()  # the node goes away with its pods: its Service rules go too
        if proxy_client is not None:
            await proxy_client.close()
        await kubelet.stop()
        await client.close()
    return 0


async def node_client(args: argparse.Namespace, data_dir: str, token: str | None) -> object:
    """Another client with the agent's credentials: the node kubeconfig its join wrote, else the same
    kubeconfig or token the kubelet uses."""
    from pinnace.client import Client

    if args.server:
        from pinnace.client.kubeconfig import load_kubeconfig
        from pinnace.client.rest import split_servers
        from pinnace.kubelet.bootstrap import usable_kubeconfig

        urls = split_servers(args.server)
        path = usable_kubeconfig(data_dir)
        if path is not None:
            return Client(servers=urls, config=load_kubeconfig(path), user_agent=f"pinnace-proxy/{args.node_name}")
        return Client(servers=urls, token=token, ca_file=args.ca_file, insecure=args.insecure_skip_tls_verify,
                      user_agent=f"pinnace-proxy/{args.node_name}")
    return await Client.from_kubeconfig(args.kubeconfig, user_agent=f"pinnace-proxy/{args.node_name}")
