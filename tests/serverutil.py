"""Shared helpers for the WebSocket server tests.

- :func:`running_server`: serve a ``wsnest`` server in a trio nursery for the
  duration of an ``async with`` block (closed with ``aclose()`` on exit).
- :class:`RawClient`: a raw TCP client on ``trio.open_tcp_stream`` that sends
  hand-made requests and frames and parses the server's (unmasked) frames.
- Frames, masks and handshake requests come from the shared wire toolkit,
  ``bench/wire.py`` (:func:`wire.client_frame` and friends).
- :class:`Tracker`: records on_open / on_close and lets a test wait for them.
- :func:`echo_ok`: a quick "the server still works" check.
- :func:`memory_server` / :func:`memory_connection`: drive a connection over
  ``trio.testing.memory_stream_pair()`` without any socket.
"""

from __future__ import annotations

import datetime
import email.utils
import functools
import re
import socket
import struct
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import trio
import trio.testing

import wsnest
from wire import OP_CLOSE, OP_TEXT, client_frame, close_frame, new_key, parse_close, server_frame_head, upgrade_request
from wsnest.core import accept_key

# Generous bound for anything that could hang; every test stays far below it.
TIMEOUT = 10

# The nursery each memory_server serves in, for spawn().
_NURSERIES: weakref.WeakKeyDictionary[wsnest.HttpServer, trio.Nursery] = weakref.WeakKeyDictionary()


# -- servers -------------------------------------------------------------------


@asynccontextmanager
async def running_server(
    handlers: Any, url: str = "http://127.0.0.1:0", **limits: Any
) -> AsyncIterator[tuple[wsnest.HttpServer, str]]:
    """Serve ``handlers`` for the body of the block; yields ``(server, url)``."""
    server = wsnest.http_server(url, handlers, **limits)
    async with trio.open_nursery() as nursery:
        real_url = await nursery.start(server.serve)
        try:
            yield server, real_url
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(TIMEOUT):
                await server.aclose()


def host_port(url: str) -> tuple[str, int]:
    """``("127.0.0.1", 8080)`` from ``"http://127.0.0.1:8080"`` (IPv6 unbracketed)."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def ws_url(url: str, path: str = "/ws") -> str:
    """The ``ws://`` URL of ``path`` on a server whose URL is ``url``."""
    return "ws" + url[len("http") :] + path


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind a socket to ``::1``."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


# -- callback recorder ---------------------------------------------------------


class Tracker:
    """Counts on_open / on_close and lets a test wait for them."""

    def __init__(self) -> None:
        self.opened: list[wsnest.WebSocket] = []
        self.closed: list[tuple[int, int]] = []  # (id, close_code)
        self.messages = 0
        self._changed = trio.Event()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def on_open(self, ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        self.opened.append(ws)
        self._poke()

    def on_close(self, ws: wsnest.WebSocket) -> None:
        self.closed.append((ws.id, ws.close_code))
        self._poke()

    async def wait_opened(self, n: int) -> None:
        while len(self.opened) < n:
            await self._changed.wait()

    async def wait_closed(self, n: int) -> None:
        while len(self.closed) < n:
            await self._changed.wait()

    def assert_balanced(self) -> None:
        opened = sorted(ws.id for ws in self.opened)
        closed = sorted(ws_id for ws_id, _ in self.closed)
        assert closed == opened, f"on_open ran for {opened}, on_close for {closed}"

    def codes(self) -> list[int]:
        return sorted(code for _, code in self.closed)


# -- the Date header -------------------------------------------------------------

_DATE_LINE = re.compile(rb"\r\nDate: ([^\r\n]*)\r\n", re.IGNORECASE)


def without_date(response: bytes) -> bytes:
    """``response`` with its ``Date`` header line removed, after checking
    that its head has exactly one, an IMF-fixdate in GMT (RFC 9110
    6.6.1), so exact-bytes comparisons stay exact."""
    end = response.find(b"\r\n\r\n") + 2
    assert end > 1, f"no complete head in {response[:200]!r}"
    head = response[:end]
    dates = _DATE_LINE.findall(head)
    assert len(dates) == 1, f"expected one Date header in {head!r}"
    parsed = email.utils.parsedate_to_datetime(dates[0].decode("ascii"))
    assert parsed.tzinfo is not None and parsed.utcoffset() == datetime.timedelta(0)
    assert dates[0].endswith(b" GMT") and len(dates[0]) == 29, dates[0]
    return _DATE_LINE.sub(b"\r\n", head, count=1) + response[end:]


# -- a raw client --------------------------------------------------------------


class Response:
    """A parsed HTTP response head (and whatever body came with it)."""

    def __init__(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.headers!r} {self.body[:80]!r}>"


class RawClient:
    """A byte-level client over a trio TCP stream (or any trio stream)."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, url: str) -> RawClient:
        host, port = host_port(url)
        return cls(await trio.open_tcp_stream(host, port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        """Read more bytes into the buffer; False at EOF (or reset)."""
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    async def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            if not await self._fill():
                raise EOFError(f"connection closed with {len(self.buf)} of {n} bytes")
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def read_head(self, body: bool = True) -> Response:
        """Read one response head, plus its body if it has a Content-Length
        (``body=False``: leave the body unread, as for a HEAD request)."""
        while b"\r\n\r\n" not in self.buf:
            if not await self._fill():
                raise EOFError(f"connection closed before a response head: {bytes(self.buf)!r}")
        end = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        status_line, *lines = head.split("\r\n")
        _, status, *reason = status_line.split(" ", 2)
        headers = []
        for line in lines:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
        resp = Response(int(status), reason[0] if reason else "", headers, b"")
        length = resp.header("content-length")
        if body and length is not None and int(status) != 101:
            resp.body = await self._exactly(int(length))
        return resp

    async def handshake(self, path: str = "/ws", **kw: Any) -> Response:
        """Send an upgrade request and check the 101 (with a correct accept)."""
        key = new_key()
        await self.send(upgrade_request(path, key=key, **kw))
        resp = await self.read_head()
        assert resp.status == 101, resp
        assert resp.header("sec-websocket-accept") == accept_key(key)
        return resp

    async def read_frame(self) -> tuple[bool, int, bytes]:
        """Read one server frame: ``(fin, opcode, payload)``; it must be
        unmasked and set no RSV bit (ValueError otherwise)."""
        while (head := server_frame_head(self.buf)) is None or len(self.buf) < head[4]:
            if not await self._fill():
                raise EOFError(f"connection closed inside a frame: {bytes(self.buf[:20])!r}")
        fin, opcode, _, start, end = head
        payload = bytes(self.buf[start:end])
        del self.buf[:end]
        return fin, opcode, payload

    async def read_message(self) -> tuple[int, bytes]:
        """Read frames until a whole data message: ``(opcode, payload)``;
        control frames are returned as they come."""
        parts: list[bytes] = []
        first_op = None
        while True:
            fin, op, payload = await self.read_frame()
            if op >= OP_CLOSE:
                return op, payload
            if first_op is None:
                first_op = op
            parts.append(payload)
            if fin:
                return first_op, b"".join(parts)

    async def read_close(self) -> tuple[int | None, str]:
        """Skip data frames until the server's close frame; return its code and reason."""
        while True:
            _, op, payload = await self.read_frame()
            if op == OP_CLOSE:
                return parse_close(payload)

    async def read_until_eof(self) -> bytes:
        """Everything until the server closes the connection."""
        while await self._fill():
            pass
        out = bytes(self.buf)
        self.buf.clear()
        return out

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def abort(self) -> None:
        """Drop the TCP connection with a RST (no close frame, no FIN)."""
        stream = self.stream
        if isinstance(stream, trio.SocketStream):
            stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await trio.aclose_forcefully(stream)


async def connect_slow_reader(url: str, rcvbuf: int = 4096) -> RawClient:
    """A raw client whose socket has a tiny receive buffer, so that a client
    that does not read pushes back on the server quickly."""
    host, port = host_port(url)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect((host, port))
    return RawClient(trio.SocketStream(sock))


@asynccontextmanager
async def raw_ws(url: str, path: str = "/ws", **kw: Any) -> AsyncIterator[RawClient]:
    """A raw client already past the opening handshake."""
    client = await RawClient.connect(url)
    try:
        await client.handshake(path, **kw)
        yield client
    finally:
        await client.aclose()


async def echo_ok(url: str, path: str = "/ws", text: str = "still alive") -> None:
    """Assert that a fresh client gets an echo and a clean close (the server
    is unharmed). The handler at ``path`` must echo."""
    with trio.fail_after(TIMEOUT):
        async with raw_ws(url, path) as c:
            await c.send(client_frame(OP_TEXT, text))
            _, payload = await c.read_message()
            assert payload == text.encode("utf-8")
            await c.send(close_frame(1000))
            assert await c.read_close() == (1000, "")


def echo_handler(path: str = "/ws", textframes: bool | None = None, **kw: Any) -> wsnest.WebSocketHandler:
    """A handler that sends every message back."""
    return wsnest.handler_ws(path, lambda ws, data: ws.send(data), textframes=textframes, **kw)


def sync_connect(uri: str, **kw: Any) -> Any:
    """``websockets.sync.client.connect`` entered as a context manager (as
    websockets 17 wants), for use across several thread calls; close it
    with ``.close()``. Call it in a worker thread."""
    import websockets.sync.client

    return websockets.sync.client.connect(uri, **kw).__enter__()


async def run_in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking client in a worker thread, bounded by ``TIMEOUT``."""
    with trio.fail_after(TIMEOUT):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


# -- in-memory connections (no sockets) -----------------------------------------


@asynccontextmanager
async def memory_server(handlers: Any, **limits: Any) -> AsyncIterator[wsnest.HttpServer]:
    """A server serving with no listener (``serve(listen=False)``):
    connections are given to it with :func:`memory_connection` and
    :func:`spawn`."""
    server = wsnest.http_server("http://127.0.0.1:0", handlers, **limits)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve, listen=False))
        _NURSERIES[server] = nursery
        try:
            yield server
        finally:
            del _NURSERIES[server]
            nursery.cancel_scope.cancel()


def spawn(server: wsnest.HttpServer, fn: Callable[[], Any]) -> None:
    """Start ``fn()`` in the nursery of a :func:`memory_server`."""
    _NURSERIES[server].start_soon(fn)


def memory_connection(
    server: wsnest.HttpServer, client: tuple[str, int] = ("10.0.0.1", 40000)
) -> tuple[RawClient, Callable[[], Any]]:
    """A client end over a memory stream and the coroutine function that
    serves the server end through the public ``serve_connection`` (start it
    with :func:`spawn`)."""
    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def serve() -> None:
        await server.serve_connection(server_stream, client)

    return RawClient(client_stream), serve
