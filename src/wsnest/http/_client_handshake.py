"""WebSocket opening handshake, client side (RFC 6455 section 4.1), sans-I/O.

:func:`parse_ws_url` checks a ``ws://`` or ``wss://`` URL;
:class:`ClientHandshake` makes the upgrade request and reads the server's
response from bytes fed to it as they arrive, with no sockets and no trio.
The response head is parsed here: it is small, and the checks the client
needs (which bytes are the first WebSocket frames, how much of a refusal's
body to keep) are easier to own than to get from an HTTP parser built for
requests.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from .._errors import InvalidExtension, InvalidHandshake, InvalidStatus, InvalidSubprotocol, InvalidURL
from ..core import accept_key
from ..core._deflate import DeflateNegotiationError, DeflateParams, accept_response, client_offer
from ._headers import Headers

#: ``User-Agent`` of a handshake unless told otherwise. The versioned value
#: (``wsnest/<version>``) is the public API's to pass: the version lives in
#: the top-level package, above this layer.
USER_AGENT = "wsnest"

#: The longest response head accepted (all interim 1xx heads included).
MAX_HEAD_SIZE = 65536
#: How much of a refusal's body :class:`InvalidStatus` keeps.
MAX_BODY_SIZE = 4096

_TCHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Field values: visible characters, obs-text, space and tab (RFC 9110 5.5).
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_STATUS_LINE = re.compile(r"HTTP/1\.([0-9]) ([0-9]{3})(?: ([^\x00-\x08\x0a-\x1f\x7f]*))?")
_OWS = " \t"
# scheme ":" ["//" authority] path ["?" query] (fragments are refused before).
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?://([^/?]*))?([^?]*)(?:\?(.*))?", re.DOTALL)
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# The longest chunk-size line (with extensions) read before giving up.
_MAX_CHUNK_LINE = 1024
# Characters left as they are in a request-target (RFC 3986 unreserved,
# sub-delims, ":@/?" and "%" of existing escapes); the rest is %-encoded.
_TARGET_SAFE = "-._~!$&'()*+,;=:@/?%"
# Headers this class writes itself.
_MANAGED = {
    "host": "it is taken from the URL",
    "upgrade": "the handshake sets it",
    "connection": "the handshake sets it",
    "sec-websocket-key": "the handshake sets it (see the key argument)",
    "sec-websocket-version": "the handshake sets it",
    "sec-websocket-protocol": "use the subprotocols argument",
    "sec-websocket-extensions": "use the permessage_deflate argument",
    "origin": "use the origin argument",
    "user-agent": "use the user_agent argument",
    "content-length": "a handshake request has no body",
    "transfer-encoding": "a handshake request has no body",
}


# -- URLs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WsURL:
    """A checked WebSocket URL: where to connect and what to ask for."""

    #: ``wss``: the connection uses TLS.
    secure: bool
    #: Host name or IP address (an IPv6 address without brackets).
    host: str
    #: TCP port (80 or 443 unless the URL names one).
    port: int
    #: Path and query: the request-target of the upgrade request.
    resource: str = "/"

    def __post_init__(self) -> None:
        # Whatever built it, a WsURL is safe to write into a request head.
        if not self.host.isascii() or not self.host or any(c <= " " or c in "\x7f/?#@[]" for c in self.host):
            raise ValueError(f"host: invalid host {self.host!r}")
        if not 0 < self.port < 65536:
            raise ValueError(f"port: expected 1 to 65535, got {self.port!r}")
        resource = self.resource
        if not (resource.startswith("/") and resource.isascii()) or any(c <= " " or c in "\x7f#" for c in resource):
            raise ValueError(f"resource: expected an ASCII path starting with / (no spaces), got {resource!r}")

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: brackets around IPv6, no default port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == (443 if self.secure else 80) else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The URL in normal form (a base to resolve a redirect against)."""
        return f"{'wss' if self.secure else 'ws'}://{self.host_header}{self.resource}"


def parse_ws_url(url: str) -> WsURL:
    """Check a ``ws://`` or ``wss://`` URL (RFC 6455 section 3).

    Raises :class:`~wsnest.InvalidURL` for another scheme, no host, a bad
    port, a fragment, user information, whitespace or control characters.
    A non-ASCII host is IDNA-encoded, non-ASCII or unsafe characters of the
    path and query are %-encoded as UTF-8.
    """
    if not isinstance(url, str):
        raise TypeError(f"url: expected a str, got {type(url).__name__}")
    if any(c <= " " or c == "\x7f" for c in url):
        raise InvalidURL(url, "contains whitespace or a control character")
    if "#" in url:
        raise InvalidURL(url, "a WebSocket URL cannot have a fragment")
    # RFC 3986 generic syntax, split here rather than by urllib, whose
    # checks and messages vary between Python versions.
    match = _URL.fullmatch(url)
    scheme = match[1].lower() if match else ""
    if scheme not in ("ws", "wss"):
        got = f"got {scheme!r}" if scheme else "none given"
        raise InvalidURL(url, f"the scheme must be ws or wss, {got}")
    assert match is not None
    secure = scheme == "wss"
    netloc, path, query = match[2] or "", match[3], match[4]
    if "@" in netloc:
        raise InvalidURL(url, "user information (user:password@) is not supported")
    if netloc.startswith("["):
        end = netloc.find("]")
        host, rest = netloc[1:end], netloc[end + 1 :]
        if end < 0:
            raise InvalidURL(url, "invalid IPv6 address (no closing bracket)")
        if rest and not rest.startswith(":"):
            raise InvalidURL(url, "invalid host (only :port may follow an IPv6 address)")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            host = ""
        if not host or "%" in host:  # zone ids would need RFC 6874 encoding
            raise InvalidURL(url, f"invalid IPv6 address {netloc[: end + 1]!r}")
        port_text = rest[1:]
    else:
        host, _, port_text = netloc.partition(":")
        host = _reg_name(url, host)
    if not host:
        raise InvalidURL(url, "no host")
    port = 443 if secure else 80
    if port_text:
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise InvalidURL(url, f"invalid port {port_text!r} (expected 1 to 65535)")
        port = int(port_text)
    resource = (path or "/") + (f"?{query}" if query else "")
    return WsURL(secure, host, port, quote(resource, safe=_TARGET_SAFE))


def _reg_name(url: str, host: str) -> str:
    """A host name, lower-cased and IDNA-encoded when it is not ASCII."""
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURL(url, f"invalid host name {host!r}") from None
    if any(not (c.isalnum() or c in "-._~") for c in host):
        raise InvalidURL(url, f"invalid character in host {host!r}")
    return host.lower()


# -- the handshake ------------------------------------------------------------------


@dataclass(frozen=True)
class HandshakeResult:
    """A successful opening handshake: the server's ``101`` and what it agreed to."""

    #: Always 101.
    status: int
    #: The reason phrase (usually ``Switching Protocols``).
    reason: str
    #: The response headers (case-insensitive lookup, repeats kept).
    headers: Headers
    #: The subprotocol the server chose, or None.
    subprotocol: str | None
    #: The permessage-deflate parameters the server agreed to, or None.
    deflate: DeflateParams | None
    #: Bytes received after the response head: the first WebSocket frames.
    tail: bytes


def _check_token(argument: str, what: str, text: object) -> str:
    if not isinstance(text, str):
        raise TypeError(f"{argument}: {what} must be a str, got {type(text).__name__}")
    if not text or any(c not in _TCHARS for c in text):
        raise ValueError(f"{argument}: invalid {what} {text!r} (expected an HTTP token)")
    return text


def _check_value(argument: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{argument}: the value of {name} must be a str, got {type(value).__name__}")
    if _BAD_VALUE.search(value):
        raise ValueError(f"{argument}: the value of {name} contains a line break or control character: {value!r}")
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{argument}: the value of {name} is not Latin-1: {value!r}") from None
    return value.strip(_OWS)


def _list_values(values: list[str]) -> list[str]:
    """The elements of RFC 9110 list headers (empty elements dropped)."""
    return [t.strip(_OWS) for v in values for t in v.split(",") if t.strip(_OWS)]


def _getall(pairs: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in pairs if k.lower() == name]


class ClientHandshake:
    """One client's opening handshake, as bytes: :meth:`request` is what to
    send, :meth:`receive` reads the response as it arrives.

    ``key`` (16 bytes) fixes ``Sec-WebSocket-Key``, for tests; otherwise it
    is random. ``headers`` are sent after the handshake's own and may not
    repeat them (``Host``, ``Origin``, ``Sec-WebSocket-*``...: the arguments
    set those). ``user_agent=None`` sends no ``User-Agent``.
    """

    def __init__(
        self,
        url: WsURL,
        *,
        subprotocols: Sequence[str] = (),
        headers: Sequence[tuple[str, str]] | Mapping[str, str] = (),
        origin: str | None = None,
        user_agent: str | None = USER_AGENT,
        permessage_deflate: bool = False,
        key: bytes | None = None,
    ) -> None:
        if not isinstance(url, WsURL):
            raise TypeError(f"url: expected a WsURL (see parse_ws_url), got {type(url).__name__}")
        if isinstance(subprotocols, str):
            raise TypeError("subprotocols: expected a sequence of str, got a single str")
        offered = [_check_token("subprotocols", "subprotocol", p) for p in subprotocols]
        if len(set(offered)) != len(offered):
            raise ValueError(f"subprotocols: a subprotocol is repeated: {offered!r}")
        if not isinstance(permessage_deflate, bool):
            raise TypeError(f"permessage_deflate: expected True or False, got {permessage_deflate!r}")
        if key is None:
            key = os.urandom(16)
        elif not isinstance(key, bytes) or len(key) != 16:
            raise ValueError(f"key: expected 16 bytes, got {key!r}")
        self.url = url
        #: The offered subprotocols, in order of preference.
        self.subprotocols: tuple[str, ...] = tuple(offered)
        self.permessage_deflate = permessage_deflate
        #: The ``Sec-WebSocket-Key`` sent.
        self.key = base64.b64encode(key).decode("ascii")
        #: The ``Sec-WebSocket-Accept`` the server must answer.
        self.accept = accept_key(self.key)
        lines = [
            f"GET {url.resource} HTTP/1.1",
            f"Host: {url.host_header}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {self.key}",
            "Sec-WebSocket-Version: 13",
        ]
        if origin is not None:
            lines.append(f"Origin: {_check_value('origin', 'Origin', origin)}")
        if offered:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(offered)}")
        if permessage_deflate:
            lines.append(f"Sec-WebSocket-Extensions: {client_offer()}")
        if user_agent is not None:
            lines.append(f"User-Agent: {_check_value('user_agent', 'User-Agent', user_agent)}")
        items = headers.items() if isinstance(headers, Mapping) else headers
        for item in items:
            try:
                name, value = item
            except (TypeError, ValueError):
                raise TypeError(f"headers: expected (name, value) pairs, got {item!r}") from None
            _check_token("headers", "header name", name)
            why = _MANAGED.get(name.lower())
            if why is not None:
                raise ValueError(f"headers: {name} cannot be given here: {why}")
            lines.append(f"{name}: {_check_value('headers', name, value)}")
        self._request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._buffer = bytearray()
        self._scanned = 0  # how far the buffer holds no end of head
        self._head_bytes = 0  # interim (1xx) heads already read
        # Set once a refusal's head is read: what InvalidStatus will carry.
        self._refusal: tuple[int, str, list[tuple[str, str]]] | None = None
        self._chunked = False
        self._length: int | None = None
        self._body = bytearray()  # a chunked refusal's body so far
        self._done = False

    def request(self) -> bytes:
        """The upgrade request to send (the same bytes every time)."""
        return self._request

    def receive(self, data: bytes | bytearray | memoryview) -> HandshakeResult | None:
        """Feed response bytes as they arrive; ``b""`` means the server closed.

        Returns None while more bytes are needed, then the
        :class:`HandshakeResult` of a valid ``101``. Raises
        :class:`~wsnest.InvalidStatus` for another status (once the body is
        in, up to 4096 bytes; a redirect at once),
        :class:`~wsnest.InvalidHandshake` for a malformed or truncated
        response or a bad ``101``, :class:`~wsnest.InvalidSubprotocol` and
        :class:`~wsnest.InvalidExtension` for a choice that was not offered.
        """
        if self._done:
            raise RuntimeError("the handshake is already finished")
        eof = not data
        self._buffer += data
        try:
            if self._refusal is not None:
                self._refused(eof)
                return None
            return self._head(eof)
        except BaseException:
            self._done = True
            raise

    # -- the head -----------------------------------------------------------------

    def _head(self, eof: bool) -> HandshakeResult | None:
        while True:
            buf = self._buffer
            if buf[:5] != b"HTTP/"[: len(buf)]:
                raise InvalidHandshake(f"the server did not answer with HTTP: {bytes(buf[:40])!r}")
            end = buf.find(b"\r\n\r\n", self._scanned)
            if end < 0:
                self._scanned = max(0, len(buf) - 3)
                if self._head_bytes + len(buf) >= MAX_HEAD_SIZE:
                    raise InvalidHandshake(f"response head longer than {MAX_HEAD_SIZE} bytes")
                if eof:
                    got = f"{len(buf)} bytes received" if buf else "nothing received"
                    raise InvalidHandshake(f"connection closed before the response head was complete ({got})")
                return None
            end += 4
            if self._head_bytes + end > MAX_HEAD_SIZE:
                raise InvalidHandshake(f"response head longer than {MAX_HEAD_SIZE} bytes")
            version, status, reason, pairs = _parse_head(bytes(buf[: end - 4]))
            del buf[:end]
            self._scanned = 0
            if status == 101:
                if version != 1:
                    raise InvalidHandshake(f"101 Switching Protocols with HTTP/1.{version} (expected HTTP/1.1)")
                self._done = True
                return self._accept(reason, pairs)
            if 100 <= status < 200:
                # Interim responses (103 Early Hints...) come before the final one.
                self._head_bytes += end
                continue
            self._refusal = (status, reason, pairs)
            encodings = _list_values(_getall(pairs, "transfer-encoding"))
            self._chunked = bool(encodings) and encodings[-1].lower() == "chunked"
            lengths = {v.strip(_OWS) for v in _getall(pairs, "content-length")}
            if not self._chunked and len(lengths) == 1 and next(iter(lengths)).isdigit():
                self._length = int(lengths.pop())
            if status in (204, 304):  # never a body (RFC 9110 6.4.1)
                self._chunked, self._length = False, 0
                self._refused(True)
                return None
            if 300 <= status < 400 and _getall(pairs, "location"):
                # The caller follows redirects: no waiting for a body.
                self._refused(True)
                return None
            self._refused(eof)
            return None

    def _accept(self, reason: str, pairs: list[tuple[str, str]]) -> HandshakeResult:
        upgrade = _list_values(_getall(pairs, "upgrade"))
        if [t.lower() for t in upgrade] != ["websocket"]:
            got = f"got {', '.join(upgrade)!r}" if upgrade else "it is missing"
            raise InvalidHandshake(f"Upgrade header: expected 'websocket', {got}")
        connection = _list_values(_getall(pairs, "connection"))
        if "upgrade" not in (t.lower() for t in connection):
            got = f"got {', '.join(connection)!r}" if connection else "it is missing"
            raise InvalidHandshake(f"Connection header: expected 'upgrade', {got}")
        accepts = [v.strip(_OWS) for v in _getall(pairs, "sec-websocket-accept")]
        if accepts != [self.accept]:
            if not accepts:
                got = "it is missing"
            elif len(accepts) > 1:
                got = f"got {len(accepts)} of them"
            else:
                got = f"got {accepts[0]!r}"
            raise InvalidHandshake(f"Sec-WebSocket-Accept header: expected {self.accept!r}, {got}")
        return HandshakeResult(
            101, reason, Headers(pairs), self._subprotocol(pairs), self._extensions(pairs), bytes(self._buffer)
        )

    def _subprotocol(self, pairs: list[tuple[str, str]]) -> str | None:
        chosen = _list_values(_getall(pairs, "sec-websocket-protocol"))
        if not chosen:
            return None
        if len(chosen) > 1:
            raise InvalidSubprotocol(f"the server chose several subprotocols: {', '.join(chosen)!r}")
        if not self.subprotocols:
            raise InvalidSubprotocol(f"the server chose subprotocol {chosen[0]!r}, but none was offered")
        if chosen[0] not in self.subprotocols:
            offered = ", ".join(self.subprotocols)
            raise InvalidSubprotocol(f"the server chose subprotocol {chosen[0]!r}, which was not offered ({offered})")
        return chosen[0]

    def _extensions(self, pairs: list[tuple[str, str]]) -> DeflateParams | None:
        values = _getall(pairs, "sec-websocket-extensions")
        if not any(v.strip(" \t,") for v in values):
            return None
        if not self.permessage_deflate:
            joined = ", ".join(v.strip(_OWS) for v in values)
            raise InvalidExtension(f"the server chose extensions {joined!r}, but none was offered")
        try:
            return accept_response(values)
        except DeflateNegotiationError as exc:
            raise InvalidExtension(str(exc)) from None

    # -- a refusal's body ---------------------------------------------------------

    def _refused(self, eof: bool) -> None:
        """Raise the :class:`InvalidStatus` once its body is in (or can't be
        any more); return while more of it may come."""
        assert self._refusal is not None
        buf = self._buffer
        if self._chunked:
            done = self._take_chunks(eof)
            body = bytes(self._body)
        else:
            want = MAX_BODY_SIZE if self._length is None else min(self._length, MAX_BODY_SIZE)
            body, done = bytes(buf[:want]), len(buf) >= want
        if done or eof:
            raise InvalidStatus(*self._refusal, body[:MAX_BODY_SIZE])

    def _take_chunks(self, eof: bool) -> bool:
        """Move the chunks at the start of the buffer into ``_body`` (a
        chunk's data once it is all in, so that bytes trickling in cost no
        rescan); True once the body is complete: its last chunk, enough of
        it, or malformed (nothing more can be read from it)."""
        buf, body = self._buffer, self._body
        while len(body) < MAX_BODY_SIZE:
            eol = buf.find(b"\r\n", 0, _MAX_CHUNK_LINE)
            if eol < 0:
                return len(buf) >= _MAX_CHUNK_LINE
            size_text = bytes(buf[:eol]).split(b";", 1)[0].strip(b" \t")
            if _CHUNK_SIZE.fullmatch(size_text) is None:
                return True
            size = int(size_text, 16)
            if size == 0:
                return True
            start = eol + 2
            data = buf[start : start + size]
            if len(buf) < start + size + 2:
                if eof or len(body) + len(data) >= MAX_BODY_SIZE:
                    body += data
                    return True
                return False
            body += data
            if buf[start + size : start + size + 2] != b"\r\n":
                return True
            del buf[: start + size + 2]
        return True


def _parse_head(head: bytes) -> tuple[int, int, str, list[tuple[str, str]]]:
    """``(minor version, status, reason, header pairs)`` of a response head
    (without its final CRLF CRLF); raises :class:`InvalidHandshake`."""
    status_line, *lines = head.decode("latin-1").split("\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise InvalidHandshake(f"malformed status line: {status_line[:100]!r}")
    pairs: list[tuple[str, str]] = []
    for line in lines:
        if line[:1] in (" ", "\t") and pairs:
            # obs-fold: a user agent replaces it with a space (RFC 9112 5.2).
            name, value = pairs[-1]
            pairs[-1] = (name, f"{value} {line.strip(_OWS)}".strip(_OWS))
            if _BAD_VALUE.search(line):
                raise InvalidHandshake(f"malformed header line: {line[:100]!r}")
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or any(c not in _TCHARS for c in name) or _BAD_VALUE.search(value):
            raise InvalidHandshake(f"malformed header line: {line[:100]!r}")
        pairs.append((name, value.strip(_OWS)))
    return int(match[1]), int(match[2]), match[3] or "", pairs
