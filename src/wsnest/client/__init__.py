"""The WebSocket client: :func:`connect`, on the same core, transports and
``WebSocket`` object as the server (``wsnest.server``), which this package
depends on (never the reverse)."""

from ._connect import connect

__all__ = ["connect"]
