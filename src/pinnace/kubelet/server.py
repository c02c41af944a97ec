"""The kubelet's HTTP APIs.

:10250 (TLS) is the API the API server proxies `pods/log`, `pods/exec`, `pods/attach` and
`pods/portforward` to, with the kubelet's paths: `/containerLogs/{ns}/{pod}/{container}`,
`/exec/{ns}/{pod}/{container}`, `/attach/{ns}/{pod}/{container}`, `/portforward/{ns}/{pod}`, plus
`/healthz`, `/pods`, `/spec` and `/stats/summary`. When `client_ca_file` is set only client
certificates signed by that CA are accepted (the API server's); otherwise any TLS client is served,
which is only safe when the port is not reachable from outside.

:10255 (plain HTTP, 127.0.0.1 by default) is the read-only API: `/healthz`, `/spec`, `/pods`,
`/stats/summary`.

Streaming protocols (see streaming.py): exec and attach speak WebSocket `v5.channel.k8s.io`,
`v4.channel.k8s.io` (and the older channel protocols) or SPDY/3.1; port-forward speaks SPDY/3.1,
directly or tunnelled in WebSocket (`SPDY/3.1+portforward.k8s.io`, kubectl 1.31+).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import platform
import ssl
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import psutil
from aiohttp import web

from pinnace.kubelet.runtime.base import ContainerState
from pinnace.kubelet.runtime.crilog import read_logs

if TYPE_CHECKING:
    from pinnace.kubelet.agent import Kubelet

log = logging.getLogger(__name__)


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def status_error(code: int, reason: str, message: str) -> web.Response:
    return json_response(
        {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code},
        code,
    )


def ensure_certificate(directory: Path, host: str) -> tuple[str, str]:
    """A self-signed serving certificate for the kubelet API, made once and kept in the data dir."""
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    if cert_path.exists() and key_path.exists():
        return str(cert_path), str(key_path)
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{host}@{int(time.time())}")])
    sans: list[x509.GeneralName] = [x509.DNSName(host), x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    with contextlib.suppress(ValueError):
        sans.append(x509.IPAddress(ipaddress.ip_address(host)))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return str(cert_path), str(key_path)


async def make_certificate(directory: Path, host: str) -> tuple[str, str]:
    """ensure_certificate in a short-lived child process: the cryptography package would otherwise
    stay in the kubelet's memory (about 10 MB) for one certificate made once."""
    cert_path, key_path = directory / "kubelet.crt", directory / "kubelet.key"
    if not (cert_path.exists() and key_path.exists()):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; from pinnace.kubelet.server import ensure_certificate; "
            "ensure_certificate(__import__('pathlib').Path(sys.argv[1]), sys.argv[2])", str(directory), host,
        )
        if await process.wait() != 0:
            raise RuntimeError("making the kubelet's serving certificate failed")
    return str(cert_path), str(key_path)


class KubeletServer:
    def __init__(self, kubelet: Kubelet) -> None:
        self.kubelet = kubelet
        # CPU samples per object, per kubelet: several nodes may share one process.
        self._samples: dict[str, tuple[float, float]] = {}

    # ----------------------------------------------------------------- helpers

    def find_pod(self, namespace: str, name: str) -> dict | None:
        return self.kubelet.pods.get(f"{namespace}/{name}")

    def find_container(self, namespace: str, pod_name: str, container: str | None, previous: bool = False):
        """(pod, runtime container status) or an error response."""
        worker = self.kubelet.worker_for(namespace, pod_name)
        pod = self.find_pod(namespace, pod_name) or (worker.pod if worker else None)
        if pod is None or worker is None:
            return None, status_error(404, "NotFound", f'pod "{pod_name}" not found')
        names = [c["name"] for c in (pod["spec"].get("initContainers") or []) + (pod["spec"].get("containers") or [])]
        if not container:
            container = pod["spec"]["containers"][0]["name"]
        if container not in names:
            return None, status_error(
                400, "BadRequest", f"container {container} is not valid for pod {pod_name}"
            )
        track = worker.tracks.get(container)
        container_id = None
        if track is not None:
            container_id = track.previous_id if previous else track.container_id
        if container_id is None:
            if previous:
                return None, status_error(
                    400, "BadRequest", f'previous terminated container "{container}" in pod "{pod_name}" not found'
                )
            return None, status_error(
                400, "BadRequest", f'container "{container}" in pod "{pod_name}" is waiting to start: ContainerCreating'
            )
        return (pod, container_id), None

    # ----------------------------------------------------------------- logs

    async def container_logs(self, request: web.Request) -> web.StreamResponse:
        query = request.query
        found, error = self.find_container(
            request.match_info["namespace"], request.match_info["pod"], request.match_info.get("container"), query.get("previous") == "true"
        )
        if error:
            return error
        _, container_id = found
        runtime = self.kubelet.runtime
        status = await runtime.container_status(container_id)
        if status is None:
            return status_error(404, "NotFound", "container not found")
        since = None
        if query.get("sinceSeconds"):
            since = time.time() - int(query["sinceSeconds"])
        elif query.get("sinceTime"):
            from pinnace.kubelet.runtime.crilog import parse_timestamp

            since = parse_timestamp(query["sinceTime"])
        follow = query.get("follow") == "true"

        async def running() -> bool:
            current = await runtime.container_status(container_id)
            return current is not None and current.state == ContainerState.RUNNING

        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        if follow:
            response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            async for chunk in read_logs(
                status.log_path,
                follow=follow,
                tail_lines=int(query["tailLines"]) if query.get("tailLines") else None,
                since=since,
                timestamps=query.get("timestamps") == "true",
                limit_bytes=int(query["limitBytes"]) if query.get("limitBytes") else None,
                is_running=running,
            ):
                await response.write(chunk)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the reader went away (a `logs -f` that ended): nothing more to send
        return response

    # ----------------------------------------------------------------- exec / attach / port-forward

    async def exec(self, request: web.Request) -> web.StreamResponse:
        from pinnace.kubelet import streaming

        found, error = self.find_container(request.match_info["namespace"], request.match_info["pod"], request.match_info.get("container"))
        if error:
            return error
        _, container_id = found
        return await streaming.serve_exec(request, self.kubelet.runtime, container_id)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        from pinnace.kubelet import streaming

        found, error = self.find_container(request.match_info["namespace"], request.match_info["pod"], request.match_info.get("container"))
        if error:
            return error
        _, container_id = found
        return await streaming.serve_attach(request, self.kubelet.runtime, container_id)

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        from pinnace.kubelet import streaming

        worker = self.kubelet.worker_for(request.match_info["namespace"], request.match_info["pod"])
        if worker is None or worker.sandbox_id is None:
            return status_error(404, "NotFound", f'pod "{request.match_info["pod"]}" not found')
        return await streaming.serve_port_forward(request, self.kubelet.runtime, worker.sandbox_id)

    # ----------------------------------------------------------------- read-only

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def spec(self, request: web.Request) -> web.Response:
        from pinnace.kubelet.agent import machine_id

        return json_response(
            {
                "num_cores": os.cpu_count(),
                "memory_capacity": psutil.virtual_memory().total,
                "machine_id": machine_id(),
                "system_uuid": machine_id(),
                "boot_id": Path("/proc/sys/kernel/random/boot_id").read_text().strip()
                if Path("/proc/sys/kernel/random/boot_id").exists()
                else "",
                "kernel_version": platform.release(),
                "os": "linux",
                "os_version": platform.platform(),
                "cpu_frequency_khz": int((psutil.cpu_freq().max if psutil.cpu_freq() else 0) * 1000),
            }
        )

    async def pods(self, request: web.Request) -> web.Response:
        items = []
        for key, worker in list(self.kubelet.workers.items()):
            pod = worker.pod or self.kubelet.pods.get(key)
            if pod is None:
                continue
            status = worker.last_status or pod.get("status") or {}
            items.append({**pod, "apiVersion": "v1", "kind": "Pod", "status": status})
        return json_response({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})

    async def stats_summary(self, request: web.Request) -> web.Response:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        memory = psutil.virtual_memory()
        cpu_times = psutil.cpu_times()
        node_cpu_ns = int((cpu_times.user + cpu_times.system) * 1e9)
        disk = psutil.disk_usage(str(self.kubelet.data_dir))
        pods = []
        runtime = self.kubelet.runtime
        for worker in list(self.kubelet.workers.values()):
            pod = worker.pod
            if pod is None or worker.sandbox_id is None:
                continue
            containers = []
            pod_cpu = 0.0
            pod_memory = 0
            for name, track in worker.tracks.items():
                if not track.container_id:
                    continue
                stats = await runtime.container_stats(track.container_id)
                if not stats:
                    continue
                pod_cpu += stats["cpu_seconds"]
                pod_memory += stats["memory_bytes"]
                containers.append(
                    {
                        "name": name,
                        "startTime": now,
                        "cpu": {"time": now, "usageCoreNanoSeconds": int(stats["cpu_seconds"] * 1e9), "usageNanoCores": self.rate(track.container_id, stats["cpu_seconds"])},
                        "memory": {"time": now, "workingSetBytes": stats["memory_bytes"], "usageBytes": stats["memory_bytes"], "rssBytes": stats["rss_bytes"]},
                    }
                )
            pods.append(
                {
                    "podRef": {"name": pod["metadata"]["name"], "namespace": pod["metadata"].get("namespace", "default"), "uid": worker.uid},
                    "startTime": worker.start_time,
                    "containers": containers,
                    "cpu": {"time": now, "usageCoreNanoSeconds": int(pod_cpu * 1e9), "usageNanoCores": self.rate(worker.uid, pod_cpu)},
                    "memory": {"time": now, "workingSetBytes": pod_memory, "usageBytes": pod_memory},
                }
            )
        return json_response(
            {
                "node": {
                    "nodeName": self.kubelet.node_name,
                    "startTime": dt.datetime.fromtimestamp(psutil.boot_time(), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "cpu": {"time": now, "usageCoreNanoSeconds": node_cpu_ns, "usageNanoCores": self.rate("node", node_cpu_ns / 1e9)},
                    "memory": {
                        "time": now,
                        "availableBytes": memory.available,
                        "usageBytes": memory.total - memory.available,
                        "workingSetBytes": memory.total - memory.available,
                    },
                    "fs": {"time": now, "availableBytes": disk.free, "capacityBytes": disk.total, "usedBytes": disk.used},
                },
                "pods": pods,
            }
        )

    def rate(self, key: str, cpu_seconds: float) -> int:
        """CPU use in nanocores since the previous scrape of the same object."""
        now = time.monotonic()
        previous = self._samples.get(key)
        self._samples[key] = (now, cpu_seconds)
        if previous is None or now <= previous[0]:
            return 0
        return max(int((cpu_seconds - previous[1]) / (now - previous[0]) * 1e9), 0)


def _routes(server: KubeletServer, full: bool) -> list[web.RouteDef]:
    routes = [
        web.get("/healthz", server.healthz),
        web.get("/spec", server.spec),
        web.get("/spec/", server.spec),
        web.get("/pods", server.pods),
        web.get("/pods/", server.pods),
        web.get("/stats/summary", server.stats_summary),
    ]
    if full:
        for prefix, handler in (("exec", server.exec), ("attach", server.attach)):
            routes += [
                web.route("*", f"/{prefix}/{{namespace}}/{{pod}}/{{container}}", handler),
                web.route("*", f"/{prefix}/{{namespace}}/{{pod}}/{{uid}}/{{container}}", handler),
            ]
        routes += [
            web.get("/containerLogs/{namespace}/{pod}/{container}", server.container_logs),
            web.route("*", "/portforward/{namespace}/{pod}", server.port_forward),
            web.route("*", "/portforward/{namespace}/{pod}/{uid}", server.port_forward),
        ]
    return routes


async def start_servers(kubelet: Kubelet) -> list[web.AppRunner]:
    config = kubelet.config
    server = KubeletServer(kubelet)
    runners = []
    if config.port:
        middlewares = [_only_api_server(config.client_names)] if config.client_ca_file else []
        app = web.Application(middlewares=middlewares)
        app.add_routes(_routes(server, full=True))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        cert, key = config.tls_cert_file, config.tls_key_file
        if not cert or not key:
            cert, key = await make_certificate(kubelet.data_dir / "pki", kubelet.node_ip)
        # A bare server context: the system CA bundle is not needed to serve, and costs memory.
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        if config.client_ca_file:
            context.load_verify_locations(config.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        site = web.TCPSite(runner, config.address, config.port, ssl_context=context)
        await site.start()
        runners.append(runner)
        kubelet.port = _bound_port(site, config.port)
    if config.read_only_port:
        app = web.Application()
        app.add_routes(_routes(server, full=False))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, config.read_only_address, config.read_only_port)
        await site.start()
        runners.append(runner)
        kubelet.read_only_port = _bound_port(site, config.read_only_port)
    return runners


def _only_api_server(names: tuple[str, ...]):
    """With a client CA, TLS already proved the certificate; this admits only the API server's names
    (its client certificate for kubelets), not every identity that CA signed (nodes, users)."""

    @web.middleware
    async def check(request: web.Request, handler):
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(item for rdn in (peer or {}).get("subject", ()) for item in rdn)
        if subject.get("commonName") not in names:
            return status_error(403, "Forbidden", f"client {subject.get('commonName')!r} may not use the kubelet API")
        return await handler(request)

    return check


def _bound_port(site: web.TCPSite, configured: int) -> int:
    server = site._server  # aiohttp keeps the asyncio server here; needed to learn an ephemeral port
    if server is not None and getattr(server, "sockets", None):
        return server.sockets[0].getsockname()[1]
    return configured
