"""wsnest: a fast HTTP + WebSocket server for trio with a compiled core.

A Python port of the web server in R's nanonext package::

    import wsnest

    echo = wsnest.handler_ws("/ws", lambda ws, data: ws.send(data))
    wsnest.http_server("http://127.0.0.1:8080", [echo]).run()
"""

from __future__ import annotations

from ._errors import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    ErrorCode,
    HandshakeError,
    InvalidExtension,
    InvalidHandshake,
    InvalidStatus,
    InvalidSubprotocol,
    InvalidURL,
    Reject,
)
from ._limits import Limits
from ._tls import CertPair, tls_config, write_cert
from ._version import __version__
from .broker import Broker, BrokerError
from .client import connect
from .core import CORE
from .handlers import (
    Handler,
    StreamConnection,
    WebSocketHandler,
    format_sse,
    handler,
    handler_directory,
    handler_file,
    handler_inline,
    handler_metrics,
    handler_redirect,
    handler_stream,
    handler_ws,
)
from .http import Headers, Request
from .server import (
    Groups,
    HttpServer,
    WebSocket,
    Worker,
    broadcast,
    current_worker,
    http_server,
    merge_stats,
    stats_to_prometheus,
)

__all__ = [
    "CORE",
    "Broker",
    "BrokerError",
    "CertPair",
    "ConnectionClosed",
    "ConnectionClosedError",
    "ConnectionClosedOK",
    "ErrorCode",
    "Groups",
    "Handler",
    "HandshakeError",
    "Headers",
    "HttpServer",
    "InvalidExtension",
    "InvalidHandshake",
    "InvalidStatus",
    "InvalidSubprotocol",
    "InvalidURL",
    "Limits",
    "Reject",
    "Request",
    "StreamConnection",
    "WebSocket",
    "WebSocketHandler",
    "Worker",
    "__version__",
    "broadcast",
    "connect",
    "current_worker",
    "format_sse",
    "handler",
    "handler_directory",
    "handler_file",
    "handler_inline",
    "handler_metrics",
    "handler_redirect",
    "handler_stream",
    "handler_ws",
    "http_server",
    "merge_stats",
    "stats_to_prometheus",
    "tls_config",
    "write_cert",
]
