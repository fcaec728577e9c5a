"""``handler_stream`` (chunked responses: SSE, NDJSON) and ``format_sse``."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from .._errors import ErrorCode
from ..http import Request
from ..http._response import build_response, header_pairs
from ..server._outbox import Outbox
from ._base import Handler, call_maybe_async, check_callback, check_optional_callback, check_path
from ._http import TEXT_PLAIN, check_method

if TYPE_CHECKING:
    from ..server._connection import HttpConnection
    from ..server._server import HttpServer
    from ..server._transport import Transport

log = logging.getLogger("wsnest")

_FRAMING = ("content-length", "transfer-encoding", "connection")


class StreamConnection(Outbox):
    """The ``conn`` of a :func:`handler_stream` callback.

    ``send`` never blocks: it queues one chunk and returns 0, or 7 once the
    stream is closed (by either side), or 8 while more than
    ``send_high_water`` bytes wait for a slow client.
    """

    __slots__ = ("_cancel", "_closed", "_head_only", "_headers", "_headers_sent", "_mode", "_req", "_status", "id")

    def __init__(self, server: HttpServer, conn: HttpConnection, req: Request, conn_id: int) -> None:
        super().__init__(server, conn.transport)
        self.id = conn_id
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
        head = build_response(self._status, headers, b"", keep_alive=False, version=req.http_version)
        if self._mode == "raw":
            # No length and no chunking: the body ends when the connection does.
            head = head.replace(b"Content-Length: 0\r\n", b"", 1)
        return head

    def send(self, data: str | bytes | bytearray | memoryview) -> int:
        """Send ``data`` as one chunk; ``""`` sends nothing (and never ends the stream)."""
        if isinstance(data, str):
            payload = data.encode("utf-8")
        elif isinstance(data, (bytes, bytearray, memoryview)):
            payload = bytes(data)
        else:
            raise TypeError(f"data: expected str or bytes, got {type(data).__name__}")
        if self._closed:
            return ErrorCode.CLOSED
        if self._buffered() > self._server.limits.send_high_water:
            return ErrorCode.AGAIN
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


class StreamHandler(Handler):
    """A streaming route; made by :func:`handler_stream`."""

    def __init__(
        self,
        path: str,
        on_request: Callable[[StreamConnection, Request], object],
        on_close: Callable[[StreamConnection], object] | None,
        method: str,
        prefix: bool,
    ) -> None:
        self.path = check_path(path)
        self.on_request = check_callback("on_request", on_request)
        self.on_close = check_optional_callback("on_close", on_close)
        self.method = check_method(method)
        self.prefix = bool(prefix)

    async def handle_http(self, server: HttpServer, conn: HttpConnection, req: Request) -> bool:
        stream = StreamConnection(server, conn, req, server._next_id())
        transport = conn.transport
        try:
            with trio.CancelScope() as scope:
                stream._cancel = scope
                async with trio.open_nursery() as nursery:
                    # Reading is the only way to notice that the client went
                    # away; a disconnect also cancels a running async on_request.
                    nursery.start_soon(_watch, stream, transport, server._recv_view)
                    await self._start(stream, req)
                    await stream._flush()
        finally:
            stream._cancel = None
            stream._closed = True
            with server._finalizing():
                with trio.move_on_after(server.limits.close_timeout):
                    await stream._final_flush()
                await transport.aclose()
                if self.on_close is not None:
                    try:
                        await call_maybe_async(self.on_close, stream)
                    except Exception:
                        log.exception("wsnest: on_close callback raised on stream %d", stream.id)
        return True

    async def _start(self, stream: StreamConnection, req: Request) -> None:
        try:
            await call_maybe_async(self.on_request, stream, req)
        except Exception:
            log.exception("wsnest: on_request callback raised on stream %d", stream.id)
            if not stream._headers_sent:
                stream._headers_sent = True
                body = b"Server Error\n"
                error = build_response(
                    500,
                    [("Content-Type", TEXT_PLAIN)],
                    b"" if stream._head_only else body,
                    content_length=len(body),
                    keep_alive=False,
                )
                stream._out += error
                stream._mode = "raw"  # the 500 is complete: no terminating chunk
            stream.close()
            return
        if req.method == "HEAD" and not stream._closed:
            stream.close()  # a HEAD response is complete once its head is out


async def _watch(stream: StreamConnection, transport: Transport, view: memoryview) -> None:
    while await transport.receive_into(view) > 0:
        pass  # anything the client sends after its request is ignored
    stream._broken()


def handler_stream(
    path: str,
    on_request: Callable[[StreamConnection, Request], object],
    on_close: Callable[[StreamConnection], object] | None = None,
    method: str = "*",
    prefix: bool = False,
) -> StreamHandler:
    """Create a streaming HTTP handler (server-sent events, NDJSON, ...).

    ``on_request(conn, req)`` starts the response; keep ``conn`` to send
    more later. ``conn.send(data)`` writes one chunk, ``conn.close()`` ends
    the response, ``conn.set_status()``/``conn.set_header()`` work before
    the first send, ``conn.id`` is unique per server (shared with
    WebSockets). ``on_close(conn)`` runs exactly once when the stream ends,
    also when the client disconnects.
    """
    return StreamHandler(path, on_request, on_close, method, prefix)


_NEWLINES = re.compile(r"\r\n|\r|\n")


def format_sse(data: str, event: str | None = None, id: str | None = None, retry: int | None = None) -> str:
    """Format one server-sent event.

    ``data`` is split on any newline (``\\r\\n``, ``\\r``, ``\\n``) into
    ``data:`` lines (an empty string still gives one ``data:`` line);
    ``event`` and ``id`` must not contain newlines (``ValueError``);
    ``retry`` is a reconnection time in milliseconds.
    """
    if not isinstance(data, str):
        raise TypeError(f"data: expected str, got {type(data).__name__}")
    lines: list[str] = []
    for name, value in (("event", event), ("id", id)):
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"{name}: expected str or None, got {type(value).__name__}")
        if _NEWLINES.search(value):
            raise ValueError(f"{name}: must not contain a newline")
        lines.append(f"{name}: {value}")
    if retry is not None:
        if isinstance(retry, bool) or not isinstance(retry, int) or retry < 0:
            raise ValueError(f"retry: expected a non-negative int (milliseconds), got {retry!r}")
        lines.append(f"retry: {retry}")
    lines.extend(f"data: {part}" for part in _NEWLINES.split(data))
    return "\n".join(lines) + "\n\n"
