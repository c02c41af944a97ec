"""userspace mode: an asyncio TCP/UDP relay per service port; needs no privileges.

What works:
- every TCP and UDP service port gets a listener on a loopback port (`listen_host`, default
  127.0.0.1); the proxier publishes it in the Service annotation `pinnace.io/userspace-ports`
  (`{"http/TCP": "127.0.0.1:41234"}`) and tries to reuse the published port after a restart;
- NodePorts: a listener on `node_port_host` (default 0.0.0.0) at the NodePort itself (30000-32767
  need no privileges);
- each new connection (TCP) or new client address (UDP) goes to a random ready endpoint; with
  `sessionAffinity: ClientIP` the same client address keeps its endpoint for timeoutSeconds;
- an endpoint that is removed or turns not-ready gets no new connections from the next sync on;
  connections already relayed to it continue, as with kube-proxy; a refused connect to an endpoint
  is retried on another one;
- a TCP service port with no ready endpoint refuses connections at once (its listeners close while
  a bound socket keeps the port number); should the endpoints all fail to connect, the accepted
  connection is reset. UDP datagrams to a port without endpoints are dropped.

What does not: the ClusterIP itself (binding it needs root and an address on the node, so clients
use the loopback port), SCTP, externalIPs, and preserving the client address (backends see the
proxy as the client). traffic policies Local are honoured by endpoint choice only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pinnace.proxy.model import Endpoint, ServicePort

log = logging.getLogger(__name__)

CONNECT_ATTEMPTS = 3


@dataclass
class UserspaceSyncResult:
    duration: float
    rule_count: int
    chain_count: int = 0
    full: bool = False


class _Balancer:
    """Random choice among ready endpoints, with optional ClientIP affinity."""

    def __init__(self) -> None:
        self.endpoints: tuple[Endpoint, ...] = ()
        self.affinity_seconds: int | None = None
        self._affinity: dict[str, tuple[Endpoint, float]] = {}

    def update(self, endpoints: Sequence[Endpoint], affinity_seconds: int | None) -> None:
        self.endpoints = tuple(endpoints)
        self.affinity_seconds = affinity_seconds
        if affinity_seconds is None:
            self._affinity.clear()
        else:
            alive = set(self.endpoints)
            self._affinity = {ip: v for ip, v in self._affinity.items() if v[0] in alive}

    def choose(self, client_ip: str, exclude: set[Endpoint] | None = None) -> Endpoint | None:
        candidates = [e for e in self.endpoints if not exclude or e not in exclude]
        if not candidates:
            return None
        now = time.monotonic()
        if self.affinity_seconds is not None:
            pinned = self._affinity.get(client_ip)
            if pinned and pinned[1] > now and pinned[0] in candidates:
                self._affinity[client_ip] = (pinned[0], now + self.affinity_seconds)
                return pinned[0]
        endpoint = random.choice(candidates)
        if self.affinity_seconds is not None:
            self._affinity[client_ip] = (endpoint, now + self.affinity_seconds)
        return endpoint


def _reset(transport: asyncio.BaseTransport) -> None:
    """Close with RST, so the client learns at once that nobody is there."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


class _TcpBackend(asyncio.Protocol):
    def __init__(self, client: _TcpClient) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def eof_received(self) -> bool:
        if self.client.transport.can_write_eof():
            self.client.transport.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()

    def pause_writing(self) -> None:
        self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        self.client.transport.resume_reading()


class _TcpClient(asyncio.Protocol):
    """One accepted connection: pick an endpoint, connect, then copy bytes both ways."""

    def __init__(self, relay: _TcpRelay) -> None:
        self.relay = relay
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.backend: _TcpBackend | None = None
        self.pending: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client_ip = transport.get_extra_info("peername")[0]
        if not self.relay.balancer.endpoints:
            _reset(transport)
            return
        self.relay.spawn(self._connect(client_ip))

    async def _connect(self, client_ip: str) -> None:
        loop = asyncio.get_running_loop()
        tried: set[Endpoint] = set()
        for _ in range(CONNECT_ATTEMPTS):
            endpoint = self.relay.balancer.choose(client_ip, tried)
            if endpoint is None:
                break
            tried.add(endpoint)
            try:
                _, backend = await asyncio.wait_for(
                    loop.create_connection(lambda: _TcpBackend(self), endpoint.ip, endpoint.port),
                    self.relay.connect_timeout)
            except (OSError, TimeoutError):
                continue
            if self.transport.is_closing():
                backend.transport.close()  # type: ignore[union-attr]
                return
            self.backend = backend
            for chunk in self.pending:
                backend.transport.write(chunk)  # type: ignore[union-attr]
            self.pending.clear()
            if self.eof and backend.transport.can_write_eof():  # type: ignore[union-attr]
                backend.transport.write_eof()  # type: ignore[union-attr]
            return
        _reset(self.transport)

    def data_received(self, data: bytes) -> None:
        if self.backend is not None:
            self.backend.transport.write(data)  # type: ignore[union-attr]
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.backend is not None and self.backend.transport.can_write_eof():  # type: ignore[union-attr]
            self.backend.transport.write_eof()  # type: ignore[union-attr]
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.close()

    def pause_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.backend is not None and self.backend.transport is not None:
            self.backend.transport.resume_reading()


@dataclass
class _TcpRelay:
    """Listeners of one TCP service port. While the port has no ready endpoint the listeners are closed
    and each address is held by a bound, non-listening socket instead, so connection attempts are
    refused by the kernel at once (ECONNREFUSED) and the port number stays ours."""

    balancer: _Balancer
    spawn: Callable
    connect_timeout: float
    servers: list[asyncio.Server] = field(default_factory=list)
    addresses: list[tuple[str, int]] = field(default_factory=list)
    placeholders: list[socket.socket] = field(default_factory=list)

    async def _serve(self, host: str, port: int) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        # reuse_port lets a placeholder share the address with a closing listener, and vice versa.
        return await loop.create_server(lambda: _TcpClient(self), host, port, reuse_address=True,
                                        reuse_port=True, backlog=1024)

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        server = await self._serve(host, port)
        self.servers.append(server)
        address = server.sockets[0].getsockname()[:2]
        self.addresses.append(address)
        return address

    async def set_accepting(self, accepting: bool) -> None:
        if accepting and self.placeholders:
            self.servers = [await self._serve(host, port) for host, port in self.addresses]
            for placeholder in self.placeholders:
                placeholder.close()
            self.placeholders = []
        elif not accepting and self.servers:
            for host, port in self.addresses:
                placeholder = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
                placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                placeholder.bind((host, port))
                self.placeholders.append(placeholder)
            for server in self.servers:
                server.close()
            self.servers = []

    def close(self) -> None:
        for server in self.servers:
            server.close()
        for placeholder in self.placeholders:
            placeholder.close()
        self.servers, self.placeholders = [], []


class _UdpSession(asyncio.DatagramProtocol):
    def __init__(self, relay: _UdpRelay, listener: asyncio.DatagramTransport, client: tuple, endpoint: Endpoint):
        self.relay = relay
        self.listener = listener
        self.client = client
        self.endpoint = endpoint
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: list[bytes] = []
        self.last_used = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for data in self.pending:
            self.transport.sendto(data)  # type: ignore[union-attr]
        self.pending.clear()

    def send(self, data: bytes) -> None:
        self.last_used = time.monotonic()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.sendto(data)

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.last_used = time.monotonic()
        if not self.listener.is_closing():
            self.listener.sendto(data, self.client)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP relay to %s: %s", self.endpoint.address, exc)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, relay: _UdpRelay) -> None:
        self.relay = relay
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        key = (id(self), addr)
        session = self.relay.sessions.get(key)
        if session is None or session.endpoint not in self.relay.balancer.endpoints:
            if session is not None:
                session.close()
            endpoint = self.relay.balancer.choose(addr[0])
            if endpoint is None:
                return  # no ready endpoint: drop, as there is no way to refuse a datagram from here
            session = _UdpSession(self.relay, self.transport, addr, endpoint)  # type: ignore[arg-type]
            self.relay.sessions[key] = session
            self.relay.spawn(self._connect(key, session))
        session.send(data)

    async def _connect(self, key: tuple, session: _UdpSession) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: session,
                                                remote_addr=(session.endpoint.ip, session.endpoint.port))
        except OSError as error:
            log.debug("UDP relay to %s: %s", session.endpoint.address, error)
            if self.relay.sessions.get(key) is session:
                del self.relay.sessions[key]  # the next datagram picks an endpoint again


@dataclass
class _UdpRelay:
    balancer: _Balancer
    spawn: Callable
    idle_timeout: float
    transports: list[asyncio.DatagramTransport] = field(default_factory=list)
    sessions: dict[tuple[int, tuple], _UdpSession] = field(default_factory=dict)

    async def listen(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _UdpListener(self), local_addr=(host, port))
        self.transports.append(transport)
        return transport.get_extra_info("sockname")[:2]

    def expire(self) -> None:
        cutoff = time.monotonic() - self.idle_timeout
        alive = set(self.balancer.endpoints)
        for key, session in list(self.sessions.items()):
            if session.last_used < cutoff or session.endpoint not in alive:
                session.close()
                del self.sessions[key]

    def close(self) -> None:
        for transport in self.transports:
            transport.close()
        for session in self.sessions.values():
            session.close()
        self.sessions.clear()


@dataclass
class _ServiceRelay:
    service_port: ServicePort
    balancer: _Balancer
    relay: _TcpRelay | _UdpRelay
    address: tuple[str, int]
    node_port: int | None = None


class UserspaceProxier:
    """Keeps one relay per TCP/UDP service port in step with the service ports given to `sync()`."""

    def __init__(
        self,
        listen_host: str = "127.0.0.1",
        node_port_host: str = "0.0.0.0",
        node_name: str | None = None,
        connect_timeout: float = 2.0,
        udp_idle_timeout: float = 30.0,
        port_hint: Callable[[ServicePort], int | None] | None = None,
    ) -> None:
        self.listen_host = listen_host
        self.node_port_host = node_port_host
        self.node_name = node_name
        self.connect_timeout = connect_timeout
        self.udp_idle_timeout = udp_idle_timeout
        self.port_hint = port_hint
        self.relays: dict[str, _ServiceRelay] = {}
        self.rule_count = 0
        self._tasks: set[asyncio.Task] = set()
        self._expiry: asyncio.Task | None = None

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def addresses(self) -> dict[str, tuple[str, int]]:
        """Service port id (`ns/name:port/PROTO`) -> the loopback address that reaches it."""
        return {sp_id: r.address for sp_id, r in self.relays.items()}

    async def _open(self, sp: ServicePort) -> _ServiceRelay:
        balancer = _Balancer()
        relay: _TcpRelay | _UdpRelay
        if sp.protocol == "TCP":
            relay = _TcpRelay(balancer, self._spawn, self.connect_timeout)
        else:
            relay = _UdpRelay(balancer, self._spawn, self.udp_idle_timeout)
        hint = self.port_hint(sp) if self.port_hint else None
        address = None
        if hint:
            with contextlib.suppress(OSError):
                address = await relay.listen(self.listen_host, hint)
        if address is None:
            address = await relay.listen(self.listen_host, 0)
        service_relay = _ServiceRelay(sp, balancer, relay, address)
        if sp.node_port:
            try:
                await relay.listen(self.node_port_host, sp.node_port)
                service_relay.node_port = sp.node_port
            except OSError as error:
                log.warning("cannot listen on NodePort %s for %s: %s", sp.node_port, sp.id, error)
        return service_relay

    async def sync(self, service_ports: Sequence[ServicePort], full: bool = False) -> UserspaceSyncResult:
        started = time.monotonic()
        wanted = {sp.id: sp for sp in service_ports if sp.protocol in ("TCP", "UDP")}
        for sp_id in list(self.relays):
            relay = self.relays[sp_id]
            sp = wanted.get(sp_id)
            # A changed NodePort needs new listeners; everything else is updated in place.
            if sp is None or sp.node_port != relay.service_port.node_port:
                relay.relay.close()
                del self.relays[sp_id]
        for sp_id, sp in wanted.items():
            relay = self.relays.get(sp_id)
            if relay is None:
                try:
                    relay = self.relays[sp_id] = await self._open(sp)
                except OSError as error:
                    log.warning("cannot open a relay for %s: %s", sp_id, error)
                    continue
            relay.service_port = sp
            relay.balancer.update(sp.cluster_endpoints(self.node_name), sp.session_affinity_seconds)
            if isinstance(relay.relay, _UdpRelay):
                relay.relay.expire()
            else:
                try:
                    await relay.relay.set_accepting(bool(relay.balancer.endpoints))
                except OSError as error:  # the port was taken meanwhile: reopen on a new one next sync
                    log.warning("relay for %s lost its port: %s", sp_id, error)
                    relay.relay.close()
                    del self.relays[sp_id]
        if self._expiry is None:
            self._expiry = asyncio.get_running_loop().create_task(self._expire_loop())
        self.rule_count = sum(len(r.balancer.endpoints) for r in self.relays.values())
        return UserspaceSyncResult(time.monotonic() - started, self.rule_count, len(self.relays), full)

    async def _expire_loop(self) -> None:
        while True:
            await asyncio.sleep(max(1.0, self.udp_idle_timeout / 2))
            for relay in self.relays.values():
                if isinstance(relay.relay, _UdpRelay):
                    relay.relay.expire()

    async def cleanup(self) -> None:
        await self.close()

    async def close(self) -> None:
        for relay in self.relays.values():
            relay.relay.close()
        self.relays.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
            self._expiry = None
        for task in list(self._tasks):
            task.cancel()
