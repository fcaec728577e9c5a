"""Handler objects: they hold the user's callbacks and options, and serve a
request routed to them through ``Handler.handle``, the contract declared in
``wsnest.server`` (this package depends on ``wsnest.server``, never the
reverse)."""

from ._base import Handler
from ._http import CallbackHandler, InlineHandler, RedirectHandler, handler, handler_inline, handler_redirect
from ._metrics import MetricsHandler, handler_metrics
from ._static import DirectoryHandler, FileHandler, handler_directory, handler_file
from ._stream import StreamConnection, StreamHandler, format_sse, handler_stream
from ._ws import WebSocketHandler, handler_ws

__all__ = [
    "CallbackHandler",
    "DirectoryHandler",
    "FileHandler",
    "Handler",
    "InlineHandler",
    "MetricsHandler",
    "RedirectHandler",
    "StreamConnection",
    "StreamHandler",
    "WebSocketHandler",
    "format_sse",
    "handler",
    "handler_directory",
    "handler_file",
    "handler_inline",
    "handler_metrics",
    "handler_redirect",
    "handler_stream",
    "handler_ws",
]
