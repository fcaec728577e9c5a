"""The readiness poller: one task that serves ready connections inline.

Every ``await`` on a socket costs trio an ``epoll_ctl`` to re-arm it and a
pass through the scheduler to wake the waiting task. For request/response
traffic that is most of the server's time, so on Linux a connection whose
next read needs no async work *parks* its task here instead:

- its socket is registered once, edge-triggered, in the poller's own epoll
  set (registration persists until the socket closes: no re-arm per read);
- the poller task waits on that epoll set through trio, and for each ready
  socket calls its owner's ``poll_step()`` synchronously: read, parse, run
  plain callbacks, write the answer. The parked task is not woken. Small
  answers are written once every ready socket of the round was read
  (``WRITE_LATER``), back to back: a write between two reads wakes a
  client that then competes with the server for the CPUs (measured with
  wrk at 50 connections on a 2-CPU VM: a JSON response took 19-21 us of
  server time per request written at once, 16 us written at round end);
- when a step needs the task (a write that has to wait, an ``async``
  callback gone async, a close, a large read for HTTP), it returns a
  value and the poller wakes the task with it; the task does that part
  itself and parks again. (For an ``async def on_message`` the step only
  queues the messages; the connection's dispatcher task runs the
  coroutines.)

The task model is unchanged: each connection is still owned by its task in
the server's nursery. A parked task is cancellable like any other (its
abort leaves the poller), and an exception raised by a step (an error
outside the callbacks, ``KeyboardInterrupt``) is raised in the owner's task,
where the task model would have raised it.

Work per wake-up is bounded (at most ``_MAX_EVENTS`` sockets; a socket
streaming data is read for at most ``EAGER_BUDGET``, 2 ms, then served
again in the next round, after the other tasks had a turn), so one client
flooding data cannot starve the others.

A lone connection (no socket registered here) gains nothing from the
poller, which would only add an ``epoll_wait`` per read: it waits in its
own task and runs the same step there, until others come.

Elsewhere (and with ``WSNEST_NO_POLLER=1``) there is no poller and every
connection waits in its own task, the portable path.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
from typing import Any, Protocol

import outcome
import trio

#: The most sockets served per wake-up of the poller task.
_MAX_EVENTS = 128

#: The peer hung up (or reset): reported with the last edge, never again.
_HANGUP = select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR if hasattr(select, "epoll") else 0

#: What a step returns to stay parked but be served again next round
#: (it stopped with bytes still waiting: an edge-triggered socket gives no
#: new edge for them).
AGAIN = object()

#: What a step returns when it answered and only the write is left: the
#: poller calls the owner's ``write_step()`` once every ready socket of the
#: round was read (see the module docstring for why).
WRITE_LATER = object()


class Parkable(Protocol):
    """What the poller needs of a connection that parks."""

    def poll_step(self, sock: socket.socket) -> object:
        """``sock`` is readable: do one read's work synchronously. Return
        None to stay parked, ``AGAIN`` to stay parked and be served again
        next round, ``WRITE_LATER`` to have ``write_step`` called at the end
        of the round, anything else to wake the task with it."""

    def write_step(self, sock: socket.socket) -> object:
        """Write what the last step left (it returned ``WRITE_LATER``);
        returns as ``poll_step`` (never ``WRITE_LATER``)."""


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def poller_enabled() -> bool:
    """Whether this platform has the poller and it was not switched off
    (``WSNEST_NO_POLLER=1`` forces the portable path)."""
    return hasattr(select, "epoll") and not _flag("WSNEST_NO_POLLER")


class _Slot:
    """A registered socket: its current owner and the task parked on it."""

    __slots__ = ("hangup", "missed", "owner", "sock", "task")

    def __init__(self, owner: Parkable, sock: socket.socket) -> None:
        self.owner = owner
        self.sock = sock
        self.task: trio.lowlevel.Task | None = None
        # An edge arrived while the task was not parked: the next park
        # steps once before sleeping (edge-triggered: no second event).
        self.missed = False
        # The peer hung up: its last bytes and the end came in one edge,
        # so the socket is served again until a step reads the end (a
        # step that stops after a short read would otherwise miss it).
        self.hangup = False


class Poller:
    """One per server (see the module docstring)."""

    def __init__(self) -> None:
        self._epoll = select.epoll()
        self._slots: dict[int, _Slot] = {}
        # Slots whose last read filled the buffer: served again next round.
        self._again: list[_Slot] = []
        # Slots whose step left its answer to write at the end of the round.
        self._writes: list[_Slot] = []
        self._closed = False
        # Wakes the poller task when work is queued while it sleeps.
        self._kick_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._kick_fd, select.EPOLLIN)
        self._sleeping = False
        self._kicked = False
        self._lone = 0  # connections waiting in their own task (see park)
        # WSNEST_POLLER_ALWAYS=1: even a lone connection parks here (tests
        # run the whole suite so, to cover the parked path everywhere).
        self._always = _flag("WSNEST_POLLER_ALWAYS")
        #: Reads served inline, and wake-ups of a parked task (stats).
        self.steps = 0
        self.wakeups = 0

    def close(self) -> None:
        """Release the epoll set (the server stopped)."""
        self._closed = True
        self._epoll.close()
        os.close(self._kick_fd)
        self._slots.clear()

    async def run(self) -> None:
        """The poller task (runs in the server's nursery until cancelled)."""
        epoll = self._epoll
        fd = epoll.fileno()
        slots = self._slots
        serve = self._serve
        kick_fd = self._kick_fd
        while True:
            if self._again:
                await trio.lowlevel.checkpoint()
            else:
                self._sleeping = True
                try:
                    await trio.lowlevel.wait_readable(fd)
                finally:
                    self._sleeping = False
            again, self._again = self._again, []
            for ready, mask in epoll.poll(0, _MAX_EVENTS):
                slot = slots.get(ready)
                if slot is not None:
                    if mask & _HANGUP:
                        slot.hangup = True
                    serve(slot)
                elif ready == kick_fd:
                    os.eventfd_read(kick_fd)
                    self._kicked = False
            for slot in again:
                serve(slot)
            if self._writes:
                writes, self._writes = self._writes, []
                for slot in writes:
                    self._write(slot)

    def _serve(self, slot: _Slot) -> None:
        if slot.task is None:
            slot.missed = True
            return
        self.steps += 1
        try:
            result = slot.owner.poll_step(slot.sock)
        except BaseException as exc:  # raised where the task model raised it
            slot.missed = True
            self._wake(slot, outcome.Error(exc))
            return
        if result is WRITE_LATER:
            self._writes.append(slot)
        else:
            self._settle(slot, result)

    def _write(self, slot: _Slot) -> None:
        if slot.task is None:  # woken since its step: the task writes the rest
            return
        try:
            result = slot.owner.write_step(slot.sock)
        except BaseException as exc:  # as in _serve
            slot.missed = True
            self._wake(slot, outcome.Error(exc))
            return
        self._settle(slot, result)

    def _settle(self, slot: _Slot, result: object) -> None:
        """Act on what a step or a write step returned."""
        if result is AGAIN or (result is None and slot.hangup):
            self._again.append(slot)
        elif result is not None:
            # The step stopped after a read, not at "would block": what is
            # left gets no new edge, so the next park looks again.
            slot.missed = True
            self._wake(slot, outcome.Value(result))

    def _wake(self, slot: _Slot, result: outcome.Outcome[Any]) -> None:
        task = slot.task
        if task is not None:
            slot.task = None
            self.wakeups += 1
            trio.lowlevel.reschedule(task, result)

    def _kick(self) -> None:
        if self._sleeping and not self._kicked:
            self._kicked = True
            os.eventfd_write(self._kick_fd, 1)

    async def park(self, owner: Parkable, sock: socket.socket, fileno: int) -> object:
        """Park the calling task until a step of ``owner`` wakes it; return
        what that step returned. Registers ``sock`` (``fileno``) on first use."""
        slot = self._slots.get(fileno)
        if slot is None and not self._slots and not self._lone and not self._always:
            # A lone connection gains nothing from the poller (one more
            # epoll_wait per read): it waits in its own task and runs the
            # same step there, until others come.
            self._lone += 1
            try:
                while True:
                    try:
                        await trio.lowlevel.wait_readable(sock)
                    except trio.ClosedResourceError:  # closed under us
                        return 0
                    result = owner.poll_step(sock)
                    if result is WRITE_LATER:  # nothing to batch it with
                        result = owner.write_step(sock)
                    if result is not None and result is not AGAIN:
                        return result
                    if self._slots:
                        break  # others are parked: join them
            finally:
                self._lone -= 1
        if slot is None:
            slot = self._slots[fileno] = _Slot(owner, sock)
            # Data already waiting is reported at once (epoll checks
            # readiness when a socket is added).
            self._epoll.register(fileno, select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLET)
        else:
            slot.owner = owner  # the HTTP connection handed over to a session
            if slot.missed:
                slot.missed = False
                self._again.append(slot)
                self._kick()
        slot.task = trio.lowlevel.current_task()

        def abort(_: Any) -> trio.lowlevel.Abort:
            slot.task = None
            slot.missed = True  # an edge may have come and gone meanwhile
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    def wake(self, fileno: int, value: object) -> bool:
        """Wake the task parked on ``fileno`` with ``value``, as a step
        returning it would; False if no task is parked there (it runs, or
        waits in its own task)."""
        slot = self._slots.get(fileno)
        if slot is None or slot.task is None:
            return False
        slot.missed = True  # whatever comes meanwhile is looked at on the next park
        self._wake(slot, outcome.Value(value))
        return True

    def forget(self, fileno: int) -> None:
        """``fileno`` is about to close: unregister it (fd numbers are
        reused) and wake a task parked on it with 0 (the end)."""
        slot = self._slots.pop(fileno, None)
        if slot is None:
            return
        if not self._closed:
            with contextlib.suppress(OSError):  # already gone
                self._epoll.unregister(fileno)
        self._wake(slot, outcome.Value(0))
