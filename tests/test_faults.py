"""Fault injection at unit-test scale (the long version is ``bench/soak.py``).

Every case ends with the invariants of decisions 5, 7 and 10:

- ``on_close`` ran exactly once for every connection whose ``on_open`` ran;
- the server still serves a fresh client, and no connection task is left
  behind (the server nursery is back to the service tasks it had when idle);
- frames queued before a close reach a client that keeps reading, in order;
- hostile sizes are refused from the frame header, before buffering.

Synchronisation is by events (on_open / on_close / bytes on the wire) and
``trio.testing.wait_all_tasks_blocked``; there is no sleep.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest
import trio
import trio.testing

import wsnest
import wsnest.core._session as session_module
from serverutil import TIMEOUT, RawClient, Tracker, connect_slow_reader, echo_ok, running_server
from wire import OP_BINARY, OP_CONT, OP_TEXT, client_frame, close_frame, upgrade_request

GiB = 1 << 30


def _echo(ws: wsnest.WebSocket, data: Any) -> None:
    ws.send(data)


def _tracked(t: Tracker, path: str = "/ws", on_message: Callable[..., Any] = _echo, **kw: Any) -> Any:
    return wsnest.handler_ws(path, on_message, on_open=t.on_open, on_close=t.on_close, textframes=None, **kw)


async def _server_tasks_settle(server: wsnest.HttpServer) -> int:
    """How many tasks the server nursery holds once everything is blocked.

    An idle server holds only its service tasks (accept loop, flusher, ...);
    a connection task or drain task that outlived its connection would show
    up as one more.
    """
    await trio.testing.wait_all_tasks_blocked()
    assert server._nursery is not None
    return len(server._nursery.child_tasks)


# -- RST (SO_LINGER 0) mid-frame and mid-handshake --------------------------------------


async def test_rst_mid_frame_and_mid_handshake_keeps_on_close_balanced() -> None:
    t = Tracker()
    async with running_server([_tracked(t, max_message_size=16 << 20)]) as (server, url):
        with trio.fail_after(TIMEOUT):
            baseline = await _server_tasks_settle(server)

            # Upgraded clients reset in the middle of an incoming frame:
            # half a payload, half a header, or just the first byte.
            mid_frame = [
                client_frame(OP_BINARY, b"x" * 100, length=1000),
                client_frame(OP_BINARY, b"y" * 70_000)[:5],
                client_frame(OP_TEXT, "z")[:1],
                client_frame(OP_TEXT, "abc", fin=False) + client_frame(OP_CONT, b"d" * 50, length=200),
            ]
            upgraded = []
            for partial in mid_frame:
                c = await RawClient.connect(url)
                await c.handshake()
                # One full echo first: the session is running server side.
                await c.send(client_frame(OP_BINARY, b"hello"))
                assert await c.read_message() == (OP_BINARY, b"hello")
                await c.send(partial)
                upgraded.append(c)
            # One more resets while the server is half-way through writing a
            # large echo to it (more than the kernel buffers can take).
            big = await connect_slow_reader(url)
            await big.handshake()
            await big.send(client_frame(OP_BINARY, b"B" * (8 << 20)))
            upgraded.append(big)
            await t.wait_opened(len(upgraded))
            await trio.testing.wait_all_tasks_blocked()

            # Clients reset during the opening handshake: after a few bytes of
            # the request head, after all but its last CRLF, after the head
            # with a truncated first frame behind it.
            request = upgrade_request()
            mid_handshake = [request[:3], request[:-2], request + client_frame(OP_BINARY, b"q" * 10)[:4]]
            half_open = []
            for partial in mid_handshake[:2]:
                c = await RawClient.connect(url)
                await c.send(partial)
                half_open.append(c)
            # Every connection is now being served: the half-open ones wait
            # for the rest of their request head, and the big echo is stuck
            # half-written, waiting for room.
            assert await _server_tasks_settle(server) == baseline + len(upgraded) + len(half_open)
            assert t.opened[-1]._writing

            for c in upgraded + half_open:
                await c.abort()
            await t.wait_closed(len(upgraded))
            assert t.codes() == [1006] * len(upgraded)
            t.assert_balanced()
            # Nothing outlived its connection (handshakes included).
            assert await _server_tasks_settle(server) == baseline

            # The last one resets after the server already sent the 101.
            c = await RawClient.connect(url)
            await c.send(mid_handshake[2])
            assert (await c.read_head()).status == 101
            await t.wait_opened(len(upgraded) + 1)
            await c.abort()
            await t.wait_closed(len(upgraded) + 1)

            await echo_ok(url)
            await t.wait_closed(len(upgraded) + 2)
            t.assert_balanced()
            assert await _server_tasks_settle(server) == baseline


# -- a callback that raises on every 10th message ------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
async def test_callback_raising_on_every_10th_message(is_async: bool, caplog: pytest.LogCaptureFixture) -> None:
    t = Tracker()
    count = 0

    def maybe_raise(ws: wsnest.WebSocket, data: Any) -> None:
        nonlocal count
        count += 1
        if count % 10 == 0:
            raise RuntimeError(f"secret failure {count}")
        ws.send(data)

    async def maybe_raise_async(ws: wsnest.WebSocket, data: Any) -> None:
        maybe_raise(ws, data)

    n_clients, n_messages = 7, 45
    handler = _tracked(t, on_message=maybe_raise_async if is_async else maybe_raise)
    with caplog.at_level(logging.ERROR, logger="wsnest"):
        async with running_server([handler]) as (server, url):
            with trio.fail_after(TIMEOUT):
                baseline = await _server_tasks_settle(server)
                clients = [await RawClient.connect(url) for _ in range(n_clients)]
                for c in clients:
                    await c.handshake()
                await t.wait_opened(n_clients)
                alive = list(range(n_clients))
                failed: list[int] = []
                echoed = [0] * n_clients
                turn = 0
                for seq in range(1, n_messages + 1):
                    index = alive[turn % len(alive)]
                    c = clients[index]
                    payload = f"message {seq} from client {index}".encode()
                    await c.send(client_frame(OP_BINARY, payload))
                    if seq % 10 == 0:
                        # This one raised: 1011, no exception text on the wire.
                        assert await c.read_close() == (1011, "")
                        await c.send(close_frame(1011))
                        assert await c.read_until_eof() == b""
                        alive.remove(index)
                        failed.append(index)
                    else:
                        assert await c.read_message() == (OP_BINARY, payload)
                        echoed[index] += 1
                        turn += 1
                assert len(failed) == n_messages // 10
                # The survivors are untouched: they still echo and close cleanly.
                for index in alive:
                    c = clients[index]
                    await c.send(client_frame(OP_TEXT, "still here"))
                    assert await c.read_message() == (OP_TEXT, b"still here")
                    await c.send(close_frame(1000))
                    assert await c.read_close() == (1000, "")
                for c in clients:
                    await c.aclose()
                await t.wait_closed(n_clients)
                t.assert_balanced()
                assert t.codes() == sorted([1011] * len(failed) + [1000] * len(alive))
                assert sum(echoed) == n_messages - len(failed)
                assert await _server_tasks_settle(server) == baseline
            await echo_ok(url)
    tracebacks = [r for r in caplog.records if r.exc_info and "secret failure" in str(r.exc_info[1])]
    assert len(tracebacks) == len(failed)


# -- server shutdown with messages in flight ---------------------------------------------------


async def test_aclose_delivers_every_frame_queued_before_the_1001() -> None:
    t = Tracker()
    # 9.8 MB per connection, 6.5 MB of it in the first batch: more than the
    # kernel can buffer (tcp_wmem allows 4 MiB at most by default).
    frames, size = 1200, 8 * 1024
    n_clients = 3

    def frame_payload(seq: int) -> bytes:
        return struct.pack("!I", seq) + bytes([seq & 0xFF]) * (size - 4)

    handler = _tracked(t, send_high_water=64 << 20)
    async with running_server([handler]) as (server, url):
        with trio.fail_after(TIMEOUT):
            # Small receive buffers, so that the kernel cannot absorb what is
            # queued: the server has most of it in hand when it shuts down.
            clients = [await connect_slow_reader(url) for _ in range(n_clients)]
            for c in clients:
                await c.handshake()
            await t.wait_opened(n_clients)
            # First batch: the socket buffers fill up and a drain task per
            # connection holds the rest, waiting for room.
            first = 2 * frames // 3
            for ws in t.opened:
                for seq in range(first):
                    assert ws.send(frame_payload(seq)) == 0
            await trio.testing.wait_all_tasks_blocked()
            assert all(ws._writing for ws in t.opened), "the kernel took the whole first batch"
            # Second batch: queued behind what the drain task is writing.
            for ws in t.opened:
                for seq in range(first, frames):
                    assert ws.send(frame_payload(seq)) == 0
                assert ws._buffered() - ws._inflight >= (frames - first) * size
            received: list[list[int]] = [[] for _ in clients]
            close_codes: list[tuple[int | None, str]] = [(None, "")] * n_clients

            async def read_all(i: int, c: RawClient) -> None:
                while True:
                    fin, op, payload = await c.read_frame()
                    if op == 0x8:
                        close_codes[i] = (struct.unpack("!H", payload[:2])[0], payload[2:].decode())
                        await c.send(close_frame(1001))
                        await c.read_until_eof()
                        return
                    assert fin and op == OP_BINARY
                    seq = struct.unpack("!I", payload[:4])[0]
                    assert payload == frame_payload(seq)
                    received[i].append(seq)

            async with trio.open_nursery() as nursery:
                # Shutdown starts while every connection still has most of
                # its frames queued; the clients read concurrently.
                nursery.start_soon(server.aclose)
                for i, c in enumerate(clients):
                    nursery.start_soon(read_all, i, c)
            for c in clients:
                await c.aclose()
    assert server.state == "closed"
    for i in range(n_clients):
        assert received[i] == list(range(frames)), f"client {i} got {len(received[i])} of {frames} frames"
        assert close_codes[i] == (1001, "server shutting down")
    t.assert_balanced()
    assert t.codes() == [1001] * n_clients


# -- many tiny fragments -----------------------------------------------------------------------


@pytest.fixture
def any_core(core: ModuleType, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """Serve with each WebSocket core in turn (compiled, then pure)."""
    monkeypatch.setattr(session_module, "FrameParser", core.FrameParser)
    return core


def _one_byte_fragments(count: int, opcode: int = OP_BINARY) -> bytes:
    """One message as ``count`` frames of a single payload byte each."""
    first = client_frame(opcode, b"a", fin=False)
    middle = client_frame(OP_CONT, b"b", fin=False)
    last = client_frame(OP_CONT, b"c")
    return first + middle * (count - 2) + last


@pytest.mark.parametrize("opcode", [OP_BINARY, OP_TEXT], ids=["binary", "text"])
async def test_100000_one_byte_fragments_under_the_limit_are_delivered(any_core: ModuleType, opcode: int) -> None:
    t = Tracker()
    count = 100_000
    async with running_server([_tracked(t)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.handshake()
            await c.send(_one_byte_fragments(count, opcode))
            op, payload = await c.read_message()
            assert (op, len(payload)) == (opcode, count)
            assert payload == b"a" + b"b" * (count - 2) + b"c"
            await c.send(close_frame(1000))
            assert await c.read_close() == (1000, "")
            await c.aclose()
            await t.wait_closed(1)
    t.assert_balanced()


async def test_100000_one_byte_fragments_over_the_limit_get_1009(any_core: ModuleType) -> None:
    t = Tracker()
    delivered: list[int] = []
    limit = 50_000

    def record(ws: wsnest.WebSocket, data: bytes) -> None:
        delivered.append(len(data))

    handlers = [_tracked(t, "/small", on_message=record, max_message_size=limit), _tracked(t)]
    async with running_server(handlers) as (server, url):
        with trio.fail_after(TIMEOUT):
            baseline = await _server_tasks_settle(server)
            c = await RawClient.connect(url)
            await c.handshake("/small")
            result: list[tuple[int | None, str]] = []

            async def read() -> None:
                result.append(await c.read_close())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                # The server fails at fragment limit + 1 and discards the rest
                # until we hang up, so this send completes.
                await c.send(_one_byte_fragments(100_000))
            assert result[0][0] == 1009
            await c.aclose()
            await t.wait_closed(1)
            assert delivered == []
            await echo_ok(url)
            await t.wait_closed(2)
            assert await _server_tasks_settle(server) == baseline
    t.assert_balanced()


# -- a 1 GiB declared length -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["binary", "text", "continuation"])
async def test_1gib_declared_length_gets_1009_from_the_header(any_core: ModuleType, kind: str) -> None:
    t = Tracker()
    async with running_server([_tracked(t)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.handshake()
            if kind == "continuation":
                await c.send(client_frame(OP_BINARY, b"first part", fin=False))
                header = client_frame(OP_CONT, b"", length=GiB)
            else:
                header = client_frame(OP_BINARY if kind == "binary" else OP_TEXT, b"", length=GiB)
            assert len(header) == 14  # 2 + 8-byte length + mask: not one payload byte
            await c.send(header)
            # The close comes while the peer has sent nothing but the header.
            code, _ = await c.read_close()
            assert code == 1009
            await c.send(close_frame(1009))
            await c.read_until_eof()
            await c.aclose()
            await t.wait_closed(1)
            await echo_ok(url)
    t.assert_balanced()
    assert t.codes() == [1000, 1009]


# -- slow readers during a broadcast -----------------------------------------------------------


async def test_broadcast_skips_slow_readers_and_fast_ones_get_everything() -> None:
    t = Tracker()
    high_water = 64 * 1024
    n_slow, n_fast = 3, 3
    size = 16 * 1024
    handler = _tracked(t, send_high_water=high_water)
    async with running_server([handler]) as (server, url):
        with trio.fail_after(TIMEOUT):
            baseline = await _server_tasks_settle(server)
            slow = [await connect_slow_reader(url) for _ in range(n_slow)]
            for c in slow:
                await c.handshake()
            await t.wait_opened(n_slow)
            fast = [await RawClient.connect(url) for _ in range(n_fast)]
            for c in fast:
                await c.handshake()
            await t.wait_opened(n_slow + n_fast)
            slow_ws = t.opened[:n_slow]
            conns = list(t.opened)

            counts: list[int] = []
            seq = 0
            # Broadcast until every slow reader is over its high-water mark,
            # then some more; the fast clients read each message before the
            # next one is sent, so they are never behind.
            extra = 20
            while extra:
                payload = struct.pack("!I", seq) + b"m" * (size - 4)
                n = wsnest.broadcast(conns, payload)
                counts.append(n)
                for c in fast:
                    assert await c.read_message() == (OP_BINARY, payload)
                if n == n_fast:
                    extra -= 1
                seq += 1
                assert seq < 10_000, "the slow readers never pushed back"
            assert counts[0] == n_slow + n_fast
            assert min(counts) == n_fast < len(conns)
            # Once refused, ws.send says why: code 8, nothing queued.
            for ws in slow_ws:
                before = ws._buffered()
                assert ws.send(b"late") == wsnest.ErrorCode.AGAIN == 8
                assert ws._buffered() == before
                # Bounded: the mark plus the one message that crossed it.
                assert before <= high_water + size + 14
            for c in fast:
                await c.send(close_frame(1000))
                assert await c.read_close() == (1000, "")
            for c in slow:
                await c.abort()
            await t.wait_closed(n_slow + n_fast)
            assert await _server_tasks_settle(server) == baseline
    t.assert_balanced()


# -- shutdown must not splice the 1001 into a half-written frame --------------------------------


class StalledSocketTransport:
    """A stand-in for ``SocketTransport`` whose kernel send buffer takes
    ``budget`` more bytes and then stays full (a peer that stopped reading);
    ``None`` means unlimited. Same contract as the socket transport: partial
    writes happen, and a cancelled ``send_all`` leaves its earlier bytes sent.
    What the peer would receive accumulates in ``wire``."""

    def __init__(self) -> None:
        self.wire = bytearray()
        self.budget: int | None = None
        self.closed = False
        self.send_cancelled = trio.Event()
        self._room = trio.Event()
        self._incoming_send, self._incoming = trio.open_memory_channel[bytes](100)

    def feed(self, data: bytes) -> None:
        self._incoming_send.send_nowait(data)

    def set_budget(self, budget: int | None) -> None:
        self.budget = budget
        self._room.set()
        self._room = trio.Event()

    async def receive_into(self, buf: memoryview) -> int:
        if self.closed:
            return 0
        data = await self._incoming.receive()
        buf[: len(data)] = data
        return len(data)

    def try_send(self, data: bytes | bytearray | memoryview) -> int:
        if self.closed:
            return -1
        n = len(data) if self.budget is None else min(len(data), self.budget)
        self.wire += data[:n]
        if self.budget is not None:
            self.budget -= n
        return n

    async def send_all(self, data: bytes | bytearray | memoryview) -> bool:
        view = memoryview(data)
        try:
            while view:
                if self.closed:
                    return False
                n = self.try_send(view)
                view = view[n:]
                if view:
                    await self._room.wait()
        except trio.Cancelled:
            self.send_cancelled.set()
            raise
        return True

    async def send_all_vec(self, chunks: list[bytes | bytearray | memoryview]) -> bool:
        return await self.send_all(b"".join(chunks))

    def shutdown_write(self) -> None:
        pass

    async def aclose(self) -> None:
        self.closed = True
        self.set_budget(self.budget)

    def peer(self) -> tuple[str, int] | None:
        return ("10.0.0.2", 50000)


async def test_shutdown_never_writes_the_close_frame_into_a_torn_frame(autojump_clock: Any) -> None:
    """A slow reader is mid-way through a frame when ``aclose()`` gives up
    on it: the drain task is cancelled with part of a frame written, and the
    1001 close frame must then not be written after those bytes (the peer
    would parse the close frame as the rest of the torn frame's payload and
    its tail as a bogus frame header). Whatever reaches the peer must be a
    prefix of the frames queued followed by the close frame."""

    t = Tracker()
    handler = _tracked(t, send_high_water=1 << 20)
    async with running_server([handler], close_timeout=1.0) as (server, _url):
        fake = StalledSocketTransport()
        assert server._nursery is not None
        server._nursery.start_soon(server._serve_transport, fake, fake.peer())
        fake.feed(upgrade_request())
        await t.wait_opened(1)
        await trio.testing.wait_all_tasks_blocked()
        assert fake.wire.startswith(b"HTTP/1.1 101 ") and fake.wire.endswith(b"\r\n\r\n")
        del fake.wire[:]
        # The peer's buffer takes 100 more bytes: one and a bit frames of 52.
        fake.set_budget(100)
        ws = t.opened[0]
        frames = [bytes([0x82, 50]) + bytes([i]) * 50 for i in range(10)]
        for i in range(10):
            assert ws.send(bytes([i]) * 50) == 0
        await trio.testing.wait_all_tasks_blocked()
        assert bytes(fake.wire) == b"".join(frames)[:100]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.aclose)
            # Shutdown cancels the stalled drain task; the peer then starts
            # reading again (its buffer has room).
            await fake.send_cancelled.wait()
            fake.set_budget(None)
    assert server.state == "closed"
    close = bytes([0x88, 22]) + struct.pack("!H", 1001) + b"server shutting down"
    expected = b"".join(frames) + close
    wire = bytes(fake.wire)
    assert expected.startswith(wire), (
        f"the peer got {len(wire)} bytes that are not a prefix of the frames then the close frame: "
        f"...{wire[96:]!r} (a torn frame then {len(wire) - 100} more bytes)"
    )
    t.assert_balanced()


async def test_shutdown_is_bounded_with_a_stuck_async_on_close(autojump_clock: Any) -> None:
    """``aclose()`` returns within its bound even if an ``async def
    on_close`` never finishes (as it does for a stuck ``on_message``): the
    callback ran, but shutdown must not wait for it forever."""
    started = trio.Event()

    async def on_close(ws: wsnest.WebSocket) -> None:
        started.set()
        await trio.sleep(1000)  # stuck (virtual time: the test does not wait)

    handler = wsnest.handler_ws("/ws", _echo, on_close=on_close)
    close_timeout = 1.0
    async with running_server([handler], close_timeout=close_timeout) as (server, url):
        c = await RawClient.connect(url)
        await c.handshake()
        t0 = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.aclose)
            assert (await c.read_close())[0] == 1001
            await c.send(close_frame(1001))
            await started.wait()
        elapsed = trio.current_time() - t0
        await c.aclose()
    bound = 2 * close_timeout + 1
    assert elapsed <= bound, f"aclose() took {elapsed:.0f} s (waited for on_close), bound {bound:.0f} s"
