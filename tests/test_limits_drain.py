"""``max_connections`` (a 503 past it) and the graceful drain of ``aclose()``
(issue 13, "Limits and shutdown"), with real clients: httpx, websockets'
trio client, raw sockets.

Order, not timing: a drain that waits on a handler the test holds shows
what happens before the handler returns; a drain_timeout far longer than
the test's own fail_after shows that the drain ended because the work did.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import trio
import trio.testing
import websockets.exceptions
import websockets.trio.client

import wsnest
from serverutil import TIMEOUT, RawClient, Tracker, echo_handler, host_port, running_server, ws_url
from test_tls import tls_server, trusting
from wire import OP_TEXT, client_frame, close_frame
from wsnest.server import _server
from wsnest.server._refuse import MAX_REFUSING

# A drain that would outlast the test: if aclose() returns, the work ended.
LONG = 60.0


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=TIMEOUT)


def hello(req: wsnest.Request) -> dict[str, Any]:
    return {"body": f"hello {req.client[1] if req.client else 0}"}


class Held:
    """An async HTTP handler that waits until the test lets it answer."""

    def __init__(self) -> None:
        self.started = trio.Event()
        self.release = trio.Event()
        self.cancelled = False

    async def __call__(self, req: wsnest.Request) -> dict[str, Any]:
        self.started.set()
        try:
            await self.release.wait()
        except trio.Cancelled:
            self.cancelled = True
            raise
        return {"body": "held answer"}


@asynccontextmanager
async def closing(server: wsnest.HttpServer, **kw: Any) -> AsyncIterator[trio.Event]:
    """Run ``server.aclose(**kw)`` in the background; yields an event set
    when it has returned."""
    done = trio.Event()

    async def close() -> None:
        await server.aclose(**kw)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close)
        await trio.testing.wait_all_tasks_blocked()  # the shutdown has started
        yield done


# -- max_connections: the limit ----------------------------------------------------


def test_max_connections_is_validated() -> None:
    assert wsnest.http_server("http://127.0.0.1:0", max_connections=5).limits.max_connections == 5
    assert wsnest.http_server("http://127.0.0.1:0").limits.max_connections is None
    for bad, error in ((0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError), ("9", TypeError)):
        with pytest.raises(error, match="max_connections"):
            wsnest.http_server("http://127.0.0.1:0", max_connections=bad)
    with pytest.raises(ValueError, match="drain_timeout"):
        wsnest.http_server("http://127.0.0.1:0", drain_timeout=-1)


async def test_past_max_connections_new_clients_get_503_and_existing_ones_go_on() -> None:
    t = Tracker()
    handlers = [echo_handler("/ws", on_open=t.on_open, on_close=t.on_close), wsnest.handler("/hello", hello)]
    async with running_server(handlers, max_connections=2) as (_, url), http_client() as kept:
        with trio.fail_after(TIMEOUT):
            async with websockets.trio.client.connect(ws_url(url, "/ws")) as ws:
                first = await kept.get(url + "/hello")  # a keep-alive connection: the second one
                assert first.status_code == 200

                async with http_client() as other:
                    refused = await other.get(url + "/hello")
                assert refused.status_code == 503
                assert refused.headers["retry-after"] == "1"
                assert refused.headers["connection"] == "close"
                with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                    async with websockets.trio.client.connect(ws_url(url, "/ws")):
                        pass
                assert info.value.response.status_code == 503
                assert info.value.response.headers["Retry-After"] == "1"

                # The two connections in place are untouched.
                await ws.send("still here")
                assert await ws.recv() == "still here"
                again = await kept.get(url + "/hello")
                assert again.status_code == 200 and again.text == first.text  # same client port: same connection
            await t.wait_closed(1)

            # One closed: a new WebSocket is accepted.
            async with websockets.trio.client.connect(ws_url(url, "/ws")) as ws2:
                await ws2.send("in")
                assert await ws2.recv() == "in"
    assert len(t.opened) == 2
    t.assert_balanced()


async def test_a_refused_client_that_sends_nothing_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A refusal is bounded by REFUSE_TIME, far shorter than
    handshake_timeout (here longer than the test: only the refusal's own
    bound can end the connection)."""
    monkeypatch.setattr(_server, "REFUSE_TIME", 0.3)
    async with running_server([wsnest.handler("/hello", hello)], max_connections=1, handshake_timeout=3 * TIMEOUT) as (
        server,
        url,
    ):
        with trio.fail_after(TIMEOUT):
            held = await RawClient.connect(url)  # the one connection allowed, silent
            await trio.testing.wait_all_tasks_blocked()  # counted before the next one is accepted
            silent = await RawClient.connect(url)
            await trio.testing.wait_all_tasks_blocked()
            assert server._refusing == 1
            assert await silent.read_until_eof() == b""  # closed unanswered
            assert server._refusing == 0
            await silent.aclose()
            await held.aclose()


async def test_refusals_in_progress_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_REFUSING refusals at once, a new connection is closed
    unanswered: refused clients cannot pile up sockets."""
    monkeypatch.setattr(_server, "REFUSE_TIME", LONG)  # none expires while the test runs
    async with running_server([wsnest.handler("/hello", hello)], max_connections=1) as (server, url):
        with trio.fail_after(TIMEOUT):
            held = await RawClient.connect(url)
            await trio.testing.wait_all_tasks_blocked()
            refusing = [await RawClient.connect(url) for _ in range(MAX_REFUSING)]
            await trio.testing.wait_all_tasks_blocked()
            assert server._refusing == MAX_REFUSING
            extra = await RawClient.connect(url)
            await extra.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await extra.read_until_eof() == b""
            # A refusal in progress still answers its request.
            await refusing[0].send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = await refusing[0].read_head()
            assert resp.status == 503 and resp.header("connection") == "close"
            for c in [held, extra, *refusing]:
                await c.aclose()


async def test_serve_connection_counts_and_is_refused_past_the_limit() -> None:
    server = wsnest.http_server("http://127.0.0.1:0", [wsnest.handler("/hello", hello)], max_connections=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda task_status: server.serve(listen=False, task_status=task_status))
        socks = [socket.socketpair() for _ in range(2)]
        with trio.fail_after(TIMEOUT):
            for ours, _ in socks:
                nursery.start_soon(server.serve_connection, ours)
                await trio.testing.wait_all_tasks_blocked()  # in this order
            clients = [RawClient(trio.SocketStream(trio.socket.from_stdlib_socket(theirs))) for _, theirs in socks]
            statuses = []
            for c in clients:
                await c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
                statuses.append((await c.read_head()).status)
            assert statuses == [200, 503]
            await server.aclose()
            for c in clients:
                await c.aclose()


# -- the drain ------------------------------------------------------------------------


async def test_drain_answers_in_flight_requests_then_closes_websockets() -> None:
    """aclose() with a request in flight: idle keep-alive connections end at
    once, new connections are refused, WebSockets keep working until the
    response is out, which carries Connection: close; then 1001."""
    held = Held()
    handlers = [echo_handler("/ws"), wsnest.handler("/hello", hello), wsnest.handler("/held", held)]
    async with running_server(handlers, drain_timeout=LONG) as (server, url):
        with trio.fail_after(TIMEOUT):
            idle = await RawClient.connect(url)
            await idle.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await idle.read_head()).status == 200  # kept alive, now idle
            ws = await RawClient.connect(url)
            await ws.handshake("/ws")
            c = await RawClient.connect(url)
            await c.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            await held.started.wait()
            async with closing(server) as closed:
                # The idle connection is closed while the handler is still held.
                assert await idle.read_until_eof() == b""
                with pytest.raises(OSError):
                    await trio.open_tcp_stream(*host_port(url))
                # The WebSocket still works during the drain.
                await ws.send(client_frame(OP_TEXT, "during the drain"))
                assert await ws.read_message() == (OP_TEXT, b"during the drain")
                assert not closed.is_set()

                held.release.set()
                assert await ws.read_close() == (1001, "server shutting down")
                # The answer was in the client's socket before the 1001 was sent.
                assert isinstance(c.stream, trio.SocketStream)
                with socket.socket(fileno=os.dup(c.stream.socket.fileno())) as dup:
                    peeked = dup.recv(64, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                assert peeked.startswith(b"HTTP/1.1 200 ")
                await ws.send(close_frame(1001))
                await closed.wait()
            resp = await c.read_head()
            assert resp.status == 200 and resp.body == b"held answer"
            assert resp.header("connection") == "close"
            assert await c.read_until_eof() == b""
            assert server.state == "closed"
            for client in (idle, ws, c):
                await client.aclose()


async def test_httpx_gets_the_whole_answer_of_a_request_in_flight() -> None:
    held = Held()
    async with running_server([wsnest.handler("/held", held)], drain_timeout=LONG) as (server, url):
        with trio.fail_after(TIMEOUT):
            responses: list[httpx.Response] = []
            async with trio.open_nursery() as nursery, http_client() as http:

                async def get_held() -> None:
                    responses.append(await http.get(url + "/held"))

                nursery.start_soon(get_held)
                await held.started.wait()
                async with closing(server) as closed:
                    assert not closed.is_set()
                    held.release.set()
                    await closed.wait()
            [resp] = responses
            assert resp.status_code == 200 and resp.text == "held answer"
            assert resp.headers["connection"] == "close"


async def test_a_request_whose_head_is_arriving_is_answered() -> None:
    async with running_server([wsnest.handler("/hello", hello)], drain_timeout=LONG) as (server, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n")  # the head, but for its last line
            await trio.testing.wait_all_tasks_blocked()
            async with closing(server) as closed:
                await c.send(b"\r\n")
                resp = await c.read_head()
                assert resp.status == 200 and resp.header("connection") == "close"
                assert await c.read_until_eof() == b""
                await closed.wait()
            await c.aclose()


async def test_a_handler_outliving_drain_timeout_is_cancelled() -> None:
    held = Held()
    async with running_server([wsnest.handler("/held", held)], drain_timeout=0.2) as (server, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            await held.started.wait()
            async with closing(server) as closed:
                assert await c.read_until_eof() == b""  # cut: no response
                await closed.wait()
            assert held.cancelled
            await c.aclose()


async def test_aclose_drain_timeout_zero_skips_the_drain() -> None:
    held = Held()
    t = Tracker()
    handlers = [echo_handler("/ws", on_open=t.on_open, on_close=t.on_close), wsnest.handler("/held", held)]
    async with running_server(handlers, drain_timeout=LONG) as (server, url):
        with trio.fail_after(TIMEOUT):
            c = await RawClient.connect(url)
            await c.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
            await held.started.wait()
            ws = await RawClient.connect(url)
            await ws.handshake("/ws")
            async with closing(server, drain_timeout=0) as closed:
                assert await ws.read_close() == (1001, "server shutting down")
                await ws.send(close_frame(1001))
                assert await c.read_until_eof() == b""
                await closed.wait()
            assert held.cancelled and t.codes() == [1001]
            await c.aclose()
            await ws.aclose()


async def test_aclose_drain_timeout_is_validated() -> None:
    server = wsnest.http_server("http://127.0.0.1:0")
    with pytest.raises(ValueError, match="drain_timeout"):
        await server.aclose(drain_timeout=-1)
    with pytest.raises(TypeError, match="drain_timeout"):
        await server.aclose(drain_timeout="1")  # type: ignore[arg-type]


class StreamRecorder:
    def __init__(self, close_on: trio.Event | None = None) -> None:
        self.opened = trio.Event()
        self.closes = 0
        self.conn: wsnest.StreamConnection | None = None
        self.close_on = close_on

    def on_request(self, conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.set_header("Content-Type", "text/event-stream")
        conn.send(wsnest.format_sse("first"))
        self.conn = conn
        self.opened.set()

    def on_close(self, conn: wsnest.StreamConnection) -> None:
        self.closes += 1


async def test_an_sse_stream_open_at_the_deadline_is_ended_properly() -> None:
    rec = StreamRecorder()
    async with running_server([wsnest.handler_stream("/sse", rec.on_request, rec.on_close)], drain_timeout=0.2) as (
        server,
        url,
    ):
        with trio.fail_after(TIMEOUT):
            async with http_client() as http, http.stream("GET", url + "/sse") as r:
                assert r.headers["transfer-encoding"] == "chunked"
                chunks = r.aiter_text()
                assert await chunks.__anext__() == "data: first\n\n"
                async with closing(server) as closed:
                    rest = [chunk async for chunk in chunks]  # a clean end: httpx raises on a cut chunked body
                    await closed.wait()
            assert rest == []
            assert rec.closes == 1
            assert rec.conn is not None and rec.conn.send("late") == 7


async def test_a_stream_that_ends_during_the_drain_ends_it_early() -> None:
    rec = StreamRecorder()
    async with running_server([wsnest.handler_stream("/sse", rec.on_request, rec.on_close)], drain_timeout=LONG) as (
        server,
        url,
    ):
        with trio.fail_after(TIMEOUT):
            async with http_client() as http, http.stream("GET", url + "/sse") as r:
                chunks = r.aiter_text()
                assert await chunks.__anext__() == "data: first\n\n"
                async with closing(server) as closed:
                    assert rec.conn is not None
                    rec.conn.send(wsnest.format_sse("last"))
                    rec.conn.close()
                    rest = "".join([chunk async for chunk in chunks])
                    await closed.wait()  # long before drain_timeout
            assert rest == "data: last\n\n"
            assert rec.closes == 1


async def test_serve_style_websockets_and_served_connections_are_drained() -> None:
    """A ``serve=`` WebSocket loop ends on the 1001; a connection given to
    ``serve_connection()`` is drained like an accepted one."""
    served: list[str] = []
    ended = trio.Event()

    async def serve(ws: wsnest.WebSocket) -> None:
        async for msg in ws:
            served.append(msg if isinstance(msg, str) else msg.decode())
            ws.send(msg)
        ended.set()

    held = Held()
    handlers = [wsnest.handler_ws("/pull", serve=serve), wsnest.handler("/held", held)]
    async with running_server(handlers, drain_timeout=LONG) as (server, url):
        with trio.fail_after(TIMEOUT):
            ws = await RawClient.connect(url)
            await ws.handshake("/pull")
            await ws.send(client_frame(OP_TEXT, "one"))
            assert (await ws.read_message())[1] == b"one"
            ours, theirs = socket.socketpair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.serve_connection, ours)
                c = RawClient(trio.SocketStream(trio.socket.from_stdlib_socket(theirs)))
                await c.send(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
                await held.started.wait()
                async with closing(server) as closed:
                    held.release.set()
                    resp = await c.read_head()
                    assert resp.status == 200 and resp.body == b"held answer"
                    assert resp.header("connection") == "close"
                    assert await ws.read_close() == (1001, "server shutting down")
                    await ws.send(close_frame(1001))
                    await ended.wait()
                    await closed.wait()
            assert served == ["one"]
            await c.aclose()
            await ws.aclose()


# -- TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> wsnest.CertPair:
    return wsnest.write_cert()


async def tls_connect(url: str, cert: str) -> trio.SSLStream[trio.SocketStream]:
    host, port = host_port(url)
    stream = trio.SSLStream(await trio.open_tcp_stream(host, port), trusting(cert), server_hostname=host)
    await stream.do_handshake()
    return stream


async def test_tls_past_max_connections_gets_503(pair: wsnest.CertPair) -> None:
    tls = wsnest.tls_config(pair.cert, pair.key)
    async with tls_server(tls, [wsnest.handler("/hello", hello)], max_connections=1) as (_, url):
        with trio.fail_after(TIMEOUT):
            held = await tls_connect(url, pair.cert)
            await trio.testing.wait_all_tasks_blocked()
            refused = RawClient(await tls_connect(url, pair.cert))
            await refused.send(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            resp = await refused.read_head()
            assert resp.status == 503 and resp.header("retry-after") == "1"
            await held.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await RawClient(held).read_head()).status == 200
            await refused.aclose()
            await trio.aclose_forcefully(held)


async def test_drain_drops_tls_clients_that_sent_nothing(pair: wsnest.CertPair) -> None:
    tls = wsnest.tls_config(pair.cert, pair.key)
    async with tls_server(tls, [wsnest.handler("/hello", hello)], drain_timeout=LONG) as (server, url):
        with trio.fail_after(TIMEOUT):
            silent = RawClient(await trio.open_tcp_stream(*host_port(url)))
            await trio.testing.wait_all_tasks_blocked()
            async with closing(server) as closed:
                assert await silent.read_until_eof() == b""
                await closed.wait()  # long before drain_timeout
            await silent.aclose()


# -- run(): SIGTERM drains ------------------------------------------------------------------

RUN_SCRIPT = """
import sys
import trio
import wsnest

async def held(req):
    print("HANDLER", flush=True)
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)  # until the test says so
    return {"body": "complete " + line.strip()}

wsnest.http_server(
    "http://127.0.0.1:0", [wsnest.handler("/held", held), wsnest.handler("/hello", lambda req: {"body": "hi"})]
).run()
"""


@contextmanager
def run_script(tmp_path: Any, text: str) -> Iterator[tuple[subprocess.Popen[bytes], str, int]]:
    """Run ``text`` (a script calling ``server.run()``) until it prints its
    URL; yields ``(process, host, port)``; killed in the end if need be."""
    script = tmp_path / "serve.py"
    script.write_text(text)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    here = os.path.dirname(os.path.dirname(os.path.abspath(wsnest.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("Serving at "), (line, proc.stderr.read() if proc.stderr else "")
        host, port = host_port(line.split()[2])
        yield proc, host, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=TIMEOUT)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@contextmanager
def idle_and_busy(proc: subprocess.Popen[bytes], host: str, port: int) -> Iterator[tuple[socket.socket, socket.socket]]:
    """An idle keep-alive connection and one whose request is held in its handler."""
    assert proc.stdout is not None
    with (
        socket.create_connection((host, port), timeout=TIMEOUT) as idle,
        socket.create_connection((host, port), timeout=TIMEOUT) as busy,
    ):
        idle.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        assert idle.recv(4096).startswith(b"HTTP/1.1 200 ")  # kept alive, now idle
        busy.sendall(b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n")
        assert proc.stdout.readline() == b"HANDLER\n"
        yield idle, busy


def test_sigterm_under_run_drains_the_request_in_flight(tmp_path: Any) -> None:
    with run_script(tmp_path, RUN_SCRIPT) as (proc, host, port), idle_and_busy(proc, host, port) as (idle, busy):
        assert proc.stdin is not None
        proc.send_signal(signal.SIGTERM)
        assert idle.recv(4096) == b""  # the drain has begun, the handler is still held
        proc.stdin.write(b"now\n")
        proc.stdin.flush()
        answer = b""
        while chunk := busy.recv(4096):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\ncomplete now"), answer
        assert b"\r\nConnection: close\r\n" in answer
        assert proc.wait(timeout=TIMEOUT) == 0


def test_a_second_signal_under_run_stops_at_once(tmp_path: Any) -> None:
    script = RUN_SCRIPT.replace("\n).run()", ", drain_timeout=600\n).run()")
    with run_script(tmp_path, script) as (proc, host, port), idle_and_busy(proc, host, port) as (idle, busy):
        proc.send_signal(signal.SIGTERM)
        assert idle.recv(4096) == b""  # draining, for up to 600 s
        proc.send_signal(signal.SIGINT)
        assert busy.recv(4096) == b""  # the held handler was cut
        assert proc.wait(timeout=TIMEOUT) == 0


async def test_a_websocket_whose_serve_outlives_it_does_not_hold_the_drain() -> None:
    """The drain waits for HTTP work only: a ``serve=`` function still
    running after its connection closed is cut at the end, like any
    WebSocket work."""
    closed_seen = trio.Event()
    cancelled: list[bool] = []

    async def serve(ws: wsnest.WebSocket) -> None:
        async for _ in ws:
            pass
        closed_seen.set()
        try:
            await trio.sleep_forever()  # cleanup that never ends
        except trio.Cancelled:
            cancelled.append(True)
            raise

    async with running_server([wsnest.handler_ws("/pull", serve=serve)], drain_timeout=LONG, close_timeout=0.2) as (
        server,
        url,
    ):
        with trio.fail_after(TIMEOUT):
            ws = await RawClient.connect(url)
            await ws.handshake("/pull")
            await ws.send(close_frame(1000))
            assert await ws.read_close() == (1000, "")
            await closed_seen.wait()
            await server.aclose()  # long before drain_timeout
            await ws.aclose()
    assert cancelled == [True]
