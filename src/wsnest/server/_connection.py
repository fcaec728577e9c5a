"""One HTTP connection: read requests, route them, answer or hand over.

Policy (in one place, as h11's example server does it):
- the first request head must arrive within ``handshake_timeout``; later
  ones within ``keepalive_timeout`` of the previous response, then
  ``handshake_timeout`` for the rest of the head (slowloris is dropped);
- a malformed or oversized request gets its status and the connection is
  closed (after the valid requests before it are answered); an application
  error gets a 500 and the connection lives on;
- pipelined requests are answered in order, and parsed only a slice ahead
  of the answers; a large read is parsed a slice at a time, yielding to
  the other connections after every ``_FEED_BUDGET`` bytes;
- a WebSocket upgrade (or a stream) takes the connection over for good;
- the caller (the server's connection task) closes the transport.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import trio

from .._errors import HTTPError
from ..http import Request, RequestParser, build_response
from ._poller import WRITE_LATER
from ._transport import SocketTransport

if TYPE_CHECKING:
    from ._contract import ServerContext, Session
    from ._routing import Router
    from ._transport import Transport

log = logging.getLogger("wsnest")

_INF = math.inf

#: What the reaper wakes a parked connection with when its deadline passed.
_EXPIRED = object()

# A read up to this size is parsed in one go (a request or a few pipelined
# ones: the common case pays nothing). A larger read is parsed a slice at a
# time, and parsing stops at the first slice that completes a request, so
# at most one slice's worth of requests waits as Request objects.
_FEED_SLICE = 4 * 1024
# Work between two yields to the other connections, in bytes parsed: at
# worst (1-byte chunks) ~0.04 us a byte, so a few ms. A request queued by a
# sliced read counts as _REQUEST_WEIGHT bytes (answering one costs ~10-20 us).
_FEED_BUDGET = 64 * 1024
_REQUEST_WEIGHT = 512


class HttpConnection:
    """State of one client connection while it speaks HTTP."""

    __slots__ = (
        "_failed",
        "_first",
        "_held",
        "_holding",
        "_later",
        "_unsent",
        "_unyielded",
        "client",
        "conns",
        "ctx",
        "deadline",
        "keep_alive",
        "parser",
        "requests",
        "router",
        "scope",
        "transport",
    )

    def __init__(
        self,
        ctx: ServerContext,
        router: Router,
        conns: set[HttpConnection],
        transport: Transport,
        client: tuple[str, int] | None,
        deadline: float = _INF,
    ) -> None:
        self.ctx = ctx
        self.router = router
        self.conns = conns  # the server's, for its reaper (see ``deadline``)
        self.transport = transport
        self.client = client
        self.keep_alive = True
        self.deadline = deadline  # the first head's, if the budget started earlier (TLS)
        self.scope: trio.CancelScope | None = None
        self.parser: RequestParser | None = None  # while serving (see drain)
        # Bytes parsed since this connection last let the others run.
        self._unyielded = 0
        self.requests = 0  # requests routed (the server's stats)
        # Left by a read the poller served inline (see poll_step) for this
        # task: a response's unsent rest, a request refused, an awaitable
        # callback result with its request and handler.
        self._unsent: memoryview | None = None
        self._failed: HTTPError | None = None
        self._later: tuple[Request, Any, Any] | None = None
        self._first = True  # no request answered yet
        # While a step runs, inline answers are held (poller's WRITE_LATER):
        # a list, joined once, as a pipelined read may answer many requests.
        self._holding = False
        self._held: list[bytes] = []

    #: Requests may be answered inline by the server's poller (a subclass
    #: that observes each response answers them in its task).
    answers_inline = True

    async def send(self, data: bytes) -> bool:
        """Write ``data``; False if the client is gone."""
        transport = self.transport
        sent = transport.try_send(data)
        if sent == len(data):
            return True
        if sent < 0:
            return False
        return await transport.send_all(memoryview(data)[sent:])

    def send_now(self, data: bytes) -> None:
        """Write ``data`` as far as the kernel takes it now; the rest is
        left for this connection's task (the poller's inline path)."""
        if self._holding:  # a step: written at the end of the poller's round
            self._held.append(data)
            return
        sent = self.transport.try_send(data)
        if sent < 0:
            self.keep_alive = False
        elif sent != len(data):
            self._unsent = memoryview(data)[sent:]

    def respond_now(self, req: Request, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """:meth:`respond` without waiting (see :meth:`send_now`)."""
        self.send_now(self._response(req, status, headers, body))

    def _response(self, req: Request, status: int, headers: list[tuple[str, str]], body: bytes) -> bytes:
        """The bytes of a complete response to ``req``; HEAD gets the head
        only (with the Content-Length of the body it would have had)."""
        keep = self.keep_alive and req.keep_alive
        self.keep_alive = keep
        head_only = req.method == "HEAD" or status in (204, 304) or 100 <= status < 200
        return build_response(
            status,
            headers,
            b"" if head_only else body,
            content_length=len(body),
            keep_alive=keep,
            version="1.1" if req.http_version == "1.1" else "1.0",
        )

    async def respond(
        self,
        req: Request,
        status: int,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        """Send a complete response (see :meth:`_response`)."""
        data = self._response(req, status, headers, body)
        transport = self.transport
        sent = transport.try_send(data)
        if sent != len(data) and (sent < 0 or not await transport.send_all(memoryview(data)[sent:])):
            self.keep_alive = False

    async def respond_chunks(
        self,
        req: Request,
        status: int,
        headers: list[tuple[str, str]],
        length: int,
        chunks: AsyncIterator[bytes],
    ) -> None:
        """Send a response whose ``length`` bytes come from ``chunks``
        (large files: never held in memory whole)."""
        keep = self.keep_alive and req.keep_alive
        self.keep_alive = keep
        head = build_response(status, headers, b"", content_length=length, keep_alive=keep, version=req.http_version)
        if not await self.send(head):
            self.keep_alive = False
            return
        if req.method == "HEAD":
            return
        sent = 0
        async for chunk in chunks:
            if not await self.send(chunk):
                self.keep_alive = False
                return
            sent += len(chunk)
        if sent != length:  # the file changed under us: the framing is broken
            self.keep_alive = False

    async def serve(self) -> tuple[Session, bytes] | None:
        """Serve requests until the connection ends or is handed over.

        Returns ``(session, tail)`` when a handler took the connection over
        (a WebSocket upgrade, a stream): the caller runs
        ``session.run(tail)`` (and owns the transport from then on).
        """
        ctx = self.ctx
        limits = ctx.limits
        parser = self.parser = RequestParser(
            limits, self.client, ctx.observer.scheme if ctx.observer is not None else "http"
        )
        view = ctx.recv_buffer
        transport = self.transport
        first = True
        poller = ctx.poller
        if poller is not None and self.answers_inline and isinstance(transport, SocketTransport):
            transport.poller = poller  # told before the socket closes
            sock = transport.sock
            fileno = sock.fileno()
        else:
            poller = None
        # Bytes received but not parsed yet: parsing stops once a request is
        # queued, so pipelined requests wait as bytes (at most one read),
        # not as thousands of Request objects.
        pending: memoryview | None = None
        # A request refused after valid ones in the same read: answered
        # once they are.
        error: HTTPError | None = None
        # Timeouts: one cancel scope for the whole connection, cancelled by
        # the server's reaper once ``self.deadline`` has passed. ``deadline``
        # is finite only while waiting for a request, so a handler is never
        # cancelled by it. (A CancelScope per request costs ~5 us in trio.)
        scope = self.scope = trio.CancelScope()
        self.conns.add(self)
        try:
            with scope:
                while self.keep_alive:
                    # Read until a whole request is queued.
                    now = trio.current_time()
                    if first:  # within what is left of the budget (TLS spent some)
                        self.deadline = min(self.deadline, now + limits.handshake_timeout)
                    else:
                        self.deadline = now + limits.keepalive_timeout
                    while not parser.requests and parser.upgrade_tail is None:
                        if parser.expect_continue:
                            # Only now: every earlier response is out.
                            parser.expect_continue = False
                            if not await self.send(b"HTTP/1.1 100 Continue\r\n\r\n"):
                                return None
                        was_idle = not first and parser.idle
                        try:
                            if pending is not None:
                                data, pending = pending, None
                                pending = await self._feed(parser, data)
                            elif poller is not None:
                                # The poller reads, parses and answers what it
                                # can inline (poll_step); we wake for the rest.
                                self._first = first
                                got = await poller.park(self, sock, fileno)
                                if type(got) is bytes:
                                    pending = await self._feed(parser, memoryview(got))
                                elif got == 0:
                                    return None
                                elif got is _EXPIRED:
                                    log.debug("connection from %s timed out waiting for a request", self.client)
                                    return None
                                else:
                                    first = self._first
                                    if not await self._after_step():
                                        return None
                                    if not parser.requests:
                                        continue  # the step kept the deadlines
                            else:
                                n = await transport.receive_into(view)
                                if n == 0:
                                    return None
                                if n <= _FEED_SLICE:  # the common case: no copy, no slicing
                                    parser.feed(view[:n])
                                else:  # the buffer is shared: own the bytes before yielding
                                    pending = await self._feed(parser, memoryview(bytes(view[:n])))
                        except HTTPError as exc:
                            if not parser.requests:
                                self.deadline = _INF
                                await ctx.send_error(transport, exc)
                                return None
                            error = exc  # answer the requests before it first
                            break
                        if not parser.requests:
                            if parser.receiving_body:
                                # The head deadline is over; a body gets
                                # handshake_timeout per read (slow, not stalled).
                                self.deadline = trio.current_time() + limits.handshake_timeout
                            elif was_idle:
                                # First bytes of a new request: the head now has
                                # handshake_timeout to arrive in full.
                                self.deadline = min(self.deadline, trio.current_time() + limits.handshake_timeout)
                    self.deadline = _INF
                    first = False
                    while parser.requests:
                        req = parser.requests.popleft()
                        if req.upgrade:
                            tail = parser.upgrade_tail
                            assert tail is not None  # llhttp stopped after this request
                            parser.close()  # the WebSocket session does not need it
                        else:
                            tail = b""
                        session = await self._dispatch(req, tail)
                        if session is not None:
                            return session, tail
                        if req.upgrade or not self.keep_alive:
                            return None  # what follows a closing request is ignored
                    if error is not None:
                        await ctx.send_error(transport, error)
                        return None
                    if parser.upgrade_tail is not None:
                        # An Upgrade we do not speak on a non-WebSocket route was
                        # answered above; llhttp cannot resume after it.
                        return None
            if scope.cancelled_caught:
                log.debug("connection from %s timed out waiting for a request", self.client)
        finally:
            parser.close()
            self.parser = None
            self.conns.discard(self)
            observer = ctx.observer
            if observer is not None:
                observer.http_ended(self.requests)
        return None  # the caller closes the transport

    def expire(self) -> None:
        """The deadline passed (the server's reaper): end the connection.
        A task parked on the poller is woken with the end: cheaper than
        cancelling its scope, which raises Cancelled through the task (a
        slowloris flood is mostly connections dropped so)."""
        self.deadline = _INF  # once
        transport = self.transport
        if isinstance(transport, SocketTransport):
            poller = transport.poller
            if poller is not None and poller.wake(transport.sock.fileno(), _EXPIRED):
                return
        if self.scope is not None:
            self.scope.cancel()

    def poll_step(self, sock: socket.socket) -> object:
        """One read of :meth:`serve`, done inline by the server's poller
        while this task is parked: parse it and answer the requests it
        completes whose handler can answer without waiting.

        Returns None to stay parked, ``WRITE_LATER`` when answers wait for
        :meth:`write_step`; or wakes the task with 0 (the client is gone),
        a large read (copied: the buffer is shared) for ``_feed``, or -1:
        the rest needs the task (a request to dispatch, an unsent response
        rest, an error to answer, the end of keep-alive).
        """
        result: object = -1  # if the step raises: what it answered goes out first
        self._holding = True
        try:
            result = self._step(sock)
        finally:
            self._holding = False
            if self._held and result is not None:
                self._write_held()
        return WRITE_LATER if self._held else result

    def write_step(self, sock: socket.socket) -> object:
        """Write the answers the last step held; -1 wakes the task (for an
        unsent rest, or the end of the connection), None stays parked."""
        if self._held:  # else a later step of the round wrote it
            self._write_held()
        return -1 if self._unsent is not None or not self.keep_alive else None

    def _write_held(self) -> None:
        held = self._held
        data = held[0] if len(held) == 1 else b"".join(held)
        held.clear()
        self.send_now(data)

    def _step(self, sock: socket.socket) -> object:
        view = self.ctx.recv_buffer
        try:
            n = sock.recv_into(view)
        except BlockingIOError:
            return None
        except OSError:
            return 0
        if n == 0:
            return 0
        if n > _FEED_SLICE:
            return bytes(view[:n])
        parser = self.parser
        assert parser is not None
        was_idle = not self._first and parser.idle
        try:
            parser.feed(view[:n])
        except HTTPError as exc:
            self._failed = exc.with_traceback(None)  # raised again in the task
            return -1
        if parser.expect_continue or parser.upgrade_tail is not None:
            return -1
        requests = parser.requests
        if not requests:
            if parser.receiving_body:
                self.deadline = trio.current_time() + self.ctx.limits.handshake_timeout
            elif was_idle:
                self.deadline = min(self.deadline, trio.current_time() + self.ctx.limits.handshake_timeout)
            return None
        self.deadline = _INF
        router = self.router
        while requests:
            req = requests[0]
            if req.upgrade:
                return -1
            handler, _ = router.match(req.path, req.method)
            answer = None if handler is None or (req.body and handler.rejects_body) else handler.answer_now
            if answer is None:
                return -1  # errors, streams, files: the task's dispatch
            requests.popleft()
            self.requests += 1
            self._first = False
            later = answer(self, req)
            if later is not None:
                self._later = (req, handler, later)
                return -1
            if self._unsent is not None or not self.keep_alive:
                return -1
        self.deadline = trio.current_time() + self.ctx.limits.keepalive_timeout
        return None

    async def _after_step(self) -> bool:
        """Finish what a step left to this task (see :meth:`poll_step`);
        False once the connection is to end. Raises the HTTPError of a
        refused request, for :meth:`serve` to answer."""
        unsent = self._unsent
        if unsent is not None:
            self._unsent = None
            if not await self.transport.send_all(unsent):
                self.keep_alive = False
        later = self._later
        if later is not None:
            self._later = None
            req, handler, result = later
            await handler.finish(self, req, result)
        failed = self._failed
        if failed is not None:
            self._failed = None
            try:
                raise failed
            finally:
                del failed  # no cycle through this frame's traceback
        return self.keep_alive

    def drain(self) -> None:
        """The server is shutting down: a request already started (its head
        arriving, its handler running) is answered with ``Connection:
        close``; a connection waiting for a request with none of it
        received (idle keep-alive, or nothing sent yet) ends now."""
        self.keep_alive = False
        parser = self.parser
        scope = self.scope
        # deadline is finite only while waiting for a request; requests
        # queued means one is complete (a sliced read may sit at a boundary).
        if scope is not None and parser is not None and self.deadline != _INF and parser.idle and not parser.requests:
            scope.cancel()

    async def _dispatch(self, req: Request, tail: bytes) -> Session | None:
        """Route one request: the handler answers it, or returns the
        session that takes the connection over."""
        self.requests += 1
        handler, allowed = self.router.match(req.path, req.method)
        if handler is None:
            if allowed:
                await self.respond(
                    req,
                    405,
                    [("Allow", ", ".join(allowed)), ("Content-Type", "text/plain; charset=utf-8")],
                    b"Method Not Allowed\n",
                )
            else:
                await self.respond(req, 404, [("Content-Type", "text/plain; charset=utf-8")], b"Not Found\n")
            return None
        if req.body and handler.rejects_body:
            # As NNG: static handlers take no request body.
            self.keep_alive = False
            await self.respond(req, 400, [("Content-Type", "text/plain; charset=utf-8")], b"Unexpected body\n")
            return None
        return await handler.handle(self.ctx, self, req, tail)

    async def _feed(self, parser: RequestParser, data: memoryview) -> memoryview | None:
        """Parse ``data`` (owned, larger than a slice) a slice at a time.

        Returns the bytes left unparsed once a request is queued (or None):
        the caller answers it before parsing further. After every
        ``_FEED_BUDGET`` bytes parsed the other connections get a turn, so
        no request (1-byte chunks, thousands of pipelined requests) holds
        the server for long.
        """
        end = len(data)
        pos = 0
        while pos < end:
            stop = min(pos + _FEED_SLICE, end)
            parser.feed(data[pos:stop])
            # Answering a request costs far more than parsing it.
            self._unyielded += stop - pos + len(parser.requests) * _REQUEST_WEIGHT
            pos = stop
            if parser.upgrade_tail is not None:
                # The rest of the read is already WebSocket data.
                parser.upgrade_tail += bytes(data[pos:])
                return None
            if self._unyielded >= _FEED_BUDGET:
                self._unyielded = 0
                await trio.lowlevel.checkpoint()
            if parser.requests:
                return data[pos:] if pos < end else None
        return None
