"""Public result codes and exceptions."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Return codes of ``ws.send()`` and friends, numbered as in NNG."""

    OK = 0
    #: The connection is closed or closing.
    CLOSED = 7
    #: The send buffer is over its high-water mark (a slow reader); try later.
    AGAIN = 8
    #: The message is larger than the message size limit.
    MSG_SIZE = 17


class Reject(Exception):
    """Raise (or return) from ``on_open`` to refuse a WebSocket upgrade.

    The client gets an HTTP response with ``status`` and ``reason`` as its
    body instead of the ``101 Switching Protocols``.
    """

    def __init__(self, status: int = 403, reason: str = "") -> None:
        status = int(status)
        if not 400 <= status <= 599:
            raise ValueError(f"status: a rejection needs a 4xx or 5xx status, got {status}")
        super().__init__(status, reason)
        self.status = status
        self.reason = reason


class HTTPError(Exception):
    """Internal: a request that must be answered with an error status."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.headers = headers or []


class ConnectionClosed(Exception):
    """``ws.receive()`` on a WebSocket that is closed: nothing more will
    arrive. ``code`` and ``reason`` are the close code and reason
    (1006 and ``""`` when the connection dropped without a close frame)."""

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"WebSocket closed with {code}" + (f" ({reason})" if reason else ""))
        self.code = code
        self.reason = reason


class ConnectionClosedOK(ConnectionClosed):
    """Closed normally (1000, 1001, or 1005: a close frame without a code):
    ``async for msg in ws`` just ends."""


class ConnectionClosedError(ConnectionClosed):
    """Closed with an error code, or dropped (1006)."""


# -- client side -----------------------------------------------------------------


class InvalidURL(ValueError):
    """A WebSocket URL that cannot be connected to; ``url`` is the URL given."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"url: {message}: {url!r}")
        self.url = url


class HandshakeError(Exception):
    """The opening handshake with a server failed (base of the specific errors)."""


class InvalidStatus(HandshakeError):
    """The server answered the upgrade request with a status other than 101.

    ``headers`` are the response headers as received, ``body`` the start of
    the body (at most 4096 bytes).
    """

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes = b"") -> None:
        detail = f"{status} {reason}".rstrip()
        super().__init__(f"server rejected the WebSocket upgrade: HTTP {detail}")
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body


class InvalidHandshake(HandshakeError):
    """A malformed response, or a 101 whose headers are not a valid WebSocket
    upgrade (``Upgrade``, ``Connection``, ``Sec-WebSocket-Accept``)."""


class InvalidExtension(HandshakeError):
    """The server chose an extension the client did not offer, or
    permessage-deflate parameters the client cannot accept."""


class InvalidSubprotocol(HandshakeError):
    """The server chose a subprotocol the client did not offer (or one when
    none was offered)."""
