"""The trio server: listener, connection tasks, routing, the WebSocket
session. Byte-level protocol work is delegated to ``wsnest.core`` and
``wsnest.http``."""

from ._server import HttpServer, http_server
from ._websocket import WebSocket

__all__ = ["HttpServer", "WebSocket", "http_server"]
