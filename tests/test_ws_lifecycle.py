"""Connection lifecycle: callbacks, closing, shutdown, errors, backpressure,
server state and argument checking."""

from __future__ import annotations

import logging
import ssl
from typing import Any

import pytest
import trio
import trio.testing
import websockets

import wsnest
from serverutil import (
    TIMEOUT,
    RawClient,
    Tracker,
    connect_slow_reader,
    echo_handler,
    echo_ok,
    raw_ws,
    run_in_thread,
    running_server,
    sync_connect,
    ws_url,
)
from wire import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, client_frame, close_frame, upgrade_request


def _scripted_on_message(ws: wsnest.WebSocket, data: bytes) -> None:
    if data == b"close-me":
        ws.close(4002, "x")
    elif data == b"raise":
        raise RuntimeError("secret failure detail")
    else:
        ws.send(data)


def _tracked(tracker: Tracker, path: str = "/ws", on_message: Any = _scripted_on_message, **kw: Any) -> Any:
    return wsnest.handler_ws(path, on_message, on_open=tracker.on_open, on_close=tracker.on_close, **kw)


# -- on_open / on_close pairing --------------------------------------------------


async def test_on_close_once_per_on_open_after_mixed_endings() -> None:
    t = Tracker()
    async with running_server([_tracked(t)], close_timeout=30) as (server, url):
        with trio.fail_after(TIMEOUT):
            clients = [await RawClient.connect(url) for _ in range(6)]
            for c in clients:
                await c.handshake()
            await t.wait_opened(6)
            a, b, c, d, e, f = clients
            ids = {ws.id: name for ws, name in zip(t.opened, "abcdef", strict=True)}

            # a: the client closes.
            await a.send(close_frame(1000))
            assert await a.read_close() == (1000, "")
            assert await a.read_until_eof() == b""
            # b: the server closes (from its on_message).
            await b.send(client_frame(OP_BINARY, b"close-me"))
            assert await b.read_close() == (4002, "x")
            await b.send(close_frame(4002))
            await b.read_until_eof()
            # c: a protocol error.
            await c.send(client_frame(OP_TEXT, "x", mask=None))
            assert (await c.read_close())[0] == 1002
            await c.read_until_eof()  # the server sent FIN after its close frame
            await c.aclose()
            # d: the TCP connection is dropped without a close frame.
            await d.abort()
            # e: on_message raises.
            await e.send(client_frame(OP_BINARY, b"raise"))
            assert (await e.read_close())[0] == 1011
            await e.send(close_frame(1011))
            await e.read_until_eof()

            await t.wait_closed(5)
            # f: the server shuts down.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.aclose)
                assert (await f.read_close())[0] == 1001
                await f.send(close_frame(1001))
            for client in clients:
                await client.aclose()
    assert len(t.closed) == len(t.opened) == 6
    codes = {ids[ws_id]: code for ws_id, code in t.closed}
    assert codes == {"a": 1000, "b": 4002, "c": 1002, "d": 1006, "e": 1011, "f": 1001}


async def test_on_close_runs_once_even_when_it_raises(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    done = trio.Event()

    def on_close(ws: wsnest.WebSocket) -> None:
        calls.append(ws.id)
        done.set()
        raise KeyError("on_close blew up")

    h = wsnest.handler_ws("/ws", lambda ws, d: ws.send(d), on_close=on_close)
    with caplog.at_level(logging.ERROR, logger="wsnest"):
        async with running_server([h]) as (_, url):
            with trio.fail_after(TIMEOUT):
                async with raw_ws(url) as c:
                    await c.send(close_frame(1000))
                    await c.read_close()
                await done.wait()
            await echo_ok(url)  # the server survived
    assert len(calls) == 2  # the echo_ok connection closed too
    assert len(set(calls)) == 2
    records = [r for r in caplog.records if r.name == "wsnest" and r.exc_info]
    assert any("on_close blew up" in str(r.exc_info[1]) for r in records)


async def test_on_close_not_called_when_on_open_rejects() -> None:
    closes: list[int] = []
    h = wsnest.handler_ws(
        "/ws",
        lambda ws, d: None,
        on_open=lambda ws, req: wsnest.Reject(403),
        on_close=lambda ws: closes.append(ws.id),
    )
    async with running_server([h, echo_handler("/echo")]) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.send(upgrade_request())
            assert (await c.read_head()).status == 403
            await c.read_until_eof()
            await c.aclose()
        await echo_ok(url, "/echo")
    assert closes == []


# -- shutdown ---------------------------------------------------------------------


async def test_aclose_sends_1001_to_every_client_and_returns() -> None:
    t = Tracker()
    async with running_server([_tracked(t)], close_timeout=30) as (server, url):
        with trio.fail_after(TIMEOUT):
            clients = [await RawClient.connect(url) for _ in range(4)]
            for c in clients:
                await c.handshake()
            await t.wait_opened(4)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.aclose)
                for c in clients:
                    code, _ = await c.read_close()
                    assert code == 1001
                    await c.send(close_frame(1001))
            # aclose returned (the nursery exited) long before close_timeout.
            assert server.state == "closed"
            for c in clients:
                await c.aclose()
    assert sorted(code for _, code in t.closed) == [1001] * 4


async def test_aclose_with_websockets_clients() -> None:
    t = Tracker()
    async with running_server([_tracked(t)]) as (server, url):
        conns = [await run_in_thread(lambda: sync_connect(ws_url(url))) for _ in range(3)]
        with trio.fail_after(TIMEOUT):
            await t.wait_opened(3)
            await server.aclose()

        def codes() -> list[int | None]:
            out = []
            for conn in conns:
                with pytest.raises(websockets.ConnectionClosed) as info:
                    conn.recv(timeout=5)
                out.append(info.value.rcvd.code if info.value.rcvd else None)
            return out

        assert await run_in_thread(codes) == [1001, 1001, 1001]


async def test_cancelling_serve_sends_1001() -> None:
    t = Tracker()
    server = wsnest.http_server("http://127.0.0.1:0", [_tracked(t)])
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.serve)
            clients = [await RawClient.connect(url) for _ in range(3)]
            for c in clients:
                await c.handshake()
            await t.wait_opened(3)
            nursery.cancel_scope.cancel()
        assert server.state == "closed"
        for c in clients:
            assert (await c.read_close())[0] == 1001
            await c.aclose()
    assert sorted(code for _, code in t.closed) == [1001] * 3


async def test_shutdown_is_bounded_with_a_stuck_async_on_message() -> None:
    t = Tracker()
    entered = trio.Event()

    async def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        entered.set()
        await trio.sleep_forever()

    async with running_server([_tracked(t, on_message=on_message)], close_timeout=0.3) as (server, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.handshake()
            await c.send(client_frame(OP_BINARY, b"hang"))
            await entered.wait()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.aclose)
                assert (await c.read_close())[0] == 1001
                await c.send(close_frame(1001))
            await c.aclose()
    assert len(t.closed) == 1


# -- ids ---------------------------------------------------------------------------


async def test_ids_unique_and_increasing_across_handlers() -> None:
    t = Tracker()
    async with running_server([_tracked(t, "/a"), _tracked(t, "/b")]) as (_, url):
        with trio.fail_after(TIMEOUT):
            for i in range(8):
                async with raw_ws(url, "/a" if i % 2 == 0 else "/b") as c:
                    await c.send(close_frame(1000))
                    await c.read_close()
            await t.wait_closed(8)
    ids = [ws.id for ws in t.opened]
    assert ids == list(range(1, 9))


# -- callback errors ------------------------------------------------------------------


@pytest.mark.parametrize("is_async", [False, True], ids=["plain", "async"])
async def test_raising_on_message_gives_1011_and_is_logged(is_async: bool, caplog: pytest.LogCaptureFixture) -> None:
    def plain(ws: wsnest.WebSocket, data: bytes) -> None:
        if data == b"raise":
            raise RuntimeError("secret failure detail")
        ws.send(data)

    async def coro(ws: wsnest.WebSocket, data: bytes) -> None:
        plain(ws, data)

    h = wsnest.handler_ws("/ws", coro if is_async else plain)
    with caplog.at_level(logging.ERROR, logger="wsnest"):
        async with running_server([h]) as (_, url):
            with trio.fail_after(TIMEOUT):
                async with raw_ws(url) as other, raw_ws(url) as victim:
                    await victim.send(client_frame(OP_BINARY, b"raise"))
                    _, op, payload = await victim.read_frame()
                    assert op == 0x8
                    assert payload[:2] == (1011).to_bytes(2, "big")
                    assert b"secret" not in payload
                    assert b"RuntimeError" not in payload
                    # The other connection is untouched.
                    await other.send(client_frame(OP_BINARY, b"fine"))
                    assert await other.read_message() == (OP_BINARY, b"fine")
            await echo_ok(url)
    records = [r for r in caplog.records if r.name == "wsnest" and r.levelno >= logging.ERROR]
    assert records, "nothing logged on the wsnest logger"
    assert records[0].exc_info is not None
    assert "secret failure detail" in str(records[0].exc_info[1])
    assert "on_message" in records[0].getMessage()


# -- send() results ------------------------------------------------------------------


async def test_send_results_and_errors() -> None:
    results: dict[str, Any] = {}
    done = trio.Event()

    def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        for name, value in [("int", 123), ("none", None), ("list", [1, 2]), ("dict", {})]:
            try:
                ws.send(value)  # type: ignore[arg-type]
            except TypeError:
                results[name] = "TypeError"
            else:
                results[name] = "no error"
        results["too_big"] = ws.send(b"z" * 1001)
        results["too_big_str"] = ws.send("\N{GRINNING FACE}" * 251)  # 1004 bytes, 251 chars
        results["max_ok"] = ws.send(b"m" * 1000)
        results["marker"] = ws.send(b"after")
        results["close"] = ws.close(4005, "done")
        results["after_close"] = ws.send(b"late")
        results["close_again"] = ws.close()
        results["closed_flag"] = ws.closed

    def on_close(ws: wsnest.WebSocket) -> None:
        results["in_on_close"] = ws.send(b"later")
        done.set()

    h = wsnest.handler_ws("/ws", on_message, on_close=on_close, max_message_size=1000)
    async with running_server([h]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_BINARY, b"go"))
                # Nothing of the refused messages was queued.
                assert await c.read_message() == (OP_BINARY, b"m" * 1000)
                assert await c.read_message() == (OP_BINARY, b"after")
                assert await c.read_message() == (0x8, (4005).to_bytes(2, "big") + b"done")
                await c.send(close_frame(4005))
            await done.wait()
    assert results == {
        "int": "TypeError",
        "none": "TypeError",
        "list": "TypeError",
        "dict": "TypeError",
        "too_big": wsnest.ErrorCode.MSG_SIZE,
        "too_big_str": 17,
        "max_ok": 0,
        "marker": 0,
        "close": 0,
        "after_close": 7,
        "close_again": 7,
        "closed_flag": True,
        "in_on_close": 7,
    }


async def test_textframes_true_rejects_non_utf8_bytes() -> None:
    results: list[Any] = []

    def on_message(ws: wsnest.WebSocket, data: str) -> None:
        try:
            ws.send(b"\xff\xfe")
        except ValueError:
            results.append("ValueError")
        results.append(ws.send("ok " + data))

    async with running_server([wsnest.handler_ws("/ws", on_message, textframes=True)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_TEXT, "x"))
                assert await c.read_message() == (OP_TEXT, b"ok x")
    assert results == ["ValueError", 0]


async def test_frames_queued_before_close_are_sent_first() -> None:
    def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        ws.send(b"one")
        ws.send(b"two")
        ws.close(4002, "bye")

    async with running_server([wsnest.handler_ws("/ws", on_message)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_BINARY, b"go"))
                assert await c.read_message() == (OP_BINARY, b"one")
                assert await c.read_message() == (OP_BINARY, b"two")
                assert await c.read_close() == (4002, "bye")


async def test_long_close_reason_is_truncated_to_valid_utf8() -> None:
    def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        ws.close(4000, "\u00e9" * 100)  # 200 bytes of UTF-8: over the 123 allowed

    async with running_server([wsnest.handler_ws("/ws", on_message)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_BINARY, b"go"))
                _, op, payload = await c.read_frame()
    assert op == 0x8
    assert len(payload) <= 125
    assert payload[:2] == (4000).to_bytes(2, "big")
    reason = payload[2:].decode("utf-8")  # no split character
    assert reason == "\u00e9" * len(reason)
    assert len(reason) >= 60


# -- closing against peers that misbehave -------------------------------------------------


async def test_close_from_callback_times_out_against_a_silent_peer() -> None:
    t = Tracker()
    async with running_server([_tracked(t)], close_timeout=0.3) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_BINARY, b"close-me"))
                assert await c.read_close() == (4002, "x")
                # Never answer: the server must hang up after close_timeout.
                start = trio.current_time()
                await c.read_until_eof()
                assert trio.current_time() - start >= 0.25
            await t.wait_closed(1)
        await echo_ok(url)


async def test_close_from_outside_a_callback_times_out_against_a_silent_peer() -> None:
    # ws.close() called by another task (a background job, another
    # connection's callback, ...) must also be bounded by close_timeout.
    t = Tracker()
    async with running_server([_tracked(t)], close_timeout=0.3) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await t.wait_opened(1)
                t.opened[0].close(4003, "kicked")
                assert await c.read_close() == (4003, "kicked")
                # Never answer: the server must hang up after close_timeout.
                with trio.fail_after(3):
                    await c.read_until_eof()
                    await t.wait_closed(1)
        await echo_ok(url)


async def test_close_from_another_connection_callback() -> None:
    t = Tracker()

    def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        if data == b"kick":
            for other in t.opened:
                if other is not ws:
                    other.close(4004, "kicked")
        ws.send(data)

    async with running_server([_tracked(t, on_message=on_message)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as victim, raw_ws(url) as kicker:
                await t.wait_opened(2)
                await kicker.send(client_frame(OP_BINARY, b"kick"))
                assert await kicker.read_message() == (OP_BINARY, b"kick")
                assert await victim.read_close() == (4004, "kicked")
                await victim.send(close_frame(4004))
                await victim.read_until_eof()
                await t.wait_closed(1)
    assert t.closed[0] == (t.opened[0].id, 4004)


# -- keepalive pings ---------------------------------------------------------------------------


async def test_ping_interval_pings_and_closes_1011_without_pong() -> None:
    t = Tracker()
    async with running_server([_tracked(t)], ping_interval=0.2, ping_timeout=0.3, close_timeout=0.3) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                # Answer the first ping: the connection stays up and pings again.
                _, op, payload = await c.read_frame()
                assert op == OP_PING
                await c.send(client_frame(OP_PONG, payload))
                _, op, payload = await c.read_frame()
                assert op == OP_PING
                # Do not answer the second one.
                code, _ = await c.read_close()
                assert code == 1011
                await c.send(close_frame(1011))
            await t.wait_closed(1)
    assert t.closed[0][1] == 1011


# -- backpressure ------------------------------------------------------------------------------


HIGH_WATER = 64 * 1024
CHUNK = 16 * 1024


async def _fill_until_again(ws: wsnest.WebSocket) -> int:
    """Send from outside any callback until ``send`` returns 8; return bytes queued."""
    total = 0
    while True:
        result = ws.send(b"x" * CHUNK)
        if result == wsnest.ErrorCode.AGAIN:
            return total
        assert result == 0
        total += CHUNK
        assert total < 64 * 1024 * 1024, "send never pushed back"
        await trio.lowlevel.checkpoint()


async def test_slow_reader_gets_send_code_8_and_memory_is_bounded() -> None:
    t = Tracker()
    async with running_server([_tracked(t)], send_high_water=HIGH_WATER) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.handshake()
            await t.wait_opened(1)
            ws = t.opened[0]
            await _fill_until_again(ws)
            assert ws._buffered() <= HIGH_WATER + CHUNK + 64
            # Refused sends are not queued.
            before = ws._buffered()
            for _ in range(10):
                assert ws.send(b"y" * CHUNK) == 8
            assert ws._buffered() == before
            await c.abort()
            await t.wait_closed(1)


async def test_slow_reader_that_closes_does_not_crash_the_server() -> None:
    # The client stops reading (a drain task is stuck on a full socket), then
    # sends its close frame. The server must drop it after close_timeout,
    # run on_close, and keep serving others.
    t = Tracker()
    handlers = [_tracked(t), echo_handler("/echo")]
    async with running_server(handlers, send_high_water=HIGH_WATER, close_timeout=0.3) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.handshake()
            await t.wait_opened(1)
            await _fill_until_again(t.opened[0])
            await c.send(close_frame(1000))
            await t.wait_closed(1)
            await c.aclose()
        await echo_ok(url, "/echo")


async def test_aclose_with_a_slow_reader_is_bounded() -> None:
    t = Tracker()
    async with running_server([_tracked(t)], send_high_water=HIGH_WATER, close_timeout=0.3) as (server, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.handshake()
            await t.wait_opened(1)
            await _fill_until_again(t.opened[0])
            start = trio.current_time()
            await server.aclose()
            assert trio.current_time() - start < 3
            assert server.state == "closed"
            await c.aclose()
    assert len(t.closed) == 1


async def test_ping_flood_from_a_slow_reader_is_bounded() -> None:
    # While the outgoing buffer is full, pongs must not pile up without bound:
    # the server has to stop reading (TCP backpressure) instead.
    t = Tracker()
    async with running_server([_tracked(t)], send_high_water=HIGH_WATER) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.handshake()
            await t.wait_opened(1)
            ws = t.opened[0]
            await _fill_until_again(ws)
            ping = client_frame(OP_PING, b"p" * 125)
            chunk = ping * 500  # 65.5 kB
            total = 64  # ~4 MiB of pings in all
            sent = 0
            most = ws._buffered()
            async with trio.open_nursery() as nursery:

                async def flood() -> None:
                    nonlocal sent
                    for _ in range(total):
                        await c.send(chunk)
                        sent += 1

                nursery.start_soon(flood)
                # Watch the server's buffer until the flood is all sent (the
                # server read it all) or stalls (the server stopped reading).
                # Not synchronisation: the bound must hold at every instant.
                last, stalled_since = -1, trio.current_time()
                while sent < total:
                    most = max(most, ws._buffered())
                    if sent != last:
                        last, stalled_since = sent, trio.current_time()
                    elif trio.current_time() - stalled_since > 0.3:
                        break
                    await trio.sleep(0.01)
                most = max(most, ws._buffered())
                nursery.cancel_scope.cancel()
            await c.abort()
            await t.wait_closed(1)
    assert most <= 4 * HIGH_WATER + 512 * 1024, f"{most} bytes of pongs buffered ({sent}/{total} chunks of pings read)"


async def test_send_wait_waits_for_room() -> None:
    t = Tracker()
    count, size = 40, 64 * 1024
    async with running_server([_tracked(t)], send_high_water=HIGH_WATER) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.handshake()
            await t.wait_opened(1)
            ws = t.opened[0]
            results: list[int] = []

            async def producer() -> None:
                for i in range(count):
                    results.append(await ws.send_wait(i.to_bytes(4, "big") * (size // 4)))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(producer)
                for i in range(count):
                    op, payload = await c.read_message()
                    assert op == OP_BINARY
                    assert payload == i.to_bytes(4, "big") * (size // 4)
            assert results == [0] * count
            await c.send(close_frame(1000))
            await c.read_close()
            await c.aclose()


async def test_send_wait_returns_7_when_the_connection_closes() -> None:
    t = Tracker()
    async with running_server([_tracked(t)], send_high_water=HIGH_WATER) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await connect_slow_reader(url)
            await c.handshake()
            await t.wait_opened(1)
            ws = t.opened[0]
            await _fill_until_again(ws)
            async with trio.open_nursery() as nursery:
                result: list[int] = []

                async def waiter() -> None:
                    result.append(await ws.send_wait(b"blocked"))

                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert result == []
                await c.abort()
            assert result == [7]
            await t.wait_closed(1)


# -- async on_message keeps the reader going ---------------------------------------------------------


async def test_pings_answered_while_async_on_message_is_slow() -> None:
    entered = trio.Event()
    release = trio.Event()
    finished: list[bytes] = []

    async def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        entered.set()
        await release.wait()
        ws.send(data)
        finished.append(data)

    async with running_server([wsnest.handler_ws("/ws", on_message)]) as (_, url):
        conn = await run_in_thread(lambda: sync_connect(ws_url(url)))
        try:
            await run_in_thread(lambda: conn.send(b"slow"))
            with trio.fail_after(TIMEOUT):
                await entered.wait()

            def ping_pong() -> bool:
                waiters = [conn.ping(f"p{i}".encode()) for i in range(3)]
                return all(w.wait(5) for w in waiters)

            assert await run_in_thread(ping_pong)
            assert finished == []  # on_message is still blocked
            release.set()
            assert await run_in_thread(lambda: conn.recv(timeout=5)) == b"slow"
        finally:
            await run_in_thread(conn.close)


async def test_async_on_message_queue_is_bounded_and_ordered() -> None:
    # While an async on_message is stuck, the server stops reading once
    # max_queue messages wait (give or take what one read brought in), so
    # the client's send blocks instead of the server buffering everything.
    release = trio.Event()
    t = Tracker()

    async def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        await release.wait()
        ws.send(data[:8])

    max_queue = 4
    size = 64 * 1024
    n = 100  # 6.4 MB in all, far more than socket buffers and one read hold
    async with running_server([_tracked(t, on_message=on_message, max_queue=max_queue)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await t.wait_opened(1)
                ws = t.opened[0]
                flood = b"".join(client_frame(OP_BINARY, i.to_bytes(8, "big") * (size // 8)) for i in range(n))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(c.send, flood)
                    await trio.testing.wait_all_tasks_blocked(cushion=0.05)
                    assert ws._queue is not None
                    # 256 KiB per read: at most 5 more messages than max_queue.
                    assert len(ws._queue) <= max_queue + 5, len(ws._queue)
                    release.set()
                    for i in range(n):
                        assert await c.read_message() == (OP_BINARY, i.to_bytes(8, "big"))


async def test_async_on_message_sends_leave_when_it_suspends_and_at_its_end() -> None:
    # What an async on_message sends is written when it suspends and when
    # it returns (not held until the whole queue is handled), in order; a
    # send from another task while it is suspended goes out too.
    resume = trio.Event()
    t = Tracker()

    async def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        if data == b"go":
            ws.send(b"one")
            ws.send(b"two")
            await resume.wait()
            ws.send(b"three")
            raise RuntimeError("after a send")
        ws.send(data)

    async with running_server([_tracked(t, on_message=on_message)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await t.wait_opened(1)
                await c.send(client_frame(OP_BINARY, b"go"))
                assert await c.read_message() == (OP_BINARY, b"one")
                assert await c.read_message() == (OP_BINARY, b"two")
                assert t.opened[0].send(b"from elsewhere") == 0  # on_message is suspended
                assert await c.read_message() == (OP_BINARY, b"from elsewhere")
                resume.set()
                assert await c.read_message() == (OP_BINARY, b"three")
                _, op, payload = await c.read_frame()  # then the error's close
                assert (op, payload[:2]) == (0x8, (1011).to_bytes(2, "big"))


async def test_async_on_message_cancelled_while_suspended_still_sends_what_it_queued() -> None:
    # The server shuts down while an async on_message waits: what it queued
    # before waiting has left, and the close (1001) follows it.
    entered = trio.Event()
    t = Tracker()

    async def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        ws.send(b"before")
        entered.set()
        await trio.sleep_forever()

    async with running_server([_tracked(t, on_message=on_message)], close_timeout=2) as (server, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_BINARY, b"x"))
                await entered.wait()
                assert await c.read_message() == (OP_BINARY, b"before")
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.aclose)
                    assert (await c.read_close())[0] == 1001
                    await c.send(close_frame(1001))


# -- server state and arguments ------------------------------------------------------------------------


async def test_server_state_transitions_and_serve_twice() -> None:
    server = wsnest.http_server("http://127.0.0.1:0", echo_handler())
    assert server.state == "not started"
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.serve)
            assert server.state == "started"
            assert url == server.url
            assert not url.endswith(":0")
            with pytest.raises(RuntimeError):
                await nursery.start(server.serve)
            await echo_ok(url)
            await server.aclose()
            assert server.state == "closed"
        with pytest.raises(RuntimeError):
            await server.serve()
        await server.aclose()  # idempotent
        assert server.state == "closed"


async def test_aclose_before_serve() -> None:
    server = wsnest.http_server("http://127.0.0.1:0", echo_handler())
    await server.aclose()
    assert server.state == "closed"
    with pytest.raises(RuntimeError):
        await server.serve()


def test_http_server_argument_errors() -> None:
    h = echo_handler("/ws")
    with pytest.raises(ValueError, match="scheme"):
        wsnest.http_server("ftp://127.0.0.1:0", h)
    with pytest.raises(ValueError, match="scheme"):
        wsnest.http_server("ws://127.0.0.1:0", h)
    with pytest.raises(ValueError, match="tls"):
        wsnest.http_server("https://127.0.0.1:0", h)
    with pytest.raises(ValueError, match="tls"):
        wsnest.http_server("http://127.0.0.1:0", h, tls=ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    with pytest.raises(ValueError) as info:
        wsnest.http_server("http://127.0.0.1:0", [echo_handler("/chat"), echo_handler("/chat/")])
    assert "/chat/" in str(info.value)
    assert "/chat " in str(info.value) or "/chat>" in str(info.value)
    with pytest.raises(TypeError, match="bogus"):
        wsnest.http_server("http://127.0.0.1:0", h, bogus=1)
    with pytest.raises(TypeError):
        wsnest.http_server("http://127.0.0.1:0", h, max_message_size="big")
    with pytest.raises(ValueError):
        wsnest.http_server("http://127.0.0.1:0", h, max_queue=0)
    with pytest.raises(TypeError):
        wsnest.http_server("http://127.0.0.1:0", [h, "not a handler"])


def test_handler_ws_argument_errors() -> None:
    with pytest.raises(TypeError, match="textframes"):
        wsnest.handler_ws("/ws", lambda ws, d: None, textframes="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_message"):
        wsnest.handler_ws("/ws", "not callable")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_open"):
        wsnest.handler_ws("/ws", lambda ws, d: None, on_open=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_close"):
        wsnest.handler_ws("/ws", lambda ws, d: None, on_close=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        wsnest.handler_ws("ws", lambda ws, d: None)
    with pytest.raises(TypeError, match="subprotocols"):
        wsnest.handler_ws("/ws", lambda ws, d: None, subprotocols="chat")
    with pytest.raises(TypeError, match="origins"):
        wsnest.handler_ws("/ws", lambda ws, d: None, origins="https://good")
    with pytest.raises(TypeError, match="max_head_size"):
        wsnest.handler_ws("/ws", lambda ws, d: None, max_head_size=10)
    with pytest.raises(ValueError):
        wsnest.Reject(200)


async def test_bad_close_arguments_raise() -> None:
    results: list[str] = []

    def on_message(ws: wsnest.WebSocket, data: bytes) -> None:
        for code in (999, 1005, 1006, 1015, 5000):
            try:
                ws.close(code)
            except ValueError:
                results.append("ValueError")
        ws.send(b"still open")

    async with running_server([wsnest.handler_ws("/ws", on_message)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            async with raw_ws(url) as c:
                await c.send(client_frame(OP_BINARY, b"go"))
                assert await c.read_message() == (OP_BINARY, b"still open")
    assert results == ["ValueError"] * 5
