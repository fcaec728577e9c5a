"""Route requests to handlers, as nanonext (NNG) does.

Longest path first, equal lengths in insertion order; an exact route also
matches its path with one trailing slash; a prefix route matches sub-paths
(``/api`` matches ``/api/x`` but never ``/apix``); the method matches
exactly or through ``"*"``; HEAD falls back to GET; a path that matches
with no matching method is a 405 listing the allowed methods.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._contract import Handler

_CACHE_SIZE = 1024


def _key(handler: Handler) -> str:
    path = handler.path
    if path == "/":
        return ""
    if handler.prefix and path.endswith("/"):
        return path.rstrip("/")
    return path


def _matches(key: str, prefix: bool, path: str) -> bool:
    if not path.startswith(key):
        return False
    rest = path[len(key) :]
    return rest in ("", "/") or (prefix and rest.startswith("/"))


class Router:
    """An immutable routing table built from a list of handlers."""

    __slots__ = ("_cache", "_routes")

    def __init__(self, handlers: Sequence[Handler]) -> None:
        routes: list[tuple[str, Handler]] = []
        for handler in handlers:
            if not isinstance(handler, Handler):
                raise TypeError(f"handlers: expected handler objects, got {type(handler).__name__}")
            key = _key(handler)
            for other_key, other in routes:
                if _conflict(key, handler, other_key, other):
                    raise ValueError(f"handlers: duplicate route: {handler!r} conflicts with {other!r}")
            routes.append((key, handler))
        # Stable sort: equal lengths keep their insertion order.
        routes.sort(key=lambda r: -len(r[0]))
        self._routes = tuple(routes)
        # (path, method) -> result; bounded, as paths come from clients.
        self._cache: dict[tuple[str, str], tuple[Handler | None, list[str]]] = {}

    @property
    def handlers(self) -> tuple[Handler, ...]:
        """Every handler, in routing order."""
        return tuple(h for _, h in self._routes)

    def match(self, path: str, method: str) -> tuple[Handler | None, list[str]]:
        """Return ``(handler, [])``, or ``(None, allowed_methods)`` where an
        empty list means 404 and a non-empty one 405."""
        key = (path, method)
        hit = self._cache.get(key)
        if hit is not None:
            handler, allowed = hit
            return handler, list(allowed)
        result = self._match(path, method)
        if result[0] is not None and len(self._cache) < _CACHE_SIZE:
            self._cache[key] = result
        return result

    def _match(self, path: str, method: str) -> tuple[Handler | None, list[str]]:
        if not path:
            path = "/"
        head_fallback: Handler | None = None
        allowed: list[str] = []
        get_is_ws = False
        for key, handler in self._routes:
            if not _matches(key, handler.prefix, path):
                continue
            hm = handler.method
            if hm == "*" or hm == method:
                return handler, []
            if method == "HEAD" and hm == "GET" and head_fallback is None:
                head_fallback = handler
            if hm not in allowed:
                allowed.append(hm)
                get_is_ws = get_is_ws or (hm == "GET" and handler.upgrades)
        if head_fallback is not None:
            return head_fallback, []
        if "GET" in allowed and "HEAD" not in allowed and not get_is_ws:
            allowed.append("HEAD")
        return None, allowed


def _conflict(key: str, a: Handler, other_key: str, b: Handler) -> bool:
    # Same method (or both "*") on the same path, a trailing slash aside.
    # Unlike NNG, a directory handler does not own its whole tree: longer
    # routes under it win by the longest-path rule, which is what users mean.
    return a.method == b.method and key.rstrip("/") == other_key.rstrip("/")
