"""The sans-I/O WebSocket session (``wsnest.core.WebSocketSession``) driven
with bytes alone: a server session and a client session talk to each other
through their ``out`` buffers, on a clock the test moves by hand. No
sockets, no trio. The suite runs once per core (CI), so both twins of the
frame code are under it."""

from __future__ import annotations

import ast
import logging
import struct
from pathlib import Path
from typing import Any

import pytest

import wsnest.core as core
from wsnest.core import (
    CLIENT,
    CLOSED,
    CLOSING,
    MODE_AUTO,
    MODE_BYTES,
    MODE_TEXT,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OPEN,
    SERVER,
    DeflateSession,
    WebSocketSession,
    close_payload,
    encode_frame,
    new_session,
)
from wsnest.core._deflate import DeflateParams
from wsnest.core._session import SPILL_SIZE, SessionLimits


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Inbox:
    """``deliver`` for a session: records (owner, data)."""

    def __init__(self) -> None:
        self.got: list[Any] = []

    def __call__(self, owner: Any, data: Any) -> None:
        self.got.append(data)


def _session(role: str, clock: Clock, inbox: Inbox | None = None, **kw: Any) -> WebSocketSession:
    kw.setdefault("mode", MODE_AUTO)
    return new_session(role, clock=clock, deliver=inbox, **kw)


def pump(src: WebSocketSession, dst: WebSocketSession) -> bytes:
    """Hand everything ``src`` queued to ``dst``; return those bytes."""
    data = bytes(src.out)
    src.out.clear()
    dst.receive(data)
    return data


def frames(data: bytes) -> list[tuple[int, bool, bool, bytes]]:
    """Split wire bytes into (opcode, rsv1, masked, unmasked payload)."""
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, pos = b1 & 0x7F, pos + 2
        if n == 126:
            (n,) = struct.unpack_from("!H", data, pos)
            pos += 2
        elif n == 127:
            (n,) = struct.unpack_from("!Q", data, pos)
            pos += 8
        mask = b""
        if b1 & 0x80:
            mask, pos = data[pos : pos + 4], pos + 4
        payload = data[pos : pos + n]
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        out.append((b0 & 0x0F, bool(b0 & 0x40), bool(mask), payload))
        pos += n
    return out


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- messages both ways ----------------------------------------------------------------


def test_client_frames_are_masked_server_frames_are_not(clock: Clock) -> None:
    s_in, c_in = Inbox(), Inbox()
    server = _session(SERVER, clock, s_in)
    client = _session(CLIENT, clock, c_in)
    client.send(OP_TEXT, "héllo")
    wire = pump(client, server)
    assert frames(wire) == [(OP_TEXT, False, True, "héllo".encode())]
    assert s_in.got == ["héllo"]
    server.send(OP_BINARY, b"\x00\xff")
    wire = pump(server, client)
    assert frames(wire) == [(OP_BINARY, False, False, b"\x00\xff")]
    assert c_in.got == [b"\x00\xff"]


def test_an_echo_server_and_a_client_with_bytes_alone(clock: Clock) -> None:
    c_in = Inbox()
    server = _session(SERVER, clock)

    def echo(owner: Any, data: Any) -> None:
        rest = owner.send(OP_TEXT if isinstance(data, str) else OP_BINARY, data)
        if rest is not None:  # a large payload: the owner writes it after out
            owner.out += rest

    server.owner, server.deliver = server, echo
    client = _session(CLIENT, clock, c_in)
    for message in ["a", b"b" * 300, "ü" * 70_000, b""]:
        rest = client.send(OP_TEXT if isinstance(message, str) else OP_BINARY, message)
        if rest is not None:  # a large masked payload, also queued by reference
            client.out += rest
    pump(client, server)
    assert server.state == OPEN
    pump(server, client)
    assert c_in.got == ["a", b"b" * 300, "ü" * 70_000, b""]


def test_a_large_server_payload_is_returned_not_copied(clock: Clock) -> None:
    server = _session(SERVER, clock)
    payload = b"z" * SPILL_SIZE
    rest = server.send(OP_BINARY, payload)
    assert rest is payload  # the owner queues it after out, by reference
    assert bytes(server.out) == encode_frame(OP_BINARY, payload)[: -len(payload)]
    assert server.send(OP_BINARY, b"small") is None


def test_a_client_session_cannot_send_a_shared_server_frame(clock: Clock) -> None:
    client = _session(CLIENT, clock)
    with pytest.raises(ValueError, match="frame"):
        client.send_frame(encode_frame(OP_TEXT, b"x"), 1)


def test_fits_counts_utf8_bytes(clock: Clock) -> None:
    server = _session(SERVER, clock, limits=SessionLimits(max_message_size=8))
    assert server.fits("ab")
    assert server.fits("é" * 4)  # 8 bytes
    assert not server.fits("é" * 5)  # 10 bytes
    assert not server.fits(b"x" * 9)
    assert _session(SERVER, clock, limits=SessionLimits(max_message_size=None)).fits(b"x" * 10_000)


# -- roles: masking is checked ---------------------------------------------------------


def test_a_server_session_fails_an_unmasked_frame_with_1002(clock: Clock) -> None:
    inbox = Inbox()
    server = _session(SERVER, clock, inbox)
    server.receive(encode_frame(OP_TEXT, b"not masked"))
    assert inbox.got == []
    assert server.state == CLOSING and server.close_code == 1002 and server.finished
    ((op, _, masked, payload),) = frames(bytes(server.out))
    assert (op, masked, payload[:2]) == (OP_CLOSE, False, struct.pack("!H", 1002))


def test_a_client_session_fails_a_masked_frame_with_1002(clock: Clock) -> None:
    inbox = Inbox()
    client = _session(CLIENT, clock, inbox)
    client.receive(encode_frame(OP_TEXT, b"masked", mask=b"abcd"))
    assert inbox.got == []
    assert client.state == CLOSING and client.close_code == 1002
    ((op, _, masked, payload),) = frames(bytes(client.out))
    assert op == OP_CLOSE and masked  # a client masks its close frame too
    assert payload == close_payload(1002, "masked frame from server")


def test_the_role_is_kept(clock: Clock) -> None:
    assert _session(SERVER, clock).role == SERVER
    assert _session(CLIENT, clock).role == CLIENT


def test_role_and_mode_are_checked() -> None:
    with pytest.raises(ValueError, match="role"):
        WebSocketSession("peer", clock=Clock())
    with pytest.raises(ValueError, match="mode"):
        WebSocketSession(SERVER, mode=7, clock=Clock())


# -- closing -------------------------------------------------------------------------------


def test_close_handshake_started_by_the_client(clock: Clock) -> None:
    server, client = _session(SERVER, clock), _session(CLIENT, clock, limits=SessionLimits(close_timeout=3.0))
    assert client.close(4000, close_payload(4000, "bye"))
    assert client.state == CLOSING and client.close_deadline == clock.now + 3.0
    assert not client.close(1000, b"")  # only once
    pump(client, server)
    assert server.state == CLOSED and server.close_code == 4000
    echo = pump(server, client)
    assert frames(echo) == [(OP_CLOSE, False, False, close_payload(4000))]
    assert client.state == CLOSED and client.close_code == 4000


def test_close_handshake_started_by_the_server_drops_later_messages(clock: Clock) -> None:
    s_in = Inbox()
    server, client = _session(SERVER, clock, s_in), _session(CLIENT, clock)
    server.close(1001, close_payload(1001, "going"))
    client.send(OP_TEXT, "late")  # crosses our close frame
    pump(server, client)
    assert client.state == CLOSED and client.close_code == 1001
    pump(client, server)  # "late", then the client's close echo
    assert s_in.got == []
    assert server.state == CLOSED and server.close_code == 1001


def test_a_close_without_status_is_echoed_empty(clock: Clock) -> None:
    server, client = _session(SERVER, clock), _session(CLIENT, clock)
    client.close(1005, b"")  # the wire form of "no status"
    pump(client, server)
    assert server.close_code == 1005
    assert frames(bytes(server.out)) == [(OP_CLOSE, False, False, b"")]


def test_going_away_abort_and_connection_lost(clock: Clock) -> None:
    server = _session(SERVER, clock)
    server.going_away()
    assert server.state == CLOSED and server.close_code == 1001
    assert frames(bytes(server.out)) == [(OP_CLOSE, False, False, close_payload(1001, "server shutting down"))]
    client = _session(CLIENT, clock)
    client.going_away()
    assert frames(bytes(client.out))[0][3] == close_payload(1001, "client shutting down")
    broken = _session(SERVER, clock)
    broken.abort()
    assert broken.state == CLOSED and broken.close_code == 1006
    lost = _session(SERVER, clock)
    lost.close(4001, close_payload(4001))
    lost.connection_lost()
    assert lost.state == CLOSED and lost.close_code == 4001  # ours stays
    lost.abort()
    assert lost.close_code == 4001  # already over: nothing changes


# -- ping, pong, keepalive -----------------------------------------------------------------


def test_pings_are_answered_with_the_same_payload(clock: Clock) -> None:
    server, client = _session(SERVER, clock), _session(CLIENT, clock)
    assert client.ping(b"are you there")
    pump(client, server)
    pong = pump(server, client)
    assert frames(pong) == [(OP_PONG, False, False, b"are you there")]
    assert frames(bytes(client.out)) == []


def test_keepalive_pings_then_closes_with_1011(clock: Clock) -> None:
    server = _session(SERVER, clock, limits=SessionLimits(ping_interval=10.0, ping_timeout=5.0))
    client = _session(CLIENT, clock)
    assert server.receive_deadline() == clock.now + 10.0
    assert server.write_deadline() == clock.now + 15.0
    clock.now += 10.0
    server.timer()  # silence for a ping interval: ping
    assert frames(bytes(server.out)) == [(OP_PING, False, False, b"wsnest")]
    assert server.receive_deadline() == clock.now + 5.0 == server.write_deadline()
    pump(server, client)
    pump(client, server)  # the pong
    assert server.receive_deadline() == clock.now + 10.0
    clock.now += 10.0
    server.timer()
    server.out.clear()
    clock.now += 5.0
    server.timer()  # the second ping went unanswered
    assert server.state == CLOSING and server.close_code == 1011
    assert frames(bytes(server.out)) == [(OP_CLOSE, False, False, close_payload(1011, "keepalive ping timeout"))]


def test_any_traffic_counts_as_alive(clock: Clock) -> None:
    server = _session(SERVER, clock, limits=SessionLimits(ping_interval=1.0, ping_timeout=1.0))
    clock.now += 1.0
    server.timer()
    server.traffic()
    assert server.receive_deadline() == clock.now + 1.0


def test_no_keepalive_no_deadlines(clock: Clock) -> None:
    server = _session(SERVER, clock)
    assert server.receive_deadline() == server.write_deadline() == float("inf")
    assert server.close_deadline == float("inf")


# -- delivery and failures -----------------------------------------------------------------


def test_text_mode_fails_binary_that_is_not_utf8_with_1007(clock: Clock) -> None:
    inbox = Inbox()
    server, client = _session(SERVER, clock, inbox, mode=MODE_TEXT), _session(CLIENT, clock)
    client.send(OP_BINARY, b"ok")
    client.send(OP_BINARY, b"\xff")
    pump(client, server)
    assert inbox.got == ["ok"]
    assert server.close_code == 1007


def test_bytes_mode_delivers_text_as_bytes(clock: Clock) -> None:
    inbox = Inbox()
    server, client = _session(SERVER, clock, inbox, mode=MODE_BYTES), _session(CLIENT, clock)
    client.send(OP_TEXT, "é")
    pump(client, server)
    assert inbox.got == ["é".encode()]


def test_a_raising_callback_closes_with_1011_and_is_logged(clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    def boom(owner: Any, data: Any) -> None:
        raise RuntimeError("boom")

    class Owner:
        def __repr__(self) -> str:
            return "<the owner>"

    server = new_session(SERVER, clock=clock, owner=Owner(), deliver=boom)
    client = _session(CLIENT, clock)
    client.send(OP_TEXT, "x")
    with caplog.at_level(logging.ERROR, logger="wsnest"):
        pump(client, server)
    assert server.state == CLOSING and server.close_code == 1011
    assert "on_message callback raised on <the owner>" in caplog.text


def test_results_go_to_returned_and_the_owner_may_switch_deliver(clock: Clock) -> None:
    later: list[Any] = []
    seen: list[Any] = []

    def first(owner: Any, data: Any) -> object:
        return ("result", data)

    def returned(owner: Any, result: object) -> None:
        seen.append(result)
        server.deliver = lambda owner, data: later.append(data)

    server = new_session(SERVER, clock=clock, deliver=first, returned=returned)
    client = _session(CLIENT, clock)
    for text in ("a", "b", "c"):
        client.send(OP_TEXT, text)
    pump(client, server)  # one batch: the switch applies to the rest of it
    assert seen == [("result", "a")] and later == ["b", "c"]


def test_detach_drops_the_owner(clock: Clock) -> None:
    inbox = Inbox()
    server = _session(SERVER, clock, inbox)
    server.owner = object()
    server.detach()
    assert server.owner is None and server.returned is None
    client = _session(CLIENT, clock)
    client.send(OP_TEXT, "x")
    pump(client, server)
    assert inbox.got == []


# -- permessage-deflate in both roles -------------------------------------------------------


@pytest.mark.parametrize("params", [DeflateParams(), DeflateParams(True, True, 10)], ids=["takeover", "no-takeover"])
def test_deflate_both_ways(clock: Clock, params: DeflateParams) -> None:
    s_in, c_in = Inbox(), Inbox()
    server = _session(SERVER, clock, s_in, deflate=params)
    client = _session(CLIENT, clock, c_in, deflate=params)
    assert isinstance(server, DeflateSession) and server.deflate and client.deflate
    text = "compress me " * 200
    for _ in range(2):
        client.send(OP_TEXT, text)
        wire = pump(client, server)
        ((op, rsv1, masked, _),) = frames(wire)
        assert (op, rsv1, masked) == (OP_TEXT, True, True) and len(wire) < len(text) // 4
        server.send(OP_BINARY, text.encode())
        wire = pump(server, client)
        ((op, rsv1, masked, _),) = frames(wire)
        assert (op, rsv1, masked) == (OP_BINARY, True, False)
    assert s_in.got == [text, text] and c_in.got == [text.encode()] * 2
    client.send(OP_TEXT, "tiny")  # small messages go uncompressed
    assert frames(pump(client, server))[0][1] is False
    assert s_in.got[-1] == "tiny"


def test_a_compressed_message_without_deflate_fails_with_1002(clock: Clock) -> None:
    deflating = _session(CLIENT, clock, deflate=DeflateParams())
    plain = _session(SERVER, clock)
    assert not plain.deflate
    deflating.send(OP_TEXT, "x" * 1000)
    pump(deflating, plain)
    assert plain.close_code == 1002


def test_a_deflate_bomb_fails_with_1009(clock: Clock) -> None:
    server = _session(SERVER, clock, deflate=DeflateParams(), limits=SessionLimits(max_message_size=1000))
    client = _session(CLIENT, clock, deflate=DeflateParams(), limits=SessionLimits(max_message_size=None))
    client.send(OP_BINARY, b"\x00" * 100_000)
    pump(client, server)
    assert server.close_code == 1009


# -- the core stays free of I/O --------------------------------------------------------------


def test_the_core_imports_no_io_library() -> None:
    root = Path(core.__file__).parent
    for path in sorted(root.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            for name in names:
                top = name.split(".")[0]
                assert top not in {"trio", "asyncio", "socket", "anyio", "ssl", "select"}, f"{path.name} imports {name}"
