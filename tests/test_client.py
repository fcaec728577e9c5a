"""``wsnest.connect``: the trio client, against wsnest's own server and
against an independent server (websockets, in a thread), in plain TCP and
TLS, with and without compression. The suite runs once per core."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import websockets.sync.server

import wsnest
from serverutil import TIMEOUT, running_server, ws_url

# -- a websockets server in a thread ----------------------------------------------


@pytest.fixture
def websockets_echo() -> Iterator[str]:
    """An echo server of the websockets library (compression on), its URL."""

    def echo(conn: Any) -> None:
        for msg in conn:
            if msg == "close-4001":
                conn.close(4001, "as asked")
                return
            conn.send(msg)

    with websockets.sync.server.serve(echo, "127.0.0.1", 0, max_size=2**24) as server:
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        host, port = server.socket.getsockname()[:2]
        try:
            yield f"ws://{host}:{port}/"
        finally:
            server.shutdown()
            thread.join(TIMEOUT)


def _echo(ws: wsnest.WebSocket, data: Any) -> None:
    if data == "close-4001":
        ws.close(4001, "as asked")
    else:
        ws.send(data)


# -- against wsnest's own server --------------------------------------------------------


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_echo_with_wsnest_server(deflate: bool) -> None:
    handler = wsnest.handler_ws("/ws", _echo, textframes=None, permessage_deflate=deflate)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), wsnest.connect(ws_url(url), permessage_deflate=deflate) as ws:
            assert ws.permessage_deflate is deflate
            for message in ["héllo", b"\x00\x01", "x" * 100_000, b"y" * 300_000, ""]:
                assert ws.send(message) == 0
                assert await ws.receive() == message
            assert await ws.send_wait("again") == 0
            assert await ws.receive() == "again"
        assert ws.closed and ws.close_code == 1000


async def test_async_for_ends_on_a_normal_close_and_raises_on_an_error_code() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server([wsnest.handler_ws("/ws", _echo, textframes=None)]) as (_, url):
            async with wsnest.connect(ws_url(url)) as ws:
                ws.send("one")
                ws.send("close-4001")
                got = []
                with pytest.raises(wsnest.ConnectionClosedError) as info:
                    async for msg in ws:
                        got.append(msg)
                assert got == ["one"]
                assert (info.value.code, info.value.reason) == (4001, "as asked")

            async with wsnest.connect(ws_url(url)) as ws:
                ws.send("two")
                assert await ws.receive() == "two"
                ws.close(1000)
                assert [m async for m in ws] == []  # ends cleanly
                with pytest.raises(wsnest.ConnectionClosedOK):
                    await ws.receive()


async def test_textframes_modes_on_the_client() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server([wsnest.handler_ws("/ws", _echo, textframes=None)]) as (_, url):
            async with wsnest.connect(ws_url(url), textframes=False) as ws:
                ws.send("text")  # goes as BINARY, comes back as bytes
                assert await ws.receive() == b"text"
            async with wsnest.connect(ws_url(url), textframes=True) as ws:
                ws.send(b"bytes")  # goes as TEXT
                assert await ws.receive() == "bytes"


async def test_subprotocol_is_negotiated() -> None:
    handler = wsnest.handler_ws("/ws", _echo, subprotocols=["b", "a"])
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), wsnest.connect(ws_url(url), subprotocols=["a", "b"]) as ws:
            assert ws.subprotocol == "a"


async def test_client_messages_are_limited_by_max_message_size() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            running_server([wsnest.handler_ws("/ws", _echo)]) as (_, url),
            wsnest.connect(ws_url(url), max_message_size=1000) as ws,
        ):
            assert ws.send(b"x" * 1001) == 17
            ws.send(b"ok")
            assert await ws.receive() == b"ok"


async def test_a_server_going_away_ends_the_client_with_1001() -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            running_server([wsnest.handler_ws("/ws", _echo)]) as (server, url),
            wsnest.connect(ws_url(url)) as ws,
        ):
            ws.send(b"x")
            assert await ws.receive() == b"x"
            await server.aclose()
            assert [m async for m in ws] == []
            assert ws.close_code == 1001


async def test_many_messages_are_pulled_in_order_with_a_small_queue() -> None:
    n = 2000
    with trio.fail_after(TIMEOUT):
        async with (
            running_server([wsnest.handler_ws("/ws", _echo)]) as (_, url),
            wsnest.connect(ws_url(url), max_queue=2) as ws,
        ):
            for i in range(n):
                assert await ws.send_wait(i.to_bytes(4, "big")) == 0
            got = [int.from_bytes(await ws.receive(), "big") for _ in range(n)]
            assert got == list(range(n))


# -- against websockets ------------------------------------------------------------------


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_echo_with_websockets_server(websockets_echo: str, deflate: bool) -> None:
    with trio.fail_after(TIMEOUT):
        async with wsnest.connect(websockets_echo, permessage_deflate=deflate, max_message_size=2**24) as ws:
            assert ws.permessage_deflate is deflate
            for message in ["héllo" * 1000, b"\xff" * 70_000, "z"]:
                ws.send(message)
                assert await ws.receive() == message
            ws.send("close-4001")
            with pytest.raises(wsnest.ConnectionClosedError) as info:
                await ws.receive()
            assert info.value.code == 4001


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> wsnest.CertPair:
    return wsnest.write_cert()


async def test_wss_with_a_trusted_certificate(pair: wsnest.CertPair) -> None:
    tls = wsnest.tls_config(pair.cert, pair.key)
    client_ctx = ssl.create_default_context(cadata=pair.cert)
    handler = wsnest.handler_ws("/ws", _echo, textframes=None)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler], tls=tls, url="https://127.0.0.1:0") as (_, url):
            async with wsnest.connect(ws_url(url), tls=client_ctx) as ws:
                ws.send("secure")
                assert await ws.receive() == "secure"
            with pytest.raises(wsnest.HandshakeError, match="TLS handshake"):
                async with wsnest.connect(ws_url(url)):  # the system store does not trust it
                    pass


# -- failures --------------------------------------------------------------------------------


async def test_a_404_is_an_invalid_status_with_the_facts() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server([wsnest.handler_ws("/ws", _echo)]) as (_, url):
            with pytest.raises(wsnest.InvalidStatus) as info:
                async with wsnest.connect(ws_url(url, "/nowhere")):
                    pass
            assert info.value.status == 404
            assert b"Not Found" in info.value.body


async def test_redirects_are_followed_up_to_the_bound() -> None:
    handlers = [
        wsnest.handler_ws("/ws", _echo),
        wsnest.handler_redirect("/old", "/ws", status=307),
        wsnest.handler_redirect("/loop", "/loop", status=302),
    ]
    with trio.fail_after(TIMEOUT):
        async with running_server(handlers) as (_, url):
            async with wsnest.connect(ws_url(url, "/old")) as ws:
                ws.send(b"moved")
                assert await ws.receive() == b"moved"
            with pytest.raises(wsnest.HandshakeError, match="max_redirects=3"):
                async with wsnest.connect(ws_url(url, "/loop"), max_redirects=3):
                    pass


async def test_refused_and_bad_urls_and_arguments() -> None:
    with trio.fail_after(TIMEOUT):
        with pytest.raises(OSError):
            async with wsnest.connect("ws://127.0.0.1:1/"):
                pass
        with pytest.raises(wsnest.InvalidURL):
            async with wsnest.connect("http://127.0.0.1/"):
                pass
        with pytest.raises(TypeError, match="unknown limit"):
            async with wsnest.connect("ws://127.0.0.1:1/", max_sizes=3):
                pass
        with pytest.raises(TypeError, match="textframes"):
            async with wsnest.connect("ws://127.0.0.1:1/", textframes="yes"):
                pass


async def test_open_timeout() -> None:
    # A listener that never answers the upgrade request.
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    with trio.fail_after(TIMEOUT), pytest.raises(TimeoutError, match="open_timeout"):
        async with wsnest.connect(f"ws://127.0.0.1:{port}/", open_timeout=0.2):
            pass
    listener.close()


async def test_receive_is_refused_on_a_callback_connection() -> None:
    seen: list[BaseException] = []

    async def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        try:
            await ws.receive()
        except RuntimeError as exc:
            seen.append(exc)
        ws.send(data)

    with trio.fail_after(TIMEOUT):
        async with (
            running_server([wsnest.handler_ws("/ws", on_message)]) as (_, url),
            wsnest.connect(ws_url(url)) as ws,
        ):
            ws.send(b"x")
            assert await ws.receive() == b"x"
    assert len(seen) == 1 and "on_message" in str(seen[0])


async def test_errors_leave_the_block_unwrapped() -> None:
    with trio.fail_after(TIMEOUT):
        async with running_server([wsnest.handler_ws("/ws", _echo, textframes=None)]) as (_, url):
            with pytest.raises(KeyError):
                async with wsnest.connect(ws_url(url)):
                    raise KeyError("mine")
            with pytest.raises(wsnest.ConnectionClosedError):
                async with wsnest.connect(ws_url(url)) as ws:
                    ws.send("close-4001")
                    await ws.receive()


@pytest.mark.parametrize("textframes", [True, None, False], ids=["text", "auto", "bytes"])
async def test_large_text_echo_each_mode(textframes: bool | None) -> None:
    # Large text takes the cores' large-message paths on both sides (built
    # in place, spare buffer, kept UTF-8 sent without encoding): ASCII,
    # 2/3/4-byte characters, and the client sending on the str it received.
    handler = wsnest.handler_ws("/ws", _echo, textframes=textframes)
    messages = ["a" * 400_000, "\u20ac\U0001f600x" * 60_000 + "\xe9", "\xe9" * 300_000, "\u20ac" * 100_000]
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), wsnest.connect(ws_url(url)) as ws:
            for message in messages:
                assert ws.send(message) == 0
                got = await ws.receive()
                assert got == (message.encode() if textframes is False else message)
                if isinstance(got, str):
                    assert ws.send(got) == 0  # its kept UTF-8, on the client side
                    assert await ws.receive() == message
        assert ws.closed and ws.close_code == 1000
