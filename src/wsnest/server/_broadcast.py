"""``broadcast``: one message to many connections, encoded once."""

from __future__ import annotations

from collections.abc import Iterable

from ..core import OP_BINARY, OP_TEXT, encode_frame, validate_utf8
from ._websocket import MODE_BYTES, MODE_TEXT, WebSocket


def broadcast(connections: Iterable[WebSocket], data: str | bytes | bytearray | memoryview) -> int:
    """Queue ``data`` to every connection; return how many accepted it.

    Server frames are not masked, so each frame type is encoded once and
    the same bytes are queued to every receiver; a receiver with
    permessage-deflate compresses the payload again with its own context
    (``DeflateWebSocket._enqueue_frame``). The frame type follows
    each connection's ``textframes`` mode exactly as ``ws.send`` does.
    Connections that are closed, over their send high-water mark, or whose
    message limit is smaller than ``data`` are skipped (not counted).
    """
    if isinstance(data, str):
        is_str, payload = True, data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        is_str, payload = False, bytes(data)
    else:
        raise TypeError(f"data: expected str or bytes, got {type(data).__name__}")
    frames: dict[int, bytes] = {}
    utf8_ok: bool | None = None
    count = 0
    for ws in connections:
        mode = ws._mode
        if is_str:
            opcode = OP_BINARY if mode == MODE_BYTES else OP_TEXT
        elif mode == MODE_TEXT:
            if utf8_ok is None:
                utf8_ok = validate_utf8(payload)
            if not utf8_ok:
                raise ValueError("data: bytes broadcast to a textframes=True handler must be valid UTF-8")
            opcode = OP_TEXT
        else:
            opcode = OP_BINARY
        frame = frames.get(opcode)
        if frame is None:
            frame = frames[opcode] = encode_frame(opcode, payload)
        if ws._enqueue_frame(frame, len(payload)) == 0:
            count += 1
    return count
