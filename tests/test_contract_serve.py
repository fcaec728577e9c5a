"""The public ways in: ``HttpServer.serve_connection`` (a given trio stream
or connected socket, with or without a listener), and the handler contract
(``Handler.handle`` with the ``ServerContext`` it gets)."""

from __future__ import annotations

import functools
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import wsnest
from serverutil import OP_TEXT, TIMEOUT, RawClient, client_frame, close_frame, echo_handler, running_server
from wsnest.server import Responder, ServerContext, Session


@asynccontextmanager
async def unlistening_server(handlers: Any, **limits: Any) -> AsyncIterator[tuple[wsnest.HttpServer, trio.Nursery]]:
    """A server serving with no listener, and a nursery to serve connections in."""
    server = wsnest.http_server("http://127.0.0.1:0", handlers, **limits)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve, listen=False))
        try:
            yield server, nursery
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(TIMEOUT):
                await server.aclose()


def socket_pair() -> tuple[socket.socket, RawClient]:
    """A connected pair: the server's stdlib socket and a raw client on the other end."""
    ours, theirs = socket.socketpair()
    return ours, RawClient(trio.SocketStream(trio.socket.from_stdlib_socket(theirs)))


def memory_pair() -> tuple[trio.abc.Stream, RawClient]:
    client_end, server_end = trio.testing.memory_stream_pair()
    return server_end, RawClient(client_end)


HANDLERS = [echo_handler("/ws"), wsnest.handler_inline("/hello", b"hi there", "text/plain")]


async def http_and_echo(server: wsnest.HttpServer, nursery: trio.Nursery, make: Any) -> None:
    """One HTTP request (kept alive, then a second) and a WebSocket echo, each
    over a connection made by ``make()`` and served by ``serve_connection``."""
    with trio.fail_after(TIMEOUT):
        stream, client = make()
        nursery.start_soon(server.serve_connection, stream, ("10.1.2.3", 4567))
        for _ in range(2):
            await client.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = await client.read_head()
            assert (resp.status, resp.body) == (200, b"hi there")
        await client.aclose()

        stream, client = make()
        nursery.start_soon(server.serve_connection, stream)
        await client.handshake("/ws")
        await client.send(client_frame(OP_TEXT, "echo me"))
        assert await client.read_message() == (OP_TEXT, b"echo me")
        await client.send(close_frame(1000))
        assert await client.read_close() == (1000, "")
        assert await client.read_until_eof() == b""  # the server closed its end


async def test_serve_connection_memory_stream() -> None:
    async with unlistening_server(HANDLERS) as (server, nursery):
        await http_and_echo(server, nursery, memory_pair)


async def test_serve_connection_socket_pair() -> None:
    async with unlistening_server(HANDLERS) as (server, nursery):
        await http_and_echo(server, nursery, socket_pair)


async def test_serve_connection_beside_the_listener() -> None:
    async with running_server(HANDLERS) as (server, url):
        async with trio.open_nursery() as nursery:
            await http_and_echo(server, nursery, memory_pair)
        # The listener still serves.
        client = await RawClient.connect(url)
        await client.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await client.read_head()).body == b"hi there"
        await client.aclose()


async def test_client_address_reaches_the_request() -> None:
    seen: list[Any] = []

    def record(req: wsnest.Request) -> dict[str, Any]:
        seen.append(req.client)
        return {"body": "ok"}

    async with unlistening_server([wsnest.handler("/who", record)]) as (server, nursery):
        with trio.fail_after(TIMEOUT):
            stream, client = memory_pair()
            nursery.start_soon(server.serve_connection, stream, ("10.9.8.7", 1234))
            await client.send(b"GET /who HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.read_head()).status == 200
    assert seen == [("10.9.8.7", 1234)]


async def test_stopping_the_server_closes_served_websockets_1001() -> None:
    server = wsnest.http_server("http://127.0.0.1:0", HANDLERS)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve, listen=False))
        stream, client = memory_pair()
        nursery.start_soon(server.serve_connection, stream)
        with trio.fail_after(TIMEOUT):
            await client.handshake("/ws")
            nursery.start_soon(server.aclose)
            assert await client.read_close() == (1001, "server shutting down")
            await client.send(close_frame(1001))
            assert await client.read_until_eof() == b""
    assert server.state == "closed"


async def test_stopping_the_server_drops_served_http_connections() -> None:
    # An idle keep-alive connection served through serve_connection (outside
    # the server's nursery) is dropped by the shutdown, as accepted ones are.
    server = wsnest.http_server("http://127.0.0.1:0", HANDLERS, keepalive_timeout=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve, listen=False))
        stream, client = memory_pair()
        nursery.start_soon(server.serve_connection, stream)
        with trio.fail_after(TIMEOUT):
            await client.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.read_head()).status == 200
            await server.aclose()
            assert await client.read_until_eof() == b""


async def test_serve_connection_needs_a_serving_server() -> None:
    server = wsnest.http_server("http://127.0.0.1:0", HANDLERS)
    stream, _ = memory_pair()
    with pytest.raises(RuntimeError, match="cannot serve a connection, it is not started"):
        await server.serve_connection(stream)


async def test_serve_connection_rejects_other_objects() -> None:
    async with unlistening_server(HANDLERS) as (server, _):
        with pytest.raises(TypeError, match=r"stream: expected a trio Stream or a socket\.socket, got bytes"):
            await server.serve_connection(b"nope")  # type: ignore[arg-type]


# -- the handler contract ----------------------------------------------------------


class CountingHandler(wsnest.Handler):
    """A user-written handler: the contract is public and typed."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def handle(self, ctx: ServerContext, conn: Responder, req: wsnest.Request, tail: bytes) -> Session | None:
        body = f"id {ctx.next_id()} limit {ctx.limits_for(self).max_message_size}".encode()
        await conn.respond(req, 200, [("Content-Type", "text/plain")], body)
        return None


class Bare(wsnest.Handler):
    def __init__(self, path: str) -> None:
        self.path = path


async def test_a_custom_handler_uses_the_context() -> None:
    async with running_server([CountingHandler("/count"), Bare("/bare")], max_message_size=1234) as (_, url):
        client = await RawClient.connect(url)
        with trio.fail_after(TIMEOUT):
            for expected in (b"id 1 limit 1234", b"id 2 limit 1234"):
                await client.send(b"GET /count HTTP/1.1\r\nHost: x\r\n\r\n")
                assert (await client.read_head()).body == expected
            # The base class answers 404 by default.
            await client.send(b"GET /bare HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = await client.read_head()
            assert (resp.status, resp.body) == (404, b"Not Found\n")
        await client.aclose()


# -- responses built right the first time ------------------------------------------


async def test_http10_keep_alive_file_response_says_keep_alive(tmp_path: Path) -> None:
    # A large file is sent head first, then in chunks: its head must say
    # keep-alive to an HTTP/1.0 client as a small response does, or the
    # client waits for a close that never comes.
    big = bytes(range(256)) * 400  # 100 KiB: over the size sent in one piece
    (tmp_path / "f.bin").write_bytes(big)
    handlers = [wsnest.handler_file("/f", tmp_path / "f.bin"), wsnest.handler_inline("/i", b"inline")]
    async with running_server(handlers) as (_, url):
        client = await RawClient.connect(url)
        with trio.fail_after(TIMEOUT):
            for path, body in (("/i", b"inline"), ("/f", big), ("/i", b"inline")):
                await client.send(f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode())
                resp = await client.read_head()
                assert (resp.body, resp.header("connection")) == (body, "keep-alive"), resp
                assert resp.headers.count(("Connection", "keep-alive")) == 1
        await client.aclose()


async def test_http10_stream_has_no_content_length() -> None:
    def start(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.send("a")
        conn.send("b")
        conn.close()

    async with running_server([wsnest.handler_stream("/s", start)]) as (_, url):
        client = await RawClient.connect(url)
        with trio.fail_after(TIMEOUT):
            await client.send(b"GET /s HTTP/1.0\r\n\r\n")
            resp = await client.read_head(body=False)
            assert resp.header("content-length") is None
            assert resp.header("connection") == "close"
            assert await client.read_until_eof() == b"ab"
        await client.aclose()
