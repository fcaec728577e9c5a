"""One WebSocket connection's protocol, sans I/O: what to do with the
bytes that arrive, what bytes to send, and when (RFC 6455, RFC 7692).

A :class:`WebSocketSession` starts where the opening handshake ended. It owns the
state (open, closing, closed), the close handshake, ping/pong and
keepalive, permessage-deflate and every close code. It never reads,
writes, sleeps or imports trio; its owner (the server's ``WebSocket``, or
a client) does the I/O around it:

- bytes read go to :meth:`WebSocketSession.receive`: each complete data
  message is handed to ``deliver(owner, data)`` in order (an exception
  from it is logged and closes with 1011; a result other than None goes
  to ``returned(owner, result)``), pings are answered, a close is echoed, a
  protocol failure starts the close with its code;
- bytes to write accumulate in ``out`` (a ``bytearray`` the owner writes
  and clears); a large payload is not copied into it: :meth:`WebSocketSession.send`
  returns it, and the owner queues it right after ``out``'s content;
- time is read from ``clock`` (any monotonic seconds) only when a deadline
  is set: ``close_deadline`` once we sent a close frame,
  :meth:`WebSocketSession.receive_deadline` while keepalive is on. When it passes,
  the owner calls :meth:`WebSocketSession.timer` and the session decides (ping, or
  close with 1011);
- after any call, ``state`` tells whether the session started the close
  (``CLOSING``: the owner then bounds its read by ``close_deadline``).

The role decides the masking (RFC 6455 section 5.1): a ``"server"``
session expects masked frames and sends unmasked ones; a ``"client"``
session expects unmasked frames and masks what it sends.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ._common import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CLOSE_PROTOCOL_ERROR,
    DEFAULT_MAX_MESSAGE_SIZE,
    FAIL,
    FRAGMENT,
    OP_BINARY,
    OP_BINARY_DEFLATED,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OP_TEXT_DEFLATED,
    R_BAD_UTF8,
    close_payload,
    frame_header,
)
from ._deflate import MIN_COMPRESS_SIZE, DeflateError, DeflateParams, Deflater, Inflater
from ._twin import FrameParser, append_frame, apply_mask, utf8_payload, validate_utf8

log = logging.getLogger("wsnest")

#: Roles.
SERVER = "server"
CLIENT = "client"

#: WebSocketSession states.
OPEN = 0
CLOSING = 1  # our close frame is queued; waiting for the peer's
CLOSED = 2

#: How messages are typed (``textframes``).
MODE_BYTES = 0  # bytes in, BINARY out
MODE_TEXT = 1  # str in, TEXT out
MODE_AUTO = 2  # follow the frame type in, the Python type out

#: Payloads at least this large are returned by ``send``, not copied into ``out``.
SPILL_SIZE = 64 * 1024

#: The payload of the pings keepalive sends.
PING_PAYLOAD = b"wsnest"


class LimitsLike(Protocol):
    """The limits a session reads (``wsnest.Limits`` has them)."""

    @property
    def max_message_size(self) -> int | None:
        """Largest message accepted or sent, in bytes (None: no bound)."""

    @property
    def close_timeout(self) -> float:
        """Seconds to wait for the peer's close frame once we sent ours."""

    @property
    def ping_interval(self) -> float | None:
        """Seconds of silence before a keepalive ping (None: no keepalive)."""

    @property
    def ping_timeout(self) -> float:
        """Seconds a keepalive ping may go unanswered."""


@dataclass(frozen=True)
class SessionLimits:
    """Limits for a session built without the server's ``Limits``."""

    max_message_size: int | None = DEFAULT_MAX_MESSAGE_SIZE
    close_timeout: float = 5.0
    ping_interval: float | None = None
    ping_timeout: float = 20.0


_DEFAULT_LIMITS = SessionLimits()

_R_COMPRESSED = "compressed message without permessage-deflate"
_R_KEEPALIVE = "keepalive ping timeout"


class WebSocketSession:
    """The protocol state of one WebSocket connection (see the module
    docstring). Use :func:`new_session` to get the right class for the
    negotiated extensions.

    ``limits``: any object with ``max_message_size``, ``close_timeout``,
    ``ping_interval`` and ``ping_timeout`` (a :class:`SessionLimits`, or
    the server's ``Limits``).

    Attributes the owner reads: ``state``, ``close_code`` (the peer's, ours,
    or 1006 until one is known) and ``close_reason``, ``close_deadline``, ``out``, ``finished``
    (the parser reads no more frames after a failure).
    """

    #: Whether messages are compressed (a class fact: no per-connection slot).
    compresses = False

    __slots__ = (
        "_clock",
        "close_code",
        "close_deadline",
        "close_reason",
        "deliver",
        "limits",
        "masks",
        "messages_in",
        "mode",
        "out",
        "owner",
        "parser",
        "pong_deadline",
        "returned",
        "state",
    )

    def __init__(
        self,
        role: str,
        *,
        mode: int = MODE_AUTO,
        limits: LimitsLike | None = None,
        clock: Callable[[], float],
        owner: object = None,
        deliver: Callable[[Any, Any], object] | None = None,
        returned: Callable[[Any, object], None] | None = None,
        deflate: DeflateParams | None = None,
        stream: bool = False,
    ) -> None:
        if role not in (SERVER, CLIENT):
            raise ValueError(f"role: expected 'server' or 'client', got {role!r}")
        if mode not in (MODE_BYTES, MODE_TEXT, MODE_AUTO):
            raise ValueError(f"mode: expected MODE_BYTES, MODE_TEXT or MODE_AUTO, got {mode!r}")
        self.masks = role == CLIENT
        self.mode = mode
        # Shared, not copied (the server passes its Limits): every field
        # here costs every idle connection 8 bytes.
        self.limits: LimitsLike = limits if limits is not None else _DEFAULT_LIMITS
        self._clock = clock
        self.owner = owner
        self.deliver: Callable[[Any, Any], object] = deliver if deliver is not None else _drop
        self.returned = returned
        # stream=True: messages are delivered piece by piece as they arrive,
        # as (FRAGMENT, kind, piece, final) tuples (see FrameParser).
        self.parser = FrameParser(
            self.limits.max_message_size,
            mode != MODE_BYTES,
            deflate=deflate is not None,
            masked=role == SERVER,
            stream=stream,
        )
        self.out = bytearray()
        self.state = OPEN
        self.close_code = CLOSE_ABNORMAL
        self.close_reason = ""
        self.close_deadline = math.inf
        self.pong_deadline = math.inf
        self.messages_in = 0  # messages delivered (the server's stats)

    @property
    def role(self) -> str:
        """``"server"`` or ``"client"``."""
        return CLIENT if self.masks else SERVER

    @property
    def finished(self) -> bool:
        """True once a protocol failure stopped the parser: the rest of
        the peer's bytes are discarded unread."""
        return bool(self.parser.finished)

    @property
    def deflate(self) -> bool:
        """True if permessage-deflate is on (:class:`DeflateSession`)."""
        return False

    # -- sending -----------------------------------------------------------------

    def fits(self, data: str | bytes | bytearray | memoryview) -> bool:
        """Whether ``data`` is within ``max_message_size`` (as UTF-8 for str)."""
        limit = self.limits.max_message_size
        if limit is None or len(data) <= limit >> 2:  # a UTF-8 character is at most 4 bytes
            return True
        size = len(data.encode("utf-8")) if isinstance(data, str) else memoryview(data).nbytes
        return size <= limit

    def send(self, opcode: int, data: str | bytes | bytearray | memoryview) -> bytes | memoryview | None:
        """Frame one message (checked by the owner: open, and :meth:`fits`)
        into ``out``. A large payload is not copied: its header goes into
        ``out`` and the payload is returned, for the owner to write right
        after ``out``'s content (None: all of it is in ``out``); a ``str``'s
        comes as a read-only view of its own UTF-8 (``utf8_payload``)."""
        if self.masks:
            return self._put(opcode, data, False)
        if len(data) < SPILL_SIZE:
            append_frame(self.out, opcode, data)
            return None
        payload: bytes | memoryview
        payload = utf8_payload(data) if isinstance(data, str) else data if type(data) is bytes else bytes(data)
        self.out += frame_header(opcode, memoryview(payload).nbytes)
        return payload

    def send_frame(self, frame: bytes, payload_size: int) -> bytes | None:
        """Queue a server frame encoded once for many receivers
        (``broadcast``); its payload is its last ``payload_size`` bytes.
        Returns the frame itself when it is large (shared by every
        receiver, never copied), as :meth:`send` returns a payload."""
        if self.masks:
            raise ValueError("frame: a client session cannot send a frame encoded for many receivers")
        if len(frame) < SPILL_SIZE:
            self.out += frame
            return None
        return frame

    def send_fragment(self, opcode: int, data: bytes | bytearray | memoryview, fin: bool) -> bytes | None:
        """Frame one fragment of a message sent in pieces (RFC 6455 section
        5.4) into ``out``: ``opcode`` is the message's on the first fragment
        and ``OP_CONT`` on the others, ``fin`` is set on the last; masked in
        the client role. Returns a large payload as :meth:`send` does.

        Never compressed, on a :class:`DeflateSession` too: RFC 7692
        compresses per message and lets any message go uncompressed (RSV1
        clear), so a message whose end is not known yet keeps no
        compressor state between fragments. The owner checks the state and
        the size, and keeps other data frames out until the last fragment
        (control frames may come between)."""
        n = memoryview(data).nbytes
        head = frame_header(opcode, n, fin)
        out = self.out
        if self.masks:
            mask = new_mask()
            out += head[:1]
            out.append(head[1] | 0x80)
            out += head[2:]
            out += mask
            masked: bytes = apply_mask(data, mask)
            if n < SPILL_SIZE:
                out += masked
                return None
            return masked  # a fresh copy: queued as it is
        out += head
        if n < SPILL_SIZE:
            out += data
            return None
        return data if type(data) is bytes else bytes(data)  # a mutable buffer may change once we return

    def _put(self, opcode: int, data: str | bytes | bytearray | memoryview, rsv1: bool) -> bytes | None:
        """Frame a message the slow way: masked (client) or compressed."""
        payload: bytes | bytearray | memoryview
        if isinstance(data, str):
            # A large str's UTF-8 in place (see send); a small one's encoded.
            payload = utf8_payload(data) if len(data) >= SPILL_SIZE else data.encode("utf-8")
        else:
            payload = data
        n = memoryview(payload).nbytes
        head = frame_header(opcode, n, rsv1=rsv1)
        if self.masks:
            mask = new_mask()
            self.out += head[:1]
            self.out.append(head[1] | 0x80)
            self.out += head[2:]
            self.out += mask
            masked: bytes = apply_mask(payload, mask)  # a fresh copy, ours to keep
            if n < SPILL_SIZE:
                self.out += masked
                return None
            return masked  # large: queued by reference, not copied again
        self.out += head
        if n < SPILL_SIZE:
            self.out += payload
            return None
        return payload if type(payload) is bytes else bytes(payload)

    def ping(self, payload: bytes = PING_PAYLOAD) -> bool:
        """Queue a ping; False if the session is not open."""
        if self.state != OPEN:
            return False
        self._control(OP_PING, payload)
        return True

    def _control(self, opcode: int, payload: bytes) -> None:
        if self.masks:
            self._put(opcode, payload, False)
        else:
            append_frame(self.out, opcode, payload)

    # -- closing -----------------------------------------------------------------

    def close(self, code: int, payload: bytes) -> bool:
        """Start the closing handshake (``payload`` from ``close_payload``);
        False if it was already closing or closed."""
        if self.state != OPEN:
            return False
        self.state = CLOSING
        self.close_code = code
        self.close_reason = bytes(payload[2:]).decode("utf-8", "replace")
        self.close_deadline = self._clock() + self.limits.close_timeout
        self._control(OP_CLOSE, payload)
        return True

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection: close with ``code`` if still open."""
        log.debug("%r: failing with %d (%s)", self.owner, code, reason)
        if self.state == OPEN:
            self.close(code, close_payload(code, reason))

    def going_away(self) -> None:
        """We are shutting down: close frame 1001, and the session is over
        (no reply is awaited)."""
        if self.state == OPEN:
            self.close_code = CLOSE_GOING_AWAY
            self.close_reason = "client shutting down" if self.masks else "server shutting down"
            self._control(OP_CLOSE, close_payload(CLOSE_GOING_AWAY, self.close_reason))
        self.state = CLOSED

    def connection_lost(self) -> None:
        """The peer's end of the stream closed: the session is over; the
        close code stays (the peer's, ours, or 1006)."""
        self.state = CLOSED

    def abort(self) -> None:
        """The connection broke (a write failed, keepalive gave up): over,
        with 1006 unless a close had already ended it."""
        if self.state != CLOSED:
            self.state = CLOSED
            self.close_code = CLOSE_ABNORMAL
            self.close_reason = ""

    def detach(self) -> None:
        """Forget the owner and its hooks (the connection is over): the
        owner holds this session, so keeping them would make a reference
        cycle that lives until a full garbage collection."""
        self.owner = None
        self.deliver = _drop
        self.returned = None

    def callback_failed(self, name: str) -> None:
        """An application callback raised (the exception being handled):
        log it, and close with 1011 if still open."""
        log.exception("wsnest: %s callback raised on %r", name, self.owner)
        if self.state == OPEN:
            self.close(CLOSE_INTERNAL_ERROR, close_payload(CLOSE_INTERNAL_ERROR))

    # -- keepalive ---------------------------------------------------------------

    def receive_deadline(self) -> float:
        """When the owner's read should give up and call :meth:`timer`:
        the pong deadline, or one ping interval from now (keepalive only)."""
        if self.pong_deadline != math.inf:
            return self.pong_deadline
        interval = self.limits.ping_interval
        return math.inf if interval is None else self._clock() + interval

    def write_deadline(self) -> float:
        """When an owner that waits to write (and so cannot read a pong)
        must give up: the pong deadline, or one ping interval plus the
        ping timeout from now (keepalive only)."""
        timeouts = self.limits
        if timeouts.ping_interval is None:
            return math.inf
        if self.pong_deadline != math.inf:
            return self.pong_deadline
        return self._clock() + timeouts.ping_interval + timeouts.ping_timeout

    def traffic(self) -> None:
        """Bytes arrived: the peer is alive, whatever they hold."""
        self.pong_deadline = math.inf

    def timer(self) -> None:
        """The read deadline passed with nothing read: close with 1011 if a
        ping went unanswered, else ping (when open)."""
        now = self._clock()
        if self.pong_deadline != math.inf and now >= self.pong_deadline:
            log.debug("%r: keepalive ping timed out", self.owner)
            self.pong_deadline = math.inf
            self.close(CLOSE_INTERNAL_ERROR, close_payload(CLOSE_INTERNAL_ERROR, _R_KEEPALIVE))
        elif self.state == OPEN:
            self._control(OP_PING, PING_PAYLOAD)
            self.pong_deadline = now + self.limits.ping_timeout

    # -- receiving ---------------------------------------------------------------

    def receive(self, data: bytes | bytearray | memoryview) -> None:
        """Parse ``data`` and act on everything in it, in order."""
        self.handle(self.parser.feed(data))

    def handle(self, events: list[tuple[Any, ...]]) -> None:
        """Act on parser events: deliver data, answer pings, echo a close,
        fail on errors. ``deliver`` runs inline, so what it sends is queued
        before anything a later event queues."""
        deliver, owner = self.deliver, self.owner
        # Counted once per read, not per message (the pipelined hot path):
        # every branch that is not a message delivered gives its one back.
        self.messages_in += len(events)
        for event in events:
            kind = event[0]
            if kind in (OP_TEXT, OP_BINARY):
                if self.state != OPEN:
                    self.messages_in -= 1
                    continue  # closing: the peer's remaining messages are dropped
                data = event[1]
                if kind == OP_BINARY and self.mode == MODE_TEXT:
                    try:
                        data = data.decode("utf-8")
                    except UnicodeDecodeError:
                        self.messages_in -= 1
                        self.fail(CLOSE_INVALID_DATA, "binary message is not UTF-8 text")
                        continue
                try:
                    result = deliver(owner, data)
                except Exception:
                    self.callback_failed("on_message")
                else:
                    if result is not None and self.returned is not None:
                        self.returned(owner, result)
                        deliver = self.deliver  # the owner may have switched it for the rest
            elif kind == OP_PING:
                self.messages_in -= 1
                if self.state != CLOSED:
                    self._control(OP_PONG, event[1])
            elif kind == OP_PONG:
                self.messages_in -= 1
                self.pong_deadline = math.inf
            elif kind == OP_CLOSE:
                self.messages_in -= 1
                code = event[1]
                if self.state == OPEN:
                    # Echo the peer's code (RFC 6455 section 5.5.1).
                    self.close_code = code
                    self.close_reason = event[2]
                    self._control(OP_CLOSE, b"" if code == CLOSE_NO_STATUS else close_payload(code))
                self.state = CLOSED
            elif kind == FRAGMENT:
                self.messages_in -= 1  # _fragment counts the message at its last piece
                if self.state == OPEN:
                    self._fragment(event)
            elif kind == FAIL:
                self.messages_in -= 1
                self.fail(event[1], event[2])
            else:  # OP_TEXT_DEFLATED, OP_BINARY_DEFLATED: only a deflate parser makes them
                if self.state != OPEN:
                    self.messages_in -= 1
                self._inflated(kind, event[1])

    def _inflated(self, kind: int, payload: bytes) -> None:
        """A compressed message; only :class:`DeflateSession` accepts them."""
        self.fail(CLOSE_PROTOCOL_ERROR, _R_COMPRESSED)

    def _fragment(self, event: tuple[Any, ...]) -> None:
        """A piece of a message (stream mode), handed to ``deliver`` as the
        parser made it: the owner joins or decodes the pieces."""
        if event[1] not in (OP_TEXT, OP_BINARY):
            self.fail(CLOSE_PROTOCOL_ERROR, _R_COMPRESSED)
            return
        if event[3]:
            self.messages_in += 1
        try:
            self.deliver(self.owner, event)
        except Exception:
            self.callback_failed("on_message")


class DeflateSession(WebSocketSession):
    """A session that negotiated permessage-deflate (RFC 7692): compressed
    messages are inflated (bounded by ``max_message_size``), checked and
    delivered like the others; text and binary messages of
    ``MIN_COMPRESS_SIZE`` bytes or more are sent compressed."""

    compresses = True

    __slots__ = ("_deflater", "_inflater", "_pieces")

    def __init__(self, role: str, *, deflate: DeflateParams, **kw: Any) -> None:
        super().__init__(role, deflate=deflate, **kw)
        if role == SERVER:
            self._inflater = Inflater(deflate.client_no_context_takeover)
            self._deflater = Deflater(deflate.window_bits, deflate.server_no_context_takeover)
        else:
            self._inflater = Inflater(deflate.server_no_context_takeover)
            # zlib refuses a 256-byte window for raw deflate (wbits=-8): a
            # server asking for 8 bits gets 9, as other libraries do. That
            # keeps to 8: zlib's compressor reaches back at most 2**bits - 262
            # bytes (250 for 9 bits). No bound from the server means 15.
            bits = deflate.client_max_window_bits or 15
            self._deflater = Deflater(max(bits, 9), deflate.client_no_context_takeover)
        # Stream mode: the compressed pieces of the message in progress (a
        # compressed message is inflated whole, then handed over as one piece).
        self._pieces: list[bytes] | None = None

    @property
    def deflate(self) -> bool:
        """True: permessage-deflate is on."""
        return True

    def send(self, opcode: int, data: str | bytes | bytearray | memoryview) -> bytes | None:
        """Frame one message, compressed unless it is small; returns as
        :meth:`WebSocketSession.send` does."""
        payload = data.encode("utf-8") if isinstance(data, str) else data
        view = memoryview(payload)
        if view.nbytes < MIN_COMPRESS_SIZE:
            if self.masks:
                return self._put(opcode, payload, False)
            append_frame(self.out, opcode, payload)
            return None
        return self._put(opcode, self._deflater.compress(view if view.c_contiguous else view.tobytes()), True)

    def send_frame(self, frame: bytes, payload_size: int) -> bytes | None:
        """A frame encoded for many receivers, compressed again for this
        connection (its compression context is its own)."""
        return self.send(frame[0] & 0x0F, memoryview(frame)[len(frame) - payload_size :])

    def _inflated(self, kind: int, payload: bytes) -> None:
        if self.state != OPEN:
            return  # closing: the rest of the peer's messages are dropped unread
        try:
            raw = self._inflater.decompress(payload, self.limits.max_message_size)
        except DeflateError as exc:
            self.fail(exc.code, exc.reason)  # 1009 or 1007, as the parser's failures
            return
        if kind != OP_TEXT_DEFLATED:
            self.handle([(OP_BINARY, raw)])
            return
        # Text is checked as strictly as uncompressed text, then delivered
        # the same way (bytes with MODE_BYTES, else str).
        data: str | bytes = raw
        if self.mode == MODE_BYTES:
            ok = validate_utf8(raw)
        else:
            try:
                data = raw.decode("utf-8")
                ok = True
            except UnicodeDecodeError:
                ok = False
        if not ok:
            self.fail(CLOSE_INVALID_DATA, R_BAD_UTF8)
            return
        self.handle([(OP_TEXT, data)])

    def _fragment(self, event: tuple[Any, ...]) -> None:
        kind, piece, final = event[1], event[2], event[3]
        if kind not in (OP_TEXT_DEFLATED, OP_BINARY_DEFLATED):
            super()._fragment(event)
            return
        pieces = self._pieces
        if pieces is None:
            pieces = self._pieces = []
        pieces.append(piece)
        if not final:
            return
        self._pieces = None
        try:
            raw = self._inflater.decompress(b"".join(pieces), self.limits.max_message_size)
        except DeflateError as exc:
            self.fail(exc.code, exc.reason)
            return
        if kind == OP_TEXT_DEFLATED and not validate_utf8(raw):
            self.fail(CLOSE_INVALID_DATA, R_BAD_UTF8)
            return
        super()._fragment((FRAGMENT, OP_TEXT if kind == OP_TEXT_DEFLATED else OP_BINARY, raw, True))


class _MaskPool(threading.local):
    """Random bytes for masking keys, drawn from ``os.urandom`` in bulk
    (one system call per 1,024 keys instead of one per frame); one pool per
    thread, emptied in a forked child (it must not reuse its parent's)."""

    def __init__(self) -> None:
        self.data = b""
        self.pos = 0


_MASKS = _MaskPool()
_MASK_BULK = 4096


def new_mask() -> bytes:
    """A fresh, unpredictable 4-byte masking key (RFC 6455 section 5.3)."""
    pool = _MASKS
    pos = pool.pos
    if pos >= len(pool.data):
        pool.data = os.urandom(_MASK_BULK)
        pos = 0
    pool.pos = pos + 4
    return pool.data[pos : pos + 4]


def _empty_masks() -> None:
    _MASKS.data = b""
    _MASKS.pos = 0


os.register_at_fork(after_in_child=_empty_masks)


def new_session(role: str, *, deflate: DeflateParams | None = None, **kw: Any) -> WebSocketSession:
    """A :class:`WebSocketSession`, or a :class:`DeflateSession` when ``deflate``
    holds negotiated permessage-deflate parameters. Keywords as
    :class:`WebSocketSession` takes them."""
    if deflate is None:
        return WebSocketSession(role, **kw)
    return DeflateSession(role, deflate=deflate, **kw)


def _drop(owner: object, data: object) -> None:
    """The default ``deliver``: messages are discarded."""
