"""Byte transports under a connection: a raw non-blocking socket (the fast
path), TLS over a raw socket with memory BIOs, and any trio ``Stream``
(in-memory streams in tests).

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
import ssl

import trio

from .._limits import DEFAULT_LIMITS
from ..http import build_response
from ._poller import Poller

# Reads that succeeded without waiting go on back to back for at most this
# long (their parsing included), then the task yields once, so that a client
# that floods us cannot starve the others (see WORK_BUDGET in _websocket).
EAGER_BUDGET = 0.002
# A read at least this large suggests a stream: try the next one at once.
EAGER_MIN = 8 * 1024
_HAS_SENDMSG = hasattr(socket.socket, "sendmsg")  # not on Windows
_IOV_MAX = 512
# A stream write is timed per piece of this size (progress, not the whole).
_STREAM_PIECE = 64 * 1024


class TimedWriter:
    """Base of the transports over a raw socket: the socket set up for
    them, the state of a run of reads without waiting, and waits for room
    to write that give up after ``send_timeout`` without progress."""

    __slots__ = ("_eager", "_stalled", "_yield_at", "poller", "send_timeout", "sock", "write_deadline")

    def __init__(
        self,
        sock: socket.socket,
        send_timeout: float = DEFAULT_LIMITS.send_timeout,
        stalled: set[TimedWriter] | None = None,
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
        #: The server's readiness poller once a connection parked on it
        #: (see _poller): told before the socket closes.
        self.poller: Poller | None = None

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


class SocketTransport(TimedWriter):
    """A connected, non-blocking stdlib socket driven with trio's I/O waits."""

    __slots__ = ()

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
                self._eager = n >= EAGER_MIN
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
            if n >= EAGER_MIN:
                # The start of a run of reads without waiting (small reads,
                # the request/response case, never pay for the clock).
                self._eager = True
                self._yield_at = trio.current_time() + EAGER_BUDGET
            else:
                self._eager = False
            return n

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

    def leave_poller(self) -> None:
        """This connection's reads will not be served by the poller (an
        async consumer, a stream): unregister, so that its data does not
        wake the poller for nothing."""
        if self.poller is not None:
            self.poller.forget(self.sock.fileno())
            self.poller = None

    async def aclose(self) -> None:
        """Close the socket, waking any task waiting on it."""
        self.close()

    def close(self) -> None:
        """As :meth:`aclose`, which never waits (no shielded scope needed)."""
        fileno = self.sock.fileno()
        if fileno >= 0:
            if self.poller is not None:
                self.poller.forget(fileno)
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
    """Any trio ``Stream`` (memory streams in tests), at the cost of a copy."""

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


# -- TLS -----------------------------------------------------------------------

#: Most ciphertext read from the socket per read. Every complete record in it
#: is decrypted in the same wake-up, so this also bounds the work between two
#: yields (64 KiB of 1-byte records is about 2,800 SSL_read calls).
_TLS_READ = 64 * 1024
#: Plaintext encrypted per SSL write, and the ciphertext held before it is
#: sent: a large message is never held encrypted in full.
_TLS_WRITE = 64 * 1024
_PLAIN_HTTP_BODY = b"plain HTTP request sent to HTTPS port\n"


def _plain_http_answer() -> bytes:
    return build_response(400, [("Content-Type", "text/plain; charset=utf-8")], _PLAIN_HTTP_BODY, keep_alive=False)


#: What a client that spoke plain HTTP may still send before it closes.
_PLAIN_HTTP_DISCARD = 64 * 1024


def _ssl_reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or exc or type(exc).__name__)


class TLSTransport(TimedWriter):
    """TLS over a connected non-blocking socket, with ``ssl`` memory BIOs.

    Unlike ``trio.SSLStream`` under a ``StreamTransport``: one read decrypts
    every complete record it brought (a client sending 1-byte records costs
    one trip through the read loop per read, not per record), plaintext is
    decrypted straight into the caller's buffer and encrypted straight from
    the caller's chunks (no joining copy, so a broadcast frame is shared up
    to the cipher), a client that has sent nothing yet costs no SSL object,
    and the end of the stream is marked with ``close_notify``.

    Writes keep one order: unsent ciphertext (``_pending``), then what the
    SSL object has put in the outgoing BIO. ``try_send`` may encrypt data
    it cannot send at once; it then returns 0 and remembers the length
    (``_prepaid``), which the next write skips: callers always resend the
    unsent rest first.
    """

    __slots__ = (
        "_broken",
        "_client",
        "_ctx",
        "_in",
        "_out",
        "_pending",
        "_prepaid",
        "_sending",
        "_shut",
        "_shut_wanted",
        "_ssl",
    )

    def __init__(
        self,
        sock: socket.socket,
        ctx: ssl.SSLContext,
        client: tuple[str, int] | None = None,
        send_timeout: float = DEFAULT_LIMITS.send_timeout,
        stalled: set[TimedWriter] | None = None,
    ) -> None:
        super().__init__(sock, send_timeout, stalled)
        self._ctx = ctx
        self._client = client
        self._ssl: ssl.SSLObject | None = None  # made by handshake()
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self._pending: memoryview | None = None  # ciphertext taken from _out, not yet sent
        self._prepaid = 0  # plaintext at the head of the next write, already encrypted
        self._sending = False  # a write is waiting for room
        self._broken = False  # the connection or the TLS stream failed
        self._shut = False  # close_notify queued
        self._shut_wanted = False  # shutdown_write() called during a write

    # -- before and during the handshake ----------------------------------------

    async def first_byte(self) -> int:
        """Wait for the client's first bytes (kept for the handshake) and
        return the first one; -1 if the client closed first."""
        sock = self.sock
        while True:
            try:
                data = sock.recv(_TLS_READ)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    return -1
                continue
            except OSError:
                return -1
            if not data:
                return -1
            self._in.write(data)
            return data[0]

    async def handshake(self, server_hostname: str | None = None, *, server_side: bool = True) -> str | None:
        """Run the handshake (our server side, or with ``server_side=False``
        our client side, checking ``server_hostname`` as the context says):
        None once it is done, else why it failed."""
        self._ssl = sslobj = self._ctx.wrap_bio(
            self._in, self._out, server_side=server_side, server_hostname=server_hostname
        )
        while True:
            try:
                sslobj.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                self._broken = True
                self._send_nowait()  # the alert, if the kernel takes it now
                return _ssl_reason(exc)
            if not await self._flush_out():
                return "connection lost"
            if not await self._fill_handshake():
                return "the peer closed the connection"
        if not await self._flush_out():
            return "connection lost"
        return None

    async def _fill_handshake(self) -> bool:
        sock = self.sock
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return False
            try:
                data = sock.recv(_TLS_READ)
            except BlockingIOError:
                continue
            except OSError:
                return False
            if not data:
                return False
            self._in.write(data)
            return True

    async def reject_plain_http(self) -> None:
        """Answer a plain HTTP request on the TLS port with a clear-text 400
        (as nginx does), half-close, and drop what the client still sends
        until it closes (closing with unread input would reset the
        connection, and the client could lose the answer). The caller's
        deadline bounds the wait."""
        self._broken = True  # not TLS: no close_notify
        sock = self.sock
        view = memoryview(_plain_http_answer())
        while view:
            try:
                view = view[sock.send(view) :]
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_writable(sock)
                except trio.ClosedResourceError:
                    return
            except OSError:
                return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_WR)
        left = _PLAIN_HTTP_DISCARD
        while left > 0:
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    return
                continue
            except OSError:
                return
            if not data:
                return
            left -= len(data)

    # -- reading ----------------------------------------------------------------

    async def receive_into(self, buf: memoryview) -> int:
        """Decrypt into ``buf`` every record available (up to its size);
        0 at the end of the stream (close_notify, EOF or a TLS error)."""
        while True:
            n = self._decrypt(buf)
            if n:
                return n if n > 0 else 0
            if not await self._fill(buf):
                return 0

    def _decrypt(self, buf: memoryview) -> int:
        """Decrypt what the incoming BIO holds; -1 at the end of the stream."""
        sslobj = self._ssl
        if sslobj is None or self._broken:
            return -1
        size = len(buf)
        total = 0
        end = False
        try:
            while total < size:
                # With a buffer, read() returns a count (typeshed says bytes).
                n: int = sslobj.read(size - total, buf[total:])  # type: ignore[assignment]
                if n == 0:  # close_notify received
                    end = True
                    break
                total += n
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError:
            self._broken = True
            end = True
        if self._out.pending and not self._sending:
            self._send_nowait()  # a record produced by reading (key update, alert)
        return total if total or not end else -1

    async def _fill(self, buf: memoryview) -> bool:
        """Read ciphertext into the incoming BIO (``buf`` as scratch: what it
        holds is copied into the BIO before anything is decrypted into it);
        False at EOF. Tried at once after a large read, as SocketTransport
        does, for at most ``EAGER_BUDGET`` seconds before a yield."""
        sock = self.sock
        size = len(buf) if len(buf) < _TLS_READ else _TLS_READ
        if self._eager and trio.current_time() < self._yield_at:
            try:
                n = sock.recv_into(buf, size)
            except BlockingIOError:
                pass
            except OSError:
                return False
            else:
                return self._took(buf, n)
        self._eager = False
        while True:
            try:
                await trio.lowlevel.wait_readable(sock)
            except trio.ClosedResourceError:
                return False
            try:
                n = sock.recv_into(buf, size)
            except BlockingIOError:
                continue
            except OSError:
                return False
            if n >= EAGER_MIN:  # the start of a run of reads without waiting
                self._yield_at = trio.current_time() + EAGER_BUDGET
            return self._took(buf, n)

    def _took(self, buf: memoryview, n: int) -> bool:
        if n == 0:
            return False
        self._in.write(buf[:n])
        self._eager = n >= EAGER_MIN
        return True

    # -- writing ----------------------------------------------------------------

    def try_send(self, data: bytes | bytearray | memoryview) -> int:
        """Encrypt and send ``data`` if the kernel takes it all now; -1 if
        the connection is broken; else 0 (see the class docstring)."""
        sslobj = self._ssl
        if self._broken or sslobj is None:
            return -1
        if not data or self._sending or self._pending is not None or self._prepaid or len(data) > _TLS_WRITE:
            return 0
        try:
            sslobj.write(data)
        except ssl.SSLError:
            self._broken = True
            return -1
        if self._send_nowait():
            return len(data)
        if self._broken:
            return -1
        self._prepaid = len(data)
        return 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> bool:
        """Send everything, waiting for room; False if the connection broke."""
        return await self.send_all_vec([data])

    async def send_all_vec(self, chunks: list[bytes | bytearray | memoryview]) -> bool:
        """Encrypt every chunk in order, straight from the caller's buffers."""
        sslobj = self._ssl
        if self._broken or sslobj is None:
            return False
        out = self._out
        self._sending = True
        try:
            for chunk in chunks:
                view = memoryview(chunk)
                if self._prepaid:
                    skip = min(self._prepaid, len(view))
                    self._prepaid -= skip
                    view = view[skip:]
                while view:
                    sslobj.write(view[:_TLS_WRITE])
                    view = view[_TLS_WRITE:]
                    if out.pending >= _TLS_WRITE and not await self._flush_out():
                        return False
            ok = await self._flush_out()
        except ssl.SSLError:  # e.g. written after close_notify
            self._broken = True
            return False
        finally:
            self._sending = False
        if ok and self._shut_wanted:
            self.shutdown_write()
        return ok

    def _send_nowait(self) -> bool:
        """Send the pending ciphertext, then the outgoing BIO, as far as the
        kernel takes it now; True if nothing is left."""
        sock = self.sock
        while True:
            data = self._pending
            if data is None:
                if not self._out.pending:
                    return True
                data = memoryview(self._out.read())
            try:
                n = sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self._broken = True
                self._pending = None
                return False
            if n < len(data):
                self._pending = data[n:]
                return False
            self._pending = None

    async def _flush_out(self) -> bool:
        """Send every byte of ciphertext, waiting for room."""
        while not self._send_nowait():
            if self._broken:
                return False
            if not await self._wait_writable():  # closed under us, or send_timeout
                self._broken = True
                return False
        return True

    # -- ending -----------------------------------------------------------------

    def _close_notify(self) -> bool:
        """Queue close_notify and send without waiting; True if it left."""
        sslobj = self._ssl
        if sslobj is None or self._broken or self._shut:
            return False
        self._shut = True
        with contextlib.suppress(ssl.SSLError):  # the peer's close_notify is not awaited
            sslobj.unwrap()
        return self._send_nowait()

    def shutdown_write(self) -> None:
        """The TLS half-close: send close_notify, then FIN."""
        if self._sending:  # after the write in progress
            self._shut_wanted = True
            return
        self._shut_wanted = False
        if self._close_notify():
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    async def aclose(self) -> None:
        """Send close_notify if the stream is intact and the kernel takes it
        at once (never wait for a peer that does not read), then close."""
        self.close()

    def close(self) -> None:
        """As :meth:`aclose`, which never waits (no shielded scope needed)."""
        sock = self.sock
        if sock.fileno() < 0:
            return
        if not self._sending:
            self._close_notify()
        self._broken = True
        self._ssl = None  # frees OpenSSL's state now, not with the last reference
        trio.lowlevel.notify_closing(sock)
        sock.close()

    def peer(self) -> tuple[str, int] | None:
        """The peer address as ``(host, port)``."""
        return self._client


Transport = SocketTransport | StreamTransport | TLSTransport
