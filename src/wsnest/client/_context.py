"""What a client connection's ``WebSocket`` uses of its surroundings.

A server's connections share the server (``ServerContext``): ids, the
receive buffer, the flusher that writes sends made outside a read batch,
shutdown. A client connection has no server; :class:`ClientContext` gives
it the same interface, owned by the ``connect()`` block.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import trio

from .._limits import Limits

if TYPE_CHECKING:
    from .._errors import HTTPError
    from ..server import Closable, Handler, Transport
    from ..server._contract import Endable

log = logging.getLogger("wsnest")

# One counter for every client connection of the process: ids never repeat.
_ids = itertools.count(1)

#: Bytes read at most per receive (as the server's buffer).
RECV_BUFFER_SIZE = 256 * 1024


class ClientContext:
    """The ``ServerContext`` of one client connection."""

    def __init__(self, limits: Limits, nursery: trio.Nursery) -> None:
        self._limits = limits
        self._nursery = nursery
        self.recv_buffer = memoryview(bytearray(RECV_BUFFER_SIZE))
        self._dirty: list[Callable[[], None]] = []
        self._wakeup = trio.Event()
        self.closing = False
        #: No server counters on a client.
        self.observer = None
        #: No readiness poller: a client connection waits in its own task.
        self.poller = None

    @property
    def limits(self) -> Limits:
        """The connection's limits."""
        return self._limits

    def next_id(self) -> int:
        """An id unique among the process's client connections."""
        return next(_ids)

    def stats(self, all_workers: bool = False) -> dict[str, Any]:
        """A client has no server numbers."""
        return {}

    def limits_for(self, handler: Handler) -> Limits:
        """The connection's limits (a client has no per-handler ones)."""
        return self._limits

    async def send_error(self, transport: Transport, exc: HTTPError, head_only: bool = False) -> None:
        """Never used by a client connection (it sends no HTTP responses)."""
        raise RuntimeError("a client connection sends no HTTP error responses")

    @contextlib.contextmanager
    def finalizing(self) -> Iterator[trio.CancelScope]:
        """A shielded scope for the connection's last words (the close frame),
        bounded by ``close_timeout`` once the ``connect()`` block is leaving."""
        with trio.CancelScope(shield=True) as scope:
            if self.closing:
                scope.deadline = trio.current_time() + self._limits.close_timeout
            yield scope

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in the connection's nursery; an error is logged."""
        self._nursery.start_soon(_guarded, fn, *args)

    def mark_dirty(self, flush: Callable[[], None]) -> None:
        """Call ``flush()`` on the flusher's next turn."""
        self._dirty.append(flush)
        self._wakeup.set()

    def session_opened(self, session: Closable) -> None:
        """Nothing to track: the ``connect()`` block closes its connection."""

    def session_closed(self, session: Closable) -> None:
        """Nothing to track."""

    def stream_opened(self, stream: Endable) -> None:
        """A client runs no streams."""

    def stream_closed(self, stream: Endable) -> None:
        """A client runs no streams."""

    async def flusher(self) -> None:
        """Write what was sent outside a read batch, once per scheduler
        turn (sends made together leave together)."""
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            dirty, self._dirty = self._dirty, []
            for flush in dirty:
                flush()


async def _guarded(fn: Callable[..., Awaitable[Any]], *args: object) -> None:
    try:
        await fn(*args)
    except Exception:
        log.exception("wsnest: background task %s failed", getattr(fn, "__qualname__", fn))
