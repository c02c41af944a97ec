"""Container probes and lifecycle handlers: exec, httpGet, tcpSocket and grpc, with Kubernetes' semantics.

A probe succeeds on exit code 0 (exec), an HTTP status in [200, 400) (httpGet), an accepted
connection (tcpSocket) or `SERVING` from grpc.health.v1.Health/Check (grpc). A probe that takes longer
than `timeoutSeconds` fails. `Prober` runs one probe on its period and counts consecutive results
against `successThreshold` and `failureThreshold`, calling back when the verdict changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiohttp

log = logging.getLogger(__name__)

Exec = Callable[[list[str], float], Awaitable[tuple[int, bytes]]]


def resolve_port(port: int | str, container: dict) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ValueError(f"port {port!r} is not a named port of container {container['name']}")


async def run_handler(handler: dict, container: dict, host: str, exec_: Exec, timeout: float) -> tuple[bool, str]:
    """Run a probe or lifecycle handler once: (success, message)."""
    try:
        if "exec" in handler:
            code, output = await exec_(handler["exec"].get("command") or [], timeout)
            if code == 0:
                return True, ""
            return False, f"command {handler['exec'].get('command')} exited with {code}: {output.decode(errors='replace')[:200]}"
        if "httpGet" in handler:
            spec = handler["httpGet"]
            port = resolve_port(spec["port"], container)
            scheme = spec.get("scheme", "HTTP").lower()
            target = spec.get("host") or host
            path = spec.get("path", "/")
            headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/1.32")
            url = f"{scheme}://{target}:{port}{path if path.startswith('/') else '/' + path}"
            # Kubernetes skips certificate verification for HTTPS probes.
            insecure = ssl.create_default_context()
            insecure.check_hostname = False
            insecure.verify_mode = ssl.CERT_NONE
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
                async with session.get(url, headers=headers, ssl=insecure if scheme == "https" else None, allow_redirects=False) as response:
                    await response.read()
                    if 200 <= response.status < 400:
                        return True, ""
                    return False, f"HTTP probe failed with statuscode: {response.status}"
        if "tcpSocket" in handler:
            spec = handler["tcpSocket"]
            port = resolve_port(spec["port"], container)
            _, writer = await asyncio.wait_for(asyncio.open_connection(spec.get("host") or host, port), timeout)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True, ""
        if "grpc" in handler:
            return await _grpc_check(host, int(handler["grpc"]["port"]), handler["grpc"].get("service", ""), timeout)
        if "sleep" in handler:
            await asyncio.sleep(int(handler["sleep"].get("seconds", 0)))
            return True, ""
    except TimeoutError:
        return False, f"timeout after {timeout:g}s"
    except (OSError, aiohttp.ClientError, ValueError) as error:
        return False, str(error) or type(error).__name__
    return False, "handler has no action"


async def _grpc_check(host: str, port: int, service: str, timeout: float) -> tuple[bool, str]:
    import grpc.aio

    # HealthCheckRequest{service=1: string}; HealthCheckResponse{status=1: enum, SERVING=1}
    encoded = service.encode()
    request = (b"\x0a" + bytes([len(encoded)]) + encoded) if encoded else b""
    async with grpc.aio.insecure_channel(f"{host}:{port}") as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check", request_serializer=lambda b: b, response_deserializer=lambda b: b
        )
        try:
            response = await check(request, timeout=timeout)
        except grpc.aio.AioRpcError as error:
            return False, f"gRPC health check failed: {error.code().name}"
    if response[:2] == b"\x08\x01":
        return True, ""
    return False, "service unhealthy (responded with NOT_SERVING)"


class Prober:
    """Runs one probe of one container instance until cancelled."""

    def __init__(
        self,
        kind: str,
        probe: dict,
        container: dict,
        host: Callable[[], str],
        exec_: Exec,
        on_change: Callable[[str, bool, str], None],
        time_scale: float = 1.0,  # tests shrink the seconds of the probe's timing fields
    ) -> None:
        self.time_scale = time_scale
        self.kind = kind
        self.probe = probe
        self.container = container
        self.host = host
        self.exec = exec_
        self.on_change = on_change
        self.result: bool | None = None

    async def run(self) -> None:
        probe = self.probe
        period = max(int(probe.get("periodSeconds", 10)), 1)
        timeout = max(int(probe.get("timeoutSeconds", 1)), 1)
        success_threshold = max(int(probe.get("successThreshold", 1)), 1)
        failure_threshold = max(int(probe.get("failureThreshold", 3)), 1)
        await asyncio.sleep(int(probe.get("initialDelaySeconds", 0)) * self.time_scale)
        successes = failures = 0
        while True:
            ok, message = await run_handler(probe, self.container, self.host(), self.exec, timeout)
            if ok:
                successes, failures = successes + 1, 0
                if successes >= success_threshold and self.result is not True:
                    self.result = True
                    self.on_change(self.kind, True, "")
            else:
                successes, failures = 0, failures + 1
                if failures >= failure_threshold and self.result is not False:
                    self.result = False
                    self.on_change(self.kind, False, message)
                elif self.result is None and self.kind == "readiness":
                    pass
            await asyncio.sleep(period * self.time_scale)
