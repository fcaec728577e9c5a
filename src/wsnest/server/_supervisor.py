"""``server.run(workers=N)``: N worker processes under a supervisor.

The supervisor is a plain synchronous process that never runs trio (it
forks, and a fork must not copy a running event loop). It makes the
listeners first, then forks the workers; each worker runs ``trio.run`` of
the server on its own listener:

- TCP on Linux: the supervisor binds the address(es) with ``SO_REUSEPORT``
  without listening (that fixes the port when port 0 is asked and keeps it
  reserved); each worker binds its own ``SO_REUSEPORT`` socket on it and
  the kernel spreads new connections over the workers.
- A Unix socket, a caller's socket (``sock=``), and platforms without a
  load-balancing ``SO_REUSEPORT``: the supervisor listens once and every
  worker accepts on that inherited socket.

A worker reports readiness (or its startup error) through a pipe. A worker
that dies is restarted with a backoff (0.1 s doubling up to 5 s, back to
0.1 s once a worker ran 10 s); one that fails before its first start is
ready stops everything: ``run()`` raises its error once (a broker that
cannot be reached as the ``BrokerError`` it is without workers). SIGINT or SIGTERM
to the supervisor: SIGTERM to every worker, each closes its server with
``aclose()``; stragglers are killed after the drain and close timeouts and
a margin. Ctrl+C in a terminal signals the whole process group: a worker
takes SIGINT like SIGTERM, and a second signal while it stops is ignored.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import select
import signal
import socket
import sys
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any, NoReturn, Protocol

import trio

from .._limits import Limits
from ..broker import BrokerError
from ._listeners import HAS_REUSEPORT_LB, Listener
from ._worker_board import WorkerBoard
from ._workers import Worker, enter_worker


class HttpServer(Protocol):
    """What the supervisor uses of ``_server.HttpServer`` (which imports
    this module: a Protocol keeps the import one-way)."""

    state: str
    url: str
    urls: list[str]
    limits: Limits
    _sock: socket.socket | None
    _uds_path: str | None
    _inherited: list[Listener] | None
    _reuse_port: bool
    _bind_addresses: list[tuple[int, tuple[object, ...]]] | None
    _ids: itertools.count[int]

    def _open_listeners(self, *, reuse_port: bool = False, listen: bool = True) -> list[Listener]: ...
    def _adopt_listeners(self, listeners: list[Listener]) -> None: ...
    async def serve(self, *, listen: bool = True, task_status: Any = ...) -> None: ...
    async def aclose(self) -> None: ...


log = logging.getLogger("wsnest")

#: Most workers one server may run: far above any core count it makes
#: sense to match, low enough that a typo (``--workers 1000``) is refused.
MAX_WORKERS = 256
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 5.0
STABLE_AFTER = 10.0  # a worker that ran this long resets the backoff
STOP_MARGIN = 5.0  # beyond drain + close timeouts before SIGKILL
_BROKER_ERROR = "EXBrokerError: "  # a worker's report when its broker was unreachable


class WorkerStartError(RuntimeError):
    """A worker failed before it was ready on its first start."""


def check_workers(workers: object) -> int:
    """``workers`` as an int from 1 to :data:`MAX_WORKERS`, else ValueError."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(f"workers: expected an int from 1 to {MAX_WORKERS}, got {workers!r}")
    if workers > 1 and not hasattr(os, "fork"):
        raise RuntimeError("workers: several worker processes are not supported on this platform (no fork)")
    return workers


def supervise(server: HttpServer, count: int) -> None:
    """Run ``server`` in ``count`` worker processes until SIGINT/SIGTERM."""
    if server.state != "not started":
        raise RuntimeError(f"server: cannot serve, it is {server.state}")
    _Supervisor(server, count).run()


@dataclass
class _Slot:
    index: int
    pid: int = 0
    generation: int = 0
    pipe: int = -1  # read end of the worker's readiness pipe
    started: float = 0.0
    ready: bool = False
    ever_ready: bool = False
    report: bytes = b""
    backoff: float = BACKOFF_FIRST
    restart_at: float | None = None


class _WorkerState:
    """A worker's stop request (from a signal before trio listens) and readiness."""

    def __init__(self) -> None:
        self.stop = False
        self.ready = False

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop = True


class _Supervisor:
    def __init__(self, server: HttpServer, count: int) -> None:
        self.server = server
        self.count = count
        self.slots = [_Slot(i) for i in range(count)]
        self.generations = itertools.count(1)
        self.board = WorkerBoard(count)
        self.listeners: list[Listener] = []
        self.reserved = False  # SO_REUSEPORT: the workers bind, ours only reserve
        self.stop_requested = False
        self.stopping = False
        self.kill_at = 0.0
        self.error: BaseException | None = None
        self.wake_r = self.wake_w = -1

    # -- parent ----------------------------------------------------------------

    def run(self) -> None:
        server = self.server
        if server._sock is None and server._uds_path is None and HAS_REUSEPORT_LB:
            self.listeners = server._open_listeners(reuse_port=True, listen=False)
            server._bind_addresses = [(ln.sock.family, ln.sock.getsockname()) for ln in self.listeners]
            server._reuse_port = self.reserved = True
        else:
            self.listeners = server._open_listeners()
            server._inherited = self.listeners
        server._adopt_listeners(self.listeners)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        handled = (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
        previous = {sig: signal.getsignal(sig) for sig in handled}
        old_wakeup = signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        try:
            signal.signal(signal.SIGINT, self._on_stop_signal)
            signal.signal(signal.SIGTERM, self._on_stop_signal)
            signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes poll() via the wakeup fd
            for slot in self.slots:
                self._spawn(slot)
            self._loop()
        except BaseException:
            self._kill([s for s in self.slots if s.pid], quiet=True)  # e.g. fork failed: leave no worker behind
            raise
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for fd in (self.wake_r, self.wake_w, *(s.pipe for s in self.slots if s.pipe >= 0)):
                os.close(fd)
            for listener in self.listeners:
                listener.close()
            self.board.close()
            server.state = "closed"
        if self.error is not None:
            raise self.error

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop_requested = True

    def _loop(self) -> None:
        announced = False
        while True:
            now = time.monotonic()
            if self.stop_requested and not self.stopping:
                log.info("wsnest: stopping %d workers", self.count)
                self._begin_stop(now)
            for slot in self.slots:
                if slot.pipe >= 0:
                    self._read_report(slot)
            self._reap(now)
            live = [s for s in self.slots if s.pid]
            if self.stopping:
                if not live:
                    return
                if now >= self.kill_at:
                    self._kill(live)
                    return
            else:
                if not announced and all(s.ready for s in self.slots):
                    announced = True
                    log.info("wsnest: %d workers serving at %s", self.count, ", ".join(self.server.urls))
                    print(f"Serving at {self.server.url} - press Ctrl+C to stop", flush=True)
                for slot in self.slots:
                    if slot.restart_at is not None and slot.restart_at <= now:
                        self._spawn(slot)
            self._wait(now)

    def _wait(self, now: float) -> None:
        times = [s.restart_at for s in self.slots if s.restart_at is not None and not self.stopping]
        if self.stopping:
            times.append(self.kill_at)
        timeout = None if not times else max(0, int((min(times) - now) * 1000) + 1)
        poller = select.poll()
        poller.register(self.wake_r, select.POLLIN)
        for slot in self.slots:
            if slot.pipe >= 0:
                poller.register(slot.pipe, select.POLLIN)
        poller.poll(timeout)
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _read_report(self, slot: _Slot) -> None:
        """Read what the worker wrote: ``R`` when ready, ``E...`` on a
        startup error; EOF once it has exited."""
        while True:
            try:
                data = os.read(slot.pipe, 4096)
            except BlockingIOError:
                return
            if not data:
                os.close(slot.pipe)
                slot.pipe = -1
                return
            if data.startswith(b"R") and not slot.ready:
                slot.ready = slot.ever_ready = True
                log.info("wsnest: worker %d (pid %d) ready", slot.index, slot.pid)
                data = data[1:]
            slot.report += data

    def _reap(self, now: float) -> None:
        for slot in self.slots:
            if not slot.pid:
                continue
            try:
                pid, status = os.waitpid(slot.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = slot.pid, 0
            if pid == 0:
                continue
            while slot.pipe >= 0:  # the worker is gone: its report is complete
                self._read_report(slot)
            self._exited(slot, status, now)

    def _exited(self, slot: _Slot, status: int, now: float) -> None:
        pid, slot.pid, slot.ready = slot.pid, 0, False
        how = _describe(status)
        if self.stopping:
            log.info("wsnest: worker %d (pid %d) stopped (%s)", slot.index, pid, how)
            return
        if not slot.ever_ready:
            self.error = _startup_error(slot, pid, how)
            self._begin_stop(now)
            return
        if slot.report.startswith(b"E"):  # a restarted worker that could not start: say why
            how += f" ({_startup_error(slot, pid, how)})"
        if now - slot.started >= STABLE_AFTER:
            slot.backoff = BACKOFF_FIRST
        log.warning("wsnest: worker %d (pid %d) %s; restarting it in %.1f s", slot.index, pid, how, slot.backoff)
        slot.restart_at = now + slot.backoff
        slot.backoff = min(slot.backoff * 2, BACKOFF_MAX)

    def _begin_stop(self, now: float) -> None:
        self.stopping = True
        limits = self.server.limits
        self.kill_at = now + limits.drain_timeout + limits.close_timeout + STOP_MARGIN
        for slot in self.slots:
            slot.restart_at = None
            if slot.pid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(slot.pid, signal.SIGTERM)

    def _kill(self, live: list[_Slot], quiet: bool = False) -> None:
        for slot in live:
            if not quiet:
                log.warning("wsnest: worker %d (pid %d) did not stop in time: killed", slot.index, slot.pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(slot.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(slot.pid, 0)
            slot.pid = 0

    def _spawn(self, slot: _Slot) -> None:
        generation = next(self.generations)
        read_end, write_end = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(read_end)
            self._child(slot.index, generation, write_end)
        os.close(write_end)
        os.set_blocking(read_end, False)
        slot.pid, slot.generation, slot.pipe = pid, generation, read_end
        slot.started, slot.ready, slot.report, slot.restart_at = time.monotonic(), False, b"", None

    # -- child -------------------------------------------------------------------

    def _child(self, index: int, generation: int, report: int) -> NoReturn:
        code = 1
        state = _WorkerState()
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, state.on_signal)
            signal.signal(signal.SIGTERM, state.on_signal)
            state.stop = self.stop_requested  # a SIGTERM that came before the lines above
            for fd in (self.wake_r, self.wake_w, *(s.pipe for s in self.slots if s.pipe >= 0)):
                os.close(fd)
            server = self.server
            for listener in self.listeners:
                if self.reserved:
                    listener.sock.close()  # the worker binds its own
                else:
                    listener.forget_file()  # the supervisor removes it
            enter_worker(Worker(index, self.count, generation, os.getpid()), self.board)
            server._ids = itertools.count((generation << 32) | 1)
            trio.run(_worker_main, server, report, state, os.getppid())
            code = 0
        except BaseException as exc:
            if state.ready:
                log.exception("wsnest: worker %d failed", index)
            else:
                _write_all(report, b"E" + _encode_error(exc))
                code = 3
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)


async def _worker_main(server: HttpServer, report: int, state: _WorkerState, parent: int) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve)
            _write_all(report, b"R")
            state.ready = True
            if not state.stop:
                async with trio.open_nursery() as waiters:
                    waiters.start_soon(_first_signal, received, waiters.cancel_scope)
                    waiters.start_soon(_orphaned, parent, waiters.cancel_scope)
            # Later signals (Ctrl+C reaches every process of the group, and
            # the supervisor forwards SIGTERM) queue in `received`: ignored.
            await server.aclose()


async def _first_signal(received: Any, scope: trio.CancelScope) -> None:
    async for _ in received:
        break
    scope.cancel()


async def _orphaned(parent: int, scope: trio.CancelScope) -> None:
    # A supervisor killed with SIGKILL forwards nothing: its workers notice
    # they were re-parented and stop, rather than hold the port forever.
    while os.getppid() == parent:
        await trio.sleep(0.5)
    log.warning("wsnest: worker (pid %d): the supervisor (pid %d) is gone; stopping", os.getpid(), parent)
    scope.cancel()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _leaf(exc: BaseException) -> BaseException:
    # An exception group (a builtin from Python 3.11, a backport before).
    while isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


def _encode_error(exc: BaseException) -> bytes:
    exc = _leaf(exc)
    if isinstance(exc, OSError):
        return f"O{exc.errno or 0}\n{exc.strerror or exc}".encode(errors="replace")
    return f"X{type(exc).__name__}: {exc}".encode(errors="replace")


def _startup_error(slot: _Slot, pid: int, how: str) -> BaseException:
    text = slot.report.decode(errors="replace")
    if text.startswith("EO"):
        number, _, message = text[2:].partition("\n")
        return OSError(int(number) or errno.EIO, message)
    if text.startswith(_BROKER_ERROR):  # the same error as without workers (it names the broker)
        return BrokerError(text[len(_BROKER_ERROR) :])
    if text.startswith("EX"):
        return WorkerStartError(f"worker {slot.index} failed to start: {text[2:]}")
    return WorkerStartError(f"worker {slot.index} (pid {pid}) {how} before it was ready")


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return f"was killed by {name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"
