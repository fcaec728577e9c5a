"""``handler``, ``handler_inline`` and ``handler_redirect``: plain HTTP routes."""

from __future__ import annotations

import html
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from ..http import Request, build_response
from ..http._response import date_line, header_list
from ._base import Handler, check_callback, check_path, is_async

if TYPE_CHECKING:
    from ..server import Responder, ServerContext, Session

log = logging.getLogger("wsnest")

TEXT_PLAIN = "text/plain; charset=utf-8"

Response = Mapping[str, Any]
Callback = Callable[[Request], "Response | Awaitable[Response]"]


def check_method(method: object) -> str:
    """Validate an HTTP method name (``"*"`` means any)."""
    if not isinstance(method, str) or not method or any(c in method for c in " \t\r\n"):
        raise ValueError(f"method: expected a method name such as 'GET' or '*', got {method!r}")
    return method


def body_bytes(body: object, name: str = "body") -> bytes:
    """Normalise a body: ``str`` (UTF-8), bytes-like, or ``None``."""
    if body is None:
        return b""
    if isinstance(body, str):
        return body.encode("utf-8")
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"{name}: expected str, bytes or None, got {type(body).__name__}")


_RESPONSE_KEYS = frozenset({"status", "headers", "body"})


def response_from(result: object) -> tuple[int, list[tuple[str, str]], bytes]:
    """Turn what a ``handler`` callback returned into (status, headers, body).

    Raises ``TypeError``/``ValueError`` naming the faulty field.
    """
    if type(result) is not dict and not isinstance(result, Mapping):
        raise TypeError(f"handler callback must return a mapping with status/headers/body, got {type(result).__name__}")
    if not result.keys() <= _RESPONSE_KEYS:
        unknown = set(result) - _RESPONSE_KEYS
        raise ValueError(f"handler response: unknown key(s) {sorted(unknown)}")
    status = result.get("status", 200)
    if type(status) is not int:
        if isinstance(status, bool) or not isinstance(status, int):
            raise TypeError(f"status: expected an int, got {type(status).__name__}")
        status = int(status)
    if not 200 <= status <= 599:
        raise ValueError(f"status: must be within 200-599, got {status}")
    raw_headers = result.get("headers")
    if raw_headers is None:
        headers: list[tuple[str, str]] = []
        typed = False
    else:
        headers, typed = header_list(raw_headers)
    raw = result.get("body")
    body = raw.encode("utf-8") if type(raw) is str else body_bytes(raw)
    if not typed and isinstance(raw, str):  # a str subclass too
        headers.append(("Content-Type", TEXT_PLAIN))
    return status, headers, body


class CallbackHandler(Handler):
    """A route answered by a user callback; made by :func:`handler`."""

    def __init__(self, path: str, callback: Callback, method: str = "GET", prefix: bool = False) -> None:
        self.path = check_path(path)
        self.callback = check_callback("callback", callback)
        self.method = check_method(method)
        self.prefix = bool(prefix)
        # A plain callback is answered inline by the server's poller; an
        # async one in the connection's task.
        self.answer_now = None if is_async(callback) else self._answer_now

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> Session | None:
        try:
            result = self.callback(req)
        except Exception:
            log.exception("wsnest: handler callback for %s %s failed", req.method, req.path)
            await conn.respond(req, 500, [("Content-Type", TEXT_PLAIN)], b"Internal Server Error\n")
            return None
        await self.finish(conn, req, result)
        return None

    async def finish(self, conn: Responder, req: Request, result: object) -> None:
        """Answer ``req`` from what the callback returned (awaited first
        when it is awaitable)."""
        try:
            if type(result) is not dict and inspect.isawaitable(result):
                result = await result
            status, headers, body = response_from(result)
        except Exception:
            log.exception("wsnest: handler callback for %s %s failed", req.method, req.path)
            await conn.respond(req, 500, [("Content-Type", TEXT_PLAIN)], b"Internal Server Error\n")
            return
        await conn.respond(req, status, headers, body)

    def _answer_now(self, conn: Responder, req: Request) -> object:
        try:
            result = self.callback(req)
            if type(result) is not dict and inspect.isawaitable(result):
                return result  # a wrapped async callback: the task awaits it
            status, headers, body = response_from(result)
        except Exception:
            log.exception("wsnest: handler callback for %s %s failed", req.method, req.path)
            conn.respond_now(req, 500, [("Content-Type", TEXT_PLAIN)], b"Internal Server Error\n")
            return None
        conn.respond_now(req, status, headers, body)
        return None


class InlineHandler(Handler):
    """Fixed bytes served from memory; made by :func:`handler_inline`."""

    rejects_body = True

    def __init__(self, path: str, data: str | bytes, content_type: str | None, prefix: bool) -> None:
        self.path = check_path(path)
        self.data = body_bytes(data, "data")
        if content_type is not None and not isinstance(content_type, str):
            raise TypeError(f"content_type: expected str or None, got {type(content_type).__name__}")
        self.headers = [("Content-Type", content_type or "application/octet-stream")]
        self.prefix = bool(prefix)
        # The usual answer (GET, HTTP/1.1, keep-alive), built once per
        # second (its Date header).
        self._date = date_line()
        self._keep_alive_response = build_response(200, self.headers, self.data)

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> Session | None:
        if req.method == "GET" and req.http_version == "1.1" and req.keep_alive and conn.keep_alive:
            if not await conn.send(self._usual()):
                conn.keep_alive = False
            return None
        await conn.respond(req, 200, self.headers, self.data)
        return None

    def answer_now(self, conn: Responder, req: Request) -> None:
        """Answer ``req`` without waiting (the server's poller)."""
        if req.method == "GET" and req.http_version == "1.1" and req.keep_alive and conn.keep_alive:
            conn.send_now(self._usual())
        else:
            conn.respond_now(req, 200, self.headers, self.data)

    def _usual(self) -> bytes:
        date = date_line()
        if date is not self._date:
            self._date = date
            self._keep_alive_response = build_response(200, self.headers, self.data)
        return self._keep_alive_response


REDIRECT_STATUSES = (301, 302, 303, 307, 308)


def _safe_rest(rest: str) -> str:
    """The client's part of a redirect target, made unable to name a host.

    Browsers read ``//host`` and ``/\\host`` (a backslash counts as a slash
    in http URLs) as another host. A backslash is never valid in a URI
    (RFC 3986), so it is percent-encoded wherever it is: the client's path
    keeps its literal meaning. A run of leading slashes becomes one: an empty
    segment right after the location would otherwise start ``//``.
    """
    if "\\" in rest:
        rest = rest.replace("\\", "%5C")
    if rest.startswith("//"):
        rest = "/" + rest.lstrip("/")
    return rest


class RedirectHandler(Handler):
    """A redirect; made by :func:`handler_redirect`."""

    method = "*"

    def __init__(self, path: str, location: str, status: int, prefix: bool) -> None:
        self.path = check_path(path)
        if not isinstance(location, str) or not location or any(c in location for c in "\r\n"):
            raise ValueError(f"location: expected a URL, got {location!r}")
        self.location = location
        if isinstance(status, bool) or not isinstance(status, int) or int(status) not in REDIRECT_STATUSES:
            raise ValueError(f"status: must be one of 301, 302, 303, 307, 308, got {status!r}")
        self.status = int(status)
        self.prefix = bool(prefix)

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> Session | None:
        # As NNG: the rest of the request URI after the route path, query
        # included, is appended to the location.
        base = "" if self.path == "/" else self.path.rstrip("/")
        rest = req.raw_path[len(base) :]
        if not req.raw_path.startswith(base) or rest[:1] not in ("", "/"):
            # The route part or the slash after it was percent-encoded:
            # re-encode the decoded rest (which starts at a real slash).
            rest = quote(req.path[len(base) :], safe="/:@!$&'()*+,;=~", errors="surrogateescape")
        rest = _safe_rest(rest)
        if self.location.endswith("/") and rest.startswith("/"):
            rest = rest[1:]
        target = self.location + rest + ("?" + req.query if req.query else "")
        link = html.escape(target)
        page = f'<!DOCTYPE html>\n<p>You should be automatically redirected to <a href="{link}">{link}</a>.</p>\n'
        conn.keep_alive = False
        await conn.respond(
            req,
            self.status,
            [("Location", target), ("Content-Type", "text/html; charset=utf-8")],
            page.encode("utf-8"),
        )
        return None


def handler(path: str, callback: Callback, method: str = "GET", prefix: bool = False) -> CallbackHandler:
    """Create an HTTP handler whose ``callback(req)`` builds the response.

    ``callback`` (plain or ``async def``) gets a :class:`Request` and
    returns a mapping with ``status`` (int, default 200), ``headers`` (a
    mapping or a list of ``(name, value)`` pairs; repeated names allowed)
    and ``body`` (``str``, bytes-like or ``None``; a ``str`` body defaults
    to ``text/plain; charset=utf-8``). ``Content-Length`` is always sent.
    A callback that raises gives a 500; its traceback goes to the log only.
    ``method`` is matched exactly (``"*"`` for any); ``prefix=True`` also
    matches sub-paths.
    """
    return CallbackHandler(path, callback, method, prefix)


def handler_inline(
    path: str, data: str | bytes, content_type: str | None = None, prefix: bool = False
) -> InlineHandler:
    """Serve ``data`` from memory (copied once, now) with ``content_type``
    (default ``application/octet-stream``)."""
    return InlineHandler(path, data, content_type, prefix)


def handler_redirect(path: str, location: str, status: int = 302, prefix: bool = False) -> RedirectHandler:
    """Redirect any request on ``path`` to ``location`` with ``status``
    (301, 302, 303, 307 or 308). As in nanonext, the rest of the request
    path after ``path`` and the query string are appended to ``location``."""
    return RedirectHandler(path, location, status, prefix)
