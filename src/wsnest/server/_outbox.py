"""Non-blocking, coalescing writes shared by WebSocket and stream connections.

A connection's outgoing bytes accumulate in ``_out``. The connection's own
task writes them after each batch; writes queued from anywhere else mark the
connection dirty and the server's flusher writes it once per scheduler tick.
When the kernel buffer is full, a drain task waits for room, so ``send``
never blocks its caller.

Large payloads are not copied into ``_out``: the bytes written so far move
to ``_parts`` and the payload follows by reference, and the lot leaves in
one vectored write (``sendmsg``). Copying a 1 MiB message into the buffer
(and growing the buffer for it) cost more than unmasking and parsing it.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._contract import ServerContext
    from ._transport import Transport

#: Payloads at least this large are queued by reference, not copied.
BIG_PAYLOAD = 64 * 1024

Chunk = bytes | bytearray | memoryview


class Outbox:
    """Base class: an output buffer with the flush machinery."""

    __slots__ = (
        "__weakref__",
        "_bytes_out",
        "_dirty",
        "_drained",
        "_inflight",
        "_out",
        "_parts",
        "_parts_size",
        "_server",
        "_torn",
        "_transport",
        "_writing",
    )

    def __init__(self, server: ServerContext, transport: Transport) -> None:
        self._server = server
        self._transport = transport
        self._out = bytearray()
        # Written before _out; made on first use (most connections never
        # queue a large payload, and an empty list costs 72 B each).
        self._parts: list[Chunk] | None = None
        self._parts_size = 0
        self._inflight = 0  # bytes handed to a drain task, not yet written
        self._dirty = False
        self._writing = False
        self._drained: trio.Event | None = None
        # A write was cut off mid-way (cancelled): the byte stream is torn,
        # nothing more may follow it (a close frame would be read as payload).
        self._torn = False
        #: Bytes handed to the transport and written (the server's stats).
        self._bytes_out = 0

    def _buffered(self) -> int:
        return len(self._out) + self._parts_size + self._inflight

    def _queue_payload(self, payload: bytes | memoryview) -> None:
        """Queue ``payload`` after what ``_out`` holds, without copying it."""
        out = self._out
        parts = self._parts
        if parts is None:
            parts = self._parts = []
        parts.append(out)
        parts.append(payload)
        self._parts_size += len(out) + len(payload)
        self._out = bytearray()
        self._out_replaced()

    def _take(self) -> list[Chunk]:
        """Everything queued, in order, leaving the outbox empty."""
        chunks = self._parts if self._parts is not None else []
        if self._out:
            chunks.append(self._out)
        self._parts = None
        self._parts_size = 0
        self._out = bytearray()
        self._out_replaced()
        return chunks

    def _out_replaced(self) -> None:
        """``_out`` is a new buffer (the old one left by reference); a
        subclass whose protocol object writes into it points that there."""

    def _broken(self) -> None:
        """The peer is gone: drop what is queued (subclasses record it)."""
        self._out.clear()
        self._parts = None
        self._parts_size = 0

    def _schedule_flush(self) -> None:
        # The server's flusher calls _flush_nowait on every dirty outbox.
        if not self._dirty:
            self._dirty = True
            self._server.mark_dirty(self._flush_nowait)

    def _write_now(self) -> bool:
        """Write what the kernel takes at once; True if nothing is left."""
        out = self._out
        sent = self._transport.try_send(out)
        if sent == len(out):
            self._bytes_out += sent
            out.clear()
            return True
        if sent < 0:
            self._broken()
            return True
        self._bytes_out += sent
        del out[:sent]
        return False

    def _write_vec_now(self, sock: socket.socket) -> bool:
        """Write everything queued (large payloads included) with one
        vectored write, as far as the kernel takes it now (the poller's
        inline path, on a plain socket); the rest stays queued, in order.
        True if nothing is left."""
        chunks = self._take()
        if len(chunks) > 64:  # more than one sendmsg is worth: the task's drain
            self._parts = chunks
            self._parts_size = sum(map(len, chunks))
            return False
        try:
            sent = sock.sendmsg(chunks)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._broken()
            return True
        self._bytes_out += sent
        rest: list[Chunk] = []
        for chunk in chunks:
            if sent >= len(chunk):
                sent -= len(chunk)
            else:
                rest.append(memoryview(chunk)[sent:] if sent else chunk)
                sent = 0
        if not rest:
            return True
        self._parts = rest
        self._parts_size = sum(map(len, rest))
        return False

    def _refuse(self, code: int) -> int:
        """Count a refused ``send`` by its return code (cold path) and return it."""
        observer = self._server.observer
        if observer is not None:
            observer.refused(code)
        return code

    def _flush_nowait(self) -> None:
        """Write what the kernel takes now; hand the rest to a drain task."""
        self._dirty = False
        if self._writing or not (self._out or self._parts):
            return
        if self._parts or not self._write_now():
            self._writing = True
            self._server.spawn(self._drain)

    async def _flush(self) -> None:
        """Write everything queued, waiting for room (the connection's task)."""
        if self._writing or not (self._out or self._parts):
            return
        if self._parts or not self._write_now():
            self._writing = True
            await self._drain_here()

    async def _drain_here(self) -> None:
        """The rest of a ``_flush`` that has to wait (subclasses bound it)."""
        await self._drain()

    async def _drain(self) -> None:
        done = False
        try:
            while self._out or self._parts:
                chunks = self._take()
                self._inflight = sum(map(len, chunks))
                ok = await self._transport.send_all_vec(chunks)
                if ok:
                    self._bytes_out += self._inflight
                self._inflight = 0
                if not ok:
                    # Broken or timed out (send_timeout), maybe mid-frame.
                    self._torn = True
                    self._broken()
                    break
            done = True
        finally:
            if not done:
                self._torn = True
            self._writing = False
            if self._drained is not None:
                self._drained.set()
                self._drained = None

    async def _wait_drained(self) -> None:
        """Wait until the drain task has written everything (or failed)."""
        if self._writing:
            if self._drained is None:  # one event for every waiter
                self._drained = trio.Event()
            await self._drained.wait()

    async def _final_flush(self) -> None:
        """Before closing: wait for a drain task, then write the rest
        (nothing once the byte stream is torn: closing wakes the drain task)."""
        if self._torn:
            return
        await self._wait_drained()
        if (self._out or self._parts) and not self._torn:
            done = False
            chunks = self._take()
            try:
                if await self._transport.send_all_vec(chunks):
                    self._bytes_out += sum(map(len, chunks))
                done = True
            finally:
                self._torn = not done
