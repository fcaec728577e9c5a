"""Sans-I/O WebSocket core: frame parsing, unmasking, UTF-8 validation,
message reassembly and frame encoding. No sockets, no trio.

Two twins implement the hot part with one API: ``_frames_c`` (Cython) and
``_frames_py`` (pure Python). This module picks one at import time:
the compiled twin unless it is missing or ``WSNEST_NO_EXTENSIONS`` is set.
``WSNEST_REQUIRE_EXTENSIONS`` turns a missing compiled twin into an
``ImportError`` instead of a silent fallback.

The core serves both ends of a connection. ``FrameParser`` takes its role
as a keyword: ``masked=True`` (the default) is the server role, reading
client frames, which must all be masked (an unmasked one fails with 1002);
``masked=False`` is the client role, reading server frames, which must
never be masked (RFC 6455 section 5.1; a masked one fails with 1002, reason
"masked frame from server"). ``FrameParser.masked`` tells the role; the
events are the same in both.

``FrameParser(stream=True)`` does not reassemble text and binary messages:
it hands each one over piece by piece as its payload arrives, as
``(FRAGMENT, kind, piece, final)`` events (``piece`` is unmasked ``bytes``,
text too, still UTF-8-validated; ``final`` marks the end of the message),
so a message of any size can be consumed without the parser buffering it.

On the sending side a server never masks (``encode_frame`` without a mask,
``append_frame``), while a client masks every frame: ``apply_mask``,
``mask_inplace`` and ``encode_frame(mask=...)`` are that side of the wire,
used by :class:`WebSocketSession` in the client role (and by tests and
benchmarks), so they stay here, compiled and fuzzed with the rest.

Above the frames, :class:`WebSocketSession` (``_session.py``) is one
connection's protocol: states, the close handshake, ping/pong and
keepalive decisions, permessage-deflate and every close code, for either
role, with no I/O. ``MessageBounds`` (``_bounds.py``) finds where messages
end from frame headers alone, for owners that queue messages.
"""

from __future__ import annotations

from ._bounds import MessageBounds
from ._common import (
    CLOSE_ABNORMAL,
    CLOSE_CODE_RANGES,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    DEFAULT_MAX_MESSAGE_SIZE,
    FAIL,
    FRAGMENT,
    OP_BINARY,
    OP_BINARY_DEFLATED,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OP_TEXT_DEFLATED,
    accept_key,
    close_payload,
    frame_header,
    is_valid_close_code,
    parse_close_payload,
)
from ._session import (
    CLIENT,
    CLOSED,
    CLOSING,
    MODE_AUTO,
    MODE_BYTES,
    MODE_TEXT,
    OPEN,
    SERVER,
    DeflateSession,
    WebSocketSession,
    new_session,
)
from ._twin import (
    CORE,
    CORE_FALLBACK,
    CORE_FALLBACK_REASON,
    PURE_CORE_ADVICE,
    FrameParser,
    append_frame,
    apply_mask,
    encode_frame,
    mask_inplace,
    trim_spare,
    utf8_payload,
    validate_utf8,
    warn_core_fallback,
)

__all__ = [
    "CLIENT",
    "CLOSED",
    "CLOSE_ABNORMAL",
    "CLOSE_CODE_RANGES",
    "CLOSE_GOING_AWAY",
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_NO_STATUS",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL_ERROR",
    "CLOSE_TOO_BIG",
    "CLOSE_UNSUPPORTED",
    "CLOSING",
    "CORE",
    "CORE_FALLBACK",
    "CORE_FALLBACK_REASON",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "FAIL",
    "FRAGMENT",
    "MODE_AUTO",
    "MODE_BYTES",
    "MODE_TEXT",
    "OPEN",
    "OP_BINARY",
    "OP_BINARY_DEFLATED",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "OP_TEXT_DEFLATED",
    "PURE_CORE_ADVICE",
    "SERVER",
    "DeflateSession",
    "FrameParser",
    "MessageBounds",
    "WebSocketSession",
    "accept_key",
    "append_frame",
    "apply_mask",
    "close_payload",
    "encode_frame",
    "frame_header",
    "is_valid_close_code",
    "mask_inplace",
    "new_session",
    "parse_close_payload",
    "trim_spare",
    "utf8_payload",
    "validate_utf8",
    "warn_core_fallback",
]
