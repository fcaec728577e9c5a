"""Connections past ``max_connections``: one 503, then closed.

A refused connection is served by the ordinary HTTP connection code with a
router that answers every request ``503 Service Unavailable`` with
``Retry-After`` and ``Connection: close``; a WebSocket upgrade gets that
503 instead of a 101. What a refusal may cost is bounded by the server: its
whole life (TLS handshake, request, answer) within ``REFUSE_TIME`` (or
``handshake_timeout`` if shorter), and at most ``MAX_REFUSING`` at once;
past that a connection is closed unanswered, so a flood of refused clients
holds at most ``MAX_REFUSING`` sockets beyond ``max_connections``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._contract import Handler
from ._routing import Router

if TYPE_CHECKING:
    from ..http import Request
    from ._contract import Responder, ServerContext, Session

#: Refusals in progress at once; later ones are closed unanswered.
MAX_REFUSING = 64
#: Seconds a refused connection may take to send its request and read the 503.
REFUSE_TIME = 2.0
#: Seconds a refused client is asked to wait before trying again.
RETRY_AFTER = "1"

_HEADERS = [("Retry-After", RETRY_AFTER), ("Content-Type", "text/plain; charset=utf-8")]
_BODY = b"Service Unavailable: too many connections\n"


class _Unavailable(Handler):
    """Answers any request 503 and ends the connection."""

    path = "/"
    method = "*"
    prefix = True

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> Session | None:
        """Send the 503 with ``Connection: close``."""
        conn.keep_alive = False
        await conn.respond(req, 503, list(_HEADERS), _BODY)
        return None


_UNAVAILABLE = _Unavailable()


class RefusingRouter(Router):
    """Routes every request (any path, any method) to the 503."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__([_UNAVAILABLE])

    def match(self, path: str, method: str) -> tuple[Handler | None, list[str]]:
        """Always the 503 handler."""
        return _UNAVAILABLE, []
