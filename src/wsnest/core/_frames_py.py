"""Pure-Python WebSocket core: the reference twin.

``_frames_c.pyx`` implements the same API in Cython; the differential tests
in ``tests/test_core_differential.py`` hold the two together. Both parse
frames incrementally: every byte fed is consumed at once (payload bytes go
straight into the message being assembled), so any split of the same byte
stream yields the same events.

A parser has a role, fixed when it is made (``FrameParser(masked=...)``):

- ``masked=True`` (the default), the server role: it reads what a client
  sends, so every frame must carry the MASK bit and a masking key, and its
  payload is unmasked; an unmasked frame fails with 1002 (``R_UNMASKED``);
- ``masked=False``, the client role: it reads what a server sends, so no
  frame may carry the MASK bit (RFC 6455 section 5.1), the header has no
  masking key and the payload is taken as it is; a masked frame fails with
  1002 (``R_MASKED``).

Everything else (fragmentation, control frames, UTF-8 validation, the size
bound, RSV1 with deflate, close payloads) is the same in both roles.

Messages are built as in the compiled twin (unless in stream mode, below): a single-frame message whose
payload is all in one ``feed`` is made straight from the input; any other
goes into one ``bytearray`` per message, grown as payload arrives, so the
memory held is about one byte per payload byte however the input is cut
(never one object per piece of input).

Events are plain tuples, cheap to build on the hot path:

- ``(OP_TEXT, str)`` (or ``bytes`` when ``decode_text=False``)
- ``(OP_BINARY, bytes)``, ``(OP_PING, bytes)``, ``(OP_PONG, bytes)``
- ``(OP_CLOSE, code, reason)``: the peer's close; nothing follows it
- ``(FAIL, close_code, reason)``: a protocol failure; nothing follows it
- with ``deflate=True`` only: ``(OP_TEXT_DEFLATED, bytes)`` and
  ``(OP_BINARY_DEFLATED, bytes)``, a message whose first frame had RSV1 set
  (RFC 7692), reassembled but still compressed: neither validated nor
  decoded (that happens after inflating, outside the core)

Stream mode (``FrameParser(stream=True)``): text and binary messages are
not reassembled, so a message of any size costs no more memory than the
piece of it in hand. Whenever ``feed`` has taken payload bytes of a data
frame (all that this call holds of that frame) it returns

- ``(FRAGMENT, kind, piece, final)``: ``kind`` is the message's kind
  (``OP_TEXT``, ``OP_BINARY`` or a ``_DEFLATED`` kind), ``piece`` the
  unmasked bytes (``bytes`` for text too: nothing is decoded), ``final``
  True on the piece that ends the message. A FIN frame with no payload
  still gives one empty final piece; empty pieces are never non-final.

UTF-8 of a text message is still validated as the pieces arrive: a piece
holding an invalid byte, or the final piece of a message that ends inside
a sequence, is not returned; ``(FAIL, 1007, ...)`` is, in its place. The
size bound, control frames and every other rule are as without streaming.
"""

from __future__ import annotations

import codecs
import struct
from typing import Any

from ._common import (
    CLOSE_INVALID_DATA,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    DEFAULT_MAX_MESSAGE_SIZE,
    FAIL,
    FRAGMENT,
    MAX_CONTROL_PAYLOAD,
    OP_BINARY,
    OP_BINARY_DEFLATED,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OP_TEXT_DEFLATED,
    R_BAD_UTF8,
    R_CONT_UNEXPECTED,
    R_CTL_FRAGMENTED,
    R_CTL_TOO_LONG,
    R_DATA_UNEXPECTED,
    R_LENGTH_MSB,
    R_MASKED,
    R_NON_MINIMAL,
    R_OPCODE,
    R_RSV,
    R_TOO_BIG,
    R_UNMASKED,
    parse_close_payload,
    utf8_partial_ok,
)

#: An event tuple; see the module docstring.
Event = tuple[Any, ...]

_KNOWN_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG))
_DEFLATED_KIND = {OP_TEXT: OP_TEXT_DEFLATED, OP_BINARY: OP_BINARY_DEFLATED}
_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


def apply_mask(data: bytes | bytearray | memoryview, mask: bytes, offset: int = 0) -> bytes:
    """Return ``data`` XORed with the 4-byte ``mask``, starting ``offset``
    bytes into the mask cycle (for payloads that arrive in pieces)."""
    if len(mask) != 4:
        raise ValueError("mask: must be exactly 4 bytes")
    mask = bytes(mask)
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = memoryview(view.tobytes())  # count bytes, not items
    n = view.nbytes
    if n == 0:
        return b""
    offset &= 3
    if offset:
        mask = mask[offset:] + mask[:offset]
    full = (mask * ((n >> 2) + 1))[:n]
    value = int.from_bytes(view, "little") ^ int.from_bytes(full, "little")
    return value.to_bytes(n, "little")


def mask_inplace(buf: bytearray | memoryview, mask: bytes, offset: int = 0) -> None:
    """XOR the writable buffer ``buf`` with ``mask`` in place."""
    buf[:] = apply_mask(buf, mask, offset)


def validate_utf8(data: bytes | bytearray | memoryview) -> bool:
    """Return whether ``data`` is complete, valid UTF-8."""
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def utf8_payload(text: str) -> bytes | memoryview:
    """The UTF-8 of the ``str`` ``text`` as a read-only bytes-like object
    (the compiled twin returns a ``memoryview`` over the ``str``'s own
    UTF-8, without copying it)."""
    if not isinstance(text, str):
        raise TypeError(f"text: expected str, got {type(text).__name__}")
    return text.encode("utf-8")


def trim_spare() -> bool:
    """Free the spare buffer of large messages if it was not used since the
    last call; True if it was freed. The pure twin keeps no spare (its
    ``bytearray`` buffers go back to the allocator): always False."""
    return False


def _payload_bytes(payload: str | bytes | bytearray | memoryview) -> bytes:
    if isinstance(payload, str):
        return payload.encode("utf-8")
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    raise TypeError(f"payload: expected str or a bytes-like object, got {type(payload).__name__}")


def _header(opcode: int, length: int, fin: bool, masked: bool) -> bytes:
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode: {opcode} is not a 4-bit value")
    first = (0x80 if fin else 0) | opcode
    mbit = 0x80 if masked else 0
    if length < 126:
        return bytes((first, mbit | length))
    if length < 65536:
        return struct.pack("!BBH", first, mbit | 126, length)
    return struct.pack("!BBQ", first, mbit | 127, length)


def encode_frame(
    opcode: int,
    payload: str | bytes | bytearray | memoryview = b"",
    fin: bool = True,
    mask: bytes | None = None,
) -> bytes:
    """Encode one frame. Server frames are unmasked (``mask=None``); pass a
    4-byte ``mask`` to build a client frame."""
    data = _payload_bytes(payload)
    if mask is None:
        return _header(opcode, len(data), fin, False) + data
    if len(mask) != 4:
        raise ValueError("mask: must be exactly 4 bytes")
    return _header(opcode, len(data), fin, True) + bytes(mask) + apply_mask(data, mask)


def append_frame(
    out: bytearray,
    opcode: int,
    payload: str | bytes | bytearray | memoryview,
    fin: bool = True,
) -> int:
    """Append one unmasked (server) frame to ``out``; return the bytes added."""
    if not isinstance(out, bytearray):
        raise TypeError(f"out: expected a bytearray, got {type(out).__name__}")
    data = _payload_bytes(payload)
    head = _header(opcode, len(data), fin, False)
    out += head
    out += data
    return len(head) + len(data)


# Parser states.
_HEADER = 0
_PAYLOAD = 1
_DONE = 2


class FrameParser:
    """Incremental parser for the frames a WebSocket peer sends.

    ``masked`` is the role: ``True`` (the default) for a server, which reads
    client frames (masked, every one of them); ``False`` for a client, which
    reads server frames (never masked). A frame of the other kind fails the
    connection with 1002.

    ``max_message_size`` bounds a whole (possibly fragmented) message; it is
    checked against each frame's declared length before any of its payload
    is buffered. ``None`` removes the bound. With ``decode_text=False`` text
    messages are still validated but delivered as ``bytes``.

    ``deflate=True`` (permessage-deflate was negotiated): RSV1 on the first
    frame of a text or binary message marks it compressed; such a message is
    delivered as ``OP_TEXT_DEFLATED``/``OP_BINARY_DEFLATED`` with its raw
    bytes, and ``max_message_size`` bounds those compressed bytes. RSV1
    anywhere else, and RSV2/RSV3 always, is still a protocol error.

    ``stream=True``: text and binary messages come as ``(FRAGMENT, kind,
    piece, final)`` events, piece by piece as their payload arrives, never
    reassembled (see the module docstring); ``decode_text`` then has no
    effect.
    """

    def __init__(
        self,
        max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE,
        decode_text: bool = True,
        *,
        deflate: bool = False,
        masked: bool = True,
        stream: bool = False,
    ) -> None:
        if max_message_size is not None and max_message_size < 0:
            raise ValueError("max_message_size: must be >= 0 or None")
        self._max = -1 if max_message_size is None else int(max_message_size)
        self._decode_text = bool(decode_text)
        self._deflate = bool(deflate)
        self._masked = bool(masked)
        self._stream = bool(stream)
        self._state = _HEADER
        self._hdr = bytearray()
        # Current frame.
        self._opcode = 0
        self._fin = False
        self._rsv1 = False
        self._remaining = 0
        self._frame_len = 0
        self._mask = b""  # this frame's masking key (server role only)
        self._mask_pos = 0
        # Message being assembled (data frames), control payload. _msg_op is
        # the event kind: the opcode, or its _DEFLATED kind. The decoder only
        # validates a text message arriving in pieces (its output is dropped:
        # the message is decoded once, whole, at its end).
        self._msg_op = 0
        self._buf = bytearray()
        self._decoder: codecs.IncrementalDecoder | None = None
        self._ctl = bytearray()
        # Stream mode: payload bytes of the message taken so far (there is
        # no _buf to measure).
        self._msg_len = 0

    @property
    def masked(self) -> bool:
        """The role: True for a server (frames must be masked), False for a
        client (frames must not be)."""
        return self._masked

    @property
    def stream(self) -> bool:
        """Whether messages come piece by piece as ``FRAGMENT`` events."""
        return self._stream

    @property
    def finished(self) -> bool:
        """True once a close or a failure has been returned; later input is ignored."""
        return self._state == _DONE

    def feed(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Consume ``data`` entirely and return the events it completed."""
        events: list[Event] = []
        if self._state == _DONE:
            return events
        if self._stream:
            return self._feed_stream(data, events)
        view = memoryview(data).cast("B")
        n = len(view)
        pos = 0
        while True:
            if self._state == _HEADER:
                if pos >= n:
                    break
                pos, err = self._read_header(view, pos, n)
                if err is not None:
                    return self._fail(events, err)
                if self._state == _HEADER:
                    break  # header still incomplete: wait for more bytes
                if self._remaining == 0:
                    err = self._end_frame(events)
                    if err is not None or self._state == _DONE:
                        return events
            else:
                if pos >= n:
                    break
                take = min(self._remaining, n - pos)
                piece = view[pos : pos + take]
                chunk = apply_mask(piece, self._mask, self._mask_pos) if self._masked else piece.tobytes()
                pos += take
                if take == self._frame_len and self._fin and self._opcode != OP_CONT:
                    # A control frame or a single-frame message, all here.
                    self._remaining = 0
                    err = self._end_whole(chunk, events)
                    if err is not None or self._state == _DONE:
                        return events
                    continue
                self._mask_pos = (self._mask_pos + take) & 3
                self._remaining -= take
                if self._opcode >= OP_CLOSE:
                    self._ctl += chunk
                else:
                    err = self._add_data(chunk)
                    if err is not None:
                        return self._fail(events, err)
                if self._remaining == 0:
                    err = self._end_frame(events)
                    if err is not None or self._state == _DONE:
                        return events
        return events

    def _feed_stream(self, data: bytes | bytearray | memoryview, events: list[Event]) -> list[Event]:
        """``feed`` in stream mode: data payload goes out as it comes in."""
        view = memoryview(data).cast("B")
        n = len(view)
        pos = 0
        while True:
            if self._state == _HEADER:
                if pos >= n:
                    break
                pos, err = self._read_header(view, pos, n)
                if err is not None:
                    return self._fail(events, err)
                if self._state == _HEADER:
                    break  # header still incomplete: wait for more bytes
                if self._remaining == 0:
                    if self._opcode >= OP_CLOSE:
                        self._end_frame(events)
                    else:
                        self._piece(b"", events)
                    if self._state == _DONE:
                        return events
            else:
                if pos >= n:
                    break
                take = min(self._remaining, n - pos)
                piece = view[pos : pos + take]
                chunk = apply_mask(piece, self._mask, self._mask_pos) if self._masked else piece.tobytes()
                pos += take
                self._mask_pos = (self._mask_pos + take) & 3
                self._remaining -= take
                if self._opcode >= OP_CLOSE:
                    self._ctl += chunk
                    if self._remaining == 0:
                        self._end_frame(events)
                else:
                    self._piece(chunk, events)
                if self._state == _DONE:
                    return events
        return events

    def _piece(self, chunk: bytes, events: list[Event]) -> None:
        """Stream mode: ``chunk`` (all of this frame's payload in this feed,
        already counted off ``_remaining``) goes out as one FRAGMENT event,
        unless its text fails UTF-8."""
        kind = self._msg_op
        final = self._fin and self._remaining == 0
        if kind == OP_TEXT:
            err = self._check_utf8(chunk)
            if err is None and final and self._decoder is not None and self._decoder.getstate()[0]:
                err = (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8)  # a sequence cut short
            if err is not None:
                self._fail(events, err)
                return
        if self._remaining == 0:
            self._state = _HEADER
        if final:
            self._msg_op = 0
            self._msg_len = 0
            self._decoder = None
        else:
            self._msg_len += len(chunk)
            if not chunk:
                return
        events.append((FRAGMENT, kind, chunk, final))

    # -- internals ---------------------------------------------------------

    def _fail(self, events: list[Event], err: Event) -> list[Event]:
        events.append(err)
        self._state = _DONE
        self._buf = bytearray()
        self._decoder = None
        self._ctl = bytearray()
        self._msg_len = 0
        return events

    def _read_header(self, view: memoryview, pos: int, n: int) -> tuple[int, Event | None]:
        # Each header field is checked as soon as its bytes are in, so a bad
        # frame fails without waiting for (or buffering) what follows.
        hdr = self._hdr
        if len(hdr) < 2:
            take = min(2 - len(hdr), n - pos)
            hdr += view[pos : pos + take]
            pos += take
            if len(hdr) < 2:
                return pos, None
            err = self._check_first_two(hdr[0], hdr[1])
            if err is None and (hdr[1] & 0x7F) < 126:
                err = self._check_length(hdr, hdr[1] & 0x7F)
            if err is not None:
                return pos, err
        len7 = hdr[1] & 0x7F
        ext_end = 4 if len7 == 126 else 10 if len7 == 127 else 2
        if len(hdr) < ext_end:
            take = min(ext_end - len(hdr), n - pos)
            hdr += view[pos : pos + take]
            pos += take
            if len(hdr) < ext_end:
                return pos, None
            err = self._check_length(hdr, len7)
            if err is not None:
                return pos, err
        need = ext_end + 4 if self._masked else ext_end  # the masking key
        if len(hdr) < need:
            take = min(need - len(hdr), n - pos)
            hdr += view[pos : pos + take]
            pos += take
            if len(hdr) < need:
                return pos, None
        self._mask = bytes(hdr[ext_end:need])
        self._mask_pos = 0
        self._hdr = bytearray()
        self._state = _PAYLOAD
        return pos, None

    def _check_first_two(self, b0: int, b1: int) -> Event | None:
        rsv1 = False
        if b0 & 0x70:
            # Only RSV1, only with deflate, only on a text or binary frame
            # (whether it starts a message is checked below, as for any frame).
            if (b0 & 0x70) != 0x40 or not self._deflate or (b0 & 0x0F) not in _DEFLATED_KIND:
                return (FAIL, CLOSE_PROTOCOL_ERROR, R_RSV)
            rsv1 = True
        opcode = b0 & 0x0F
        if opcode not in _KNOWN_OPCODES:
            return (FAIL, CLOSE_PROTOCOL_ERROR, R_OPCODE)
        fin = bool(b0 & 0x80)
        if opcode >= OP_CLOSE:
            if not fin:
                return (FAIL, CLOSE_PROTOCOL_ERROR, R_CTL_FRAGMENTED)
            if (b1 & 0x7F) > MAX_CONTROL_PAYLOAD:
                return (FAIL, CLOSE_PROTOCOL_ERROR, R_CTL_TOO_LONG)
        if not b1 & 0x80:
            if self._masked:
                return (FAIL, CLOSE_PROTOCOL_ERROR, R_UNMASKED)
        elif not self._masked:
            return (FAIL, CLOSE_PROTOCOL_ERROR, R_MASKED)
        if opcode == OP_CONT:
            if self._msg_op == 0:
                return (FAIL, CLOSE_PROTOCOL_ERROR, R_CONT_UNEXPECTED)
        elif opcode < OP_CLOSE and self._msg_op != 0:
            return (FAIL, CLOSE_PROTOCOL_ERROR, R_DATA_UNEXPECTED)
        self._opcode = opcode
        self._fin = fin
        self._rsv1 = rsv1
        return None

    def _check_length(self, hdr: bytearray, len7: int) -> Event | None:
        if len7 == 126:
            length = (hdr[2] << 8) | hdr[3]
            if length < 126:
                return (FAIL, CLOSE_PROTOCOL_ERROR, R_NON_MINIMAL)
        elif len7 == 127:
            length = int.from_bytes(hdr[2:10], "big")
            if length >> 63:
                return (FAIL, CLOSE_PROTOCOL_ERROR, R_LENGTH_MSB)
            if length < 65536:
                return (FAIL, CLOSE_PROTOCOL_ERROR, R_NON_MINIMAL)
        else:
            length = len7
        so_far = self._msg_len if self._stream else len(self._buf)
        if self._opcode < OP_CLOSE and self._max >= 0 and so_far + length > self._max:
            return (FAIL, CLOSE_TOO_BIG, R_TOO_BIG)
        self._remaining = length
        self._frame_len = length
        if self._opcode != OP_CONT and self._opcode < OP_CLOSE:
            # Compressed (RSV1): reassembled as bytes, validated after inflating.
            self._msg_op = _DEFLATED_KIND[self._opcode] if self._rsv1 else self._opcode
        return None

    def _add_data(self, chunk: bytes) -> Event | None:
        self._buf += chunk
        if self._msg_op != OP_TEXT:
            return None
        return self._check_utf8(chunk)

    def _check_utf8(self, chunk: bytes) -> Event | None:
        """Validate the next ``chunk`` of a text message (the decoder keeps
        an unfinished sequence for the next one)."""
        decoder = self._decoder
        if decoder is None:
            if chunk.isascii():
                return None  # nothing pending and nothing to check
            decoder = self._decoder = _Utf8Decoder()
        try:
            decoder.decode(chunk, False)
        except UnicodeDecodeError:
            return (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8)
        if not utf8_partial_ok(decoder.getstate()[0]):
            return (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8)
        return None

    def _end_whole(self, payload: bytes, events: list[Event]) -> Event | None:
        """A control frame or a single-frame message whose payload came in
        one piece: no assembly buffer, no incremental decoding."""
        self._state = _HEADER
        if self._opcode >= OP_CLOSE:
            return self._control_event(payload, events)
        kind = self._msg_op
        self._msg_op = 0
        if kind != OP_TEXT:
            events.append((kind, payload))
            return None
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            err = (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8)
            self._fail(events, err)
            return err
        events.append((OP_TEXT, text if self._decode_text else payload))
        return None

    def _control_event(self, payload: bytes, events: list[Event]) -> Event | None:
        if self._opcode == OP_CLOSE:
            event = parse_close_payload(payload)
            if event[0] == FAIL:
                self._fail(events, event)
                return event
            events.append(event)
            self._state = _DONE
            return None
        events.append((self._opcode, payload))
        return None

    def _end_frame(self, events: list[Event]) -> Event | None:
        self._state = _HEADER
        if self._opcode >= OP_CLOSE:
            payload = bytes(self._ctl)
            self._ctl = bytearray()
            return self._control_event(payload, events)
        if not self._fin:
            return None
        kind = self._msg_op
        buf = self._buf
        message: str | bytes
        if kind != OP_TEXT:
            message = bytes(buf)
        else:
            decoder = self._decoder
            if decoder is not None and decoder.getstate()[0]:
                err = (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8)  # a sequence cut short
                self._fail(events, err)
                return err
            # Validated piece by piece already: this cannot fail.
            message = buf.decode("utf-8") if self._decode_text else bytes(buf)
        events.append((kind, message))
        self._msg_op = 0
        self._buf = bytearray()
        self._decoder = None
        return None
