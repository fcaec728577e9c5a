"""Hostile and malformed input, sent over raw sockets.

Every case checks the exact HTTP status or close code the server answers
with, then that a normal client still gets an echo from the same server.
"""

from __future__ import annotations

import logging
import struct

import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, echo_handler, echo_ok, raw_ws, running_server
from wire import OP_BINARY, OP_CONT, OP_PING, OP_TEXT, client_frame, close_frame, new_key, upgrade_request


def _on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> object:
    action = req.query
    if action == "raise401":
        raise wsnest.Reject(401, "who are you")
    if action == "return403":
        return wsnest.Reject(403, "go away")
    if action == "boom":
        raise ValueError("secret detail 42")
    return None


def _handlers() -> list[wsnest.WebSocketHandler]:
    return [
        echo_handler("/ws"),
        wsnest.handler_ws("/gate", lambda ws, data: ws.send(data), on_open=_on_open),
        wsnest.handler_ws("/origin", lambda ws, data: ws.send(data), origins=["https://good"]),
        wsnest.handler_ws("/small", lambda ws, data: ws.send(data), max_message_size=1000),
    ]


async def _request(url: str, data: bytes) -> tuple[RawClient, object]:
    client = await RawClient.connect(url)
    await client.send(data)
    return client, await client.read_head(body=not data.startswith(b"HEAD "))


# -- opening handshake -----------------------------------------------------------

HANDSHAKE_CASES = {
    "post": (upgrade_request(method="POST"), 405),
    "put": (upgrade_request(method="PUT"), 405),
    "head": (upgrade_request(method="HEAD"), 405),
    "missing-upgrade": (upgrade_request(upgrade=None), 400),
    "wrong-upgrade": (upgrade_request(upgrade="h2c"), 400),
    "missing-connection": (upgrade_request(connection=None), 400),
    "connection-keep-alive-only": (upgrade_request(connection="keep-alive"), 400),
    "missing-key": (upgrade_request().replace(b"Sec-WebSocket-Key", b"X-Not-The-Key"), 400),
    "key-not-base64": (upgrade_request(key="!!!!not base64 at all!!!"), 400),
    "key-wrong-length": (upgrade_request(key="c2hvcnQ="), 400),
    "two-keys": (upgrade_request(extra=[("Sec-WebSocket-Key", new_key())]), 400),
    "missing-version": (upgrade_request(version=None), 400),
    "version-12": (upgrade_request(version="12"), 426),
    "origin-evil": (upgrade_request("/origin", extra=[("Origin", "https://evil")]), 403),
    "origin-missing": (upgrade_request("/origin"), 403),
    "reject-raised-401": (upgrade_request("/gate?raise401"), 401),
    "reject-returned-403": (upgrade_request("/gate?return403"), 403),
    "on-open-raises": (upgrade_request("/gate?boom"), 500),
    "unknown-path": (upgrade_request("/nowhere"), 404),
    "garbage": (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n", 400),
    "garbage-text": (b"HELLO THERE\r\n\r\n", 400),
    "http-0.9-ish": (b"GET\r\n\r\n", 400),
    "missing-host": (upgrade_request().replace(b"Host: 127.0.0.1\r\n", b""), 400),
    # A body would otherwise be taken for the first WebSocket frames.
    "body-content-length": (upgrade_request(extra=[("Content-Length", "5")]) + b"HELLO", 400),
    "body-chunked": (upgrade_request(extra=[("Transfer-Encoding", "chunked")]) + b"5\r\nHELLO\r\n0\r\n\r\n", 400),
}


@pytest.mark.parametrize("case", list(HANDSHAKE_CASES))
async def test_bad_handshake_status(case: str) -> None:
    data, status = HANDSHAKE_CASES[case]
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            client, resp = await _request(url, data)
            try:
                assert resp.status == status, resp
                assert b"101" not in resp.body
                assert resp.header("sec-websocket-accept") is None
            finally:
                await client.aclose()
        await echo_ok(url)
        await echo_ok(url, "/gate")


async def test_upgrade_with_content_length_zero_is_accepted() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            client, resp = await _request(url, upgrade_request(extra=[("Content-Length", "0")]))
            try:
                assert resp.status == 101, resp
            finally:
                await client.aclose()


async def test_405_for_post_allows_only_get() -> None:
    # A WebSocket route supports GET only; HEAD on it is itself a 405, so the
    # Allow header of a 405 must not advertise HEAD (RFC 9110 section 10.2.1).
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            head_client, head_resp = await _request(url, upgrade_request(method="HEAD"))
            await head_client.aclose()
            assert head_resp.status == 405
            post_client, post_resp = await _request(url, upgrade_request(method="POST"))
            await post_client.aclose()
            assert post_resp.status == 405
            allow = {m.strip() for m in (post_resp.header("allow") or "").split(",")}
            assert allow == {"GET"}, post_resp


async def test_upgrade_after_a_keep_alive_request_and_browser_style_headers() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            try:
                # A plain request first, then (pipelined) an upgrade spelt as
                # Firefox does it, on the same connection.
                browser = upgrade_request(connection="keep-alive, Upgrade", upgrade="WebSocket")
                await c.send(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" + browser)
                assert (await c.read_head()).status == 404
                assert (await c.read_head()).status == 101
                await c.send(client_frame(OP_TEXT, "same connection"))
                assert await c.read_message() == (OP_TEXT, b"same connection")
            finally:
                await c.aclose()


async def test_426_names_version_13() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            client, resp = await _request(url, upgrade_request(version="12"))
            await client.aclose()
            assert resp.status == 426
            assert resp.header("sec-websocket-version") == "13"


async def test_good_origin_is_accepted() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url, "/origin", extra=[("Origin", "https://good")]) as c:
                await c.send(client_frame(OP_TEXT, "hi"))
                assert await c.read_message() == (OP_BINARY, b"hi")


async def test_reject_reason_is_the_body_and_on_open_error_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            client, resp = await _request(url, upgrade_request("/gate?raise401"))
            await client.aclose()
            assert resp.status == 401
            assert b"who are you" in resp.body
            with caplog.at_level(logging.ERROR, logger="wsnest"):
                client, resp = await _request(url, upgrade_request("/gate?boom"))
                await client.aclose()
            assert resp.status == 500
            assert b"secret detail" not in resp.body
            errors = [r for r in caplog.records if r.name == "wsnest" and r.exc_info]
            assert errors and "secret detail 42" in str(errors[0].exc_info[1])


async def test_request_head_over_8k_gets_431() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            big = upgrade_request(extra=[("X-Filler", "a" * 9000)])
            client, resp = await _request(url, big)
            await client.aclose()
            assert resp.status == 431, resp
        await echo_ok(url)


async def test_request_head_just_under_8k_is_accepted() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url, extra=[("X-Filler", "a" * 7000)]) as c:
                await c.send(client_frame(OP_TEXT, "ok"))
                assert await c.read_message() == (OP_TEXT, b"ok")


async def test_more_than_100_headers_gets_431() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            many = upgrade_request(extra=[(f"X-H{i}", "v") for i in range(101)])
            client, resp = await _request(url, many)
            await client.aclose()
            assert resp.status == 431, resp
        await echo_ok(url)


async def test_slowloris_head_is_dropped_after_handshake_timeout() -> None:
    async with running_server(_handlers(), handshake_timeout=0.5) as (_, url):
        with trio.fail_after(TIMEOUT):
            slow = await RawClient.connect(url)
            start = trio.current_time()
            await slow.send(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websock")
            # Meanwhile a normal client is served.
            await echo_ok(url)
            rest = await slow.read_until_eof()
            elapsed = trio.current_time() - start
            await slow.aclose()
            assert not rest.startswith(b"HTTP/1.1 101")
            assert elapsed >= 0.45, elapsed
            assert elapsed < 5, elapsed
        await echo_ok(url)


async def test_trickling_head_is_dropped_at_the_deadline() -> None:
    # One byte every 50 ms: each byte arrives long before the timeout, but the
    # whole head must arrive within handshake_timeout.
    head = upgrade_request(extra=[("X-Filler", "b" * 300)])
    async with running_server(_handlers(), handshake_timeout=0.5) as (_, url):
        with trio.fail_after(TIMEOUT):
            slow = await RawClient.connect(url)
            sent = 0
            start = trio.current_time()
            async with trio.open_nursery() as nursery:

                async def trickle() -> None:
                    nonlocal sent
                    for i in range(len(head)):
                        try:
                            await slow.send(head[i : i + 1])
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            return
                        sent += 1
                        await trio.sleep(0.05)  # pacing, not synchronisation

                nursery.start_soon(trickle)
                rest = await slow.read_until_eof()
                nursery.cancel_scope.cancel()
            elapsed = trio.current_time() - start
            await slow.aclose()
            assert not rest.startswith(b"HTTP/1.1 101")
            assert sent < len(head)
            assert elapsed < 3, elapsed
        await echo_ok(url)


# -- after the upgrade -----------------------------------------------------------

MESSAGE_CASES = {
    "unmasked": ([client_frame(OP_TEXT, "hi", mask=None)], 1002),
    "bad-utf8-text": ([client_frame(OP_TEXT, b"\xff\xfe")], 1007),
    "surrogate-utf8-text": ([client_frame(OP_TEXT, b"\xed\xa0\x80")], 1007),
    "truncated-utf8-at-end": ([client_frame(OP_TEXT, b"ok\xe2\x82")], 1007),
    "huge-declared-length": ([client_frame(OP_BINARY, b"", length=2**40)], 1009),
    "over-limit-in-fragments": (
        [client_frame(OP_BINARY, b"a" * 600, fin=False), client_frame(OP_CONT, b"b" * 600)],
        1009,
    ),
    "length-msb-set": ([client_frame(OP_BINARY, b"", length=2**63)], 1002),
    "non-minimal-length": ([bytes((0x82, 0x80 | 126)) + struct.pack("!H", 5) + b"\0\0\0\0" + b"hello"], 1002),
    "ping-126-bytes": ([client_frame(OP_PING, b"p" * 126)], 1002),
    "fragmented-ping": ([client_frame(OP_PING, b"p", fin=False)], 1002),
    "rsv1": ([client_frame(OP_TEXT, "x", rsv=4)], 1002),
    "rsv2": ([client_frame(OP_TEXT, "x", rsv=2)], 1002),
    "rsv3": ([client_frame(OP_TEXT, "x", rsv=1)], 1002),
    "opcode-3": ([client_frame(3, b"x")], 1002),
    "opcode-0xB": ([client_frame(0xB, b"x")], 1002),
    "continuation-first": ([client_frame(OP_CONT, b"x")], 1002),
    "text-inside-fragmented": (
        [client_frame(OP_TEXT, "a", fin=False), client_frame(OP_TEXT, "b")],
        1002,
    ),
    "close-1-byte": ([client_frame(0x8, b"\x03")], 1002),
    "close-1005": ([close_frame(1005)], 1002),
    "close-1006": ([close_frame(1006)], 1002),
    "close-999": ([close_frame(999)], 1002),
    "close-5000": ([close_frame(5000)], 1002),
    "close-bad-utf8-reason": ([close_frame(1000, b"\xc3\x28")], 1007),
}


@pytest.mark.parametrize("case", list(MESSAGE_CASES))
async def test_protocol_violation_close_code(case: str) -> None:
    frames, code = MESSAGE_CASES[case]
    async with running_server(_handlers(), close_timeout=30) as (_, url):
        with trio.fail_after(TIMEOUT):
            path = "/small" if case == "over-limit-in-fragments" else "/ws"
            async with raw_ws(url, path) as c:
                await c.send(b"".join(frames))
                got, _ = await c.read_close()
                assert got == code
                # The server hangs up after failing (it sends FIN at once
                # instead of waiting close_timeout for a reply it won't parse).
                await c.read_until_eof()
        await echo_ok(url)


async def test_bad_utf8_in_first_fragment_fails_before_the_last_fragment() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_TEXT, b"ok \xc3\x28 then", fin=False))
                # Nothing more is sent: the close must come from the first fragment.
                assert (await c.read_close())[0] == 1007
        await echo_ok(url)


async def test_bad_utf8_split_across_fragments_fails_at_the_bad_byte() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                # E2 82 is a valid prefix; 28 cannot continue it.
                await c.send(client_frame(OP_TEXT, b"ok\xe2\x82", fin=False))
                await c.send(client_frame(OP_CONT, b"\x28", fin=False))
                assert (await c.read_close())[0] == 1007
        await echo_ok(url)


async def test_huge_declared_length_fails_from_the_header_alone() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                # Only the 14-byte header: no payload byte is ever sent.
                await c.send(client_frame(OP_BINARY, b"", length=2**40))
                assert (await c.read_close())[0] == 1009
        await echo_ok(url)


async def test_valid_utf8_split_across_fragments_is_delivered() -> None:
    emoji = "\N{GRINNING FACE}".encode()
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_TEXT, b"a" + emoji[:1], fin=False))
                await c.send(client_frame(OP_CONT, emoji[1:3], fin=False))
                await c.send(client_frame(OP_CONT, emoji[3:] + b"z"))
                assert await c.read_message() == (OP_TEXT, b"a" + emoji + b"z")


async def test_frames_in_the_same_packet_as_the_handshake() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                await client.send(upgrade_request() + client_frame(OP_TEXT, "early") + client_frame(OP_PING, b"pp"))
                resp = await client.read_head()
                assert resp.status == 101
                assert await client.read_message() == (OP_TEXT, b"early")
                assert await client.read_message() == (0xA, b"pp")
            finally:
                await client.aclose()
            await echo_ok(url)


async def test_control_frames_between_fragments_are_answered() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_TEXT, "ab", fin=False))
                await c.send(client_frame(OP_PING, b"mid"))
                await c.send(client_frame(OP_CONT, "cd"))
                assert await c.read_message() == (0xA, b"mid")
                assert await c.read_message() == (OP_TEXT, b"abcd")


async def test_abrupt_drop_mid_message_does_not_harm_the_server() -> None:
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.handshake()
            await c.send(client_frame(OP_BINARY, b"x" * 100, length=1000))
            await c.abort()
        await echo_ok(url)


async def test_head_on_a_websocket_route_gets_no_body() -> None:
    # A response to HEAD never has a body (RFC 9110 section 9.3.2), even an error.
    async with running_server(_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            await client.send(upgrade_request(method="HEAD"))
            resp = await client.read_head(body=False)
            rest = await client.read_until_eof()
            await client.aclose()
            assert resp.status == 405
            assert rest == b"", rest
