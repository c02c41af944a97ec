"""`pinnace up`: a whole cluster in one process.

The API server on the embedded SQLite store, the scheduler, the controller manager, cluster DNS, the
service proxy and the first node agent run as asyncio tasks of one process. They still talk to each
other only through the API server over HTTPS, exactly as they would on separate machines. Ctrl-C (or
`pinnace down` for `-d`) stops them in reverse order; running `pinnace up` again on the same data dir
resumes the same cluster.

`--nodes N` adds N-1 nodes. As root each is a host of its own, as kind's nodes are containers: a
network namespace plugged into the bridge `pinnace-hosts` (pinnace.cli.netns_hosts) at 10.44.0.<i+1>,
running one `pinnace agent` process (kubelet and service proxy) that joins with the cluster's join token.
The machine itself is 10.44.0.1 on that bridge, and that is the first node's address, the API server's
advertised address and cluster DNS's, so every node reaches every other directly, as host-gw pod routes
need. Without root the extra nodes are in-process kubelets sharing the host network (each with its own
bridge and pod CIDR), and `pinnace up` says so. Each node's record (`NODE_RECORD` in its data dir) holds
what `pinnace down` needs to clean up after a `pinnace up` that did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pinnace.cli.common import default_data_dir, pid_file, say, say_progress

NODE_READY_TIMEOUT = 30.0
NODE_RECORD = "pinnace-node.json"
AGENT_START_TIMEOUT = 60.0  # an extra node's agent: join, register, first proxy sync
AGENT_STOP_TIMEOUT = 30.0  # SIGTERM, then SIGKILL: an agent stopping removes its pods first


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


def netns_hosts_unavailable(bind: str) -> str | None:
    """Why extra nodes cannot be hosts of their own here, or None when they can."""
    from pinnace.cli.netns_hosts import HostNetwork

    if os.geteuid() != 0:
        return "not running as root"
    if not shutil.which("nsenter"):
        return "nsenter is not installed"
    if bind not in ("0.0.0.0", HostNetwork().gateway):
        return f"the API server listens on {bind} only"
    return None


def write_record(node_dir: Path, record: dict) -> None:
    node_dir.mkdir(parents=True, exist_ok=True)
    (node_dir / NODE_RECORD).write_text(json.dumps(record))


class Cluster:
    """Starts every component in order and stops them in reverse."""

    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.data_dir = data_dir
        self.stack: list[tuple[str, object]] = []
        self.started = time.monotonic()

    def progress(self, message: str) -> None:
        say_progress(time.monotonic() - self.started, message)

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
        self.network = None  # the hosts' network when extra nodes are hosts of their own
        if args.nodes > 1:
            reason = netns_hosts_unavailable(bind)
            if reason is None:
                from pinnace.cli.netns_hosts import HostNetwork

                self.network = HostNetwork()
                # Before the API server starts: its serving certificate covers the machine's address there.
                await self._start(f"host network {self.network.bridge} ({self.network.gateway})",
                                  HostNetworkTeardown(self.network))
                advertise = self.network.gateway
            else:
                self.progress(f"note: the {args.nodes - 1} extra node(s) run in this process and share this host's "
                              f"network ({reason}), not hosts of their own")
        server = ApiServer(ServerConfig(data_dir=str(self.data_dir), port=args.port, bind_address=bind,
                                        advertise_address=advertise))
        await self._start("api server", server)
        self.server = server
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
        if self.network is not None:
            address = self.network.gateway  # what every host reaches
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

        in_process = 1 if self.network is not None else self.args.nodes
        for index in range(in_process):
            name = self.node_name(index)
            config = KubeletConfig(
                node_name=name,
                data_dir=str(self.data_dir / "nodes" / name),
                runtime=self.args.runtime,
                port=pick_port(10250 + 2 * index),
                read_only_port=pick_port(10255 + 2 * index),
                node_index=index,
                node_ip=self.network.gateway if self.network is not None else None,
                remove_pods_on_stop=True,
                client_ca_file=str(self.ca_path),
                # As root pods have their own network namespaces and reach cluster DNS at its Service IP.
                cluster_dns=[CLUSTER_DNS_IP] if os.geteuid() == 0 else [],
                lease_seconds=self.lease_seconds(),
            )
            # What `pinnace down` needs to clean up after a cluster that did not stop cleanly.
            record = {"name": name, "runtime": self.args.runtime, "bridge": f"pinnace{index}", "cgroup_root": f"/pinnace/{name}"}
            if self.network is not None:
                record["host_bridge"] = self.network.bridge
            write_record(Path(config.data_dir), record)
            await self._start(f"node {name}", NodeTeardown(Kubelet(await self.client_for(f"kubelet/{name}", qps=200), config)))
        if self.network is not None and self.args.nodes > 1:
            extra = HostNodes(self, [self.node_name(i) for i in range(1, self.args.nodes)])
            self.stack.append(("extra nodes", extra))  # before start: a failed start stops what did start
            await extra.start()
        proxy = Proxy(await self.client_for("proxy"), ProxyConfig(mode=self.args.proxy_mode, node_name=self.node_name(0)))
        await self._start("proxy", ProxyTeardown(proxy))

    def lease_seconds(self) -> float:
        # Kubernetes' ratio: a node renews its Lease four times per grace period (10 s for 40 s), so a
        # shorter --node-monitor-grace-period does not make every healthy node unreachable.
        from pinnace.kubelet.agent import KubeletConfig

        return min(KubeletConfig.lease_seconds, self.args.node_monitor_grace_period / 4)

    async def wait_nodes_ready(self, names: list[str]) -> None:
        status = contextlib.nullcontext()
        if sys.stdout.isatty():  # a spinner while the nodes register and report Ready
            from rich.console import Console

            status = Console().status("waiting for the nodes to be Ready")
        with status:
            await self._wait_nodes_ready(names)

    async def _wait_nodes_ready(self, names: list[str]) -> None:
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


class HostNetworkTeardown:
    """The bridge the node hosts share (the machine is its first address); it goes when the cluster stops."""

    def __init__(self, network: object) -> None:
        self.network = network

    async def start(self) -> None:
        await asyncio.to_thread(self.network.ensure)  # type: ignore[attr-defined]

    async def stop(self) -> None:
        await asyncio.to_thread(self.network.remove)  # type: ignore[attr-defined]


class HostNodes:
    """The extra nodes of `pinnace up --nodes N` as root: each a network namespace host running one
    `pinnace agent` process (kubelet and service proxy), joined with the cluster's join token.

    Agents start together and `start()` returns once each has registered its Node and synced its proxy.
    `stop()` sends every agent SIGTERM (it removes its pods: `--remove-pods-on-stop`), SIGKILLs those that
    outlive AGENT_STOP_TIMEOUT, removes what any agent left (one that was killed leaves its pods running)
    and deletes the hosts. Agents also get SIGTERM when `pinnace up` itself dies (`setpriv --pdeathsig`).
    """

    def __init__(self, cluster: Cluster, names: list[str]) -> None:
        from pinnace.cli.netns_hosts import NetnsHost

        self.cluster = cluster
        network = cluster.network
        self.nodes = [(name, index, NetnsHost(network, f"pinnace-{name}", index))  # type: ignore[arg-type]
                      for index, name in enumerate(names, start=1)]
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    def node_dir(self, name: str) -> Path:
        return self.cluster.data_dir / "nodes" / name

    def record(self, name: str, index: int, host: object) -> dict:
        return {"name": name, "runtime": self.cluster.args.runtime, "bridge": f"pinnace{index}",
                "cgroup_root": f"/pinnace/{name}", "host_bridge": host.network.bridge,  # type: ignore[attr-defined]
                "netns": host.name, "index": index, "address": host.address}  # type: ignore[attr-defined]

    async def start(self) -> None:
        from pinnace.cli.down import clean_node, stop_agent

        waits: list[asyncio.Future] = []
        try:
            for name, index, host in self.nodes:
                node_dir = self.node_dir(name)
                record_path = node_dir / NODE_RECORD
                if record_path.exists():  # a `pinnace up` that did not stop cleanly: its agent and pods go first
                    with contextlib.suppress(ValueError):
                        old = json.loads(record_path.read_text())
                        await stop_agent(old, node_dir)
                        await clean_node(node_dir, old)
                record = self.record(name, index, host)
                write_record(node_dir, record)
                await asyncio.to_thread(host.create)  # type: ignore[attr-defined]
                log_path = node_dir / "agent.log"
                offset = log_path.stat().st_size if log_path.exists() else 0
                process = await self.spawn(name, index, host, log_path)
                self.processes[name] = process
                write_record(node_dir, {**record, "pid": process.pid})
                waits.append(asyncio.ensure_future(self.wait_started(name, host, process, log_path, offset)))
            await asyncio.gather(*waits)
        finally:
            for wait in waits:  # one agent failed: stop waiting for the others
                wait.cancel()

    async def spawn(self, name: str, index: int, host: object, log_path: Path) -> asyncio.subprocess.Process:
        from pinnace.dns.server import CLUSTER_DNS_IP

        cluster, args = self.cluster, self.cluster.args
        address = host.address  # type: ignore[attr-defined]
        argv = host.command([  # type: ignore[attr-defined]
            sys.executable, "-m", "pinnace", "agent",
            "--server", f"https://{cluster.network.gateway}:{cluster.server.port}",  # type: ignore[attr-defined]
            "--token-file", str(cluster.data_dir / "pki" / "node.token"), "--ca-file", str(cluster.ca_path),
            "--node-name", name, "--node-ip", address, "--read-only-address", address,
            "--data-dir", str(self.node_dir(name)), "--runtime", args.runtime,
            "--bridge", f"pinnace{index}",  # unique on the machine, so a leftover is never another node's
            "--client-ca-file", str(cluster.ca_path), "--cluster-dns", CLUSTER_DNS_IP,
            "--proxy-mode", args.proxy_mode, "--lease-renew-seconds", str(cluster.lease_seconds()),
            "--remove-pods-on-stop",
        ])
        if shutil.which("setpriv"):
            argv = ["setpriv", "--pdeathsig", "TERM", *argv]  # a killed `pinnace up` still stops its agents
        with open(log_path, "ab") as log:
            # A session of its own: Ctrl-C on the terminal reaches `pinnace up`, which stops the agents in order.
            return await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=log,
                                                        stderr=subprocess.STDOUT, start_new_session=True)

    async def wait_started(self, name: str, host: object, process: asyncio.subprocess.Process,
                           log_path: Path, offset: int) -> None:
        from pinnace.cli.main import CliError

        deadline = time.monotonic() + AGENT_START_TIMEOUT
        while True:
            with open(log_path, "rb") as log:
                log.seek(offset)
                output = log.read().decode(errors="replace")
            if "registered" in output and "proxy running" in output:
                break
            if process.returncode is not None or time.monotonic() > deadline:
                tail = "\n".join(output.strip().splitlines()[-5:])
                what = f"exited with status {process.returncode}" if process.returncode is not None else "did not start in time"
                raise CliError(f"the agent of node {name} {what}; see {log_path}:\n{tail}")
            await asyncio.sleep(0.1)
        self.cluster.progress(f"node {name} started: host {host.name} at {host.address}, "  # type: ignore[attr-defined]
                              f"agent pid {process.pid}")

    async def stop(self) -> None:
        from pinnace.cli.down import clean_node

        for process in self.processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        await asyncio.gather(*(self.wait_stopped(name, process) for name, process in self.processes.items()))
        for name, index, host in self.nodes:  # pods of a killed agent, then the host itself
            await clean_node(self.node_dir(name), self.record(name, index, host))

    async def wait_stopped(self, name: str, process: asyncio.subprocess.Process) -> None:
        try:
            await asyncio.wait_for(process.wait(), AGENT_STOP_TIMEOUT)
        except TimeoutError:
            self.cluster.progress(f"the agent of node {name} did not stop in {AGENT_STOP_TIMEOUT:.0f}s; killing it")
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
