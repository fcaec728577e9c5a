"""The client's opening handshake, sans I/O (``wsnest.http.ClientHandshake``):
URL checks, the upgrade request, the response read from bytes fed in any
pieces, the client side of permessage-deflate negotiation, and the errors
(``wsnest.InvalidURL``, ``InvalidStatus``, ``InvalidHandshake``,
``InvalidExtension``, ``InvalidSubprotocol``).

The last tests do the handshake with a real ``websockets`` server (its sync
server in a thread) over a blocking loopback socket: no trio needed.
"""

from __future__ import annotations

import base64
import contextlib
import re
import socket
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import pytest
import websockets
import websockets.sync.server
from hypothesis import given, settings
from hypothesis import strategies as st

import wsnest
from wsnest import InvalidExtension, InvalidHandshake, InvalidStatus, InvalidSubprotocol, InvalidURL
from wsnest.core import CLIENT, CLOSE_NORMAL, OP_TEXT, accept_key, close_payload, new_session
from wsnest.core._deflate import (
    DeflateNegotiationError,
    DeflateParams,
    accept_response,
    client_offer,
    negotiate,
    parse_extensions,
)
from wsnest.http import (
    MAX_BODY_SIZE,
    MAX_HEAD_SIZE,
    USER_AGENT,
    ClientHandshake,
    HandshakeResult,
    RequestParser,
    WsURL,
    parse_ws_url,
)
from wsnest.http._upgrade import check_upgrade

TIMEOUT = 10
# The sample nonce of RFC 6455 section 1.3 and its answer.
KEY = b"the sample nonce"
KEY_B64 = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
PMD = "permessage-deflate"
URL = parse_ws_url("ws://example.com/chat")


def handshake(**kw: Any) -> ClientHandshake:
    kw.setdefault("key", KEY)
    return ClientHandshake(kw.pop("url", URL), **kw)


def response(*lines: str, accept: str = ACCEPT, status: str = "101 Switching Protocols") -> bytes:
    """A response head: the 101's three headers unless ``status`` is another."""
    head = [f"HTTP/1.1 {status}"]
    if status.startswith("101"):
        head += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Accept: {accept}"]
    return ("\r\n".join([*head, *lines]) + "\r\n\r\n").encode("latin-1")


def refusal(data: bytes, **kw: Any) -> InvalidStatus:
    """The InvalidStatus that ``data`` (fed at once, then EOF) raises."""
    hs = handshake(**kw)
    with pytest.raises(InvalidStatus) as info:
        hs.receive(data)
        hs.receive(b"")
    return info.value


def test_rfc_sample_key() -> None:
    hs = handshake()
    assert hs.key == KEY_B64
    assert hs.accept == ACCEPT == accept_key(KEY_B64)


# -- URLs -----------------------------------------------------------------------------

GOOD_URLS = [
    # url, secure, host, port, resource, host_header
    ("ws://example.com", False, "example.com", 80, "/", "example.com"),
    ("wss://example.com", True, "example.com", 443, "/", "example.com"),
    ("ws://example.com:8080/chat?room=1&x=2", False, "example.com", 8080, "/chat?room=1&x=2", "example.com:8080"),
    ("WS://Example.COM:80/Path", False, "example.com", 80, "/Path", "example.com"),
    ("wss://example.com:443/a/b/", True, "example.com", 443, "/a/b/", "example.com"),
    ("wss://h:80", True, "h", 80, "/", "h:80"),
    ("ws://h:443", False, "h", 443, "/", "h:443"),
    ("ws://h:/", False, "h", 80, "/", "h"),
    ("ws://h?x=1", False, "h", 80, "/?x=1", "h"),
    ("ws://127.0.0.1:1/", False, "127.0.0.1", 1, "/", "127.0.0.1:1"),
    ("ws://h:65535", False, "h", 65535, "/", "h:65535"),
    ("ws://[::1]:9000/x", False, "::1", 9000, "/x", "[::1]:9000"),
    ("wss://[2001:db8::1]/", True, "2001:db8::1", 443, "/", "[2001:db8::1]"),
    ("ws://[::ffff:127.0.0.1]", False, "::ffff:127.0.0.1", 80, "/", "[::ffff:127.0.0.1]"),
    ("ws://h/p%20q?a=%2F", False, "h", 80, "/p%20q?a=%2F", "h"),
    ("ws://h/\u00e9t\u00e9?q=\u00fc", False, "h", 80, "/%C3%A9t%C3%A9?q=%C3%BC", "h"),
    ('ws://h/a"b<c>', False, "h", 80, "/a%22b%3Cc%3E", "h"),
    ("ws://b\u00fccher.example/", False, "xn--bcher-kva.example", 80, "/", "xn--bcher-kva.example"),
]


@pytest.mark.parametrize(("url", "secure", "host", "port", "resource", "host_header"), GOOD_URLS)
def test_good_urls(url: str, secure: bool, host: str, port: int, resource: str, host_header: str) -> None:
    parsed = parse_ws_url(url)
    assert parsed == WsURL(secure, host, port, resource)
    assert parsed.host_header == host_header
    # The normal form parses to the same thing.
    assert parse_ws_url(parsed.url) == parsed


BAD_URLS = [
    ("http://example.com/", "scheme must be ws or wss, got 'http'"),
    ("https://example.com/", "got 'https'"),
    ("example.com/chat", "none given"),
    ("ws:example.com", "no host"),
    ("ws:///chat", "no host"),
    ("ws://:80/", "no host"),
    ("ws://h:0/", "invalid port '0'"),
    ("ws://h:65536/", "invalid port '65536'"),
    ("ws://h:http/", "invalid port 'http'"),
    ("ws://h:-1/", "invalid port"),
    ("ws://h:8080:1/", "invalid port"),
    ("ws://h/#frag", "fragment"),
    ("ws://h/chat#", "fragment"),
    ("ws://user:pw@h/", "user information"),
    ("ws://user@h/", "user information"),
    ("ws://h /", "whitespace"),
    ("ws://h/a b", "whitespace"),
    ("ws://h/\r\nX: y", "control character"),
    ("ws://h/\x00", "control character"),
    ("ws://[::1/", "invalid IPv6 address \\(no closing bracket\\)"),
    ("ws://[zz::1]/", "invalid IPv6 address"),
    ("ws://[fe80::1%25eth0]/", "invalid IPv6 address"),
    ("ws://[::1]x/", "only :port may follow"),
    ("ws://h_%41/", "invalid character in host"),
    ("ws://h!/", "invalid character in host"),
]


@pytest.mark.parametrize(("url", "message"), BAD_URLS)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(InvalidURL, match=message) as info:
        parse_ws_url(url)
    assert isinstance(info.value, ValueError)
    assert info.value.url == url
    assert str(info.value).startswith("url: ")


def test_url_must_be_a_str() -> None:
    with pytest.raises(TypeError, match="url: expected a str, got bytes"):
        parse_ws_url(b"ws://h/")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((False, "h\r\nX: y", 80), "host"),
        ((False, "", 80), "host"),
        ((False, "h/p", 80), "host"),
        ((False, "h", 0), "port"),
        ((False, "h", 80, "chat"), "resource"),
        ((False, "h", 80, "/a b"), "resource"),
        ((False, "h", 80, "/\u00e9"), "resource"),
    ],
)
def test_wsurl_refuses_what_would_break_the_request(args: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WsURL(*args)


# -- the request ----------------------------------------------------------------------


def request_lines(hs: ClientHandshake) -> list[str]:
    data = hs.request()
    assert data.endswith(b"\r\n\r\n")
    return data[:-4].decode("latin-1").split("\r\n")


def test_default_request() -> None:
    assert request_lines(handshake()) == [
        "GET /chat HTTP/1.1",
        "Host: example.com",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY_B64}",
        "Sec-WebSocket-Version: 13",
        f"User-Agent: {USER_AGENT}",
    ]


def test_full_request() -> None:
    hs = handshake(
        url=parse_ws_url("wss://[::1]:8443/a?b=c"),
        subprotocols=["chat", "superchat"],
        origin="https://example.com",
        user_agent="test/1.0 (x)",
        permessage_deflate=True,
        headers=[("Authorization", "Bearer abc"), ("X-Trace", " 1 "), ("X-Trace", "2")],
    )
    assert hs.request() == (
        b"GET /a?b=c HTTP/1.1\r\n"
        b"Host: [::1]:8443\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"Origin: https://example.com\r\n"
        b"Sec-WebSocket-Protocol: chat, superchat\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
        b"User-Agent: test/1.0 (x)\r\n"
        b"Authorization: Bearer abc\r\n"
        b"X-Trace: 1\r\n"
        b"X-Trace: 2\r\n"
        b"\r\n"
    )
    assert hs.request() is hs.request()


def test_headers_as_a_mapping_and_no_user_agent() -> None:
    lines = request_lines(handshake(headers={"Cookie": "a=1"}, user_agent=None))
    assert lines[-1] == "Cookie: a=1"
    assert not any(line.lower().startswith("user-agent") for line in lines)


def test_random_key() -> None:
    keys = {ClientHandshake(URL).key for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(key) == 24
        assert len(base64.b64decode(key, validate=True)) == 16


def test_user_agent_names_wsnest() -> None:
    assert USER_AGENT.split("/")[0] == "wsnest"


def test_request_passes_the_servers_own_checks() -> None:
    """wsnest's server (llhttp, then its upgrade checks) takes the request
    as a valid upgrade offering what the client offered."""
    hs = handshake(subprotocols=["chat"], permessage_deflate=True, origin="http://o", headers=[("X-A", "b")])
    parser = RequestParser(wsnest.Limits())
    parser.feed(hs.request())
    (req,) = parser.requests
    assert req.upgrade
    assert parser.upgrade_tail == b""
    assert check_upgrade(req, ["chat"], ["http://o"]) == (ACCEPT, "chat")
    assert negotiate(req.headers.getall("sec-websocket-extensions")) == DeflateParams()
    assert req.headers["x-a"] == "b"


@pytest.mark.parametrize(
    ("kw", "error", "message"),
    [
        ({"headers": [("Bad Name", "x")]}, ValueError, "headers: invalid header name 'Bad Name'"),
        ({"headers": [("X:Y", "x")]}, ValueError, "headers: invalid header name"),
        ({"headers": [("", "x")]}, ValueError, "headers: invalid header name"),
        ({"headers": [("X-\u00e9", "x")]}, ValueError, "headers: invalid header name"),
        ({"headers": [("X-A", "a\r\nX-B: b")]}, ValueError, "headers: the value of X-A contains a line break"),
        ({"headers": [("X-A", "a\nb")]}, ValueError, "headers: the value of X-A contains a line break"),
        ({"headers": [("X-A", "a\x00")]}, ValueError, "headers: the value of X-A contains"),
        ({"headers": [("X-A", "\u20ac")]}, ValueError, "headers: the value of X-A is not Latin-1"),
        ({"headers": [("X-A", 1)]}, TypeError, "headers: the value of X-A must be a str"),
        ({"headers": [("X-A",)]}, TypeError, "headers: expected \\(name, value\\) pairs"),
        ({"headers": [("Host", "evil")]}, ValueError, "headers: Host cannot be given here"),
        ({"headers": {"sec-websocket-key": "x"}}, ValueError, "headers: sec-websocket-key cannot be given"),
        ({"headers": [("Origin", "x")]}, ValueError, "use the origin argument"),
        ({"headers": [("Sec-WebSocket-Protocol", "x")]}, ValueError, "use the subprotocols argument"),
        ({"headers": [("Content-Length", "0")]}, ValueError, "no body"),
        ({"origin": "http://o\r\nX: y"}, ValueError, "origin: the value of Origin contains a line break"),
        ({"user_agent": "a\nb"}, ValueError, "user_agent: "),
        ({"subprotocols": ["a b"]}, ValueError, "subprotocols: invalid subprotocol 'a b'"),
        ({"subprotocols": [""]}, ValueError, "subprotocols: invalid subprotocol"),
        ({"subprotocols": ["chat", "chat"]}, ValueError, "subprotocols: a subprotocol is repeated"),
        ({"subprotocols": "chat"}, TypeError, "subprotocols: expected a sequence of str"),
        ({"key": b"short"}, ValueError, "key: expected 16 bytes"),
        ({"key": KEY_B64.encode()}, ValueError, "key: expected 16 bytes"),
        ({"permessage_deflate": 1}, TypeError, "permessage_deflate: expected True or False"),
        ({"url": "ws://h/"}, TypeError, "url: expected a WsURL"),
    ],
)
def test_invalid_arguments_are_refused(kw: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        handshake(**kw)


# -- the response ---------------------------------------------------------------------

GOOD = response("Server: test", "X-Multi: a", "x-multi: b")


def test_good_response() -> None:
    result = handshake().receive(GOOD)
    assert result is not None
    assert result == HandshakeResult(101, "Switching Protocols", result.headers, None, None, b"")
    assert result.headers.raw == [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", ACCEPT),
        ("Server", "test"),
        ("X-Multi", "a"),
        ("x-multi", "b"),
    ]
    assert result.headers["SERVER"] == "test"
    assert result.headers.getall("x-multi") == ["a", "b"]


def test_good_response_split_anywhere_gives_the_same_result() -> None:
    tail = b"\x81\x05hello\x88\x00"
    data = (
        response("Sec-WebSocket-Protocol: chat", f"Sec-WebSocket-Extensions: {PMD}; server_max_window_bits=10") + tail
    )
    expected = handshake(subprotocols=["chat"], permessage_deflate=True).receive(data)
    assert expected is not None
    assert expected.tail == tail
    assert expected.subprotocol == "chat"
    assert expected.deflate == DeflateParams(server_max_window_bits=10)
    head_size = len(data) - len(tail)

    def same(result: HandshakeResult, got_tail: bytes) -> None:
        assert (result.status, result.reason, result.subprotocol, result.deflate) == (
            101,
            "Switching Protocols",
            "chat",
            expected.deflate,
        )
        assert result.headers.raw == expected.headers.raw
        assert result.tail == got_tail

    for cut in range(1, len(data)):
        hs = handshake(subprotocols=["chat"], permessage_deflate=True)
        first = hs.receive(data[:cut])
        if cut < head_size:
            assert first is None, cut
            second = hs.receive(data[cut:])
            assert second is not None
            same(second, tail)
        else:
            # Done at once: the bytes after the head that came with it are
            # the tail, the rest is for the caller's frame parser.
            assert first is not None
            same(first, data[head_size:cut])
    # One byte at a time.
    hs = handshake(subprotocols=["chat"], permessage_deflate=True)
    results = [hs.receive(data[i : i + 1]) for i in range(head_size)]
    assert results[:-1] == [None] * (head_size - 1)
    last = results[-1]
    assert last is not None
    same(last, b"")


@pytest.mark.parametrize(
    "data",
    [
        response("Connection: keep-alive, Upgrade")[: -len("\r\n\r\n")].replace(b"Connection: Upgrade\r\n", b"")
        + b"\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: WebSocket\r\nCONNECTION: upgrade\r\n"
        b"sec-websocket-accept:" + ACCEPT.encode() + b"\r\n\r\n",
        b"HTTP/1.1 101\r\nUpgrade:\twebsocket \r\nConnection: Upgrade\r\nSec-WebSocket-Accept:  "
        + ACCEPT.encode()
        + b"  \r\n\r\n",
        b"HTTP/1.1 101 \r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
        + ACCEPT.encode()
        + b"\r\nSec-WebSocket-Extensions: \r\nSec-WebSocket-Protocol: \r\n\r\n",
    ],
    ids=["connection-list", "header-case", "whitespace-no-reason", "empty-lists"],
)
def test_tolerated_variants(data: bytes) -> None:
    result = handshake().receive(data)
    assert result is not None
    assert (result.status, result.subprotocol, result.deflate, result.tail) == (101, None, None, b"")


def test_obs_fold_is_a_space() -> None:
    result = handshake().receive(response("X-Long: a", " \tb", "\tc"))
    assert result is not None
    assert result.headers["x-long"] == "a b c"


def test_interim_responses_are_skipped() -> None:
    data = b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n" + GOOD
    for cut in range(1, len(data)):
        hs = handshake()
        assert hs.receive(data[:cut]) is None
        result = hs.receive(data[cut:])
        assert result is not None
        assert result.headers["server"] == "test"
        assert "link" not in result.headers


@pytest.mark.parametrize(
    ("lines", "accept", "message"),
    [
        ((), "x" * 28, re.escape(f"Sec-WebSocket-Accept header: expected '{ACCEPT}', got 'xxxx")),
        ((), accept_key(b"another nonce!!!"), re.escape(f"expected '{ACCEPT}', got '")),
        ((f"Sec-WebSocket-Accept: {ACCEPT}",), ACCEPT, "got 2 of them"),
    ],
)
def test_accept_mismatch(lines: tuple[str, ...], accept: str, message: str) -> None:
    with pytest.raises(InvalidHandshake, match=message):
        handshake().receive(response(*lines, accept=accept))


def without(header: str, *lines: str) -> bytes:
    """A 101 without its ``header`` line, with ``lines`` added."""
    kept = [line for line in response().decode("latin-1").split("\r\n")[:-2] if not line.startswith(f"{header}:")]
    return ("\r\n".join([*kept, *lines]) + "\r\n\r\n").encode("latin-1")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (without("Sec-WebSocket-Accept"), "Sec-WebSocket-Accept header: expected .*, it is missing"),
        (without("Upgrade"), "Upgrade header: expected 'websocket', it is missing"),
        (without("Upgrade", "Upgrade: h2c"), "Upgrade header: expected 'websocket', got 'h2c'"),
        (without("Upgrade", "Upgrade: websocket, h2c"), "got 'websocket, h2c'"),
        (without("Upgrade", "Upgrade: websocket", "Upgrade: websocket"), "got 'websocket, websocket'"),
        (without("Connection"), "Connection header: expected 'upgrade', it is missing"),
        (without("Connection", "Connection: close"), "Connection header: expected 'upgrade', got 'close'"),
        (response().replace(b"HTTP/1.1", b"HTTP/1.0"), "HTTP/1.0 \\(expected HTTP/1.1\\)"),
    ],
)
def test_bad_101(data: bytes, message: str) -> None:
    with pytest.raises(InvalidHandshake, match=message):
        handshake().receive(data)


# -- refusals -----------------------------------------------------------------------------


def test_refusal_with_content_length_waits_for_the_body() -> None:
    data = response("Content-Length: 9", "Content-Type: text/plain", status="403 Forbidden") + b"forbidden"
    hs = handshake()
    for i in range(len(data) - 1):
        assert hs.receive(data[i : i + 1]) is None
    with pytest.raises(InvalidStatus) as info:
        hs.receive(data[-1:])
    exc = info.value
    assert isinstance(exc, wsnest.HandshakeError)
    assert (exc.status, exc.reason, exc.body) == (403, "Forbidden", b"forbidden")
    assert exc.headers == [("Content-Length", "9"), ("Content-Type", "text/plain")]
    assert "403 Forbidden" in str(exc)
    with pytest.raises(RuntimeError, match="already finished"):
        hs.receive(b"more")


def test_refusal_keeps_at_most_4096_bytes_of_body() -> None:
    body = bytes(range(256)) * 40
    head = response(f"Content-Length: {len(body)}", status="500 Internal Server Error")
    assert refusal(head + body).body == body[:MAX_BODY_SIZE]
    # Raised as soon as the kept part is in, not at the end of the body.
    hs = handshake()
    assert hs.receive(head + body[:4000]) is None
    with pytest.raises(InvalidStatus) as info:
        hs.receive(body[4000:4100])
    assert info.value.body == body[:MAX_BODY_SIZE]


def test_refusal_without_length_reads_until_eof() -> None:
    hs = handshake()
    assert hs.receive(response(status="400 Bad Request") + b"abc") is None
    assert hs.receive(b"def") is None
    with pytest.raises(InvalidStatus) as info:
        hs.receive(b"")
    assert (info.value.status, info.value.body) == (400, b"abcdef")


def test_refusal_with_length_cut_short_by_eof() -> None:
    exc = refusal(response("Content-Length: 100", status="503 Service Unavailable") + b"partial")
    assert (exc.status, exc.reason, exc.body) == (503, "Service Unavailable", b"partial")


@pytest.mark.parametrize("status", ["404 Not Found", "426 Upgrade Required", "200 OK"])
def test_refusal_with_empty_body_is_raised_at_once(status: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        handshake().receive(response("Content-Length: 0", status=status))
    assert info.value.body == b""
    assert str(info.value).endswith(status)


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
def test_status_without_body_is_raised_at_once(status: str) -> None:
    with pytest.raises(InvalidStatus) as info:
        handshake().receive(response(status=status) + b"next")
    assert info.value.body == b""


def test_chunked_refusal() -> None:
    chunks = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n"
    data = response("Transfer-Encoding: chunked", status="403 Forbidden") + chunks
    assert refusal(data).body == b"hello world"
    hs = handshake()
    assert hs.receive(data[:-5]) is None  # the last chunk is not in yet
    with pytest.raises(InvalidStatus) as info:
        hs.receive(data[-5:])
    assert info.value.body == b"hello world"
    # Cut short: what came; malformed: what came before.
    assert refusal(data[: data.index(b"wor")]).body == b"hello "
    bad = response("Transfer-Encoding: chunked", status="403 Forbidden") + b"5\r\nhelloXX6\r\n"
    with pytest.raises(InvalidStatus) as info:
        handshake().receive(bad)
    assert info.value.body == b"hello"


def test_chunked_refusal_keeps_at_most_4096_bytes() -> None:
    chunks = b"".join(b"%x\r\n%s\r\n" % (100, bytes([65 + i % 26]) * 100) for i in range(50))
    head = response("Transfer-Encoding: chunked", status="500 Oops")
    with pytest.raises(InvalidStatus) as info:
        handshake().receive(head + chunks)
    assert info.value.body == b"".join(bytes([65 + i % 26]) * 100 for i in range(50))[:MAX_BODY_SIZE]
    # Raised inside a large chunk as soon as enough of it is in.
    hs = handshake()
    assert hs.receive(head + b"10000\r\n" + b"x" * 4000) is None
    with pytest.raises(InvalidStatus) as info:
        hs.receive(b"x" * 96)
    assert info.value.body == b"x" * MAX_BODY_SIZE


def test_chunked_refusal_trickling_in() -> None:
    """One-byte chunks one byte at a time: the same body, in linear time."""
    body = bytes(range(256)) * 16
    data = response("Transfer-Encoding: chunked", status="403 Forbidden")
    data += b"".join(b"1;x=y\r\n%s\r\n" % body[i : i + 1] for i in range(len(body))) + b"0\r\n\r\n"
    hs = handshake()
    with pytest.raises(InvalidStatus) as info:
        for i in range(len(data)):
            assert hs.receive(data[i : i + 1]) is None
    assert info.value.body == body
    assert i < len(data) - 5  # done at the last byte of the body's last chunk


def test_chunk_size_line_too_long() -> None:
    data = response("Transfer-Encoding: chunked", status="403 Forbidden") + b"3\r\nabc\r\n1;" + b"x" * 2000
    with pytest.raises(InvalidStatus) as info:
        handshake().receive(data)
    assert info.value.body == b"abc"


@pytest.mark.parametrize("status", ["301 Moved Permanently", "302 Found", "307 Temporary Redirect", "308 X"])
def test_redirect_is_raised_right_after_the_head(status: str) -> None:
    head = response("Location: ws://other.example/chat", "Content-Length: 20", status=status)
    with pytest.raises(InvalidStatus) as info:
        handshake().receive(head + b"<a href=")
    exc = info.value
    assert exc.status == int(status[:3])
    assert ("Location", "ws://other.example/chat") in exc.headers
    assert exc.body == b"<a href="
    # A 3xx without Location is an ordinary refusal: it waits for its body.
    hs = handshake()
    assert hs.receive(response("Content-Length: 5", status="300 Multiple Choices")) is None
    with pytest.raises(InvalidStatus):
        hs.receive(b"a, b.")


def test_refusal_status_after_interim() -> None:
    exc = refusal(b"HTTP/1.1 100 Continue\r\n\r\n" + response("Content-Length: 2", status="401 Unauthorized") + b"no")
    assert (exc.status, exc.body) == (401, b"no")


def test_http_1_0_refusal() -> None:
    exc = refusal(b"HTTP/1.0 403 Forbidden\r\n\r\nnope")
    assert (exc.status, exc.reason, exc.body) == (403, "Forbidden", b"nope")


# -- malformed and truncated responses ----------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n", "did not answer with HTTP"),
        (b"H", None),
        (b"HTTP/1.1 abc OK\r\n\r\n", "malformed status line"),
        (b"HTTP/2 101\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 1010 X\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 101 Switching\x00\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nNo colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nBad Name: x\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nName : x\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\n: x\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\n folded-first\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nX: a\nb\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nX: a\rb\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 101 Switching Protocols\r\nX: a\x7f\r\n\r\n", "malformed header line"),
    ],
)
def test_garbage(data: bytes, message: str | None) -> None:
    hs = handshake()
    if message is None:
        assert hs.receive(data) is None  # a prefix of "HTTP/": wait
        return
    with pytest.raises(InvalidHandshake, match=message):
        hs.receive(data)


def test_garbage_is_refused_from_the_first_byte() -> None:
    with pytest.raises(InvalidHandshake, match="did not answer with HTTP"):
        handshake().receive(b"<")


def test_over_long_head() -> None:
    start = b"HTTP/1.1 101 Switching Protocols\r\nX-Filler: "
    # A head of exactly MAX_HEAD_SIZE bytes is read...
    base = response("X-Filler: ")
    filler = b"a" * (MAX_HEAD_SIZE - len(base))
    data = base[:-4] + filler + b"\r\n\r\n"
    assert len(data) == MAX_HEAD_SIZE
    result = handshake().receive(data)
    assert result is not None
    assert len(result.headers["x-filler"]) == len(filler)
    # ...one more byte is not, whether it comes at once or in pieces.
    longer = base[:-4] + filler + b"a\r\n\r\n"
    with pytest.raises(InvalidHandshake, match=f"longer than {MAX_HEAD_SIZE} bytes"):
        handshake().receive(longer)
    hs = handshake()
    hs.receive(start)
    with pytest.raises(InvalidHandshake, match="longer than"):
        for _ in range(MAX_HEAD_SIZE // 1000 + 1):
            assert hs.receive(b"b" * 1000) is None


def test_interim_heads_count_towards_the_limit() -> None:
    interim = b"HTTP/1.1 103 Early Hints\r\nLink: </" + b"x" * 1000 + b">\r\n\r\n"
    hs = handshake()
    with pytest.raises(InvalidHandshake, match="longer than"):
        for _ in range(MAX_HEAD_SIZE // len(interim) + 1):
            assert hs.receive(interim) is None


@pytest.mark.parametrize("cut", [0, 1, 5, 20, len(GOOD) - 1])
def test_eof_before_the_head(cut: int) -> None:
    hs = handshake()
    if cut:
        assert hs.receive(GOOD[:cut]) is None
    got = f"{cut} bytes received" if cut else "nothing received"
    with pytest.raises(InvalidHandshake, match=f"connection closed before the response head was complete \\({got}\\)"):
        hs.receive(b"")
    with pytest.raises(RuntimeError):
        hs.receive(b"")


def test_finished_handshake_takes_no_more_bytes() -> None:
    hs = handshake()
    assert hs.receive(GOOD) is not None
    with pytest.raises(RuntimeError, match="already finished"):
        hs.receive(b"\x81\x00")


def outcome(hs: ClientHandshake, pieces: list[bytes]) -> tuple[Any, ...]:
    """What feeding ``pieces`` then EOF gives: ``("result", fields, tail +
    the bytes not fed)`` or ``("error", type, message, details)``."""
    for i, piece in enumerate([*pieces, b""]):
        try:
            result = hs.receive(piece)
        except wsnest.HandshakeError as exc:
            details = (exc.status, exc.reason, exc.headers, exc.body) if isinstance(exc, InvalidStatus) else ()
            # Garbage is quoted as far as it came: compare the start only.
            message = str(exc).partition(": b")[0] if "did not answer with HTTP" in str(exc) else str(exc)
            return ("error", type(exc), message, details)
        if result is not None:
            rest = b"".join(pieces[i + 1 :])
            fields = (result.status, result.reason, result.headers.raw, result.subprotocol, result.deflate)
            return ("result", fields, result.tail + rest)
    raise AssertionError("EOF left the handshake unfinished")


SAMPLES = [
    GOOD + b"\x81\x00",
    response("Sec-WebSocket-Protocol: chat", f"Sec-WebSocket-Extensions: {PMD}; client_max_window_bits=9"),
    response("Content-Length: 5", status="403 Forbidden") + b"nope!",
    response("Transfer-Encoding: chunked", status="500 Oops") + b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    response("Location: /x", status="302 Found") + b"moved",
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + GOOD,
]


@settings(max_examples=400, deadline=None, derandomize=True)
@given(
    sample=st.sampled_from(SAMPLES),
    edits=st.lists(st.tuples(st.integers(0, 400), st.sampled_from(b"\r\n :,;=0HTTP/1.1 101\x00\x80az")), max_size=4),
    cut=st.integers(0, 400),
    splits=st.lists(st.integers(1, 400), max_size=6),
)
def test_any_response_in_any_pieces(sample: bytes, edits: list[tuple[int, int]], cut: int, splits: list[int]) -> None:
    """Mangled responses (bytes changed, cut short) fed in any pieces: a
    result or a HandshakeError, never another exception, and the same
    outcome as feeding them at once."""
    data = bytearray(sample)
    for pos, byte in edits:
        data[pos % len(data)] = byte
    data = data[: max(1, len(data) - cut % 40)]
    points = sorted({p % len(data) for p in splits} - {0})
    pieces = [bytes(data[a:b]) for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    kw: dict[str, Any] = {"subprotocols": ["chat"], "permessage_deflate": True}
    split, whole = outcome(handshake(**kw), pieces), outcome(handshake(**kw), [bytes(data)])
    if split[0] == "error" and split[3] and 300 <= split[3][0] < 400:
        # A redirect is raised with the part of its body that came with its head.
        assert whole[3][3].startswith(split[3][3])
        split, whole = split[:3], whole[:3]
    assert split == whole


# -- subprotocols -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offered", "lines", "chosen"),
    [
        (["chat", "superchat"], ["Sec-WebSocket-Protocol: superchat"], "superchat"),
        (["chat", "superchat"], ["Sec-WebSocket-Protocol:  chat "], "chat"),
        (["chat"], [], None),
        ([], [], None),
    ],
)
def test_subprotocol_chosen(offered: list[str], lines: list[str], chosen: str | None) -> None:
    result = handshake(subprotocols=offered).receive(response(*lines))
    assert result is not None
    assert result.subprotocol == chosen


@pytest.mark.parametrize(
    ("offered", "lines", "message"),
    [
        (["chat"], ["Sec-WebSocket-Protocol: other"], "chose subprotocol 'other', which was not offered \\(chat\\)"),
        (["chat"], ["Sec-WebSocket-Protocol: Chat"], "'Chat', which was not offered"),
        ([], ["Sec-WebSocket-Protocol: chat"], "chose subprotocol 'chat', but none was offered"),
        (["a", "b"], ["Sec-WebSocket-Protocol: a, b"], "several subprotocols: 'a, b'"),
        (["a", "b"], ["Sec-WebSocket-Protocol: a", "Sec-WebSocket-Protocol: b"], "several subprotocols"),
    ],
)
def test_subprotocol_refused(offered: list[str], lines: list[str], message: str) -> None:
    with pytest.raises(InvalidSubprotocol, match=message) as info:
        handshake(subprotocols=offered).receive(response(*lines))
    assert isinstance(info.value, wsnest.HandshakeError)


# -- permessage-deflate -------------------------------------------------------------------


def test_client_offer() -> None:
    assert client_offer() == f"{PMD}; client_max_window_bits"
    assert client_offer(client_max_window_bits=False) == PMD
    assert parse_extensions([client_offer()]) == [(PMD, [("client_max_window_bits", None)])]
    # wsnest's own server takes it.
    assert negotiate([client_offer()]) == DeflateParams()


ACCEPTED = {
    "plain": ([PMD], DeflateParams()),
    "case": (["PerMessage-Deflate; Server_No_Context_Takeover"], DeflateParams(server_no_context_takeover=True)),
    "server-nct": ([f"{PMD}; server_no_context_takeover"], DeflateParams(server_no_context_takeover=True)),
    "client-nct": ([f"{PMD}; client_no_context_takeover"], DeflateParams(client_no_context_takeover=True)),
    **{
        f"server-bits-{bits}": ([f"{PMD}; server_max_window_bits={bits}"], DeflateParams(server_max_window_bits=bits))
        for bits in range(8, 16)
    },
    **{
        f"client-bits-{bits}": ([f"{PMD}; client_max_window_bits={bits}"], DeflateParams(client_max_window_bits=bits))
        for bits in range(8, 16)
    },
    "quoted": ([f'{PMD}; client_max_window_bits="9"'], DeflateParams(client_max_window_bits=9)),
    "websockets-default": (
        [f"{PMD}; server_max_window_bits=12; client_max_window_bits=12"],
        DeflateParams(server_max_window_bits=12, client_max_window_bits=12),
    ),
    "everything": (
        [
            f"{PMD}; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits=11"
        ],
        DeflateParams(True, True, 10, 11),
    ),
    "empty-elements": (
        [" , ", f" ,{PMD} ;\tserver_max_window_bits = 9 ,", ""],
        DeflateParams(server_max_window_bits=9),
    ),
}


@pytest.mark.parametrize(("values", "params"), list(ACCEPTED.values()), ids=list(ACCEPTED))
def test_accepted_deflate_answers(values: list[str], params: DeflateParams) -> None:
    assert accept_response(values) == params
    result = handshake(permessage_deflate=True).receive(response(*(f"Sec-WebSocket-Extensions: {v}" for v in values)))
    assert result is not None
    assert result.deflate == params


REFUSED = {
    "unknown-param": ([f"{PMD}; x=1"], "unknown parameter 'x'"),
    "unknown-flag": ([f"{PMD}; client_max_window"], "unknown parameter"),
    "duplicate": ([f"{PMD}; server_no_context_takeover; server_no_context_takeover"], "repeated"),
    "duplicate-bits": ([f"{PMD}; server_max_window_bits=10; Server_Max_Window_Bits=11"], "repeated"),
    "bits-7": ([f"{PMD}; server_max_window_bits=7"], "server_max_window_bits must be an integer from 8 to 15, got '7'"),
    "bits-16": ([f"{PMD}; client_max_window_bits=16"], "client_max_window_bits must be an integer from 8 to 15"),
    "bits-leading-zero": ([f"{PMD}; server_max_window_bits=09"], "from 8 to 15, got '09'"),
    "bits-text": ([f"{PMD}; server_max_window_bits=ten"], "from 8 to 15"),
    "server-bits-no-value": ([f"{PMD}; server_max_window_bits"], "got None"),
    "client-bits-no-value": ([f"{PMD}; client_max_window_bits"], "got None"),
    "nct-with-value": ([f"{PMD}; client_no_context_takeover=1"], "client_no_context_takeover takes no value"),
    "other-extension": (["x-webkit-deflate-frame"], "extension 'x-webkit-deflate-frame', which was not offered"),
    "other-and-pmd": ([f"{PMD}, foo"], "extension 'foo'"),
    "twice": ([f"{PMD}, {PMD}; server_no_context_takeover"], f"chose {PMD} 2 times"),
    "twice-in-two-headers": ([PMD, PMD], "2 times"),
    "malformed": ([f"{PMD}; ="], "malformed"),
    "malformed-quote": ([f'{PMD}; server_max_window_bits="10'], "malformed"),
    "malformed-char": ([f"{PMD}; a@b"], "malformed"),
    "empty": ([""], "empty"),
}


@pytest.mark.parametrize(("values", "message"), list(REFUSED.values()), ids=list(REFUSED))
def test_refused_deflate_answers(values: list[str], message: str) -> None:
    with pytest.raises(DeflateNegotiationError, match=message) as info:
        accept_response(values)
    assert isinstance(info.value, ValueError)
    if not any(v.strip(" ,") for v in values):
        return  # an empty header is no answer at the HTTP level (next test)
    with pytest.raises(InvalidExtension, match=message):
        handshake(permessage_deflate=True).receive(response(*(f"Sec-WebSocket-Extensions: {v}" for v in values)))


def test_client_max_window_bits_only_if_offered() -> None:
    values = [f"{PMD}; client_max_window_bits=10"]
    with pytest.raises(DeflateNegotiationError, match="client_max_window_bits, which was not offered"):
        accept_response(values, client_max_window_bits=False)
    assert accept_response([f"{PMD}; server_max_window_bits=10"], client_max_window_bits=False) == DeflateParams(
        server_max_window_bits=10
    )


def test_extensions_not_offered_or_declined() -> None:
    data = response(f"Sec-WebSocket-Extensions: {PMD}")
    with pytest.raises(InvalidExtension, match=f"chose extensions '{PMD}', but none was offered"):
        handshake().receive(data)
    # Offered but declined (no header, or an empty one): no compression.
    for lines in [(), ("Sec-WebSocket-Extensions: ",), ("Sec-WebSocket-Extensions: , ",)]:
        result = handshake(permessage_deflate=True).receive(response(*lines))
        assert result is not None
        assert result.deflate is None


def test_client_session_follows_the_negotiated_window() -> None:
    """A client session's compressor is the one the server agreed to: a
    window of ``client_max_window_bits`` (9 when 8 was asked: zlib has no
    raw 256-byte window), context reset per message on request."""
    text = "wsnest " * 200
    for params in [DeflateParams(), DeflateParams(client_max_window_bits=8), DeflateParams(True, True, 9, 9)]:
        session = new_session(CLIENT, deflate=params, clock=time.monotonic)
        for _ in range(2):
            assert session.send(OP_TEXT, text) is None
        assert session.out[0] == 0xC1  # FIN, RSV1, text
        assert len(session.out) < len(text)


# -- against a real server -----------------------------------------------------------------


@contextlib.contextmanager
def websockets_server(**kw: Any) -> Iterator[int]:
    """A ``websockets`` echo server in a thread; yields its port."""

    def echo(ws: websockets.sync.server.ServerConnection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            for message in ws:
                ws.send(message)

    server = websockets.sync.server.serve(echo, "127.0.0.1", 0, **kw)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.socket.getsockname()[1]
    finally:
        server.shutdown()
        thread.join(TIMEOUT)


def connect(port: int, path: str = "/", **kw: Any) -> tuple[HandshakeResult, socket.socket]:
    """The handshake over a blocking socket: the result and the socket."""
    hs = ClientHandshake(parse_ws_url(f"ws://127.0.0.1:{port}{path}"), **kw)
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    try:
        sock.sendall(hs.request())
        while True:
            result = hs.receive(sock.recv(65536))
            if result is not None:
                return result, sock
    except BaseException:
        sock.close()
        raise


def test_websockets_server_with_deflate_and_subprotocol() -> None:
    with websockets_server(subprotocols=["chat"]) as port:
        result, sock = connect(port, "/x?y=1", subprotocols=["other", "chat"], permessage_deflate=True)
        with sock:
            assert (result.status, result.subprotocol) == (101, "chat")
            # websockets' default answer to client_max_window_bits.
            assert result.deflate == DeflateParams(server_max_window_bits=12, client_max_window_bits=12)
            assert result.headers["server"].startswith("Python/")

            # The agreed parameters work both ways: a compressed message in,
            # a compressed echo back.
            got: list[Any] = []
            session = new_session(
                CLIENT, deflate=result.deflate, clock=time.monotonic, deliver=lambda o, d: got.append(d)
            )
            text = "The quick brown fox jumps over the lazy dog. " * 200
            rest = session.send(OP_TEXT, text)
            sock.sendall(bytes(session.out) + (rest or b""))
            session.out.clear()
            received = bytearray(result.tail)
            session.receive(result.tail)
            while not got:
                data = sock.recv(65536)
                assert data
                received += data
                session.receive(data)
            assert got == [text]
            assert received[0] & 0x40  # the echo came compressed
            assert session.close(CLOSE_NORMAL, close_payload(CLOSE_NORMAL, ""))
            sock.sendall(bytes(session.out))
            while sock.recv(65536):  # the server answers the close, then closes
                pass


def test_websockets_server_without_deflate() -> None:
    with websockets_server() as port:
        result, sock = connect(port)
        with sock:
            assert (result.status, result.subprotocol, result.deflate) == (101, None, None)
        result, sock = connect(port, permessage_deflate=True, user_agent=None)
        with sock:
            assert result.deflate is not None


def test_websockets_server_refusals() -> None:
    def process_request(conn: Any, request: Any) -> Any:
        if request.path == "/moved":
            moved = conn.respond(HTTPStatus.FOUND, "see elsewhere\n")
            moved.headers["Location"] = "/elsewhere"
            return moved
        return conn.respond(HTTPStatus.FORBIDDEN, "go away\n")

    with websockets_server(process_request=process_request) as port:
        with pytest.raises(InvalidStatus) as info:
            connect(port, "/secret")
        assert (info.value.status, info.value.reason, info.value.body) == (403, "Forbidden", b"go away\n")
        with pytest.raises(InvalidStatus) as info:
            connect(port, "/moved")
        assert info.value.status == 302
        assert ("Location", "/elsewhere") in info.value.headers
