"""SPDY framing, CRI log files and host-local IPAM."""

from __future__ import annotations

import struct
import zlib

import pytest

from pinnace.kubelet.network.ipam import HostLocalIpam, IpamExhausted
from pinnace.kubelet.runtime.crilog import CriLogWriter, read_logs
from pinnace.kubelet.spdy import DICTIONARY, FLAG_FIN, SYN_STREAM, SpdySession


def test_spdy_dictionary_is_the_spdy3_one():
    # Size and checksum of the dictionary from the SPDY/3 draft; zlib streams name it by this Adler-32.
    assert len(DICTIONARY) == 1423
    assert zlib.adler32(DICTIONARY) == 0xE3C6A7C2


async def test_spdy_syn_stream_is_answered_and_data_delivered():
    sent: list[bytes] = []
    streams = []

    async def send(frame: bytes) -> None:
        sent.append(frame)

    session = SpdySession(send, streams.append)
    client_deflate = zlib.compressobj(zdict=DICTIONARY)
    block = struct.pack(">I", 1) + struct.pack(">I", 10) + b"streamtype" + struct.pack(">I", 6) + b"stdout"
    headers = client_deflate.compress(block) + client_deflate.flush(zlib.Z_SYNC_FLUSH)
    payload = struct.pack(">IIBB", 1, 0, 0, 0) + headers
    syn = struct.pack(">HHI", 0x8003, SYN_STREAM, len(payload)) + payload
    data = struct.pack(">II", 1, (FLAG_FIN << 24) | 5) + b"hello"
    wire = syn + data
    for index in range(0, len(wire), 7):  # arbitrary splits, as a WebSocket tunnel delivers them
        await session.feed(wire[index : index + 7])
    assert streams[0].headers == {"streamtype": "stdout"}
    assert struct.unpack(">HH", sent[0][:4]) == (0x8003, 2)  # SYN_REPLY
    assert await streams[0].read() == b"hello"
    assert await streams[0].read() is None
    await streams[0].write(b"out")
    assert sent[-1] == struct.pack(">II", 1, 3) + b"out"


async def test_cri_log_rotation_tail_and_limit(tmp_path):
    path = str(tmp_path / "c" / "0.log")
    writer = CriLogWriter(path, rotate_bytes=200)
    for index in range(10):
        writer.write("stdout", f"line {index}".encode())
    writer.close()
    assert (tmp_path / "c" / "0.log.1").exists()
    tail = b"".join([chunk async for chunk in read_logs(path, tail_lines=2)])
    assert tail == b"line 8\nline 9\n"
    limited = b"".join([chunk async for chunk in read_logs(path, tail_lines=2, limit_bytes=4)])
    assert limited == b"line"
    stamped = b"".join([chunk async for chunk in read_logs(path, tail_lines=1, timestamps=True)])
    assert stamped.startswith(b"20") and stamped.endswith(b"Z line 9\n")


def test_ipam_allocates_distinct_addresses_and_releases(tmp_path):
    ipam = HostLocalIpam(tmp_path, "10.42.7.0/29")
    assert ipam.gateway == "10.42.7.1"
    addresses = [ipam.allocate(f"pod{i}") for i in range(5)]
    assert len(set(addresses)) == 5
    assert "10.42.7.1" not in addresses and "10.42.7.7" not in addresses
    assert ipam.allocate("pod0") == addresses[0]  # idempotent per owner
    with pytest.raises(IpamExhausted):
        ipam.allocate("one-too-many")
    ipam.release("pod2")
    again = HostLocalIpam(tmp_path, "10.42.7.0/29")  # state survives a restart
    assert again.allocate("new") == addresses[2]
