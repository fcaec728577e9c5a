"""``handler_ws(path, serve=fn)``: one async function owns each server
connection and pulls its messages; ``ws.request``, ``ws.data`` and a
client's ``ws.response_headers``. Peers: the ``websockets`` client and
wsnest's own. The suite runs once per core."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import websockets.asyncio.client  # noqa: F401  (the library is a test dependency)

import wsnest
from serverutil import TIMEOUT, raw_ws, run_in_thread, running_server, sync_connect, ws_url
from wire import OP_CLOSE, OP_TEXT, client_frame, close_frame, parse_close


class Events:
    """What the handler saw, in order."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.closed = trio.Event()

    def on_close(self, ws: wsnest.WebSocket) -> None:
        self.log.append(("on_close", ws.close_code))
        self.closed.set()


async def test_serve_echo_loop_with_a_real_client() -> None:
    events = Events()

    async def serve(ws: wsnest.WebSocket) -> None:
        async for msg in ws:
            events.log.append(msg)
            await ws.send_wait(msg)
        events.log.append("loop ended")

    handler = wsnest.handler_ws("/ws", serve=serve, on_close=events.on_close, textframes=None)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url):

            def client() -> list[Any]:
                with sync_connect(ws_url(url)) as conn:
                    out = []
                    for msg in ["héllo", b"\x00\x01", "x" * 100_000]:
                        conn.send(msg)
                        out.append(conn.recv())
                    return out

            assert await run_in_thread(client) == ["héllo", b"\x00\x01", "x" * 100_000]
            await events.closed.wait()
    assert events.log == ["héllo", b"\x00\x01", "x" * 100_000, "loop ended", ("on_close", 1000)]


async def test_serve_return_closes_1000_and_on_close_runs_once_after_it() -> None:
    events = Events()
    finished = trio.Event()

    async def serve(ws: wsnest.WebSocket) -> None:
        msg = await ws.receive()
        ws.send(b"got " + msg)
        finished.set()  # returns: the server closes with 1000

    handler = wsnest.handler_ws("/ws", serve=serve, on_close=events.on_close)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_TEXT, "one"))
            assert (await c.read_frame())[1:] == (2, b"got one")
            assert await c.read_close() == (1000, "")
            await c.send(close_frame(1000))
            await events.closed.wait()
    assert finished.is_set()
    assert events.log == [("on_close", 1000)]


async def test_serve_raising_closes_1011_and_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    events = Events()

    async def serve(ws: wsnest.WebSocket) -> None:
        await ws.receive()
        raise RuntimeError("application bug")

    handler = wsnest.handler_ws("/ws", serve=serve, on_close=events.on_close)
    with caplog.at_level(logging.ERROR, "wsnest"), trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_TEXT, "boom"))
            assert (await c.read_close())[0] == 1011
            await c.send(close_frame(1011))
            await events.closed.wait()
    assert "application bug" in caplog.text
    assert events.log == [("on_close", 1011)]


async def test_abnormal_end_raises_in_the_loop_and_on_close_waits_for_serve() -> None:
    """The client drops without a close frame: ``async for`` raises
    ConnectionClosedError (1006); ``serve`` may still clean up (with
    awaits) before ``on_close`` runs."""
    events = Events()

    async def serve(ws: wsnest.WebSocket) -> None:
        try:
            async for _ in ws:
                pass
        except wsnest.ConnectionClosedError as exc:
            events.log.append(("raised", exc.code))
            await trio.sleep(0)  # cleanup that awaits: not cancelled
            events.log.append("cleaned up")
            raise

    handler = wsnest.handler_ws("/ws", serve=serve, on_close=events.on_close)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_TEXT, "hi"))
                await c.abort()
            await events.closed.wait()
    assert events.log == [("raised", 1006), "cleaned up", ("on_close", 1006)]


async def test_normal_close_by_the_client_ends_the_loop_quietly() -> None:
    events = Events()

    async def serve(ws: wsnest.WebSocket) -> None:
        async for msg in ws:
            events.log.append(msg)
        events.log.append(("loop ended", ws.close_code))

    handler = wsnest.handler_ws("/ws", serve=serve, on_close=events.on_close, textframes=True)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_TEXT, "a") + close_frame(1001, "bye"))
            _, op, payload = await c.read_frame()
            assert op == OP_CLOSE and parse_close(payload) == (1001, "")
            await events.closed.wait()
    assert events.log == ["a", ("loop ended", 1001), ("on_close", 1001)]


async def test_a_close_frame_without_a_code_is_a_clean_end() -> None:
    events = Events()

    async def serve(ws: wsnest.WebSocket) -> None:
        async for _ in ws:
            pass
        events.log.append(("loop ended", ws.close_code))

    handler = wsnest.handler_ws("/ws", serve=serve, on_close=events.on_close)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            await c.send(close_frame(None))
            _, op, payload = await c.read_frame()
            assert op == OP_CLOSE and payload == b""
            await events.closed.wait()
    assert events.log == [("loop ended", 1005), ("on_close", 1005)]


async def test_server_shutdown_ends_serve_with_1001() -> None:
    events = Events()
    started = trio.Event()

    async def serve(ws: wsnest.WebSocket) -> None:
        started.set()
        async for _ in ws:
            pass
        events.log.append(("loop ended", ws.close_code))

    handler = wsnest.handler_ws("/ws", serve=serve, on_close=events.on_close)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler], close_timeout=1) as (server, url), raw_ws(url) as c:
            await started.wait()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.aclose)
                assert (await c.read_close())[0] == 1001
                await c.send(close_frame(1001))
            await events.closed.wait()
    assert events.log == [("loop ended", 1001), ("on_close", 1001)]


async def test_serve_backpressure_bounds_the_queue() -> None:
    """A ``serve`` that does not read yet holds at most ``max_queue``
    messages; the rest wait in the socket, and all arrive in order."""
    received: list[bytes] = []
    go = trio.Event()

    async def serve(ws: wsnest.WebSocket) -> None:
        await go.wait()
        async for msg in ws:
            received.append(msg)
            if len(received) == 500:
                return

    handler = wsnest.handler_ws("/ws", serve=serve, max_queue=3)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            await c.send(b"".join(client_frame(0x2, i.to_bytes(4, "big")) for i in range(500)))
            go.set()
            assert await c.read_close() == (1000, "")
    assert received == [i.to_bytes(4, "big") for i in range(500)]


def test_handler_ws_needs_exactly_one_style() -> None:
    async def serve(ws: wsnest.WebSocket) -> None:
        pass

    with pytest.raises(TypeError, match=r"on_message .* or serve"):
        wsnest.handler_ws("/ws")
    with pytest.raises(TypeError, match=r"on_message .* or serve"):
        wsnest.handler_ws("/ws", lambda ws, data: None, serve=serve)
    with pytest.raises(TypeError, match="serve: expected a function"):
        wsnest.handler_ws("/ws", serve=42)  # type: ignore[arg-type]


async def test_receive_on_a_callback_connection_is_an_error() -> None:
    errors: list[str] = []

    async def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        try:
            await ws.receive()
        except RuntimeError as exc:
            errors.append(str(exc))
        ws.send(b"ok")

    handler = wsnest.handler_ws("/ws", on_message)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_TEXT, "x"))
            assert (await c.read_frame())[2] == b"ok"
    assert errors and "serve=" in errors[0]


# -- ws.request and ws.data ---------------------------------------------------------


async def test_request_and_data_on_server_connections() -> None:
    seen: list[Any] = []

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        assert ws.request is not None and ws.request.path == req.path
        ws.data["user"] = req.query

    def on_message(ws: wsnest.WebSocket, data: str) -> None:
        req = ws.request
        assert req is not None
        seen.append((req.method, req.path, req.query, req.headers["x-token"], req.client is not None, req.body))
        seen.append(ws.data)
        assert ws.request is req  # unpacked once, then kept
        ws.send("ok")

    handler = wsnest.handler_ws("/chat/room", on_message, on_open=on_open, textframes=True)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url):
            target = ws_url(url, "/chat/room") + "?name=ann%20b"

            def client() -> Any:
                with sync_connect(target, additional_headers={"X-Token": "sécret"}) as conn:
                    conn.send("hi")
                    return conn.recv()

            assert await run_in_thread(client) == "ok"
    assert seen == [("GET", "/chat/room", "name=ann%20b", "sécret", True, b""), {"user": "name=ann%20b"}]


async def test_data_is_assignable_and_per_connection() -> None:
    async def serve(ws: wsnest.WebSocket) -> None:
        ws.data = ["state", ws.id]
        async for _ in ws:
            ws.send(repr(ws.data))

    handler = wsnest.handler_ws("/ws", serve=serve, textframes=True)
    with trio.fail_after(TIMEOUT):
        async with (
            running_server([handler]) as (_, url),
            wsnest.connect(ws_url(url)) as a,
            wsnest.connect(ws_url(url)) as b,
        ):
            a.send("?")
            b.send("?")
            replies = {await a.receive(), await b.receive()}
            assert a.data == {} and a.request is None
    assert len(replies) == 2 and all(r.startswith("['state', ") for r in replies)


async def test_client_sees_the_response_headers() -> None:
    async def serve(ws: wsnest.WebSocket) -> None:
        async for msg in ws:
            ws.send(msg)

    handler = wsnest.handler_ws("/ws", serve=serve, subprotocols=["chat.v1"])
    with trio.fail_after(TIMEOUT):
        async with (
            running_server([handler]) as (_, url),
            wsnest.connect(ws_url(url), subprotocols=["chat.v1"]) as ws,
        ):
            headers = ws.response_headers
            assert headers is not None
            assert headers["upgrade"].lower() == "websocket"
            assert headers["sec-websocket-protocol"] == "chat.v1"
            assert ws.subprotocol == "chat.v1"


def test_request_snapshot_round_trip() -> None:
    headers = wsnest.Headers([("Host", "h"), ("X-A", "1"), ("x-a", "2"), ("X-Lat", "ü")])
    req = wsnest.Request("GET", "/p%20q?x=1", headers, b"", ("::1", 5), "1.1")
    req.upgrade = True
    packed = req.snapshot()
    assert packed is not None and len(packed) < 100
    back = wsnest.Request.from_snapshot(packed)
    assert (back.method, back.uri, back.path, back.query, back.client, back.http_version) == (
        "GET",
        "/p%20q?x=1",
        "/p q",
        "x=1",
        ("::1", 5),
        "1.1",
    )
    assert back.headers.raw == headers.raw and back.headers.getall("x-a") == ["1", "2"]
    assert back.upgrade and back.keep_alive
    odd = wsnest.Request("GET", "/", wsnest.Headers([("X", "a\nb")]))
    assert odd.snapshot() is None  # kept as the object instead
