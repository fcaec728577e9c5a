"""Receiving a message piece by piece: ``streaming=True`` on
``handler_ws(serve=...)`` and ``wsnest.connect``, ``ws.receive_stream()``.
Peers: raw frames, the ``websockets`` client and server. The suite runs
once per core."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import trio
import websockets.sync.server

import wsnest
from serverutil import TIMEOUT, raw_ws, run_in_thread, running_server, sync_connect, ws_url
from wire import OP_BINARY, OP_CLOSE, OP_CONT, OP_TEXT, client_frame, close_frame, parse_close

Serve = Callable[[wsnest.WebSocket], Awaitable[None]]


def streaming_handler(serve: Serve, **kw: Any) -> wsnest.WebSocketHandler:
    return wsnest.handler_ws("/ws", serve=serve, streaming=True, **kw)


async def test_a_large_message_arrives_in_pieces_and_whole() -> None:
    """3 MiB in one frame from the websockets client: several pieces,
    together the message; the serve function answers with what it counted."""
    sizes: list[int] = []

    async def serve(ws: wsnest.WebSocket) -> None:
        while True:
            total = 0
            async for piece in ws.receive_stream():
                assert isinstance(piece, bytes)
                sizes.append(len(piece))
                total += len(piece)
            ws.send(str(total))

    payload = bytes(range(256)) * (3 * 4096)
    with trio.fail_after(TIMEOUT):
        async with running_server([streaming_handler(serve, max_message_size=None, textframes=None)]) as (_, url):

            def client() -> str:
                with sync_connect(ws_url(url), max_size=None) as conn:
                    conn.send(payload)
                    return str(conn.recv())

            assert await run_in_thread(client) == str(len(payload))
    assert sum(sizes) == len(payload)
    assert len(sizes) > 1  # really in pieces: no piece holds the whole message


async def test_text_split_inside_a_character_across_frames() -> None:
    got: list[Any] = []

    async def serve(ws: wsnest.WebSocket) -> None:
        got.append([piece async for piece in ws.receive_stream()])
        got.append(await ws.receive())  # whole, on the same connection
        ws.send("done")

    with trio.fail_after(TIMEOUT):
        async with running_server([streaming_handler(serve, textframes=None)]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_TEXT, b"h\xc3", fin=False))
            await c.send(client_frame(OP_CONT, b"\xa9llo \xe2\x82", fin=False))
            await c.send(client_frame(OP_CONT, b"\xac", fin=True))
            await c.send(client_frame(OP_TEXT, b"a\xc3", fin=False) + client_frame(OP_CONT, b"\xa9", fin=True))
            assert (await c.read_frame())[2] == b"done"
    pieces, whole = got
    assert "".join(pieces) == "héllo €" and all(isinstance(p, str) for p in pieces)
    assert whole == "aé"


async def test_stopping_half_way_skips_the_rest_of_that_message() -> None:
    got: list[Any] = []
    taken = trio.Event()

    async def serve(ws: wsnest.WebSocket) -> None:
        async for piece in ws.receive_stream():
            got.append(piece)
            break  # not interested in the rest
        taken.set()
        got.append(await ws.receive())
        ws.send(b"ok")

    with trio.fail_after(TIMEOUT):
        async with running_server([streaming_handler(serve)]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_BINARY, b"first", fin=False))
            await taken.wait()
            await c.send(client_frame(OP_CONT, b"rest", fin=False) + client_frame(OP_CONT, b"end", fin=True))
            await c.send(client_frame(OP_BINARY, b"next"))
            assert (await c.read_frame())[2] == b"ok"
    assert got == [b"first", b"next"]


async def test_invalid_utf8_mid_stream_fails_with_1007() -> None:
    seen: list[Any] = []

    async def serve(ws: wsnest.WebSocket) -> None:
        try:
            async for piece in ws.receive_stream():
                seen.append(piece)
        except wsnest.ConnectionClosedError as exc:
            seen.append(exc.code)

    with trio.fail_after(TIMEOUT):
        async with running_server([streaming_handler(serve, textframes=True)]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_TEXT, b"good ", fin=False))
            await c.send(client_frame(OP_CONT, b"bad \xff", fin=True))
            assert (await c.read_close())[0] == 1007
            await c.send(close_frame(1007))
    assert seen[0] == "good " and seen[-1] == 1007


async def test_binary_on_a_textframes_connection_must_be_utf8() -> None:
    """textframes=True decodes BINARY too: a piece that is not UTF-8 ends
    the connection with 1007."""
    seen: list[Any] = []

    async def serve(ws: wsnest.WebSocket) -> None:
        try:
            seen.append(await ws.receive())
            async for piece in ws.receive_stream():
                seen.append(piece)
        except wsnest.ConnectionClosedError as exc:
            seen.append(exc.code)

    with trio.fail_after(TIMEOUT):
        async with running_server([streaming_handler(serve, textframes=True)]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_BINARY, "é".encode()))
            await c.send(client_frame(OP_BINARY, b"\xc3\x28"))
            assert (await c.read_close())[0] == 1007
    assert seen == ["é", 1007]


async def test_max_message_size_bounds_the_whole_streamed_message() -> None:
    seen: list[Any] = []

    async def serve(ws: wsnest.WebSocket) -> None:
        try:
            async for piece in ws.receive_stream():
                seen.append(len(piece))
        except wsnest.ConnectionClosedError as exc:
            seen.append(exc.code)

    handler = streaming_handler(serve, max_message_size=1000)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_BINARY, b"x" * 600, fin=False))
            await c.send(client_frame(OP_CONT, b"y" * 600, fin=True))
            code, _ = await c.read_close()
            assert code == 1009
    assert seen == [600, 1009]


async def test_a_message_larger_than_the_memory_it_may_use() -> None:
    """24 MiB streamed to a handler that only counts: the process never
    holds more than a fraction of it (tracemalloc peak, the client's
    prebuilt frame excluded)."""
    size = 24 << 20
    counted = trio.Event()
    total = 0

    async def serve(ws: wsnest.WebSocket) -> None:
        nonlocal total
        async for piece in ws.receive_stream():
            total += len(piece)
        counted.set()

    frame = client_frame(OP_BINARY, b"\x5a" * size)
    handler = streaming_handler(serve, max_message_size=None)
    with trio.fail_after(60):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            tracemalloc.start()
            try:
                await c.send(frame)
                await counted.wait()
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert total == size
    assert peak < size // 3, f"peak {peak} bytes while streaming {size}"


async def test_receive_stream_without_streaming_gives_the_message_whole() -> None:
    got: list[Any] = []

    async def serve(ws: wsnest.WebSocket) -> None:
        got.append([piece async for piece in ws.receive_stream()])
        ws.send(b"ok")

    with trio.fail_after(TIMEOUT):
        async with running_server([wsnest.handler_ws("/ws", serve=serve)]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_BINARY, b"ab", fin=False) + client_frame(OP_CONT, b"cd"))
            assert (await c.read_frame())[2] == b"ok"
    assert got == [[b"abcd"]]


async def test_a_close_in_the_middle_of_a_message_raises() -> None:
    seen: list[Any] = []

    async def serve(ws: wsnest.WebSocket) -> None:
        try:
            async for piece in ws.receive_stream():
                seen.append(piece)
        except wsnest.ConnectionClosedOK as exc:
            seen.append(("closed", exc.code))

    with trio.fail_after(TIMEOUT):
        async with running_server([streaming_handler(serve)]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_BINARY, b"part", fin=False) + close_frame(1000))
            _, op, payload = await c.read_frame()
            assert op == OP_CLOSE and parse_close(payload) == (1000, "")
    assert seen == [b"part", ("closed", 1000)]


def test_streaming_needs_serve() -> None:
    with pytest.raises(TypeError, match="streaming: needs serve="):
        wsnest.handler_ws("/ws", lambda ws, data: None, streaming=True)


# -- the client --------------------------------------------------------------------


@pytest.fixture
def websockets_sender() -> Iterator[str]:
    """A websockets server that sends, on any message, a 2 MiB binary
    message and a fragmented text message, then echoes."""

    def handler(conn: Any) -> None:
        for msg in conn:
            conn.send(b"\x01" * (2 << 20))
            conn.send(["fragmented ", "téxt"])
            conn.send(msg)

    with websockets.sync.server.serve(handler, "127.0.0.1", 0, max_size=None, compression=None) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        try:
            yield f"ws://{host}:{port}/"
        finally:
            server.shutdown()
            thread.join(TIMEOUT)


async def test_client_streaming(websockets_sender: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with wsnest.connect(websockets_sender, streaming=True, max_message_size=None) as ws:
            ws.send("go")
            sizes = [len(piece) async for piece in ws.receive_stream()]
            assert sum(sizes) == 2 << 20 and len(sizes) > 1
            pieces = [piece async for piece in ws.receive_stream()]
            assert pieces == ["fragmented ", "téxt"]
            assert await ws.receive() == "go"
            ws.send("again")
            assert await ws.receive() == b"\x01" * (2 << 20)
            assert await ws.receive() == "fragmented téxt"


async def test_client_streaming_with_compression() -> None:
    """A compressed message is inflated whole, then handed over as one piece."""

    async def serve(ws: wsnest.WebSocket) -> None:
        async for msg in ws:
            ws.send(msg * 1000)

    handler = wsnest.handler_ws("/ws", serve=serve, textframes=None, permessage_deflate=True)
    with trio.fail_after(TIMEOUT):
        async with (
            running_server([handler]) as (_, url),
            wsnest.connect(ws_url(url), streaming=True, permessage_deflate=True) as ws,
        ):
            assert ws.permessage_deflate
            ws.send("abc")
            assert [piece async for piece in ws.receive_stream()] == ["abc" * 1000]
            ws.send(b"xyz")
            assert await ws.receive() == b"xyz" * 1000
