"""Byte transports under a connection: a raw non-blocking socket (the fast
path) and any trio ``Stream`` (TLS, in-memory streams in tests).

The socket transport tries each ``recv``/``send`` first and only waits for
readiness when the kernel says it would block: every await is a trip
through trio's scheduler, so a message that needs none is cheaper.

Writes that have to wait are bounded by ``send_timeout`` (the time the peer
may take to accept more bytes, as nginx's ``send_timeout``): a client that
stops reading cannot hold a connection, a file or a buffer forever. A write
that needs no wait pays nothing for it.
"""

from __future__ import annotations

import contextlib
import socket

import trio

from .._limits import DEFAULT_LIMITS

# Reads that succeeded without waiting go on back to back for at most this
# long (their parsing included), then the task yields once, so that a client
# that floods us cannot starve the others (see WORK_BUDGET in _websocket).
_EAGER_BUDGET = 0.002
# A read at least this large suggests a stream: try the next one at once.
_EAGER_MIN = 8 * 1024
_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")  # not on Windows
_IOV_MAX = 512
# A stream write is timed per piece of this size (progress, not the whole).
_STREAM_PIECE = 64 * 1024


class SocketTransport:
    """A connected, non-blocking stdlib socket driven with trio's I/O waits."""

    __slots__ = ("_eager", "_stalled", "_yield_at", "send_timeout", "sock", "write_deadline")

    def __init__(
        self,
        sock: socket.socket,
        send_timeout: float = DEFAULT_LIMITS.send_timeout,
        stalled: set[SocketTransport] | None = None,
    ) -> None:
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):  # not every platform has it
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        #: Seconds a write may wait for the peer to take more bytes.
        self.send_timeout = send_timeout
        # The server's set of transports waiting to write: its reaper wakes
        # those past ``write_deadline`` (a cancel scope per wait would cost
        # ~5 us). Without one, each wait gets its own scope.
        self._stalled = stalled
        self.write_deadline = 0.0
        self._eager = False  # try recv before waiting?
        self._yield_at = 0.0  # when a run of reads without waiting must yield

    async def receive_into(self, buf: memoryview) -> int:
        """Read into ``buf``; 0 means the peer closed or reset the connection.

        After a large read more data is probably waiting, so the next read
        is tried at once; after a small one (request/response traffic) the
        socket is almost surely empty and a failing ``recv`` would only cost
        a syscall, so we wait for readiness first.
        """
        sock = self.sock
        if self._eager and trio.current_time() < self._yield_at:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                pass
            except OSError:
                return 0
            else:
                self._eager = n >= _EAGER_MIN
                return n
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:  # closed under us (shutdown)
                return 0
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                return 0
            if n >= _EAGER_MIN:
                # The start of a run of reads without waiting (small reads,
                # the request/response case, never pay for the clock).
                self._eager = True
                self._yield_at = trio.current_time() + _EAGER_BUDGET
            else:
                self._eager = False
            return n

    async def _wait_writable(self) -> bool:
        """Wait until the socket takes more bytes; False on ``send_timeout``
        or when it was closed under us."""
        stalled = self._stalled
        if stalled is None:
            with trio.move_on_after(self.send_timeout):
                return await self._wait_writable_once()
            return False
        self.write_deadline = trio.current_time() + self.send_timeout
        stalled.add(self)
        try:
            return await self._wait_writable_once()
        finally:
            stalled.discard(self)

    async def _wait_writable_once(self) -> bool:
        try:
            await trio.lowlevel.wait_writable(self.sock)
        except trio.ClosedResourceError:  # closed under us, or timed out by the reaper
            return False
        return True

    def write_timed_out(self) -> None:
        """Called by the reaper once ``write_deadline`` has passed: wake
        every task waiting on the socket (the connection is given up)."""
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)

    def try_send(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the kernel takes now; -1 if the connection is broken."""
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            return -1

    async def send_all(self, data: bytes | bytearray | memoryview) -> bool:
        """Send everything, waiting for room; False if the connection broke
        or the peer took nothing for ``send_timeout``."""
        view = memoryview(data)
        sock = self.sock
        while view:
            try:
                sent = sock.send(view)
            except BlockingIOError:
                if not await self._wait_writable():
                    return False
                continue
            except OSError:
                return False
            view = view[sent:]
        return True

    async def send_all_vec(self, chunks: list[bytes | bytearray | memoryview]) -> bool:
        """Send every chunk in order with vectored writes (no joining copy)."""
        if not _HAS_SENDMSG or len(chunks) == 1:
            return await self.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        views = [memoryview(c) for c in chunks if len(c)]
        sock = self.sock
        while views:
            try:
                sent = sock.sendmsg(views[:_IOV_MAX])
            except BlockingIOError:
                if not await self._wait_writable():
                    return False
                continue
            except OSError:
                return False
            while sent:
                first = views[0]
                if sent >= len(first):
                    sent -= len(first)
                    del views[0]
                else:
                    views[0] = first[sent:]
                    sent = 0
        return True

    def shutdown_write(self) -> None:
        """Send FIN (half-close) so the peer sees the end of our data."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        """Close the socket, waking any task waiting on it."""
        if self.sock.fileno() >= 0:
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    def peer(self) -> tuple[str, int] | None:
        """The peer address as ``(host, port)``."""
        try:
            addr = self.sock.getpeername()
        except OSError:
            return None
        return (addr[0], addr[1]) if isinstance(addr, tuple) else None


class StreamTransport:
    """Any trio ``Stream`` (TLS, memory streams), at the cost of a copy."""

    __slots__ = ("_client", "send_timeout", "stream")

    def __init__(
        self,
        stream: trio.abc.Stream,
        client: tuple[str, int] | None = None,
        send_timeout: float = DEFAULT_LIMITS.send_timeout,
    ) -> None:
        self.stream = stream
        self._client = client
        #: Seconds each piece of a write may take (see ``_STREAM_PIECE``).
        self.send_timeout = send_timeout

    async def receive_into(self, buf: memoryview) -> int:
        try:
            data = await self.stream.receive_some(len(buf))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return 0
        n = len(data)
        buf[:n] = data
        return n

    def try_send(self, data: bytes | bytearray | memoryview) -> int:
        return 0  # streams are only written through send_all

    async def send_all(self, data: bytes | bytearray | memoryview) -> bool:
        """Send everything; False if the stream broke or a piece of at most
        ``_STREAM_PIECE`` bytes was not taken within ``send_timeout`` (a
        stream cannot tell a write that waits from one that does not)."""
        view = memoryview(data)
        try:
            for start in range(0, len(view), _STREAM_PIECE):
                with trio.move_on_after(self.send_timeout) as scope:
                    await self.stream.send_all(view[start : start + _STREAM_PIECE])
                if scope.cancelled_caught:
                    return False  # a cut-off write leaves the stream broken anyway
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError):
            return False
        return True

    async def send_all_vec(self, chunks: list[bytes | bytearray | memoryview]) -> bool:
        return await self.send_all(chunks[0] if len(chunks) == 1 else b"".join(chunks))

    def shutdown_write(self) -> None:
        pass

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    def peer(self) -> tuple[str, int] | None:
        return self._client


Transport = SocketTransport | StreamTransport
