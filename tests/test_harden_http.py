"""Hardening of the HTTP layer (issue 11): a request that would freeze the
server, half-upgraded "zombie" WebSockets, open redirects, transfer-coding
framing, pipelined errors, response headers outside Latin-1, parse-ahead,
and the boundaries of the head limits. Raw sockets throughout."""

from __future__ import annotations

import gc
import socket
from typing import Any

import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Tracker, echo_ok, host_port, running_server
from wire import upgrade_request
from wsnest.http import Request

MiB = 1 << 20


def req(target: str = "/ok", method: str = "GET", extra: str = "", version: str = "1.1") -> bytes:
    host = "Host: test\r\n" if version == "1.1" else ""
    return f"{method} {target} HTTP/{version}\r\n{host}{extra}\r\n".encode("latin-1")


def chunked_post(target: str, chunks: int, extra: str = "", version: str = "1.1") -> bytes:
    """A POST whose body is ``chunks`` one-byte chunks."""
    head = f"POST {target} HTTP/{version}\r\n" + ("Host: test\r\n" if version == "1.1" else "")
    head += f"Transfer-Encoding: chunked\r\n{extra}\r\n"
    return head.encode("latin-1") + b"1\r\nx\r\n" * chunks + b"0\r\n\r\n"


def body_length(r: Request) -> dict[str, Any]:
    return {"body": str(len(r.body))}


async def send_and_read_all(url: str, data: bytes) -> tuple[list[Any], bytes]:
    """Send ``data`` on a fresh connection; every response until the server
    closes, then what followed the last whole response."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(data)
            responses = []
            while True:
                try:
                    responses.append(await client.read_head())
                except EOFError:
                    break
            return responses, bytes(client.buf)
        finally:
            await client.aclose()


def blocking_socket(url: str) -> socket.socket:
    """A connected stdlib socket with room for a large write: ``sendall``
    then never waits for the server, so a test can put bytes on the wire
    without letting trio run (the server sees them all at its next turn)."""
    sock = socket.create_connection(host_port(url))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MiB)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * MiB)
    sock.settimeout(TIMEOUT)  # a hang guard: trio cannot run while it blocks
    return sock


async def _other_client(url: str, sock: socket.socket) -> RawClient:
    """Connect ``sock`` (which a handler then writes to directly) and make
    one round trip, so that its server task is up and waiting to read."""
    sock.connect(host_port(url))
    sock.setblocking(False)
    client = RawClient(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
    await client.send(req("/warm"))
    assert (await client.read_head()).status == 200
    return client


# -- 1: a body of many tiny chunks neither freezes the server nor costs quadratic time ----


async def test_tiny_chunks_body_is_answered_and_other_connections_are_served_meanwhile() -> None:
    """60,000 one-byte chunks took ~30 s of one CPU with the body re-summed
    per chunk, all of it without letting any other connection run. Now the
    body is counted as it grows and a large read is parsed a slice at a
    time with yields between: a GET sent on another connection while the
    big request is being parsed is answered before it."""
    order: list[str] = []
    other = socket.socket()  # the unrelated client, written to from the handler below

    def trigger(r: Request) -> dict[str, Any]:
        order.append("trigger")
        # The big request follows this one in the same write: the GET on
        # the other connection arrives while it is being parsed.
        other.send(req("/other"))
        return {"body": "t"}

    def other_handler(r: Request) -> dict[str, Any]:
        order.append("other")
        return {"body": "o"}

    def big(r: Request) -> dict[str, Any]:
        order.append("big")
        return body_length(r)

    handlers = [
        wsnest.handler("/trigger", trigger),
        wsnest.handler("/other", other_handler),
        wsnest.handler("/big", big, method="POST"),
        wsnest.handler("/warm", lambda r: {}),
    ]
    async with running_server(handlers) as (_, url):
        with trio.fail_after(TIMEOUT):
            b = await _other_client(url, other)
            sock = blocking_socket(url)
            # All in the kernel before the server runs: it reads the lot
            # without ever waiting for more.
            sock.sendall(req("/trigger") + chunked_post("/big", 60_000))
            a = RawClient(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
            try:
                assert (await a.read_head()).body == b"t"
                assert (await b.read_head()).body == b"o"
                resp = await a.read_head()
                assert (resp.status, resp.body) == (200, b"60000"), resp
            finally:
                await a.aclose()
                await b.aclose()
    assert order == ["trigger", "other", "big"]


async def test_a_read_of_many_pipelined_requests_yields_to_other_connections() -> None:
    """The work done for one read is bounded: a few hundred small pipelined
    requests arriving in one read are answered in batches, and another
    connection gets its turn in between."""
    n = 600
    order: list[str] = []
    other = socket.socket()

    def pipelined(r: Request) -> dict[str, Any]:
        if not order:
            other.send(req("/other"))  # while this read is being worked through
        order.append("a")
        return {"body": "a"}

    def other_handler(r: Request) -> dict[str, Any]:
        order.append("other")
        return {"body": "o"}

    handlers = [
        wsnest.handler("/a", pipelined),
        wsnest.handler("/other", other_handler),
        wsnest.handler("/warm", lambda r: {}),
    ]
    async with running_server(handlers) as (_, url):
        with trio.fail_after(TIMEOUT):
            b = await _other_client(url, other)
            sock = blocking_socket(url)
            sock.sendall(req("/a") * n)  # all of it in the kernel before the server runs
            a = RawClient(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))
            try:
                assert (await b.read_head()).body == b"o"
                for _ in range(n):
                    assert (await a.read_head()).body == b"a"
            finally:
                await a.aclose()
                await b.aclose()
    assert order.count("a") == n
    assert order.index("other") < n, "the other connection waited for the whole read"


# -- 2 and 9: a WebSocket route is only ever reached by a real upgrade ------------------


def _ws_handlers(tracker: Tracker) -> list[Any]:
    return [
        wsnest.handler_ws("/ws", lambda ws, data: ws.send(data), on_open=tracker.on_open, on_close=tracker.on_close),
        wsnest.handler("/ok", lambda r: {"body": "ok"}),
    ]


async def _refused_and_closed(url: str, data: bytes) -> int:
    """Send ``data``; return the status, after checking that the server
    closed the connection behind its answer."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(data)
            resp = await client.read_head()
            assert await client.read_until_eof() == b"", "the server did not close the connection"
        finally:
            await client.aclose()
    assert resp.header("sec-websocket-accept") is None, resp
    return resp.status


HOSTILE_BYTES = ["\xa0", "\x85", "\x0b", "\x0c", "\x1c", "\x1f"]


@pytest.mark.parametrize("where", ["connection", "upgrade"])
@pytest.mark.parametrize("byte", HOSTILE_BYTES, ids=[f"{ord(c):#04x}" for c in HOSTILE_BYTES])
async def test_upgrade_token_with_a_non_http_space_is_refused(where: str, byte: str) -> None:
    """``str.strip()`` took these bytes for whitespace, llhttp does not: the
    handshake was accepted (on_open ran) on a request llhttp did not switch
    protocols for, so no 101 went out, the session never ran, on_close never
    ran and the socket leaked."""
    tracker = Tracker()
    async with running_server(_ws_handlers(tracker)) as (server, url):
        if where == "connection":
            data = upgrade_request(connection="Upgrade" + byte)
        else:
            data = upgrade_request(upgrade="websocket" + byte)
        status = await _refused_and_closed(url, data)
        assert status in (400, 426)
        assert tracker.opened == []
        assert not server._websockets
        await echo_ok(url)
    tracker.assert_balanced()


async def test_many_refused_look_alike_upgrades_hold_no_connection() -> None:
    tracker = Tracker()
    async with running_server(_ws_handlers(tracker)) as (_, url):
        for _ in range(50):
            assert await _refused_and_closed(url, upgrade_request(connection="Upgrade\xa0")) == 400
        assert tracker.opened == []


async def test_http10_upgrade_is_refused() -> None:
    tracker = Tracker()
    async with running_server(_ws_handlers(tracker)) as (_, url):
        data = upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0")
        assert await _refused_and_closed(url, data) == 400
    assert tracker.opened == []


@pytest.mark.parametrize("path", ["/ok", "/ws"])
async def test_duplicate_host_is_400(path: str) -> None:
    tracker = Tracker()
    async with running_server(_ws_handlers(tracker)) as (_, url):
        if path == "/ws":
            data = upgrade_request(extra=[("Host", "evil.example")])
        else:
            data = req("/ok", extra="Host: evil.example\r\n")
        assert await _refused_and_closed(url, data) == 400
    assert tracker.opened == []


# -- 3: a prefix redirect never points at another host ---------------------------------


@pytest.mark.parametrize(
    ("target", "location"),
    [
        ("/old//evil.example", "/evil.example"),
        ("/old///evil.example/x", "/evil.example/x"),
        ("/old/\\evil.example", "/%5Cevil.example"),
        ("/old\\evil.example", None),  # not under the route at all
        ("/old/\\\\evil.example", "/%5C%5Cevil.example"),
        ("/old//\\evil.example", "/%5Cevil.example"),
        ("/old/\\/evil.example", "/%5C/evil.example"),
        ("/old/%2F%2Fevil.example", "/%2F%2Fevil.example"),
        ("/old/%5Cevil.example", "/%5Cevil.example"),
        ("/old%2F%2Fevil.example", "/evil.example"),
        ("/old%2F%5Cevil.example", "/%5Cevil.example"),
        ("/ol%64//evil.example?q=1", "/evil.example?q=1"),
        ("/old/fine/path", "/fine/path"),
        ("/old", "/"),
    ],
)
async def test_prefix_redirect_cannot_become_a_scheme_relative_url(target: str, location: str | None) -> None:
    handlers = [wsnest.handler_redirect("/old", "/", prefix=True), wsnest.handler("/x", lambda r: {})]
    async with running_server(handlers) as (_, url):
        (resp,), _ = await send_and_read_all(url, req(target, extra="Connection: close\r\n"))
    if location is None:
        assert resp.status == 404, resp
        return
    assert resp.status == 302, resp
    got = resp.header("location")
    assert got == location
    assert got is not None and not got.startswith("//") and "\\" not in got


async def test_redirect_to_an_absolute_url_keeps_the_rest_on_its_host() -> None:
    handlers = [wsnest.handler_redirect("/old", "https://good.example", prefix=True)]
    async with running_server(handlers) as (_, url):
        (resp,), _ = await send_and_read_all(url, req("/old%2F@evil.example", extra="Connection: close\r\n"))
    assert resp.header("location") == "https://good.example/@evil.example"


# -- 5: transfer codings ---------------------------------------------------------------


async def test_http10_chunked_request_is_answered_then_the_connection_closes() -> None:
    """RFC 9112 6.1: HTTP/1.0 framing with Transfer-Encoding is not to be
    trusted; answer, then close, even with Connection: keep-alive."""
    handlers = [wsnest.handler("/len", body_length, method="POST"), wsnest.handler("/ok", lambda r: {"body": "ok"})]
    async with running_server(handlers) as (_, url):
        data = chunked_post("/len", 3, extra="Connection: keep-alive\r\n", version="1.0")
        responses, rest = await send_and_read_all(url, data + req("/ok", version="1.0"))
    assert [(r.status, r.body) for r in responses] == [(200, b"3")]
    assert responses[0].header("connection") == "close"
    assert rest == b""


@pytest.mark.parametrize(
    ("codings", "status"),
    [
        (["gzip, chunked"], 501),
        (["deflate,chunked"], 501),
        (["gzip", "chunked"], 501),
        (["chunked, chunked"], 400),
        (["gzip"], 400),
    ],
)
async def test_transfer_codings_other_than_chunked_are_refused(codings: list[str], status: int) -> None:
    called: list[bytes] = []
    handlers = [wsnest.handler("/len", lambda r: called.append(r.body) or {}, method="POST")]
    async with running_server(handlers) as (_, url):
        extra = "".join(f"Transfer-Encoding: {c}\r\n" for c in codings)
        data = b"POST /len HTTP/1.1\r\nHost: t\r\n" + extra.encode() + b"\r\n5\r\nhello\r\n0\r\n\r\n"
        responses, _ = await send_and_read_all(url, data)
    assert [r.status for r in responses] == [status]
    assert called == []


async def test_chunked_alone_in_any_case_is_accepted() -> None:
    handlers = [wsnest.handler("/len", body_length, method="POST")]
    async with running_server(handlers) as (_, url):
        data = b"POST /len HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: Chunked \r\nConnection: close\r\n\r\n"
        responses, _ = await send_and_read_all(url, data + b"2\r\nhi\r\n0\r\n\r\n")
    assert [(r.status, r.body) for r in responses] == [(200, b"2")]


# -- 6: the valid requests before a malformed one are answered first -------------------


@pytest.mark.parametrize(
    ("bad", "status"),
    [
        (b"\x00\x01garbage\r\n\r\n", 400),
        (b"GET /ok HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n", 400),
        (b"GET /ok HTTP/1.1\r\nHost: t\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n", 431),
        (b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431),
        (b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n", 413),
        (b"GET /ok HTTP/2.0\r\nHost: t\r\n\r\n", 505),
    ],
    ids=["garbage", "bad-header", "too-many-headers", "huge-header", "too-large", "version"],
)
async def test_pipelined_valid_requests_are_answered_before_the_error(bad: bytes, status: int) -> None:
    handlers = [wsnest.handler("/p", lambda r: {"body": r.path}, prefix=True), wsnest.handler("/ok", lambda r: {})]
    async with running_server(handlers) as (_, url):
        responses, rest = await send_and_read_all(url, req("/p/1") + req("/p/2") + bad)
    assert [(r.status, r.body) for r in responses[:2]] == [(200, b"/p/1"), (200, b"/p/2")]
    assert [r.status for r in responses[2:]] == [status]
    assert responses[2].header("connection") == "close"
    assert rest == b""


# -- 7: a response header outside Latin-1 is a logged 500, not a dropped connection ---


@pytest.mark.parametrize(
    "headers",
    [{"X-Price": "5 €"}, [("X-Emoji", "\U0001f600")], {"X-Ünïcode-Name": "v"}],
    ids=["euro-value", "emoji-value", "non-ascii-name"],
)
async def test_header_outside_latin1_is_a_500(headers: Any, caplog: pytest.LogCaptureFixture) -> None:
    handlers = [
        wsnest.handler("/bad", lambda r: {"headers": headers, "body": "x"}),
        wsnest.handler("/ok", lambda r: {"body": "ok", "headers": {"X-Latin": "café"}}),
    ]
    async with running_server(handlers) as (_, url):
        responses, _ = await send_and_read_all(url, req("/bad") + req("/ok", extra="Connection: close\r\n"))
    assert [r.status for r in responses] == [500, 200]
    assert responses[1].header("x-latin") == "café"
    assert "handler callback for GET /bad failed" in caplog.text


# -- 8: pipelined requests are not parsed far ahead of the answers ---------------------


def _live_requests() -> int:
    gc.collect()  # only the Request objects something still holds
    return sum(1 for o in gc.get_objects() if type(o) is Request)


async def test_pipelined_requests_are_not_all_parsed_at_once() -> None:
    """Thousands of pipelined requests in one read used to be parsed into
    as many Request objects at once (~1.6 MiB per connection that never
    reads). Parsing now stops once a request is queued, and the rest waits
    as the bytes it came in."""
    n = 2000
    entered = trio.Event()
    release = trio.Event()
    live: list[int] = []
    handled = 0
    all_handled = trio.Event()

    async def block(r: Request) -> dict[str, Any]:
        entered.set()
        await release.wait()
        return {}

    def count(r: Request) -> dict[str, Any]:
        nonlocal handled
        handled += 1
        if handled == n:
            all_handled.set()
        return {}

    one = req("/c")
    handlers = [wsnest.handler("/block", block), wsnest.handler("/c", count)]
    async with running_server(handlers) as (_, url):
        sock = blocking_socket(url)
        try:
            # All in the server's buffer before it runs: one read takes it all.
            sock.sendall(req("/block") + one * n)
            with trio.fail_after(TIMEOUT):
                await entered.wait()
            live.append(_live_requests())
            release.set()
            # The client never reads: the server stops when its buffers are
            # full, but every request is still parsed only as it is answered.
            with trio.fail_after(TIMEOUT):
                await all_handled.wait()
        finally:
            sock.close()
    # At most what one 4 KiB slice holds is parsed ahead (plus the one held).
    assert live[0] <= 4096 // len(one) + 2, live


# -- the limits at their exact boundaries ----------------------------------------------


@pytest.mark.parametrize("max_headers", [5, 100])
async def test_max_headers_boundary(max_headers: int) -> None:
    def head(count: int) -> bytes:  # Host plus count - 1 others
        extra = "".join(f"X-{i}: v\r\n" for i in range(count - 2)) + "Connection: close\r\n"
        return req("/ok", extra=extra)

    async with running_server([wsnest.handler("/ok", lambda r: {"body": "ok"})], max_headers=max_headers) as (_, url):
        (exact,), _ = await send_and_read_all(url, head(max_headers))
        (over,), _ = await send_and_read_all(url, head(max_headers + 1))
    assert exact.status == 200, exact
    assert over.status == 431, over


async def test_a_header_line_streamed_past_the_head_limit_is_refused_promptly() -> None:
    """A head that keeps growing (one header line of up to 32 MiB) is
    refused with 431 once it passes the limit, while the client is still
    sending: the server neither buffers it all nor waits for its end."""
    total = 32 * MiB
    piece = b"a" * (64 * 1024)
    sent = 0
    async with running_server([wsnest.handler("/ok", lambda r: {})], handshake_timeout=60) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:

                async def stream() -> None:
                    nonlocal sent
                    try:
                        await client.send(b"GET /ok HTTP/1.1\r\nHost: t\r\nX-Big: ")
                        while sent < total:
                            await client.send(piece)
                            sent += len(piece)
                    except trio.BrokenResourceError:
                        pass  # the server closed on us: expected

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(stream)
                    resp = await client.read_head()
                    nursery.cancel_scope.cancel()
            finally:
                await client.aclose()
    assert resp.status == 431, resp
    assert sent < total
