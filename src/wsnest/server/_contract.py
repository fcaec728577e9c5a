"""The contract between the server and its handlers.

The server calls one method of a :class:`Handler` per request,
:meth:`Handler.handle`; what a handler may use of the server is the
:class:`ServerContext` interface, and of the connection the
:class:`Responder` interface. Handlers (``wsnest.handlers``) import this
module; nothing here imports them, so the dependency runs one way.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractContextManager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .._limits import Limits

if TYPE_CHECKING:
    import trio

    from .._errors import HTTPError
    from ..http import Request
    from ._observe import Observer
    from ._poller import Poller
    from ._transport import Transport

_NO_OVERRIDES: Mapping[str, Any] = MappingProxyType({})


async def call_maybe_async(fn: Callable[..., Any], *args: Any) -> Any:
    """Call a plain or ``async def`` callback and return its result."""
    result = fn(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


class Session(Protocol):
    """What a handler hands a connection over to (a WebSocket, a stream).

    The connection task runs ``await session.run(tail)`` once the HTTP
    state is released, then closes the transport (it alone does) and,
    shielded, awaits ``session.finish()``.
    """

    async def run(self, tail: bytes) -> None:
        """Serve the connection; ``tail`` holds the bytes read after the request."""

    async def finish(self) -> None:
        """Run the user's ``on_close`` once the transport is closed; never raises."""


class Closable(Protocol):
    """A session the server closes when it shuts down."""

    def close(self, code: int = ..., reason: str = ...) -> int:
        """Start closing the session (never blocks)."""


class Endable(Protocol):
    """A stream the server ends when its shutdown's drain time is over."""

    def close(self) -> int:
        """End the response properly and close (never blocks)."""


class Responder(Protocol):
    """The HTTP connection as a handler sees it."""

    keep_alive: bool
    transport: Transport
    client: tuple[str, int] | None

    async def send(self, data: bytes) -> bool:
        """Write ``data`` as it is; False if the client is gone."""

    async def respond(self, req: Request, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Send a complete response to ``req``."""

    async def respond_chunks(
        self,
        req: Request,
        status: int,
        headers: list[tuple[str, str]],
        length: int,
        chunks: AsyncIterator[bytes],
    ) -> None:
        """Send a response whose ``length`` bytes come from ``chunks``."""

    def send_now(self, data: bytes) -> None:
        """Write ``data`` without waiting (inline answers: the connection's
        task writes what the kernel did not take)."""

    def respond_now(self, req: Request, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """:meth:`respond` without waiting (see :meth:`send_now`)."""


class ServerContext(Protocol):
    """What handlers and sessions may use of the server (``HttpServer``
    implements it)."""

    @property
    def limits(self) -> Limits:
        """The server's limits."""

    @property
    def observer(self) -> Observer | None:
        """The server's counters and access log (None on a client)."""

    @property
    def recv_buffer(self) -> memoryview:
        """The receive buffer shared by every connection task (its content
        is valid until the task's next checkpoint)."""

    @property
    def poller(self) -> Poller | None:
        """The readiness poller that serves parked connections (see
        ``_poller``), or None (the portable path, a client)."""

    def next_id(self) -> int:
        """A connection id unique per server (WebSockets and streams)."""

    def stats(self, all_workers: bool = False) -> dict[str, Any]:
        """The server's numbers (see ``HttpServer.stats``)."""

    def limits_for(self, handler: Handler) -> Limits:
        """The server's limits with ``handler.limit_overrides`` applied."""

    async def send_error(self, transport: Transport, exc: HTTPError, head_only: bool = False) -> None:
        """Send the error response of ``exc`` (the connection then closes)."""

    def finalizing(self) -> AbstractContextManager[trio.CancelScope]:
        """A shielded scope for a connection's last words, bounded by
        ``close_timeout`` once the server shuts down."""

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in the server's nursery (errors are logged)."""

    def mark_dirty(self, flush: Callable[[], None]) -> None:
        """Call ``flush()`` on the server's next flusher tick."""

    def session_opened(self, session: Closable) -> None:
        """Track ``session``: the shutdown closes it (1001)."""

    def session_closed(self, session: Closable) -> None:
        """Stop tracking ``session``."""

    def stream_opened(self, stream: Endable) -> None:
        """Track ``stream``: the shutdown lets it run until the drain
        deadline, then ends it."""

    def stream_closed(self, stream: Endable) -> None:
        """Stop tracking ``stream``."""


class Handler:
    """Base of all handlers: a route (``path``, ``method``, ``prefix``) and
    :meth:`handle`, the one method the server calls."""

    path: str
    method: str = "GET"
    prefix: bool = False
    #: Requests with a body are answered 400 before :meth:`handle` (static content).
    rejects_body: ClassVar[bool] = False
    #: A WebSocket endpoint: a GET route that does not also answer HEAD.
    upgrades: ClassVar[bool] = False
    #: Per-handler limits (see :meth:`ServerContext.limits_for`).
    limit_overrides: Mapping[str, Any] = _NO_OVERRIDES
    #: A handler that can answer a request without waiting sets this to a
    #: function ``(conn, req)`` that answers with ``conn.respond_now`` and
    #: returns None, or returns an awaitable the connection's task passes to
    #: ``finish(conn, req, awaitable)``. The server's poller then answers
    #: such requests inline (no task switch); None: always :meth:`handle`.
    answer_now: Callable[[Any, Request], Any] | None = None

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> Session | None:
        """Answer ``req``, or return the :class:`Session` that takes the
        connection over (``tail``: the bytes after an upgrade request).
        The default answers 404."""
        await conn.respond(req, 404, [("Content-Type", "text/plain; charset=utf-8")], b"Not Found\n")
        return None

    def __repr__(self) -> str:
        extra = " prefix" if self.prefix else ""
        return f"<{type(self).__name__} {self.method} {self.path}{extra}>"
