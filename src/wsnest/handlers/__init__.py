"""Handler objects: they hold the user's callbacks and options, and know how
to serve a request routed to them."""

from ._base import Handler
from ._ws import WebSocketHandler, handler_ws

__all__ = ["Handler", "WebSocketHandler", "handler_ws"]
