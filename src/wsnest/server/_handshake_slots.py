"""A bounded number of TLS handshakes in progress, that stalled ones cannot
monopolise.

Each handshake in progress holds an SSL object and up to a ClientHello's
worth of buffers, so their number is capped. A plain semaphore would let an
attacker who holds every slot with ClientHellos cut one byte short lock out
every new client for ``handshake_timeout``. So when a client is waiting for
a slot and the oldest handshake in progress has run for ``evict_after``
seconds (far longer than a real handshake takes), that one is cancelled and
its slot handed over: the attacker must keep opening connections to keep
the slots, and real clients get through.
"""

from __future__ import annotations

import math
from collections import deque

import trio


class HandshakeSlots:
    """At most ``limit`` handshakes at once; waiters are served in arrival
    order, and may evict the oldest handshake once it is ``evict_after`` old."""

    __slots__ = ("_evict_after", "_limit", "_running", "_waiters")

    def __init__(self, limit: int, evict_after: float) -> None:
        self._limit = limit
        self._evict_after = evict_after
        # Handshakes in progress, oldest first: cancel scope -> start time.
        self._running: dict[trio.CancelScope, float] = {}
        self._waiters: deque[trio.Event] = deque()

    @property
    def free(self) -> int:
        """Slots not taken."""
        return self._limit - len(self._running)

    @property
    def waiting(self) -> int:
        """Clients waiting for a slot."""
        return len(self._waiters)

    async def acquire(self, scope: trio.CancelScope) -> None:
        """Take a slot for the handshake running in ``scope`` (cancelled if
        it is evicted later). While every slot is taken, wait in arrival
        order; the first in line evicts the oldest handshake once it is
        ``evict_after`` old."""
        running, waiters = self._running, self._waiters
        event: trio.Event | None = None
        try:
            while len(running) >= self._limit or (waiters and waiters[0] is not event):
                if event is None:
                    event = trio.Event()
                    waiters.append(event)
                first = waiters[0] is event
                if first and self._evict_oldest():
                    break
                if event.is_set():  # an Event cannot be cleared: a fresh one in its place
                    fresh = trio.Event()
                    waiters[waiters.index(event)] = fresh
                    event = fresh
                deadline = math.inf
                if first and running:
                    deadline = next(iter(running.values())) + self._evict_after
                with trio.move_on_at(deadline):
                    await event.wait()
        finally:
            if event is not None:
                waiters.remove(event)
                self._wake_next()
        running[scope] = trio.current_time()

    def release(self, scope: trio.CancelScope) -> None:
        """Give the slot of ``scope`` back (whether it finished or was evicted)."""
        if self._running.pop(scope, None) is not None:
            self._wake_next()

    def _evict_oldest(self) -> bool:
        """With every slot taken, cancel the oldest handshake if it is old
        enough, freeing its slot; True if it did."""
        running = self._running
        if len(running) < self._limit:
            return False
        scope, started = next(iter(running.items()))
        if trio.current_time() - started < self._evict_after:
            return False
        del running[scope]
        scope.cancel()
        return True

    def _wake_next(self) -> None:
        if self._waiters:
            self._waiters[0].set()
