"""``ws.send_stream``: one message sent from an iterable or async iterable
of chunks, one fragment per chunk, with backpressure.

Real peers over loopback: a wsnest server streaming to a raw client that
sees every frame and to a ``websockets`` client; the wsnest client
(``wsnest.connect``) streaming to a ``websockets`` server and to a raw
server that sees every (masked) frame. Plus the sans-I/O half
(``WebSocketSession.send_fragment``) and the incremental UTF-8 check. The
suite runs once per core (CI)."""

from __future__ import annotations

import functools
import itertools
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
import websockets.sync.server

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
from wire import DEFLATE_OFFER, OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, client_frame, close_frame
from wsnest.core import (
    CLIENT,
    SERVER,
    FrameParser,
    accept_key,
    close_payload,
    encode_frame,
    new_session,
    validate_utf8,
)
from wsnest.core._deflate import DeflateParams
from wsnest.core._session import SPILL_SIZE
from wsnest.server._websocket import _Utf8Pieces

# -- a frame-level view of either end -------------------------------------------------


@dataclass
class Frame:
    fin: bool
    rsv1: bool
    opcode: int
    masked: bool
    payload: bytes  # unmasked


class Peer:
    """Reads whole frames, masked or not, from a trio stream."""

    def __init__(self, stream: trio.abc.Stream, buf: bytes | bytearray = b"") -> None:
        self.stream = stream
        self.buf = bytearray(buf)

    async def _need(self, n: int) -> None:
        while len(self.buf) < n:
            data = await self.stream.receive_some(1 << 16)
            if not data:
                raise EOFError(f"closed with {len(self.buf)} of {n} bytes")
            self.buf += data

    async def frame(self) -> Frame:
        await self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        length, pos = b1 & 0x7F, 2
        if length >= 126:
            size = 2 if length == 126 else 8
            await self._need(2 + size)
            length, pos = int.from_bytes(self.buf[2 : 2 + size], "big"), 2 + size
        masked = bool(b1 & 0x80)
        await self._need(pos + 4 * masked + length)
        mask = bytes(self.buf[pos : pos + 4]) if masked else b""
        pos += 4 * masked
        payload = bytes(self.buf[pos : pos + length])
        if masked:
            payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        del self.buf[: pos + length]
        assert b0 & 0x30 == 0, "RSV2 or RSV3 set"
        return Frame(bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, masked, payload)

    async def frames_of_message(self) -> list[Frame]:
        """The frames up to and with a data frame with FIN (control frames too)."""
        frames = []
        while True:
            frame = await self.frame()
            frames.append(frame)
            if frame.fin and frame.opcode < OP_CLOSE:
                return frames

    async def close_code(self) -> int:
        """Skip frames up to the close frame; its code."""
        while (frame := await self.frame()).opcode != OP_CLOSE:
            pass
        return int.from_bytes(frame.payload[:2], "big")

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)


def summary(frames: list[Frame]) -> list[tuple[bool, int, bytes]]:
    return [(f.fin, f.opcode, f.payload) for f in frames]


@asynccontextmanager
async def server_and_peer(
    textframes: bool | None = None, offer: tuple[tuple[str, str], ...] = (), **kw: Any
) -> AsyncIterator[tuple[wsnest.WebSocket, Peer, Tracker]]:
    """A wsnest server, a raw client past the handshake, and the server's
    ``ws`` of that client."""
    t = Tracker()
    handler = wsnest.handler_ws(
        "/ws", kw.pop("on_message", _ignore), on_open=t.on_open, on_close=t.on_close, textframes=textframes, **kw
    )
    async with running_server([handler]) as (_, url):
        with trio.fail_after(TIMEOUT):
            raw = await RawClient.connect(url)
            try:
                await raw.handshake(extra=offer)
                await t.wait_opened(1)
                yield t.opened[0], Peer(raw.stream, raw.buf), t
            finally:
                await raw.aclose()


def _ignore(ws: wsnest.WebSocket, data: Any) -> None:
    """An ``on_message`` for connections whose messages do not matter."""


async def agen(*chunks: Any) -> AsyncIterator[Any]:
    for chunk in chunks:
        await trio.lowlevel.checkpoint()
        yield chunk


# -- the wire: one frame per chunk -----------------------------------------------------


async def test_each_chunk_is_one_fragment_and_an_empty_final_frame_ends_the_message() -> None:
    async with server_and_peer() as (ws, peer, _):
        assert await ws.send_stream(["ab", "", "cd"]) == 0
        frames = await peer.frames_of_message()
        assert summary(frames) == [(False, OP_TEXT, b"ab"), (False, OP_CONT, b"cd"), (True, OP_CONT, b"")]
        assert not any(f.masked or f.rsv1 for f in frames)

        # An async iterable; bytes-like chunks of every kind, one of them
        # large (queued by reference); a bytearray changed once it was
        # handed over does not change what was sent.
        big = os.urandom(SPILL_SIZE + 1000)
        reused = bytearray(b"mutable")

        async def chunks() -> AsyncIterator[Any]:
            yield b"x"
            yield big
            yield reused
            reused[:] = b"CHANGED"
            yield memoryview(b"--view--")[2:6]
            yield memoryview(bytearray(b"\x01\x00\x02\x00")).cast("H")  # counted in bytes

        assert await ws.send_stream(chunks()) == 0
        assert summary(await peer.frames_of_message()) == [
            (False, OP_BINARY, b"x"),
            (False, OP_CONT, big),
            (False, OP_CONT, b"mutable"),
            (False, OP_CONT, b"view"),
            (False, OP_CONT, b"\x01\x00\x02\x00"),
            (True, OP_CONT, b""),
        ]
        # Afterwards send() is back to normal: one frame per message.
        assert ws.send("after") == 0
        assert summary(await peer.frames_of_message()) == [(True, OP_TEXT, b"after")]


@pytest.mark.parametrize(
    ("textframes", "chunks", "frame"),
    [
        (None, [], (True, OP_BINARY, b"")),
        (None, [""], (True, OP_TEXT, b"")),
        (None, [b"", b""], (True, OP_BINARY, b"")),
        (True, [], (True, OP_TEXT, b"")),
        (False, [""], (True, OP_BINARY, b"")),
    ],
)
async def test_no_content_sends_one_empty_message(textframes: bool | None, chunks: list[Any], frame: Any) -> None:
    async with server_and_peer(textframes) as (ws, peer, _):
        assert await ws.send_stream(chunks) == 0
        assert summary(await peer.frames_of_message()) == [frame]


@pytest.mark.parametrize(
    ("textframes", "chunks", "opcode", "payload"),
    [
        (None, ["hé", "llo"], OP_TEXT, "héllo".encode()),
        (None, [b"\xff", b"\x00"], OP_BINARY, b"\xff\x00"),
        (True, [b"h\xc3", b"\xa9", "llo"], OP_TEXT, "héllo".encode()),
        (False, ["hé", b"\xff"], OP_BINARY, "hé".encode() + b"\xff"),
    ],
    ids=["auto-str", "auto-bytes", "text", "bytes"],
)
async def test_textframes_decides_the_message_type(
    textframes: bool | None, chunks: list[Any], opcode: int, payload: bytes
) -> None:
    async with server_and_peer(textframes) as (ws, peer, _):
        assert await ws.send_stream(agen(*chunks)) == 0
        frames = await peer.frames_of_message()
        assert frames[0].opcode == opcode
        assert all(f.opcode == OP_CONT for f in frames[1:])
        assert b"".join(f.payload for f in frames) == payload


@pytest.mark.parametrize(
    ("chunks", "error"),
    [
        ("text", "expected an iterable of chunks, got str"),
        (b"bytes", "expected an iterable of chunks, got bytes"),
        (42, "expected an iterable or async iterable, got int"),
        ([1], "expected str or bytes-like chunks, got int"),
    ],
)
async def test_what_is_not_chunks_raises_and_leaves_the_connection_alone(chunks: Any, error: str) -> None:
    async with server_and_peer() as (ws, peer, _):
        with pytest.raises(TypeError, match=f"chunks: {error}"):
            await ws.send_stream(chunks)
        assert not ws.closed
        assert ws.send("still") == 0
        assert summary(await peer.frames_of_message()) == [(True, OP_TEXT, b"still")]


async def test_auto_mode_refuses_mixed_chunks_and_fails_the_half_sent_message() -> None:
    async with server_and_peer() as (ws, peer, t):
        with pytest.raises(TypeError, match="all str or all bytes-like"):
            await ws.send_stream(["a", b"b"])
        assert ws.closed and ws.close_code == 1011
        assert summary([await peer.frame()]) == [(False, OP_TEXT, b"a")]
        assert await peer.close_code() == 1011
        await peer.send(close_frame(1011))
        await t.wait_closed(1)
        assert t.codes() == [1011]


# -- UTF-8 ----------------------------------------------------------------------------------

_UTF8_SAMPLES = [
    "a€b😀c".encode(),
    "é€😀".encode(),
    b"\xe2\x82",  # cut short
    b"\xed\xa0\x80",  # a surrogate
    b"\xf4\x90\x80\x80",  # over U+10FFFF
    b"\xc0\xaf",  # overlong
    b"a\xffb",
    b"\xe2\x82\xe2\x82\xac",
    b"\xf0\x9f\x98",
    b"\x80",
]


def _pieces_ok(pieces: list[bytes]) -> bool:
    check = _Utf8Pieces()
    return all(check.feed(memoryview(p)) for p in pieces) and not check.pending


@pytest.mark.parametrize("sample", _UTF8_SAMPLES, ids=lambda s: s.hex())
def test_utf8_in_pieces_agrees_with_the_whole_check_at_every_split(sample: bytes) -> None:
    whole = validate_utf8(sample)
    n = len(sample)
    for i, j in itertools.combinations_with_replacement(range(n + 1), 2):
        pieces = [sample[:i], sample[i:j], sample[j:]]
        assert _pieces_ok(pieces) is whole, pieces
    # One byte at a time.
    assert _pieces_ok([sample[k : k + 1] for k in range(n)]) is whole


def test_utf8_in_pieces_rejects_an_impossible_prefix_at_once() -> None:
    check = _Utf8Pieces()
    assert check.feed(memoryview(b"ok\xe2")) and check.pending == b"\xe2"
    assert not check.feed(memoryview(b"\x41"))  # a continuation byte was due
    assert not _Utf8Pieces().feed(memoryview(b"\xed\xa0"))  # a surrogate can never end well
    assert not _Utf8Pieces().feed(memoryview(b"\xf5"))


async def test_text_split_inside_characters_arrives_whole_at_a_websockets_client() -> None:
    text = "pâté €5 😀!"
    data = text.encode()
    chunks = [data[i : i + 1] for i in range(len(data))]  # every character split
    t = Tracker()
    handler = wsnest.handler_ws("/ws", _ignore, on_open=t.on_open, textframes=True)
    async with running_server([handler]) as (_, url):

        def client() -> Any:
            conn = sync_connect(ws_url(url))
            try:
                return conn.recv(timeout=TIMEOUT)
            finally:
                conn.close()

        async with trio.open_nursery() as nursery:
            got: list[Any] = []

            async def receive() -> None:
                got.append(await run_in_thread(client))

            nursery.start_soon(receive)
            with trio.fail_after(TIMEOUT):
                await t.wait_opened(1)
                assert await t.opened[0].send_stream(agen(*chunks)) == 0
        assert got == [text]


async def test_invalid_utf8_in_the_first_chunk_sends_nothing() -> None:
    async with server_and_peer(textframes=True) as (ws, peer, _):
        with pytest.raises(ValueError, match="must be valid UTF-8"):
            await ws.send_stream([b"\xed\xa0", b"\x80"])
        assert not ws.closed
        assert ws.send("fine") == 0
        assert summary(await peer.frames_of_message()) == [(True, OP_TEXT, b"fine")]


@pytest.mark.parametrize(
    ("chunks", "error"),
    [
        ([b"ok", b"\xff"], "must be valid UTF-8"),
        ([b"ok\xe2", b"\x82"], "ends inside a UTF-8 sequence"),
        ([b"ok\xe2", "x"], "a str chunk follows bytes that end inside a UTF-8 sequence"),
    ],
    ids=["bad-byte", "cut-short", "str-after-cut"],
)
async def test_invalid_utf8_after_a_fragment_raises_and_fails_the_connection(chunks: list[Any], error: str) -> None:
    async with server_and_peer(textframes=True) as (ws, peer, _):
        with pytest.raises(ValueError, match=error):
            await ws.send_stream(chunks)
        assert ws.closed and ws.close_code == 1011
        first = await peer.frame()
        assert (first.fin, first.opcode) == (False, OP_TEXT)
        assert await peer.close_code() == 1011


# -- the size limit ----------------------------------------------------------------------


async def test_a_first_chunk_over_the_limit_returns_17_and_sends_nothing() -> None:
    async with server_and_peer(max_message_size=10) as (ws, peer, _):
        pulled: list[bytes] = []

        def chunks() -> Iterator[bytes]:
            for chunk in (b"x" * 11, b"never"):
                pulled.append(chunk)
                yield chunk

        assert await ws.send_stream(chunks()) == wsnest.ErrorCode.MSG_SIZE == 17
        assert pulled == [b"x" * 11]
        assert not ws.closed
        assert await ws.send_stream([b"x" * 4, b"y" * 6]) == 0  # exactly the limit
        assert b"".join(f.payload for f in await peer.frames_of_message()) == b"xxxxyyyyyy"


async def test_going_over_the_limit_mid_message_fails_the_connection_with_1009() -> None:
    async with server_and_peer(max_message_size=10) as (ws, peer, t):
        assert await ws.send_stream(agen(b"x" * 6, b"y" * 6)) == 17
        assert ws.closed and ws.close_code == 1009
        assert summary([await peer.frame()]) == [(False, OP_BINARY, b"x" * 6)]
        assert await peer.close_code() == 1009  # the second chunk never left
        await peer.send(close_frame(1009))
        await t.wait_closed(1)


# -- closing and failing mid-stream ------------------------------------------------------


async def test_a_close_of_ours_mid_stream_returns_7_and_stops_iterating() -> None:
    async with server_and_peer() as (ws, peer, _):
        pulled: list[str] = []

        async def chunks() -> AsyncIterator[str]:
            for chunk in ("a", "b", "c"):
                pulled.append(chunk)
                yield chunk
                if chunk == "a":
                    assert ws.close(4000) == 0

        assert await ws.send_stream(chunks()) == wsnest.ErrorCode.CLOSED == 7
        assert pulled == ["a", "b"]  # "b" was pulled as the close came: not sent
        assert summary([await peer.frame()]) == [(False, OP_TEXT, b"a")]
        assert await peer.close_code() == 4000
        assert await ws.send_stream(["late"]) == 7


async def test_the_peer_closing_mid_stream_returns_7() -> None:
    async with server_and_peer() as (ws, peer, t):
        pulled: list[str] = []

        async def chunks() -> AsyncIterator[str]:
            pulled.append("a")
            yield "a"
            await t.wait_closed(1)  # the peer closed meanwhile
            pulled.append("b")
            yield "b"
            pulled.append("c")
            yield "c"

        result: list[int] = []

        async def stream() -> None:
            result.append(await ws.send_stream(chunks()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream)
            assert summary([await peer.frame()]) == [(False, OP_TEXT, b"a")]
            await peer.send(close_frame(1000))
            assert await peer.close_code() == 1000  # the reply goes between fragments
        assert result == [7]
        assert pulled == ["a", "b"]
        assert ws.close_code == 1000


@pytest.mark.parametrize("how", ["raises", "cancelled"])
async def test_an_iteration_that_ends_badly_mid_message_fails_the_connection_with_1011(how: str) -> None:
    async with server_and_peer() as (ws, peer, _):

        async def chunks() -> AsyncIterator[str]:
            yield "a"
            if how == "raises":
                raise KeyError("the producer broke")
            await trio.sleep_forever()
            yield "never"  # pragma: no cover

        if how == "raises":
            with pytest.raises(KeyError):
                await ws.send_stream(chunks())
        else:
            async with trio.open_nursery() as nursery:

                async def stream() -> None:
                    await ws.send_stream(chunks())

                nursery.start_soon(stream)
                assert summary([await peer.frame()]) == [(False, OP_TEXT, b"a")]
                nursery.cancel_scope.cancel()
        assert ws.close_code == 1011
        assert await peer.close_code() == 1011


# -- one data message at a time; control frames between ------------------------------------


async def test_other_data_messages_wait_for_the_stream_and_control_frames_interleave() -> None:
    go = trio.Event()
    in_batch: list[int] = []

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        if data == "go":
            in_batch.append(ws.send("echo"))  # inside the reader's batch
            go.set()

    async with server_and_peer(on_message=on_message) as (ws, peer, _):
        results: dict[str, int] = {}

        async with trio.open_nursery() as nursery:

            async def waiting_send() -> None:
                results["send_wait"] = await ws.send_wait("waited")

            async def second_stream() -> None:
                results["second"] = await ws.send_stream(["second"])

            async def chunks() -> AsyncIterator[str]:
                yield "a"
                results["send"] = ws.send("x")
                results["broadcast"] = wsnest.broadcast([ws], "x")
                nursery.start_soon(waiting_send)
                nursery.start_soon(second_stream)
                await trio.testing.wait_all_tasks_blocked()
                assert results.keys() == {"send", "broadcast"}  # both still waiting
                await go.wait()
                yield "b"

            async def first_stream() -> None:
                results["first"] = await ws.send_stream(chunks())

            nursery.start_soon(first_stream)
            assert summary([await peer.frame()]) == [(False, OP_TEXT, b"a")]
            # A ping, a message large enough to be parsed in pieces by the
            # pure core, and "go", in one write.
            await peer.send(
                client_frame(OP_PING, b"p") + client_frame(OP_BINARY, b"z" * 20_000) + client_frame(OP_TEXT, b"go")
            )
            frames = summary(await peer.frames_of_message())
            assert frames == [(True, OP_PONG, b"p"), (False, OP_CONT, b"b"), (True, OP_CONT, b"")]
            later = [summary(await peer.frames_of_message()) for _ in range(2)]
        assert sorted(later) == [
            [(False, OP_TEXT, b"second"), (True, OP_CONT, b"")],
            [(True, OP_TEXT, b"waited")],
        ]
        assert results == {"send": 8, "broadcast": 0, "first": 0, "send_wait": 0, "second": 0}
        assert in_batch == [8]
        assert ws.send("normal") == 0


# -- backpressure --------------------------------------------------------------------------


async def test_a_slow_reader_makes_the_producer_wait() -> None:
    high_water = 64 * 1024
    chunk = b"c" * (16 * 1024)
    n_chunks = 1024  # 16 MiB: more than the kernel's buffers hold
    t = Tracker()
    handler = wsnest.handler_ws(
        "/ws", _ignore, on_open=t.on_open, send_high_water=high_water, max_message_size=None, textframes=False
    )
    async with running_server([handler]) as (_, url):
        with trio.fail_after(TIMEOUT):
            raw = await connect_slow_reader(url)
            await raw.handshake()
            await t.wait_opened(1)
            ws = t.opened[0]
            queued_at_pull: list[int] = []
            result: list[int] = []

            def chunks() -> Iterator[bytes]:
                for _ in range(n_chunks):
                    queued_at_pull.append(ws._buffered())
                    yield chunk

            async def stream() -> None:
                result.append(await ws.send_stream(chunks()))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream)
                # Nobody reads: the producer runs until it has to wait.
                await trio.testing.wait_all_tasks_blocked()
                assert result == []
                assert len(queued_at_pull) < n_chunks
                assert ws._buffered() <= high_water + len(chunk) + 4
                peer = Peer(raw.stream, raw.buf)
                total = 0
                while True:
                    frame = await peer.frame()
                    total += len(frame.payload)
                    if frame.fin:
                        break
            assert result == [0]
            assert total == n_chunks * len(chunk)
            # Never more than the mark plus one chunk (and its header) queued.
            assert max(queued_at_pull) <= high_water + len(chunk) + 4
            await raw.aclose()


# -- permessage-deflate ---------------------------------------------------------------------


async def test_streamed_messages_go_uncompressed_on_a_deflate_connection() -> None:
    async with server_and_peer(offer=DEFLATE_OFFER, permessage_deflate=True) as (ws, peer, _):
        assert ws.permessage_deflate
        text = "compressible " * 100
        assert await ws.send_stream([text, text]) == 0
        frames = await peer.frames_of_message()
        assert not any(f.rsv1 for f in frames)
        assert b"".join(f.payload for f in frames) == (text * 2).encode()
        assert ws.send(text) == 0  # a whole message is still compressed
        assert (await peer.frame()).rsv1


# -- the client role ----------------------------------------------------------------------


@pytest.fixture
def websockets_echo() -> Iterator[str]:
    """An echo server of the websockets library (compression on), its URL."""

    def echo(conn: Any) -> None:
        for msg in conn:
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


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_the_client_streams_to_a_websockets_server(websockets_echo: str, deflate: bool) -> None:
    big = os.urandom(SPILL_SIZE * 2)
    with trio.fail_after(TIMEOUT):
        async with wsnest.connect(websockets_echo, permessage_deflate=deflate) as ws:
            assert ws.permessage_deflate is deflate
            assert await ws.send_stream(["hé", "", "llo"]) == 0
            assert await ws.receive() == "héllo"
            assert await ws.send_stream(agen(b"\x00", big, b"\xff")) == 0
            assert await ws.receive() == b"\x00" + big + b"\xff"
            assert await ws.send_stream([]) == 0
            assert await ws.receive() == b""
        assert ws.close_code == 1000


@asynccontextmanager
async def raw_server(deflate: bool = False) -> AsyncIterator[tuple[str, trio.MemoryReceiveChannel[Peer]]]:
    """A raw WebSocket server: it answers one opening handshake (accepting
    permessage-deflate when ``deflate``) and hands over the connection."""
    send, receive = trio.open_memory_channel[Peer](1)

    async def serve(stream: trio.SocketStream) -> None:
        peer = Peer(stream)
        while b"\r\n\r\n" not in peer.buf:
            await peer._need(len(peer.buf) + 1)
        end = peer.buf.index(b"\r\n\r\n") + 4
        head = bytes(peer.buf[:end]).decode("latin-1")
        del peer.buf[:end]
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        extra = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        await stream.send_all(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n{extra}\r\n"
            ).encode()
        )
        await send.send(peer)
        await trio.sleep_forever()  # the test owns the stream now

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(functools.partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/", receive
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
async def test_the_client_sends_masked_uncompressed_fragments(deflate: bool) -> None:
    with trio.fail_after(TIMEOUT):
        async with raw_server(deflate) as (url, accepted), wsnest.connect(url, permessage_deflate=deflate) as ws:
            peer = await accepted.receive()
            assert ws.permessage_deflate is deflate
            text = "compressible " * 100
            assert await ws.send_stream(agen(text, text)) == 0
            frames = await peer.frames_of_message()
            assert [(f.fin, f.opcode) for f in frames] == [(False, OP_TEXT), (False, OP_CONT), (True, OP_CONT)]
            assert all(f.masked and not f.rsv1 for f in frames)
            assert b"".join(f.payload for f in frames) == (text * 2).encode()
            assert ws.send(text) == 0  # a whole message: compressed when negotiated
            assert (await peer.frame()).rsv1 is deflate
            # Leaving the block closes: answer it.
            ws.close(1000)
            assert await peer.close_code() == 1000
            await peer.send(encode_frame(OP_CLOSE, close_payload(1000)))


# -- the sans-I/O session -------------------------------------------------------------------


@pytest.mark.parametrize("role", [SERVER, CLIENT])
@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])
def test_send_fragment_frames_one_fragment_for_the_role(role: str, deflate: bool) -> None:
    session = new_session(role, clock=lambda: 0.0, deflate=DeflateParams() if deflate else None)
    big = os.urandom(SPILL_SIZE + 10)
    wire = bytearray()
    for opcode, data, fin in [(OP_TEXT, b"h\xc3", False), (OP_CONT, b"\xa9" + b"x" * 500, False), (OP_CONT, b"", True)]:
        assert session.send_fragment(opcode, data, fin) is None
    wire += session.out
    session.out.clear()
    assert session.send_fragment(OP_BINARY, bytearray(b"ab"), False) is None
    rest = session.send_fragment(OP_CONT, big, True)
    # A large payload is returned (masked, for a client), to be queued after out.
    assert rest is not None and len(rest) == len(big)
    wire += session.out + rest
    # Read back by the other role's parser: masked exactly when a client sent it.
    peer = FrameParser(None, True, deflate=deflate, masked=role == CLIENT)
    assert peer.feed(wire) == [(OP_TEXT, "hé" + "x" * 500), (OP_BINARY, b"ab" + big)]
    assert wire[0] & 0x40 == 0  # RSV1 clear: never compressed
