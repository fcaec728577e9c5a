"""HTTP/1.1 layer: request parsing (on llhttp via httptools), the request
object, header mapping and response serialisation, and the client's side of
the WebSocket opening handshake. No sockets, no trio."""

from ._client_handshake import (
    MAX_BODY_SIZE,
    MAX_HEAD_SIZE,
    USER_AGENT,
    ClientHandshake,
    HandshakeResult,
    WsURL,
    parse_ws_url,
)
from ._headers import Headers
from ._parser import RequestParser
from ._request import Request
from ._response import build_response, reason_phrase

__all__ = [
    "MAX_BODY_SIZE",
    "MAX_HEAD_SIZE",
    "USER_AGENT",
    "ClientHandshake",
    "HandshakeResult",
    "Headers",
    "Request",
    "RequestParser",
    "WsURL",
    "build_response",
    "parse_ws_url",
    "reason_phrase",
]
