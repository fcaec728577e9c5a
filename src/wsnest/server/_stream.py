"""The stream session: the ``conn`` of a ``handler_stream`` callback
(chunked responses: server-sent events, NDJSON) and its loop.

The session is run by the connection task like a WebSocket session:
``run(tail)`` serves it, the task then closes the transport and awaits
``finish()`` (``on_close``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from .._errors import ErrorCode
from ..http import Request, build_response
from ..http._response import header_pairs
from ._contract import call_maybe_async
from ._membership import GroupMember
from ._outbox import Outbox
from ._transport import SocketTransport

if TYPE_CHECKING:
    from ._contract import ServerContext
    from ._transport import Transport

log = logging.getLogger("wsnest")

_FRAMING = ("content-length", "transfer-encoding", "connection")


class StreamCallbacks(Protocol):
    """The user's callbacks of a stream route (``StreamHandler`` has them)."""

    @property
    def on_request(self) -> Callable[[StreamConnection, Request], object]:
        """``on_request(conn, req)``: starts the response."""

    @property
    def on_close(self) -> Callable[[StreamConnection], object] | None:
        """``on_close(conn)``: runs once when the stream ends."""


class StreamConnection(Outbox, GroupMember):
    """The ``conn`` of a :func:`handler_stream` callback.

    ``send`` never blocks: it queues one chunk and returns 0, or 7 once the
    stream is closed (by either side), or 8 while more than
    ``send_high_water`` bytes wait for a slow client.
    """

    __slots__ = (
        "_callbacks",
        "_cancel",
        "_closed",
        "_head_only",
        "_headers",
        "_headers_sent",
        "_mode",
        "_req",
        "_status",
        "id",
    )

    def __init__(
        self, server: ServerContext, transport: Transport, req: Request, conn_id: int, callbacks: StreamCallbacks
    ) -> None:
        super().__init__(server, transport)
        self.id = conn_id
        self._callbacks = callbacks
        self._req = req
        self._status = 200
        self._headers: list[tuple[str, str]] = []
        self._headers_sent = False
        self._closed = False
        self._head_only = req.method == "HEAD"
        # HTTP/1.1 streams are chunked; HTTP/1.0 ones end when we close.
        self._mode = "chunked" if req.http_version == "1.1" else "raw"
        self._cancel: trio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<StreamConnection id={self.id} {'closed' if self._closed else 'open'}>"

    @property
    def closed(self) -> bool:
        """True once the stream was closed by either side."""
        return self._closed

    def set_status(self, status: int) -> None:
        """Set the response status; only before the first ``send``."""
        if self._headers_sent:
            raise RuntimeError("cannot set status after headers have been sent")
        if isinstance(status, bool) or not isinstance(status, int) or not 200 <= int(status) <= 599:
            raise ValueError(f"status: expected an int within 200-599, got {status!r}")
        self._status = int(status)

    def set_header(self, name: str, value: str) -> None:
        """Set (replace) a response header; only before the first ``send``."""
        if self._headers_sent:
            raise RuntimeError("cannot set headers after headers have been sent")
        [(name, value)] = header_pairs([(name, value)])
        if name.lower() in _FRAMING:
            raise ValueError(f"name: {name} is managed by wsnest for streams")
        low = name.lower()
        self._headers = [(k, v) for k, v in self._headers if k.lower() != low]
        self._headers.append((name, value))

    def _head(self, empty: bool = False) -> bytes:
        self._headers_sent = True
        req = self._req
        if empty:
            return build_response(self._status, self._headers, b"", keep_alive=False, version=req.http_version)
        headers = list(self._headers)
        if self._mode == "chunked":
            headers.append(("Transfer-Encoding", "chunked"))
        # Raw mode: no length and no chunking, the body ends when the connection does.
        return build_response(
            self._status,
            headers,
            b"",
            keep_alive=False,
            version=req.http_version,
            close_delimited=self._mode == "raw",
        )

    def send(self, data: str | bytes | bytearray | memoryview) -> int:
        """Send ``data`` as one chunk; ``""`` sends nothing (and never ends the stream)."""
        if isinstance(data, str):
            payload = data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
        else:
            raise TypeError(f"data: expected str or bytes, got {type(data).__name__}")
        if self._closed:
            return self._refuse(ErrorCode.CLOSED)
        if self._buffered() > self._server.limits.send_high_water:
            return self._refuse(ErrorCode.AGAIN)
        out = self._out
        if not self._headers_sent:
            out += self._head()
        if payload and not self._head_only:
            if self._mode == "chunked":
                out += b"%x\r\n" % len(payload)
                out += payload
                out += b"\r\n"
            else:
                out += payload
        self._schedule_flush()
        return ErrorCode.OK

    def close(self) -> int:
        """End the response (a complete empty one if nothing was sent) and
        close the connection. Returns 0, or 7 if already closed."""
        if self._closed:
            return ErrorCode.CLOSED
        self._closed = True
        if not self._headers_sent:
            self._out += self._head(empty=True)
        elif self._mode == "chunked" and not self._head_only:
            self._out += b"0\r\n\r\n"
        if self._cancel is not None:
            self._cancel.cancel()  # the connection task writes the rest and closes
        return ErrorCode.OK

    def _broken(self) -> None:
        super()._broken()
        self._closed = True
        if self._cancel is not None:
            self._cancel.cancel()

    # -- the session (run by the connection task) -------------------------------

    async def run(self, tail: bytes) -> None:
        """Run ``on_request``, then write until the stream is closed (by
        either side); the connection task closes the transport after."""
        transport = self._transport
        server = self._server
        if server.observer is not None:
            server.observer.stream_started()
        try:
            with trio.CancelScope() as scope:
                self._cancel = scope
                server.stream_opened(self)  # a shutdown ends it after its drain time (now, if over)
                async with trio.open_nursery() as nursery:
                    # Reading is the only way to notice that the client went
                    # away; a disconnect also cancels a running async on_request.
                    if isinstance(transport, SocketTransport):
                        transport.leave_poller()  # registered while it spoke HTTP
                    nursery.start_soon(self._watch, transport, server.recv_buffer)
                    await self._start()
                    await self._flush()
        finally:
            server.stream_closed(self)
            self._cancel = None
            self._closed = True
            with server.finalizing(), trio.move_on_after(server.limits.close_timeout):
                await self._final_flush()

    async def finish(self) -> None:
        """Run ``on_close`` (the transport is closed); errors are logged."""
        if self._server.observer is not None:
            self._server.observer.stream_ended(self, self._status)
        on_close = self._callbacks.on_close
        if on_close is None:
            return
        try:
            await call_maybe_async(on_close, self)
        except Exception:
            log.exception("wsnest: on_close callback raised on stream %d", self.id)

    async def _start(self) -> None:
        req = self._req
        try:
            await call_maybe_async(self._callbacks.on_request, self, req)
        except Exception:
            log.exception("wsnest: on_request callback raised on stream %d", self.id)
            if not self._headers_sent:
                self._headers_sent = True
                self._status = 500
                body = b"Server Error\n"
                error = build_response(
                    500,
                    [("Content-Type", "text/plain; charset=utf-8")],
                    b"" if self._head_only else body,
                    content_length=len(body),
                    keep_alive=False,
                )
                self._out += error
                self._mode = "raw"  # the 500 is complete: no terminating chunk
            self.close()
            return
        if req.method == "HEAD" and not self._closed:
            self.close()  # a HEAD response is complete once its head is out

    async def _watch(self, transport: Transport, view: memoryview) -> None:
        while await transport.receive_into(view) > 0:
            pass  # anything the client sends after its request is ignored
        self._broken()
