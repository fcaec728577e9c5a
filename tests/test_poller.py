"""The readiness poller (server/_poller.py): it really serves connections
inline where the platform has it, the portable path behaves the same, a
flooding client does not starve another one, and the task model's
guarantees hold for work done inline (errors, cancellation, on_close)."""

from __future__ import annotations

import os
import select
import socket

import pytest
import trio
import trio.testing

import wsnest
from serverutil import TIMEOUT, RawClient, echo_handler, echo_ok, running_server
from wire import OP_BINARY, OP_PING, OP_TEXT, client_frame, close_frame
from wsnest.server._poller import WRITE_LATER, Poller

HAS_POLLER = hasattr(select, "epoll")


def _poller_on(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    if on:
        monkeypatch.delenv("WSNEST_NO_POLLER", raising=False)
    else:
        monkeypatch.setenv("WSNEST_NO_POLLER", "1")


@pytest.mark.parametrize("on", [True, False], ids=["poller", "portable"])
async def test_echo_and_http_on_both_paths(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    _poller_on(monkeypatch, on)
    handlers = [
        echo_handler("/ws"),
        wsnest.handler("/hi", lambda req: {"status": 200, "headers": {"X-A": "b"}, "body": "hello"}),
    ]
    async with running_server(handlers) as (server, url):
        with trio.fail_after(TIMEOUT):
            # A lone connection waits in its own task (the poller would only
            # add a system call); with another one open, the next park.
            idle = await RawClient.connect(url)
            await idle.handshake("/ws")
            await echo_ok(url)
            c = await RawClient.connect(url)
            for _ in range(3):  # keep-alive: answered inline once parked
                await c.send(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n")
                resp = await c.read_head()
                assert (resp.status, resp.header("X-A"), resp.body) == (200, "b", b"hello")
            await c.aclose()
            await idle.aclose()
        stats = server.stats()
    served = stats["poller_reads"]
    if on and HAS_POLLER:
        assert server.poller is None  # closed with the server
        assert served >= 3  # the echo and the requests were read by the poller
    else:
        assert served == 0 and stats["poller_wakeups"] == 0


async def test_flooding_client_does_not_starve_a_round_trip_client() -> None:
    # One client streams 64 KiB messages as fast as the server takes them
    # (never pausing); another does 50 round trips meanwhile. Bounded work
    # per wake-up is what lets the second one through.
    sunk = [0]

    def sink(ws: wsnest.WebSocket, data: bytes) -> None:
        sunk[0] += len(data)

    handlers = [echo_handler("/ws"), wsnest.handler_ws("/sink", sink, textframes=None)]
    async with running_server(handlers) as (_, url):
        with trio.fail_after(TIMEOUT):
            flooder = await RawClient.connect(url)
            await flooder.handshake("/sink")
            pinger = await RawClient.connect(url)
            await pinger.handshake("/ws")
            done = trio.Event()
            during: list[int] = []
            chunk = client_frame(OP_BINARY, b"f" * 65536) * 8

            async def flood() -> None:
                while not done.is_set():
                    await flooder.send(chunk)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                while sunk[0] < 4 * len(chunk):  # the flood is under way
                    await trio.sleep(0.001)
                for i in range(50):
                    before = sunk[0]
                    await pinger.send(client_frame(OP_TEXT, b"ping %d" % i))
                    assert await pinger.read_message() == (OP_TEXT, b"ping %d" % i)
                    during.append(sunk[0] - before)
                done.set()
            # The flooder was being served while the round trips went on.
            assert sum(during) > 0
            await pinger.send(close_frame(1000))
            assert await pinger.read_close() == (1000, "")
            await flooder.aclose()


class _Stop(BaseException):
    pass


@pytest.mark.parametrize("on", [True, False], ids=["poller", "portable"])
async def test_base_exception_in_a_callback_reaches_the_nursery(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    # Not an Exception: the server does not swallow it (as KeyboardInterrupt),
    # whether the callback ran inline in the poller or in its own task.
    _poller_on(monkeypatch, on)

    def on_message(ws: wsnest.WebSocket, data: str) -> None:
        raise _Stop

    server = wsnest.http_server("http://127.0.0.1:0", [wsnest.handler_ws("/ws", on_message)])
    with pytest.RaisesGroup(_Stop, flatten_subgroups=True), trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.serve)
            c = await RawClient.connect(url)
            await c.handshake("/ws")
            await c.send(client_frame(OP_TEXT, b"boom"))
            await trio.sleep_forever()


@pytest.mark.parametrize("on", [True, False], ids=["poller", "portable"])
async def test_callback_error_closes_only_its_connection_with_1011(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    _poller_on(monkeypatch, on)
    closed: list[int] = []

    def on_message(ws: wsnest.WebSocket, data: str) -> None:
        if data == "fail":
            raise RuntimeError("boom")
        ws.send(data)

    handler = wsnest.handler_ws("/ws", on_message, on_close=lambda ws: closed.append(ws.close_code), textframes=None)
    async with running_server([handler]) as (_, url):
        with trio.fail_after(TIMEOUT):
            good = await RawClient.connect(url)
            await good.handshake("/ws")
            bad = await RawClient.connect(url)
            await bad.handshake("/ws")
            await bad.send(client_frame(OP_TEXT, b"fail"))
            assert (await bad.read_close())[0] == 1011
            await bad.aclose()
            await good.send(client_frame(OP_TEXT, b"still here"))
            assert await good.read_message() == (OP_TEXT, b"still here")
            await good.send(close_frame(1000))
            assert await good.read_close() == (1000, "")
            await good.aclose()
            while len(closed) < 2:
                await trio.sleep(0.001)
    assert sorted(closed) == [1000, 1011]  # on_close once each


@pytest.mark.parametrize("on", [True, False], ids=["poller", "portable"])
async def test_parked_connections_end_with_1001_on_shutdown(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    _poller_on(monkeypatch, on)
    closes: list[int] = []
    handler = wsnest.handler_ws(
        "/ws", lambda ws, d: ws.send(d), on_close=lambda ws: closes.append(ws.close_code), textframes=None
    )
    server = wsnest.http_server("http://127.0.0.1:0", [handler])
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        with trio.fail_after(TIMEOUT):
            clients = []
            for _ in range(3):
                c = await RawClient.connect(url)
                await c.handshake("/ws")
                await c.send(client_frame(OP_TEXT, b"x"))
                assert await c.read_message() == (OP_TEXT, b"x")
                clients.append(c)

            async def answer(c: RawClient) -> None:
                assert (await c.read_close())[0] == 1001
                await c.send(close_frame(1001))

            async with trio.open_nursery() as inner:
                for c in clients:
                    inner.start_soon(answer, c)
                await server.aclose()
    assert closes == [1001, 1001, 1001]


async def test_keepalive_ping_after_silence_on_a_parked_connection() -> None:
    # With ping_interval, a connection served inline still pings after
    # that much silence, and traffic pushes the ping back.
    async with running_server([echo_handler("/ws")], ping_interval=0.2, ping_timeout=5.0) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.handshake("/ws")
            await c.send(client_frame(OP_TEXT, b"a"))
            assert await c.read_message() == (OP_TEXT, b"a")
            _, opcode, _ = await c.read_frame()
            assert opcode == OP_PING  # a ping, after the silence
            await c.send(close_frame(1000))
            assert (await c.read_close())[0] == 1000


async def test_a_lone_connection_waits_in_its_task(monkeypatch: pytest.MonkeyPatch) -> None:
    # One connection at a time: served by its own task, the same step.
    monkeypatch.delenv("WSNEST_POLLER_ALWAYS", raising=False)
    async with running_server([echo_handler("/ws")]) as (server, url):
        with trio.fail_after(TIMEOUT):
            for _ in range(3):
                await echo_ok(url)
        assert server.stats()["poller_reads"] == 0


@pytest.mark.parametrize("on", [True, False], ids=["poller", "portable"])
@pytest.mark.parametrize("kind", ["ws", "ws-async", "http"])
async def test_last_bytes_and_the_end_in_one_edge(monkeypatch: pytest.MonkeyPatch, on: bool, kind: str) -> None:
    # The peer sends its last bytes and half-closes at once, so a parked
    # socket gets a single edge for both: the step that reads the bytes
    # must not leave the end unread until a timeout (keepalive is 60 s).
    _poller_on(monkeypatch, on)
    closed = trio.Event()
    codes: list[int] = []

    def on_close(ws: wsnest.WebSocket) -> None:
        codes.append(ws.close_code)
        closed.set()

    got: list[str] = []

    def on_message_plain(ws: wsnest.WebSocket, data: str) -> None:
        got.append(data)
        ws.send(data)

    async def on_message_async(ws: wsnest.WebSocket, data: str) -> None:
        got.append(data)
        await ws.send_wait(data)  # may find the connection closed (7): the end raced it

    on_message = on_message_async if kind == "ws-async" else on_message_plain
    handlers = [
        wsnest.handler_ws("/ws", on_message, on_close=on_close, textframes=None),
        wsnest.handler("/hi", lambda req: {"status": 200, "body": "hello"}),
    ]
    async with running_server(handlers, keepalive_timeout=60) as (_, url):
        with trio.fail_after(TIMEOUT):
            idle = await RawClient.connect(url)  # with it open, the next one parks
            await idle.handshake("/ws")
            c = await RawClient.connect(url)
            if kind == "http":
                last = b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n"
            else:
                await c.handshake("/ws")
                last = client_frame(OP_TEXT, b"last")
            assert isinstance(c.stream, trio.SocketStream)
            sock = c.stream.socket
            os.write(sock.fileno(), last)  # no await between the two
            sock.shutdown(socket.SHUT_WR)
            if kind == "http":
                resp = await c.read_head()
                assert (resp.status, resp.body) == (200, b"hello")
                assert await c.read_until_eof() == b""
            else:
                if kind == "ws":  # answered inline, before the end is read
                    assert await c.read_message() == (OP_TEXT, b"last")
                await closed.wait()
                assert (got, codes) == (["last"], [1006])
            await c.aclose()
            await idle.aclose()


@pytest.mark.parametrize("on", [True, False], ids=["poller", "portable"])
async def test_async_on_message_queue_bound_holds_when_served_inline(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    # Fifty messages in one write to an async on_message stuck on the first:
    # a step queues no more than max_queue (the rest waits as bytes for the
    # reader task); once the application goes on, every message is
    # answered, in order.
    _poller_on(monkeypatch, on)
    release = trio.Event()
    entered = trio.Event()
    stuck: list[wsnest.WebSocket] = []

    async def on_message(ws: wsnest.WebSocket, data: str) -> None:
        if not entered.is_set():
            stuck.append(ws)
            entered.set()
            await release.wait()
        await ws.send_wait(data)

    handler = wsnest.handler_ws("/ws", on_message, textframes=None, max_queue=2)
    async with running_server([handler]) as (server, url):
        with trio.fail_after(TIMEOUT):
            idle = await RawClient.connect(url)  # with it open, the next one parks
            await idle.handshake("/ws")
            c = await RawClient.connect(url)
            await c.handshake("/ws")
            await c.send(client_frame(OP_TEXT, b"m0"))
            await entered.wait()
            await c.send(b"".join(client_frame(OP_TEXT, b"m%d" % i) for i in range(1, 50)))
            await trio.testing.wait_all_tasks_blocked()  # the server read all it would
            queue = stuck[0]._queue  # the bound under test
            assert queue is not None and len(queue) == 2, queue
            release.set()
            got = [await c.read_message() for _ in range(50)]
            assert got == [(OP_TEXT, b"m%d" % i) for i in range(50)]
            await c.aclose()
            await idle.aclose()
        stats = server.stats()
    if on and HAS_POLLER:
        assert stats["poller_reads"] >= 2  # the messages were read by the poller


class _Answering:
    """A parkable owner that answers each read at the end of the round."""

    def __init__(self, name: str, log: list[str], wake_on_write: object = None) -> None:
        self.name = name
        self.log = log
        self.wake_on_write = wake_on_write

    def poll_step(self, sock: socket.socket) -> object:
        self.data = sock.recv(100)
        self.log.append(f"step {self.name}")
        return WRITE_LATER

    def write_step(self, sock: socket.socket) -> object:
        self.log.append(f"write {self.name}")
        sock.send(self.data.upper())
        return self.wake_on_write


@pytest.mark.skipif(not HAS_POLLER, reason="the readiness poller needs epoll")
async def test_poller_writes_the_answers_of_a_round_after_its_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two parked sockets ready in one round: both are read first, then both
    # answered; a write step that returns a value wakes its task with it.
    monkeypatch.setenv("WSNEST_POLLER_ALWAYS", "1")  # the first one parks too
    log: list[str] = []
    poller = Poller()
    pairs = [socket.socketpair() for _ in range(2)]
    for ours, _ in pairs:
        ours.setblocking(False)
    owners = [_Answering("a", log), _Answering("b", log, wake_on_write=-1)]
    woken: list[object] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)

            async def park(i: int) -> None:
                ours = pairs[i][0]
                woken.append(await poller.park(owners[i], ours, ours.fileno()))

            nursery.start_soon(park, 0)
            nursery.start_soon(park, 1)
            await trio.testing.wait_all_tasks_blocked()
            for _, theirs in pairs:  # both ready before the poller runs again
                theirs.send(b"hi")
            with trio.fail_after(TIMEOUT):
                assert await trio.to_thread.run_sync(pairs[0][1].recv, 100) == b"HI"
                assert await trio.to_thread.run_sync(pairs[1][1].recv, 100) == b"HI"
                while not woken:
                    await trio.testing.wait_all_tasks_blocked()
            assert sorted(log[:2]) == ["step a", "step b"]
            assert sorted(log[2:]) == ["write a", "write b"]
            assert woken == [-1]  # b's task; a's stays parked
            nursery.cancel_scope.cancel()
    finally:
        poller.close()
        for ours, theirs in pairs:
            ours.close()
            theirs.close()


@pytest.mark.parametrize("on", [True, False], ids=["poller", "portable"])
async def test_slow_heads_are_dropped_on_time_while_parked(monkeypatch: pytest.MonkeyPatch, on: bool) -> None:
    # The reaper ends a parked connection past handshake_timeout by waking
    # its task (no cancel); the portable path cancels. Either way: dropped,
    # never answered, and a client beside them is still served.
    _poller_on(monkeypatch, on)
    handlers = [wsnest.handler("/hi", lambda req: {"status": 200, "body": "hello"})]
    async with running_server(handlers, handshake_timeout=0.5) as (server, url):
        with trio.fail_after(TIMEOUT):
            ok = await RawClient.connect(url)
            await ok.send(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await ok.read_head()).status == 200
            slow = []
            for i in range(3):
                t0 = trio.current_time()  # the server's deadline starts later, at its accept
                c = await RawClient.connect(url)
                await c.send(b"GET /hi HTTP/1.1\r\nHost: x\r\nX-" + b"a" * i)  # a head never finished
                slow.append((t0, c))
            ages = []
            for t0, c in slow:
                assert await c.read_until_eof() == b""  # dropped, nothing answered
                ages.append(trio.current_time() - t0)
            await ok.send(b"GET /hi HTTP/1.1\r\nHost: x\r\n\r\n")  # its keep-alive deadline is 5 s
            assert (await ok.read_head()).body == b"hello"
            await ok.aclose()
        stats = server.stats()
    # handshake_timeout counts from the accept (the server's clock is this
    # process's trio clock), checked every 1/8 of it; read in turn, so a
    # later connection's age includes the wait for the ones before it.
    assert all(0.5 <= age <= 0.5 + 0.5 / 8 + 1.0 for age in ages), ages
    if on and HAS_POLLER:
        assert stats["poller_wakeups"] >= 3  # the reaper woke the parked tasks


@pytest.mark.skipif(not HAS_POLLER, reason="epoll only (Linux)")
async def test_wake_resumes_a_parked_task_with_the_value_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WSNEST_POLLER_ALWAYS", "1")  # park even a lone socket
    poller = Poller()

    class Owner:
        def poll_step(self, sock: socket.socket) -> object:
            raise AssertionError("no data is sent: never stepped")

        def write_step(self, sock: socket.socket) -> object:
            raise AssertionError("never stepped")

    a, b = socket.socketpair()
    a.setblocking(False)
    got: list[object] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(poller.run)

            async def parked() -> None:
                got.append(await poller.park(Owner(), a, a.fileno()))

            nursery.start_soon(parked)
            await trio.testing.wait_all_tasks_blocked()
            assert poller.wake(a.fileno(), "expired")
            await trio.testing.wait_all_tasks_blocked()
            assert got == ["expired"]
            assert not poller.wake(a.fileno(), "again")  # nothing parked now
            assert not poller.wake(b.fileno(), "never registered")
            nursery.cancel_scope.cancel()
    finally:
        poller.close()
        a.close()
        b.close()
