"""WebSocket opening handshake, server side (RFC 6455 section 4.2)."""

from __future__ import annotations

import binascii
from collections.abc import Sequence

from .._errors import HTTPError
from ..core import accept_key
from ._request import Request
from ._response import date_line

# HTTP's optional whitespace is space and tab only (RFC 9110 5.6.3). str.strip()
# would also remove \xa0, \x85, \x0b... and so accept a token that llhttp,
# which decides whether the connection switches protocols, did not.
_OWS = " \t"


def _tokens(values: list[str]) -> list[str]:
    return [t.strip(_OWS) for v in values for t in v.split(",") if t.strip(_OWS)]


def check_upgrade(
    req: Request,
    subprotocols: Sequence[str] = (),
    origins: Sequence[str | None] | None = None,
) -> tuple[str, str | None]:
    """Validate an upgrade request.

    Returns ``(accept, subprotocol)`` or raises :class:`HTTPError` with the
    status to answer: 405 (not GET), 400 (not HTTP/1.1, a body, or a
    missing or bad ``Upgrade``, ``Connection``, ``Sec-WebSocket-Key`` or
    ``Sec-WebSocket-Version``),
    426 (another version), 403 (an origin not allowed).
    """
    if req.method != "GET":
        raise HTTPError(405, "WebSocket upgrade requires GET", [("Allow", "GET")])
    if req.http_version != "1.1":
        raise HTTPError(400, "WebSocket upgrade requires HTTP/1.1")  # RFC 6455 4.1
    headers = req.headers
    # llhttp hands over at the end of the request *message*, so a body would
    # be neither read as HTTP nor skipped: its bytes would be taken for the
    # first WebSocket frames. A handshake has no body (RFC 6455 4.1).
    length = headers.get("content-length")
    if headers.get("transfer-encoding") is not None or (length is not None and length.strip(_OWS) != "0"):
        raise HTTPError(400, "A WebSocket upgrade request must not have a body")
    if "websocket" not in (t.lower() for t in _tokens(headers.getall("upgrade"))):
        raise HTTPError(400, "Missing or invalid Upgrade header (expected websocket)")
    if "upgrade" not in (t.lower() for t in _tokens(headers.getall("connection"))):
        raise HTTPError(400, "Missing or invalid Connection header (expected upgrade)")
    versions = headers.getall("sec-websocket-version")
    if not versions:
        raise HTTPError(400, "Missing Sec-WebSocket-Version header")
    if versions != ["13"]:
        raise HTTPError(426, "Unsupported WebSocket version", [("Sec-WebSocket-Version", "13")])
    keys = headers.getall("sec-websocket-key")
    if len(keys) != 1:
        raise HTTPError(400, "Missing or repeated Sec-WebSocket-Key header")
    key = keys[0].strip(_OWS)
    try:
        raw = binascii.a2b_base64(key.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16 or len(key) != 24:
        raise HTTPError(400, "Invalid Sec-WebSocket-Key header")
    if origins is not None:
        origin = headers.get("origin")
        if origin not in origins:
            raise HTTPError(403, "Origin not allowed")
    chosen = None
    if subprotocols:
        for offered in _tokens(headers.getall("sec-websocket-protocol")):
            if offered in subprotocols:
                chosen = offered
                break
    return accept_key(key), chosen


def switching_protocols(accept: str, subprotocol: str | None, extensions: str | None = None) -> bytes:
    """The ``101 Switching Protocols`` response head; ``extensions`` is the
    ``Sec-WebSocket-Extensions`` value of the agreed extensions, if any."""
    head = (
        "HTTP/1.1 101 Switching Protocols\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept}\r\n"
    ) + date_line()
    if subprotocol is not None:
        head += f"Sec-WebSocket-Protocol: {subprotocol}\r\n"
    if extensions is not None:
        head += f"Sec-WebSocket-Extensions: {extensions}\r\n"
    return (head + "\r\n").encode("latin-1")
