"""``handler_stream`` (chunked responses: SSE, NDJSON) and ``format_sse``.

The session itself, :class:`StreamConnection`, lives in ``wsnest.server``
beside the WebSocket session."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..http import Request
from ..server import StreamConnection
from ._base import Handler, check_callback, check_optional_callback, check_path
from ._http import check_method

if TYPE_CHECKING:
    from ..server import Responder, ServerContext

__all__ = ["StreamConnection", "StreamHandler", "format_sse", "handler_stream"]


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

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> StreamConnection:
        """Hand the connection over to a new stream session."""
        return StreamConnection(ctx, conn.transport, req, ctx.next_id(), self)


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
