"""HTTP/1.x connection handling (decisions 10 and 16): keep-alive,
pipelining, ``Connection: close``, HTTP/1.0, chunked request bodies,
``Expect: 100-continue``, size limits (431/413), bad requests, and the
timeouts that drop slowloris and idle clients. Raw sockets throughout, so
that nothing normalises the bytes on the wire."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Response, running_server

MiB = 1 << 20


def echo(req: wsnest.Request) -> dict[str, Any]:
    return {"body": req.body, "headers": {"X-Path": req.path, "X-Length": str(len(req.body))}}


HANDLERS = [
    wsnest.handler("/ok", lambda req: {"body": "ok"}),
    wsnest.handler("/echo", echo, method="*"),
    wsnest.handler("/p", lambda req: {"body": req.path}, prefix=True),
]


def req(target: str = "/ok", method: str = "GET", extra: str = "", body: bytes = b"", version: str = "1.1") -> bytes:
    host = "Host: test\r\n" if version == "1.1" else ""
    length = f"Content-Length: {len(body)}\r\n" if body else ""
    return f"{method} {target} HTTP/{version}\r\n{host}{extra}{length}\r\n".encode("latin-1") + body


async def connect(url: str) -> RawClient:
    with trio.fail_after(TIMEOUT):
        return await RawClient.connect(url)


async def assert_serving(url: str) -> None:
    """A fresh connection still gets a normal answer."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(req("/ok"))
            resp = await client.read_head()
        finally:
            await client.aclose()
    assert (resp.status, resp.body) == (200, b"ok"), resp


async def send_and_read(url: str, data: bytes) -> tuple[Response, bytes]:
    """Send ``data`` on a fresh connection; the response and everything
    after it until the server closes."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(data)
            resp = await client.read_head()
            rest = await client.read_until_eof()
        finally:
            await client.aclose()
    return resp, rest


async def expect_closed(client: RawClient) -> None:
    with trio.fail_after(TIMEOUT):
        assert await client.read_until_eof() == b""


# -- persistent connections ------------------------------------------------------------


async def test_keep_alive_two_requests_one_connection() -> None:
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                for target in ("/p/one", "/p/two", "/ok"):
                    await client.send(req(target))
                    resp = await client.read_head()
                    assert resp.status == 200
                    assert resp.header("connection") is None
                    assert resp.body == (b"ok" if target == "/ok" else target.encode())
        finally:
            await client.aclose()


async def test_pipelined_requests_answered_in_order() -> None:
    async def slow_first(req: wsnest.Request) -> dict[str, Any]:
        for _ in range(20):
            await trio.lowlevel.checkpoint()
        return {"body": "first" * 1000}

    handlers = [*HANDLERS, wsnest.handler("/slow", slow_first)]
    async with running_server(handlers) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(req("/slow") + req("/echo", "POST", body=b"second") + req("/p/third"))
                first = await client.read_head()
                second = await client.read_head()
                third = await client.read_head()
                assert first.body == b"first" * 1000
                assert (second.header("x-path"), second.body) == ("/echo", b"second")
                assert third.body == b"/p/third"
                # Still open afterwards.
                await client.send(req("/ok"))
                assert (await client.read_head()).body == b"ok"
        finally:
            await client.aclose()


async def test_connection_close_is_honoured() -> None:
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(req("/ok", extra="Connection: close\r\n"))
                resp = await client.read_head()
                assert (resp.status, resp.body) == (200, b"ok")
                assert resp.header("connection") == "close"
            await expect_closed(client)
        finally:
            await client.aclose()


@pytest.mark.parametrize(
    "data",
    [
        req("/p/a", extra="Connection: close\r\n") + req("/p/b"),
        req("/p/a", version="1.0") + req("/p/b", version="1.0"),
    ],
    ids=["http11-close", "http10"],
)
async def test_request_pipelined_after_a_closing_one(data: bytes) -> None:
    """The first request is answered normally; what follows it is ignored
    (RFC 9112 section 9.6), not turned into a 400 for both."""
    async with running_server(HANDLERS) as (_, url):
        resp, rest = await send_and_read(url, data)
    assert (resp.status, resp.body) == (200, b"/p/a"), resp
    assert rest == b""


async def test_http10_closes_by_default() -> None:
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(req("/ok", version="1.0"))
                resp = await client.read_head()
                assert (resp.status, resp.body) == (200, b"ok")
            await expect_closed(client)
        finally:
            await client.aclose()


async def test_http10_keep_alive_stays_open() -> None:
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                for target in ("/p/x", "/p/y"):
                    await client.send(req(target, version="1.0", extra="Connection: keep-alive\r\n"))
                    resp = await client.read_head()
                    assert resp.body == target.encode()
                    assert (resp.header("connection") or "").lower() == "keep-alive"
                    assert resp.header("content-length") == str(len(target))
                # A plain HTTP/1.0 request then ends it.
                await client.send(req("/ok", version="1.0"))
                assert (await client.read_head()).body == b"ok"
            await expect_closed(client)
        finally:
            await client.aclose()


# -- request bodies --------------------------------------------------------------------------


async def test_chunked_request_body() -> None:
    body = (
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n"
        b"1;ext=1\r\n \r\n"
        b"A\r\n0123456789\r\n"
        b"0\r\nX-Trailer: t\r\n\r\n"
    )
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(body)
                resp = await client.read_head()
                assert resp.body == b"hello 0123456789"
                # The connection is still in sync afterwards.
                await client.send(req("/ok"))
                assert (await client.read_head()).body == b"ok"
                # A chunked body sent in pieces.
                await client.send(b"PUT /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab")
                await client.send(b"c\r\n")
                await client.send(b"0\r\n\r\n")
                resp = await client.read_head()
                assert resp.body == b"abc"
        finally:
            await client.aclose()


async def test_expect_100_continue() -> None:
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(
                    b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n"
                )
                interim = await client.read_head(body=False)
                assert interim.status == 100
                assert not client.buf  # nothing else before the body is sent
                await client.send(b"hello world")
                final = await client.read_head()
                assert (final.status, final.body) == (200, b"hello world")
                # Chunked with 100-continue too.
                await client.send(
                    b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-Continue\r\nTransfer-Encoding: chunked\r\n\r\n"
                )
                assert (await client.read_head(body=False)).status == 100
                await client.send(b"2\r\nhi\r\n0\r\n\r\n")
                assert (await client.read_head()).body == b"hi"
        finally:
            await client.aclose()


async def test_100_continue_never_overtakes_an_earlier_pipelined_response() -> None:
    """Responses go out in request order: the interim 100 for a second
    request must come after the final response to the first one, or the
    client reads it as the interim response of the first."""
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(
                    req("/p/first")
                    + b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
                )
                first = await client.read_head(body=False)
                assert first.status == 200, first
                assert await client._exactly(len(b"/p/first")) == b"/p/first"
                assert (await client.read_head(body=False)).status == 100
                await client.send(b"later")
                assert (await client.read_head()).body == b"later"
        finally:
            await client.aclose()


async def test_unknown_expectation_is_417() -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, _ = await send_and_read(url, req("/echo", "POST", extra="Expect: teapot\r\n", body=b"x"))
        assert resp.status == 417
        await assert_serving(url)


async def test_expect_100_continue_refused_when_too_large() -> None:
    async with running_server(HANDLERS, max_body_size=100) as (_, url):
        resp, rest = await send_and_read(
            url, b"POST /echo HTTP/1.1\r\nHost: test\r\nExpect: 100-continue\r\nContent-Length: 101\r\n\r\n"
        )
        assert resp.status == 413  # and no 100 Continue first
        assert rest == b""
        await assert_serving(url)


# -- limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra",
    [
        "X-Big: " + "a" * 9000 + "\r\n",
        "".join(f"X-H{i}: {'b' * 90}\r\n" for i in range(95)),
    ],
    ids=["one-big-header", "many-medium-headers"],
)
async def test_head_over_8k_is_431(extra: str) -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, _ = await send_and_read(url, req("/ok", extra=extra))
        assert resp.status == 431
        await assert_serving(url)


async def test_long_request_line_is_refused() -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, _ = await send_and_read(url, req("/p/" + "x" * 9000))
        assert resp.status in (414, 431)
        await assert_serving(url)


async def test_head_just_under_8k_is_fine() -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, _ = await send_and_read(url, req("/ok", extra="X-Big: " + "a" * 7000 + "\r\nConnection: close\r\n"))
        assert resp.status == 200


async def test_more_than_100_headers_is_431() -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, _ = await send_and_read(url, req("/ok", extra="".join(f"X-{i}: v\r\n" for i in range(101))))
        assert resp.status == 431
        await assert_serving(url)


async def test_100_headers_exactly_is_fine() -> None:
    async with running_server(HANDLERS) as (_, url):
        extra = "".join(f"X-{i}: v\r\n" for i in range(98)) + "Connection: close\r\n"  # + Host = 100
        resp, _ = await send_and_read(url, req("/ok", extra=extra))
        assert resp.status == 200


async def test_content_length_over_1mib_is_413() -> None:
    async with running_server(HANDLERS) as (_, url):
        # The head alone is enough: refused before any body is read.
        resp, _ = await send_and_read(
            url, f"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {MiB + 1}\r\n\r\n".encode()
        )
        assert resp.status == 413
        await assert_serving(url)
        # Exactly 1 MiB is accepted.
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(req("/echo", "POST", body=b"z" * MiB))
                resp = await client.read_head()
                assert resp.status == 200
                assert resp.header("x-length") == str(MiB)
        finally:
            await client.aclose()


async def test_chunked_body_growing_past_1mib_is_413() -> None:
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
                piece = b"y" * (256 * 1024)
                for _ in range(4):  # exactly 1 MiB so far: still fine
                    await client.send(b"40000\r\n" + piece + b"\r\n")
                # One more byte goes over; nothing after it is sent, so the
                # server has read everything when it answers.
                await client.send(b"1\r\nY")
                resp = await client.read_head()
                assert resp.status == 413
            await expect_closed(client)
        finally:
            await client.aclose()
        await assert_serving(url)


async def test_max_body_size_is_settable() -> None:
    async with running_server(HANDLERS, max_body_size=10) as (_, url):
        resp, _ = await send_and_read(url, req("/echo", "POST", body=b"0123456789", extra="Connection: close\r\n"))
        assert (resp.status, resp.body) == (200, b"0123456789")
        resp, _ = await send_and_read(url, req("/echo", "POST", body=b"0123456789A"))
        assert resp.status == 413
        chunked = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\nghijk"
        resp, _ = await send_and_read(url, chunked)
        assert resp.status == 413
        await assert_serving(url)
    with pytest.raises((TypeError, ValueError), match="max_body_size"):
        wsnest.http_server("http://127.0.0.1:0", HANDLERS, max_body_size=-1)


# -- malformed requests ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"GET /ok HTTP/1.1\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nX-A: b\r\n\r\n",
    ],
    ids=["no-headers", "other-headers"],
)
async def test_missing_host_on_http11_is_400(data: bytes) -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, _ = await send_and_read(url, data)
        assert resp.status == 400
        await assert_serving(url)


async def test_missing_host_on_http10_is_fine() -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, _ = await send_and_read(url, b"GET /ok HTTP/1.0\r\n\r\n")
        assert (resp.status, resp.body) == (200, b"ok")


@pytest.mark.parametrize(
    "data",
    [
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
        b"hello there\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET /ok HTTP/1.1 extra\r\nHost: t\r\n\r\n",
        b"GET /ok HTTX/1.1\r\nHost: t\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nHost: t\r\nNo colon here\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nHost: t\r\nBad Name: v\r\n\r\n",
        b"GET /ok HTTP/1.1\r\nHost: t\r\nX: a\x00b\r\n\r\n",
        b"GET /o\x7fk HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: abc\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        b" GET /ok HTTP/1.1\r\nHost: t\r\n\r\n",
    ],
    ids=[
        "tls-hello",
        "words",
        "method-only",
        "extra-in-request-line",
        "bad-protocol",
        "header-without-colon",
        "space-in-header-name",
        "nul-in-header-value",
        "ctl-in-target",
        "content-length-text",
        "content-length-negative",
        "content-length-conflict",
        "content-length-and-chunked",
        "bad-chunk-size",
        "unknown-transfer-coding",
        "leading-space",
    ],
)
async def test_garbage_is_400(data: bytes) -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, rest = await send_and_read(url, data)
        assert resp.status == 400, resp
        assert resp.header("connection") == "close"
        assert rest == b""
        await assert_serving(url)


@pytest.mark.parametrize("version", [b"HTTP/2.0", b"HTTP/3.0", b"HTTP/0.9"])
async def test_unsupported_http_version(version: bytes) -> None:
    async with running_server(HANDLERS) as (_, url):
        resp, _ = await send_and_read(url, b"GET /ok " + version + b"\r\nHost: t\r\n\r\n")
        assert resp.status in (400, 505), resp
        await assert_serving(url)


async def test_bad_request_after_a_good_one_on_the_same_connection() -> None:
    async with running_server(HANDLERS) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(req("/ok"))
                assert (await client.read_head()).body == b"ok"
                await client.send(b"BLAH\r\n\r\n")
                assert (await client.read_head()).status == 400
            await expect_closed(client)
        finally:
            await client.aclose()
        await assert_serving(url)


# -- timeouts ------------------------------------------------------------------------------------------


async def test_slowloris_is_dropped_while_others_are_served() -> None:
    async with running_server(HANDLERS, handshake_timeout=1.0) as (_, url):
        slow = await connect(url)
        dropped = trio.Event()
        sent_bytes = 0

        async def dribble() -> None:
            nonlocal sent_bytes
            try:
                await slow.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n")
                while not dropped.is_set():
                    await slow.send(b"X")  # one byte of a header line, forever
                    sent_bytes += 1
                    await trio.sleep(0.05)  # the slowloris pace, not synchronisation
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

        async def watch() -> None:
            await slow.read_until_eof()
            dropped.set()

        start = trio.current_time()
        try:
            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(dribble)
                    nursery.start_soon(watch)
                    # Meanwhile other clients are answered at once: while
                    # the slowloris is still connected, not after it is gone
                    # (a server that waited on its head would fail here).
                    for n in range(3):
                        await assert_serving(url)
                        assert not dropped.is_set(), f"request {n + 1} was answered only after the slowloris left"
                    await dropped.wait()
        finally:
            await slow.aclose()
        elapsed = trio.current_time() - start
        assert 0.9 <= elapsed < 5, elapsed
        assert sent_bytes >= 2  # it really was dribbling when dropped
        await assert_serving(url)


async def test_slowloris_on_a_keep_alive_connection_is_dropped() -> None:
    """After a first request, the next head gets handshake_timeout from its
    first byte (not the longer keepalive_timeout)."""
    async with running_server(HANDLERS, handshake_timeout=0.4, keepalive_timeout=30) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(req("/ok"))
                assert (await client.read_head()).body == b"ok"
                start = trio.current_time()
                await client.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n")

                async def dribble() -> None:
                    try:
                        while True:
                            await client.send(b"X")
                            await trio.sleep(0.05)  # the slowloris pace
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        pass

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(dribble)
                    assert await client.read_until_eof() == b""
                    nursery.cancel_scope.cancel()
            assert 0.3 <= trio.current_time() - start < 5
        finally:
            await client.aclose()


async def test_a_body_that_keeps_arriving_is_not_cut_by_the_head_timeout() -> None:
    """``handshake_timeout`` bounds the request *head*; a legitimate body
    that keeps arriving (a slow upload) must not be dropped mid-way with no
    response because the head deadline also ran over the body."""
    async with running_server(HANDLERS, handshake_timeout=0.5) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n")
                try:
                    for i in range(10):
                        await trio.sleep(0.1)  # upload pace: 10 bytes over 1 s
                        await client.send(str(i).encode())
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                resp = await client.read_head()
                assert (resp.status, resp.body) == (200, b"0123456789")
        except EOFError:
            pytest.fail("the connection was dropped while the body was still arriving")
        finally:
            await client.aclose()


async def test_first_request_must_arrive_within_handshake_timeout() -> None:
    async with running_server(HANDLERS, handshake_timeout=0.3) as (_, url):
        client = await connect(url)
        start = trio.current_time()
        try:
            await expect_closed(client)  # never sent anything
        finally:
            await client.aclose()
        assert trio.current_time() - start >= 0.25


async def test_idle_keep_alive_connection_is_closed() -> None:
    async with running_server(HANDLERS, keepalive_timeout=0.3) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                await client.send(req("/ok"))
                assert (await client.read_head()).body == b"ok"
                idle_from = trio.current_time()
                assert await client.read_until_eof() == b""
            assert trio.current_time() - idle_from >= 0.25
        finally:
            await client.aclose()
        await assert_serving(url)


async def test_active_keep_alive_connection_survives_past_the_idle_timeout() -> None:
    """The idle timer restarts with each request (it is not a lifetime)."""
    async with running_server(HANDLERS, keepalive_timeout=0.3) as (_, url):
        client = await connect(url)
        try:
            with trio.fail_after(TIMEOUT):
                start = trio.current_time()
                n = 0
                while trio.current_time() - start < 0.8:
                    await client.send(req(f"/p/{n}"))
                    assert (await client.read_head()).body == f"/p/{n}".encode()
                    n += 1
                    await trio.sleep(0.1)  # idle well under the timeout
        finally:
            await client.aclose()
