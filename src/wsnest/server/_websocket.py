"""The ``ws`` object handed to WebSocket callbacks, and its session loop.

Design notes (why it is shaped like this):

- One trio task per connection reads, parses and calls plain callbacks
  inline: no reader task, queue or task switch per message.
- ``send()`` never blocks. During a batch of callbacks (everything parsed
  from one read) frames only accumulate in ``_out``; the session writes the
  whole batch with one ``send`` afterwards. A send from anywhere else
  (another connection's callback, a background task) marks the connection
  dirty; the server's flusher writes every dirty connection once per
  scheduler tick, so a broadcast costs one syscall per receiver.
- ``async def on_message`` runs in a second task fed by a bounded deque, so
  pings and close frames are still handled while the application is slow.
  The reader hands the parser no more messages than the deque has room for
  (``_MessageBounds`` finds where they end); when it is full, reading goes
  on up to the start of the next message (answering pings), then pauses
  (TCP backpressure): at most ``max_queue`` messages wait, whatever a read
  holds.
- Work between two yields is bounded: on the pure core a large read is
  parsed in pieces and the task yields once ``WORK_BUDGET`` is spent, so
  one client sending costly input (1-byte fragments) cannot stall the
  others (the compiled core parses a whole read in about a millisecond at
  worst; the transport bounds a run of reads by time).
- An echo of one read never meets a full send buffer: while a read (or a
  piece of one) is parsed, ``send`` accepts as many bytes more than
  ``send_high_water`` as the read holds (an echo is at most that), and the
  reader pauses while the drain task holds more than ``send_high_water``.
- Writes that have to wait are bounded by ``send_timeout`` (in the
  transport); a wait of the reader itself is also bounded by the keepalive
  deadline, so a peer that stops reading is dropped by keepalive too.
- ``on_close`` runs exactly once for every connection that was upgraded,
  whatever ended it.
- permessage-deflate lives in a subclass, :class:`DeflateWebSocket`, made
  only when the extension was negotiated, so a plain connection's ``send``
  and message dispatch do not pay a single extra check for it.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ErrorCode
from .._limits import Limits
from ..core import (
    CLOSE_ABNORMAL,
    CLOSE_GOING_AWAY,
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CORE,
    FAIL,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OP_TEXT_DEFLATED,
    FrameParser,
    append_frame,
    close_payload,
    frame_header,
    validate_utf8,
)
from ..core._common import CLOSE_PROTOCOL_ERROR, R_BAD_UTF8
from ..core._deflate import MIN_COMPRESS_SIZE, DeflateError, DeflateParams, Deflater, Inflater
from ._outbox import BIG_PAYLOAD, Outbox

if TYPE_CHECKING:
    from ._contract import ServerContext
    from ._transport import Transport

log = logging.getLogger("wsnest")

# Session states.
OPEN = 0
CLOSING = 1  # our close frame is queued; waiting for the peer's
CLOSED = 2

# textframes modes.
MODE_BYTES = 0  # textframes=False: bytes in, BINARY out
MODE_TEXT = 1  # textframes=True: str in, TEXT out
MODE_AUTO = 2  # textframes=None: follow the frame / Python type

_OK = ErrorCode.OK
_E_CLOSED = ErrorCode.CLOSED
_E_AGAIN = ErrorCode.AGAIN
_E_SIZE = ErrorCode.MSG_SIZE

# The most input handed to the parser at once: a whole read for the
# compiled core, 8 KiB for the pure twin (~50x slower on costly input such
# as 1-byte fragments); and the parsing time after which a read's remaining
# pieces wait for the next scheduler turn.
_PIECE = 1 << 30 if CORE == "compiled" else 8 * 1024
WORK_BUDGET = 0.002


class WebSocket(Outbox):
    """One WebSocket connection, as seen by ``handler_ws`` callbacks.

    Attributes:
        id: integer unique per server across all WebSocket and stream
            connections (from 1, never reused).
        subprotocol: the negotiated subprotocol, or ``None``.
    """

    __slots__ = (
        "_batch",
        "_bounds",
        "_close_code",
        "_close_deadline",
        "_handler",
        "_handoff",
        "_high_water",
        "_limits",
        "_mode",
        "_parser",
        "_pong_deadline",
        "_queue",
        "_queue_wakeup",
        "_reader_wakeup",
        "_scope",
        "_state",
        "id",
        "subprotocol",
    )

    def __init__(
        self,
        server: ServerContext,
        handler: Any,
        transport: Transport,
        ws_id: int,
        limits: Limits,
        mode: int,
        subprotocol: str | None = None,
        deflate: DeflateParams | None = None,
        head: bytes = b"",
    ) -> None:
        super().__init__(server, transport)
        # The 101 goes first; what on_open sends follows it in one write.
        self._out += head
        self.id = ws_id
        self.subprotocol = subprotocol
        self._handler = handler
        self._limits = limits
        # send() refuses above this: send_high_water, raised by the size of
        # the input while the reader parses a large read (see _feed).
        self._high_water = limits.send_high_water
        self._mode = mode
        self._parser = FrameParser(limits.max_message_size, mode != MODE_BYTES, deflate=deflate is not None)
        if deflate is not None:
            self._start_deflate(deflate)
        self._state = OPEN
        # Until the 101 is written, sends only accumulate (like a batch).
        self._batch = True
        self._close_code = CLOSE_ABNORMAL
        self._close_deadline = math.inf
        self._pong_deadline = math.inf
        self._queue: deque[str | bytes] | None = None
        self._bounds: _MessageBounds | None = None  # async on_message only
        self._handoff: Awaitable[object] | None = None  # see _adopt_result
        self._queue_wakeup: trio.Event | None = None
        self._reader_wakeup: trio.Event | None = None
        # Cancel scope around the read loop: its deadline becomes the close
        # deadline once we send a close frame, so a peer that never answers
        # is hung up on, whoever started the close.
        self._scope: trio.CancelScope | None = None

    def __repr__(self) -> str:
        state = ("open", "closing", "closed")[self._state]
        return f"<WebSocket id={self.id} {state}>"

    # -- public API ------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once a close frame was sent or received (``send`` returns 7)."""
        return self._state != OPEN

    @property
    def close_code(self) -> int:
        """The close code of the connection: the peer's, ours, or 1006 if the
        connection dropped without a close frame (meaningful once closed)."""
        return self._close_code

    @property
    def permessage_deflate(self) -> bool:
        """True if permessage-deflate (RFC 7692) was negotiated: messages may
        arrive compressed and ours are sent compressed. Needs
        ``handler_ws(..., permessage_deflate=True)`` and a client offering it."""
        return False

    def send(self, data: str | bytes | bytearray | memoryview) -> int:
        """Queue ``data`` as one message and return at once.

        Returns 0 (queued), 7 (closed), 8 (send buffer over its high-water
        mark: the peer reads too slowly) or 17 (over the message size
        limit); see :class:`ErrorCode`. Nothing is queued unless 0 is
        returned. With ``textframes=True`` everything goes as TEXT and bytes
        must be valid UTF-8 (``ValueError``); with ``False`` everything goes
        as BINARY; with ``None`` ``str`` goes as TEXT and bytes as BINARY.
        Raises ``TypeError`` for any other type.
        """
        kind = type(data)
        # The common cases inline (this is the hot path); the rest shares
        # _opcode_for with DeflateWebSocket.send.
        if kind is bytes and self._mode != MODE_TEXT:
            opcode = OP_BINARY
        elif kind is str:
            opcode = OP_BINARY if self._mode == MODE_BYTES else OP_TEXT
        else:
            opcode = self._opcode_for(data)
        if self._state != OPEN:
            return _E_CLOSED
        if len(self._out) + self._parts_size + self._inflight > self._high_water:
            return _E_AGAIN
        limit = self._limits.max_message_size
        if len(data) < BIG_PAYLOAD:
            if limit is not None and len(data) > limit >> 2:  # a UTF-8 char is at most 4 bytes
                size = len(data.encode("utf-8")) if isinstance(data, str) else memoryview(data).nbytes
                if size > limit:
                    return _E_SIZE
            append_frame(self._out, opcode, data)
        else:
            # Large: queue by reference (one copy less; str and mutable
            # buffers become bytes first).
            payload = data.encode("utf-8") if isinstance(data, str) else data if kind is bytes else bytes(data)
            if limit is not None and len(payload) > limit:
                return _E_SIZE
            self._out += frame_header(opcode, len(payload))
            self._queue_payload(payload)  # type: ignore[arg-type]
        if not self._batch:
            self._schedule_flush()
        return _OK

    def _start_deflate(self, params: DeflateParams) -> None:
        """Set up the agreed permessage-deflate contexts (``DeflateWebSocket``)."""
        raise TypeError("permessage-deflate needs a DeflateWebSocket")

    def _opcode_for(self, data: object) -> int:
        """The opcode ``data`` goes out with; raises as :meth:`send` documents."""
        if type(data) is str:
            return OP_BINARY if self._mode == MODE_BYTES else OP_TEXT
        if isinstance(data, (bytes, bytearray, memoryview)):
            if self._mode != MODE_TEXT:
                return OP_BINARY
            if not validate_utf8(data):
                raise ValueError("data: bytes sent on a textframes=True handler must be valid UTF-8")
            return OP_TEXT
        raise TypeError(f"data: expected str or bytes, got {type(data).__name__}")

    def _enqueue_frame(self, frame: bytes, payload_size: int) -> int:
        """Queue an already encoded frame (``broadcast``); same codes as send.
        The frame's payload is its last ``payload_size`` bytes."""
        if self._state != OPEN:
            return _E_CLOSED
        if self._buffered() > self._high_water:
            return _E_AGAIN
        limit = self._limits.max_message_size
        if limit is not None and payload_size > limit:
            return _E_SIZE
        if len(frame) < BIG_PAYLOAD:
            self._out += frame
        else:
            self._queue_payload(frame)  # shared by every receiver, never copied
        if not self._batch:
            self._schedule_flush()
        return _OK

    async def send_wait(self, data: str | bytes | bytearray | memoryview) -> int:
        """Like :meth:`send`, but wait for room instead of returning 8.

        Backpressure for async producers: returns once the message is
        queued (0), or 7 if the connection closes, or 17 if too large.
        """
        while True:
            result = self.send(data)
            if result != _E_AGAIN:
                return result
            if self._writing:
                await self._wait_drained()
            else:
                await self._flush()  # write the backlog ourselves, waiting for room

    def close(self, code: int = 1000, reason: str = "") -> int:
        """Start the closing handshake with ``code`` and ``reason``.

        Frames queued before are sent first. Returns 0, or 7 if the
        connection was already closing or closed. ``code`` must be one a
        peer may send (1000-1003, 1007-1014 or 3000-4999, the set wsnest
        accepts from peers too), else ``ValueError``; a ``reason`` longer
        than 123 bytes of UTF-8 is cut at a character boundary.
        """
        payload = close_payload(code, reason)  # validates code and reason
        if self._state != OPEN:
            return _E_CLOSED
        self._begin_close(code, payload)
        return _OK

    # -- writing ---------------------------------------------------------------

    def _begin_close(self, code: int, payload: bytes) -> None:
        self._state = CLOSING
        self._close_code = code
        self._close_deadline = trio.current_time() + self._limits.close_timeout
        append_frame(self._out, OP_CLOSE, payload)
        if not self._batch:
            self._schedule_flush()
        wakeup = self._reader_wakeup
        if wakeup is not None:
            wakeup.set()
        if self._scope is not None:
            self._scope.deadline = self._close_deadline

    def _queue_close_frame(self, payload: bytes) -> None:
        """Append a close frame regardless of state (echo, failures)."""
        append_frame(self._out, OP_CLOSE, payload)

    def _broken(self) -> None:
        super()._broken()
        if self._state != CLOSED:
            self._state = CLOSED
            self._close_code = CLOSE_ABNORMAL
        if self._scope is not None:
            # Found by a drain task or the flusher: wake the reader, which
            # may be waiting for a peer that will never send again.
            self._scope.cancel()

    # -- reading ---------------------------------------------------------------

    async def run(self, tail: bytes) -> None:
        """Serve the connection after the 101; returns when it is over."""
        handler = self._handler
        server = self._server
        server.session_opened(self)
        try:
            self._batch = False
            await self._flush()  # what on_open sent
            # The read loop runs in a cancel scope whose deadline becomes the
            # close deadline once we send a close frame (written out here, not
            # in a helper coroutine: an idle connection is a chain of suspended
            # coroutines, and each level is one more object to keep and scan).
            scope = self._scope = trio.CancelScope(deadline=self._close_deadline)
            if handler.message_is_async:
                self._queue = deque()
                self._bounds = _MessageBounds()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._dispatch_async)
                    try:
                        with scope:
                            await self._read_loop(tail)
                        self._read_loop_ended()
                    finally:
                        self._wake_dispatcher()
            else:
                with scope:
                    await self._read_loop(tail)
                if self._queue is None:
                    self._read_loop_ended()
                else:
                    await self._continue_async(scope)
        finally:
            server.session_closed(self)
            if self._state == OPEN:
                # Cancelled while open: the server is shutting down.
                self._close_code = CLOSE_GOING_AWAY
                self._queue_close_frame(close_payload(CLOSE_GOING_AWAY, "server shutting down"))
            self._state = CLOSED
            # Shielded so that the close frame leaves even when we are
            # cancelled; the server bounds the scope once it shuts down. The
            # connection task then closes the transport and calls finish().
            with server.finalizing(), trio.move_on_after(self._limits.close_timeout):
                await self._final_flush()

    async def finish(self) -> None:
        """Run ``on_close`` once the transport is closed (called by the
        server after :meth:`run`); its errors are logged, never raised."""
        log.debug("websocket %d closed (%d)", self.id, self._close_code)
        await self._handler.call_on_close(self)

    async def _continue_async(self, scope: trio.CancelScope) -> None:
        """``on_message`` returned an awaitable (an ``async def`` under a
        decorator that hides it): serve the rest of this connection the
        async way. The queue has no ``_MessageBounds`` here (they cannot
        join mid-stream), so it is bounded per read, as a fallback."""
        read_on = self._state != CLOSED and not scope.cancelled_caught
        scope = self._scope = trio.CancelScope(deadline=self._close_deadline)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._dispatch_async)
            try:
                if read_on:
                    with scope:
                        await self._read_loop(b"")
                self._read_loop_ended()
            finally:
                self._wake_dispatcher()

    def _read_loop_ended(self) -> None:
        scope = self._scope
        self._scope = None
        if scope is not None and scope.cancelled_caught and self._state == CLOSING:
            log.debug("websocket %d: no close reply within close_timeout", self.id)
        self._state = CLOSED

    async def _read_loop(self, tail: bytes) -> None:
        transport = self._transport
        parser = self._parser
        view = self._server.recv_buffer
        limits = self._limits
        timed = limits.ping_interval is not None
        queue = self._queue
        high_water = limits.send_high_water
        if tail:
            await self._feed(bytearray(tail))
            await self._flush()
        while self._state != CLOSED:
            if timed:
                n = await self._receive_timed(view)
                if n < 0:
                    continue
            else:
                n = await transport.receive_into(view)
            if n == 0:
                self._state = CLOSED  # close_code stays: the peer's, ours, or 1006
                break
            if parser.finished:
                continue  # after a failure: discard until the peer closes
            if n <= _PIECE and queue is None:
                self._batch = True
                self._high_water = high_water + n  # an echo of this read always fits
                try:
                    self._handle(parser.feed(view[:n]))
                finally:
                    self._batch = False
                    self._high_water = high_water
            else:
                await self._feed(view[:n])
            await self._flush()
            if parser.finished and self._state == CLOSING:
                # After a protocol failure the parser reads no more frames,
                # so it cannot see the peer's close reply: send FIN after our
                # close frame and wait for the peer to hang up.
                transport.shutdown_write()
            if self._state != CLOSED and self._writing and self._buffered() > high_water:
                # A slow reader: stop reading (pongs would pile up) until
                # the drain task has caught up.
                await self._wait_drained_here()
            if self._queue is not queue:
                return  # on_message returned an awaitable: run() goes async
            if queue is not None and self._bounds is None and len(queue) >= limits.max_queue:
                await self._wait_for_queue_room()

    async def _feed(self, data: bytearray | bytes | memoryview) -> None:
        """Parse a large read, or any read for an async ``on_message``, in
        pieces of at most ``_PIECE``: while one is parsed, ``send`` accepts
        as many more bytes as it holds (an echo is never refused); the
        output is written between pieces; the task yields once
        ``WORK_BUDGET`` is spent; an async handler's queue is never handed
        more messages than it has room for (the rest waits).

        ``data`` may be the server's shared receive buffer: whatever is left
        of it is copied before any await (another connection reads into it).
        """
        parser = self._parser
        bounds = self._bounds
        high_water = self._limits.send_high_water
        pos, end_of_data = 0, len(data)
        yield_at = trio.current_time() + WORK_BUDGET
        while pos < end_of_data and not parser.finished and self._state != CLOSED:
            end = min(pos + _PIECE, end_of_data)
            queue = self._queue
            if bounds is not None and queue is not None and self._state == OPEN:
                end = pos + bounds.cut(memoryview(data)[pos:end], self._limits.max_queue - len(queue))
                if end == pos:  # the next message waits for room in the queue
                    data, pos, end_of_data = bytes(memoryview(data)[pos:]), 0, end_of_data - pos
                    await self._flush()
                    await self._wait_for_queue_room()
                    continue
            self._batch = True
            self._high_water = high_water + (end - pos)
            try:
                self._handle(parser.feed(memoryview(data)[pos:end]))
            finally:
                self._batch = False
                self._high_water = high_water
            pos = end
            if pos == end_of_data:
                break
            output = bool(self._out or self._parts)
            late = trio.current_time() >= yield_at
            if output or late:
                if not isinstance(data, bytes):
                    data, pos, end_of_data = bytes(memoryview(data)[pos:]), 0, end_of_data - pos
                if output:
                    await self._flush()
                    if self._writing and self._buffered() > high_water:
                        await self._wait_drained_here()
                if late:
                    await trio.lowlevel.checkpoint()
                    yield_at = trio.current_time() + WORK_BUDGET

    # -- keepalive while the reader waits to write ------------------------------

    def _keepalive_deadline(self) -> float:
        """When a reader that cannot read (it waits to write) must give up:
        the pong deadline, or one ping interval plus ping timeout from now."""
        limits = self._limits
        if limits.ping_interval is None:
            return math.inf
        if self._pong_deadline != math.inf:
            return self._pong_deadline
        return trio.current_time() + limits.ping_interval + limits.ping_timeout

    async def _drain_here(self) -> None:
        """A flush that has to wait, bounded by the keepalive deadline (the
        reader is not reading, so no pong could arrive in the meantime)."""
        deadline = self._keepalive_deadline()
        if deadline == math.inf:
            await self._drain()  # no cancel scope (~5 us) without keepalive
            return
        with trio.move_on_at(deadline):
            await self._drain()
            return
        await self._keepalive_expired()

    async def _wait_drained_here(self) -> None:
        """Wait for the drain task, bounded like :meth:`_drain_here`."""
        deadline = self._keepalive_deadline()
        if deadline == math.inf:
            await self._wait_drained()
            return
        with trio.move_on_at(deadline):
            await self._wait_drained()
            return
        await self._keepalive_expired()

    async def _keepalive_expired(self) -> None:
        log.debug("websocket %d: keepalive timed out while the peer was not reading", self.id)
        self._torn = True  # a write may have been cut off mid-frame
        self._broken()
        # An early abort, only to wake a drain task still waiting to write
        # (the connection task closes the transport for good after run()).
        await self._transport.aclose()

    async def _receive_timed(self, view: memoryview) -> int:
        """Receive with the close and keepalive deadlines; -1 on a timeout
        that did not end the connection."""
        limits = self._limits
        assert limits.ping_interval is not None
        now = trio.current_time()
        deadline = now + limits.ping_interval if self._pong_deadline == math.inf else self._pong_deadline
        with trio.move_on_at(deadline):
            n = await self._transport.receive_into(view)
            if n > 0:
                self._pong_deadline = math.inf  # any traffic proves liveness
            return n
        now = trio.current_time()
        if self._pong_deadline != math.inf and now >= self._pong_deadline:
            log.debug("websocket %d: keepalive ping timed out", self.id)
            self._pong_deadline = math.inf
            self._begin_close(CLOSE_INTERNAL_ERROR, close_payload(CLOSE_INTERNAL_ERROR, "keepalive ping timeout"))
        elif self._state == OPEN:
            append_frame(self._out, OP_PING, b"wsnest")
            self._pong_deadline = now + limits.ping_timeout
        await self._flush()
        return -1

    def _handle(self, events: list[tuple[Any, ...]]) -> None:
        """Act on the events of one read (plain callbacks run inline)."""
        handler = self._handler
        on_message = handler.on_message
        queue = self._queue
        for event in events:
            kind = event[0]
            if kind in (OP_TEXT, OP_BINARY):
                if self._state != OPEN:
                    continue
                data = event[1]
                if kind == OP_BINARY and self._mode == MODE_TEXT:
                    try:
                        data = data.decode("utf-8")
                    except UnicodeDecodeError:
                        self._fail(CLOSE_INVALID_DATA, "binary message is not UTF-8 text")
                        continue
                if queue is not None:
                    queue.append(data)
                    self._wake_dispatcher()
                    continue
                try:
                    result = on_message(self, data)
                except Exception:
                    self._callback_failed("on_message")
                else:
                    if result is not None:
                        queue = self._adopt_result(result)
            elif kind == OP_PING:
                if self._state != CLOSED:
                    append_frame(self._out, OP_PONG, event[1])
            elif kind == OP_PONG:
                self._pong_deadline = math.inf
            elif kind == OP_CLOSE:
                code = event[1]
                if self._state == OPEN:
                    # Echo the peer's code (RFC 6455 section 5.5.1).
                    self._close_code = code
                    self._queue_close_frame(b"" if code == CLOSE_NO_STATUS else close_payload(code))
                self._state = CLOSED
            elif kind == FAIL:
                self._fail(event[1], event[2])
            else:  # OP_TEXT_DEFLATED, OP_BINARY_DEFLATED: from a deflate parser only
                self._inflate_event(kind, event[1])

    def _adopt_result(self, result: object) -> deque[str | bytes] | None:
        """A plain ``on_message`` returned ``result``: ignored, unless it is
        awaitable (an ``async def`` under a decorator that hides it). Then
        it is awaited first, and from here on this connection, and every
        later one of the handler, dispatches the async way. Returns the
        queue the rest of the batch goes to."""
        if inspect.isawaitable(result):
            log.debug("websocket %d: on_message returned an awaitable; dispatching async", self.id)
            self._handler.message_is_async = True
            self._handoff = result
            self._queue = deque()
        return self._queue

    def _inflate_event(self, kind: int, payload: bytes) -> None:
        """A compressed message; only :class:`DeflateWebSocket` parses any."""
        self._fail(CLOSE_PROTOCOL_ERROR, "compressed message without permessage-deflate")

    def _fail(self, code: int, reason: str) -> None:
        log.debug("websocket %d: failing with %d (%s)", self.id, code, reason)
        if self._state == OPEN:
            self._begin_close(code, close_payload(code, reason))

    def _callback_failed(self, name: str) -> None:
        log.exception("wsnest: %s callback raised on websocket %d", name, self.id)
        if self._state == OPEN:
            self._begin_close(CLOSE_INTERNAL_ERROR, close_payload(CLOSE_INTERNAL_ERROR))

    # -- async on_message ------------------------------------------------------

    def _wake_dispatcher(self) -> None:
        event = self._queue_wakeup
        if event is not None:
            event.set()

    async def _wait_for_queue_room(self) -> None:
        queue = self._queue
        assert queue is not None
        while len(queue) >= self._limits.max_queue and self._state == OPEN:
            self._reader_wakeup = trio.Event()
            await self._reader_wakeup.wait()
        self._reader_wakeup = None

    async def _dispatch_async(self) -> None:
        queue = self._queue
        assert queue is not None
        on_message: Callable[[WebSocket, Any], object] = self._handler.on_message
        handoff = self._handoff
        if handoff is not None:
            self._handoff = None
            try:
                await handoff
            except Exception:
                self._callback_failed("on_message")
        while True:
            while queue:
                data = queue.popleft()
                wakeup = self._reader_wakeup
                if wakeup is not None:
                    wakeup.set()
                if self._close_code == CLOSE_INTERNAL_ERROR and self._state != OPEN:
                    queue.clear()
                    break
                try:
                    result = on_message(self, data)
                    if result is not None and inspect.isawaitable(result):
                        await result  # else: a wrapped callback ran plainly
                except Exception:
                    self._callback_failed("on_message")
            if self._state == CLOSED and not queue:
                return
            self._queue_wakeup = trio.Event()
            if queue or self._state == CLOSED:
                continue
            await self._queue_wakeup.wait()


class DeflateWebSocket(WebSocket):
    """A connection that negotiated permessage-deflate (RFC 7692).

    Received: the parser hands compressed messages over still compressed;
    they are inflated (bounded by ``max_message_size``), checked and then
    dispatched exactly like the others. Sent: text and binary messages of
    ``MIN_COMPRESS_SIZE`` bytes or more are compressed (RSV1 set), smaller
    ones and control frames go as they are.
    """

    __slots__ = ("_deflater", "_inflater")

    def _start_deflate(self, params: DeflateParams) -> None:
        self._inflater = Inflater(params.client_no_context_takeover)
        self._deflater = Deflater(params.window_bits, params.server_no_context_takeover)

    @property
    def permessage_deflate(self) -> bool:
        """True: permessage-deflate was negotiated on this connection."""
        return True

    def _inflate_event(self, kind: int, payload: bytes) -> None:
        if self._state != OPEN:
            return  # closing: the rest of the peer's messages are dropped unread
        try:
            raw = self._inflater.decompress(payload, self._limits.max_message_size)
        except DeflateError as exc:
            self._fail(exc.code, exc.reason)  # 1009 or 1007, as the parser's failures
            return
        if kind != OP_TEXT_DEFLATED:
            self._handle([(OP_BINARY, raw)])
            return
        # Text is checked as strictly as uncompressed text, then delivered the
        # same way (bytes on a textframes=False handler, else str).
        data: str | bytes = raw
        if self._mode == MODE_BYTES:
            ok = validate_utf8(raw)
        else:
            try:
                data = raw.decode("utf-8")
                ok = True
            except UnicodeDecodeError:
                ok = False
        if not ok:
            self._fail(CLOSE_INVALID_DATA, R_BAD_UTF8)
            return
        self._handle([(OP_TEXT, data)])

    def send(self, data: str | bytes | bytearray | memoryview) -> int:
        """Queue ``data`` as one message, compressed; same contract and
        return codes as :meth:`WebSocket.send` (the size limit applies to
        the uncompressed message)."""
        # Same checks and codes as WebSocket.send; only the framing differs.
        opcode = self._opcode_for(data)
        if self._state != OPEN:
            return _E_CLOSED
        if len(self._out) + self._parts_size + self._inflight > self._high_water:
            return _E_AGAIN
        payload = data.encode("utf-8") if isinstance(data, str) else data
        limit = self._limits.max_message_size
        if limit is not None and memoryview(payload).nbytes > limit:
            return _E_SIZE
        self._queue_message(opcode, payload)
        return _OK

    def _enqueue_frame(self, frame: bytes, payload_size: int) -> int:
        """``broadcast``'s shared frame, compressed again for this connection
        (its compression context is its own)."""
        if self._state != OPEN:
            return _E_CLOSED
        if self._buffered() > self._high_water:
            return _E_AGAIN
        limit = self._limits.max_message_size
        if limit is not None and payload_size > limit:
            return _E_SIZE
        self._queue_message(frame[0] & 0x0F, memoryview(frame)[len(frame) - payload_size :])
        return _OK

    def _queue_message(self, opcode: int, payload: bytes | bytearray | memoryview) -> None:
        """Queue one checked message, compressed unless it is small."""
        view = memoryview(payload)
        if view.nbytes < MIN_COMPRESS_SIZE:
            append_frame(self._out, opcode, payload)
        else:
            compressed = self._deflater.compress(view if view.c_contiguous else view.tobytes())
            self._out += frame_header(opcode, len(compressed), rsv1=True)
            if len(compressed) < BIG_PAYLOAD:
                self._out += compressed
            else:
                self._queue_payload(compressed)
        if not self._batch:
            self._schedule_flush()


class _MessageBounds:
    """Where the client's messages end in its byte stream.

    Used for an async ``on_message`` only: the reader asks how much of a
    read it may hand the parser so that no more messages complete than the
    queue has room for. Only frame headers are read (payloads are skipped
    by length), so the cost is per frame, never per byte. Malformed input
    is the parser's business: whatever is cut here, the parser fails on it.
    """

    __slots__ = ("_ends", "_hdr", "_left")

    def __init__(self) -> None:
        self._hdr = bytearray()  # header bytes of the current frame, while incomplete
        self._left = -1  # payload bytes of the current frame still to come; -1: at a frame boundary
        self._ends = False  # the current frame ends a data message (FIN, opcode < 8)

    def cut(self, data: memoryview, room: int) -> int:
        """How many bytes of ``data`` to feed: up to where ``room`` more data
        messages are complete and the next data frame starts (control frames
        on the way are included, so pings are answered), or all of it."""
        pos, n = 0, len(data)
        while pos < n:
            left = self._left
            if left < 0:  # in a header
                hdr = self._hdr
                if not hdr:
                    b0 = data[pos]
                    if room <= 0 and b0 & 0x0F < 8:
                        return pos  # a data frame with no room for its message
                    if pos + 2 <= n:
                        size = _header_size(data[pos + 1])
                        if pos + size <= n:  # the common case: the whole header is here
                            self._start_frame(b0, data[pos : pos + size])
                            pos += size
                            room = self._frame_done(room)
                            continue
                take = min(n - pos, (_header_size(hdr[1]) if len(hdr) >= 2 else 2) - len(hdr))
                hdr += data[pos : pos + take]
                pos += take
                if len(hdr) >= 2 and len(hdr) == _header_size(hdr[1]):
                    self._start_frame(hdr[0], memoryview(hdr))
                    self._hdr = bytearray()
                    room = self._frame_done(room)
                continue
            take = min(left, n - pos)
            pos += take
            self._left = left - take
            room = self._frame_done(room)
        return n

    def _start_frame(self, b0: int, header: memoryview) -> None:
        len7 = header[1] & 0x7F
        if len7 == 126:
            length = int.from_bytes(header[2:4], "big")
        elif len7 == 127:
            length = int.from_bytes(header[2:10], "big")
        else:
            length = len7
        self._left = length
        self._ends = bool(b0 & 0x80) and b0 & 0x0F < 8

    def _frame_done(self, room: int) -> int:
        """After progress: if the current frame is complete, back to a frame
        boundary, counting the message it ended; returns the room left."""
        if self._left != 0:
            return room
        self._left = -1
        return room - 1 if self._ends else room


def _header_size(b1: int) -> int:
    """A client frame header's size from its second byte (mask included)."""
    len7 = b1 & 0x7F
    return (2 if len7 < 126 else 4 if len7 == 126 else 10) + (4 if b1 & 0x80 else 0)
