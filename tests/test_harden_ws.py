"""Hardening (issue 11): write deadlines, keepalive while a write waits, the
async ``on_message`` queue bound, pings answered while it is full, a wrapped
``async def`` as ``on_message``, echoes that never meet a full send buffer,
and bounded work between yields.

Real sockets on loopback throughout. Run under both cores (the WebSocket
tests depend on the core: ``WSNEST_NO_EXTENSIONS=1`` selects the pure one).
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

import wsnest
from serverutil import TIMEOUT, RawClient, Tracker, connect_slow_reader, host_port, running_server
from wire import OP_BINARY, OP_CONT, OP_PING, OP_PONG, client_frame, close_frame, new_key, upgrade_request
from wsnest.handlers import _static

MiB = 1 << 20
# Short enough for a quick test, long enough never to fire on a client that
# is reading.
SEND_TIMEOUT = 0.5


def _open_fds_to(path: Path) -> list[str]:
    """This process's descriptors open on ``path`` (Linux /proc)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
        except OSError:
            pass
    return found


# -- item 4: write deadline ----------------------------------------------------


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to list descriptors")
@pytest.mark.parametrize("kind", ["file", "directory"])
async def test_never_reading_client_of_a_big_file_is_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """A client that asks for a large file and never reads is dropped after
    ``send_timeout``, and the served file is closed then (not at exit)."""
    big = tmp_path / "big.bin"
    size = 32 * MiB  # far more than the kernel buffers on both sides hold
    big.write_bytes(bytes(size))
    released = trio.Event()
    real = _static._read_chunks

    async def tracked(path: str, start: int, length: int) -> AsyncGenerator[bytes, None]:
        inner = real(path, start, length)
        try:
            async for chunk in inner:
                yield chunk
        finally:
            await inner.aclose()
            released.set()

    monkeypatch.setattr(_static, "_read_chunks", tracked)
    handler = wsnest.handler_file("/big", big) if kind == "file" else wsnest.handler_directory("/static", tmp_path)
    target = "/big" if kind == "file" else "/static/big.bin"
    async with running_server([handler], send_timeout=SEND_TIMEOUT) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.send(f"GET {target} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await released.wait()  # the server gave up on the stalled write
            assert _open_fds_to(big) == []
            got = await c.read_until_eof()  # what the kernels held, then EOF
            assert got.startswith(b"HTTP/1.1 200 ")
            assert len(got) < size
            await c.aclose()


async def test_never_reading_client_of_a_stream_is_dropped() -> None:
    """A ``handler_stream`` client that stops reading is dropped after
    ``send_timeout``: the stuck async ``on_request`` is cancelled and
    ``on_close`` runs once."""
    closed: list[int] = []
    done = trio.Event()

    async def on_request(conn: Any, req: wsnest.Request) -> None:
        while conn.send(b"x" * 65536) == 0:
            await trio.lowlevel.checkpoint()
        await trio.sleep_forever()  # waits for the client to read: never

    def on_close(conn: Any) -> None:
        closed.append(conn.id)
        done.set()

    handler = wsnest.handler_stream("/events", on_request, on_close)
    async with running_server([handler], send_timeout=SEND_TIMEOUT, send_high_water=16 * MiB) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.send(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            await done.wait()
            await c.aclose()
    assert len(closed) == 1


async def _fill_from_outside(ws: wsnest.WebSocket) -> None:
    """Queue data from outside any callback (a drain task writes it) until
    ``send`` pushes back."""
    while ws.send(b"x" * 65536) == 0:
        await trio.lowlevel.checkpoint()


def _tracked(t: Tracker, on_message: Callable[..., Any], **limits: Any) -> wsnest.WebSocketHandler:
    return wsnest.handler_ws("/ws", on_message, on_open=t.on_open, on_close=t.on_close, **limits)


def _flood_on_message(ws: wsnest.WebSocket, data: bytes) -> None:
    # From the reader's own batch: its flush has to wait for the peer.
    for _ in range(16):
        ws.send(bytes(MiB - 64))


@pytest.mark.parametrize("writer", ["drain-task", "reader"])
async def test_never_reading_ws_client_is_dropped_by_send_timeout(writer: str) -> None:
    """Whether the data waits in a drain task (sent from outside callbacks)
    or in the reader's own flush, a peer that stops reading is dropped after
    ``send_timeout``; ``on_close`` runs exactly once."""
    t = Tracker()
    handler = _tracked(t, _flood_on_message, send_timeout=SEND_TIMEOUT, send_high_water=16 * MiB)
    async with running_server([handler]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.handshake()
            await t.wait_opened(1)
            if writer == "drain-task":
                await _fill_from_outside(t.opened[0])
            else:
                await c.send(client_frame(OP_BINARY, b"go"))
            await t.wait_closed(1)
            assert t.codes() == [1006]
            await c.aclose()
    t.assert_balanced()
    assert len(t.closed) == 1


@pytest.mark.parametrize("wait", ["reader-flush", "high-water"])
async def test_never_reading_ws_client_is_dropped_by_keepalive(wait: str) -> None:
    """With ``ping_interval`` set, a peer that stops reading is dropped once
    the pong deadline passes, even while the reader waits to write: in its
    own flush, or for the drain task after the peer sent more (the
    high-water pause). ``send_timeout`` is far longer than the test."""
    t = Tracker()
    handler = _tracked(
        t,
        _flood_on_message,
        send_timeout=3600,
        ping_interval=0.2,
        ping_timeout=0.3,
        send_high_water=16 * MiB,  # more than the kernels' buffers hold
    )
    async with running_server([handler]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.handshake()
            await t.wait_opened(1)
            if wait == "reader-flush":
                await c.send(client_frame(OP_BINARY, b"go"))
            else:
                await _fill_from_outside(t.opened[0])
                await c.send(client_frame(OP_PING, b"are you there"))
            await t.wait_closed(1)
            await c.aclose()
    t.assert_balanced()
    assert len(t.closed) == 1


# -- items 8 and 12: the async queue ---------------------------------------------


class _Gate:
    """An async ``on_message`` that records what it got and blocks on the
    first message until the test opens the gate."""

    def __init__(self) -> None:
        self.got: list[bytes] = []
        self.entered = trio.Event()
        self.gate = trio.Event()
        self.ws: wsnest.WebSocket | None = None
        self.closed = trio.Event()

    def on_close(self, ws: wsnest.WebSocket) -> None:
        self.closed.set()  # after every queued message was dispatched

    async def on_message(self, ws: wsnest.WebSocket, data: bytes) -> None:
        self.ws = ws
        self.got.append(data)
        self.entered.set()
        await self.gate.wait()


async def _connected(url: str) -> RawClient:
    c = await RawClient.connect(url)
    await c.handshake()
    return c


async def test_async_queue_never_exceeds_max_queue_within_one_read() -> None:
    """200 messages in one write: while ``on_message`` is stuck on the first,
    at most ``max_queue`` wait (not the rest of the read); none is lost."""
    gate = _Gate()
    async with running_server([wsnest.handler_ws("/ws", gate.on_message, max_queue=4)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await _connected(url)
            messages = [b"m%d" % i for i in range(200)]
            await c.send(b"".join(client_frame(OP_BINARY, m) for m in messages))
            await gate.entered.wait()
            await trio.testing.wait_all_tasks_blocked()  # the server read all it would
            assert gate.ws is not None and gate.ws._queue is not None
            assert len(gate.ws._queue) <= 4, len(gate.ws._queue)
            gate.gate.set()
            while len(gate.got) < 200:
                await trio.testing.wait_all_tasks_blocked()
                assert not c.eof
            assert gate.got == messages
            await c.send(close_frame(1000))
            assert await c.read_close() == (1000, "")


async def test_ping_is_answered_while_the_async_queue_is_full() -> None:
    """The promise (README): while the queue is full, reading goes on up to
    the next message, so a ping is answered while ``on_message`` is stuck."""
    gate = _Gate()
    handler = wsnest.handler_ws("/ws", gate.on_message, on_close=gate.on_close, max_queue=2)
    async with running_server([handler]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await _connected(url)
            await c.send(client_frame(OP_BINARY, b"first"))
            await gate.entered.wait()
            await c.send(client_frame(OP_BINARY, b"second") + client_frame(OP_BINARY, b"third"))
            await trio.testing.wait_all_tasks_blocked()
            assert gate.ws is not None and gate.ws._queue is not None and len(gate.ws._queue) == 2  # full
            await c.send(client_frame(OP_PING, b"still there?"))
            assert await c.read_frame() == (True, OP_PONG, b"still there?")
            assert not gate.gate.is_set() and gate.got == [b"first"]  # still stuck
            gate.gate.set()
            await c.send(close_frame(1000))
            assert await c.read_close() == (1000, "")
            await gate.closed.wait()
            assert gate.got == [b"first", b"second", b"third"]


# -- item 11: an async def under a plain decorator ----------------------------------


def _plain_decorator(fn: Callable[..., Awaitable[None]]) -> Callable[..., Any]:
    """Not async-aware: the wrapper is a plain function returning the coroutine."""

    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        return fn(*args)

    return wrapper


async def _uppercased_on_two_connections(url: str, n: int) -> None:
    """``n`` pipelined messages on each of two connections come back
    uppercased, in order (the first connection finds out that the callback
    is async, the second starts async), then a clean close."""
    with trio.fail_after(TIMEOUT):
        for _ in range(2):
            c = await _connected(url)
            await c.send(b"".join(client_frame(OP_BINARY, b"m%d" % i) for i in range(n)))
            for i in range(n):
                assert await c.read_message() == (OP_BINARY, b"M%d" % i)
            await c.send(close_frame(1000))
            assert await c.read_close() == (1000, "")
            await c.aclose()


async def test_wrapped_async_on_message_is_awaited() -> None:
    seen: list[bytes] = []

    @_plain_decorator
    async def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        seen.append(data)
        ws.send(data.upper())

    handler = wsnest.handler_ws("/ws", on_message)
    assert not handler.message_is_async  # it looks plain
    async with running_server([handler]) as (_, url):
        await _uppercased_on_two_connections(url, 5)
    assert seen == [b"m%d" % i for i in range(5)] * 2
    assert handler.message_is_async


async def test_wrapped_async_on_message_that_raises_closes_with_1011(caplog: pytest.LogCaptureFixture) -> None:
    @_plain_decorator
    async def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("boom")

    async with running_server([wsnest.handler_ws("/ws", on_message)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await _connected(url)
            await c.send(client_frame(OP_BINARY, b"x"))
            assert (await c.read_close())[0] == 1011
            await c.aclose()
    assert "on_message callback raised" in caplog.text


class _Later:
    """An awaitable that is not a coroutine: ``__await__`` gives either a
    trio coroutine's iterator (it suspends) or a bare iterator, which has no
    ``send`` (``await`` accepts it; it finishes at once)."""

    def __init__(self, ws: wsnest.WebSocket, data: bytes) -> None:
        self.ws, self.data = ws, data

    def __await__(self) -> Any:
        self.ws.send(self.data.upper())
        if self.data.endswith(b"0"):
            return trio.lowlevel.checkpoint().__await__()
        return iter(())


async def test_on_message_returning_another_kind_of_awaitable_is_awaited() -> None:
    handler = wsnest.handler_ws("/ws", _Later)
    async with running_server([handler]) as (_, url):
        await _uppercased_on_two_connections(url, 12)
    assert handler.message_is_async


# -- item 13: an echo of one read never meets a full send buffer --------------------


async def test_echo_of_a_large_pipelined_read_is_never_refused() -> None:
    """With a small ``send_high_water``, a client that writes ~600 kB of
    small messages at once still gets every echo: the reader writes between
    pieces of a read, so ``send`` never returns 8 inside one batch."""
    codes: list[int] = []

    def echo(ws: wsnest.WebSocket, data: bytes) -> None:
        codes.append(ws.send(data))

    n = 10_000
    async with running_server([wsnest.handler_ws("/ws", echo, send_high_water=64 * 1024)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await _connected(url)
            payload = b"p" * 54
            async with trio.open_nursery() as nursery:
                nursery.start_soon(c.send, client_frame(OP_BINARY, payload) * n)
                for _ in range(n):
                    assert await c.read_message() == (OP_BINARY, payload)
            await c.aclose()
    assert set(codes) == {0} and len(codes) == n


async def test_pipelined_1mib_echoes_with_the_default_high_water() -> None:
    codes: list[int] = []

    def echo(ws: wsnest.WebSocket, data: bytes) -> None:
        codes.append(ws.send(data))

    big = os.urandom(MiB - 16)
    async with running_server([wsnest.handler_ws("/ws", echo)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await _connected(url)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(c.send, client_frame(OP_BINARY, big) * 4)
                for _ in range(4):
                    assert await c.read_message() == (OP_BINARY, big)
            await c.aclose()
    assert codes == [0, 0, 0, 0]


# -- item 15: bounded work between yields ---------------------------------------------


def _attack(url: str, fragments: int, started: threading.Event, done: threading.Event, result: list[int]) -> None:
    """A blocking client that streams one message of ``fragments`` 1-byte
    fragments, then reads its echo."""
    host, port = host_port(url)
    with socket.create_connection((host, port)) as s:
        s.sendall(upgrade_request("/ws", key=new_key()))
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert head.startswith(b"HTTP/1.1 101 ")
        rest = head.split(b"\r\n\r\n", 1)[1]
        zero_mask = b"\x00\x00\x00\x00"
        first = bytes((OP_BINARY, 0x81)) + zero_mask + b"a"
        middle = bytes((OP_CONT, 0x81)) + zero_mask + b"a"
        last = bytes((0x80 | OP_CONT, 0x81)) + zero_mask + b"a"
        s.sendall(first + middle * 1000)
        started.set()
        block = middle * 10_000
        for _ in range((fragments - 1002) // 10_000):
            s.sendall(block)
        s.sendall(middle * ((fragments - 1002) % 10_000) + last)
        # The echo: one frame of `fragments` bytes.
        got = rest
        while len(got) < 10:
            got += s.recv(65536)
        assert got[0] == 0x80 | OP_BINARY and got[1] == 127
        length = int.from_bytes(got[2:10], "big")
        received = len(got) - 10
        while received < length:
            chunk = s.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
        result.append(received)
        done.set()


async def test_innocent_client_is_served_while_an_attacker_streams_1_byte_fragments() -> None:
    """One connection streams a message of 1-byte fragments (costly to parse,
    the pure core most of all); another connection's echoes keep coming
    while the attacker's message is still being parsed."""
    fragments = 8_000_000 if wsnest.CORE == "compiled" else 300_000
    echoes = 10
    started, done = threading.Event(), threading.Event()
    result: list[int] = []
    echo = wsnest.handler_ws("/ws", lambda ws, data: ws.send(data), max_message_size=16 * MiB)
    async with running_server([echo]) as (_, url), trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT * 6):
            nursery.start_soon(trio.to_thread.run_sync, _attack, url, fragments, started, done, result)
            await trio.to_thread.run_sync(started.wait)
            c = await _connected(url)
            for i in range(echoes):
                await c.send(client_frame(OP_BINARY, b"ping %d" % i))
                assert await c.read_message() == (OP_BINARY, b"ping %d" % i)
            assert not done.is_set(), "the attacker's message was parsed before the innocent got its echoes"
            await trio.to_thread.run_sync(done.wait)
            assert result == [fragments]
            await c.aclose()
