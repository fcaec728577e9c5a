"""Serialise HTTP responses."""

from __future__ import annotations

import http
import re
import time
from collections.abc import Iterable, Mapping
from email.utils import formatdate

_REASONS = {s.value: s.phrase for s in http.HTTPStatus}


def reason_phrase(status: int) -> str:
    """The standard reason phrase for ``status`` (``"Unknown"`` if none)."""
    return _REASONS.get(status, "Unknown")


HeaderInput = Mapping[str, str] | Iterable[tuple[str, str]] | None


def header_pairs(headers: HeaderInput) -> list[tuple[str, str]]:
    """Normalise a mapping or an iterable of pairs into a list of pairs,
    rejecting names and values that would break the response framing."""
    return header_list(headers)[0]


def header_list(headers: HeaderInput) -> tuple[list[tuple[str, str]], bool]:
    """:func:`header_pairs`, and whether one of the names is
    ``Content-Type`` (found in the same pass, as callers need to know)."""
    if headers is None:
        return [], False
    items = headers.items() if type(headers) is dict or isinstance(headers, Mapping) else headers
    pairs: list[tuple[str, str]] = []
    typed = False
    names = _CHECKED_NAMES
    values = _CHECKED_VALUES
    for item in items:
        try:
            name, value = item
        except (TypeError, ValueError):
            raise TypeError(f"headers: expected (name, value) pairs, got {item!r}") from None
        if type(name) is not str:
            name = str(name)
        if type(value) is not str:
            value = str(value)
        is_type = names.get(name)
        if is_type is None:
            is_type = _check_name(name)
        if is_type:
            typed = True
        if value not in values:
            _check_value(name, value)
        pairs.append((name, value))
    return pairs, typed


# Names and values already found valid: applications send the same few
# names, and mostly the same values, on every response, so each is checked
# once (bounded: a stream of made-up ones is checked every time instead of
# growing the caches). A name maps to whether it is Content-Type.
_CHECKED_NAMES: dict[str, bool] = {}
_CHECKED_VALUES: set[str] = set()
_CACHE_LIMIT = 1024
_CACHED_VALUE_SIZE = 256  # longer values are checked every time
_BAD_NAME = re.compile("[\r\n:\0 \t]")
_BAD_VALUE = re.compile("[\r\n\0]")


def _check_name(name: str) -> bool:
    if not name or _BAD_NAME.search(name) is not None:
        raise ValueError(f"headers: invalid header name {name!r}")
    if not name.isascii():
        raise ValueError(f"headers: invalid header name {name!r} (not ASCII)")
    is_type = name.lower() == "content-type"
    if len(_CHECKED_NAMES) < _CACHE_LIMIT:
        _CHECKED_NAMES[name] = is_type
    return is_type


def _check_value(name: str, value: str) -> None:
    if _BAD_VALUE.search(value) is not None:
        raise ValueError(f"headers: invalid value for {name!r} (contains a line break)")
    if not value.isascii():  # O(1): the common case costs nothing
        _check_latin1(name, value)
    if len(value) <= _CACHED_VALUE_SIZE and len(_CHECKED_VALUES) < _CACHE_LIMIT:
        _CHECKED_VALUES.add(value)


def _check_latin1(name: str, value: str) -> None:
    # A response head is Latin-1 on the wire (names are ASCII tokens): say
    # so here, inside the caller's error handling, not later when the head
    # is encoded with the connection half answered.
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"headers: value for {name!r} is not Latin-1: {value!r}") from None


_STATUS_LINES: dict[tuple[str, int], str] = {}

_date_second = -1
_date_line = ""


def date_line() -> str:
    """The ``Date`` header line (RFC 9110 6.6.1, IMF-fixdate, with its
    CRLF) for the current second: formatted once per second, the same
    ``str`` object until the second changes (callers that cache a response
    compare it by identity)."""
    if int(_clock()) != _date_second:
        _new_date()
    return _date_line


def _new_date() -> None:
    global _date_second, _date_line
    now = int(_clock())
    _date_line = f"Date: {formatdate(now, usegmt=True)}\r\n"
    _date_second = now


_clock = time.time


def build_response(
    status: int,
    headers: list[tuple[str, str]] = [],  # noqa: B006 - never mutated
    body: bytes = b"",
    *,
    content_length: int | None = None,
    keep_alive: bool = True,
    version: str = "1.1",
    close_delimited: bool = False,
) -> bytes:
    """Build a response head (and body). ``Content-Length`` is always set
    (to ``content_length`` if given, e.g. for HEAD), unless ``headers``
    already frame the body with ``Transfer-Encoding``, the status forbids
    a body (1xx, 204, 304), or ``close_delimited`` says the body ends when
    the connection does. ``Connection: close`` is sent unless
    ``keep_alive``; an HTTP/1.0 response kept alive says
    ``Connection: keep-alive`` (1.0 closes by default). A ``Date`` header
    is added unless ``headers`` has one."""
    line = _STATUS_LINES.get((version, status))
    if line is None:
        line = _STATUS_LINES[(version, status)] = f"HTTP/{version} {status} {reason_phrase(status)}\r\n"
    parts = [line]
    framed = False
    dated = False
    for name, value in headers:
        n = len(name)
        if n == 14 or n == 17:  # only these lengths can be the two names below
            low = name.lower()
            if low == "content-length":
                continue  # we always compute it
            if low == "transfer-encoding":
                framed = True
        elif n == 4 and name.lower() == "date":
            dated = True
        parts.append(f"{name}: {value}\r\n")
    if not dated:
        if int(_clock()) != _date_second:
            _new_date()
        parts.append(_date_line)
    if not (framed or close_delimited) and status >= 200 and status != 204 and status != 304:
        parts.append(f"Content-Length: {len(body) if content_length is None else content_length}\r\n")
    if not keep_alive:
        parts.append("Connection: close\r\n")
    elif version == "1.0":
        parts.append("Connection: keep-alive\r\n")
    parts.append("\r\n")
    head = "".join(parts).encode("latin-1")
    return head + body if body else head
