"""A small SPDY/3.1 session, enough for Kubernetes' exec, attach and port-forward streams.

Kubernetes' streaming (k8s.io/apimachinery/pkg/util/httpstream/spdy) opens one stream per channel
with SYN_STREAM; each stream's role is in its `streamtype` header. This side is always the server:
it answers every SYN_STREAM with SYN_REPLY, writes DATA, half-closes with FIN, echoes PING, returns
WINDOW_UPDATEs for what it consumed, and ignores SETTINGS. It does not enforce the peer's flow-control
window; the peers (Go's spdystream) do not depend on it for correctness.

Header blocks are zlib streams primed with the SPDY/3 dictionary, one compression context per
direction for the whole session, each block ending in a sync flush.

The session is transport-agnostic: bytes come in through `feed()` and go out through the `send`
coroutine, so the same code serves a raw upgraded connection and SPDY tunnelled in WebSocket
messages (kubectl 1.31+ port-forward).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import zlib
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
VERSION = 3


def _dictionary() -> bytes:
    # The SPDY/3 header dictionary (draft 3, section 2.6.10.1): length-prefixed common header words,
    # then common value fragments.
    words = (
        "options head post put delete trace accept accept-charset accept-encoding accept-language "
        "accept-ranges age allow authorization cache-control connection content-base content-encoding "
        "content-language content-length content-location content-md5 content-range content-type date etag "
        "expect expires from host if-match if-modified-since if-none-match if-range if-unmodified-since "
        "last-modified location max-forwards pragma proxy-authenticate proxy-authorization range referer "
        "retry-after server te trailer transfer-encoding upgrade user-agent vary via warning www-authenticate "
        "method get status"
    ).split()
    words += ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
    prefixed = b"".join(struct.pack(">I", len(word)) + word.encode() for word in words)
    tail = (
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
        "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
        "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
        "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
    )
    return prefixed + tail.encode()


DICTIONARY = _dictionary()


class SpdyStream:
    def __init__(self, session: SpdySession, stream_id: int, headers: dict[str, str]) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        self.data: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.remote_closed = False
        self.local_closed = False

    async def read(self) -> bytes | None:
        """The next chunk, or None once the peer half-closed (FIN) or reset the stream."""
        if self.remote_closed and self.data.empty():
            return None
        return await self.data.get()

    async def write(self, data: bytes) -> None:
        if self.local_closed:
            return
        for offset in range(0, len(data), 16384):
            await self.session.send_data(self.id, data[offset : offset + 16384], fin=False)

    async def close(self) -> None:
        """Half-close our side (FIN)."""
        if not self.local_closed:
            self.local_closed = True
            await self.session.send_data(self.id, b"", fin=True)


class SpdySession:
    def __init__(self, send: Callable[[bytes], Awaitable[None]], on_stream: Callable[[SpdyStream], None]) -> None:
        self._send = send
        self.on_stream = on_stream
        self.streams: dict[int, SpdyStream] = {}
        self.buffer = b""
        self.inflate = zlib.decompressobj(zdict=DICTIONARY)
        self.deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)
        self.closed = asyncio.Event()
        self._lock = asyncio.Lock()
        self.last_stream_id = 0

    async def send(self, frame: bytes) -> None:
        async with self._lock:
            await self._send(frame)

    def _control(self, kind: int, flags: int, payload: bytes) -> bytes:
        return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload

    def _encode_headers(self, headers: dict[str, str]) -> bytes:
        block = struct.pack(">I", len(headers))
        for name, value in headers.items():
            block += struct.pack(">I", len(name)) + name.lower().encode()
            block += struct.pack(">I", len(value.encode())) + value.encode()
        return self.deflate.compress(block) + self.deflate.flush(zlib.Z_SYNC_FLUSH)

    def _decode_headers(self, compressed: bytes) -> dict[str, str]:
        block = self.inflate.decompress(compressed)
        (count,) = struct.unpack_from(">I", block, 0)
        offset = 4
        headers = {}
        for _ in range(count):
            (length,) = struct.unpack_from(">I", block, offset)
            name = block[offset + 4 : offset + 4 + length].decode()
            offset += 4 + length
            (length,) = struct.unpack_from(">I", block, offset)
            value = block[offset + 4 : offset + 4 + length].decode(errors="replace")
            offset += 4 + length
            headers[name] = value
        return headers

    async def send_data(self, stream_id: int, data: bytes, fin: bool) -> None:
        if self.closed.is_set():
            return
        await self.send(struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data)

    async def reply(self, stream: SpdyStream, headers: dict[str, str] | None = None) -> None:
        async with self._lock:
            # The compression context is shared: encode and send under one lock to keep their order.
            payload = struct.pack(">I", stream.id) + self._encode_headers(headers or {})
            await self._send(self._control(SYN_REPLY, 0, payload))

    async def reset(self, stream_id: int, status: int = 5) -> None:
        await self.send(self._control(RST_STREAM, 0, struct.pack(">II", stream_id, status)))

    async def goaway(self) -> None:
        if not self.closed.is_set():
            await self.send(self._control(GOAWAY, 0, struct.pack(">II", self.last_stream_id, 0)))

    async def feed(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 8:
            first, second = struct.unpack_from(">II", self.buffer, 0)
            length = second & 0xFFFFFF
            if len(self.buffer) < 8 + length:
                return
            payload = self.buffer[8 : 8 + length]
            flags = second >> 24
            self.buffer = self.buffer[8 + length :]
            if first & 0x80000000:
                await self._on_control(first & 0xFFFF, flags, payload)
            else:
                await self._on_data(first & 0x7FFFFFFF, flags, payload)

    async def _on_control(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == SYN_STREAM:
            stream_id = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            headers = self._decode_headers(payload[10:])
            stream = SpdyStream(self, stream_id, headers)
            self.last_stream_id = max(self.last_stream_id, stream_id)
            self.streams[stream_id] = stream
            if flags & FLAG_FIN:
                stream.remote_closed = True
                stream.data.put_nowait(None)
            await self.reply(stream)
            self.on_stream(stream)
        elif kind == SYN_REPLY or kind == HEADERS:
            # Headers from the peer on an existing stream; nothing to do, but keep the inflater in step.
            self._decode_headers(payload[4:])
        elif kind == RST_STREAM:
            stream_id = struct.unpack_from(">I", payload, 0)[0] & 0x7FFFFFFF
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.remote_closed = True
                stream.local_closed = True
                stream.data.put_nowait(None)
        elif kind == PING:
            await self.send(self._control(PING, 0, payload))
        elif kind == GOAWAY:
            self.close()
        # SETTINGS and WINDOW_UPDATE: nothing to do (see the module docstring).

    async def _on_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if payload:
            stream.data.put_nowait(payload)
            # Give the credit back at once, for the stream and for the session.
            await self.send(self._control(WINDOW_UPDATE, 0, struct.pack(">II", stream_id, len(payload))))
            await self.send(self._control(WINDOW_UPDATE, 0, struct.pack(">II", 0, len(payload))))
        if flags & FLAG_FIN:
            stream.remote_closed = True
            stream.data.put_nowait(None)

    def close(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        for stream in self.streams.values():
            if not stream.remote_closed:
                stream.remote_closed = True
                stream.data.put_nowait(None)
