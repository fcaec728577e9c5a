"""The client side of the WebSocket wire, by hand: one toolkit for the tests,
the benchmarks and the soak.

- :func:`client_frame` / :func:`close_frame`: client frames built byte by byte
  (masked or not, any opcode, RSV bits, a declared length other than the
  real one), so hostile input is as easy to make as valid input.
- :func:`apply_mask`: the RFC 6455 masking XOR (5.3), fast for large payloads.
- :func:`upgrade_request` / :func:`new_key`: raw opening-handshake requests.
- :func:`server_frame_head` / :class:`FrameBuffer`: parse the server's
  (unmasked) frames; :func:`read_head`: an HTTP response head from a
  blocking socket; :func:`parse_close`: a close payload's code and reason.
- :func:`deflate_message` / :func:`zero_bomb`: permessage-deflate payloads.

Standard library only, and no wsnest import: the bench children import it
before they decide which wsnest to load, and the load client runs it in
environments without trio. It lives in ``bench/`` (not in the wheel): bench
scripts import it from their own directory, ``tests/conftest.py`` puts
``bench/`` on ``sys.path`` for the tests.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import zlib
from collections.abc import Sequence
from typing import Any

OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

# The default masking key of hand-made client frames.
MASK = bytes.fromhex("a1b2c3d4")


# -- client frames -------------------------------------------------------------


def apply_mask(payload: bytes | bytearray | memoryview, key: bytes) -> bytes:
    """``payload`` XORed with the 4-byte ``key`` repeated (unmasks too)."""
    n = len(payload)
    if n == 0:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    # One big-int XOR: far faster than a byte loop for large payloads.
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(n, "little")


def client_frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    length: int | None = None,
) -> bytes:
    """A client frame built by hand.

    ``mask=None`` leaves it unmasked (illegal from a client); ``rsv`` sets the
    three RSV bits (0-7, 4 is RSV1: compressed); ``length`` declares another
    payload length than the real one (the payload is then sent as given).
    """
    data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
    n = len(data) if length is None else length
    first = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0x0F)
    mbit = 0x80 if mask is not None else 0
    if n < 126:
        head = bytes((first, mbit | n))
    elif n < 65536:
        head = struct.pack("!BBH", first, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mbit | 127, n)
    if mask is None:
        return head + data
    return head + mask + apply_mask(data, mask)


def close_frame(code: int | None = 1000, reason: bytes | str = b"", **kw: Any) -> bytes:
    """A masked client close frame with ``code`` (None: empty payload) and
    ``reason``; ``kw`` as for :func:`client_frame`."""
    raw = reason.encode("utf-8") if isinstance(reason, str) else reason
    payload = b"" if code is None else struct.pack("!H", code) + raw
    return client_frame(OP_CLOSE, payload, **kw)


def parse_close(payload: bytes) -> tuple[int | None, str]:
    """``(code, reason)`` of a close payload (``(None, "")`` if empty)."""
    if not payload:
        return None, ""
    assert len(payload) >= 2, f"close payload of {len(payload)} byte(s)"
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8")


# -- the opening handshake -----------------------------------------------------


def new_key() -> str:
    """A fresh random ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16)).decode("ascii")


def upgrade_request(
    path: str = "/ws",
    host: str = "127.0.0.1",
    *,
    method: str = "GET",
    key: str | None = None,
    version: str | None = "13",
    upgrade: str | None = "websocket",
    connection: str | None = "Upgrade",
    extra: Sequence[tuple[str, str]] = (),
) -> bytes:
    """An opening-handshake request; ``None`` omits that header, ``key=None``
    sends a fresh random key."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if upgrade is not None:
        lines.append(f"Upgrade: {upgrade}")
    if connection is not None:
        lines.append(f"Connection: {connection}")
    lines.append(f"Sec-WebSocket-Key: {new_key() if key is None else key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    lines.extend(f"{k}: {v}" for k, v in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


DEFLATE_OFFER = (("Sec-WebSocket-Extensions", "permessage-deflate; client_no_context_takeover"),)


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """Read an HTTP response head from a blocking socket: (head, bytes after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data[:200]!r}")
        data += chunk
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]


# -- server frames -------------------------------------------------------------


def server_frame_head(
    buf: bytes | bytearray, pos: int = 0, *, allow_rsv1: bool = False
) -> tuple[bool, int, bool, int, int] | None:
    """The header of the server frame at ``buf[pos:]``: ``(fin, opcode, rsv1,
    payload start, payload end)``, or None while the header is incomplete.

    A server frame must be unmasked and set no RSV bit (RSV1 is allowed with
    ``allow_rsv1``, for permessage-deflate): ValueError otherwise.
    """
    n = len(buf)
    if n - pos < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    length = b1 & 0x7F
    head = 2
    if length == 126:
        if n - pos < 4:
            return None
        length = struct.unpack_from("!H", buf, pos + 2)[0]
        head = 4
    elif length == 127:
        if n - pos < 10:
            return None
        length = struct.unpack_from("!Q", buf, pos + 2)[0]
        head = 10
    if b1 & 0x80 or b0 & (0x30 if allow_rsv1 else 0x70):
        raise ValueError(f"bad server frame header {b0:#x} {b1:#x}")
    start = pos + head
    return bool(b0 & 0x80), b0 & 0x0F, bool(b0 & 0x40), start, start + length


class FrameBuffer:
    """Incremental parser of the server's (unmasked) frames. With
    ``allow_rsv1`` (permessage-deflate) RSV1 is accepted and recorded per
    frame in ``rsv1``."""

    def __init__(self, allow_rsv1: bool = False) -> None:
        self.buf = bytearray()
        self.pos = 0
        self.allow_rsv1 = allow_rsv1
        self.rsv1: list[bool] = []

    def feed(self, data: bytes | bytearray | memoryview) -> list[tuple[bool, int, bytes]]:
        """Add ``data``; return the frames it completes: ``(fin, opcode, payload)``."""
        buf = self.buf
        buf += data
        out = []
        pos = self.pos
        n = len(buf)
        while (h := server_frame_head(buf, pos, allow_rsv1=self.allow_rsv1)) is not None and h[4] <= n:
            fin, opcode, rsv1, start, end = h
            out.append((fin, opcode, bytes(buf[start:end])))
            self.rsv1.append(rsv1)
            pos = end
        if pos > 1 << 16 or pos == n:
            del buf[:pos]
            pos = 0
        self.pos = pos
        return out


# -- permessage-deflate ----------------------------------------------------------


def deflate_message(data: bytes) -> bytes:
    """``data`` compressed as one permessage-deflate message (RFC 7692 7.2.1:
    raw deflate, sync flush, the final 00 00 ff ff removed)."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def zero_bomb(inflated: int) -> bytes:
    """A permessage-deflate message that inflates to ``inflated`` zero bytes
    (about 1/1000 of that on the wire), built without holding it whole."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1 << 20)
    parts = [z.compress(block) for _ in range(inflated >> 20)]
    parts.append(z.flush(zlib.Z_SYNC_FLUSH))
    out = b"".join(parts)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]
