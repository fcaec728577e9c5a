"""Independent WebSocket clients as peers: websockets (sync and asyncio),
aiohttp, websocket-client, and wsproto driven by hand over a trio socket.

Blocking clients run in worker threads (``run_in_thread``) so the server
keeps running on the trio thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import aiohttp
import pytest
import trio
import websocket  # websocket-client
import websockets
import websockets.asyncio.client
import websockets.sync.client
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)

import wsnest
from serverutil import (
    TIMEOUT,
    has_ipv6_loopback,
    host_port,
    run_in_thread,
    running_server,
    sync_connect,
    ws_url,
)

MiB = 1 << 20
EMOJI = "\N{GRINNING FACE}\N{EARTH GLOBE EUROPE-AFRICA}"  # 4-byte UTF-8 each


class State:
    """What the server's callbacks saw; a test waits on ``changed``."""

    def __init__(self) -> None:
        self.requests: list[wsnest.Request] = []
        self.opened: list[wsnest.WebSocket] = []
        self.closed: list[tuple[str, int, int]] = []  # (path, id, close_code)
        self.received: list[tuple[str, Any]] = []  # (path, data)
        self._changed = trio.Event()

    def poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, predicate: Any) -> None:
        with trio.fail_after(TIMEOUT):
            while not predicate():
                await self._changed.wait()


def make_handlers(st: State) -> list[wsnest.WebSocketHandler]:
    def tracked(path: str, on_message: Any, textframes: bool | None, **kw: Any) -> wsnest.WebSocketHandler:
        def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
            st.requests.append(req)
            st.opened.append(ws)
            if path == "/info":
                ws.send("welcome")
            st.poke()

        def on_close(ws: wsnest.WebSocket) -> None:
            st.closed.append((path, ws.id, ws.close_code))
            st.poke()

        def record(ws: wsnest.WebSocket, data: Any) -> None:
            st.received.append((path, data))
            st.poke()
            on_message(ws, data)

        return wsnest.handler_ws(path, record, on_open, on_close, textframes, **kw)

    def echo(ws: wsnest.WebSocket, data: Any) -> None:
        ws.send(data)

    def closer(ws: wsnest.WebSocket, data: Any) -> None:
        if data == "close please":
            ws.close(4002, "x")
        else:
            ws.send(data)

    def proto(ws: wsnest.WebSocket, data: Any) -> None:
        ws.send(repr(ws.subprotocol))

    return [
        tracked("/echo", echo, None),
        tracked("/bin", echo, False),
        tracked("/text", echo, True),
        tracked("/info", echo, None),
        tracked("/close", closer, None),
        tracked("/proto", proto, None, subprotocols=["chat", "superchat"]),
        tracked("/b1", echo, True),
        tracked("/b2", echo, False),
    ]


# -- websockets (sync client) ---------------------------------------------------


async def test_websockets_text_binary_empty_emoji() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> list[Any]:
            out = []
            with websockets.sync.client.connect(ws_url(url, "/echo")) as c:
                for msg in ["hello", b"\x00\x01\xff", "", b"", EMOJI, "é" * 1000, bytes(range(256)) * 300]:
                    c.send(msg)
                    out.append(c.recv(timeout=5))
            return out

        got = await run_in_thread(scenario)
    assert got == ["hello", b"\x00\x01\xff", "", b"", EMOJI, "é" * 1000, bytes(range(256)) * 300]
    assert [type(d) for _, d in st.received] == [str, bytes, str, bytes, str, str, bytes]


async def test_websockets_exactly_max_message_size_is_accepted() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> tuple[int, int]:
            with websockets.sync.client.connect(ws_url(url, "/bin"), max_size=2 * MiB) as c:
                c.send(b"\xab" * MiB)
                got = c.recv(timeout=5)
                c.send("t" * MiB)
                got_text = c.recv(timeout=5)
            return len(got), len(got_text)

        assert await run_in_thread(scenario) == (MiB, MiB)


async def test_websockets_over_max_message_size_is_closed_1009() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> int | None:
            with websockets.sync.client.connect(ws_url(url, "/bin"), max_size=2 * MiB) as c:
                c.send(b"\xab" * (MiB + 1))
                with pytest.raises(websockets.ConnectionClosed) as info:
                    c.recv(timeout=5)
            return info.value.rcvd.code if info.value.rcvd else None

        assert await run_in_thread(scenario) == 1009
        await st.wait(lambda: len(st.closed) == 1)
    assert st.closed[0][2] == 1009
    assert st.received == []


async def test_websockets_fragmented_messages() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> list[Any]:
            with websockets.sync.client.connect(ws_url(url, "/echo")) as c:
                c.send(["frag", "ment", "ed ", EMOJI])
                first = c.recv(timeout=5)
                c.send([b"\x01", b"", b"\x02\x03"])
                second = c.recv(timeout=5)
                c.send([b"x" * 100_000 for _ in range(5)])
                third = c.recv(timeout=5)
            return [first, second, third]

        got = await run_in_thread(scenario)
    assert got == ["fragmented " + EMOJI, b"\x01\x02\x03", b"x" * 500_000]


async def test_websockets_ping_gets_pong() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> bool:
            with websockets.sync.client.connect(ws_url(url, "/echo")) as c:
                waiters = [c.ping(payload) for payload in (b"", b"abc", b"p" * 125)]
                return all(w.wait(5) for w in waiters)

        assert await run_in_thread(scenario)


async def test_websockets_client_close_code_is_echoed_and_seen_by_on_close() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> tuple[int | None, str | None]:
            with websockets.sync.client.connect(ws_url(url, "/echo")) as c:
                c.close(4001, "bye")
                rcvd = c.protocol.close_rcvd
                return (rcvd.code, rcvd.reason) if rcvd else (None, None)

        code, _ = await run_in_thread(scenario)
        assert code == 4001
        await st.wait(lambda: len(st.closed) == 1)
    assert st.closed[0][2] == 4001


async def test_websockets_server_close_code_and_reason() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> tuple[int | None, str | None]:
            with websockets.sync.client.connect(ws_url(url, "/close")) as c:
                c.send("close please")
                with pytest.raises(websockets.ConnectionClosed) as info:
                    c.recv(timeout=5)
            rcvd = info.value.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, None)

        assert await run_in_thread(scenario) == (4002, "x")
        await st.wait(lambda: len(st.closed) == 1)
    assert st.closed[0][2] == 4002


async def test_websockets_500_pipelined_messages_in_order() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> list[Any]:
            with websockets.sync.client.connect(ws_url(url, "/echo")) as c:
                for i in range(500):
                    c.send(f"msg {i}" if i % 2 else f"msg {i}".encode())
                return [c.recv(timeout=5) for _ in range(500)]

        got = await run_in_thread(scenario)
    assert got == [f"msg {i}" if i % 2 else f"msg {i}".encode() for i in range(500)]


async def test_200_concurrent_asyncio_clients() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):
        uri = ws_url(url, "/echo")

        async def one(i: int) -> list[Any]:
            async with websockets.asyncio.client.connect(uri) as c:
                await c.send(f"client {i}")
                first = await c.recv()
                await c.send(i.to_bytes(4, "big"))
                return [first, await c.recv()]

        async def many() -> list[list[Any]]:
            return await asyncio.gather(*(one(i) for i in range(200)))

        got = await run_in_thread(lambda: asyncio.run(many()))
        await st.wait(lambda: len(st.closed) == 200)
    assert got == [[f"client {i}", i.to_bytes(4, "big")] for i in range(200)]
    assert len({ws_id for _, ws_id, _ in st.closed}) == 200


@pytest.mark.parametrize(
    ("path", "expect_in", "expect_out"),
    [
        # textframes=False: bytes in, BINARY out.
        ("/bin", (bytes, bytes), (bytes, bytes)),
        # textframes=True: str in, TEXT out.
        ("/text", (str, str), (str, str)),
        # textframes=None: by frame type in, by Python type out.
        ("/echo", (str, bytes), (str, bytes)),
    ],
)
async def test_textframes_modes(path: str, expect_in: tuple[type, type], expect_out: tuple[type, type]) -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> list[Any]:
            with websockets.sync.client.connect(ws_url(url, path)) as c:
                c.send("text " + EMOJI)  # a TEXT frame
                first = c.recv(timeout=5)
                c.send(b"binary")  # a BINARY frame (valid UTF-8)
                second = c.recv(timeout=5)
            return [first, second]

        first, second = await run_in_thread(scenario)
    assert (type(first), type(second)) == expect_out
    assert (type(st.received[0][1]), type(st.received[1][1])) == expect_in
    as_text = [d.decode() if isinstance(d, bytes) else d for d in (first, second)]
    assert as_text == ["text " + EMOJI, "binary"]


async def test_textframes_true_binary_frame_with_bad_utf8_is_1007() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> int | None:
            with websockets.sync.client.connect(ws_url(url, "/text")) as c:
                c.send(b"\xff\xfe")
                with pytest.raises(websockets.ConnectionClosed) as info:
                    c.recv(timeout=5)
            return info.value.rcvd.code if info.value.rcvd else None

        assert await run_in_thread(scenario) == 1007


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [
        (["superchat", "chat"], "superchat"),  # first match in the client's order
        (["chat", "superchat"], "chat"),
        (["other", "chat"], "chat"),
        (["other"], None),  # no match: still a 101, without the header
        (None, None),
    ],
)
async def test_subprotocol_selection(offered: list[str] | None, chosen: str | None) -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> tuple[str | None, str | None, Any]:
            kw = {} if offered is None else {"subprotocols": offered}
            with websockets.sync.client.connect(ws_url(url, "/proto"), **kw) as c:
                assert c.response is not None
                header = c.response.headers.get("Sec-WebSocket-Protocol")
                c.send("which?")
                return c.subprotocol, header, c.recv(timeout=5)

        subprotocol, header, echoed = await run_in_thread(scenario)
    assert subprotocol == chosen
    assert header == chosen
    assert echoed == repr(chosen)
    assert st.opened[0].subprotocol == chosen


async def test_on_open_request_fields_and_send_in_on_open() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> tuple[Any, tuple[str, int]]:
            with websockets.sync.client.connect(
                ws_url(url, "/in%66o?x=1&y=a%20b"),
                additional_headers={"X-Custom-Header": "Some Value"},
            ) as c:
                first = c.recv(timeout=5)  # sent by on_open, after the 101
                local = c.local_address
            return first, (local[0], local[1])

        first, local = await run_in_thread(scenario)
    assert first == "welcome"
    req = st.requests[0]
    assert req.uri == "/in%66o?x=1&y=a%20b"
    assert req.path == "/info"
    assert req.query == "x=1&y=a%20b"
    assert req.headers["x-custom-header"] == "Some Value"
    assert req.headers["X-CUSTOM-HEADER"] == "Some Value"
    assert "X-Custom-Header" in req.headers
    assert req.headers["upgrade"].lower() == "websocket"
    assert req.client == local


async def test_async_callbacks() -> None:
    events: list[str] = []
    closed = trio.Event()

    async def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        await trio.lowlevel.checkpoint()
        events.append("open")
        ws.send("hi from async on_open")

    async def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        await trio.lowlevel.checkpoint()
        events.append(f"message {data}")
        await ws.send_wait(data.upper())

    async def on_close(ws: wsnest.WebSocket) -> None:
        await trio.lowlevel.checkpoint()
        events.append(f"close {ws.close_code}")
        closed.set()

    h = wsnest.handler_ws("/async", on_message, on_open, on_close, textframes=True)
    async with running_server([h]) as (_, url):

        def scenario() -> list[Any]:
            with websockets.sync.client.connect(ws_url(url, "/async")) as c:
                out = [c.recv(timeout=5)]
                for word in ("one", "two", "three"):
                    c.send(word)
                out += [c.recv(timeout=5) for _ in range(3)]
            return out

        got = await run_in_thread(scenario)
        with trio.fail_after(TIMEOUT):
            await closed.wait()
    assert got == ["hi from async on_open", "ONE", "TWO", "THREE"]
    assert events == ["open", "message one", "message two", "message three", "close 1000"]


async def test_broadcast_to_clients_of_two_handlers() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):
        conns = [await run_in_thread(lambda p=p: sync_connect(ws_url(url, p))) for p in ["/b1"] * 3 + ["/b2"] * 2]
        try:
            await st.wait(lambda: len(st.opened) == 5)
            targets = list(st.opened)
            assert wsnest.broadcast(targets, "hello " + EMOJI) == 5
            assert wsnest.broadcast(targets, b"bytes") == 5
            got = await run_in_thread(lambda: [(c.recv(timeout=5), c.recv(timeout=5)) for c in conns])
            assert got[:3] == [("hello " + EMOJI, "bytes")] * 3  # textframes=True: TEXT
            assert got[3:] == [(("hello " + EMOJI).encode(), b"bytes")] * 2  # False: BINARY

            # A closed connection is skipped and not counted.
            await run_in_thread(conns[0].close)
            await st.wait(lambda: len(st.closed) == 1)
            assert wsnest.broadcast(targets, "again") == 4
            got = await run_in_thread(lambda: [c.recv(timeout=5) for c in conns[1:]])
            assert got == ["again", "again", b"again", b"again"]
            with pytest.raises(TypeError):
                wsnest.broadcast(targets, 42)  # type: ignore[arg-type]
            with pytest.raises(ValueError):
                wsnest.broadcast(targets, b"\xff")  # not UTF-8, to textframes=True
        finally:
            for c in conns:
                await run_in_thread(c.close)


async def test_ipv6_loopback() -> None:
    if not has_ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    st = State()
    async with running_server(make_handlers(st), url="http://[::1]:0") as (server, url):
        assert url.startswith("http://[::1]:")
        assert server.url == url

        def scenario() -> Any:
            with websockets.sync.client.connect(ws_url(url, "/echo")) as c:
                c.send("over v6")
                return c.recv(timeout=5)

        assert await run_in_thread(scenario) == "over v6"
    assert st.requests[0].client is not None
    assert st.requests[0].client[0] == "::1"


# -- aiohttp ---------------------------------------------------------------------


async def test_aiohttp_client() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        async def scenario() -> list[Any]:
            out: list[Any] = []
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ws_url(url, "/echo"), max_msg_size=2 * MiB) as c:
                    await c.send_str(EMOJI)
                    msg = await c.receive(timeout=5)
                    out.append((msg.type, msg.data))
                    await c.send_bytes(b"\x00bin")
                    msg = await c.receive(timeout=5)
                    out.append((msg.type, msg.data))
                    await c.send_str("")
                    msg = await c.receive(timeout=5)
                    out.append((msg.type, msg.data))
                    await c.send_bytes(b"a" * MiB)
                    msg = await c.receive(timeout=5)
                    out.append((msg.type, len(msg.data)))
                    await c.close(code=4001, message=b"bye")
                    out.append(c.close_code)
                async with session.ws_connect(ws_url(url, "/close")) as c:
                    await c.send_str("close please")
                    msg = await c.receive(timeout=5)
                    out.append((msg.type, msg.data, msg.extra))
            return out

        got = await run_in_thread(lambda: asyncio.run(scenario()))
        await st.wait(lambda: len(st.closed) == 2)
    assert got == [
        (aiohttp.WSMsgType.TEXT, EMOJI),
        (aiohttp.WSMsgType.BINARY, b"\x00bin"),
        (aiohttp.WSMsgType.TEXT, ""),
        (aiohttp.WSMsgType.BINARY, MiB),
        4001,
        (aiohttp.WSMsgType.CLOSE, 4002, "x"),
    ]
    assert sorted(code for _, _, code in st.closed) == [4001, 4002]


async def test_aiohttp_over_limit_gets_1009() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        async def scenario() -> Any:
            async with aiohttp.ClientSession() as session, session.ws_connect(ws_url(url, "/bin")) as c:
                await c.send_bytes(b"a" * (MiB + 1))
                msg = await c.receive(timeout=5)
                return msg.type, msg.data

        assert await run_in_thread(lambda: asyncio.run(scenario())) == (aiohttp.WSMsgType.CLOSE, 1009)


# -- websocket-client ----------------------------------------------------------------


async def test_websocket_client_library() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> list[Any]:
            out: list[Any] = []
            c = websocket.create_connection(ws_url(url, "/echo"), timeout=5)
            try:
                c.send("plain " + EMOJI)
                out.append(c.recv())
                c.send_binary(b"\x01\x02")
                out.append(c.recv())
                c.ping(b"are you there")
                opcode, frame = c.recv_data_frame(control_frame=True)
                out.append((opcode, frame.data))
                c.send_close(4001, b"bye")
                opcode, frame = c.recv_data_frame(control_frame=True)
                out.append((opcode, frame.data))
            finally:
                c.shutdown()
            return out

        got = await run_in_thread(scenario)
        await st.wait(lambda: len(st.closed) == 1)
    assert got == [
        "plain " + EMOJI,
        b"\x01\x02",
        (websocket.ABNF.OPCODE_PONG, b"are you there"),
        (websocket.ABNF.OPCODE_CLOSE, (4001).to_bytes(2, "big")),
    ]
    assert st.closed[0][2] == 4001


async def test_websocket_client_server_close() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):

        def scenario() -> Any:
            c = websocket.create_connection(ws_url(url, "/close"), timeout=5)
            try:
                c.send("close please")
                opcode, frame = c.recv_data_frame(control_frame=True)
                return opcode, frame.data
            finally:
                c.shutdown()

        assert await run_in_thread(scenario) == (websocket.ABNF.OPCODE_CLOSE, (4002).to_bytes(2, "big") + b"x")


# -- wsproto by hand -------------------------------------------------------------------


class WsprotoClient:
    """wsproto's sans-I/O client over a trio TCP stream."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = WSConnection(ConnectionType.CLIENT)
        self.pending: deque[Event] = deque()

    @classmethod
    async def connect(cls, url: str, target: str, subprotocols: list[str] | None = None) -> WsprotoClient:
        host, port = host_port(url)
        client = cls(await trio.open_tcp_stream(host, port))
        await client.send(Request(host=host, target=target, subprotocols=subprotocols or []))
        event = await client.next_event()
        if isinstance(event, RejectConnection):
            raise AssertionError(f"rejected with {event.status_code}")
        assert isinstance(event, AcceptConnection), event
        return client

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.conn.send(event))

    async def next_event(self) -> Event:
        while not self.pending:
            data = await self.stream.receive_some(65536)
            self.conn.receive_data(data or None)
            self.pending.extend(self.conn.events())
        return self.pending.popleft()

    async def message(self) -> Event | str | bytes:
        """The next whole message (str or bytes) or the next other event."""
        parts: list[Any] = []
        while True:
            event = await self.next_event()
            if not isinstance(event, Message):
                return event
            parts.append(event.data)
            if event.message_finished:
                return "".join(parts) if isinstance(event, TextMessage) else b"".join(parts)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def test_wsproto_fragmented_text_and_binary() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await WsprotoClient.connect(url, "/echo")
            try:
                await c.send(TextMessage(data="frag", message_finished=False))
                await c.send(TextMessage(data=EMOJI, message_finished=False))
                await c.send(TextMessage(data="", message_finished=False))
                await c.send(TextMessage(data="end", message_finished=True))
                assert await c.message() == "frag" + EMOJI + "end"
                await c.send(BytesMessage(data=b"\x00" * 70000, message_finished=False))
                await c.send(BytesMessage(data=b"\x01", message_finished=True))
                assert await c.message() == b"\x00" * 70000 + b"\x01"
                await c.send(TextMessage(data=""))
                assert await c.message() == ""
            finally:
                await c.aclose()


async def test_wsproto_ping_pong_and_close_codes() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await WsprotoClient.connect(url, "/echo")
            try:
                await c.send(Ping(payload=b"ping!"))
                event = await c.message()
                assert isinstance(event, Pong)
                assert event.payload == b"ping!"
                await c.send(CloseConnection(code=4001, reason="bye"))
                event = await c.message()
                assert isinstance(event, CloseConnection)
                assert event.code == 4001
            finally:
                await c.aclose()
            await st.wait(lambda: len(st.closed) == 1)
            assert st.closed[0][2] == 4001

            c = await WsprotoClient.connect(url, "/close")
            try:
                await c.send(TextMessage(data="close please"))
                event = await c.message()
                assert isinstance(event, CloseConnection)
                assert (event.code, event.reason) == (4002, "x")
                await c.send(event.response())
                assert await c.stream.receive_some(100) == b""  # the server hangs up
            finally:
                await c.aclose()
            await st.wait(lambda: len(st.closed) == 2)
            assert st.closed[1][2] == 4002


async def test_wsproto_size_limit_boundary() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await WsprotoClient.connect(url, "/bin")
            try:
                await c.send(BytesMessage(data=b"\x07" * (MiB // 2), message_finished=False))
                await c.send(BytesMessage(data=b"\x07" * (MiB // 2), message_finished=True))
                assert await c.message() == b"\x07" * MiB
                # One byte over, split so that only the last fragment overflows.
                await c.send(BytesMessage(data=b"\x07" * MiB, message_finished=False))
                await c.send(BytesMessage(data=b"\x07", message_finished=True))
                event = await c.message()
                assert isinstance(event, CloseConnection)
                assert event.code == 1009
            finally:
                await c.aclose()
            await st.wait(lambda: len(st.closed) == 1)
            assert st.closed[0][2] == 1009


async def test_wsproto_subprotocol_and_textframes_types() -> None:
    st = State()
    async with running_server(make_handlers(st)) as (_, url):
        with trio.fail_after(TIMEOUT):
            c = await WsprotoClient.connect(url, "/proto", subprotocols=["nope", "superchat", "chat"])
            try:
                await c.send(TextMessage(data="?"))
                assert await c.message() == "'superchat'"
            finally:
                await c.aclose()
            for path, sent, expected in [
                ("/bin", "t", b"t"),
                ("/bin", b"b", b"b"),
                ("/text", "t", "t"),
                ("/text", b"b", "b"),
                ("/echo", "t", "t"),
                ("/echo", b"b", b"b"),
            ]:
                c = await WsprotoClient.connect(url, path)
                try:
                    message = TextMessage(data=sent) if isinstance(sent, str) else BytesMessage(data=sent)
                    await c.send(message)
                    assert await c.message() == expected, path
                finally:
                    await c.aclose()
