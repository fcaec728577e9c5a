"""Non-blocking, coalescing writes shared by WebSocket and stream connections.

A connection's outgoing bytes accumulate in ``_out``. The connection's own
task writes them after each batch; writes queued from anywhere else mark the
connection dirty and the server's flusher writes it once per scheduler tick.
When the kernel buffer is full, a drain task waits for room, so ``send``
never blocks its caller.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from ._server import HttpServer
    from ._transport import Transport


class Outbox:
    """Base class: an output buffer with the flush machinery."""

    __slots__ = ("__weakref__", "_dirty", "_drained", "_inflight", "_out", "_server", "_transport", "_writing")

    def __init__(self, server: HttpServer, transport: Transport) -> None:
        self._server = server
        self._transport = transport
        self._out = bytearray()
        self._inflight = 0  # bytes handed to a drain task, not yet written
        self._dirty = False
        self._writing = False
        self._drained: trio.Event | None = None

    def _buffered(self) -> int:
        return len(self._out) + self._inflight

    def _broken(self) -> None:
        """The peer is gone: drop what is queued (subclasses record it)."""
        self._out.clear()

    def _schedule_flush(self) -> None:
        # The server's flusher calls _flush_nowait on every dirty outbox.
        if not self._dirty:
            self._dirty = True
            self._server._mark_dirty(self)

    def _flush_nowait(self) -> None:
        """Write what the kernel takes now; hand the rest to a drain task."""
        self._dirty = False
        out = self._out
        if self._writing or not out:
            return
        sent = self._transport.try_send(out)
        if sent == len(out):
            out.clear()
        elif sent < 0:
            self._broken()
        else:
            del out[:sent]
            self._writing = True
            self._server._spawn(self._drain)

    async def _drain(self) -> None:
        try:
            while self._out:
                data = self._out
                self._out = bytearray()
                self._inflight = len(data)
                ok = await self._transport.send_all(data)
                self._inflight = 0
                if not ok:
                    self._broken()
                    return
        finally:
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

    async def _flush(self) -> None:
        """Write everything queued, waiting for room (the connection's task)."""
        out = self._out
        if self._writing or not out:
            return
        sent = self._transport.try_send(out)
        if sent == len(out):
            out.clear()
        elif sent < 0:
            self._broken()
        else:
            del out[:sent]
            self._writing = True
            await self._drain()

    async def _final_flush(self) -> None:
        """Before closing: wait for a drain task, then write the rest."""
        await self._wait_drained()
        if self._out:
            await self._transport.send_all(self._out)
            self._out.clear()
