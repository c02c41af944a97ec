"""Proxy `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward` to the pod's kubelet.

The API server calls `proxy_to_kubelet(request, pod, subresource, node=node)` after authorizing the
request. The kubelet's address is the node's InternalIP and `status.daemonEndpoints.kubeletEndpoint.Port`
(falling back to the pod's hostIP and 10250). The kubelet speaks TLS; the API server presents its
client certificate when given one (`client_cert`, `client_key`), and checks the kubelet's certificate
only when given a CA (`kubelet_ca`), because kubelets make their own self-signed serving certificates.

- `log` is a plain streamed GET (chunked when following), relayed chunk by chunk.
- `exec`, `attach` and `portforward` are HTTP upgrades (WebSocket or SPDY/3.1, and SPDY inside
  WebSocket): the request line and headers are replayed to the kubelet on a fresh connection, and
  once the kubelet answers `101 Switching Protocols` the two connections are spliced byte for byte,
  so every protocol version works without the API server understanding it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from urllib.parse import quote, urlencode

import aiohttp
from aiohttp import web

LOG_PARAMS = ("follow", "tailLines", "sinceSeconds", "sinceTime", "timestamps", "previous", "limitBytes", "pretty")
# Hop-by-hop and credential headers that must not travel to the kubelet.
DROP_HEADERS = {"host", "authorization", "content-length", "transfer-encoding", "keep-alive", "proxy-connection"}


class KubeletUnreachable(Exception):
    pass


def kubelet_address(pod: dict, node: dict | None) -> tuple[str, int]:
    host = (pod.get("status") or {}).get("hostIP")
    port = 10250
    if node is not None:
        status = node.get("status") or {}
        for address in status.get("addresses") or []:
            if address.get("type") == "InternalIP":
                host = address["address"]
                break
        port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port") or port
    if not host:
        raise KubeletUnreachable(f"pod {pod['metadata']['name']} has no host IP yet")
    return host, int(port)


def kubelet_path(pod: dict, subresource: str, query: dict[str, list[str]]) -> str:
    namespace = pod["metadata"].get("namespace", "default")
    name = pod["metadata"]["name"]
    if subresource == "portforward":
        pairs = [(key, value) for key, values in query.items() if key == "ports" for value in values]
        return f"/portforward/{quote(namespace)}/{quote(name)}" + ("?" + urlencode(pairs) if pairs else "")
    container = (query.get("container") or [""])[0]
    if not container:
        containers = pod["spec"].get("containers") or []
        container = containers[0]["name"] if containers else ""
    base = {"log": "containerLogs", "exec": "exec", "attach": "attach"}[subresource]
    path = f"/{base}/{quote(namespace)}/{quote(name)}/{quote(container)}"
    pairs = [(key, value) for key, values in query.items() if key != "container" for value in values]
    if subresource == "log":
        pairs = [(key, value) for key, value in pairs if key in LOG_PARAMS]
    return path + ("?" + urlencode(pairs) if pairs else "")


def make_ssl(client_cert: str | None, client_key: str | None, kubelet_ca: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=kubelet_ca) if kubelet_ca else ssl.create_default_context()
    if not kubelet_ca:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if client_cert and client_key:
        context.load_cert_chain(client_cert, client_key)
    return context


def _status(code: int, reason: str, message: str) -> web.Response:
    import json

    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message, "reason": reason, "code": code}
    return web.Response(status=code, text=json.dumps(body), content_type="application/json")


async def proxy_to_kubelet(
    request: web.Request,
    pod: dict,
    subresource: str,
    node: dict | None = None,
    *,
    client_cert: str | None = None,
    client_key: str | None = None,
    kubelet_ca: str | None = None,
) -> web.StreamResponse:
    """Relay one pods/{log,exec,attach,portforward} request to the kubelet running `pod`."""
    if subresource not in ("log", "exec", "attach", "portforward"):
        return _status(404, "NotFound", f"subresource {subresource} is not served by the kubelet")
    phase = (pod.get("status") or {}).get("phase")
    if subresource in ("exec", "attach", "portforward") and phase in ("Succeeded", "Failed"):
        return _status(400, "BadRequest", f"cannot {subresource} into a container in a completed pod; current phase is {phase}")
    try:
        host, port = kubelet_address(pod, node)
    except KubeletUnreachable as error:
        return _status(400, "BadRequest", str(error))
    query = {key: request.query.getall(key) for key in request.query}
    path = kubelet_path(pod, subresource, query)
    context = make_ssl(client_cert, client_key, kubelet_ca)
    if subresource == "log" or request.headers.get("Upgrade") is None:
        return await _proxy_plain(request, f"https://{host}:{port}{path}", context)
    return await _proxy_upgrade(request, host, port, path, context)


async def _proxy_plain(request: web.Request, url: str, context: ssl.SSLContext) -> web.StreamResponse:
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.request(request.method, url, ssl=context) as upstream:
                response = web.StreamResponse(status=upstream.status)
                response.content_type = upstream.content_type or "text/plain"
                response.enable_chunked_encoding()
                await response.prepare(request)
                try:
                    async for chunk in upstream.content.iter_any():
                        await response.write(chunk)
                    await response.write_eof()
                except (ConnectionResetError, aiohttp.ClientConnectionError):
                    # The client went away (`kubectl logs -f` ended) or the kubelet did: once the
                    # answer has started, the stream just ends.
                    pass
                return response
    except aiohttp.ClientConnectionError as error:
        return _status(502, "ServiceUnavailable", f"error dialing the kubelet: {error}")


class _Relay(asyncio.Protocol):
    def __init__(self, peer: asyncio.BaseTransport) -> None:
        self.peer = peer
        self.closed = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if not self.peer.is_closing():
            self.peer.write(data)  # type: ignore[attr-defined]

    def eof_received(self) -> bool | None:
        self._finish()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()

    def _finish(self) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def _proxy_upgrade(request: web.Request, host: str, port: int, path: str, context: ssl.SSLContext) -> web.StreamResponse:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=context, server_hostname=host), 10)
    except (OSError, TimeoutError) as error:
        return _status(502, "ServiceUnavailable", f"error dialing the kubelet: {error}")
    lines = [f"{request.method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    for name, value in request.headers.items():
        if name.lower() not in DROP_HEADERS:
            lines.append(f"{name}: {value}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
        writer.close()
        return _status(502, "ServiceUnavailable", "the kubelet closed the connection")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    code = int(status_line.split(" ")[1])
    headers = [tuple(line.split(":", 1)) for line in header_lines if ":" in line]
    if code != 101:
        body = b""
        length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), None)
        with contextlib.suppress(Exception):
            body = await asyncio.wait_for(reader.readexactly(length) if length is not None else reader.read(65536), 5)
        writer.close()
        response = web.Response(status=code, body=body)
        for key, value in headers:
            if key.strip().lower() in ("content-type",):
                response.headers[key.strip()] = value.strip()
        return response
    client = request.transport
    assert client is not None
    upstream = writer.transport
    buffered = bytes(reader._buffer)  # bytes the kubelet already sent after its 101 head
    reader._buffer.clear()
    # Splice: kubelet -> client through a relay protocol on the kubelet side, client -> kubelet on ours.
    to_client = _Relay(client)
    to_kubelet = _Relay(upstream)
    tail = getattr(request.protocol, "_message_tail", b"")
    client.set_protocol(to_kubelet)
    upstream.set_protocol(to_client)
    response = web.StreamResponse(status=101)
    for key, value in headers:
        if key.strip().lower() not in ("content-length", "transfer-encoding"):
            response.headers[key.strip()] = value.strip()
    response.force_close()
    await response.prepare(request)
    if tail:
        upstream.write(tail)
    if buffered:
        client.write(buffered)
    await asyncio.wait([to_client.closed, to_kubelet.closed], return_when=asyncio.FIRST_COMPLETED)
    upstream.close()
    client.close()
    return response


def kubelet_client_certificate(server) -> tuple[str, str] | tuple[None, None]:
    """The API server's client certificate for kubelets (CN kube-apiserver-kubelet-client), made once."""
    certs = getattr(server, "certs", None)
    if certs is None:
        return None, None
    directory = certs.ca_cert.parent
    cert_path, key_path = directory / "kubelet-client.crt", directory / "kubelet-client.key"
    if not (cert_path.exists() and key_path.exists()):
        from pinnace.apiserver import certs as cluster_certs

        ca_cert, ca_key = cluster_certs.load_ca(certs)
        cert_pem, key_pem = cluster_certs.issue(
            ca_cert, ca_key, "kube-apiserver-kubelet-client", organizations=("system:masters",)
        )
        key_path.write_bytes(key_pem)
        key_path.chmod(0o600)
        cert_path.write_bytes(cert_pem)
    return str(cert_path), str(key_path)


async def kubelet_get(node: dict, path: str, *, client_cert: str | None = None, client_key: str | None = None,
                      kubelet_ca: str | None = None, timeout: float = 10) -> dict:
    """GET a JSON document from a node's kubelet API, e.g. "/stats/summary" for metrics.k8s.io."""
    host, port = kubelet_address({"metadata": {"name": node["metadata"]["name"]}, "status": {}}, node)
    context = make_ssl(client_cert, client_key, kubelet_ca)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.get(f"https://{host}:{port}{path}", ssl=context) as response:
            response.raise_for_status()
            return await response.json(content_type=None)


async def _proxy_node(server, request: web.Request, target) -> web.StreamResponse:
    """nodes/{name}/proxy/{path}: any kubelet path, e.g. /stats/summary, /pods, /healthz."""
    node = await server.registry.get(target.info, None, target.name or "")
    marker = f"/nodes/{target.name}/proxy"
    path = request.path.split(marker, 1)[1] if marker in request.path else "/"
    host, port = kubelet_address({"metadata": {"name": target.name}, "status": {}}, node)
    cert, key = await asyncio.to_thread(kubelet_client_certificate, server)
    query = ("?" + request.query_string) if request.query_string else ""
    return await _proxy_plain(request, f"https://{host}:{port}{path or '/'}{query}", make_ssl(cert, key, None))


async def handle(server, request: web.Request, target, subresource: str) -> web.StreamResponse:
    """The API server's entry point: pods/{log,exec,attach,portforward} and nodes/proxy of `target`."""
    if target.info.name == "v1/nodes" and subresource == "proxy":
        return await _proxy_node(server, request, target)
    if target.info.name != "v1/pods" or subresource not in ("log", "exec", "attach", "portforward"):
        return _status(404, "NotFound", f"{target.info.plural}/{subresource} is not served by this server")
    pod = await server.registry.get(target.info, target.namespace, target.name or "")
    node = None
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        return _status(400, "BadRequest", f"pod {target.name} is not scheduled to a node yet")
    from pinnace.apiserver.errors import NotFound

    try:
        node = await server.registry.get(server.kinds.by_resource("v1/nodes"), None, node_name)
    except NotFound:  # a pod whose Node is gone: fall back to its hostIP
        node = None
    cert, key = await asyncio.to_thread(kubelet_client_certificate, server)
    return await proxy_to_kubelet(request, pod, subresource, node, client_cert=cert, client_key=key)
