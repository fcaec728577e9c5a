"""``server.stats()``, ``merge_stats``, ``stats_to_prometheus`` and
``handler_metrics``: counts after a known exchange with real clients."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

import wsnest
from serverutil import (
    TIMEOUT,
    RawClient,
    Tracker,
    connect_slow_reader,
    run_in_thread,
    running_server,
    sync_connect,
    ws_url,
)
from wire import OP_TEXT, client_frame, close_frame
from wsnest.core import CORE


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=TIMEOUT)


def make_handlers(tracker: Tracker, refused: list[int]) -> list[Any]:
    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        if data == b"big":
            refused.append(ws.send(b"x" * 2000))  # over max_message_size: 17
            return
        ws.send(data)
        ws.send(data)

    def on_close(ws: wsnest.WebSocket) -> None:
        refused.append(ws.send(b"late"))  # closed: 7
        tracker.on_close(ws)

    return [
        wsnest.handler("/ok", lambda req: {"body": "ok"}),
        wsnest.handler_ws("/ws", on_message, tracker.on_open, on_close, max_message_size=1000),
        wsnest.handler_metrics(),
    ]


def metric_values(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


async def test_stats_after_a_known_exchange() -> None:
    tracker = Tracker()
    refused: list[int] = []
    async with running_server(make_handlers(tracker, refused)) as (server, url):
        fresh = server.stats()
        assert fresh["connections"] == {"http": 0, "websocket": 0, "stream": 0}
        assert fresh["http_requests"] == 0 and fresh["ws_closes"] == {} and fresh["send_refusals"] == {}
        async with http_client() as client:
            for _ in range(3):
                r = await client.get(url + "/ok")
                assert r.text == "ok"
            during = server.stats()
            assert during["http_requests"] == 3
            assert during["connections"]["http"] == 1  # the kept-alive connection counts live
        payloads = [b"a", b"bb", b"ccc", b"dddd"]

        def scenario() -> None:
            c = sync_connect(ws_url(url))
            try:
                for p in payloads:
                    c.send(p)
                    assert c.recv(timeout=5) == p
                    assert c.recv(timeout=5) == p
                c.send(b"big")
            finally:
                c.close()  # code 1000

        await run_in_thread(scenario)
        with trio.fail_after(TIMEOUT):
            await tracker.wait_closed(1)
        # A client that drops without a close frame: 1006.
        raw = await RawClient.connect(url)
        await raw.handshake("/ws")
        await raw.send(client_frame(OP_TEXT, "hi"))
        with trio.fail_after(TIMEOUT):
            assert (await raw.read_message())[1] == b"hi"
            live = server.stats()
            assert live["connections"]["websocket"] == 1
            assert live["ws_messages_in"] == len(payloads) + 1 + 1
            await raw.abort()
            await tracker.wait_closed(2)
        stats = server.stats()
    json.dumps(stats)  # plain data
    assert stats["pid"] > 0 and stats["core"] == CORE
    assert stats["connections"] == {"http": 0, "websocket": 0, "stream": 0}
    assert stats["http_requests"] == 3 + 2  # the upgrade requests are HTTP requests too
    assert stats["ws_sessions"] == 2
    assert stats["ws_messages_in"] == len(payloads) + 1 + 1  # + "big", + the raw client's "hi"
    assert stats["ws_messages_out"] == 2 * len(payloads) + 2  # every message is echoed twice
    # Frames on the wire: client frames are masked (2 + 4 + payload), the
    # websockets client's close carries its code (2 bytes).
    wire_in = sum(6 + len(p) for p in payloads) + (6 + len(b"big")) + (6 + 2) + (6 + len(b"hi"))
    # The echoes, the two echoes of "hi", the close reply to the websockets client.
    wire_out = sum(2 * (2 + len(p)) for p in payloads) + 2 * (2 + len(b"hi")) + (2 + 2)
    assert stats["ws_bytes_in"] == wire_in
    assert stats["ws_bytes_out"] == wire_out
    assert refused == [17, 7, 7]
    assert stats["send_refusals"] == {"7": 2, "17": 1}
    assert stats["ws_closes"] == {"1000": 1, "1006": 1}
    assert sorted(tracker.codes()) == [1000, 1006]


async def test_broadcast_refusals_and_send_wait_are_counted_once() -> None:
    tracker = Tracker()
    async with running_server(
        [wsnest.handler_ws("/ws", lambda ws, d: None, tracker.on_open, tracker.on_close, max_message_size=10)]
    ) as (server, url):
        raw = await RawClient.connect(url)
        await raw.handshake("/ws")
        with trio.fail_after(TIMEOUT):
            await tracker.wait_opened(1)
            ws = tracker.opened[0]
            assert wsnest.broadcast([ws], b"y" * 11) == 0  # 17
            assert wsnest.broadcast([ws], b"ok") == 1
            assert await ws.send_wait(b"fine") == 0
            assert (await raw.read_message())[1] == b"ok"
            assert (await raw.read_message())[1] == b"fine"
            await raw.send(close_frame(1000))
            await tracker.wait_closed(1)
        assert ws.send(b"z") == 7
        stats = server.stats()
    assert stats["send_refusals"] == {"7": 1, "17": 1}
    assert stats["ws_messages_out"] == 2
    assert stats["ws_closes"] == {"1000": 1}


async def test_streams_are_counted() -> None:
    ended = trio.Event()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.send("one\n")
        conn.close()
        assert conn.send("two") == 7

    handlers = [wsnest.handler_stream("/s", on_request, on_close=lambda conn: ended.set())]
    async with running_server(handlers) as (server, url), http_client() as client:
        r = await client.get(url + "/s")
        assert r.text == "one\n"
        with trio.fail_after(TIMEOUT):
            await ended.wait()
        stats = server.stats()
    assert stats["streams"] == 1
    assert stats["connections"]["stream"] == 0
    assert stats["http_requests"] == 1
    assert stats["send_refusals"] == {"7": 1}


def test_merge_stats_sums_workers() -> None:
    a = {
        "pid": 10,
        "core": "compiled",
        "connections": {"http": 1, "websocket": 2, "stream": 0},
        "http_requests": 5,
        "ws_messages_in": 7,
        "send_refusals": {"8": 1},
        "ws_closes": {"1000": 2},
    }
    b = {
        "pid": 11,
        "core": "compiled",
        "connections": {"http": 0, "websocket": 1, "stream": 3},
        "http_requests": 2,
        "ws_messages_in": 1,
        "send_refusals": {"7": 4, "8": 2},
        "ws_closes": {"1006": 1},
    }
    total = wsnest.merge_stats([a, b])
    assert total == {
        "pid": [10, 11],
        "core": "compiled",
        "workers": 2,
        "connections": {"http": 1, "websocket": 3, "stream": 3},
        "http_requests": 7,
        "ws_messages_in": 8,
        "send_refusals": {"8": 3, "7": 4},
        "ws_closes": {"1000": 2, "1006": 1},
    }
    again = wsnest.merge_stats([total, {**a, "pid": 12, "core": "pure"}])
    assert again["pid"] == [10, 11, 12] and again["workers"] == 3 and again["core"] == "mixed"
    assert again["http_requests"] == 12
    assert a["connections"] == {"http": 1, "websocket": 2, "stream": 0}  # inputs untouched
    json.dumps(again)


def test_prometheus_text_parses_and_escapes() -> None:
    stats = wsnest.merge_stats(
        [
            {
                "pid": 3,
                "core": 'we"ird\\core\n',
                "connections": {"http": 2, "websocket": 1, "stream": 0},
                "http_requests": 9,
                "ws_sessions": 4,
                "ws_messages_in": 5,
                "ws_messages_out": 6,
                "ws_bytes_in": 70,
                "ws_bytes_out": 80,
                "streams": 1,
                "send_refusals": {"8": 2},
                "ws_closes": {"1000": 3, "1006": 1},
            }
        ]
    )
    text = wsnest.stats_to_prometheus(stats)
    values = metric_values(text)
    assert values[("wsnest_info", (("core", 'we"ird\\core\n'), ("pid", "3")))] == 1
    assert values[("wsnest_workers", ())] == 1
    assert values[("wsnest_connections", (("kind", "http"),))] == 2
    assert values[("wsnest_connections", (("kind", "websocket"),))] == 1
    assert values[("wsnest_http_requests_total", ())] == 9
    assert values[("wsnest_ws_sessions_total", ())] == 4
    assert values[("wsnest_streams_total", ())] == 1
    assert values[("wsnest_ws_messages_total", (("direction", "in"),))] == 5
    assert values[("wsnest_ws_messages_total", (("direction", "out"),))] == 6
    assert values[("wsnest_ws_bytes_total", (("direction", "in"),))] == 70
    assert values[("wsnest_ws_bytes_total", (("direction", "out"),))] == 80
    assert values[("wsnest_send_refusals_total", (("code", "8"),))] == 2
    assert values[("wsnest_ws_closes_total", (("code", "1000"),))] == 3
    assert values[("wsnest_ws_closes_total", (("code", "1006"),))] == 1
    types = {f.name: f.type for f in text_string_to_metric_families(text)}
    assert types["wsnest_http_requests"] == "counter"  # the parser drops _total from the family name
    assert types["wsnest_connections"] == "gauge"
    assert "# TYPE wsnest_http_requests_total counter" in text


async def test_handler_metrics_serves_the_server_numbers() -> None:
    tracker = Tracker()
    async with running_server(make_handlers(tracker, [])) as (_, url), http_client() as client:
        await client.get(url + "/ok")
        await client.get(url + "/ok")
        r = await client.get(url + "/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    values = metric_values(r.text)
    assert values[("wsnest_http_requests_total", ())] == 3  # the /metrics request itself counts
    assert values[("wsnest_connections", (("kind", "http"),))] == 1
    assert values[("wsnest_info", (("core", CORE), ("pid", str(__import__("os").getpid()))))] == 1


async def test_handler_metrics_source_is_pluggable() -> None:
    async def total() -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return wsnest.merge_stats([{"pid": 1, "http_requests": 40}, {"pid": 2, "http_requests": 2}])

    handlers = [wsnest.handler_metrics("/m", source=total)]
    async with running_server(handlers) as (_, url), http_client() as client:
        r = await client.get(url + "/m")
    values = metric_values(r.text)
    assert values[("wsnest_http_requests_total", ())] == 42
    assert values[("wsnest_workers", ())] == 2


async def test_send_wait_retries_are_not_refusals() -> None:
    tracker = Tracker()
    handler = wsnest.handler_ws(
        "/ws",
        lambda ws, d: None,
        tracker.on_open,
        tracker.on_close,
        send_high_water=1024,
        max_message_size=16 * 1024 * 1024,
    )
    async with running_server([handler]) as (server, url):
        client = await connect_slow_reader(url)
        with trio.fail_after(TIMEOUT):
            await client.handshake("/ws")
            await tracker.wait_opened(1)
            ws = tracker.opened[0]
            big = b"b" * (8 * 1024 * 1024)  # more than the kernel buffers hold: it waits
            assert ws.send(big) == 0
            assert ws.send(b"z") == 8  # one refusal
            results: list[int] = []

            async def waiter() -> None:
                results.append(await ws.send_wait(b"y"))  # refused inside, then waits: not counted

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiter)
                await trio.testing.wait_all_tasks_blocked()
                assert (await client.read_message())[1] == big
                assert (await client.read_message())[1] == b"y"
            assert results == [0]
            await client.send(close_frame(1000))
            await tracker.wait_closed(1)
        stats = server.stats()
    assert stats["send_refusals"] == {"8": 1}
    assert stats["ws_messages_out"] == 2


async def test_an_open_stream_counts_live() -> None:
    streams: list[wsnest.StreamConnection] = []
    ended = trio.Event()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.send("first\n")
        streams.append(conn)

    handlers = [wsnest.handler_stream("/s", on_request, on_close=lambda conn: ended.set())]
    async with running_server(handlers) as (server, url):
        client = await RawClient.connect(url)
        with trio.fail_after(TIMEOUT):
            await client.send(b"GET /s HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await client.read_head(body=False)).status == 200
            while b"first" not in client.buf:
                await client._fill()
            assert server.stats()["connections"] == {"http": 0, "websocket": 0, "stream": 1}
            streams[0].close()
            await ended.wait()
        await client.aclose()
        assert server.stats()["connections"]["stream"] == 0


async def test_a_failing_metrics_source_is_a_500(caplog: Any) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no numbers")

    async with running_server([wsnest.handler_metrics(source=broken)]) as (_, url), http_client() as client:
        r = await client.get(url + "/metrics")
        assert r.status_code == 500
        assert (await client.get(url + "/metrics")).status_code == 500  # the connection lives on
    assert "metrics source for /metrics failed" in caplog.text
