"""A protocol error read together with good messages, on connections that
queue their messages (async ``on_message``, ``receive()``): the application
still takes and answers the messages before the close frame goes out, as
an inline ``on_message`` does (Autobahn cases 3.2, 4.1.3, 5.15 and the
like). The suite runs once per core."""

from __future__ import annotations

import struct

import trio

import wsnest
from serverutil import TIMEOUT, raw_ws, running_server
from wire import OP_BINARY, OP_CLOSE, OP_TEXT, client_frame, parse_close
from wsnest.core import accept_key

BAD_OPCODE = 0x3  # reserved: fails with 1002


async def test_async_on_message_answers_before_failing() -> None:
    async def echo(ws: wsnest.WebSocket, data: bytes) -> None:
        await trio.lowlevel.checkpoint()  # a real await before answering
        ws.send(data)

    handler = wsnest.handler_ws("/ws", echo)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            # Two messages and a bad frame, in one write: one read.
            await c.send(client_frame(OP_TEXT, "one") + client_frame(OP_TEXT, "two") + client_frame(BAD_OPCODE, b"x"))
            for expected in (b"one", b"two"):
                _, op, payload = await c.read_frame()
                assert (op, payload) == (OP_BINARY, expected)
            _, op, payload = await c.read_frame()
            assert op == OP_CLOSE
            assert parse_close(payload)[0] == 1002


async def _raw_server(sends: bytes, received: list[bytes], task_status: trio.TaskStatus[int]) -> None:
    """A byte-level WebSocket server for one client: answers the upgrade,
    then writes ``sends`` in one write and records what the client sends
    until it closes."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    task_status.started(listeners[0].socket.getsockname()[1])
    stream = await listeners[0].accept()
    for listener in listeners:
        await listener.aclose()
    head = b""
    while b"\r\n\r\n" not in head:
        head += await stream.receive_some(4096)
    key = next(
        line.split(b":", 1)[1].strip().decode()
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"sec-websocket-key")
    )
    await stream.send_all(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n".encode()
        + sends
    )
    buf = bytearray()
    while data := await stream.receive_some(65536):
        buf += data
    received.append(bytes(buf))
    await stream.aclose()


def _client_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, unmasked payload) of each masked client frame in ``data``."""
    frames = []
    buf = bytearray(data)
    while buf:
        b0, b1 = buf[0], buf[1]
        assert b1 & 0x80, "client frames are masked"
        n, pos = b1 & 0x7F, 2
        if n == 126:
            (n,) = struct.unpack("!H", buf[2:4])
            pos = 4
        key = bytes(buf[pos : pos + 4])
        payload = bytes(b ^ key[i & 3] for i, b in enumerate(buf[pos + 4 : pos + 4 + n]))
        frames.append((b0 & 0x0F, payload))
        del buf[: pos + 4 + n]
    return frames


async def test_client_pull_answers_before_failing() -> None:
    good = b"\x81\x03one" + b"\x81\x03two"  # two unmasked text frames
    bad = bytes((0x80 | BAD_OPCODE, 0x01)) + b"x"
    received: list[bytes] = []
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(_raw_server, good + bad, received)
            answered = []
            error = None
            async with wsnest.connect(f"ws://127.0.0.1:{port}/") as ws:
                try:
                    async for msg in ws:
                        answered.append(msg)
                        ws.send(msg)
                except wsnest.ConnectionClosedError as exc:
                    error = exc
    assert answered == ["one", "two"]
    assert error is not None and error.code == 1002
    frames = _client_frames(received[0])
    assert frames[:2] == [(OP_TEXT, b"one"), (OP_TEXT, b"two")]
    assert frames[2][0] == OP_CLOSE and parse_close(frames[2][1])[0] == 1002


async def test_failure_waits_at_most_close_timeout_for_a_slow_consumer() -> None:
    """An application that never takes its messages does not hold the
    failure back forever: the close frame leaves after ``close_timeout``."""
    started, release = trio.Event(), trio.Event()

    async def stuck(ws: wsnest.WebSocket, data: bytes) -> None:
        started.set()
        await release.wait()

    handler = wsnest.handler_ws("/ws", stuck, close_timeout=0.2)
    with trio.fail_after(TIMEOUT):
        async with running_server([handler]) as (_, url), raw_ws(url) as c:
            await c.send(client_frame(OP_TEXT, "a") + client_frame(OP_TEXT, "b") + client_frame(BAD_OPCODE, b"x"))
            code, _ = await c.read_close()
            assert code == 1002
            assert started.is_set()
            release.set()
