"""Incremental HTTP/1.x request parser on llhttp (through ``httptools``).

Bytes in, :class:`Request` objects out; limits enforced as the bytes
arrive so that an oversized head or body is refused before it is buffered.
"""

from __future__ import annotations

from collections import deque

import httptools

from .._errors import HTTPError
from .._limits import Limits
from ._headers import Headers
from ._request import Request

_METHODS = {m.encode(): m for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")}


class RequestParser:
    """Parse pipelined requests from one connection.

    After :meth:`feed`, completed requests wait in :attr:`requests`. A
    request that asks to switch protocols stops the parser: it is the last
    one queued and :attr:`upgrade_tail` holds the bytes that followed its
    head (already WebSocket data). :attr:`expect_continue` is set while the
    current request waits for ``100 Continue`` before sending its body.
    """

    __slots__ = (
        "_body",
        "_client",
        "_content_length",
        "_expect",
        "_has_host",
        "_head_bytes",
        "_head_size",
        "_headers",
        "_headers_obj",
        "_in_head",
        "_limits",
        "_parser",
        "_pending_error",
        "_scheme",
        "_transfer_encoding",
        "_url",
        "_version",
        "expect_continue",
        "requests",
        "upgrade_tail",
    )

    def __init__(self, limits: Limits, client: tuple[str, int] | None = None, scheme: str = "http") -> None:
        self._limits = limits
        self._client = client
        self._scheme = scheme  # every request's ``scheme`` (https over TLS)
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.requests: deque[Request] = deque()
        self.upgrade_tail: bytes | None = None
        self.expect_continue = False
        self._pending_error: HTTPError | None = None
        # Bytes fed since the last complete message: a coarse bound on a
        # head that llhttp is still buffering (one huge header line).
        self._head_size = 0
        self._reset()

    def _reset(self) -> None:
        self._url = b""
        self._headers: list[tuple[str, str]] = []
        # The first body piece as is; a second turns it into a bytearray
        # (amortised linear growth, its length is the running body size).
        self._body: bytes | bytearray = b""
        self._in_head = True
        # Facts the parser itself needs, noted as the headers arrive (no
        # case-insensitive lookups in a Headers object afterwards).
        self._head_bytes = 0
        self._has_host = False
        self._content_length: str | None = None
        self._expect: str | None = None
        self._transfer_encoding: str | None = None

    def close(self) -> None:
        """Release llhttp. httptools holds bound methods of this object, a
        reference cycle only the garbage collector could free otherwise;
        a server sheds thousands of parsers (slowloris churn), and every
        cycle left behind ends up in a full collection."""
        self._parser = None

    @property
    def idle(self) -> bool:
        """True when no request is partly received."""
        return self._in_head and self._head_size == 0 and not self._url

    @property
    def receiving_body(self) -> bool:
        """True while the body of a request is partly received."""
        return not self._in_head

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Parse ``data``; raise :class:`HTTPError` for a request to refuse."""
        if self.upgrade_tail is not None:
            raise RuntimeError("the connection has switched protocols")
        if self._parser is None:
            raise RuntimeError("the parser is closed")
        if self._in_head:
            self._head_size += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0] if exc.args and isinstance(exc.args[0], int) else len(data)
            self.upgrade_tail = bytes(data[offset:])
            # llhttp itself switched protocols after the request just queued:
            # the only sign of an upgrade the server trusts.
            if self.requests:
                self.requests[-1].upgrade = True
        except httptools.HttpParserCallbackError as exc:
            if self._pending_error is not None:
                raise self._pending_error from None
            raise HTTPError(400, "Bad Request") from exc
        except httptools.HttpParserInvalidMethodError:
            raise HTTPError(405 if self._url else 400, "Invalid method") from None
        except httptools.HttpParserError as exc:
            raise HTTPError(400, f"Malformed request: {exc}") from None
        if self._in_head and self._head_size > self._limits.max_head_size + 4:
            raise HTTPError(431, "Request Header Fields Too Large")

    # -- httptools callbacks --------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self._headers
        if len(headers) >= self._limits.max_headers:
            self._pending_error = HTTPError(431, "Too Many Headers")
            raise self._pending_error
        k = name.decode("latin-1")
        v = value.decode("latin-1")
        headers.append((k, v))
        self._head_bytes += len(k) + len(v) + 4
        n = len(k)
        if n == 4 or n == 6 or n == 14 or n == 17:
            low = k.lower()
            if low == "host":
                if self._has_host:
                    # Which one names the origin? (RFC 9112 3.2: exactly one)
                    self._pending_error = HTTPError(400, "Duplicate Host header")
                    raise self._pending_error
                self._has_host = True
            elif low == "content-length":
                cl = self._content_length
                self._content_length = v if cl is None else cl + ", " + v
            elif low == "expect":
                ex = self._expect
                self._expect = v if ex is None else ex + ", " + v
            elif low == "transfer-encoding":
                te = self._transfer_encoding
                self._transfer_encoding = v if te is None else te + ", " + v

    def on_headers_complete(self) -> None:
        limits = self._limits
        if len(self._url) + self._head_bytes > limits.max_head_size:
            self._pending_error = HTTPError(431, "Request Header Fields Too Large")
            raise self._pending_error
        self._in_head = False
        parser = self._parser
        assert parser is not None  # callbacks only run inside feed()
        version = parser.get_http_version()
        self._version = version
        if version != "1.1" and version != "1.0":
            self._pending_error = HTTPError(505, "HTTP Version Not Supported")
            raise self._pending_error
        if version == "1.1" and not self._has_host:
            self._pending_error = HTTPError(400, "Missing Host header")
            raise self._pending_error
        if self._transfer_encoding is not None:
            self._pending_error = _transfer_coding_error(self._transfer_encoding)
            if self._pending_error is not None:
                raise self._pending_error
        length = self._content_length
        if length is not None and length.isdigit() and int(length) > limits.max_body_size:
            self._pending_error = HTTPError(413, "Payload Too Large")
            raise self._pending_error
        expect = self._expect
        if expect is not None:
            if expect.lower() != "100-continue":
                self._pending_error = HTTPError(417, "Expectation Failed")
                raise self._pending_error
            self.expect_continue = version == "1.1"
        self._headers_obj = Headers(self._headers)

    def on_body(self, body: bytes) -> None:
        self.expect_continue = False
        got = self._body
        if not got:
            got = self._body = body
        else:
            if type(got) is bytes:
                got = self._body = bytearray(got)
            got += body
        if len(got) > self._limits.max_body_size:
            self._pending_error = HTTPError(413, "Payload Too Large")
            raise self._pending_error

    def on_message_complete(self) -> None:
        self.expect_continue = False
        parser = self._parser
        assert parser is not None
        method = parser.get_method()
        request = Request(
            _METHODS.get(method) or method.decode("ascii", "replace"),
            self._url.decode("latin-1"),
            self._headers_obj,
            self._body if type(self._body) is bytes else bytes(self._body),
            self._client,
            self._version,
            self._scheme,
        )
        # An HTTP/1.0 message with Transfer-Encoding has unreliable framing:
        # answer it, then close (RFC 9112 6.1).
        request.keep_alive = parser.should_keep_alive() and (self._transfer_encoding is None or self._version != "1.0")
        self.requests.append(request)
        self._head_size = 0
        self._reset()


def _transfer_coding_error(value: str) -> HTTPError | None:
    """None for ``chunked`` alone. Without ``chunked`` last (once) the body
    length is unknown: 400 (RFC 9112 6.3). Other codings before it (``gzip,
    chunked``) llhttp lets through and would decode the chunks while
    ignoring the gzip: 501, as nginx and h11 answer (RFC 9112 6.1)."""
    codings = [c.strip(" \t").lower() for c in value.split(",")]
    if codings == ["chunked"]:
        return None
    if codings[-1] != "chunked" or "chunked" in codings[:-1]:
        return HTTPError(400, "chunked must be the final transfer coding, applied once")
    return HTTPError(501, "Transfer-Encoding other than chunked is not implemented")
