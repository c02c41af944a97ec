"""The protocol buffers wire format: varints, tags, length-delimited fields.

Just the encoding rules (https://protobuf.dev/programming-guides/encoding/); message layouts live
as data tables next to their users (`pinnace.api.protobuf` for Kubernetes request bodies,
`pinnace.apiserver.openapi` for the gnostic OpenAPI v2 document).
"""

from __future__ import annotations

import struct

VARINT = 0
FIXED64 = 1
LENGTH = 2
FIXED32 = 5


class DecodeError(ValueError):
    """Malformed protobuf bytes."""


def varint(value: int) -> bytes:
    """Encode an unsigned varint; negative int64 values use their 64-bit two's complement."""
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def tag(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def length_delimited(field: int, payload: bytes) -> bytes:
    return tag(field, LENGTH) + varint(len(payload)) + payload


def string_field(field: int, value: str) -> bytes:
    return length_delimited(field, value.encode())


def varint_field(field: int, value: int) -> bytes:
    return tag(field, VARINT) + varint(value)


def bool_field(field: int, value: bool) -> bytes:
    return tag(field, VARINT) + (b"\x01" if value else b"\x00")


def double_field(field: int, value: float) -> bytes:
    return tag(field, FIXED64) + struct.pack("<d", value)


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise DecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def fields(data: bytes | memoryview):
    """Yield (field number, wire type, value) for each field; LENGTH values are bytes,
    VARINT values ints, FIXED64/FIXED32 the raw little-endian bytes."""
    pos = 0
    end = len(data)
    while pos < end:
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise DecodeError("field number 0")
        if wire_type == VARINT:
            value, pos = read_varint(data, pos)
        elif wire_type == LENGTH:
            size, pos = read_varint(data, pos)
            if pos + size > end:
                raise DecodeError("truncated length-delimited field")
            value = bytes(data[pos : pos + size])
            pos += size
        elif wire_type == FIXED64:
            value = bytes(data[pos : pos + 8])
            pos += 8
        elif wire_type == FIXED32:
            value = bytes(data[pos : pos + 4])
            pos += 4
        else:
            raise DecodeError(f"unsupported wire type {wire_type}")
        if pos > end:
            raise DecodeError("truncated field")
        yield number, wire_type, value


def signed64(value: int) -> int:
    """Reinterpret a decoded varint as int64 (negative numbers are ten-byte varints)."""
    return value - (1 << 64) if value >= 1 << 63 else value
