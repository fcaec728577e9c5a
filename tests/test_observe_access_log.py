"""The access log (logger ``wsnest.access``): one parseable line per HTTP
request, WebSocket session and stream, with the fields on the record."""

from __future__ import annotations

import functools
import logging
import re
import socket
from typing import Any

import httpx
import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Tracker, run_in_thread, sync_connect, ws_url
from wire import OP_TEXT, client_frame

HTTP_LINE = re.compile(
    r'^(?P<client>\S+) - "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/(?P<version>1\.[01])" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<ms>\d+\.\d)ms$"
)
STREAM_LINE = re.compile(
    r'^(?P<client>\S+) - "(?P<method>[A-Z]+) (?P<path>\S+) HTTP/(?P<version>1\.[01])" '
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<s>\d+\.\d{3})s stream$"
)
WS_LINE = re.compile(
    r'^(?P<client>\S+) - "WS (?P<path>\S+)" (?P<code>\d{4}) in=(?P<in>\d+) out=(?P<out>\d+) (?P<s>\d+\.\d{3})s$'
)
CLIENT = re.compile(r"^127\.0\.0\.1:\d+$")


def reject(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
    raise wsnest.Reject(403, "no")


def stream(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
    conn.send("data: one\n\n")
    conn.close()


def make_handlers(tracker: Tracker, ended: trio.Event) -> list[Any]:
    return [
        wsnest.handler("/ok", lambda req: {"body": "ok"}),
        wsnest.handler_inline("/inline", b"inline!", "text/plain"),
        wsnest.handler_ws("/ws", lambda ws, data: ws.send(data), tracker.on_open, tracker.on_close),
        wsnest.handler_ws("/no", lambda ws, data: None, reject),
        wsnest.handler_stream("/events", stream, on_close=lambda conn: ended.set()),
    ]


async def exchange(url: str, tracker: Tracker, ended: trio.Event) -> None:
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as client:
        assert (await client.get(url + "/ok?x=1")).text == "ok"
        assert (await client.head(url + "/ok")).status_code == 200
        assert (await client.get(url + "/missing")).status_code == 404
        assert (await client.get(url + "/inline")).text == "inline!"
        assert (await client.get(url + "/events")).text == "data: one\n\n"
    with trio.fail_after(TIMEOUT):
        await ended.wait()

    def normal() -> None:
        c = sync_connect(ws_url(url, "/ws?room=1"))
        try:
            for text in ("a", "b"):
                c.send(text)
                assert c.recv(timeout=5) == text.encode()
        finally:
            c.close()

    await run_in_thread(normal)
    with trio.fail_after(TIMEOUT):
        await tracker.wait_closed(1)
        raw = await RawClient.connect(url)
        await raw.handshake("/ws")
        await raw.send(client_frame(OP_TEXT, "x"))
        assert (await raw.read_message())[1] == b"x"
        await raw.abort()  # no close frame: 1006
        await tracker.wait_closed(2)
        rejected = await RawClient.connect(url)
        try:
            await rejected.send(
                b"GET /no HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            assert (await rejected.read_head()).status == 403
        finally:
            await rejected.aclose()


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "wsnest.access"]


async def test_lines_and_record_fields(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsnest.access")
    tracker, ended = Tracker(), trio.Event()
    server = wsnest.http_server("http://127.0.0.1:0", make_handlers(tracker, ended), access_log=True)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        await exchange(url, tracker, ended)
        await server.aclose()
    records = access_records(caplog)
    assert all(r.levelno == logging.INFO for r in records)
    http = [(HTTP_LINE.match(r.getMessage()), r) for r in records if r.kind == "http"]  # type: ignore[attr-defined]
    assert all(m is not None for m, _ in http), [r.getMessage() for r in records]
    got = [(m["method"], m["path"], m["status"], m["bytes"]) for m, _ in http if m is not None]
    assert got == [
        ("GET", "/ok?x=1", "200", "2"),
        ("HEAD", "/ok", "200", "0"),
        ("GET", "/missing", "404", str(len("Not Found\n"))),
        ("GET", "/inline", "200", "7"),
        ("GET", "/no", "403", str(len("no\n"))),
    ]
    for m, r in http:
        assert m is not None and CLIENT.match(m["client"])
        assert (r.client, r.method, r.path, r.status, r.bytes) == (  # type: ignore[attr-defined]
            m["client"],
            m["method"],
            m["path"],
            int(m["status"]),
            int(m["bytes"]),
        )
        assert isinstance(r.duration, float) and r.duration >= 0  # type: ignore[attr-defined]
        assert r.http_version == "1.1"  # type: ignore[attr-defined]
    streams = [r for r in records if r.kind == "stream"]  # type: ignore[attr-defined]
    assert len(streams) == 1
    m = STREAM_LINE.match(streams[0].getMessage())
    assert m is not None and (m["method"], m["path"], m["status"]) == ("GET", "/events", "200")
    assert int(m["bytes"]) == streams[0].bytes > len("data: one\n\n")  # type: ignore[attr-defined]
    sessions = [r for r in records if r.kind == "websocket"]  # type: ignore[attr-defined]
    parsed = [WS_LINE.match(r.getMessage()) for r in sessions]
    assert all(p is not None for p in parsed), [r.getMessage() for r in sessions]
    got_ws = [(p["path"], p["code"], p["in"], p["out"]) for p in parsed if p is not None]
    assert got_ws == [("/ws?room=1", "1000", "2", "2"), ("/ws", "1006", "1", "1")]
    for r in sessions:
        assert CLIENT.match(r.client)  # type: ignore[attr-defined]
        assert r.close_code == r.status and r.messages_in == r.messages_out  # type: ignore[attr-defined]
        assert r.method == "WS" and isinstance(r.duration, float)  # type: ignore[attr-defined]


async def test_nothing_is_logged_when_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wsnest.access")
    tracker, ended = Tracker(), trio.Event()
    server = wsnest.http_server("http://127.0.0.1:0", make_handlers(tracker, ended))
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        await exchange(url, tracker, ended)
        await server.aclose()
    assert access_records(caplog) == []
    assert server._connection_class is wsnest.server._connection.HttpConnection  # no per-request work at all


async def test_a_peer_without_an_address_is_shown_as_a_dash(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsnest.access")
    server = wsnest.http_server(
        "http://127.0.0.1:0", [wsnest.handler("/ok", lambda req: {"body": "ok"})], access_log=True
    )
    ours, theirs = socket.socketpair()  # AF_UNIX: no peer address
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve, listen=False))
        nursery.start_soon(server.serve_connection, ours)
        peer = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
        with trio.fail_after(TIMEOUT):
            await peer.send_all(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := await peer.receive_some():
                data += chunk
        await peer.aclose()
        await server.aclose()
    assert data.startswith(b"HTTP/1.1 200 ")
    [record] = access_records(caplog)
    assert record.getMessage().startswith('- - "GET /ok HTTP/1.1" 200 2 ')
    assert record.client == "-"  # type: ignore[attr-defined]
