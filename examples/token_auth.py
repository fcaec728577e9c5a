"""WebSockets for known users only: a token in a header or in the query.

Run it, then connect with a token::

    python examples/token_auth.py             # ws://127.0.0.1:8080/ws
    python -m websockets "ws://127.0.0.1:8080/ws?token=secret-ann"

A client sends ``Authorization: Bearer <token>`` (the clean way: headers
stay out of access logs) or ``?token=<token>`` (for browsers, whose
WebSocket API cannot set headers). ``on_open`` runs before the upgrade
and refuses it with ``wsnest.Reject``: 401 without a token, 403 for a
token it does not know. The connection keeps its user in ``ws.data``.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from urllib.parse import parse_qs

import wsnest

DEMO_TOKENS = {"secret-ann": "ann", "secret-bob": "bob"}


def find_token(req: wsnest.Request) -> str | None:
    """The token of a request: the ``Authorization: Bearer`` header first,
    then the ``token`` query parameter; None when there is neither."""
    scheme, _, value = (req.headers.get("authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    found = parse_qs(req.query).get("token")
    return found[0] if found else None


def make_handlers(tokens: Mapping[str, str] = DEMO_TOKENS) -> list[wsnest.Handler]:
    """A WebSocket at ``/ws`` for the users of ``tokens`` (token -> user name)
    that answers every message with ``"<user>: <message>"``."""

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        token = find_token(req)
        if token is None:
            raise wsnest.Reject(401, "a token is required")
        # Compare in constant time (bytes: a query may carry any character),
        # so how fast a guess fails says nothing about the real tokens.
        given = token.encode()
        user = next((name for known, name in tokens.items() if hmac.compare_digest(known.encode(), given)), None)
        if user is None:
            raise wsnest.Reject(403, "unknown token")
        ws.data["user"] = user

    def on_message(ws: wsnest.WebSocket, text: str) -> None:
        ws.send(f"{ws.data['user']}: {text}")

    return [wsnest.handler_ws("/ws", on_message, on_open, textframes=True)]


if __name__ == "__main__":
    wsnest.http_server("http://127.0.0.1:8080", make_handlers()).run()
