"""Finished connections leave no reference cycles behind.

With thousands of connections coming and going (slowloris churn, short
HTTP requests), every object a finished connection leaves in a cycle waits
for a full garbage collection, and a full collection walks every object of
every open connection (pauses of hundreds of milliseconds at 10,000
connections, see docs/reliability.md). So a connection's objects must be
freed by reference counting alone: with the collector disabled, serving
and ending connections must leave nothing for ``gc.collect()`` to find.
"""

from __future__ import annotations

import collections
import gc
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import trio
import trio.testing

import wsnest
from serverutil import TIMEOUT, host_port, running_server
from wire import MASK, client_frame, close_frame, upgrade_request

N = 20

HANDLERS = [
    wsnest.handler_ws("/ws", lambda ws, msg: ws.send(msg)),
    wsnest.handler("/h", lambda req: {"status": 200, "body": "hi"}),
]


@contextmanager
def collector_off() -> Iterator[list[object]]:
    """Disable the collector for the block; afterwards the list holds
    whatever a collection found unreachable (in cycles)."""
    found: list[object] = []
    gc.collect()
    gc.disable()
    try:
        yield found
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            found.extend(gc.garbage)
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
            gc.enable()


async def drain(sock: trio.socket.SocketType) -> None:
    """Read until the server closes its side."""
    while await sock.recv(65536):
        pass


async def http_close(port: int) -> None:
    async with connected(port) as s:
        await s.send(b"GET /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        await drain(s)


async def http_bad(port: int) -> None:
    async with connected(port) as s:
        await s.send(b"GET /h HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        await drain(s)


async def slowloris(port: int) -> None:
    async with connected(port) as s:
        await s.send(b"GET /h HTTP/1.1\r\nHo")
        await drain(s)  # dropped by handshake_timeout


async def ws_closed(port: int) -> None:
    async with connected(port) as s:
        await s.send(upgrade_request("/ws"))
        await s.send(client_frame(0x1, b"hello", mask=MASK))
        await s.send(close_frame(1000))
        await drain(s)


async def ws_protocol_error(port: int) -> None:
    async with connected(port) as s:
        await s.send(upgrade_request("/ws"))
        await s.send(client_frame(0x1, b"\xff", mask=MASK))  # invalid UTF-8: 1007
        await drain(s)


class connected:
    """A raw loopback client socket (closed on exit)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock = trio.socket.socket()

    async def __aenter__(self) -> trio.socket.SocketType:
        await self.sock.connect(("127.0.0.1", self.port))
        return self.sock

    async def __aexit__(self, *exc: object) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    "client", [http_close, http_bad, slowloris, ws_closed, ws_protocol_error], ids=lambda f: f.__name__
)
async def test_finished_connections_leave_no_cycles(client) -> None:  # type: ignore[no-untyped-def]
    async with running_server(HANDLERS, handshake_timeout=0.2, close_timeout=0.2) as (_server, url):
        _host, port = host_port(url)
        await client(port)  # warm-up: first-use caches are not per connection
        await trio.testing.wait_all_tasks_blocked()
        with collector_off() as found:
            with trio.fail_after(TIMEOUT):
                async with trio.open_nursery() as nursery:
                    for _ in range(N):
                        nursery.start_soon(client, port)
            await trio.testing.wait_all_tasks_blocked()
        kinds = collections.Counter(type(o).__qualname__ for o in found)
        assert not found, f"{len(found)} objects in cycles after {N} connections: {kinds.most_common(10)}"


async def test_an_idle_websocket_holds_few_tracked_objects() -> None:
    """What an open, idle WebSocket keeps alive on the server, counted in
    objects the garbage collector tracks (each full collection walks all of
    them, for every open connection). The HTTP phase (connection, parser,
    request, its cancel scope, the coroutines that routed the upgrade) must
    be gone once the session runs: 30 objects today (trio's task, wait and
    cancel scope included), 45 when the session ran inside the HTTP
    connection's coroutines. The bound leaves room for other trio versions."""
    n = 50
    opened = trio.Semaphore(0)

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        opened.release()

    handler = wsnest.handler_ws("/ws", lambda ws, msg: ws.send(msg), on_open=on_open)
    async with running_server([handler]) as (_server, url):
        _host, port = host_port(url)
        socks = [trio.socket.socket() for _ in range(n)]
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        before = len(gc.get_objects())
        for s in socks:
            await s.connect(("127.0.0.1", port))
            await s.send(upgrade_request("/ws"))
        with trio.fail_after(TIMEOUT):
            for _ in range(n):
                await opened.acquire()
            for s in socks:  # the 101 arrived: the session is running
                assert (await s.recv(4096)).startswith(b"HTTP/1.1 101 ")
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        per_connection = (len(gc.get_objects()) - before) / n
        for s in socks:
            s.close()
    assert per_connection <= 36, f"{per_connection:.1f} tracked objects per idle WebSocket"
