"""Groups in one process (no broker): membership, delivery as ``broadcast``
does it, the end of a connection, validation, and the broker-side input
(``Groups.receive``) that a broker feeds. Clients are real: the
``websockets`` library, raw sockets and httpx for streams."""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Tracker, running_server, ws_url
from wsnest.server import _envelope as envelope
from wsnest.server import _workers
from wsnest.server._groups import CHANNEL_PREFIX, Groups


def joiner(*groups: str, **kw: Any) -> wsnest.WebSocketHandler:
    """A handler whose connections join ``groups`` on open and publish
    every message they get to the first one."""

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        for group in groups:
            assert ws.join(group) == 0

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        ws.publish(groups[0], data)

    return wsnest.handler_ws(kw.pop("path", "/ws"), on_message, on_open=on_open, **kw)


async def wait_members(server: wsnest.HttpServer, group: str, n: int) -> None:
    with trio.fail_after(TIMEOUT):
        while len(server.groups.members(group)) != n:
            await trio.sleep(0.005)


async def test_publish_reaches_every_member_and_only_members() -> None:
    outsider = wsnest.handler_ws("/out", lambda ws, data: ws.send(data))
    async with (
        running_server([joiner("room"), outsider]) as (server, url),
        wsnest.connect(ws_url(url)) as a,
        wsnest.connect(ws_url(url)) as b,
        wsnest.connect(ws_url(url, "/out")) as c,
    ):
        await wait_members(server, "room", 2)
        a.send("hello")
        assert await b.receive() == b"hello"  # textframes=False: BINARY
        assert await a.receive() == b"hello"  # the publisher is a member too
        assert server.groups.publish("room", "from the server") == 2
        assert await a.receive() == b"from the server"
        assert await b.receive() == b"from the server"
        assert server.groups.publish("nobody", "x") == 0
        c.send(b"ping")  # c is in no group: its echo is the first thing it gets
        assert await c.receive() == b"ping"
        stats = server.stats()
        assert stats["groups"] == 1 and stats["group_members"] == 2
        assert stats["group_publishes"] == 3 and stats["group_deliveries"] == 4


async def test_each_members_textframes_mode_is_respected() -> None:
    handlers = [
        joiner("g", path="/bin"),
        joiner("g", path="/text", textframes=True),
        joiner("g", path="/auto", textframes=None),
    ]
    async with (
        running_server(handlers) as (server, url),
        wsnest.connect(ws_url(url, "/bin")) as b,
        wsnest.connect(ws_url(url, "/text")) as t,
        wsnest.connect(ws_url(url, "/auto")) as a,
    ):
        await wait_members(server, "g", 3)
        assert server.groups.publish("g", "é") == 3
        assert await b.receive() == "é".encode()
        assert await t.receive() == "é"
        assert await a.receive() == "é"
        assert server.groups.publish("g", b"\xc3\xa9") == 3
        assert await b.receive() == b"\xc3\xa9"
        assert await t.receive() == "é"
        assert await a.receive() == b"\xc3\xa9"
        # Bytes that are not UTF-8 cannot go as TEXT: that member is skipped.
        assert server.groups.publish("g", b"\xff") == 2
        assert await b.receive() == b"\xff"
        assert await a.receive() == b"\xff"
        assert server.groups.publish("g", "next") == 3
        assert await t.receive() == "next"  # \xff never reached it


async def test_a_slow_member_is_skipped_with_code_8_and_the_others_keep_receiving() -> None:
    async with running_server([joiner("g")], send_high_water=16 * 1024) as (server, url):
        slow = await RawClient.connect(url)
        await slow.handshake()
        async with wsnest.connect(ws_url(url), max_message_size=None) as fast:
            await wait_members(server, "g", 2)
            payload = os.urandom(32 * 1024)
            skipped = False
            with trio.fail_after(TIMEOUT):
                for _ in range(2000):  # the slow client never reads: its buffers fill
                    count = server.groups.publish("g", payload)
                    assert await fast.receive() == payload
                    if count == 1:
                        skipped = True
                        break
            assert skipped
            assert server.stats()["send_refusals"].get("8", 0) >= 1
        await slow.abort()


async def test_a_connection_leaves_every_group_once_when_it_ends() -> None:
    tracker = Tracker()
    seen: list[frozenset[str]] = []

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        tracker.on_open(ws, req)
        ws.join("a")
        ws.join("b")
        ws.join("a")  # idempotent

    def on_close(ws: wsnest.WebSocket) -> None:
        seen.append(ws.groups)
        assert ws.join("c") == wsnest.ErrorCode.CLOSED  # too late: never joins
        tracker.on_close(ws)

    handler = wsnest.handler_ws("/ws", lambda ws, d: None, on_open=on_open, on_close=on_close)
    async with running_server([handler]) as (server, url):
        async with wsnest.connect(ws_url(url)):
            await wait_members(server, "a", 1)
            assert sorted(server.groups.names()) == ["a", "b"]
            (member,) = server.groups.members("b")
            assert member.groups == {"a", "b"}
        await tracker.wait_closed(1)
        assert server.groups.names() == []
        assert seen == [frozenset()]
        assert server.stats()["group_members"] == 0


async def test_leave_stops_delivery() -> None:
    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        if data == "leave":
            ws.leave("g")
            ws.leave("never-joined")  # nothing happens
            ws.send("left")

    handler = wsnest.handler_ws("/ws", on_message, on_open=lambda ws, req: ws.join("g"), textframes=None)
    async with running_server([handler]) as (server, url), wsnest.connect(ws_url(url)) as ws:
        await wait_members(server, "g", 1)
        ws.send("leave")
        assert await ws.receive() == "left"
        assert server.groups.publish("g", "x") == 0
        assert server.groups.names() == []


async def test_stream_members_get_the_message_as_one_chunk() -> None:
    opened = trio.Event()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.set_header("Content-Type", "text/event-stream")
        conn.join("news")
        conn.send(wsnest.format_sse("hello"))
        opened.set()

    stream = wsnest.handler_stream("/events", on_request)
    async with running_server([stream, joiner("news")]) as (server, url):
        async with httpx.AsyncClient() as client, client.stream("GET", url + "/events") as response:
            chunks = response.aiter_text()
            assert "hello" in await chunks.__anext__()
            await opened.wait()
            assert server.groups.publish("news", wsnest.format_sse("breaking")) == 1
            with trio.fail_after(TIMEOUT):
                assert "breaking" in await chunks.__anext__()
        with trio.fail_after(TIMEOUT):
            while server.groups.names():
                await trio.sleep(0.005)


@pytest.mark.parametrize(
    ("group", "error", "words"),
    [
        (3, TypeError, "group: expected a str"),
        ("", ValueError, "group: expected a name of 1 to 256"),
        ("x" * 257, ValueError, "group: expected a name of 1 to 256"),
        ("é" * 129, ValueError, "group: expected a name of 1 to 256"),
    ],
)
async def test_group_names_are_checked(group: Any, error: type[Exception], words: str) -> None:
    server = wsnest.http_server("http://127.0.0.1:0", [])
    with pytest.raises(error, match=words):
        server.groups.publish(group, "x")
    with pytest.raises(error, match=words):
        server.groups.members(group)


async def test_payloads_are_checked() -> None:
    server = wsnest.http_server("http://127.0.0.1:0", [], max_message_size=10)
    with pytest.raises(TypeError, match="data: expected str or bytes, got int"):
        server.groups.publish("g", 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"data: 11 bytes is over max_message_size \(10\)"):
        server.groups.publish("g", b"x" * 11)
    assert server.groups.publish("g", memoryview(b"x" * 10)) == 0


async def test_join_and_publish_refuse_several_workers_without_a_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    errors: list[str] = []

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        try:
            ws.join("g")
        except RuntimeError as exc:
            errors.append(str(exc))
            raise

    handler = wsnest.handler_ws("/ws", lambda ws, d: None, on_open=on_open)
    async with running_server([handler]) as (server, url):
        monkeypatch.setattr(_workers, "_current", wsnest.Worker(index=0, count=2, generation=1, pid=os.getpid()))
        with pytest.raises(wsnest.InvalidStatus):  # on_open raised: the upgrade is refused (500)
            async with wsnest.connect(ws_url(url)):
                pass  # pragma: no cover
        with pytest.raises(RuntimeError, match="groups across 2 workers need a broker"):
            server.groups.publish("g", "x")
        monkeypatch.setattr(_workers, "_current", wsnest.Worker(index=0, count=1, generation=1, pid=os.getpid()))
        assert server.groups.publish("g", "x") == 0  # one worker: nothing is out of reach
    assert errors and "--redis URL" in errors[0]


async def test_a_client_connection_cannot_join() -> None:
    echo = wsnest.handler_ws("/ws", lambda ws, d: ws.send(d))
    async with running_server([echo]) as (_, url), wsnest.connect(ws_url(url)) as ws:
        with pytest.raises(RuntimeError, match="groups are a server feature"):
            ws.join("g")


# -- what a broker hands over ---------------------------------------------------------


async def test_messages_from_a_broker_are_checked_then_delivered_once() -> None:
    async with running_server([joiner("g", textframes=None)]) as (server, url), wsnest.connect(ws_url(url)) as ws:
        await wait_members(server, "g", 1)
        groups = server.groups
        other = b"O" * envelope.ORIGIN_SIZE
        channel = CHANNEL_PREFIX + "g"
        groups.receive(channel, envelope.pack(True, other, 1, b"one"))
        groups.receive(channel, envelope.pack(True, other, 1, b"again"))  # same number: a duplicate
        groups.receive(channel, envelope.pack(False, other, 2, b"\x00two"))
        for bad in (
            b"",
            b"not an envelope",
            b"WSN\x02" + b"t" + other + bytes(8) + b"later version",
            envelope.pack(True, other, 3, b"\xff not UTF-8 text"),
            envelope.pack(True, other, 4, b"x")[:-1][:10],
        ):
            groups.receive(channel, bad)
        groups.receive("someone-else:g", envelope.pack(True, other, 5, b"foreign channel"))
        groups.receive(channel, envelope.pack(True, other, 6, b"six"))
        assert await ws.receive() == "one"
        assert await ws.receive() == b"\x00two"
        assert await ws.receive() == "six"
        stats = server.stats()
        assert stats["group_malformed"] == 6
        assert stats["group_duplicates"] == 1


async def test_a_process_skips_its_own_messages_coming_back() -> None:
    groups = Groups()
    groups.started()
    sent: list[bytes] = []

    class Recorder(wsnest.Broker):
        url = "memory:"

        async def run(self, receive: Any, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            raise NotImplementedError  # pragma: no cover

        def subscribe(self, channel: str) -> None:
            pass

        def unsubscribe(self, channel: str) -> None:
            pass

        def publish(self, channel: str, payload: bytes) -> bool:
            sent.append(payload)
            return True

        @property
        def connected(self) -> bool:
            return True

        def stats(self) -> dict[str, int]:
            return {}

    groups.broker = Recorder()
    groups.publish("g", "mine")
    groups.publish("g", b"mine too")
    assert len(sent) == 2  # one broker publish per message
    for payload in sent:
        groups.receive(CHANNEL_PREFIX + "g", payload)
    assert groups.stats()["group_duplicates"] == 0
    assert envelope.unpack(sent[0]) is not None
