"""permessage-deflate (RFC 7692) end to end, with real peers.

- ``websockets`` (sync client in a worker thread): it offers
  permessage-deflate by default; context takeover and window sizes are set
  through its ``ClientPerMessageDeflateFactory``.
- ``aiohttp`` with ``compress=15``.
- A raw socket client compressing by hand with ``zlib`` for what no polite
  client sends: compression bombs, corrupt data, RSV1 where it is not
  allowed, invalid UTF-8 inside a compressed text, malformed offers. Each
  hostile case is followed by a normal client (the server is unharmed).
"""

from __future__ import annotations

import asyncio
import os
import tracemalloc
import zlib
from typing import Any

import aiohttp
import pytest
import trio
import websockets.sync.client
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

import wsnest
from serverutil import TIMEOUT, RawClient, Tracker, echo_ok, raw_ws, run_in_thread, running_server, ws_url
from wire import OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_TEXT, client_frame, close_frame, parse_close
from wsnest.core._common import R_BAD_UTF8, R_RSV, R_TOO_BIG
from wsnest.core._deflate import MIN_COMPRESS_SIZE, R_INFLATE_BAD, R_INFLATE_TOO_BIG

MiB = 1 << 20
PMD = "permessage-deflate"
OFFER = [("Sec-WebSocket-Extensions", PMD)]
TEXT_KB = ("The quick brown fox jumps over the lazy dog. " * 30)[:1000]


def deflate_echo(path: str = "/ws", textframes: bool | None = None, **kw: Any) -> wsnest.WebSocketHandler:
    return wsnest.handler_ws(path, lambda ws, data: ws.send(data), textframes=textframes, permessage_deflate=True, **kw)


def plain_echo(path: str = "/plain", **kw: Any) -> wsnest.WebSocketHandler:
    return wsnest.handler_ws(path, lambda ws, data: ws.send(data), textframes=None, **kw)


def handlers() -> list[wsnest.WebSocketHandler]:
    return [
        deflate_echo("/ws"),
        deflate_echo("/bin", textframes=False),
        deflate_echo("/text", textframes=True),
        deflate_echo("/small", max_message_size=1000),
        plain_echo("/plain"),
    ]


# -- a raw client that speaks permessage-deflate by hand ------------------------------


def compress(data: bytes, z: Any = None) -> bytes:
    """A client's compressed payload: raw DEFLATE, sync flush, 00 00 ff ff off."""
    z = z or zlib.compressobj(6, zlib.DEFLATED, -15)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def inflate(payload: bytes, z: Any = None) -> bytes:
    z = z or zlib.decompressobj(-15)
    return z.decompress(payload + b"\x00\x00\xff\xff")


async def read_frame(c: RawClient) -> tuple[bool, int, int, bytes]:
    """One server frame with its RSV bits: ``(fin, rsv, opcode, payload)``."""
    b0, b1 = await c._exactly(2)
    assert not b1 & 0x80, "server frame is masked"
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await c._exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await c._exactly(8), "big")
    return bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0x0F, await c._exactly(n)


async def read_message(c: RawClient, inflater: Any = None) -> tuple[int, bool, bytes]:
    """One whole server message: ``(opcode, compressed, data)`` (inflated)."""
    fin, rsv, opcode, payload = await read_frame(c)
    assert fin, "wsnest does not fragment"
    assert rsv in (0, 4), rsv
    if rsv:
        assert opcode in (OP_TEXT, OP_BINARY), "RSV1 on a control frame"
        return opcode, True, inflate(payload, inflater)
    return opcode, False, payload


async def read_close(c: RawClient) -> tuple[int | None, str]:
    while True:
        _, _, opcode, payload = await read_frame(c)
        if opcode == OP_CLOSE:
            return parse_close(payload)


async def expect_failure(url: str, path: str, data: bytes, code: int, reason: str) -> None:
    """Send ``data`` on a negotiated raw connection, expect a close with
    ``code`` and ``reason``, answer it, then check the server is fine."""
    with trio.fail_after(TIMEOUT):
        async with raw_ws(url, path, extra=OFFER) as c:
            await c.send(data)
            assert await read_close(c) == (code, reason)
            await c.send(close_frame(code))
            assert await c.read_until_eof() == b""
        await echo_ok(url, "/plain")
        await deflate_echo_ok(url, path)


async def deflate_echo_ok(url: str, path: str = "/ws") -> None:
    """A compressed round trip on a fresh connection, then a clean close."""
    with trio.fail_after(TIMEOUT):
        async with raw_ws(url, path, extra=OFFER) as c:
            await c.send(client_frame(OP_TEXT, compress(TEXT_KB.encode()), rsv=4))
            assert (await read_message(c))[1:] == (True, TEXT_KB.encode())  # TEXT or BINARY per textframes
            await c.send(close_frame(1000))
            assert await read_close(c) == (1000, "")


# -- handshake -----------------------------------------------------------------


async def test_negotiated_flag_and_on_close() -> None:
    tracker = Tracker()
    seen: list[tuple[str, bool]] = []

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        tracker.on_open(ws, req)
        seen.append((req.path, ws.permessage_deflate))

    echo = lambda ws, d: ws.send(d)  # noqa: E731
    h = [
        wsnest.handler_ws("/ws", echo, on_open, tracker.on_close, textframes=None, permessage_deflate=True),
        wsnest.handler_ws("/plain", echo, on_open, tracker.on_close, textframes=None),
    ]
    async with running_server(h) as (_, url):
        with trio.fail_after(TIMEOUT):
            for path, offer, agreed in [("/ws", OFFER, PMD), ("/ws", [], None), ("/plain", OFFER, None)]:
                c = await RawClient.connect(url)
                try:
                    resp = await c.handshake(path, extra=offer)
                    assert resp.header("sec-websocket-extensions") == agreed
                    await c.send(client_frame(OP_TEXT, TEXT_KB))
                    assert await read_message(c) == (OP_TEXT, agreed is not None, TEXT_KB.encode())
                finally:
                    await c.aclose()
            # A failure (bad compressed data) still runs on_close once, with its code.
            async with raw_ws(url, "/ws", extra=OFFER) as c:
                await c.send(client_frame(OP_BINARY, b"\xff\xff\xff\xff", rsv=4))
                assert await read_close(c) == (1007, R_INFLATE_BAD)
            await tracker.wait_closed(4)
    assert seen == [("/ws", True), ("/ws", False), ("/plain", False), ("/ws", True)]
    assert [code for _, code in tracker.closed][-1] == 1007
    tracker.assert_balanced()


@pytest.mark.parametrize(
    ("offer", "response"),
    [
        (PMD, PMD),
        (f"{PMD}; client_max_window_bits", PMD),
        (f"{PMD}; server_no_context_takeover", f"{PMD}; server_no_context_takeover"),
        (f"{PMD}; server_max_window_bits=10", f"{PMD}; server_max_window_bits=10"),
        (f"x-unknown, {PMD}; client_no_context_takeover", f"{PMD}; client_no_context_takeover"),
        # Declined: 101 without the extension.
        (f"{PMD}; server_max_window_bits=8", None),
        (f"{PMD}; unknown_param", None),
        (f"{PMD}; server_no_context_takeover; server_no_context_takeover", None),
        (f"{PMD}; server_max_window_bits=16", None),
        (f'{PMD}; server_max_window_bits="1', None),
        (f"{PMD};;", None),
        ("x-webkit-deflate-frame", None),
        ("\xe9t\xe9 @@ garbage ;;;=== {}", None),
        ("", None),
    ],
)
async def test_offers(offer: str, response: str | None) -> None:
    async with running_server(handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            try:
                resp = await c.handshake("/ws", extra=[("Sec-WebSocket-Extensions", offer)])
                assert resp.header("sec-websocket-extensions") == response
                # Whatever was agreed, plain frames work; RSV1 only if agreed.
                await c.send(client_frame(OP_TEXT, "plain"))
                assert await read_message(c) == (OP_TEXT, False, b"plain")
                await c.send(client_frame(OP_BINARY, compress(b"z" * 100), rsv=4))
                if response is None:
                    assert await read_close(c) == (1002, R_RSV)
                else:
                    assert await read_message(c) == (OP_BINARY, True, b"z" * 100)
            finally:
                await c.aclose()
        await deflate_echo_ok(url)


async def test_off_by_default_and_rsv1_without_negotiation() -> None:
    async with running_server(handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            try:
                resp = await c.handshake("/plain", extra=OFFER)
                assert resp.header("sec-websocket-extensions") is None
                await c.send(client_frame(OP_TEXT, compress(TEXT_KB.encode()), rsv=4))
                assert await read_close(c) == (1002, R_RSV)
            finally:
                await c.aclose()
            # A deflate handler whose client did not offer it.
            async with raw_ws(url, "/ws") as c2:
                await c2.send(client_frame(OP_TEXT, compress(b"x" * 50), rsv=4))
                assert await read_close(c2) == (1002, R_RSV)
        await echo_ok(url, "/plain")
        await deflate_echo_ok(url)


def test_handler_option_type_checked() -> None:
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match="permessage_deflate"):
            wsnest.handler_ws("/ws", lambda ws, d: None, permessage_deflate=bad)  # type: ignore[arg-type]
    assert wsnest.handler_ws("/ws", lambda ws, d: None).permessage_deflate is False


# -- raw client: framing of what the server sends ---------------------------------


async def test_raw_compressed_both_ways_with_context_takeover() -> None:
    async with running_server(handlers()) as (_, url), raw_ws(url, "/ws", extra=OFFER) as c:
        with trio.fail_after(TIMEOUT):
            ours = zlib.compressobj(6, zlib.DEFLATED, -15)
            theirs = zlib.decompressobj(-15)  # the server keeps its context: so do we
            for i in range(20):
                text = f"{i}: {TEXT_KB}".encode()
                await c.send(client_frame(OP_TEXT, compress(text, ours), rsv=4))
                assert await read_message(c, theirs) == (OP_TEXT, True, text)
            # Uncompressed messages are fine on a negotiated connection too.
            await c.send(client_frame(OP_BINARY, b"\x00" * 100))
            assert await read_message(c, theirs) == (OP_BINARY, True, b"\x00" * 100)
            # Small and empty messages go back uncompressed; pongs never compressed.
            for small in (b"", b"tiny", b"x" * (MIN_COMPRESS_SIZE - 1)):
                await c.send(client_frame(OP_BINARY, compress(small, ours), rsv=4))
                assert await read_message(c, theirs) == (OP_BINARY, False, small)
            await c.send(client_frame(OP_BINARY, b"y" * MIN_COMPRESS_SIZE))
            assert await read_message(c, theirs) == (OP_BINARY, True, b"y" * MIN_COMPRESS_SIZE)
            await c.send(client_frame(OP_PING, b"p" * 100))
            assert await read_frame(c) == (True, 0, 0xA, b"p" * 100)
            # A compressed message in fragments, a ping between them.
            data = compress(b"fragmented " * 50, ours)
            await c.send(client_frame(OP_TEXT, data[:5], fin=False, rsv=4))
            await c.send(client_frame(OP_PING, b"!"))
            await c.send(client_frame(OP_CONT, data[5:]))
            assert await read_frame(c) == (True, 0, 0xA, b"!")
            assert await read_message(c, theirs) == (OP_TEXT, True, b"fragmented " * 50)
            await c.send(close_frame(1000))
            assert await read_close(c) == (1000, "")


async def test_raw_no_context_takeover_both_sides() -> None:
    offer = [("Sec-WebSocket-Extensions", f"{PMD}; server_no_context_takeover; client_no_context_takeover")]
    async with running_server(handlers()) as (_, url), raw_ws(url, "/ws", extra=offer) as c:
        with trio.fail_after(TIMEOUT):
            for i in range(5):
                text = f"{i}: {TEXT_KB}".encode()
                # A fresh compressor per message, and a fresh decompressor:
                # each server message must stand on its own.
                await c.send(client_frame(OP_TEXT, compress(text), rsv=4))
                assert await read_message(c, zlib.decompressobj(-15)) == (OP_TEXT, True, text)


@pytest.mark.parametrize("textframes", [True, False, None])
async def test_textframes_modes(textframes: bool | None) -> None:
    received: list[Any] = []

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        received.append(data)
        ws.send(data)

    h = [wsnest.handler_ws("/ws", on_message, textframes=textframes, permessage_deflate=True), plain_echo()]
    text = ("héllo 😀 " * 20).encode()
    async with running_server(h) as (_, url), raw_ws(url, "/ws", extra=OFFER) as c:
        with trio.fail_after(TIMEOUT):
            theirs = zlib.decompressobj(-15)
            await c.send(client_frame(OP_TEXT, compress(text), rsv=4))
            echoed = await read_message(c, theirs)
            await c.send(client_frame(OP_BINARY, compress(text), rsv=4))
            echoed2 = await read_message(c, theirs)
    as_str = text.decode()
    if textframes is True:
        assert received == [as_str, as_str]
        assert echoed == echoed2 == (OP_TEXT, True, text)
    elif textframes is False:
        assert received == [text, text]
        assert echoed == echoed2 == (OP_BINARY, True, text)
    else:
        assert received == [as_str, text]
        assert (echoed, echoed2) == ((OP_TEXT, True, text), (OP_BINARY, True, text))


async def test_async_on_message() -> None:
    async def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        await trio.sleep(0)
        await ws.send_wait(data)

    h = [wsnest.handler_ws("/ws", on_message, textframes=None, permessage_deflate=True), plain_echo()]
    async with running_server(h) as (_, url), raw_ws(url, "/ws", extra=OFFER) as c:
        with trio.fail_after(TIMEOUT):
            theirs = zlib.decompressobj(-15)
            for i in range(30):
                await c.send(client_frame(OP_BINARY, compress(b"%d" % i * 40), rsv=4))
            for i in range(30):
                assert await read_message(c, theirs) == (OP_BINARY, True, b"%d" % i * 40)


async def test_send_size_limit_counts_uncompressed_bytes() -> None:
    results: list[int] = []

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        results.append(ws.send(b"\x00" * 1001))  # compresses to a few bytes, still over the limit
        results.append(ws.send(b"\x00" * 1000))

    h = [wsnest.handler_ws("/ws", on_message, permessage_deflate=True, max_message_size=1000), plain_echo()]
    async with running_server(h) as (_, url), raw_ws(url, "/ws", extra=OFFER) as c:
        with trio.fail_after(TIMEOUT):
            await c.send(client_frame(OP_BINARY, b"go"))
            assert await read_message(c) == (OP_BINARY, True, b"\x00" * 1000)
    assert results == [wsnest.ErrorCode.MSG_SIZE, 0]


async def test_send_argument_types() -> None:
    # Same checks as a plain connection's send, on the compressing one.
    outcomes: list[Any] = []
    big = bytes(range(256)) * 400

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        assert ws.permessage_deflate
        outcomes.append(ws.send(bytearray(b"a" * 100)))
        outcomes.append(ws.send(memoryview(big)[::2]))  # not contiguous
        outcomes.append(ws.send(memoryview(b"m" * 40)))
        outcomes.append(ws.send("é" * 50))
        for bad in (123, None, ["x"]):
            try:
                ws.send(bad)  # type: ignore[arg-type]
            except TypeError:
                outcomes.append("TypeError")

    def on_text_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        try:
            ws.send(b"\xff" * 40)
        except ValueError:
            outcomes.append("ValueError")
        outcomes.append(ws.send(b"valid bytes sent as text " * 3))

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        ws.close(4000, "bye")
        outcomes.append(ws.send(b"x" * 100))

    h = [
        wsnest.handler_ws("/ws", on_message, on_open, permessage_deflate=True),
        wsnest.handler_ws("/text", on_message, on_text_open, textframes=True, permessage_deflate=True),
        plain_echo(),
    ]
    async with running_server(h) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url, "/ws", extra=OFFER) as c:
                theirs = zlib.decompressobj(-15)
                assert await read_message(c, theirs) == (OP_BINARY, True, b"a" * 100)
                assert await read_message(c, theirs) == (OP_BINARY, True, big[::2])
                assert await read_message(c, theirs) == (OP_BINARY, True, b"m" * 40)
                assert await read_message(c, theirs) == (OP_BINARY, True, ("é" * 50).encode())
                await c.send(client_frame(OP_BINARY, b"close me"))
                assert await read_close(c) == (4000, "bye")
            async with raw_ws(url, "/text", extra=OFFER) as c:
                assert await read_message(c) == (OP_TEXT, True, b"valid bytes sent as text " * 3)
    assert outcomes == [0, 0, 0, 0, "TypeError", "TypeError", "TypeError", 7, "ValueError", 0]


# -- raw client: hostile input ---------------------------------------------------------


def bomb(size: int) -> bytes:
    """``size`` zero bytes compressed (about 1000:1), built without holding them."""
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(MiB)
    out = b"".join(z.compress(chunk) for _ in range(size // MiB))
    return out + z.flush(zlib.Z_SYNC_FLUSH)[:-4]


async def test_compression_bomb_is_bounded() -> None:
    payload = bomb(128 * MiB)
    assert len(payload) < 150_000  # well under the 1 MiB limit on the wire
    frame = client_frame(OP_BINARY, payload, rsv=4)
    async with running_server(handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url, "/ws", extra=OFFER) as c:
                tracemalloc.start()
                try:
                    base = tracemalloc.get_traced_memory()[0]
                    await c.send(frame)
                    assert await read_close(c) == (1009, R_INFLATE_TOO_BIG)
                    peak = tracemalloc.get_traced_memory()[1] - base
                finally:
                    tracemalloc.stop()
            # 128 MiB inflated would show; the 1 MiB output bound, the frame
            # and the receive buffers are all there is.
            assert peak < 4 * MiB, peak
        await echo_ok(url, "/plain")
        await deflate_echo_ok(url)


async def test_compression_bomb_small_limit() -> None:
    async with running_server(handlers()) as (_, url):
        await expect_failure(
            url, "/small", client_frame(OP_BINARY, compress(bytes(1 << 16)), rsv=4), 1009, R_INFLATE_TOO_BIG
        )
        # Over the limit on the wire: refused from the header, before inflating.
        big = compress(os.urandom(2000))
        await expect_failure(url, "/small", client_frame(OP_BINARY, big, rsv=4), 1009, R_TOO_BIG)
        # Exactly at the limit after inflating is fine.
        async with raw_ws(url, "/small", extra=OFFER) as c:
            await c.send(client_frame(OP_BINARY, compress(b"a" * 1000), rsv=4))
            assert await read_message(c) == (OP_BINARY, True, b"a" * 1000)


def tail_completed(prefix_len: int) -> bytes:
    """A compressed payload whose last 4 inflated bytes come only from the
    ``00 00 ff ff`` the receiver appends before inflating (RFC 7692 section
    7.2.2): ``prefix_len`` bytes of "a" deflated and sync-flushed, then the
    header of a 4-byte stored block whose content that tail is. It inflates
    to ``prefix_len`` bytes, then to 4 more once the tail is added."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    flushed = z.compress(b"a" * prefix_len) + z.flush(zlib.Z_SYNC_FLUSH)
    return flushed + b"\x00\x04\x00\xfb\xff"  # BFINAL=0, BTYPE=stored; LEN=4, NLEN=~4


async def test_inflated_size_is_checked_after_the_appended_tail() -> None:
    """The size limit holds for the bytes the final flush produces: a
    message inflating to exactly ``max_message_size`` is delivered, one
    inflating to one byte more is a 1009, although both are within the
    limit until the tail is inflated."""
    limit = 1000
    for size in (limit, limit + 1):
        payload = tail_completed(size - 4)
        assert len(zlib.decompressobj(-15).decompress(payload)) == size - 4  # the rest comes from the tail
        assert inflate(payload) == b"a" * (size - 4) + b"\x00\x00\xff\xff"
    got: list[bytes] = []

    def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        got.append(data)
        ws.send(f"got {len(data)}")  # short: sent as is

    handler = wsnest.handler_ws("/limit", on_message, permessage_deflate=True, max_message_size=limit)
    async with running_server([handler, plain_echo()]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url, "/limit", extra=OFFER) as c:
                await c.send(client_frame(OP_BINARY, tail_completed(limit - 4), rsv=4))
                assert (await read_message(c))[1:] == (False, b"got 1000")
                # The stream goes on after a message that ended inside a stored block.
                await c.send(client_frame(OP_BINARY, compress(b"next " * 10), rsv=4))
                assert (await read_message(c))[1:] == (False, b"got 50")
            assert got == [b"a" * (limit - 4) + b"\x00\x00\xff\xff", b"next " * 10]
            async with raw_ws(url, "/limit", extra=OFFER) as c:
                await c.send(client_frame(OP_BINARY, tail_completed(limit - 3), rsv=4))
                _, _, opcode, payload = await read_frame(c)  # the close, not "got 1001"
                assert (opcode, parse_close(payload)) == (OP_CLOSE, (1009, R_INFLATE_TOO_BIG))
                await c.send(close_frame(1009))
                assert await c.read_until_eof() == b""
            assert len(got) == 2
        await echo_ok(url, "/plain")


async def test_compression_bomb_in_context_takeover_stream() -> None:
    # A harmless first message, then a bomb sharing its window.
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = compress(b"hello " * 20, z)
    second = z.compress(bytes(4 * MiB)) + z.flush(zlib.Z_SYNC_FLUSH)[:-4]
    async with running_server(handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url, "/ws", extra=OFFER) as c:
                await c.send(client_frame(OP_BINARY, first, rsv=4) + client_frame(OP_BINARY, second, rsv=4))
                assert await read_message(c) == (OP_BINARY, True, b"hello " * 20)
                assert await read_close(c) == (1009, R_INFLATE_TOO_BIG)
        await deflate_echo_ok(url)


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff\xff\xff", b"\x07garbage", b"\x00\x05\x00\x00\x00hello", bytes(range(200))],
    ids=["ff", "reserved-block-type", "stored-length-mismatch", "noise"],
)
async def test_corrupt_data(payload: bytes) -> None:
    async with running_server(handlers()) as (_, url):
        await expect_failure(url, "/ws", client_frame(OP_BINARY, payload, rsv=4), 1007, R_INFLATE_BAD)


async def test_invalid_utf8_after_inflate() -> None:
    bad = compress(b"valid text, then " + b"\xed\xa0\x80" + b" a surrogate" * 5)
    async with running_server(handlers()) as (_, url):
        for path in ("/ws", "/bin", "/text"):
            await expect_failure(url, path, client_frame(OP_TEXT, bad, rsv=4), 1007, R_BAD_UTF8)
        # A compressed BINARY message that is not UTF-8 on a textframes=True handler.
        await expect_failure(
            url,
            "/text",
            client_frame(OP_BINARY, compress(b"\xff" * 40), rsv=4),
            1007,
            "binary message is not UTF-8 text",
        )


@pytest.mark.parametrize(
    ("name", "frames"),
    [
        ("continuation", [client_frame(OP_TEXT, b"x", fin=False, rsv=4), client_frame(OP_CONT, b"y", rsv=4)]),
        ("continuation-of-plain", [client_frame(OP_TEXT, b"x", fin=False), client_frame(OP_CONT, b"y", rsv=4)]),
        ("ping", [client_frame(OP_PING, b"p", rsv=4)]),
        ("close", [close_frame(1000, rsv=4)]),
        ("rsv2", [client_frame(OP_TEXT, compress(b"hello " * 10), rsv=2)]),
        ("rsv3", [client_frame(OP_BINARY, b"x", rsv=1)]),
        ("rsv1+rsv2", [client_frame(OP_BINARY, b"x", rsv=6)]),
    ],
)
async def test_rsv_bits_where_not_allowed(name: str, frames: list[bytes]) -> None:
    async with running_server(handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url, "/ws", extra=OFFER) as c:
                await c.send(b"".join(frames))
                assert await read_close(c) == (1002, R_RSV)
                # After a protocol failure the server hangs up after its close.
                assert await c.read_until_eof() == b""
        await echo_ok(url, "/plain")
        await deflate_echo_ok(url)


# -- websockets (sync client) --------------------------------------------------------


def ws_echo(url: str, messages: list[Any], **kw: Any) -> tuple[str | None, list[Any]]:
    """Connect with websockets, echo ``messages``; return the agreed
    extensions header and what came back."""
    with websockets.sync.client.connect(url, max_size=4 * MiB, **kw) as c:
        header = c.response.headers.get("Sec-WebSocket-Extensions")
        out = []
        for m in messages:
            c.send(m)
            out.append(c.recv(timeout=TIMEOUT))
        return header, out


MESSAGES = [
    "hello",
    b"\x00\x01\xff",
    "",
    b"",
    "😀" * 5000,
    TEXT_KB * 20,
    b"\x00" * MiB,  # 1 MiB, highly compressible
    ("all work and no play " * 60000)[:MiB],
    # Incompressible: larger on the wire (websockets' memLevel 5 adds ~0.25 %),
    # and the 1 MiB limit applies to the wire size too.
    os.urandom(MiB - 8192),
    bytes(range(256)) * 100,
]


async def test_websockets_default_offer() -> None:
    async with running_server(handlers()) as (_, url):
        header, got = await run_in_thread(lambda: ws_echo(ws_url(url, "/ws"), MESSAGES))
    assert header == PMD
    assert got == MESSAGES
    assert [type(m) for m in got] == [type(m) for m in MESSAGES]


@pytest.mark.parametrize(
    ("server_nct", "client_nct"), [(False, False), (True, False), (False, True), (True, True)], ids=str
)
async def test_websockets_context_takeover(server_nct: bool, client_nct: bool) -> None:
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=server_nct, client_no_context_takeover=client_nct
    )
    messages = [f"message {i}: {TEXT_KB}" for i in range(30)] + [b"\x01" * 5000] * 5
    async with running_server(handlers()) as (_, url):
        header, got = await run_in_thread(
            lambda: ws_echo(ws_url(url, "/ws"), messages, extensions=[factory], compression=None)
        )
    expected = PMD
    if server_nct:
        expected += "; server_no_context_takeover"
    if client_nct:
        expected += "; client_no_context_takeover"
    assert header == expected
    assert got == messages


@pytest.mark.parametrize("bits", [8, 9, 10, 11, 12, 13, 14, 15])
async def test_websockets_server_max_window_bits(bits: int) -> None:
    # Repeats 3000 bytes apart: a compressor ignoring a small window would
    # refer back further than the client can follow.
    block = os.urandom(3000)
    messages = [block * 20, b"x" + block * 10]
    factory = ClientPerMessageDeflateFactory(server_max_window_bits=bits)
    async with running_server(handlers()) as (_, url):
        header, got = await run_in_thread(
            lambda: ws_echo(ws_url(url, "/ws"), messages, extensions=[factory], compression=None)
        )
    if bits == 8:
        assert header is None  # declined: zlib cannot keep to a 256-byte window
    else:
        assert header == f"{PMD}; server_max_window_bits={bits}"
    assert got == messages


@pytest.mark.parametrize("bits", [9, 12, 15])
async def test_websockets_client_max_window_bits(bits: int) -> None:
    factory = ClientPerMessageDeflateFactory(client_max_window_bits=bits)
    messages = [TEXT_KB * 50, os.urandom(1000) * 30]
    async with running_server(handlers()) as (_, url):
        header, got = await run_in_thread(
            lambda: ws_echo(ws_url(url, "/ws"), messages, extensions=[factory], compression=None)
        )
    assert header == PMD
    assert got == messages


async def test_websockets_to_plain_handler_and_without_compression() -> None:
    async with running_server(handlers()) as (_, url):
        header, got = await run_in_thread(lambda: ws_echo(ws_url(url, "/plain"), MESSAGES[:6]))
        assert (header, got) == (None, MESSAGES[:6])
        header, got = await run_in_thread(lambda: ws_echo(ws_url(url, "/ws"), MESSAGES[:6], compression=None))
        assert (header, got) == (None, MESSAGES[:6])


# -- aiohttp -----------------------------------------------------------------------


async def test_aiohttp_compress() -> None:
    async def scenario(url: str) -> tuple[int, list[Any]]:
        async with aiohttp.ClientSession() as session, session.ws_connect(url, compress=15) as ws:
            out: list[Any] = []
            for m in ["hello", TEXT_KB * 10, b"\x00" * MiB, "é" * 3000, b"bin"]:
                if isinstance(m, str):
                    await ws.send_str(m)
                else:
                    await ws.send_bytes(m)
                msg = await ws.receive(timeout=TIMEOUT)
                out.append(msg.data)
            await ws.close()
            return ws.compress, out  # 0 unless the server agreed

    async with running_server(handlers()) as (_, url):
        compress_bits, got = await run_in_thread(lambda: asyncio.run(scenario(ws_url(url, "/ws"))))
    assert compress_bits == 15
    assert got == ["hello", TEXT_KB * 10, b"\x00" * MiB, "é" * 3000, b"bin"]


# -- a browser -----------------------------------------------------------------------


async def test_chromium() -> None:
    """Headless Chromium offers permessage-deflate; skipped without a browser
    (as the demo test, whose helpers it uses)."""
    from test_demo_browser import CHROMIUM, CHROMIUM_ARGS, _require_browser

    sync_api = _require_browser()
    offers: list[tuple[str | None, bool]] = []

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        offers.append((req.headers.get("sec-websocket-extensions"), ws.permessage_deflate))

    h = [
        wsnest.handler_ws("/ws", lambda ws, d: ws.send(d * 100), on_open, textframes=None, permessage_deflate=True),
        wsnest.handler_inline("/", "<!doctype html><title>deflate</title>", content_type="text/html"),
    ]
    script = """(url) => new Promise((resolve, reject) => {
        const ws = new WebSocket(url);
        ws.onopen = () => ws.send("hello compressed world ");
        ws.onmessage = (e) => { resolve([ws.extensions, e.data]); ws.close(); };
        ws.onerror = () => reject(new Error("websocket error"));
    })"""
    async with running_server(h) as (_, url):

        def scenario() -> Any:
            with sync_api.sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page()
                    page.goto(url + "/")
                    return page.evaluate(script, ws_url(url, "/ws"))
                finally:
                    browser.close()

        with trio.fail_after(60):
            extensions, echoed = await trio.to_thread.run_sync(scenario, abandon_on_cancel=True)
    assert extensions == PMD
    assert echoed == "hello compressed world " * 100
    assert offers and offers[0][1] is True and PMD in (offers[0][0] or "")


# -- broadcast ------------------------------------------------------------------------


async def test_broadcast_mixed_receivers() -> None:
    clients: dict[int, wsnest.WebSocket] = {}
    counts: list[int] = []

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        clients[ws.id] = ws

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        counts.append(wsnest.broadcast(list(clients.values()), data))

    h = [
        wsnest.handler_ws("/room", on_message, on_open, textframes=None, permessage_deflate=True),
        plain_echo(),
    ]
    async with running_server(h) as (_, url):
        with trio.fail_after(TIMEOUT):
            zc = [await RawClient.connect(url) for _ in range(3)]
            plain = [await RawClient.connect(url) for _ in range(2)]
            try:
                for c in zc:
                    assert (await c.handshake("/room", extra=OFFER)).header("sec-websocket-extensions") == PMD
                for c in plain:
                    assert (await c.handshake("/room")).header("sec-websocket-extensions") is None
                theirs = [zlib.decompressobj(-15) for _ in zc]  # each with its own context
                for i, msg in enumerate([TEXT_KB, "short", "é" * 40000, TEXT_KB + "!"]):
                    sender = (zc + plain)[i % 5]
                    await sender.send(client_frame(OP_TEXT, msg))
                    for c, z in zip(zc, theirs, strict=True):
                        compressed = len(msg.encode()) >= MIN_COMPRESS_SIZE
                        assert await read_message(c, z) == (OP_TEXT, compressed, msg.encode())
                    for c in plain:
                        assert await read_message(c) == (OP_TEXT, False, msg.encode())
            finally:
                for c in zc + plain:
                    await c.aclose()
    assert counts == [5, 5, 5, 5]


async def test_broadcast_large_to_deflate_receivers() -> None:
    # 200 KiB: the shared frame is queued by reference for plain receivers,
    # compressed per connection for deflate ones.
    clients: list[wsnest.WebSocket] = []
    payload = (b"0123456789abcdef" * 13000)[: 200 * 1024]

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        clients.append(ws)

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        wsnest.broadcast(clients, payload)

    h = [wsnest.handler_ws("/room", on_message, on_open, permessage_deflate=True), plain_echo()]
    async with running_server(h) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url, "/room", extra=OFFER) as a, raw_ws(url, "/room") as b:
                await a.send(client_frame(OP_BINARY, b"go"))
                opcode, compressed, data = await read_message(a)
                assert (opcode, compressed, data == payload) == (OP_BINARY, True, True)
                assert await read_message(b) == (OP_BINARY, False, payload)


# -- many connections ---------------------------------------------------------------


async def test_many_deflate_connections() -> None:
    async with running_server(handlers()) as (_, url):

        async def one(i: int) -> None:
            async with raw_ws(url, "/ws", extra=OFFER) as c:
                theirs = zlib.decompressobj(-15)
                for j in range(3):
                    text = f"{i}/{j} {TEXT_KB}".encode()
                    await c.send(client_frame(OP_TEXT, compress(text), rsv=4))
                    assert await read_message(c, theirs) == (OP_TEXT, True, text)

        with trio.fail_after(TIMEOUT * 3):
            async with trio.open_nursery() as nursery:
                for i in range(50):
                    nursery.start_soon(one, i)
        await deflate_echo_ok(url)
