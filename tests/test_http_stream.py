"""``handler_stream`` and ``format_sse`` (decisions 18-19): chunked framing,
headers and status, ``send("")``, empty responses, HEAD, HTTP/1.0, client
disconnects, ids shared with WebSockets, SSE and NDJSON."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import httpx
import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Response, echo_handler, raw_ws, running_server


def request_bytes(method: str = "GET", target: str = "/s", version: str = "1.1", extra: str = "") -> bytes:
    host = "Host: test\r\n" if version == "1.1" else ""
    return f"{method} {target} HTTP/{version}\r\n{host}{extra}\r\n".encode("latin-1")


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=TIMEOUT)


async def read_line(client: RawClient) -> bytes:
    while b"\r\n" not in client.buf:
        if not await client._fill():
            raise EOFError(f"connection closed mid-line: {bytes(client.buf)!r}")
    end = client.buf.index(b"\r\n")
    line = bytes(client.buf[:end])
    del client.buf[: end + 2]
    return line


async def read_chunk(client: RawClient) -> bytes | None:
    """One chunk of a chunked body; None for the terminating chunk."""
    size_line = await read_line(client)
    assert re.fullmatch(rb"[0-9a-fA-F]+", size_line), size_line
    size = int(size_line, 16)
    if size == 0:
        assert await read_line(client) == b""  # no trailers
        return None
    data = await client._exactly(size)
    assert await client._exactly(2) == b"\r\n"
    return data


async def read_chunked(client: RawClient) -> list[bytes]:
    chunks = []
    while (chunk := await read_chunk(client)) is not None:
        chunks.append(chunk)
    return chunks


class Closes:
    """Counts on_close calls and lets a test wait for them."""

    def __init__(self) -> None:
        self.conns: list[wsnest.StreamConnection] = []
        self.event = trio.Event()

    def __call__(self, conn: wsnest.StreamConnection) -> None:
        self.conns.append(conn)
        self.event.set()

    async def wait(self) -> None:
        with trio.fail_after(TIMEOUT):
            await self.event.wait()


class Opened:
    """Keeps the conn of each on_request and lets a test wait for it."""

    def __init__(self) -> None:
        self.conns: list[wsnest.StreamConnection] = []
        self.reqs: list[wsnest.Request] = []
        self._event = trio.Event()

    def record(self, conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        self.conns.append(conn)
        self.reqs.append(req)
        self._event.set()
        self._event = trio.Event()

    async def wait(self, n: int = 1) -> wsnest.StreamConnection:
        with trio.fail_after(TIMEOUT):
            while len(self.conns) < n:
                await self._event.wait()
        return self.conns[n - 1]


def split_head(data: bytes) -> tuple[Response, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete response head in {data!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    version, status, *reason = status_line.split(" ", 2)
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in lines)]
    resp = Response(int(status), reason[0] if reason else "", headers, body)
    resp.version = version  # type: ignore[attr-defined]
    return resp, body


async def exchange(url: str, raw: bytes) -> bytes:
    """Send ``raw`` and read until the server closes the connection."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(raw)
            return await client.read_until_eof()
        finally:
            await client.aclose()


# -- framing ------------------------------------------------------------------------


async def test_chunked_response_raw_and_httpx() -> None:
    closes = Closes()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.set_header("Content-Type", "text/plain")
        assert conn.send("hello") == 0
        assert conn.send(b" wide") == 0
        assert conn.send(bytearray(b" world \xe2\x9c\x93")) == 0
        assert conn.close() == 0
        assert conn.closed

    async with running_server([wsnest.handler_stream("/s", on_request, closes)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                await client.send(request_bytes())
                head = await client.read_head(body=False)
                assert head.status == 200
                assert head.header("transfer-encoding") == "chunked"
                assert head.header("content-length") is None
                assert head.header("content-type") == "text/plain"
                assert await read_chunked(client) == [b"hello", b" wide", b" world \xe2\x9c\x93"]
                assert await client.read_until_eof() == b""  # and the connection is closed
            finally:
                await client.aclose()
        async with http_client() as http, http.stream("GET", url + "/s") as r:
            assert r.status_code == 200
            assert r.headers["transfer-encoding"] == "chunked"
            body = b"".join([chunk async for chunk in r.aiter_bytes()])
            assert body == "hello wide world \u2713".encode()
        await closes.wait()
    assert len(closes.conns) == 2
    assert closes.conns[0].id != closes.conns[1].id


async def test_set_status_and_header_before_first_send_only() -> None:
    errors: list[Exception] = []

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.set_status(201)
        conn.set_header("X-Value", "one")
        conn.set_header("x-value", "two")  # replaces, case-insensitively
        conn.set_header("Cache-Control", "no-cache")
        conn.send("body")
        for call in (lambda: conn.set_status(500), lambda: conn.set_header("X-Late", "1")):
            try:
                call()
            except RuntimeError as exc:
                errors.append(exc)
        conn.close()

    async with running_server([wsnest.handler_stream("/s", on_request)]) as (_, url):
        data = await exchange(url, request_bytes())
    resp, _ = split_head(data)
    assert resp.status == 201
    assert [v for k, v in resp.headers if k.lower() == "x-value"] == ["two"]
    assert resp.header("cache-control") == "no-cache"
    assert resp.header("x-late") is None
    assert len(errors) == 2 and all(isinstance(e, RuntimeError) for e in errors)


async def test_set_status_and_header_argument_errors() -> None:
    errors: list[BaseException] = []

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        for call in (
            lambda: conn.set_header("Content-Length", "5"),
            lambda: conn.set_header("Transfer-Encoding", "identity"),
            lambda: conn.set_header("X-Bad", "a\r\nX-Injected: 1"),
            lambda: conn.set_status(99),
            lambda: conn.send(123),  # type: ignore[arg-type]
        ):
            try:
                call()
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        conn.send("ok")
        conn.close()

    async with running_server([wsnest.handler_stream("/s", on_request)]) as (_, url):
        data = await exchange(url, request_bytes())
    assert len(errors) == 5
    assert isinstance(errors[-1], TypeError)
    assert b"X-Injected" not in data
    resp, body = split_head(data)
    assert resp.status == 200 and resp.header("transfer-encoding") == "chunked"
    assert body == b"2\r\nok\r\n0\r\n\r\n"


async def test_send_empty_does_not_end_the_stream() -> None:
    opened = Opened()
    closes = Closes()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        opened.record(conn, req)
        assert conn.send("") == 0  # sends the head, no chunk

    async with running_server([wsnest.handler_stream("/s", on_request, closes)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                await client.send(request_bytes())
                head = await client.read_head(body=False)
                assert head.header("transfer-encoding") == "chunked"
                conn = await opened.wait()
                assert conn.send(b"") == 0
                assert conn.send("x") == 0
                assert await read_chunk(client) == b"x"  # the "" sends wrote no 0-chunk
                assert conn.send("") == 0
                assert conn.send("yz") == 0
                assert await read_chunk(client) == b"yz"
                assert not conn.closed
                assert conn.close() == 0
                assert await read_chunk(client) is None
                assert await client.read_until_eof() == b""
            finally:
                await client.aclose()
        await closes.wait()
    assert len(closes.conns) == 1


@pytest.mark.parametrize("version", ["1.1", "1.0"])
async def test_close_before_any_send_is_a_complete_empty_response(version: str) -> None:
    closes = Closes()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.set_header("X-Empty", "yes")
        assert conn.close() == 0
        assert conn.close() == 7
        assert conn.send("late") == 7

    async with running_server([wsnest.handler_stream("/s", on_request, closes)]) as (_, url):
        data = await exchange(url, request_bytes(version=version))  # returns only once the server closed
        await closes.wait()
    resp, body = split_head(data)
    assert resp.status == 200
    assert resp.header("x-empty") == "yes"
    if resp.header("transfer-encoding") == "chunked":
        assert body == b"0\r\n\r\n"
    else:
        assert resp.header("content-length") == "0"
        assert body == b""
    assert len(closes.conns) == 1


async def test_head_request_gets_headers_only() -> None:
    closes = Closes()
    methods: list[str] = []

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        methods.append(req.method)
        conn.set_header("Content-Type", "text/event-stream")
        conn.send("data: would be a body\n\n")
        # no close(): a HEAD response is complete once its head is out

    async with running_server([wsnest.handler_stream("/s", on_request, closes)]) as (_, url):
        data = await exchange(url, request_bytes("HEAD"))
        await closes.wait()
    resp, body = split_head(data)
    assert resp.status == 200
    assert resp.header("content-type") == "text/event-stream"
    assert body == b""
    assert methods == ["HEAD"]
    assert len(closes.conns) == 1


async def test_http10_gets_a_body_ended_by_connection_close() -> None:
    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.send("hello ")
        conn.send("")
        conn.send(b"world")
        conn.close()

    async with running_server([wsnest.handler_stream("/s", on_request)]) as (_, url):
        data = await exchange(url, request_bytes(version="1.0"))
    resp, body = split_head(data)
    assert resp.version.startswith("HTTP/1.")  # type: ignore[attr-defined]
    assert resp.status == 200
    assert resp.header("transfer-encoding") is None
    assert resp.header("content-length") is None
    assert body == b"hello world"


async def test_request_body_reaches_on_request() -> None:
    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.send(req.body[::-1])
        conn.close()

    async with running_server([wsnest.handler_stream("/s", on_request, method="POST")]) as (_, url):
        data = await exchange(url, b"POST /s HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc")
    assert data.endswith(b"3\r\ncba\r\n0\r\n\r\n")


# -- disconnects and lifetime ----------------------------------------------------------


@pytest.mark.parametrize("how", ["close", "reset"])
async def test_client_disconnect_fires_on_close_once(how: str) -> None:
    opened = Opened()
    closes = Closes()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        opened.record(conn, req)
        conn.send("first")

    async with running_server([wsnest.handler_stream("/s", on_request, closes)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            await client.send(request_bytes())
            await client.read_head(body=False)
            assert await read_chunk(client) == b"first"
            conn = await opened.wait()
            assert not conn.closed
            await (client.aclose() if how == "close" else client.abort())
        await closes.wait()
        assert closes.conns == [conn]
        assert conn.closed
        assert conn.send("more") == 7
        assert conn.close() == 7
    assert len(closes.conns) == 1  # still once after shutdown


async def test_server_shutdown_fires_on_close_for_open_streams() -> None:
    opened = Opened()
    closes = Closes()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        opened.record(conn, req)
        conn.send("x")

    # The stream gets drain_timeout to end by itself, then is ended.
    async with running_server([wsnest.handler_stream("/s", on_request, closes)], drain_timeout=0.1) as (_, url):
        client = await RawClient.connect(url)
        await client.send(request_bytes())
        with trio.fail_after(TIMEOUT):
            await client.read_head(body=False)
            await opened.wait()
    await client.aclose()
    assert len(closes.conns) == 1
    assert opened.conns[0].send("y") == 7


async def test_ids_shared_with_websockets() -> None:
    ws_ids: list[int] = []
    stream_ids: list[int] = []

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        stream_ids.append(conn.id)
        conn.send(str(conn.id))
        conn.close()

    handlers = [
        echo_handler("/ws", on_open=lambda ws, req: ws_ids.append(ws.id)),
        wsnest.handler_stream("/s", on_request),
    ]
    order: list[int] = []
    async with running_server(handlers) as (_, url):
        for _ in range(2):
            async with raw_ws(url, "/ws"):
                pass
            order.append(ws_ids[-1])
            data = await exchange(url, request_bytes())
            order.append(stream_ids[-1])
            assert data.endswith(f"{stream_ids[-1]}\r\n0\r\n\r\n".encode())
    assert len(set(order)) == 4
    assert order == sorted(order)
    assert order[0] == 1


async def test_async_sse_producer_is_cancelled_on_disconnect() -> None:
    closes = Closes()
    outcome: list[str] = []

    async def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.set_header("Content-Type", "text/event-stream")
        n = 0
        try:
            while True:
                conn.send(wsnest.format_sse(f"tick {n}", id=str(n)))
                n += 1
                await trio.sleep(0.01)
        except trio.Cancelled:
            outcome.append("cancelled")
            raise
        finally:
            outcome.append("finished")

    async with running_server([wsnest.handler_stream("/sse", on_request, closes)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            await client.send(request_bytes(target="/sse"))
            head = await client.read_head(body=False)
            assert head.header("content-type") == "text/event-stream"
            text = ""
            while text.count("\n\n") < 3:
                chunk = await read_chunk(client)
                assert chunk is not None
                text += chunk.decode()
            events = parse_sse(text)
            assert [e[1] for e in events[:3]] == ["tick 0", "tick 1", "tick 2"]
            await client.aclose()
        await closes.wait()
    assert outcome == ["cancelled", "finished"]
    assert len(closes.conns) == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_on_request_raising_gives_500_and_on_close_once(kind: str, caplog: pytest.LogCaptureFixture) -> None:
    closes = Closes()

    def sync_boom(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        raise RuntimeError("stream-secret-123")

    async def async_boom(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        await trio.lowlevel.checkpoint()
        raise RuntimeError("stream-secret-123")

    on_request = sync_boom if kind == "sync" else async_boom
    with caplog.at_level(logging.ERROR, logger="wsnest"):
        async with running_server([wsnest.handler_stream("/s", on_request, closes)]) as (_, url):
            data = await exchange(url, request_bytes())
            await closes.wait()
            # The server lives on.
            ok = await exchange(url, request_bytes(version="1.0"))
            assert ok.startswith(b"HTTP/1.0 500") or ok.startswith(b"HTTP/1.1 500")
    resp, body = split_head(data)
    assert resp.status == 500
    assert b"stream-secret-123" not in data and b"Traceback" not in data
    if resp.header("content-length") is not None:
        assert len(body) == int(resp.header("content-length"))  # type: ignore[arg-type]
    assert len(closes.conns) == 2
    assert "stream-secret-123" in caplog.text


async def test_on_request_raising_on_head_gives_a_bodiless_500(caplog: pytest.LogCaptureFixture) -> None:
    def boom(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        raise RuntimeError("head-boom")

    with caplog.at_level(logging.ERROR, logger="wsnest"):
        async with running_server([wsnest.handler_stream("/s", boom)]) as (_, url):
            data = await exchange(url, request_bytes("HEAD"))
    resp, body = split_head(data)
    assert resp.status == 500
    assert body == b""  # a response to HEAD never has a body


async def test_ndjson_stream_cut_by_client() -> None:
    opened = Opened()
    closes = Closes()

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        opened.record(conn, req)
        conn.set_header("Content-Type", "application/x-ndjson")
        conn.send(json.dumps({"n": 0}) + "\n")

    async with running_server([wsnest.handler_stream("/nd", on_request, closes)]) as (_, url):
        got: list[Any] = []
        with trio.fail_after(TIMEOUT):
            async with http_client() as http, http.stream("GET", url + "/nd") as r:
                assert r.headers["content-type"] == "application/x-ndjson"
                conn = await opened.wait()
                async for line in r.aiter_lines():
                    got.append(json.loads(line))
                    if len(got) == 3:
                        break
                    assert conn.send(json.dumps({"n": len(got)}) + "\n") == 0
            # leaving the stream early closes the connection
        await closes.wait()
        assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert conn.closed
        assert conn.send('{"n": 99}\n') == 7
    assert len(closes.conns) == 1


# -- SSE -----------------------------------------------------------------------------


def parse_sse(text: str) -> list[tuple[str, str, str, int | None]]:
    """The events of an ``text/event-stream`` body, per the WHATWG HTML
    spec (9.2.6): ``(type, data, last_event_id, retry)`` for each dispatch."""
    events: list[tuple[str, str, str, int | None]] = []
    data = ""
    event_type = ""
    last_id = ""
    retry: int | None = None
    if text.startswith("\ufeff"):
        text = text[1:]
    for line in re.split(r"\r\n|\r|\n", text)[:-1]:  # the last piece has no line end
        if line == "":
            if data == "":
                event_type = ""
                continue
            if data.endswith("\n"):
                data = data[:-1]
            events.append((event_type or "message", data, last_id, retry))
            data, event_type = "", ""
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event_type = value
        elif field == "data":
            data += value + "\n"
        elif field == "id":
            if "\0" not in value:
                last_id = value
        elif field == "retry" and value.isdigit() and value.isascii():
            retry = int(value)
    return events


def test_parse_sse_reference_examples() -> None:
    # Examples from the WHATWG spec, to check the parser itself.
    assert parse_sse("data: YHOO\ndata: +2\ndata: 10\n\n") == [("message", "YHOO\n+2\n10", "", None)]
    text = ": test stream\n\ndata: first event\nid: 1\n\ndata:second event\nid\n\ndata:  third event\n"
    assert parse_sse(text) == [("message", "first event", "1", None), ("message", "second event", "", None)]
    assert parse_sse("data\n\ndata\ndata\n\ndata:") == [("message", "", "", None), ("message", "\n", "", None)]


async def test_sse_end_to_end_parsed_per_spec() -> None:
    sent = [
        wsnest.format_sse("line1\nline2\r\nline3\rline4", event="update", id="7", retry=1500),
        wsnest.format_sse(""),
        wsnest.format_sse("plain"),
        wsnest.format_sse("trailing\n"),
        wsnest.format_sse(" leading space: and colon"),
        wsnest.format_sse("\u00e9t\u00e9 \u2603", event="utf8", id=""),
    ]
    seen_last_id: list[str | None] = []

    def on_request(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        seen_last_id.append(req.headers.get("last-event-id"))
        conn.set_header("Content-Type", "text/event-stream")
        conn.set_header("Cache-Control", "no-cache")
        for event in sent:
            conn.send(event)
        conn.close()

    async with (
        running_server([wsnest.handler_stream("/events", on_request)]) as (_, url),
        http_client() as http,
        http.stream("GET", url + "/events", headers={"Last-Event-ID": "6"}) as r,
    ):
        assert r.headers["content-type"] == "text/event-stream"
        text = (await r.aread()).decode("utf-8")
    assert seen_last_id == ["6"]
    assert parse_sse(text) == [
        ("update", "line1\nline2\nline3\nline4", "7", 1500),
        ("message", "", "7", 1500),
        ("message", "plain", "7", 1500),
        ("message", "trailing\n", "7", 1500),
        ("message", " leading space: and colon", "7", 1500),
        ("utf8", "\u00e9t\u00e9 \u2603", "", 1500),
    ]


# -- format_sse ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("x", "data: x\n\n"),
        ("", "data: \n\n"),
        ("a\nb", "data: a\ndata: b\n\n"),
        ("a\r\nb", "data: a\ndata: b\n\n"),
        ("a\rb", "data: a\ndata: b\n\n"),
        ("a\r\rb", "data: a\ndata: \ndata: b\n\n"),
        ("a\n\rb", "data: a\ndata: \ndata: b\n\n"),
        ("a\n", "data: a\ndata: \n\n"),
        ("\n", "data: \ndata: \n\n"),
        ("a: b", "data: a: b\n\n"),
    ],
)
def test_format_sse_data_lines(data: str, expected: str) -> None:
    out = wsnest.format_sse(data)
    assert out == expected
    assert out.endswith("\n\n")
    assert parse_sse(out) == [("message", re.sub(r"\r\n|\r", "\n", data), "", None)]


def test_format_sse_field_order() -> None:
    out = wsnest.format_sse("d1\nd2", event="ev", id="42", retry=3000)
    assert out == "event: ev\nid: 42\nretry: 3000\ndata: d1\ndata: d2\n\n"
    assert wsnest.format_sse("d", id="1") == "id: 1\ndata: d\n\n"
    assert wsnest.format_sse("d", retry=0) == "retry: 0\ndata: d\n\n"
    assert wsnest.format_sse("d", event="e") == "event: e\ndata: d\n\n"


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\r\nb", "\n", "end\n"])
def test_format_sse_rejects_newlines_in_event_and_id(field: str, value: str) -> None:
    with pytest.raises(ValueError, match=field):
        wsnest.format_sse("x", **{field: value})


def test_format_sse_argument_errors() -> None:
    with pytest.raises(TypeError, match="data"):
        wsnest.format_sse(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="event"):
        wsnest.format_sse("x", event=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retry"):
        wsnest.format_sse("x", retry=-1)
    with pytest.raises(ValueError, match="retry"):
        wsnest.format_sse("x", retry=1.5)  # type: ignore[arg-type]


def test_handler_stream_argument_errors() -> None:
    with pytest.raises(TypeError, match="path"):
        wsnest.handler_stream(5, lambda c, r: None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        wsnest.handler_stream("s", lambda c, r: None)
    with pytest.raises(TypeError, match="on_request"):
        wsnest.handler_stream("/s", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="on_close"):
        wsnest.handler_stream("/s", lambda c, r: None, on_close=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="method"):
        wsnest.handler_stream("/s", lambda c, r: None, method="")
