"""Constants and cold-path helpers shared by both WebSocket cores.

Everything here is used by the compiled and the pure core alike, so the
behaviour that is not on the hot path (close payloads, handshake keys,
failure reasons) exists exactly once.
"""

from __future__ import annotations

import base64
import hashlib
import struct

# Opcodes (RFC 6455 section 5.2). Event kinds reuse them; FAIL is ours.
OP_CONT = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
FAIL = -1
# Event kinds of a parser made with ``deflate=True``: a message whose first
# frame had RSV1 set (RFC 7692), still compressed. Outside 0..15, so they can
# never be mistaken for an opcode; each is its opcode | 0x10.
OP_TEXT_DEFLATED = 0x11
OP_BINARY_DEFLATED = 0x12
# The event of a parser made with ``stream=True``: ``(FRAGMENT, kind, piece,
# final)``, one piece of a text or binary message as it arrives (see
# ``FrameParser``). Clear of the opcodes, the _DEFLATED kinds and FAIL.
FRAGMENT = 0x20

# Close codes (RFC 6455 section 7.4.1) that wsnest sends or checks.
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL_ERROR = 1011

DEFAULT_MAX_MESSAGE_SIZE = 1 << 20
MAX_CONTROL_PAYLOAD = 125

# Failure reasons. Both cores emit exactly these strings, so a differential
# test can compare events byte for byte.
R_RSV = "reserved bits set"
R_OPCODE = "unknown opcode"
R_CTL_FRAGMENTED = "fragmented control frame"
R_CTL_TOO_LONG = "control frame too long"
R_UNMASKED = "frame not masked"
R_MASKED = "masked frame from server"
R_CONT_UNEXPECTED = "continuation without a started message"
R_DATA_UNEXPECTED = "new message inside a fragmented message"
R_NON_MINIMAL = "length not minimally encoded"
R_LENGTH_MSB = "64-bit length has its top bit set"
R_TOO_BIG = "message too big"
R_BAD_UTF8 = "invalid UTF-8 in text message"
R_CLOSE_1_BYTE = "close payload of one byte"
R_CLOSE_CODE = "invalid close code"
R_CLOSE_REASON = "invalid UTF-8 in close reason"

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


#: The close codes a close frame may carry, as inclusive ranges (RFC 6455
#: section 7.4 and the IANA registry): 1000-1003 and 1007-1011 are defined,
#: 1012-1014 registered, 3000-4999 belong to libraries and applications.
#: 1004-1006 and 1015 must never appear on the wire, and the rest is
#: reserved. The one definition for both directions: what we refuse from a
#: peer, ``close_payload`` refuses to send.
CLOSE_CODE_RANGES = ((1000, 1003), (1007, 1014), (3000, 4999))
_RANGE_TEXTS = [f"{lo}-{hi}" for lo, hi in CLOSE_CODE_RANGES]
_CLOSE_CODES_TEXT = ", ".join(_RANGE_TEXTS[:-1]) + " or " + _RANGE_TEXTS[-1]


def is_valid_close_code(code: int) -> bool:
    """Return whether ``code`` may appear in a close frame (either way):
    it lies in one of :data:`CLOSE_CODE_RANGES`."""
    return any(lo <= code <= hi for lo, hi in CLOSE_CODE_RANGES)


def parse_close_payload(payload: bytes) -> tuple[int, int, str]:
    """Decode a close frame payload into an event tuple.

    Returns ``(OP_CLOSE, code, reason)`` or ``(FAIL, close_code, why)``.
    An empty payload means "no status" (1005).
    """
    n = len(payload)
    if n == 0:
        return (OP_CLOSE, CLOSE_NO_STATUS, "")
    if n == 1:
        return (FAIL, CLOSE_PROTOCOL_ERROR, R_CLOSE_1_BYTE)
    code = (payload[0] << 8) | payload[1]
    if not is_valid_close_code(code):
        return (FAIL, CLOSE_PROTOCOL_ERROR, R_CLOSE_CODE)
    try:
        reason = bytes(payload[2:]).decode("utf-8")
    except UnicodeDecodeError:
        return (FAIL, CLOSE_INVALID_DATA, R_CLOSE_REASON)
    return (OP_CLOSE, code, reason)


def close_payload(code: int | None = CLOSE_NORMAL, reason: str = "") -> bytes:
    """Build a close frame payload: two-byte code then the UTF-8 reason.

    ``code=None`` gives an empty payload (a close without status); any other
    code must be one a peer may send (:func:`is_valid_close_code`), else
    ``ValueError`` naming the valid ranges. The reason is cut at a character
    boundary so the payload fits in 125 bytes.
    """
    if code is None:
        if reason:
            raise ValueError("reason: a close without a code cannot carry a reason")
        return b""
    if not isinstance(code, int):
        raise TypeError(f"code: expected an int or None, got {type(code).__name__}")
    if not is_valid_close_code(code):
        raise ValueError(f"code: must be {_CLOSE_CODES_TEXT}, got {code}")
    raw = reason.encode("utf-8")
    if len(raw) > MAX_CONTROL_PAYLOAD - 2:
        raw = raw[: MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + raw


def frame_header(opcode: int, length: int, fin: bool = True, rsv1: bool = False) -> bytes:
    """The header of an unmasked (server) frame carrying ``length`` bytes.

    ``rsv1=True`` sets RSV1: the first frame of a message compressed with
    permessage-deflate (RFC 7692 section 6).
    """
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def accept_key(key: str | bytes) -> str:
    """Compute ``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    if isinstance(key, str):
        key = key.encode("ascii")
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest()).decode("ascii")


def utf8_partial_ok(pending: bytes) -> bool:
    """Whether ``pending`` (1-3 bytes) can still begin a valid UTF-8 sequence.

    Python's incremental decoder buffers some prefixes that can never be
    completed (for example ``ED A0``, the start of a surrogate). The compiled
    validator rejects those at once; the pure core uses this check to reject
    them at the same byte.
    """
    if not pending:
        return True
    lead = pending[0]
    if len(pending) < 2:
        return 0xC2 <= lead <= 0xF4
    second = pending[1]
    if lead == 0xE0:
        ok = 0xA0 <= second <= 0xBF
    elif lead == 0xED:
        ok = 0x80 <= second <= 0x9F
    elif lead == 0xF0:
        ok = 0x90 <= second <= 0xBF
    elif lead == 0xF4:
        ok = 0x80 <= second <= 0x8F
    else:
        ok = 0x80 <= second <= 0xBF
    if not ok:
        return False
    return all(0x80 <= b <= 0xBF for b in pending[2:])
