"""What every handler has: the :class:`Handler` base (the server's
contract, defined in ``wsnest.server``) and callback helpers."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

from ..server import Handler, call_maybe_async

__all__ = ["Handler", "call_maybe_async", "check_callback", "check_optional_callback", "check_path", "is_async"]

log = logging.getLogger("wsnest")


def check_path(path: object) -> str:
    """Validate a route path: a ``str`` starting with ``/``."""
    if not isinstance(path, str):
        raise TypeError(f"path: expected str, got {type(path).__name__}")
    if not path.startswith("/"):
        raise ValueError(f"path: must start with '/', got {path!r}")
    if "?" in path or "#" in path:
        raise ValueError(f"path: must not contain a query or fragment, got {path!r}")
    return path


def check_callback(name: str, fn: object) -> Callable[..., Any]:
    """Validate a callback argument, naming it in the error."""
    if not callable(fn):
        raise TypeError(f"{name}: expected a function, got {type(fn).__name__}")
    return fn


def check_optional_callback(name: str, fn: object) -> Callable[..., Any] | None:
    """Like :func:`check_callback`, but ``None`` is allowed."""
    return None if fn is None else check_callback(name, fn)


def is_async(fn: Callable[..., Any] | None) -> bool:
    """Whether calling ``fn`` gives a coroutine (``async def``, also wrapped)."""
    if fn is None:
        return False
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
