"""The ``ws`` object handed to WebSocket callbacks, and its I/O.

The protocol itself (states, close handshake, ping/pong and keepalive
decisions, permessage-deflate, close codes) is the sans-I/O
:class:`~wsnest.core.WebSocketSession`; this module does the I/O around
it: the read loop, writing (through :class:`Outbox`), the deadlines, the
user-facing object and the async dispatcher.

Design notes (why it is shaped like this):

- One trio task per connection reads, hands the bytes to the session and
  lets it call plain callbacks inline: no reader task, queue or task
  switch per message.
- ``send()`` never blocks. During a batch of callbacks (everything parsed
  from one read) frames only accumulate in ``_out``; the session writes the
  whole batch with one ``send`` afterwards. A send from anywhere else
  (another connection's callback, a background task) marks the connection
  dirty; the server's flusher writes every dirty connection once per
  scheduler tick, so a broadcast costs one syscall per receiver.
- ``async def on_message`` runs in a second task fed by a bounded deque, so
  pings and close frames are still handled while the application is slow.
  Where the server has the readiness poller, the reads of such a
  connection are served by it too (the reader task stays parked): one task
  switch per message, the dispatcher's.
  The reader hands the parser no more messages than the deque has room for
  (``MessageBounds`` finds where they end); when it is full, reading goes
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
- ``send_stream`` sends one message as fragments; until it ends, the
  effective high-water mark is lowered far below zero, so ``send`` and
  ``broadcast`` refuse (8) with no check added to their path. The reader
  raises and lowers the mark by relative amounts around a batch, so
  both adjustments hold at once.
- Writes that have to wait are bounded by ``send_timeout`` (in the
  transport); a wait of the reader itself is also bounded by the keepalive
  deadline, so a peer that stops reading is dropped by keepalive too.
- ``on_close`` runs exactly once for every connection that was upgraded,
  whatever ended it.
"""

from __future__ import annotations

import codecs
import inspect
import logging
import math
import socket
import types
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Generator, Iterable, Iterator
from types import CoroutineType
from typing import TYPE_CHECKING, Any

import trio

from .._errors import ConnectionClosedError, ConnectionClosedOK, ErrorCode
from .._limits import Limits
from ..core import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_INVALID_DATA,
    CLOSE_TOO_BIG,
    CORE,
    FAIL,
    OP_BINARY,
    OP_CONT,
    OP_TEXT,
    append_frame,
    close_payload,
    encode_frame,
    validate_utf8,
)
from ..core._bounds import MessageBounds
from ..core._common import utf8_partial_ok
from ..core._deflate import DeflateParams
from ..core._session import (
    CLOSED,
    CLOSING,
    MODE_AUTO,
    MODE_BYTES,
    MODE_TEXT,
    OPEN,
    SERVER,
    SPILL_SIZE,
    new_session,
)
from ..http import Headers, Request
from ._membership import GroupMember
from ._outbox import Outbox
from ._poller import AGAIN, WRITE_LATER
from ._transport import EAGER_BUDGET as _EAGER_BUDGET
from ._transport import EAGER_MIN as _EAGER_MIN
from ._transport import SocketTransport

if TYPE_CHECKING:
    from ._contract import ServerContext
    from ._poller import Poller
    from ._transport import Transport

__all__ = ["MODE_AUTO", "MODE_BYTES", "MODE_TEXT", "WebSocket", "broadcast"]

log = logging.getLogger("wsnest")

_OK = ErrorCode.OK
_E_CLOSED = ErrorCode.CLOSED
_E_AGAIN = ErrorCode.AGAIN
_E_SIZE = ErrorCode.MSG_SIZE

# Close codes of a clean end (1005: the peer's close frame had no code):
# receive() raises ConnectionClosedOK, and ``async for`` just ends.
_CLEAN_CODES = (1000, 1001, 1005)

# The most input handed to the parser at once: a whole read for the
# compiled core, 8 KiB for the pure twin (~50x slower on costly input such
# as 1-byte fragments); and the parsing time after which a read's remaining
# pieces wait for the next scheduler turn.
_PIECE = 1 << 30 if CORE == "compiled" else 8 * 1024
_STEP_READ = 0 if CORE == "compiled" else _PIECE  # recv_into: 0 is the whole buffer
WORK_BUDGET = 0.002

# What send_stream takes; while it sends a message, the connection's
# effective high-water mark is lowered by _STREAMING (send() returns 8) and
# its entry here is set once the message ended. Kept off the connection:
# only a streaming connection pays for it, not every idle one.
_Chunk = str | bytes | bytearray | memoryview
_STREAMING = 1 << 62
_streams: dict[WebSocket, trio.Event] = {}


class _Queue(deque[Any]):
    """The messages of a connection that queues them (async ``on_message``
    or ``receive()``), with the state only such a connection needs."""

    __slots__ = ("bounds", "done", "failure", "handoff", "partial", "ready", "rest", "room", "waiter")

    def __init__(self) -> None:
        super().__init__()
        self.bounds: MessageBounds | None = None  # where messages end (None: bounded per read)
        self.handoff: Awaitable[object] | None = None  # see WebSocket._adopt_result
        self.ready: trio.Event | None = None  # set when a message arrives (receive() waits)
        # The dispatcher of an async on_message, parked until a message
        # arrives (woken directly: no Event per message).
        self.waiter: trio.lowlevel.Task | None = None
        self.room: trio.Event | None = None  # set when a message is taken (the reader waits)
        self.done: trio.Event | None = None  # set when a handler's serve() function has returned
        # Streaming: the pieces at the front belong to a message whose
        # reader stopped half-way (they are skipped).
        self.partial = False
        # Left by a poller step for the reader task: bytes past the last
        # message the queue had room for, and a protocol failure that
        # must wait for the queued messages (see WebSocket.poll_step).
        self.rest: bytes | None = None
        self.failure: tuple[Any, ...] | None = None


class WebSocket(Outbox, GroupMember):
    """One WebSocket connection: what ``handler_ws`` callbacks and
    ``serve`` functions get, and what ``wsnest.connect`` yields.

    Attributes:
        id: integer unique per server across all WebSocket and stream
            connections (from 1, never reused); on a client, unique per
            process.
        subprotocol: the negotiated subprotocol, or ``None``.
    """

    __slots__ = (
        "_batch",
        "_bytes_in",
        "_data",
        "_handler",
        "_heard",
        "_high_water",
        "_limits",
        "_messages_out",
        "_queue",
        "_request",
        "_response_headers",
        "_scope",
        "_session",
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
        role: str = SERVER,
        request: Request | None = None,
        response_headers: Headers | None = None,
        streaming: bool = False,
    ) -> None:
        super().__init__(server, transport)
        self.id = ws_id
        self.subprotocol = subprotocol
        # The upgrade request, packed (a few hundred bytes instead of a few
        # KiB of header objects per idle connection); unpacked on first use.
        self._request: Request | bytes | None = None
        if request is not None:
            self._request = request.snapshot() or request
        self._response_headers = response_headers
        self._data: Any = None
        self._handler = handler
        self._limits = limits
        # send() refuses above this: send_high_water, raised by the size of
        # the input while the reader parses a large read (see _feed).
        self._high_water = limits.send_high_water
        # The server's stats (messages in: the session counts them).
        self._messages_out = 0
        self._bytes_in = 0
        # With keepalive, when a read served by the poller last brought
        # bytes (-inf: none since the parked wait began); None without.
        self._heard: float | None = None if limits.ping_interval is None else -math.inf
        session = self._session = new_session(
            role,
            mode=mode,
            limits=limits,
            clock=trio.current_time,
            owner=self,
            deliver=handler.on_message,
            returned=WebSocket._adopt_result,  # the function: no bound method per connection
            deflate=deflate,
            stream=streaming,
        )
        # The session writes into the outbox's buffer; the 101 goes first,
        # and what on_open sends follows it in one write.
        self._out = session.out
        self._out += head
        self._bytes_out = -len(head)  # the stats count frames, not the 101
        # Until the 101 is written, sends only accumulate (like a batch).
        self._batch = True
        # Messages waiting for an async on_message or receive() (None: they
        # go to a plain on_message inline). Its state rides on it, so a
        # plain connection pays one slot for all of it.
        self._queue: _Queue | None = None
        # Cancel scope around the read loop: its deadline becomes the close
        # deadline once we send a close frame, so a peer that never answers
        # is hung up on, whoever started the close.
        self._scope: trio.CancelScope | None = None
        if handler.pull:
            self._go_async()  # the queue receive() reads, without a dispatcher

    def __repr__(self) -> str:
        state = ("open", "closing", "closed")[self._session.state]
        return f"<WebSocket id={self.id} {state}>"

    # -- public API ------------------------------------------------------------

    @property
    def request(self) -> Request | None:
        """The upgrade request of a server connection (``path``, ``query``,
        ``headers``, ``client``, ...; its ``body`` is ``b""``); ``None`` on
        a client connection."""
        request = self._request
        if type(request) is bytes:
            request = self._request = Request.from_snapshot(request)
        return request  # type: ignore[return-value]  # not bytes any more

    @property
    def response_headers(self) -> Headers | None:
        """The headers of the server's 101 on a client connection;
        ``None`` on a server connection."""
        return self._response_headers

    @property
    def data(self) -> Any:
        """The application's own state for this connection: an empty
        ``dict`` on first use, or whatever was assigned."""
        if self._data is None:
            self._data = {}
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self._data = value

    @property
    def closed(self) -> bool:
        """True once a close frame was sent or received (``send`` returns 7)."""
        return self._session.state != OPEN

    @property
    def close_code(self) -> int:
        """The close code of the connection: the peer's, ours, or 1006 if the
        connection dropped without a close frame (meaningful once closed)."""
        return self._session.close_code

    @property
    def permessage_deflate(self) -> bool:
        """True if permessage-deflate (RFC 7692) was negotiated: messages may
        arrive compressed and ours are sent compressed. Needs
        ``handler_ws(..., permessage_deflate=True)`` and a client offering it."""
        return self._session.deflate

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
        session = self._session
        kind = type(data)
        # The common cases inline (this is the hot path).
        if kind is bytes and session.mode != MODE_TEXT:
            opcode = OP_BINARY
        elif kind is str:
            opcode = OP_BINARY if session.mode == MODE_BYTES else OP_TEXT
        else:
            opcode = self._opcode_for(data)
        # The admission check (closed, over the high-water mark, too big),
        # written out: here each Python call costs ~5 % of a pipelined 64 B
        # message (measured); _send_shared repeats it for broadcast.
        if session.state != OPEN:
            return self._refuse(_E_CLOSED)
        if len(self._out) + self._parts_size + self._inflight > self._high_water:
            return self._refuse(_E_AGAIN)
        limit = self._limits.max_message_size
        if (
            len(data) < SPILL_SIZE
            and (limit is None or len(data) <= limit >> 2)
            and not session.masks
            and not session.compresses
        ):
            # A small message of a server session without compression:
            # framed straight into the buffer (session.send would do just this).
            append_frame(self._out, opcode, data)
        else:
            if not session.fits(data):
                return self._refuse(_E_SIZE)
            rest = session.send(opcode, data)
            if rest is not None:
                self._queue_payload(rest)  # large: written after _out, never copied
        self._messages_out += 1
        if not self._batch:
            self._schedule_flush()
        return _OK

    def _opcode_for(self, data: object) -> int:
        """The opcode ``data`` goes out with; raises as :meth:`send` documents."""
        if type(data) is str:
            return OP_BINARY if self._session.mode == MODE_BYTES else OP_TEXT
        if isinstance(data, (bytes, bytearray, memoryview)):
            if self._session.mode != MODE_TEXT:
                return OP_BINARY
            if not validate_utf8(data):
                raise ValueError("data: bytes sent on a textframes=True handler must be valid UTF-8")
            return OP_TEXT
        raise TypeError(f"data: expected str or bytes, got {type(data).__name__}")

    def _send_shared(self, frame: bytes, payload: memoryview) -> int:
        """Queue a frame encoded once for many receivers (:func:`broadcast`);
        same checks and codes as :meth:`send` (written out again: this runs
        once per receiver)."""
        session = self._session
        if session.state != OPEN:
            return self._refuse(_E_CLOSED)
        if len(self._out) + self._parts_size + self._inflight > self._high_water:
            return self._refuse(_E_AGAIN)
        limit = self._limits.max_message_size
        if limit is not None and payload.nbytes > limit:
            return self._refuse(_E_SIZE)
        if len(frame) < SPILL_SIZE and not session.masks and not session.compresses:
            self._out += frame
        else:
            rest = session.send_frame(frame, payload.nbytes)
            if rest is not None:
                self._queue_payload(rest)  # shared by every receiver, never copied
        self._messages_out += 1
        if not self._batch:
            self._schedule_flush()
        return _OK

    async def receive(self) -> str | bytes:
        """The next message (``str`` or ``bytes`` as ``textframes`` says),
        waiting for it. For connections that pull their messages (a
        client's, or a handler's with a ``serve`` function); raises
        :class:`ConnectionClosedOK` once the connection closed normally
        (1000, 1001, or 1005: a close frame without a code) and every
        message was taken,
        :class:`ConnectionClosedError` if it closed otherwise (1006: it
        dropped). On a ``streaming=True`` connection the pieces are joined."""
        queue = self._queue
        if queue is None or not self._handler.pull:
            self._pull_queue("receive")  # raises
            raise AssertionError  # not reached
        data: str | bytes | tuple[Any, ...]
        if queue and not queue.partial:
            data = queue.popleft()
            if queue.room is not None:
                queue.room.set()  # room in the queue: the reader may go on
        else:
            data = await self._next_first(queue)
        if isinstance(data, tuple):  # a streaming connection: join the pieces
            return await self._assemble(queue, data)
        return data

    def receive_stream(self) -> AsyncIterator[str | bytes]:
        """The next message piece by piece, as it arrives:
        ``async for piece in ws.receive_stream():``. On a connection opened
        with ``streaming=True`` each piece is what one read brought of the
        message (``str`` or ``bytes`` as ``textframes`` says; UTF-8 is
        validated as it comes, a character split between pieces is
        completed in the next one); elsewhere the whole message comes as
        one piece. Stopping half-way skips the rest of that message.
        Raises as :meth:`receive` does when the connection closes, also in
        the middle of a message."""
        return _Pieces(self, self._pull_queue("receive_stream"))

    def _pull_queue(self, name: str) -> _Queue:
        queue = self._queue
        if queue is None or not self._handler.pull:
            raise RuntimeError(f"{name}: this connection delivers its messages to on_message (use serve= to pull them)")
        return queue

    async def _next_item(self, queue: _Queue) -> Any:
        """The next item of the queue, waiting for it; raises once the
        connection is closed and the queue empty."""
        while not queue:
            # Once closed, nothing more is delivered (what came before the
            # close is already queued).
            if self._session.state == CLOSED:
                session = self._session
                error = ConnectionClosedOK if session.close_code in _CLEAN_CODES else ConnectionClosedError
                raise error(session.close_code, session.close_reason)
            queue.ready = trio.Event()
            if queue.room is not None:
                queue.room.set()  # a reader holding back a failure may go on
            await queue.ready.wait()
        data = queue.popleft()
        if queue.room is not None:
            queue.room.set()  # room in the queue: the reader may go on
        return data

    async def _next_first(self, queue: _Queue) -> Any:
        """The first item of the next message, past the rest of one whose
        reader stopped half-way."""
        item = await self._next_item(queue)
        while queue.partial:
            if type(item) is tuple and item[3]:
                queue.partial = False
            item = await self._next_item(queue)
        return item

    async def _assemble(self, queue: _Queue, item: tuple[Any, ...]) -> str | bytes:
        """A whole message from its pieces (streaming connections)."""
        pieces = []
        queue.partial = True  # if cancelled half-way, the rest is skipped
        while True:
            pieces.append(item[2])
            if item[3]:
                break
            item = await self._next_item(queue)  # pieces until the final one
        queue.partial = False
        payload = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        if not self._as_text(item[1]):
            return payload
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise self._not_text() from None

    def _as_text(self, kind: int) -> bool:
        """Whether a message of ``kind`` is handed over as ``str``."""
        mode = self._session.mode
        return mode != MODE_BYTES and (kind == OP_TEXT or mode == MODE_TEXT)

    def _not_text(self) -> ConnectionClosedError:
        """A BINARY message on a ``textframes=True`` connection is not
        UTF-8: fail the connection (1007) and say so."""
        reason = "binary message is not UTF-8 text"
        self._close(CLOSE_INVALID_DATA, close_payload(CLOSE_INVALID_DATA, reason))
        return ConnectionClosedError(CLOSE_INVALID_DATA, reason)

    def __aiter__(self) -> WebSocket:
        return self

    async def __anext__(self) -> str | bytes:
        """``async for msg in ws``: ends on a normal close."""
        try:
            return await self.receive()
        except ConnectionClosedOK:
            raise StopAsyncIteration from None

    async def send_wait(self, data: str | bytes | bytearray | memoryview) -> int:
        """Like :meth:`send`, but wait for room (and for the end of a
        message :meth:`send_stream` is sending) instead of returning 8.

        Backpressure for async producers: returns once the message is
        queued (0), or 7 if the connection closes, or 17 if too large.
        """
        while True:
            result = self.send(data)
            if result != _E_AGAIN:
                return result
            observer = self._server.observer
            if observer is not None:
                observer.refused(_E_AGAIN, -1)  # a wait, not a refusal: take the count back
            stream_ended = _streams.get(self)
            if stream_ended is not None:
                await stream_ended.wait()  # send_stream is sending a message
            elif self._writing:
                await self._wait_drained()
            else:
                await self._flush()  # write the backlog ourselves, waiting for room

    async def send_stream(self, chunks: Iterable[_Chunk] | AsyncIterable[_Chunk]) -> int:
        """Send one message made of ``chunks`` (an iterable or async
        iterable of ``str`` or bytes-like pieces), one fragment per
        non-empty chunk, as the chunks come: for a message produced bit by bit, or too large
        to hold at once.

        The message type follows ``textframes``: with ``None`` the first
        chunk's type decides (``str``: TEXT, bytes: BINARY) and every chunk
        must be of that kind (``TypeError``); with ``True`` it is TEXT and
        bytes chunks must add up to valid UTF-8 (checked as they come; a
        character may be split between chunks; ``ValueError``, also when
        the last chunk ends inside one); with ``False`` it is BINARY
        (``str`` goes as UTF-8). Each non-empty chunk is one frame; an
        empty final frame ends the message once the iteration ends (only
        then is the last chunk known). No chunks: one empty message (BINARY
        with ``textframes=None``). A streamed message is never compressed,
        with permessage-deflate too (RFC 7692 compresses per message).

        Backpressure: before each chunk this waits while more than
        ``send_high_water`` bytes are queued, so at most one chunk more
        waits. Until the message ends no other data message goes to this
        connection: ``send()`` and :func:`broadcast` return 8,
        ``send_wait()`` and another ``send_stream()`` wait for it; pings,
        pongs and the close may go between fragments.

        Returns 0 once the whole message is queued; 7 if the connection is
        or becomes closed (iteration stops; the peer gets no message); 17
        if the chunks add up to more than ``max_message_size``: for the
        first chunk nothing was sent and the connection stays open, as with
        ``send()``; later the fragments sent cannot be taken back, and
        ending the message there would hand the peer a truncated one, so
        the connection is failed with close code 1009. In the same way, if
        the iteration raises (the iterator's own error, ``TypeError``,
        ``ValueError``) or is cancelled once a fragment went out, the
        connection is failed with 1011 and the exception propagates
        (before that, the connection is untouched). An iteration stopped
        early is not closed: the iterator is the caller's.
        """
        if isinstance(chunks, (str, bytes, bytearray, memoryview)):
            raise TypeError(f"chunks: expected an iterable of chunks, got {type(chunks).__name__} (use send())")
        pieces: Iterator[object] = iter(())
        async_pieces: AsyncIterator[object] | None = None
        if isinstance(chunks, AsyncIterable):
            async_pieces = aiter(chunks)
        elif isinstance(chunks, Iterable):
            pieces = iter(chunks)
        else:
            raise TypeError(f"chunks: expected an iterable or async iterable, got {type(chunks).__name__}")
        session = self._session
        while (ended := _streams.get(self)) is not None:
            await ended.wait()  # one streamed message at a time
        if session.state != OPEN:
            return _E_CLOSED
        # From here send() and broadcast return 8: the effective high-water
        # mark is far below zero (the reader raises and lowers it around a
        # batch by the same amount, so both adjustments hold at once).
        _streams[self] = trio.Event()
        self._high_water -= _STREAMING
        message = _Message(session.mode)
        limit = self._limits.max_message_size
        high_water = self._limits.send_high_water
        started = False  # a fragment went out: the message must end, or the connection
        try:
            while session.state == OPEN:
                try:
                    chunk = next(pieces) if async_pieces is None else await async_pieces.__anext__()
                except (StopIteration, StopAsyncIteration):
                    break
                data = message.payload(chunk)
                if not len(data):
                    continue
                message.size += len(data)
                if limit is not None and message.size > limit:
                    if started:
                        self._close(CLOSE_TOO_BIG, close_payload(CLOSE_TOO_BIG, "message over max_message_size"))
                    return _E_SIZE
                while self._buffered() > high_water and session.state == OPEN:
                    if self._writing:
                        await self._wait_drained()
                    else:
                        await self._flush()  # write the backlog ourselves, as send_wait does
                if session.state != OPEN:
                    break
                self._queue_fragment(OP_CONT if started else message.opcode, data, False)
                started = True
                await trio.lowlevel.checkpoint()  # a fast sync iterable must not starve the other tasks
            if session.state != OPEN:
                return _E_CLOSED
            if message.utf8 is not None and message.utf8.pending:
                raise ValueError("chunks: the text ends inside a UTF-8 sequence")
            self._queue_fragment(OP_CONT if started else message.opcode, b"", True)
            started = False  # the message is complete
            self._messages_out += 1
            return _OK
        finally:
            self._high_water += _STREAMING
            _streams.pop(self).set()
            if started and session.state == OPEN:
                # Left mid-message (an exception, a cancellation): the
                # message cannot be ended, so neither can the connection go on.
                self._close(CLOSE_INTERNAL_ERROR, close_payload(CLOSE_INTERNAL_ERROR, "streamed message failed"))

    def _queue_fragment(self, opcode: int, data: bytes | bytearray | memoryview, fin: bool) -> None:
        rest = self._session.send_fragment(opcode, data, fin)
        if rest is not None:
            self._queue_payload(rest)  # large: written after _out, never copied
        if not self._batch:
            self._schedule_flush()

    def close(self, code: int = 1000, reason: str = "") -> int:
        """Start the closing handshake with ``code`` and ``reason``.

        Frames queued before are sent first. Returns 0, or 7 if the
        connection was already closing or closed. ``code`` must be one a
        peer may send (1000-1003, 1007-1014 or 3000-4999, the set wsnest
        accepts from peers too), else ``ValueError``; a ``reason`` longer
        than 123 bytes of UTF-8 is cut at a character boundary.
        """
        payload = close_payload(code, reason)  # validates code and reason
        return _OK if self._close(code, payload) else _E_CLOSED

    # -- reactions to the session ------------------------------------------------

    def _close(self, code: int, payload: bytes) -> bool:
        """Start the close from outside the reader (a callback, another
        task): the reader may be waiting, so wake it and bound its read."""
        if not self._session.close(code, payload):
            return False
        self._closing_started()
        return True

    def _closing_started(self) -> None:
        if not self._batch:
            self._schedule_flush()
        queue = self._queue
        if queue is not None and queue.room is not None:
            queue.room.set()
        self._bound_read()

    def _bound_read(self) -> None:
        """Once we sent a close frame, the read ends at the close deadline
        (a peer that never answers is hung up on, whoever started it)."""
        scope = self._scope
        if scope is not None and self._session.state == CLOSING:
            scope.deadline = self._session.close_deadline

    def _out_replaced(self) -> None:
        self._session.out = self._out

    def _broken(self) -> None:
        super()._broken()
        self._session.abort()
        if self._scope is not None:
            # Found by a drain task or the flusher: wake the reader, which
            # may be waiting for a peer that will never send again.
            self._scope.cancel()

    def _deliver_queued(self, data: str | bytes) -> None:
        """A message, for an async ``on_message`` (queued for the dispatcher)."""
        queue = self._queue
        assert queue is not None
        queue.append(data)
        self._wake_dispatcher()

    def _adopt_result(self, result: object) -> None:  # called as returned(owner, result)
        """A plain ``on_message`` returned ``result``: ignored, unless it is
        awaitable (an ``async def`` under a decorator that hides it). Then
        it is awaited first, and from here on this connection, and every
        later one of the handler, dispatches the async way (the rest of
        the batch goes to the queue)."""
        if inspect.isawaitable(result):
            log.debug("websocket %d: on_message returned an awaitable; dispatching async", self.id)
            self._handler.message_is_async = True
            self._go_async().handoff = result

    def _go_async(self) -> _Queue:
        queue = self._queue = _Queue()
        self._session.deliver = WebSocket._deliver_queued  # called as (owner, data)
        return queue

    def _callback_failed(self, name: str) -> None:
        was_open = self._session.state == OPEN
        self._session.callback_failed(name)  # logs; closes with 1011
        if was_open:
            self._closing_started()

    # -- reading ---------------------------------------------------------------

    async def run(self, tail: bytes) -> None:
        """Serve the connection after the 101; returns when it is over."""
        handler = self._handler
        server = self._server
        session = self._session
        server.session_opened(self)
        try:
            self._batch = False
            await self._flush()  # what on_open sent
            # The read loop runs in a cancel scope whose deadline becomes the
            # close deadline once we send a close frame (written out here, not
            # in a helper coroutine: an idle connection is a chain of suspended
            # coroutines, and each level is one more object to keep and scan).
            scope = self._scope = trio.CancelScope(deadline=session.close_deadline)
            if handler.pull:
                # The application takes messages with receive() (the queue
                # was made in __init__, so receive() may wait before run()).
                assert self._queue is not None
                if not session.parser.stream:
                    # Streaming: no cut at message ends; pieces are bounded
                    # per read (max_queue of them, then reading pauses).
                    self._queue.bounds = MessageBounds()
                if handler.serve is not None:
                    self._queue.done = trio.Event()
                    server.spawn(self._serve_app)
                try:
                    with scope:
                        await self._read_loop(tail)
                    self._read_loop_ended()
                finally:
                    self._wake_dispatcher()
            elif handler.message_is_async:
                self._go_async().bounds = MessageBounds()
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
            # Cancelled while open: the server is shutting down (1001).
            session.going_away()
            self._wake_dispatcher()  # a receive() waiting learns it is over
            # Shielded so that the close frame leaves even when we are
            # cancelled; the server bounds the scope once it shuts down. The
            # connection task then closes the transport and calls finish().
            with server.finalizing(), trio.move_on_after(self._limits.close_timeout):
                await self._final_flush()
            session.detach()

    async def finish(self) -> None:
        """Run ``on_close`` once the transport is closed (called by the
        server after :meth:`run`); its errors are logged, never raised."""
        log.debug("websocket %d closed (%d)", self.id, self._session.close_code)
        observer = self._server.observer
        if observer is not None:
            observer.websocket_ended(self)
        queue = self._queue
        if queue is not None and queue.done is not None:
            await queue.done.wait()  # on_close comes after serve() returned
        await self._handler.call_on_close(self)

    async def _serve_app(self) -> None:
        """Run the handler's ``serve(ws)``: the application owns the
        connection. When it returns, the connection closes with 1000; when
        it raises, with 1011 (logged). It is not cancelled when the
        connection ends (its ``receive()`` raises then), only when the
        server stops."""
        queue = self._queue
        assert queue is not None and queue.done is not None
        try:
            result = self._handler.serve(self)
            if inspect.isawaitable(result):
                await result
        except (ConnectionClosedOK, ConnectionClosedError):
            pass  # receive() found the connection over: an end, not an error
        except Exception:
            self._callback_failed("serve")
        else:
            self.close(1000)  # 7 if it closed already: nothing to do
        finally:
            queue.done.set()

    async def _continue_async(self, scope: trio.CancelScope) -> None:
        """``on_message`` returned an awaitable (an ``async def`` under a
        decorator that hides it): serve the rest of this connection the
        async way. The queue has no ``MessageBounds`` here (they cannot
        join mid-stream), so it is bounded per read, as a fallback."""
        read_on = self._session.state != CLOSED and not scope.cancelled_caught
        scope = self._scope = trio.CancelScope(deadline=self._session.close_deadline)
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
        session = self._session
        if scope is not None and scope.cancelled_caught and session.state == CLOSING:
            log.debug("websocket %d: no close reply within close_timeout", self.id)
        session.connection_lost()

    async def _read_loop(self, tail: bytes) -> None:
        transport = self._transport
        session = self._session
        # The session's receive() written out, one call less per read (hot
        # path); no bound method kept in this frame (memory per idle connection).
        parser = session.parser
        view = self._server.recv_buffer
        limits = self._limits
        timed = limits.ping_interval is not None
        queue = self._queue
        high_water = limits.send_high_water
        if tail:
            self._bytes_in += len(tail)
            await self._feed(bytearray(tail))
            await self._flush()
            if parser.finished and session.state == CLOSING:
                transport.shutdown_write()  # as below: no close reply can be read
        poller = self._server.poller
        if (
            poller is not None
            and (queue is None or queue.bounds is not None)
            and isinstance(transport, SocketTransport)
        ):
            transport.poller = poller  # told before the socket closes
            sock = transport.sock
            fileno = sock.fileno()
        else:
            poller = None
            if isinstance(transport, SocketTransport):
                transport.leave_poller()  # registered while it spoke HTTP
        while session.state != CLOSED:
            if poller is not None:
                # Plain callbacks: the poller serves our reads inline (see
                # poll_step); this task wakes only for what needs it.
                got = await (self._park_timed(poller, sock, fileno) if timed else poller.park(self, sock, fileno))
                if got is None:
                    continue  # a keepalive deadline, handled
                if got == 0:
                    session.connection_lost()
                    break
                if session.state == CLOSING:  # read and handled by the step
                    self._bound_read()
                if queue is not None:
                    if queue.failure is not None:
                        failure, queue.failure = queue.failure, None
                        queue.rest = None  # after a failure nothing more is parsed
                        await self._fail_after_queue(failure)
                    elif queue.rest is not None:
                        rest, queue.rest = queue.rest, None
                        await self._feed(rest)  # waits for room in the queue
            elif (n := await (self._receive_timed(view) if timed else transport.receive_into(view))) < 0:
                continue
            elif n == 0:
                session.connection_lost()  # close_code stays: the peer's, ours, or 1006
                break
            elif parser.finished:
                self._bytes_in += n
                continue  # after a failure: discard until the peer closes
            elif n <= _PIECE and queue is None:
                self._bytes_in += n
                self._batch = True
                self._high_water += n  # an echo of this read always fits (+=: see send_stream)
                try:
                    session.handle(parser.feed(view[:n]))
                finally:
                    self._batch = False
                    self._high_water -= n
                if session.state == CLOSING:
                    self._bound_read()
            else:
                self._bytes_in += n
                await self._feed(view[:n])
            await self._flush()
            if parser.finished and session.state == CLOSING:
                # After a protocol failure the parser reads no more frames,
                # so it cannot see the peer's close reply: send FIN after our
                # close frame and wait for the peer to hang up.
                transport.shutdown_write()
            if session.state != CLOSED and self._writing and self._buffered() > high_water:
                # A slow reader: stop reading (pongs would pile up) until
                # the drain task has caught up.
                await self._wait_drained_here()
            if self._queue is not queue:
                return  # on_message returned an awaitable: run() goes async
            if queue is not None and queue.bounds is None and len(queue) >= limits.max_queue:
                await self._wait_for_queue_room()

    def poll_step(self, sock: socket.socket) -> object:
        """One read of the loop above, done inline by the server's poller
        while this task is parked (plain callbacks, or a queue bounded by
        message: an async ``on_message`` or ``receive()``).

        Returns None to stay parked; or wakes the task with 0 (the peer is
        gone) or -1 (read and handled; the rest needs the task: a write that
        has to wait, a drain task running, the close, ``on_message`` gone
        async, a queue without room for the next message, a protocol
        failure behind queued messages).
        """
        view = self._server.recv_buffer
        session = self._session
        parser = session.parser
        queue = self._queue
        yield_at = 0.0
        while True:
            try:
                # At most a piece (the pure core's 8 KiB): parsed here in
                # place, never copied; the loop below reads on.
                n = sock.recv_into(view, _STEP_READ)
            except BlockingIOError:
                return None
            except OSError:
                return 0
            if n == 0:
                return 0
            if self._heard is not None:
                session.traffic()
                self._heard = trio.current_time()
            self._bytes_in += n
            if not parser.finished:  # else after a failure: discard until the peer closes
                end = n
                if queue is not None and session.state == OPEN:
                    # No more messages than the queue has room for; the
                    # rest is the task's (it waits for room).
                    assert queue.bounds is not None
                    end = queue.bounds.cut(view[:n], self._limits.max_queue - len(queue))
                    if end < n:
                        queue.rest = bytes(view[end:n])
                self._batch = True
                self._high_water += n  # an echo of this read always fits (see _read_loop)
                try:
                    if queue is None:
                        # No name for the events: a large message is freed
                        # once handled, so the core can reuse its buffer.
                        session.handle(parser.feed(view[:n]))
                    else:
                        self._handle_queued(parser.feed(view[:end]))
                finally:
                    self._batch = False
                    self._high_water -= n
                if session.state != OPEN or self._queue is not queue or self._writing:
                    return -1
                if queue is not None and (queue.rest is not None or queue.failure is not None):
                    return -1
                if self._parts is not None:
                    if not self._write_vec_now(sock):
                        return -1
                elif self._out:
                    if n < _EAGER_MIN:
                        return WRITE_LATER  # request/response traffic: the socket is empty
                    if not self._write_now():
                        return -1
            if n < _EAGER_MIN:
                return None  # request/response traffic: the socket is empty
            # A stream of data: read on at once for a while (as the
            # transport does), then let the others run and come back (an
            # edge-triggered socket gives no new edge for what is waiting).
            now = trio.current_time()
            if yield_at == 0.0:
                yield_at = now + _EAGER_BUDGET
            elif now >= yield_at:
                return AGAIN

    def write_step(self, sock: socket.socket) -> object:
        """Write what the last step answered (it returned ``WRITE_LATER``);
        -1 wakes the task for a rest the kernel did not take."""
        if self._writing:
            return None  # a drain task writes it
        if self._parts is not None:  # a large send came meanwhile (a broadcast)
            return None if self._write_vec_now(sock) else -1
        return None if not self._out or self._write_now() else -1

    def _handle_queued(self, events: list[Any]) -> None:
        """Handle what a step parsed for a queue; a protocol failure after
        the messages waits for them (the reader task answers it)."""
        queue = self._queue
        assert queue is not None
        if events and events[-1][0] == FAIL:
            queue.failure = events.pop()
        self._session.handle(events)

    async def _park_timed(self, poller: Poller, sock: socket.socket, fileno: int) -> object:
        """``poller.park`` within the keepalive deadline: on silence the
        session decides (a ping, or the close) and this returns None. The
        deadline counts from the last bytes read, as ``_receive_timed``."""
        session = self._session
        interval = self._limits.ping_interval
        assert interval is not None
        deadline = session.receive_deadline()
        while True:
            self._heard = -math.inf
            with trio.move_on_at(deadline):
                return await poller.park(self, sock, fileno)
            heard = self._heard
            if heard != -math.inf and session.pong_deadline == math.inf:
                deadline = heard + interval  # bytes came meanwhile: not silent yet
                continue
            session.timer()
            self._bound_read()
            await self._flush()
            return None

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
        session = self._session
        bounds = None if self._queue is None else self._queue.bounds
        high_water = self._limits.send_high_water
        pos, end_of_data = 0, len(data)
        yield_at = trio.current_time() + WORK_BUDGET
        parser = session.parser
        while pos < end_of_data and not parser.finished and session.state != CLOSED:
            end = min(pos + _PIECE, end_of_data)
            queue = self._queue
            if bounds is not None and queue is not None and session.state == OPEN:
                end = pos + bounds.cut(memoryview(data)[pos:end], self._limits.max_queue - len(queue))
                if end == pos:  # the next message waits for room in the queue
                    data, pos, end_of_data = bytes(memoryview(data)[pos:]), 0, end_of_data - pos
                    await self._flush()
                    await self._wait_for_queue_room()
                    continue
            self._batch = True
            self._high_water += end - pos  # +=: see send_stream
            failure = None
            try:
                events = parser.feed(memoryview(data)[pos:end])
                if queue is not None and events and events[-1][0] == FAIL:
                    failure = events.pop()
                session.handle(events)
            finally:
                self._batch = False
                self._high_water -= end - pos
            if failure is not None:
                await self._fail_after_queue(failure)
            self._bound_read()
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

    async def _drain_here(self) -> None:
        """A flush that has to wait, bounded by the keepalive deadline (the
        reader is not reading, so no pong could arrive in the meantime)."""
        await self._keepalive_bounded(self._drain)

    async def _wait_drained_here(self) -> None:
        """Wait for the drain task, bounded like :meth:`_drain_here`."""
        await self._keepalive_bounded(self._wait_drained)

    async def _keepalive_bounded(self, wait: Callable[[], Awaitable[None]]) -> None:
        deadline = self._session.write_deadline()
        if deadline == math.inf:
            await wait()  # no cancel scope (~5 us) without keepalive
            return
        with trio.move_on_at(deadline):
            await wait()
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
        """Receive until the session's keepalive deadline; -1 on a timeout
        (the session then decided: a ping, or the close)."""
        session = self._session
        with trio.move_on_at(session.receive_deadline()):
            n = await self._transport.receive_into(view)
            if n > 0:
                session.traffic()  # any traffic proves liveness
            return n
        session.timer()
        self._bound_read()
        await self._flush()
        return -1

    async def _fail_after_queue(self, failure: tuple[Any, ...]) -> None:
        """The peer broke the protocol after messages that are still
        queued: let the application take and answer them (until it waits
        for more) before our close frame goes out, as an inline
        ``on_message`` would have; at most ``close_timeout``, then fail the
        connection anyway. An ``async def on_message`` still busy with the
        last message it took (the queue is empty, its dispatcher is not
        waiting) is let finish too: with the poller, the dispatcher may
        have taken every message before this task runs."""
        queue = self._queue
        assert queue is not None
        session = self._session
        dispatching = not self._handler.pull and queue.waiter is None
        if (queue or dispatching) and session.state == OPEN:
            await self._flush()
            with trio.move_on_after(self._limits.close_timeout):
                # Until the consumer waits for more with an empty queue: it
                # has answered the last message (it sets ``room`` as it waits).
                while (queue or not self._consumer_waits(queue)) and session.state == OPEN:
                    queue.room = trio.Event()
                    await queue.room.wait()
            queue.room = None
        session.handle([failure])

    # -- async on_message ------------------------------------------------------

    @staticmethod
    def _consumer_waits(queue: _Queue) -> bool:
        """Whether the queue's consumer waits for the next message."""
        if queue.waiter is not None:
            return True
        return queue.ready is not None and not queue.ready.is_set()

    def _wake_dispatcher(self) -> None:
        queue = self._queue
        if queue is not None:
            task = queue.waiter
            if task is not None:
                queue.waiter = None
                trio.lowlevel.reschedule(task)
            elif queue.ready is not None:
                queue.ready.set()

    async def _wait_for_queue_room(self) -> None:
        queue = self._queue
        assert queue is not None
        session = self._session
        while len(queue) >= self._limits.max_queue and session.state == OPEN:
            queue.room = trio.Event()
            await queue.room.wait()
        queue.room = None

    @types.coroutine
    def _batched(self, inner: Any, trap: object) -> Generator[Any, Any, None]:
        """The rest of an async ``on_message`` whose coroutine ``inner``
        suspended with ``trap``: awaited in this task, each trap passed to
        trio as is. Before each suspension what it queued is written (as the
        flusher would, but now); while it runs its sends are batched."""
        while True:
            self._batch = False
            if self._out or self._parts:
                self._flush_nowait()
            error: BaseException | None = None
            try:
                value = yield trap
            except GeneratorExit:
                inner.close()
                raise
            except BaseException as exc:  # Cancelled, KeyboardInterrupt: the awaitable's to handle
                error = exc
            finally:
                self._batch = True
            try:
                trap = inner.send(value) if error is None else inner.throw(error)
            except StopIteration:
                return
            finally:
                error = None  # no cycle through a traceback

    async def _dispatch_async(self) -> None:
        queue = self._queue
        assert queue is not None
        session = self._session
        on_message: Callable[[WebSocket, Any], object] = self._handler.on_message
        me = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:  # cancelled while parked
            queue.waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        handoff = queue.handoff
        if handoff is not None:
            queue.handoff = None
            try:
                await handoff
            except Exception:
                self._callback_failed("on_message")
        while True:
            # What the callbacks send is written here, in one write, when the
            # queue is empty or a callback suspends (see _batched): not by
            # the server's flusher, a scheduler pass later.
            self._batch = True
            try:
                while queue:
                    data = queue.popleft()
                    if queue.room is not None:
                        queue.room.set()
                    if session.close_code == CLOSE_INTERNAL_ERROR and session.state != OPEN:
                        queue.clear()
                        break
                    try:
                        result = on_message(self, data)
                        if result is not None and (type(result) is CoroutineType or inspect.isawaitable(result)):
                            # Its first step here: an echo that does not
                            # wait ends in it, with no generator around it.
                            if type(result) is not CoroutineType:
                                result = _awaited(result)  # any awaitable, as a coroutine (send, throw)
                            try:
                                trap = result.send(None)
                            except StopIteration:
                                pass
                            else:
                                await self._batched(result, trap)
                        # else: a wrapped callback ran plainly
                    except Exception:
                        self._callback_failed("on_message")
            finally:
                self._batch = False
                if self._out or self._parts:
                    self._flush_nowait()
            if session.state == CLOSED:
                if not queue:
                    return
                continue
            if queue.room is not None:
                queue.room.set()  # a reader holding back a failure may go on
            if queue:
                continue
            queue.waiter = me
            await trio.lowlevel.wait_task_rescheduled(abort)


async def _awaited(awaitable: Awaitable[object]) -> None:
    """``awaitable`` (an object with ``__await__``, a generator-based
    coroutine) as a coroutine, for :meth:`WebSocket._batched`."""
    await awaitable


class _Pieces:
    """The async iterator :meth:`WebSocket.receive_stream` returns."""

    __slots__ = ("_decoder", "_ended", "_queue", "_started", "_ws")

    def __init__(self, ws: WebSocket, queue: _Queue) -> None:
        self._ws = ws
        self._queue = queue
        self._started = False
        self._ended = False
        self._decoder: codecs.IncrementalDecoder | None = None

    def __aiter__(self) -> _Pieces:
        return self

    async def __anext__(self) -> str | bytes:
        ws, queue = self._ws, self._queue
        while not self._ended:
            if self._started:
                item = await ws._next_item(queue)
            else:
                item = await ws._next_first(queue)
            if type(item) is not tuple:  # not a streaming connection: the whole message
                self._started = self._ended = True
                return item  # type: ignore[no-any-return]
            _, kind, piece, final = item
            queue.partial = not final
            self._ended = final
            if ws._as_text(kind):
                decoder = self._decoder
                if decoder is None:
                    decoder = self._decoder = _UTF8()
                try:
                    piece = decoder.decode(piece, final)
                except UnicodeDecodeError:
                    raise ws._not_text() from None
            # Empty pieces (an empty last frame, the first byte of a
            # character) are not handed over, unless the message is empty.
            if piece or not self._started:
                self._started = True
                return piece  # type: ignore[no-any-return]
        raise StopAsyncIteration


_UTF8 = codecs.getincrementaldecoder("utf-8")


def broadcast(connections: Iterable[WebSocket], data: str | bytes | bytearray | memoryview) -> int:
    """Queue ``data`` to every connection; return how many accepted it.

    Server frames are not masked, so each frame type is encoded once and
    the same bytes are queued to every receiver; a receiver with
    permessage-deflate compresses the payload again with its own context.
    The frame type follows each connection's ``textframes`` mode exactly
    as ``ws.send`` does. Connections that are closed, over their send
    high-water mark, or whose message limit is smaller than ``data`` are
    skipped (not counted).
    """
    is_str, payload = message_payload(data)
    return fan_out(connections, is_str, payload, strict=True)


def message_payload(data: object) -> tuple[bool, bytes]:
    """``(is_str, payload)`` of a message sent to many (``broadcast``, a
    group): a ``str``'s UTF-8 or a copy of the bytes-like (the caller may
    reuse its buffer); ``TypeError`` naming ``data`` for anything else."""
    if isinstance(data, str):
        return True, data.encode("utf-8")
    if isinstance(data, (bytes, bytearray, memoryview)):
        return False, bytes(data)
    raise TypeError(f"data: expected str or bytes, got {type(data).__name__}")


def fan_out(connections: Iterable[WebSocket], is_str: bool, payload: bytes, strict: bool = False) -> int:
    """Queue one message to every connection, each frame type encoded once
    (``payload``: a ``str``'s UTF-8 bytes when ``is_str``); return how many
    accepted it. Bytes that are not valid UTF-8 cannot go to a
    ``textframes=True`` connection: ``strict`` raises ``ValueError``
    (``broadcast``), otherwise such receivers are skipped (groups)."""
    view = memoryview(payload)
    frames: dict[int, bytes] = {}
    utf8_ok: bool | None = None
    count = 0
    for ws in connections:
        mode = ws._session.mode
        if is_str:
            opcode = OP_BINARY if mode == MODE_BYTES else OP_TEXT
        elif mode == MODE_TEXT:
            if utf8_ok is None:
                utf8_ok = validate_utf8(payload)
            if not utf8_ok:
                if strict:
                    raise ValueError("data: bytes broadcast to a textframes=True handler must be valid UTF-8")
                continue
            opcode = OP_TEXT
        else:
            opcode = OP_BINARY
        frame = frames.get(opcode)
        if frame is None:
            frame = frames[opcode] = encode_frame(opcode, payload)
        if ws._send_shared(frame, view) == 0:
            count += 1
    return count


# -- send_stream's checks ----------------------------------------------------------


class _Message:
    """The type, size and UTF-8 state of a message that
    :meth:`WebSocket.send_stream` sends in pieces."""

    __slots__ = ("is_str", "mode", "opcode", "size", "utf8")

    def __init__(self, mode: int) -> None:
        self.mode = mode
        # No chunks: TEXT only if textframes=True says so.
        self.opcode = OP_TEXT if mode == MODE_TEXT else OP_BINARY
        self.is_str: bool | None = None  # the first chunk's kind, once seen
        self.size = 0
        self.utf8: _Utf8Pieces | None = None  # bytes of a TEXT message are checked

    def payload(self, chunk: object) -> bytes | bytearray | memoryview:
        """``chunk`` as the bytes to send; raises as ``send_stream`` says."""
        if isinstance(chunk, str):
            is_str = True
        elif isinstance(chunk, (bytes, bytearray, memoryview)):
            is_str = False
        else:
            raise TypeError(f"chunks: expected str or bytes-like chunks, got {type(chunk).__name__}")
        if self.is_str is None:
            self.is_str = is_str
            if self.mode == MODE_AUTO:
                self.opcode = OP_TEXT if is_str else OP_BINARY
        elif is_str != self.is_str and self.mode == MODE_AUTO:
            raise TypeError(
                "chunks: with textframes=None the chunks must be all str or all bytes-like"
                f" (the first decided), got {type(chunk).__name__}"
            )
        if isinstance(chunk, str):
            if self.utf8 is not None and self.utf8.pending:
                raise ValueError("chunks: a str chunk follows bytes that end inside a UTF-8 sequence")
            return chunk.encode("utf-8")
        data: bytes | bytearray | memoryview = chunk
        if type(data) is memoryview and not (data.c_contiguous and data.ndim == 1 and data.format == "B"):
            data = data.tobytes()  # count and write bytes, not items
        if self.mode == MODE_TEXT:
            if self.utf8 is None:
                self.utf8 = _Utf8Pieces()
            if not self.utf8.feed(memoryview(data)):
                raise ValueError("chunks: bytes sent as TEXT (textframes=True) must be valid UTF-8")
        return data


def _sequence_length(lead: int) -> int:
    """The length of the UTF-8 sequence ``lead`` starts (1 if it is not a
    lead byte: the validator then rejects it)."""
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 1


class _Utf8Pieces:
    """UTF-8 validation of text arriving in pieces: a character may be
    split between two pieces. Each piece is checked whole by the core's
    validator, except an unfinished sequence at its end, which waits for
    the next piece (and is rejected at once if it can never be valid)."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending = b""  # the start of a sequence the last piece cut (at most 3 bytes)

    def feed(self, view: memoryview) -> bool:
        """Check one more piece; False if the text is not valid UTF-8."""
        pending = self.pending
        if pending:
            need = _sequence_length(pending[0]) - len(pending)
            head = pending + view[:need]
            if len(view) < need:  # still unfinished
                self.pending = head
                return utf8_partial_ok(head)
            if not validate_utf8(head):
                return False
            view = view[need:]
        n = len(view)
        cut = n
        for i in range(n - 1, max(n - 4, -1), -1):  # an unfinished sequence starts in the last 3 bytes
            if view[i] & 0xC0 != 0x80:  # a lead byte (or ASCII)
                if _sequence_length(view[i]) > n - i:
                    cut = i
                break
        self.pending = bytes(view[cut:])
        return validate_utf8(view[:cut]) and utf8_partial_ok(self.pending)
