"""Every limit and timeout wsnest applies, with its default, in one place.

Each field can be set on ``http_server(**limits)``; the WebSocket ones can
also be set per handler on ``handler_ws(**limits)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class Limits:
    """Limits and timeouts (sizes in bytes, times in seconds)."""

    #: Largest WebSocket message accepted or sent (close 1009 / send code 17).
    max_message_size: int | None = MiB
    #: Largest HTTP request head (request line plus headers) -> 431.
    max_head_size: int = 8 * 1024
    #: Most headers in one request -> 431.
    max_headers: int = 100
    #: Largest HTTP request body -> 413.
    max_body_size: int = MiB
    #: Time allowed to receive a whole request head (also bounds the
    #: WebSocket handshake; over TLS, the TLS handshake and the first head
    #: share it, counted from accept); slowloris clients are dropped. A
    #: request body may take longer, but never this long between two reads.
    handshake_timeout: float = 10.0
    #: TLS handshakes in progress at once (each holds 40-230 KiB); later
    #: clients wait for a slot within their handshake_timeout, and one
    #: stalled for a tenth of handshake_timeout gives its slot up to them.
    max_tls_handshakes: int = 256
    #: Idle time allowed between two requests on a keep-alive connection.
    keepalive_timeout: float = 15.0
    #: Time allowed for the peer to answer our close frame.
    close_timeout: float = 5.0
    #: Send a ping after this much silence (None: never).
    ping_interval: float | None = None
    #: Close with 1011 if a ping is not answered within this time.
    ping_timeout: float = 20.0
    #: Time a write may wait for the peer to make progress (take more
    #: bytes) before the connection is dropped: HTTP responses and files,
    #: streams and WebSocket writes. Only a write that has to wait is timed.
    send_timeout: float = 30.0
    #: ``ws.send()`` (and a stream's ``send``) returns 8 while more than
    #: this many bytes wait to be sent; one message may overshoot it. This
    #: is the memory a client that stops reading can pin (10,000 of them:
    #: about 640 MiB plus one message each); raise it for bulk transfers.
    send_high_water: int = 64 * 1024
    #: Messages queued for an async ``on_message``. While it is full,
    #: reading goes on up to the start of the next message (pings and
    #: close frames are still answered), then pauses until there is room.
    max_queue: int = 16
    #: Open client connections at once (HTTP, WebSocket, streams, TLS
    #: handshakes; ``serve_connection()`` ones too); None: no limit. Past
    #: it a new connection gets one ``503`` with ``Retry-After: 1`` (a
    #: WebSocket upgrade too, before any 101) and is closed; its request
    #: must arrive within 2 s (or ``handshake_timeout`` if shorter), and at
    #: most 64 such refusals run at once: later ones are closed unanswered.
    max_connections: int | None = None
    #: On shutdown (``aclose()``, SIGINT/SIGTERM under ``run()``): time for
    #: running HTTP handlers to answer (``Connection: close``) and streams to
    #: end by themselves before streams are ended and WebSockets closed with
    #: 1001 (then up to ``close_timeout`` more); 0: no drain.
    drain_timeout: float = 5.0

    def replace(self, **changes: object) -> Limits:
        """Return a copy with ``changes`` applied; unknown names raise ``TypeError``."""
        return check_limits(dataclasses.replace(self, **changes))  # type: ignore[arg-type]


WS_FIELDS = frozenset(
    {
        "max_message_size",
        "close_timeout",
        "ping_interval",
        "ping_timeout",
        "send_timeout",
        "send_high_water",
        "max_queue",
    }
)


_POSITIVE = frozenset(
    {"max_queue", "handshake_timeout", "ping_interval", "send_timeout", "max_tls_handshakes", "max_connections"}
)


def check_limits(limits: Limits) -> Limits:
    """Validate every field, naming the bad one."""
    for field in dataclasses.fields(limits):
        value = getattr(limits, field.name)
        if value is None and field.name in ("max_message_size", "ping_interval", "max_connections"):
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{field.name}: expected a number, got {type(value).__name__}")
        if (field.type == "int" or field.name == "max_connections") and not isinstance(value, int):
            raise TypeError(f"{field.name}: expected an integer, got {value!r}")
        if value < 0 or (value == 0 and field.name in _POSITIVE):
            raise ValueError(f"{field.name}: must be positive, got {value!r}")
    return limits


DEFAULT_LIMITS = Limits()
