"""exec, attach and port-forward over the protocols kubectl speaks.

- WebSocket channel protocols (`v5.channel.k8s.io`, `v4.channel.k8s.io`, `v3.channel.k8s.io`,
  `v2.channel.k8s.io`, `channel.k8s.io`): every binary message starts with its channel byte, 0 stdin,
  1 stdout, 2 stderr, 3 error, 4 resize; v5 adds 255 "close" (`[255, channel]`). From v4 on the error
  channel carries a `Status` JSON, with the exit code as cause `ExitCode` on failure.
- SPDY/3.1 after an HTTP upgrade: one stream per channel, named by the `streamtype` header; the
  protocol version is negotiated with `X-Stream-Protocol-Version`.
- Port-forward: SPDY streams `error` and `data` per connection (headers `port`, `requestID`); kubectl
  1.31+ carries the same SPDY bytes inside WebSocket messages (subprotocol `SPDY/3.1+portforward.k8s.io`).

`tty=true` runs the command on a pseudo-terminal (resize messages set its size). Difference from
Kubernetes: attach only streams the container's output, because process containers have no stdin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from pinnace.kubelet.runtime.base import ContainerState, RuntimeFailure
from pinnace.kubelet.spdy import SpdySession, SpdyStream

log = logging.getLogger(__name__)

WS_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
SPDY_EXEC_PROTOCOLS = ("v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
PORT_FORWARD_WS = "SPDY/3.1+portforward.k8s.io"
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def success_status() -> dict:
    return {"metadata": {}, "status": "Success"}


def exit_status(code: int) -> dict:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: error executing command [...], exit code {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def error_status(message: str) -> dict:
    return {"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500}


def resize(process: Any, payload: bytes) -> None:
    """A terminal size message: {"Width": w, "Height": h}."""
    if not hasattr(process, "resize") or not payload.strip():
        return
    try:
        size = orjson.loads(payload)
        process.resize(int(size.get("Width", 0)), int(size.get("Height", 0)))
    except (orjson.JSONDecodeError, ValueError, AttributeError):
        return


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


def flag(request: web.Request, name: str, default: bool = False) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes")


class _Hijacked(asyncio.Protocol):
    """Takes over an upgraded connection's transport from aiohttp."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[bytes | None] = asyncio.Queue()

    def data_received(self, data: bytes) -> None:
        self.incoming.put_nowait(data)

    def eof_received(self) -> bool | None:
        self.incoming.put_nowait(None)
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.incoming.put_nowait(None)


async def hijack(request: web.Request, headers: dict[str, str]) -> tuple[_Hijacked, Any, web.StreamResponse]:
    """Answer 101 with `headers` and take the raw connection (TLS or not) away from aiohttp."""
    transport = request.transport
    assert transport is not None
    protocol = _Hijacked()
    tail = getattr(request.protocol, "_message_tail", b"")
    if tail:
        protocol.incoming.put_nowait(tail)
    transport.set_protocol(protocol)
    response = web.StreamResponse(status=101, headers={"Connection": "Upgrade", **headers})
    response.force_close()
    await response.prepare(request)
    return protocol, transport, response


# ----------------------------------------------------------------------------- exec

async def _pump(stream: asyncio.StreamReader | None, write) -> None:
    if stream is None:
        return
    while True:
        chunk = await stream.read(32768)
        if not chunk:
            return
        await write(chunk)


async def serve_exec(request: web.Request, runtime: Any, container_id: str) -> web.StreamResponse:
    command = request.query.getall("command", [])
    if not command:
        return web.Response(status=400, text="you must specify at least one command for the container")
    tty = flag(request, "tty")
    stdin = flag(request, "stdin") or flag(request, "input")
    if is_websocket(request):
        return await _exec_websocket(request, runtime, container_id, command, stdin, tty)
    if request.headers.get("Upgrade", "").lower().startswith("spdy/3.1"):
        return await _exec_spdy(request, runtime, container_id, command, stdin, tty)
    return web.Response(status=400, text="exec needs a WebSocket or SPDY/3.1 upgrade")


async def _exec_websocket(request: web.Request, runtime, container_id: str, command: list[str], stdin: bool, tty: bool) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=WS_PROTOCOLS, max_msg_size=0, autoping=True)
    await ws.prepare(request)
    version = ws.ws_protocol or "channel.k8s.io"
    structured = version in ("v4.channel.k8s.io", "v5.channel.k8s.io")
    lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with lock:
            if not ws.closed:
                await ws.send_bytes(bytes([channel]) + data)

    try:
        process = await runtime.exec(container_id, command, stdin=stdin, tty=tty)
    except Exception as error:  # any failure to start is reported to the client on the error channel
        await send(ERROR, orjson.dumps(error_status(str(error))) if structured else str(error).encode())
        await ws.close()
        return ws

    async def read_client() -> None:
        async for message in ws:
            if message.type != WSMsgType.BINARY or not message.data:
                continue
            channel, payload = message.data[0], message.data[1:]
            if channel == STDIN and process.stdin is not None:
                process.stdin.write(payload)
                with contextlib.suppress(ConnectionError):
                    await process.stdin.drain()
            elif channel == CLOSE and payload[:1] == bytes([STDIN]) and process.stdin is not None:
                process.stdin.close()
            elif channel == RESIZE:
                resize(process, payload)
        if process.stdin is not None:
            process.stdin.close()

    reader = asyncio.create_task(read_client())
    await asyncio.gather(
        _pump(process.stdout, lambda data: send(STDOUT, data)),
        _pump(process.stderr, lambda data: send(STDERR, data)),
    )
    code = await process.wait()
    if structured:
        await send(ERROR, orjson.dumps(success_status() if code == 0 else exit_status(code)))
    elif code != 0:
        await send(ERROR, f"command terminated with non-zero exit code: exit status {code}".encode())
    reader.cancel()
    await ws.close()
    return ws


def _negotiate(request: web.Request, supported: tuple[str, ...]) -> str | None:
    offered = [v.strip() for header in request.headers.getall("X-Stream-Protocol-Version", []) for v in header.split(",")]
    for version in offered:
        if version in supported:
            return version
    return None if offered else supported[-1]


async def _run_spdy(protocol: _Hijacked, transport, session: SpdySession, done: asyncio.Future) -> None:
    async def read_loop() -> None:
        while True:
            data = await protocol.incoming.get()
            if data is None:
                session.close()
                return
            await session.feed(data)

    reader = asyncio.create_task(read_loop())
    try:
        await asyncio.wait([reader, done], return_when=asyncio.FIRST_COMPLETED)  # type: ignore[list-item]
    finally:
        reader.cancel()
        session.close()
        transport.close()


def _transport_sender(transport):
    async def send(data: bytes) -> None:
        if not transport.is_closing():
            transport.write(data)

    return send


async def _exec_spdy(request: web.Request, runtime, container_id: str, command: list[str], stdin: bool, tty: bool) -> web.StreamResponse:
    version = _negotiate(request, SPDY_EXEC_PROTOCOLS)
    if version is None:
        return web.Response(status=403, text="no supported stream protocol version")
    protocol, transport, response = await hijack(
        request, {"Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": version}
    )
    streams: dict[str, SpdyStream] = {}
    expected = {"error"} | ({"stdin"} if stdin else set()) | ({"stdout"} if flag(request, "stdout", True) else set())
    if flag(request, "stderr", True) and not tty:
        expected.add("stderr")
    if tty and version != "v2.channel.k8s.io" and version != "channel.k8s.io":
        expected.add("resize")
    ready = asyncio.Event()

    def on_stream(stream: SpdyStream) -> None:
        streams[stream.headers.get("streamtype", "")] = stream
        if expected <= set(streams):
            ready.set()

    session = SpdySession(_transport_sender(transport), on_stream)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run() -> None:
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), 10)
            error = streams.get("error")
            try:
                process = await runtime.exec(container_id, command, stdin="stdin" in streams, tty=tty)
            except Exception as failure:  # reported to the client on the error stream
                if error is not None:
                    await error.write(orjson.dumps(error_status(str(failure))) if version.startswith("v4") else str(failure).encode())
                    await error.close()
                return

            async def feed_stdin() -> None:
                stream = streams.get("stdin")
                if stream is None or process.stdin is None:
                    return
                while (chunk := await stream.read()) is not None:
                    process.stdin.write(chunk)
                    with contextlib.suppress(ConnectionError):
                        await process.stdin.drain()
                process.stdin.close()

            async def watch_resize() -> None:
                stream = streams.get("resize")
                buffer = b""
                while stream is not None and (chunk := await stream.read()) is not None:
                    buffer += chunk
                    while b"\n" in buffer or buffer.rstrip().endswith(b"}"):
                        line, _, buffer = buffer.partition(b"\n") if b"\n" in buffer else (buffer, b"", b"")
                        resize(process, line)

            feeder = asyncio.create_task(feed_stdin())
            resizer = asyncio.create_task(watch_resize())
            outputs = []
            for name, pipe in (("stdout", process.stdout), ("stderr", process.stderr)):
                stream = streams.get(name)
                if stream is not None:
                    outputs.append(_pump(pipe, stream.write))
                elif pipe is not None:
                    outputs.append(_pump(pipe, lambda data: asyncio.sleep(0)))
            await asyncio.gather(*outputs)
            code = await process.wait()
            feeder.cancel()
            resizer.cancel()
            for name in ("stdout", "stderr"):
                if name in streams:
                    await streams[name].close()
            if error is not None:
                if version.startswith("v4"):
                    await error.write(orjson.dumps(success_status() if code == 0 else exit_status(code)))
                elif code != 0:
                    await error.write(f"command terminated with non-zero exit code: exit status {code}".encode())
                await error.close()
            await session.goaway()
        finally:
            if not done.done():
                done.set_result(None)

    runner = asyncio.create_task(run())
    await _run_spdy(protocol, transport, session, done)
    runner.cancel()
    return response


# ----------------------------------------------------------------------------- attach

async def serve_attach(request: web.Request, runtime: Any, container_id: str) -> web.StreamResponse:
    """Stream the container's output from now on (process containers have no stdin to attach)."""
    from pinnace.kubelet.runtime.crilog import read_logs

    status = await runtime.container_status(container_id)

    async def running() -> bool:
        current = await runtime.container_status(container_id)
        return current is not None and current.state == ContainerState.RUNNING

    async def follow(write) -> None:
        async for chunk in read_logs(status.log_path, follow=True, tail_lines=0, is_running=running):
            await write(chunk)

    if is_websocket(request):
        ws = web.WebSocketResponse(protocols=WS_PROTOCOLS, max_msg_size=0)
        await ws.prepare(request)
        structured = ws.ws_protocol in ("v4.channel.k8s.io", "v5.channel.k8s.io")

        async def write(data: bytes) -> None:
            await ws.send_bytes(bytes([STDOUT]) + data)

        drain = asyncio.create_task(_drain_ws(ws))
        await follow(write)
        if structured:
            await ws.send_bytes(bytes([ERROR]) + orjson.dumps(success_status()))
        drain.cancel()
        await ws.close()
        return ws
    version = _negotiate(request, SPDY_EXEC_PROTOCOLS) or "v4.channel.k8s.io"
    protocol, transport, response = await hijack(request, {"Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": version})
    streams: dict[str, SpdyStream] = {}
    session = SpdySession(_transport_sender(transport), lambda stream: streams.__setitem__(stream.headers.get("streamtype", ""), stream))
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def run() -> None:
        await asyncio.sleep(0.5)  # let the client open its streams
        stdout = streams.get("stdout")
        if stdout is not None:
            await follow(stdout.write)
            await stdout.close()
        if "error" in streams:
            await streams["error"].close()
        await session.goaway()
        done.set_result(None)

    runner = asyncio.create_task(run())
    await _run_spdy(protocol, transport, session, done)
    runner.cancel()
    return response


async def _drain_ws(ws: web.WebSocketResponse) -> None:
    async for _ in ws:
        pass


# ----------------------------------------------------------------------------- port-forward

async def serve_port_forward(request: web.Request, runtime: Any, sandbox_id: str) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task] = set()
    error_streams: dict[str, SpdyStream] = {}

    def on_stream(stream: SpdyStream) -> None:
        kind = stream.headers.get("streamtype")
        request_id = stream.headers.get("requestid", "")
        if kind == "error":
            error_streams[request_id] = stream
        elif kind == "data":
            task = loop.create_task(_forward(runtime, sandbox_id, stream, lambda: error_streams.get(request_id)))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    if is_websocket(request):
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if PORT_FORWARD_WS not in protocols:
            return await _port_forward_channels(request, runtime, sandbox_id)
        ws = web.WebSocketResponse(protocols=(PORT_FORWARD_WS,), max_msg_size=0)
        await ws.prepare(request)

        async def send(data: bytes) -> None:
            if not ws.closed:
                await ws.send_bytes(data)

        session = SpdySession(send, on_stream)
        async for message in ws:
            if message.type == WSMsgType.BINARY:
                await session.feed(message.data)
        session.close()
        for task in list(tasks):
            task.cancel()
        return ws
    protocol, transport, response = await hijack(
        request, {"Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": "portforward.k8s.io"}
    )
    session = SpdySession(_transport_sender(transport), on_stream)
    never: asyncio.Future[None] = loop.create_future()
    try:
        await _run_spdy(protocol, transport, session, never)
    finally:
        for task in list(tasks):
            task.cancel()
    return response


async def _forward(runtime: Any, sandbox_id: str, stream: SpdyStream, error_stream) -> None:
    try:
        port = int(stream.headers.get("port", "0"))
        reader, writer = await runtime.port_forward(sandbox_id, port)
    except (OSError, ValueError, RuntimeFailure) as error:
        message = f"error forwarding port {stream.headers.get('port')} to pod: {error}"
        errors = error_stream()
        if errors is not None:
            await errors.write(message.encode())
            await errors.close()
        await stream.close()
        return

    async def upstream() -> None:
        while (chunk := await stream.read()) is not None:
            writer.write(chunk)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    sender = asyncio.create_task(upstream())
    try:
        while chunk := await reader.read(32768):
            await stream.write(chunk)
    except OSError:
        pass
    finally:
        await stream.close()
        errors = error_stream()
        if errors is not None:
            await errors.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(sender, 1)
        sender.cancel()
        writer.close()


async def _port_forward_channels(request: web.Request, runtime: Any, sandbox_id: str) -> web.StreamResponse:
    """The WebSocket channel flavour of port-forward (the official client libraries): `?ports=a,b`; for
    the i-th port, channel 2i carries data and 2i+1 errors, and each channel's first server message is
    the port as two little-endian bytes."""
    ports = [int(p) for value in request.query.getall("ports", []) for p in value.split(",") if p.strip()]
    if not ports:
        return web.Response(status=400, text="query parameter ports is required")
    ws = web.WebSocketResponse(protocols=("v4.channel.k8s.io", "portforward.k8s.io", "channel.k8s.io"), max_msg_size=0)
    await ws.prepare(request)
    lock = asyncio.Lock()

    async def send(channel: int, data: bytes) -> None:
        async with lock:
            if not ws.closed:
                await ws.send_bytes(bytes([channel]) + data)

    writers: dict[int, asyncio.StreamWriter] = {}
    pumps = []
    for index, port in enumerate(ports):
        await send(2 * index, port.to_bytes(2, "little"))
        await send(2 * index + 1, port.to_bytes(2, "little"))
        try:
            reader, writer = await runtime.port_forward(sandbox_id, port)
        except (OSError, RuntimeFailure) as error:
            await send(2 * index + 1, f"error forwarding port {port} to pod: {error}".encode())
            continue
        writers[2 * index] = writer

        async def pump(reader=reader, channel=2 * index) -> None:
            while chunk := await reader.read(32768):
                await send(channel, chunk)

        pumps.append(asyncio.create_task(pump()))

    async def close_when_drained() -> None:
        # The pod closed every connection: end the session, as the kubelet does.
        await asyncio.gather(*pumps, return_exceptions=True)
        await ws.close()

    closer = asyncio.create_task(close_when_drained())
    try:
        async for message in ws:
            if message.type == WSMsgType.BINARY and message.data:
                writer = writers.get(message.data[0])
                if writer is not None:
                    writer.write(message.data[1:])
                    await writer.drain()
    finally:
        closer.cancel()
        for task in pumps:
            task.cancel()
        for writer in writers.values():
            writer.close()
    return ws
