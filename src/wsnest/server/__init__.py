"""The trio server: listener, connection tasks, routing, the sessions
(WebSocket, stream), broadcast. Byte-level protocol work is delegated to
``wsnest.core`` (frames and the WebSocket session's decisions) and
``wsnest.http``.

The handler contract (:class:`Handler`, :class:`ServerContext`,
:class:`Responder`, :class:`Session`) and the sessions are exported here
for ``wsnest.handlers``, which depends on this package (never the reverse).
"""

from ._contract import Closable, Handler, Responder, ServerContext, Session, call_maybe_async
from ._groups import Groups
from ._outbox import Outbox
from ._server import HttpServer, http_server
from ._stats import PROMETHEUS_CONTENT_TYPE, merge_stats, stats_to_prometheus
from ._stream import StreamConnection
from ._transport import SocketTransport, TLSTransport, Transport
from ._websocket import MODE_AUTO, MODE_BYTES, MODE_TEXT, WebSocket, broadcast
from ._workers import Worker, current_worker

__all__ = [
    "MODE_AUTO",
    "MODE_BYTES",
    "MODE_TEXT",
    "PROMETHEUS_CONTENT_TYPE",
    "Closable",
    "Groups",
    "Handler",
    "HttpServer",
    "Outbox",
    "Responder",
    "ServerContext",
    "Session",
    "SocketTransport",
    "StreamConnection",
    "TLSTransport",
    "Transport",
    "WebSocket",
    "Worker",
    "broadcast",
    "call_maybe_async",
    "current_worker",
    "http_server",
    "merge_stats",
    "stats_to_prometheus",
]
