"""Connection logic without sockets: an ``HttpConnection`` served over
``trio.testing.memory_stream_pair()`` (through ``serve_connection``), with a
server object prepared by ``serverutil.memory_server``."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

import wsnest
from serverutil import TIMEOUT, RawClient, memory_connection, memory_server, spawn
from wire import OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, client_frame, close_frame, upgrade_request


class Seen:
    def __init__(self) -> None:
        self.opened: list[tuple[wsnest.WebSocket, wsnest.Request]] = []
        self.closed: list[tuple[int, int]] = []
        self.messages: list[Any] = []
        self.closed_event = trio.Event()

    def handler(self, textframes: bool | None = None, **kw: Any) -> wsnest.WebSocketHandler:
        def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> Any:
            self.opened.append((ws, req))
            if req.query == "reject":
                return wsnest.Reject(403, "nope")
            if req.query == "greet":
                ws.send("hello")
            return None

        def on_message(ws: wsnest.WebSocket, data: Any) -> None:
            self.messages.append(data)
            ws.send(data)

        def on_close(ws: wsnest.WebSocket) -> None:
            self.closed.append((ws.id, ws.close_code))
            self.closed_event.set()

        return wsnest.handler_ws("/ws", on_message, on_open, on_close, textframes, **kw)


async def _connect(server: wsnest.HttpServer, path: str = "/ws") -> RawClient:
    client, serve = memory_connection(server)
    spawn(server, serve)
    await client.handshake(path)
    return client


async def test_handshake_echo_and_close_over_memory_stream() -> None:
    seen = Seen()
    with trio.fail_after(TIMEOUT):
        async with memory_server(seen.handler()) as server:
            c = await _connect(server)
            await c.send(client_frame(OP_TEXT, "hello \N{GRINNING FACE}"))
            assert await c.read_message() == (OP_TEXT, "hello \N{GRINNING FACE}".encode())
            await c.send(client_frame(OP_BINARY, b"\x00\x01"))
            assert await c.read_message() == (OP_BINARY, b"\x00\x01")
            await c.send(client_frame(OP_PING, b"pp"))
            assert await c.read_message() == (OP_PONG, b"pp")
            await c.send(close_frame(4001, "bye"))
            assert await c.read_close() == (4001, "")
            assert await c.read_until_eof() == b""
            await seen.closed_event.wait()
    assert seen.messages == ["hello \N{GRINNING FACE}", b"\x00\x01"]
    assert seen.closed == [(1, 4001)]
    ws, req = seen.opened[0]
    assert req.client == ("10.0.0.1", 40000)
    assert req.path == "/ws"
    assert ws.closed
    assert ws.close_code == 4001


async def test_send_in_on_open_follows_the_101() -> None:
    seen = Seen()
    with trio.fail_after(TIMEOUT):
        async with memory_server(seen.handler()) as server:
            c = await _connect(server, "/ws?greet")
            assert await c.read_message() == (OP_TEXT, b"hello")
            await c.send(close_frame(1000))
            assert await c.read_close() == (1000, "")


async def test_frames_in_the_same_write_as_the_handshake() -> None:
    seen = Seen()
    with trio.fail_after(TIMEOUT):
        async with memory_server(seen.handler(textframes=False)) as server:
            c, serve = memory_connection(server)
            spawn(server, serve)
            await c.send(upgrade_request() + client_frame(OP_TEXT, "a") + client_frame(OP_BINARY, b"b"))
            assert (await c.read_head()).status == 101
            assert await c.read_message() == (OP_BINARY, b"a")
            assert await c.read_message() == (OP_BINARY, b"b")
            await c.send(close_frame(1000))
            assert await c.read_close() == (1000, "")
    assert seen.messages == [b"a", b"b"]


async def test_reject_over_memory_stream() -> None:
    seen = Seen()
    with trio.fail_after(TIMEOUT):
        async with memory_server(seen.handler()) as server:
            c, serve = memory_connection(server)
            spawn(server, serve)
            await c.send(upgrade_request("/ws?reject"))
            resp = await c.read_head()
            assert resp.status == 403
            assert resp.body.strip() == b"nope"
            assert await c.read_until_eof() == b""
            await trio.testing.wait_all_tasks_blocked()
    assert seen.closed == []


async def test_sends_from_outside_a_callback_are_flushed() -> None:
    # StreamTransport cannot write without waiting, so every send from
    # outside a callback goes through the flusher and a drain task.
    seen = Seen()
    with trio.fail_after(TIMEOUT):
        async with memory_server(seen.handler(textframes=True)) as server:
            c1 = await _connect(server)
            c2 = await _connect(server)
            conns = [ws for ws, _ in seen.opened]
            assert conns[0].send("direct") == 0
            assert wsnest.broadcast(conns, "to all") == 2
            assert await c1.read_message() == (OP_TEXT, b"direct")
            assert await c1.read_message() == (OP_TEXT, b"to all")
            assert await c2.read_message() == (OP_TEXT, b"to all")
            assert [ws.id for ws in conns] == [1, 2]


async def test_peer_drop_and_protocol_error_call_on_close() -> None:
    seen = Seen()
    with trio.fail_after(TIMEOUT):
        async with memory_server(seen.handler()) as server:
            dropper = await _connect(server)
            await dropper.aclose()
            while len(seen.closed) < 1:
                await trio.testing.wait_all_tasks_blocked()
            bad = await _connect(server)
            await bad.send(client_frame(OP_TEXT, "x", mask=None))
            assert (await bad.read_close())[0] == 1002
            await bad.aclose()
            while len(seen.closed) < 2:
                await trio.testing.wait_all_tasks_blocked()
    assert seen.closed == [(1, 1006), (2, 1002)]


async def test_cancellation_sends_1001() -> None:
    seen = Seen()
    with trio.fail_after(TIMEOUT):
        async with memory_server(seen.handler()) as server:
            c = await _connect(server)
        # memory_server cancelled its nursery on exit: the session was
        # cancelled while open and must have said goodbye.
        _, op, payload = await c.read_frame()
        assert op == OP_CLOSE
        assert payload[:2] == (1001).to_bytes(2, "big")
    assert seen.closed == [(1, 1001)]
