"""``handler_ws``: WebSocket endpoints."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._errors import HTTPError, Reject
from .._limits import WS_FIELDS
from ..core._deflate import negotiate
from ..http import Request
from ..http._upgrade import check_upgrade, switching_protocols
from ..server import MODE_AUTO, MODE_BYTES, MODE_TEXT, WebSocket
from ._base import Handler, call_maybe_async, check_callback, check_optional_callback, check_path, is_async

if TYPE_CHECKING:
    from ..server import Responder, ServerContext

log = logging.getLogger("wsnest")


class WebSocketHandler(Handler):
    """A WebSocket endpoint; made by :func:`handler_ws`."""

    upgrades = True

    def __init__(
        self,
        path: str,
        on_message: Callable[[WebSocket, Any], object] | None,
        on_open: Callable[[WebSocket, Request], object] | None = None,
        on_close: Callable[[WebSocket], object] | None = None,
        textframes: bool | None = False,
        subprotocols: Sequence[str] = (),
        origins: Sequence[str | None] | None = None,
        limits: dict[str, Any] | None = None,
        permessage_deflate: bool = False,
        serve: Callable[[WebSocket], Awaitable[object]] | None = None,
        streaming: bool = False,
    ) -> None:
        self.path = check_path(path)
        if (on_message is None) == (serve is None):
            raise TypeError(
                "handler_ws: give on_message (callbacks) or serve (one function pulls the messages), one of them"
            )
        self.on_message = None if on_message is None else check_callback("on_message", on_message)
        #: The function that owns each connection and pulls its messages.
        self.serve = check_optional_callback("serve", serve)
        #: True: messages wait for ``ws.receive()``, not for on_message.
        self.pull = serve is not None
        if not isinstance(streaming, bool):
            raise TypeError(f"streaming: expected True or False, got {streaming!r}")
        if streaming and serve is None:
            raise TypeError("streaming: needs serve= (on_message gets whole messages)")
        self.streaming = streaming
        self.on_open = check_optional_callback("on_open", on_open)
        self.on_close = check_optional_callback("on_close", on_close)
        if textframes not in (True, False, None):
            raise TypeError(f"textframes: expected True, False or None, got {textframes!r}")
        self.mode = MODE_AUTO if textframes is None else MODE_TEXT if textframes else MODE_BYTES
        if isinstance(subprotocols, str):
            raise TypeError("subprotocols: expected a list of names, got a single str")
        self.subprotocols = tuple(subprotocols)
        if isinstance(origins, str):
            raise TypeError("origins: expected a list of origins, got a single str")
        self.origins = None if origins is None else tuple(origins)
        if not isinstance(permessage_deflate, bool):
            raise TypeError(f"permessage_deflate: expected True or False, got {permessage_deflate!r}")
        self.permessage_deflate = permessage_deflate
        limits = dict(limits or {})
        unknown = set(limits) - WS_FIELDS
        if unknown:
            raise TypeError(f"handler_ws: unknown limit(s) {', '.join(sorted(unknown))}")
        self.limit_overrides: Mapping[str, Any] = limits
        # Also set on the first call that returns an awaitable (an async
        # def under a decorator that hides it): see WebSocket._adopt_result.
        self.message_is_async = is_async(self.on_message)

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> WebSocket | None:
        """Answer an upgrade request routed here: check it, run ``on_open``
        and queue the 101. Returns the session for the connection task to
        run (``ws.run(tail)``), or None when the upgrade was refused (the
        error response is sent and the connection closes)."""
        ws = await self._accept(ctx, conn, req)
        if ws is None:
            conn.keep_alive = False
        return ws

    async def _accept(self, ctx: ServerContext, conn: Responder, req: Request) -> WebSocket | None:
        transport = conn.transport
        try:
            accept, subprotocol = check_upgrade(req, self.subprotocols, self.origins)
            if not req.upgrade:
                # The headers pass our check but llhttp did not switch
                # protocols: no session could ever run, so never accept it
                # (on_open would run with no 101 and no on_close).
                raise HTTPError(400, "Not an upgrade request")
        except HTTPError as exc:
            await ctx.send_error(transport, exc, head_only=req.method == "HEAD")
            return None
        limits = ctx.limits_for(self)
        transport.send_timeout = limits.send_timeout  # the handler's own, if set
        # Offers the client cannot be answered with are declined: no
        # extension, never an error.
        deflate = negotiate(req.headers.getall("sec-websocket-extensions")) if self.permessage_deflate else None
        head = switching_protocols(accept, subprotocol, None if deflate is None else deflate.response())
        ws_id = ctx.next_id()
        ws = WebSocket(
            ctx,
            self,
            transport,
            ws_id,
            limits,
            self.mode,
            subprotocol,
            deflate,
            head=head,
            request=req,
            streaming=self.streaming,
        )
        if self.on_open is not None:
            try:
                result = await call_maybe_async(self.on_open, ws, req)
            except Reject as rej:
                result = rej
            except Exception:
                log.exception("wsnest: on_open callback raised for %s", req.path)
                await ctx.send_error(transport, HTTPError(500, "Internal Server Error"))
                return None
            if isinstance(result, Reject):
                await ctx.send_error(transport, HTTPError(result.status, result.reason or "Rejected"))
                return None
        log.debug("websocket %d opened on %s from %s", ws.id, req.path, req.client)
        return ws

    async def call_on_close(self, ws: WebSocket) -> None:
        """Run ``on_close`` once; errors are logged, never raised."""
        if self.on_close is None:
            return
        try:
            await call_maybe_async(self.on_close, ws)
        except Exception:
            log.exception("wsnest: on_close callback raised on websocket %d", ws.id)


def handler_ws(
    path: str,
    on_message: Callable[[WebSocket, Any], object] | None = None,
    on_open: Callable[[WebSocket, Request], object] | None = None,
    on_close: Callable[[WebSocket], object] | None = None,
    textframes: bool | None = False,
    *,
    serve: Callable[[WebSocket], Awaitable[object]] | None = None,
    streaming: bool = False,
    subprotocols: Sequence[str] = (),
    origins: Sequence[str | None] | None = None,
    permessage_deflate: bool = False,
    **limits: Any,
) -> WebSocketHandler:
    """Create a WebSocket handler for :func:`http_server`.

    Args:
        path: URI path for WebSocket connections, e.g. ``"/ws"``.
        on_message: ``on_message(ws, data)``, called for every message;
            plain or ``async def`` (a plain function returning an awaitable,
            such as a wrapped ``async def``, is awaited too: the handler
            then dispatches the async way); other return values are ignored.
            Give either ``on_message`` or ``serve``.
        on_open: ``on_open(ws, req)``, called before the upgrade is
            accepted; raise or return :class:`Reject` to refuse it.
            ``req`` has ``uri``, ``headers``, ``path``, ``query``, ``client``.
        on_close: ``on_close(ws)``, called exactly once when an accepted
            connection ends, however it ends (with ``serve``: once the
            connection has ended and ``serve`` has returned).
        textframes: ``False``: messages arrive as ``bytes`` and are sent as
            BINARY; ``True``: they arrive as ``str`` and are sent as TEXT;
            ``None``: TEXT arrives as ``str``, BINARY as ``bytes``, and
            the frame type sent follows the Python type.
        serve: ``async def serve(ws)``, the other style: one function owns
            each connection and pulls its messages with ``await
            ws.receive()`` or ``async for msg in ws`` (which ends on a
            normal close and raises :class:`ConnectionClosedError` on
            another). When it returns the connection closes with 1000;
            if it raises, with 1011 (logged). It runs in its own task,
            after ``on_open`` accepted, and is not cancelled when the
            connection ends, only when the server stops. At most
            ``max_queue`` messages wait for it; then reading pauses.
        streaming: with ``serve``: messages are handed over piece by piece
            as they arrive (``ws.receive_stream()``), never held whole by
            the parser, so a message larger than memory can be consumed
            (set ``max_message_size=None`` to lift its bound);
            ``ws.receive()`` still gives whole messages.
        subprotocols: subprotocols this endpoint speaks; the first one the
            client offers (in its order) is chosen, none if no match.
        origins: allowed ``Origin`` values (``None`` in the list allows
            clients that send no Origin); others get 403.
        permessage_deflate: ``True`` accepts a client's permessage-deflate
            offer (RFC 7692): messages are then compressed both ways
            (``ws.permessage_deflate`` tells). Off by default; a compressed
            message still may not inflate past ``max_message_size`` (1009).
        **limits: per-handler WebSocket limits (``max_message_size``,
            ``close_timeout``, ``ping_interval``, ``ping_timeout``,
            ``send_timeout``, ``send_high_water``, ``max_queue``); see
            :class:`Limits`.
    """
    return WebSocketHandler(
        path,
        on_message,
        on_open,
        on_close,
        textframes,
        subprotocols,
        origins,
        limits,
        permessage_deflate,
        serve,
        streaming,
    )
