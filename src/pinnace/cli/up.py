"""`pinnace up`: a whole cluster in one process.

The API server on the embedded SQLite store, the scheduler, the controller manager, cluster DNS, the
service proxy and one node agent (more with `--nodes N`) run as asyncio tasks of one process. They
still talk to each other only through the API server over HTTPS, exactly as they would on separate
machines. Ctrl-C (or `pinnace down` for `-d`) stops them in reverse order; running `pinnace up` again on
the same data dir resumes the same cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pinnace.cli.common import default_data_dir, pid_file, say

NODE_READY_TIMEOUT = 30.0
NODE_RECORD = "pinnace-node.json"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("up", help="run a whole cluster (server, scheduler, controllers, DNS, proxy, nodes)")
    parser.add_argument("--data-dir", default=None, help="where the cluster keeps its state (default: %(default)s)")
    parser.add_argument("--nodes", type=int, default=1, help="number of nodes (default 1)")
    parser.add_argument("--runtime", choices=("process", "cri"), default="process", help="container runtime of the nodes")
    parser.add_argument("--port", type=int, default=6443, help="API server port (default 6443)")
    parser.add_argument("--bind-address", default=None,
                        help="API server address (default 0.0.0.0 as root, so pods reach it; else 127.0.0.1)")
    parser.add_argument("--proxy-mode", choices=("auto", "iptables", "userspace"), default="auto")
    parser.add_argument("--dns-port", type=int, default=10053, help="cluster DNS port on the node (default 10053)")
    parser.add_argument("--node-monitor-grace-period", type=float, default=40.0,
                        help="seconds without a node Lease renewal before the node is unreachable (default 40)")
    parser.add_argument("-d", "--detach", action="store_true", help="run in the background; stop with `pinnace down`")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    data_dir = Path(args.data_dir or default_data_dir()).expanduser().resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    if args.nodes < 1:
        from pinnace.cli.main import CliError

        raise CliError("--nodes must be at least 1")
    if args.detach:
        return detach(args, data_dir)
    try:
        return asyncio.run(Cluster(args, data_dir).run_until_stopped())
    except KeyboardInterrupt:
        return 0


def detach(args: argparse.Namespace, data_dir: Path) -> int:
    """Start `pinnace up` in a new session, wait for it to be ready, print how to use it."""
    pid_path = pid_file(data_dir)
    if pid_path.exists():
        with contextlib.suppress(ValueError, ProcessLookupError):
            pid = int(pid_path.read_text())
            os.kill(pid, 0)
            from pinnace.cli.main import CliError

            raise CliError(f"a cluster is already running from {data_dir} (pid {pid}); stop it with `pinnace down`")
    argv = [sys.executable, "-m", "pinnace", "up", "--data-dir", str(data_dir), "--nodes", str(args.nodes),
            "--runtime", args.runtime, "--port", str(args.port), *(["--bind-address", args.bind_address] if args.bind_address else []),
            "--proxy-mode", args.proxy_mode, "--dns-port", str(args.dns_port),
            "--node-monitor-grace-period", str(args.node_monitor_grace_period)]
    log_path = data_dir / "pinnace.log"
    ready_path = data_dir / "ready"
    ready_path.unlink(missing_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if ready_path.exists():
            say(f"cluster running in the background (pid {process.pid}); log: {log_path}")
            say(ready_path.read_text().rstrip())
            return 0
        if process.poll() is not None:
            say(f"pinnace up exited with status {process.returncode}; see {log_path}")
            return 1
        time.sleep(0.2)
    say(f"the cluster did not become ready in time; see {log_path}")
    return 1


def pick_port(preferred: int) -> int:
    """The kubelet's usual port when it is free, else any free port (the Node object advertises it)."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError("no free port for the node agent")


class Cluster:
    """Starts every component in order and stops them in reverse."""

    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.data_dir = data_dir
        self.stack: list[tuple[str, object]] = []
        self.started = time.monotonic()

    def progress(self, message: str) -> None:
        say(f"[{time.monotonic() - self.started:5.1f}s] {message}")

    async def run_until_stopped(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        pid_file(self.data_dir).write_text(str(os.getpid()))
        try:
            await self.start()
            await stop.wait()
            self.progress("stopping")
        finally:
            await self.stop()
            pid_file(self.data_dir).unlink(missing_ok=True)
            (self.data_dir / "ready").unlink(missing_ok=True)
        self.progress("stopped")
        return 0

    async def _start(self, name: str, component: object) -> None:
        from pinnace.cli.main import CliError

        try:
            await component.start()  # type: ignore[attr-defined]
        except OSError as error:  # a port in use, a missing permission: say which component and why
            raise CliError(f"{name} could not start: {error}") from error
        self.stack.append((name, component))
        self.progress(f"{name} started")

    async def start(self) -> None:
        from pinnace.apiserver.server import ApiServer, ServerConfig
        from pinnace.client import Client

        args = self.args
        from pinnace.kubelet.agent import default_node_ip

        # As root pods live in their own network namespaces: they reach the API server (the `kubernetes`
        # Service) at the node's address, never at 127.0.0.1.
        root = os.geteuid() == 0
        bind = args.bind_address or ("0.0.0.0" if root else "127.0.0.1")
        advertise = default_node_ip() if root and bind == "0.0.0.0" else None
        server = ApiServer(ServerConfig(data_dir=str(self.data_dir), port=args.port, bind_address=bind,
                                        advertise_address=advertise))
        await self._start("api server", server)
        kubeconfig = str(server.kubeconfig_path)
        self.ca_path = server.ca_path
        self.kubeconfig = kubeconfig
        self.clients: list[Client] = []
        self.client = await self.client_for("pinnace-up")

        from pinnace.controllers.base import ControllerConfig
        from pinnace.controllers.manager import ControllerManager
        from pinnace.scheduler.scheduler import Scheduler

        # Each component has a client (and a request budget) of its own, as separate processes would.
        await self._start("controller manager", ControllerManager(
            await self.client_for("controller-manager", qps=500),
            ControllerConfig(node_monitor_grace_period=args.node_monitor_grace_period)))
        await self._start("scheduler", Scheduler(await self.client_for("scheduler", qps=1000)))
        await self.start_dns()
        await self.start_nodes()
        names = [self.node_name(i) for i in range(args.nodes)]
        await self.wait_nodes_ready(names)
        message = (
            f"cluster ready: {len(names)} node(s) Ready in {time.monotonic() - self.started:.1f}s\n"
            f"  export KUBECONFIG={kubeconfig}\n"
            f"  kubectl get nodes"
        )
        say(message)
        (self.data_dir / "ready").write_text(message + "\n")

    async def client_for(self, user_agent: str, qps: float = 100.0) -> object:
        from pinnace.client import Client

        client = await Client.from_kubeconfig(self.kubeconfig, user_agent=user_agent, qps=qps, burst=int(qps * 2))
        self.clients.append(client)
        return client

    async def start_dns(self) -> None:
        from pinnace.dns.server import DnsConfig, DnsServer, ensure_kube_dns_service, resolv_conf_nameservers
        from pinnace.kubelet.agent import default_node_ip

        # As root pods live in their own network namespaces, so DNS must answer on the node's address
        # (the kube-dns Service's endpoint); without root everything shares loopback.
        root = os.geteuid() == 0
        address = default_node_ip() if root else "127.0.0.1"
        port = self.args.dns_port
        # One socket per address, not 0.0.0.0: a UDP answer must leave from the address the question was
        # sent to, or the pod's resolver (a connected socket behind the Service's DNAT) never sees it.
        listen = [("127.0.0.1", port)] + ([(address, port)] if address != "127.0.0.1" else [])
        dns = DnsServer(await self.client_for("dns"), DnsConfig(listen=listen, upstream=resolv_conf_nameservers() or None))
        await self._start("dns", dns)
        await ensure_kube_dns_service(self.client, address, port)

    def node_name(self, index: int) -> str:
        base = os.uname().nodename.split(".")[0].lower() or "node"
        return base if index == 0 else f"{base}-{index + 1}"

    async def start_nodes(self) -> None:
        from pinnace.dns.server import CLUSTER_DNS_IP
        from pinnace.kubelet.agent import Kubelet, KubeletConfig
        from pinnace.proxy.proxier import Proxy, ProxyConfig

        for index in range(self.args.nodes):
            name = self.node_name(index)
            config = KubeletConfig(
                node_name=name,
                data_dir=str(self.data_dir / "nodes" / name),
                runtime=self.args.runtime,
                port=pick_port(10250 + 2 * index),
                read_only_port=pick_port(10255 + 2 * index),
                node_index=index,
                remove_pods_on_stop=True,
                client_ca_file=str(self.ca_path),
                # As root pods have their own network namespaces and reach cluster DNS at its Service IP.
                cluster_dns=[CLUSTER_DNS_IP] if os.geteuid() == 0 else [],
                # Kubernetes' ratio: a node renews its Lease four times per grace period (10 s for 40 s),
                # so a shorter --node-monitor-grace-period does not make every healthy node unreachable.
                lease_seconds=min(KubeletConfig.lease_seconds, self.args.node_monitor_grace_period / 4),
            )
            # What `pinnace down` needs to clean up after a cluster that did not stop cleanly.
            node_dir = Path(config.data_dir)
            node_dir.mkdir(parents=True, exist_ok=True)
            (node_dir / NODE_RECORD).write_text(json.dumps(
                {"name": name, "runtime": self.args.runtime, "bridge": f"pinnace{index}", "cgroup_root": f"/pinnace/{name}"}))
            await self._start(f"node {name}", NodeTeardown(Kubelet(await self.client_for(f"kubelet/{name}", qps=200), config)))
        proxy = Proxy(await self.client_for("proxy"), ProxyConfig(mode=self.args.proxy_mode, node_name=self.node_name(0)))
        await self._start("proxy", ProxyTeardown(proxy))

    async def wait_nodes_ready(self, names: list[str]) -> None:
        deadline = time.monotonic() + NODE_READY_TIMEOUT
        pending = set(names)
        while pending and time.monotonic() < deadline:
            for name in list(pending):
                with contextlib.suppress(Exception):
                    node = await self.client.get("v1/nodes", name)
                    for condition in node.get("status", {}).get("conditions", []):
                        if condition["type"] == "Ready" and condition["status"] == "True":
                            pending.discard(name)
                            self.progress(f"node {name} Ready")
            if pending:
                await asyncio.sleep(0.1)
        if pending:
            self.progress(f"warning: node(s) not Ready yet: {', '.join(sorted(pending))}")

    async def stop(self) -> None:
        while self.stack:
            name, component = self.stack.pop()
            try:
                await asyncio.wait_for(component.stop(), timeout=40)  # type: ignore[attr-defined]
            except Exception as error:  # one component failing to stop must not leave the rest running
                self.progress(f"{name} did not stop cleanly: {error}")
        for client in getattr(self, "clients", []):
            await client.close()


class NodeTeardown:
    """A node of `pinnace up`: on stop its pods stop too, and their namespaces and addresses go.

    A kubelet on its own leaves pods running across its restarts; `pinnace up` owns the whole machine, so
    Ctrl-C must leave nothing behind. The pods' API objects stay: the next `pinnace up` runs them again.
    """

    def __init__(self, kubelet: object) -> None:
        self.kubelet = kubelet

    async def start(self) -> None:
        await self.kubelet.start()  # type: ignore[attr-defined]
        warning = getattr(self.kubelet, "host_network_warning", None)
        if warning:
            say(f"warning: {warning}")

    async def stop(self) -> None:
        await self.kubelet.stop(remove_pods=True)  # type: ignore[attr-defined]


class ProxyTeardown:
    """The proxy of `pinnace up`: its rules go when the cluster stops."""

    def __init__(self, proxy: object) -> None:
        self.proxy = proxy

    async def start(self) -> None:
        await self.proxy.start()  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await self.proxy.stop()  # type: ignore[attr-defined]
        await self.proxy.cleanup()  # type: ignore[attr-defined]
