"""Container log files in the CRI format, and reading them back for `kubectl logs`.

Each line is `<RFC3339Nano timestamp> <stream> <tag> <content>`, the tag `F` for a full line and `P`
for a partial one (a line longer than 16 KiB is split, as the CRI does). The process runtime's writer
rotates its files at 10 MiB: the current file is renamed to `<path>.1`, replacing the older one. Files
that a CRI runtime writes are rotated by the kubelet (kubelet/container_log_manager.py). Following a
log (`kubectl logs -f`) continues in the new file after a rotation.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import BinaryIO

MAX_LINE = 16 * 1024
ROTATE_BYTES = 10 * 1024 * 1024


def rfc3339_nano(timestamp: float | None = None) -> str:
    if timestamp is None:
        ns = time.time_ns()
    else:
        ns = int(timestamp * 1e9)
    seconds, nanos = divmod(ns, 1_000_000_000)
    base = dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{nanos:09d}Z"


def parse_timestamp(text: str) -> float:
    main, _, frac = text.rstrip("Z").partition(".")
    base = dt.datetime.strptime(main, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=dt.UTC).timestamp()
    return base + (float("0." + frac) if frac else 0.0)


class CriLogWriter:
    """Appends CRI lines to one container's log file; shared by its stdout and stderr pumps."""

    def __init__(self, path: str, rotate_bytes: int = ROTATE_BYTES) -> None:
        self.path = path
        self.rotate_bytes = rotate_bytes
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._file = open(path, "ab", buffering=0)
        self._size = self._file.tell()

    def write(self, stream: str, content: bytes, partial: bool = False) -> None:
        tag = b"P" if partial else b"F"
        line = rfc3339_nano().encode() + b" " + stream.encode() + b" " + tag + b" " + content + b"\n"
        # Small appends to the page cache; the kubelet does the same from its goroutines.
        self._file.write(line)
        self._size += len(line)
        if self._size >= self.rotate_bytes:
            self._file.close()
            os.replace(self.path, self.path + ".1")
            self._file = open(self.path, "ab", buffering=0)
            self._size = 0

    def close(self) -> None:
        self._file.close()


class LogPumpProtocol(asyncio.Protocol):
    """Reads one stream of a container (a FIFO) and writes timestamped CRI lines."""

    def __init__(self, writer: CriLogWriter, stream: str, done: asyncio.Future[None]) -> None:
        self.writer = writer
        self.stream = stream
        self.buffer = b""
        self.done = done

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            newline = self.buffer.find(b"\n")
            if newline < 0:
                break
            line, self.buffer = self.buffer[:newline], self.buffer[newline + 1 :]
            while len(line) > MAX_LINE:
                self.writer.write(self.stream, line[:MAX_LINE], partial=True)
                line = line[MAX_LINE:]
            self.writer.write(self.stream, line)
        while len(self.buffer) > MAX_LINE:
            self.writer.write(self.stream, self.buffer[:MAX_LINE], partial=True)
            self.buffer = self.buffer[MAX_LINE:]

    def eof_received(self) -> bool | None:
        if self.buffer:
            self.writer.write(self.stream, self.buffer)
            self.buffer = b""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def parse_line(line: bytes) -> tuple[float, str, bool, bytes] | None:
    """(timestamp, stream, partial, content) of one CRI line."""
    parts = line.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    try:
        timestamp = parse_timestamp(parts[0].decode())
    except ValueError:
        return None
    content = parts[3] if len(parts) > 3 else b""
    return timestamp, parts[1].decode(), parts[2] == b"P", content


def format_entry(timestamp: float, content: bytes, partial: bool, timestamps: bool) -> bytes:
    prefix = (rfc3339_nano(timestamp).encode() + b" ") if timestamps else b""
    return prefix + content + (b"" if partial else b"\n")


def _read_start(path: str, follow: bool) -> tuple[list[bytes], bytes, BinaryIO | None]:
    """The lines written so far (the older `<path>.1` first), an incomplete last line, and when
    following, the open current file: following goes on from where this read stopped, so that no line
    written meanwhile is lost."""
    lines: list[bytes] = []
    try:
        with open(path + ".1", "rb") as older:
            lines.extend(older.readlines())
    except FileNotFoundError:
        pass
    try:
        file = open(path, "rb")
    except FileNotFoundError:
        return lines, b"", None
    *complete, pending = file.read().split(b"\n")
    lines.extend(complete)
    if not follow:
        file.close()
        return lines + ([pending] if pending else []), b"", None
    return lines, pending, file


async def read_logs(
    path: str,
    *,
    follow: bool = False,
    tail_lines: int | None = None,
    since: float | None = None,
    timestamps: bool = False,
    limit_bytes: int | None = None,
    is_running: Callable[[], Awaitable[bool]] | None = None,
    poll_interval: float = 0.2,
) -> AsyncIterator[bytes]:
    """Yield formatted log output like the kubelet's ReadLogs; stop following when `is_running()` turns false."""
    lines, pending, file = await asyncio.to_thread(_read_start, path, follow)
    entries = [entry for entry in map(parse_line, lines) if entry is not None]
    if since is not None:
        entries = [entry for entry in entries if entry[0] >= since]
    if tail_lines is not None:
        entries = entries[-tail_lines:] if tail_lines > 0 else []
    sent = 0

    def clip(chunk: bytes) -> bytes | None:
        nonlocal sent
        if limit_bytes is None:
            return chunk
        if sent >= limit_bytes:
            return None
        chunk = chunk[: limit_bytes - sent]
        sent += len(chunk)
        return chunk

    try:
        for timestamp, _stream, partial, content in entries:
            chunk = clip(format_entry(timestamp, content, partial, timestamps))
            if chunk is None:
                return
            yield chunk
        if file is None:  # not following, or no file yet
            return
        inode = os.fstat(file.fileno()).st_ino
        idle_after_exit = 0
        while True:
            data = file.read()
            if not data:
                try:
                    rotated = os.stat(path).st_ino != inode
                except FileNotFoundError:
                    rotated = False  # renamed by a rotation, not reopened by the runtime yet: wait for it
                if rotated:  # continue with the new file, after what was written to the old one meanwhile
                    # containerd may still flush lines to the old file after it opened the new one.
                    await asyncio.sleep(poll_interval)
                    data = file.read()
                    with contextlib.suppress(FileNotFoundError):  # else: renamed again, next time
                        newer = open(path, "rb")
                        file.close()
                        file = newer
                        inode = os.fstat(file.fileno()).st_ino
                    if not data:
                        continue
            if data:
                pending += data
                *complete, pending = pending.split(b"\n")
                for line in complete:
                    entry = parse_line(line)
                    if entry is None:
                        continue
                    chunk = clip(format_entry(entry[0], entry[3], entry[2], timestamps))
                    if chunk is None:
                        return
                    yield chunk
                continue
            if is_running is None or not await is_running():
                idle_after_exit += 1
                if idle_after_exit > 1:
                    return
            await asyncio.sleep(poll_interval)
    finally:
        if file is not None:
            file.close()
