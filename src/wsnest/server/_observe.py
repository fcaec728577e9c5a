"""What a server tells its operator: the numbers of :meth:`HttpServer.stats`
and the access log (logger ``wsnest.access``).

Counting stays off the hot path: each connection counts in plain int
slots of its own (requests, messages, bytes), summed on demand while it is
open and folded into the server's totals here once, when it ends. The
access log costs nothing when off: the server then builds plain
``HttpConnection`` objects (unless proxy headers are on), and sessions
find no start time to log.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..core import CORE

if TYPE_CHECKING:
    from ..http import Request
    from ..http._forwarded import ProxyTrust

# The sessions are typed Any here: they import the contract, which names
# this module, so this module names neither of them.
WebSocket = Any
StreamConnection = Any

access_logger = logging.getLogger("wsnest.access")


def client_text(client: tuple[str, int] | None) -> str:
    """``host:port`` (``[v6]:port``) for the log, ``-`` when unknown."""
    if client is None:
        return "-"
    host, port = client
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class Observer:
    """A server's totals and access-log switch (one per :class:`HttpServer`).

    ``access`` is the access logger when the access log is on, else None:
    the only thing a hot path checks.
    """

    __slots__ = (
        "access",
        "closes",
        "http_requests",
        "refusals",
        "responding",
        "scheme",
        "sessions",
        "streams_open",
        "streams_total",
        "trust",
        "ws_bytes_in",
        "ws_bytes_out",
        "ws_messages_in",
        "ws_messages_out",
        "ws_total",
    )

    def __init__(self, access_log: bool = False, scheme: str = "http", trust: ProxyTrust | None = None) -> None:
        self.access: logging.Logger | None = access_logger if access_log else None
        #: ``req.scheme`` when no trusted proxy says otherwise.
        self.scheme = scheme
        #: The proxies whose headers are believed (None: proxy headers off).
        self.trust = trust
        # Access log only: the connection answering on a transport, for
        # an error response the server sends on it (see error_sent).
        self.responding: dict[object, Any] = {}
        # Totals of the connections that ended (open ones are summed live).
        self.http_requests = 0
        self.ws_total = 0
        self.ws_messages_in = 0
        self.ws_messages_out = 0
        self.ws_bytes_in = 0
        self.ws_bytes_out = 0
        self.streams_open = 0
        self.streams_total = 0
        self.refusals: dict[int, int] = {}
        self.closes: dict[int, int] = {}
        # Access log only: session -> (start, client, method, uri, version).
        self.sessions: dict[object, tuple[float, tuple[str, int] | None, str, str, str]] = {}

    # -- counting (connection ends, refusals: never per message) ---------------

    def refused(self, code: int, n: int = 1) -> None:
        """A ``send`` returned ``code`` (7, 8, 17)."""
        self.refusals[code] = self.refusals.get(code, 0) + n

    def http_ended(self, requests: int) -> None:
        """An HTTP connection served ``requests`` requests and left HTTP."""
        self.http_requests += requests

    def session_started(self, session: object, req: Request, start: float) -> None:
        """A WebSocket or stream took a connection over (access log on)."""
        self.sessions[session] = (start, req.client, req.method, req.uri, req.http_version)

    def error_sent(self, transport: object, status: int, size: int) -> None:
        """The server sent an error response on ``transport`` (access log on)."""
        conn = self.responding.get(transport)
        if conn is not None:
            conn.status = status
            conn.sent = size

    def websocket_ended(self, ws: WebSocket) -> None:
        """Fold a finished WebSocket's counters in (and log it)."""
        session = ws._session
        messages_in = session.messages_in
        code = session.close_code
        self.ws_total += 1
        self.ws_messages_in += messages_in
        self.ws_messages_out += ws._messages_out
        self.ws_bytes_in += ws._bytes_in
        self.ws_bytes_out += ws._bytes_out
        self.closes[code] = self.closes.get(code, 0) + 1
        started = self.sessions.pop(ws, None) if self.sessions else None
        if started is not None and self.access is not None:
            start, client, _, uri, _ = started
            duration = time.perf_counter() - start
            self.access.info(
                '%s - "WS %s" %d in=%d out=%d %.3fs',
                client_text(client),
                uri,
                code,
                messages_in,
                ws._messages_out,
                duration,
                extra={
                    "kind": "websocket",
                    "client": client_text(client),
                    "method": "WS",
                    "path": uri,
                    "status": code,
                    "close_code": code,
                    "messages_in": messages_in,
                    "messages_out": ws._messages_out,
                    "bytes_in": ws._bytes_in,
                    "bytes": ws._bytes_out,
                    "duration": duration,
                },
            )

    def stream_started(self) -> None:
        """A stream began (``handler_stream``)."""
        self.streams_open += 1
        self.streams_total += 1

    def stream_ended(self, stream: StreamConnection, status: int) -> None:
        """A stream ended (and is logged)."""
        self.streams_open -= 1
        started = self.sessions.pop(stream, None) if self.sessions else None
        if started is not None and self.access is not None:
            start, client, method, uri, version = started
            duration = time.perf_counter() - start
            self.log_http(client, method, uri, version, status, stream._bytes_out, duration, "stream")

    def log_http(
        self,
        client: tuple[str, int] | None,
        method: str,
        uri: str,
        version: str,
        status: int,
        sent: int,
        duration: float,
        kind: str = "http",
    ) -> None:
        """One access-log line for an HTTP response (or a stream)."""
        assert self.access is not None
        who = client_text(client)
        extra = {
            "kind": kind,
            "client": who,
            "method": method,
            "path": uri,
            "http_version": version,
            "status": status,
            "bytes": sent,
            "duration": duration,
        }
        if kind == "http":
            fmt = '%s - "%s %s HTTP/%s" %d %d %.1fms'
            shown = duration * 1000
        else:
            fmt = '%s - "%s %s HTTP/%s" %d %d %.3fs ' + kind
            shown = duration
        self.access.info(fmt, who, method, uri, version, status, sent, shown, extra=extra)

    # -- the numbers -------------------------------------------------------------

    def stats(self, http_conns: Iterable[Any], websockets: Iterable[Any]) -> dict[str, Any]:
        """The stats dict of :meth:`HttpServer.stats`: the totals plus the
        live counters of the open connections."""
        requests = self.http_requests
        n_http = 0
        for conn in http_conns:
            n_http += 1
            requests += conn.requests
        n_ws = 0
        m_in, m_out, b_in, b_out = self.ws_messages_in, self.ws_messages_out, self.ws_bytes_in, self.ws_bytes_out
        for ws in websockets:
            session = getattr(ws, "_session", None)
            if session is None:
                continue
            n_ws += 1
            m_in += session.messages_in
            m_out += ws._messages_out
            b_in += ws._bytes_in
            b_out += ws._bytes_out
        return {
            "pid": os.getpid(),
            "core": CORE,
            "connections": {"http": n_http, "websocket": n_ws, "stream": self.streams_open},
            "http_requests": requests,
            "ws_sessions": self.ws_total + n_ws,
            "ws_messages_in": m_in,
            "ws_messages_out": m_out,
            "ws_bytes_in": b_in,
            "ws_bytes_out": b_out,
            "streams": self.streams_total,
            "send_refusals": {str(int(code)): n for code, n in sorted(self.refusals.items()) if n},
            "ws_closes": {str(int(code)): n for code, n in sorted(self.closes.items())},
        }
