"""The payload groups put on a broker channel: the message's type (str or
bytes), its origin process and a per-origin sequence number, then the
message itself. Pure functions on bytes (no I/O)."""

from __future__ import annotations

import struct

from ..core import validate_utf8

#: Marks a wsnest group message (and its layout version).
MAGIC = b"WSN\x01"
ORIGIN_SIZE = 16
_HEAD = struct.Struct(f">4sc{ORIGIN_SIZE}sQ")
HEAD_SIZE = _HEAD.size
_TEXT, _BYTES = b"t", b"b"


def pack(is_str: bool, origin: bytes, seq: int, payload: bytes) -> bytes:
    """The envelope of one message (``payload``: a str's UTF-8 bytes)."""
    return _HEAD.pack(MAGIC, _TEXT if is_str else _BYTES, origin, seq) + payload


def unpack(envelope: bytes) -> tuple[bool, bytes, int, memoryview] | None:
    """``(is_str, origin, seq, payload)``, or None for anything that is not
    a well-formed envelope (a foreign publisher, another version, text
    that is not UTF-8)."""
    if len(envelope) < HEAD_SIZE:
        return None
    magic, kind, origin, seq = _HEAD.unpack_from(envelope)
    if magic != MAGIC or kind not in (_TEXT, _BYTES):
        return None
    payload = memoryview(envelope)[HEAD_SIZE:]
    is_str = kind == _TEXT
    if is_str and not validate_utf8(payload):
        return None
    return is_str, origin, seq, payload
