"""``connect()``: a WebSocket client connection on trio.

The connection is the same :class:`~wsnest.WebSocket` object a server's
callbacks get, on the same sans-I/O session (in the client role: frames
masked with a fresh random key each), the same transports and the same
limits. Its messages are pulled: ``await ws.receive()`` or
``async for msg in ws``.
"""

from __future__ import annotations

import logging
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin

import trio

from .._errors import HandshakeError, InvalidStatus
from .._limits import DEFAULT_LIMITS, WS_FIELDS, Limits
from .._version import __version__

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup
from ..core import CLIENT, MODE_AUTO, MODE_BYTES, MODE_TEXT, warn_core_fallback
from ..http import ClientHandshake, HandshakeResult, WsURL, parse_ws_url
from ..server import SocketTransport, TLSTransport, Transport, WebSocket
from ._context import ClientContext

log = logging.getLogger("wsnest")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _Pull:
    """The ``handler`` of a client connection: messages are pulled with
    ``receive()``; there is no ``on_close`` callback."""

    pull = True
    message_is_async = False
    on_message = None
    serve = None  # the connect() block is the application

    async def call_on_close(self, ws: WebSocket) -> None:
        """Nothing to call."""


_PULL = _Pull()


@asynccontextmanager
async def connect(
    url: str,
    *,
    subprotocols: Sequence[str] = (),
    headers: Sequence[tuple[str, str]] | Mapping[str, str] = (),
    origin: str | None = None,
    user_agent: str | None = None,
    permessage_deflate: bool = False,
    tls: ssl.SSLContext | None = None,
    open_timeout: float = 10.0,
    max_redirects: int = 10,
    textframes: bool | None = None,
    streaming: bool = False,
    **limits: Any,
) -> AsyncIterator[WebSocket]:
    """Open a WebSocket connection to ``url`` (``ws://`` or ``wss://``).

    ``async with wsnest.connect(url) as ws:`` gives an open
    :class:`~wsnest.WebSocket`; leaving the block closes it (1000, waiting
    up to ``close_timeout`` for the server's reply).

    Args:
        url: ``ws://host[:port]/path?query`` or ``wss://...``.
        subprotocols: offered in this order; ``ws.subprotocol`` tells the
            server's choice.
        headers: extra request headers.
        origin: the ``Origin`` header, if any.
        user_agent: the ``User-Agent`` header (None: wsnest's own).
        permessage_deflate: offer compression (RFC 7692).
        tls: the ``ssl.SSLContext`` for ``wss://`` (default: the system's
            trust store, with hostname verification).
        open_timeout: seconds for the TCP connection, the TLS handshake and
            the opening handshake together (``TimeoutError``).
        max_redirects: 3xx answers followed at most (then ``InvalidStatus``).
        textframes: as ``handler_ws``: ``None`` (the default here) gives
            ``str`` for TEXT and ``bytes`` for BINARY and sends by Python
            type; ``True`` everything as text; ``False`` everything as bytes.
        streaming: messages are handed over piece by piece as they arrive
            (``ws.receive_stream()``), never held whole by the parser (set
            ``max_message_size=None`` to lift its bound); ``ws.receive()``
            still gives whole messages.
        **limits: the WebSocket fields of :class:`~wsnest.Limits`
            (``max_message_size``, ``ping_interval``, ``ping_timeout``,
            ``close_timeout``, ``send_timeout``, ``send_high_water``,
            ``max_queue``).

    Raises:
        InvalidURL: a bad ``url``.
        OSError: the TCP connection failed (refused, unreachable, ...).
        TimeoutError: not open within ``open_timeout``.
        InvalidStatus: the server answered other than 101 (status, headers
            and the start of the body are on the exception).
        HandshakeError: a 101 the client cannot accept (its subclasses say
            why), or a TLS handshake failure.
    """
    if textframes not in (True, False, None):
        raise TypeError(f"textframes: expected True, False or None, got {textframes!r}")
    if not isinstance(streaming, bool):
        raise TypeError(f"streaming: expected True or False, got {streaming!r}")
    unknown = set(limits) - WS_FIELDS
    if unknown:
        raise TypeError(f"connect: unknown limit(s) {', '.join(sorted(unknown))}")
    lim: Limits = DEFAULT_LIMITS.replace(**limits) if limits else DEFAULT_LIMITS
    if isinstance(max_redirects, bool) or not isinstance(max_redirects, int) or max_redirects < 0:
        raise ValueError(f"max_redirects: expected an integer >= 0, got {max_redirects!r}")
    mode = MODE_AUTO if textframes is None else MODE_TEXT if textframes else MODE_BYTES
    warn_core_fallback()  # once per process, as a server's start does
    if user_agent is None:
        user_agent = f"wsnest/{__version__}"
    request = {
        "subprotocols": subprotocols,
        "headers": headers,
        "origin": origin,
        "user_agent": user_agent,
        "permessage_deflate": permessage_deflate,
    }
    try:
        with trio.fail_after(open_timeout):
            transport, result = await _open(url, request, tls, lim, max_redirects)
    except trio.TooSlowError:
        raise TimeoutError(f"connect: {url} did not open within open_timeout={open_timeout} s") from None
    try:
        async with _bare_errors(), trio.open_nursery() as nursery:
            ctx = ClientContext(lim, nursery)
            nursery.start_soon(ctx.flusher)
            ws = WebSocket(
                ctx,
                _PULL,
                transport,
                ctx.next_id(),
                lim,
                mode,
                result.subprotocol,
                result.deflate,
                role=CLIENT,
                response_headers=result.headers,
                streaming=streaming,
            )
            ended = trio.Event()
            nursery.start_soon(_serve, ws, transport, result.tail, ended)
            try:
                yield ws
            finally:
                ctx.closing = True
                ws.close(1000)  # 7 if already closing or closed: nothing to do
                with trio.move_on_after(lim.close_timeout):
                    await ended.wait()
                nursery.cancel_scope.cancel()
    finally:
        await _close(transport)


@asynccontextmanager
async def _bare_errors() -> AsyncIterator[None]:
    """The block's own exception leaves ``connect()`` as it was raised, not
    wrapped in the ExceptionGroup of the connection's nursery (a
    ``ConnectionClosedError`` from ``receive()`` can be caught as such)."""
    try:
        yield
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


async def _serve(ws: WebSocket, transport: Transport, tail: bytes, ended: trio.Event) -> None:
    """The connection's reader: runs until the close handshake is over."""
    try:
        await ws.run(tail)
    finally:
        await _close(transport)
        ended.set()


async def _open(
    url: str, request: dict[str, Any], tls: ssl.SSLContext | None, limits: Limits, max_redirects: int
) -> tuple[Transport, HandshakeResult]:
    """Connect and run the opening handshake, following redirects."""
    target = parse_ws_url(url)
    for _ in range(max_redirects + 1):
        transport = await _dial(target, tls, limits)
        try:
            result = await _handshake(transport, ClientHandshake(target, **request))
        except InvalidStatus as exc:
            await _close(transport)
            location = _header(exc.headers, "location")
            if exc.status not in _REDIRECTS or location is None:
                raise
            new = parse_ws_url(_resolve(target, location))
            if target.secure and not new.secure:
                raise HandshakeError(f"connect: refusing the redirect from a wss:// URL to {location}") from exc
            log.debug("connect: %d redirect to %s", exc.status, location)
            target = new
            continue
        except BaseException:
            await _close(transport)
            raise
        return transport, result
    raise HandshakeError(f"connect: more than max_redirects={max_redirects} redirects from {url}")


async def _dial(target: WsURL, tls: ssl.SSLContext | None, limits: Limits) -> Transport:
    """The TCP connection (and TLS handshake) to ``target``."""
    stream = await trio.open_tcp_stream(target.host, target.port)
    # wsnest's transports drive a stdlib socket with trio's I/O waits.
    sock = socket.socket(fileno=stream.socket.detach())
    if not target.secure:
        return SocketTransport(sock, limits.send_timeout)
    transport = TLSTransport(sock, tls if tls is not None else ssl.create_default_context(), None, limits.send_timeout)
    reason = await transport.handshake(target.host, server_side=False)
    if reason is not None:
        await _close(transport)
        raise HandshakeError(f"connect: TLS handshake with {target.host} failed: {reason}")
    return transport


async def _handshake(transport: Transport, handshake: ClientHandshake) -> HandshakeResult:
    """Send the upgrade request and read the answer."""
    if not await transport.send_all(handshake.request()):
        raise HandshakeError("connect: the connection broke while sending the upgrade request")
    buf = memoryview(bytearray(16 * 1024))
    while True:
        n = await transport.receive_into(buf)
        result = handshake.receive(bytes(buf[:n]))  # b"": the server closed
        if result is not None:
            return result
        if n == 0:  # receive(b"") raises; never loop on a closed connection
            raise HandshakeError("connect: the server closed the connection during the handshake")


async def _close(transport: Transport) -> None:
    with trio.CancelScope(shield=True):
        await transport.aclose()


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _resolve(target: WsURL, location: str) -> str:
    """``location`` (absolute, or relative to ``target``) as a ws(s) URL;
    an http(s) location maps to ws(s)."""
    http = {"ws": "http", "wss": "https"}
    base = f"{'https' if target.secure else 'http'}://{target.host_header}{target.resource}"
    scheme, sep, rest = location.partition("://")
    if sep and scheme.lower() in http:
        location = f"{http[scheme.lower()]}://{rest}"
    joined = urljoin(base, location)
    scheme, _, rest = joined.partition("://")
    return f"{'wss' if scheme.lower() == 'https' else 'ws'}://{rest}"
