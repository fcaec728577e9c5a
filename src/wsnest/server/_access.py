"""The HTTP connection of a server with an access log or trusted proxy
headers: what it adds per request, kept out of :class:`HttpConnection`
so that a server with neither pays nothing for them (the server picks
the class once)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from ._connection import HttpConnection

if TYPE_CHECKING:
    from ..http import Request
    from ._contract import Session


class ObservedConnection(HttpConnection):
    """An :class:`HttpConnection` that resolves the client behind a trusted
    proxy and notes each response's status and body size for the access log."""

    __slots__ = ("sent", "status")

    answers_inline = False  # each response is noted in the task's dispatch

    async def _dispatch(self, req: Request, tail: bytes) -> Session | None:
        observer = self.ctx.observer
        assert observer is not None
        trust = observer.trust
        if trust is not None:
            req.client, req.scheme = trust.resolve(req.headers, self.client, req.scheme)
        if observer.access is None:
            return await super()._dispatch(req, tail)
        self.status = 0
        self.sent = 0
        start = time.perf_counter()
        transport = self.transport
        observer.responding[transport] = self  # for a send_error() on its transport
        try:
            session = await super()._dispatch(req, tail)
        finally:
            observer.responding.pop(transport, None)
        if session is not None:
            observer.session_started(session, req, start)
        else:
            duration = time.perf_counter() - start
            observer.log_http(req.client, req.method, req.uri, req.http_version, self.status, self.sent, duration)
        return session

    def _noted(self, req: Request, status: int, size: int) -> None:
        self.status = status
        self.sent = 0 if req.method == "HEAD" or status in (204, 304) or status < 200 else size

    async def respond(self, req: Request, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self._noted(req, status, len(body))
        await super().respond(req, status, headers, body)

    async def respond_chunks(
        self, req: Request, status: int, headers: list[tuple[str, str]], length: int, chunks: AsyncIterator[bytes]
    ) -> None:
        self._noted(req, status, length)
        await super().respond_chunks(req, status, headers, length, chunks)

    async def send(self, data: bytes) -> bool:
        # A handler's ready-made response (handler_inline): its status line
        # and head size tell what the log needs.
        if data.startswith(b"HTTP/1.") and data[9:12] != b"100":
            self.status = int(data[9:12])
            self.sent = len(data) - (data.find(b"\r\n\r\n") + 4)
        return await super().send(data)
