"""Probe handlers on their own: httpGet, tcpSocket, exec and grpc against local servers."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from pinnace.kubelet.probes import Prober, resolve_port, run_handler


async def no_exec(command, timeout):
    raise AssertionError("exec not expected")


@pytest.fixture
async def http_server():
    async def ok(request):
        assert request.headers["X-Probe"] == "yes"
        return web.Response(text="ok")

    async def broken(request):
        return web.Response(status=500)

    app = web.Application()
    app.add_routes([web.get("/ok", ok), web.get("/broken", broken)])
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield site._server.sockets[0].getsockname()[1]
    await runner.cleanup()


async def test_http_get_success_and_failure(http_server):
    container = {"name": "c", "ports": [{"name": "web", "containerPort": http_server}]}
    headers = [{"name": "X-Probe", "value": "yes"}]
    ok = {"httpGet": {"path": "/ok", "port": "web", "httpHeaders": headers}}
    assert await run_handler(ok, container, "127.0.0.1", no_exec, 1) == (True, "")
    broken = {"httpGet": {"path": "/broken", "port": http_server}}
    success, message = await run_handler(broken, container, "127.0.0.1", no_exec, 1)
    assert not success and "500" in message


async def test_tcp_socket(http_server):
    assert (await run_handler({"tcpSocket": {"port": http_server}}, {"name": "c"}, "127.0.0.1", no_exec, 1))[0]
    import socket

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    assert not (await run_handler({"tcpSocket": {"port": port}}, {"name": "c"}, "127.0.0.1", no_exec, 1))[0]


async def test_exec_exit_code_decides():
    async def exec_(command, timeout):
        return (0 if command == ["true"] else 1), b"out"

    assert (await run_handler({"exec": {"command": ["true"]}}, {"name": "c"}, "", exec_, 1))[0]
    assert not (await run_handler({"exec": {"command": ["false"]}}, {"name": "c"}, "", exec_, 1))[0]


async def test_grpc_health_check():
    grpc = pytest.importorskip("grpc")
    aio = pytest.importorskip("grpc.aio")

    serving = {"": b"\x08\x01", "down": b"\x08\x02"}

    async def check(request: bytes, context) -> bytes:
        service = request[2:].decode() if request else ""
        return serving[service]

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=None, response_serializer=None)},
    )
    server = aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        assert (await run_handler({"grpc": {"port": port}}, {"name": "c"}, "127.0.0.1", no_exec, 2))[0]
        success, message = await run_handler({"grpc": {"port": port, "service": "down"}}, {"name": "c"}, "127.0.0.1", no_exec, 2)
        assert not success and "NOT_SERVING" in message
    finally:
        await server.stop(0)


async def test_prober_thresholds():
    results = [False, False, True, True]  # then True for ever
    changes = []

    async def exec_(command, timeout):
        return (0 if (results.pop(0) if results else True) else 1), b""

    probe = {"exec": {"command": ["x"]}, "periodSeconds": 1, "failureThreshold": 2, "successThreshold": 2}
    prober = Prober("readiness", probe, {"name": "c"}, lambda: "", exec_, lambda kind, ok, msg: changes.append(ok), 0.01)
    task = asyncio.create_task(prober.run())
    await asyncio.sleep(0.2)
    task.cancel()
    assert changes == [False, True]


def test_named_ports_resolve():
    assert resolve_port("web", {"name": "c", "ports": [{"name": "web", "containerPort": 8080}]}) == 8080
    assert resolve_port(80, {"name": "c"}) == 80
    with pytest.raises(ValueError):
        resolve_port("nope", {"name": "c"})
