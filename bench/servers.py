"""Echo servers for the end-to-end benchmarks, one process per server.

Run one with ``python bench/servers.py NAME [--host H] [--port P]``. Once it
listens it prints one line ``READY <port> key=value ...`` (e.g.
``READY 40123 core=compiled``) and serves until SIGINT or SIGTERM. Port 0
(the default) picks a free port; read it from the READY line.

Every server echoes each message back with the type it came in, and accepts
messages up to :data:`MAX_MESSAGE_SIZE` (64 MiB) wherever it has a limit.

Registered servers (:data:`SERVERS`, name -> :class:`ServerSpec`):

``wsnest``
    ``handler_ws("/ws", echo, textframes=None)`` on ``http_server``. The core
    is whatever the environment selects: the parent sets
    ``WSNEST_NO_EXTENSIONS=1`` for the pure core. READY reports ``core=``.
``trio-raw``
    A plain trio TCP byte echo (``trio.serve_tcp``, one
    ``receive_some(256 KiB)`` + one ``send_all`` per read). No WebSocket at
    all: it cannot answer the handshake, so ``loadclient.py`` talks to it in
    ``raw`` mode (no handshake; it sends the very same masked client frames
    and counts echoed bytes). It is the batching ceiling of a server on
    trio: scheduler and syscalls only, no parsing, no framing. (Not a bound
    for ping-pong: ``receive_some``/``send_all`` go through the scheduler on
    every call, which costs more per round trip than trying the socket first
    as wsnest does.)

``trio-floor``
    The least a trio server can do per read: a raw socket, one
    ``trio.lowlevel.wait_readable`` then one ``recv`` and one ``send`` (the
    write waits only if the kernel does not take it all). No WebSocket, no
    stream object, no framing: a round trip here is trio's own price (one
    scheduler pass, the ``epoll_ctl`` that re-arms trio's one-shot
    registration, two socket calls). Raw mode, like ``trio-raw``.
``uvloop-floor``
    The same on uvloop: an ``asyncio.Protocol`` whose ``data_received``
    calls ``transport.write(data)``. The two floors side by side price the
    event loops themselves, apart from any WebSocket work.

``websockets-trio``
    websockets' trio implementation (``websockets.trio.server.serve``,
    websockets >= 15), ``compression=None``, ``max_size`` 64 MiB;
    ``async for msg in ws: await ws.send(msg)`` (text arrives as ``str``).
``websockets``
    websockets' asyncio implementation (``websockets.asyncio.server.serve``),
    same options, on uvloop when installed.
``trio-websocket``
    ``trio_websocket.serve_websocket``, ``max_message_size`` 64 MiB, other
    options at their defaults (``message_queue_size=1``,
    ``receive_buffer_size=4096``); ``get_message`` / ``send_message``.
``aiohttp``
    ``aiohttp.web`` with ``WebSocketResponse(compress=False,
    max_msg_size=64 MiB)``, ``access_log=None``, on uvloop when installed;
    ``send_str`` for TEXT (delivered as ``str``), ``send_bytes`` for BINARY.
``picows``
    ``picows.ws_create_server`` on uvloop, ``max_frame_size`` 64 MiB. picows
    hands the application frames, not messages: the echo sends every frame
    back as it came (same opcode and FIN bit, so a fragmented message is
    echoed fragmented, with no reassembly), and TEXT payloads are neither
    decoded nor UTF-8 validated (picows does neither by default).

Besides the echo on ``/ws``, every WebSocket server has a broadcast pair
(:data:`BCAST_PATH`, :data:`TRIGGER_PATH`): connections on ``/bcast`` are
receivers (what they send is ignored); every message that arrives on
``/trigger`` is sent to all current receivers with the server's idiomatic
broadcast (``wsnest.broadcast``, ``websockets``' ``broadcast``, a loop of
sends elsewhere).

To add a server, write ``_run_<name>(host, port, ready)`` that blocks until SIGINT/SIGTERM,
calls ``ready(port, **info)`` once listening and echoes on ``/ws``; import
its framework inside the function, so the others need not be installed; then
register it in :data:`SERVERS`.

The parent side lives here too: :class:`ServerProcess` starts a server as a
subprocess (optionally pinned to a CPU), waits for READY and stops it cleanly.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from _util import raise_fd_limit, set_affinity

MAX_MESSAGE_SIZE = 64 << 20
RAW_RECV_SIZE = 256 * 1024
WS_PATH = "/ws"
BCAST_PATH = "/bcast"  # broadcast receivers
TRIGGER_PATH = "/trigger"  # every message here goes to all receivers

#: ``ready(port, **info)``: announce that the server listens.
Ready = Callable[..., None]


@dataclass(frozen=True)
class ServerSpec:
    """One benchmarkable server.

    ``protocol`` is ``"ws"`` (a WebSocket echo on :data:`WS_PATH`) or
    ``"raw"`` (a TCP byte echo: clients must skip the handshake).
    """

    name: str
    run: Callable[[str, int, Ready], None]
    protocol: str
    description: str


# -- servers ----------------------------------------------------------------


def _ensure_wsnest_importable() -> None:
    try:
        import wsnest  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))


def _run_wsnest(host: str, port: int, ready: Ready, awaits: bool = False) -> None:
    _ensure_wsnest_importable()
    import trio

    import wsnest

    def plain_echo(ws: wsnest.WebSocket, data: object) -> None:
        ws.send(data)  # type: ignore[arg-type]

    async def async_echo(ws: wsnest.WebSocket, data: object) -> None:
        await ws.send_wait(data)  # type: ignore[arg-type]

    # What applications that await write (wsnest-async): an async def callback.
    echo: Any = async_echo if awaits else plain_echo

    receivers: set[wsnest.WebSocket] = set()

    def trigger(ws: wsnest.WebSocket, data: object) -> None:
        wsnest.broadcast(receivers, data)  # type: ignore[arg-type]

    handlers = [
        wsnest.handler_ws(WS_PATH, echo, textframes=None, max_message_size=MAX_MESSAGE_SIZE),
        wsnest.handler_ws(
            BCAST_PATH,
            lambda ws, data: None,
            on_open=lambda ws, req: receivers.add(ws),
            on_close=receivers.discard,
            textframes=None,
        ),
        wsnest.handler_ws(TRIGGER_PATH, trigger, textframes=None),
    ]
    server = wsnest.http_server(f"http://{host}:{port}", handlers, max_message_size=MAX_MESSAGE_SIZE)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(server.serve)
                ready(int(url.rsplit(":", 1)[1]), core=wsnest.CORE)
                async for _ in signals:
                    break
                await server.aclose()

    trio.run(main)


def _run_trio_raw(host: str, port: int, ready: Ready) -> None:
    import trio

    async def echo(stream: trio.SocketStream) -> None:
        try:
            while True:
                data = await stream.receive_some(RAW_RECV_SIZE)
                if not data:
                    break
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                # trio.SocketStream sets TCP_NODELAY on TCP sockets.
                listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, port, host=host))
                ready(listeners[0].socket.getsockname()[1], core="none")
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(main)


def _run_trio_floor(host: str, port: int, ready: Ready) -> None:
    import socket

    import trio

    async def echo(sock: socket.socket) -> None:
        # One buffer per connection, reused: recv(256 KiB) would allocate
        # (and, past malloc's threshold, mmap and unmap) on every read.
        buf = memoryview(bytearray(RAW_RECV_SIZE))
        with sock:
            while True:
                await trio.lowlevel.wait_readable(sock)
                try:
                    n = sock.recv_into(buf)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not n:
                    return
                view = buf[:n]
                while view:
                    try:
                        view = view[sock.send(view) :]
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
                    except OSError:
                        return

    async def accept_loop(listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(echo, conn)

    async def main() -> None:
        listener = socket.create_server((host, port), backlog=1024)
        listener.setblocking(False)
        with listener, trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(accept_loop, listener, nursery)
                ready(listener.getsockname()[1], core="none")
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(main)


def _run_uvloop_floor(host: str, port: int, ready: Ready) -> None:
    import asyncio

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    async def main(stop: Any) -> None:
        # asyncio's create_server sets TCP_NODELAY on TCP transports.
        server = await asyncio.get_running_loop().create_server(Echo, host, port, backlog=1024)
        try:
            ready(server.sockets[0].getsockname()[1], core="none", loop=_loop_name())
            await stop
        finally:
            server.close()

    _asyncio_run(main)


def _asyncio_run(main: Callable[[Any], Any]) -> str:
    """Run ``main()`` on uvloop if installed (else asyncio) until SIGINT or
    SIGTERM; returns the loop's name. ``main`` gets a future to await."""
    import asyncio

    async def runner() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
        await main(stop)

    try:
        import uvloop
    except ImportError:
        asyncio.run(runner())
        return "asyncio"
    uvloop.run(runner())
    return "uvloop"


def _loop_name() -> str:
    import asyncio

    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _run_websockets_trio(host: str, port: int, ready: Ready) -> None:
    import trio
    from websockets.exceptions import ConnectionClosed
    from websockets.trio.server import ServerConnection, broadcast, serve

    receivers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else WS_PATH
        try:
            if path == BCAST_PATH:
                receivers.add(ws)
                try:
                    await ws.wait_closed()
                finally:
                    receivers.discard(ws)
            elif path == TRIGGER_PATH:
                async for msg in ws:
                    await broadcast(receivers, msg)
            else:
                async for msg in ws:
                    await ws.send(msg)
        except ConnectionClosed:
            pass

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(serve, handler, port, host=host, compression=None, max_size=MAX_MESSAGE_SIZE)
                )
                ready(server.listeners[0].socket.getsockname()[1], core="none", version=_version("websockets"))
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(main)


def _run_websockets(host: str, port: int, ready: Ready) -> None:
    from websockets.asyncio.server import ServerConnection, broadcast, serve
    from websockets.exceptions import ConnectionClosed

    receivers: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else WS_PATH
        try:
            if path == BCAST_PATH:
                receivers.add(ws)
                try:
                    await ws.wait_closed()
                finally:
                    receivers.discard(ws)
            elif path == TRIGGER_PATH:
                async for msg in ws:
                    broadcast(receivers, msg)
            else:
                async for msg in ws:
                    await ws.send(msg)
        except ConnectionClosed:
            pass

    async def main(stop: Any) -> None:
        async with serve(handler, host, port, compression=None, max_size=MAX_MESSAGE_SIZE) as server:
            ready(
                next(iter(server.sockets)).getsockname()[1],
                core="none",
                loop=_loop_name(),
                version=_version("websockets"),
            )
            await stop

    _asyncio_run(main)


def _run_trio_websocket(host: str, port: int, ready: Ready) -> None:
    import trio
    from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

    receivers: set[WebSocketConnection] = set()

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            if request.path == BCAST_PATH:
                receivers.add(ws)
                try:
                    while True:
                        await ws.get_message()
                finally:
                    receivers.discard(ws)
            elif request.path == TRIGGER_PATH:
                while True:
                    msg = await ws.get_message()
                    for other in list(receivers):
                        with contextlib.suppress(ConnectionClosed):
                            await other.send_message(msg)
            else:
                while True:
                    await ws.send_message(await ws.get_message())
        except ConnectionClosed:
            pass

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(serve_websocket, handler, host, port, None, max_message_size=MAX_MESSAGE_SIZE)
                )
                ready(server.port, core="none", version=_version("trio-websocket"))
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()

    trio.run(main)


def _run_aiohttp(host: str, port: int, ready: Ready) -> None:
    from aiohttp import WSMsgType, web

    receivers: set[web.WebSocketResponse] = set()

    def new_ws() -> web.WebSocketResponse:
        return web.WebSocketResponse(compress=False, max_msg_size=MAX_MESSAGE_SIZE)

    async def echo(request: web.Request) -> web.WebSocketResponse:
        ws = new_ws()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    async def bcast(request: web.Request) -> web.WebSocketResponse:
        ws = new_ws()
        await ws.prepare(request)
        receivers.add(ws)
        try:
            async for _ in ws:
                pass
        finally:
            receivers.discard(ws)
        return ws

    async def trigger(request: web.Request) -> web.WebSocketResponse:
        ws = new_ws()
        await ws.prepare(request)
        async for msg in ws:
            if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                continue
            for other in list(receivers):
                if other.closed:
                    continue
                with contextlib.suppress(ConnectionError):
                    if msg.type is WSMsgType.TEXT:
                        await other.send_str(msg.data)
                    else:
                        await other.send_bytes(msg.data)
        return ws

    async def main(stop: Any) -> None:
        app = web.Application()
        app.router.add_get(WS_PATH, echo)
        app.router.add_get(BCAST_PATH, bcast)
        app.router.add_get(TRIGGER_PATH, trigger)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        try:
            sock_port = runner.addresses[0][1]
            ready(sock_port, core="none", loop=_loop_name(), version=_version("aiohttp"))
            await stop
        finally:
            await runner.cleanup()

    _asyncio_run(main)


def _run_picows(host: str, port: int, ready: Ready) -> None:
    from picows import WSListener, WSMsgType, WSUpgradeRequest, ws_create_server

    close = WSMsgType.CLOSE
    ping = WSMsgType.PING
    pong = WSMsgType.PONG
    binary = WSMsgType.BINARY
    receivers: set[Any] = set()

    class Echo(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            msg_type = frame.msg_type
            if msg_type is close:
                transport.send_close(frame.get_close_code(), frame.get_close_reason())
                transport.disconnect()
            elif msg_type is not ping and msg_type is not pong:  # auto-pong answers pings
                transport.send(msg_type, frame.get_payload_as_memoryview(), frame.fin)

    class Receiver(WSListener):  # type: ignore[misc]
        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport
            receivers.add(transport)

        def on_ws_disconnected(self, transport: Any) -> None:
            receivers.discard(transport)

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type is close:
                transport.send_close(frame.get_close_code(), frame.get_close_reason())
                transport.disconnect()

    class Trigger(WSListener):  # type: ignore[misc]
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            msg_type = frame.msg_type
            if msg_type is close:
                transport.send_close(frame.get_close_code(), frame.get_close_reason())
                transport.disconnect()
            elif msg_type is binary or msg_type is WSMsgType.TEXT:
                payload = frame.get_payload_as_bytes()
                for other in receivers:
                    other.send(msg_type, payload)

    bcast_path, trigger_path = BCAST_PATH.encode(), TRIGGER_PATH.encode()

    def factory(request: WSUpgradeRequest) -> WSListener:
        path = request.path  # bytes in picows
        if path == bcast_path:
            return Receiver()
        if path == trigger_path:
            return Trigger()
        return Echo()

    async def main(stop: Any) -> None:
        server = await ws_create_server(factory, host, port, max_frame_size=MAX_MESSAGE_SIZE)
        try:
            ready(server.sockets[0].getsockname()[1], core="none", loop=_loop_name(), version=_version("picows"))
            await stop
        finally:
            server.close()

    _asyncio_run(main)


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in [
        ServerSpec("wsnest", _run_wsnest, "ws", "wsnest handler_ws echo (core from WSNEST_NO_EXTENSIONS)"),
        ServerSpec(
            "wsnest-async",
            functools.partial(_run_wsnest, awaits=True),
            "ws",
            "wsnest handler_ws echo, async def on_message with await ws.send_wait(data)",
        ),
        ServerSpec("trio-raw", _run_trio_raw, "raw", "trio TCP byte echo, receive_some(256 KiB) + send_all"),
        ServerSpec("trio-floor", _run_trio_floor, "raw", "raw socket, trio wait_readable + recv + send per read"),
        ServerSpec("uvloop-floor", _run_uvloop_floor, "raw", "asyncio.Protocol echo, transport.write (uvloop)"),
        ServerSpec("websockets-trio", _run_websockets_trio, "ws", "websockets.trio.server.serve, compression=None"),
        ServerSpec("websockets", _run_websockets, "ws", "websockets.asyncio.server.serve, compression=None (uvloop)"),
        ServerSpec("trio-websocket", _run_trio_websocket, "ws", "trio_websocket.serve_websocket"),
        ServerSpec("aiohttp", _run_aiohttp, "ws", "aiohttp.web WebSocketResponse(compress=False) (uvloop)"),
        ServerSpec("picows", _run_picows, "ws", "picows.ws_create_server on uvloop, frame-by-frame echo"),
    ]
}


# -- parent side --------------------------------------------------------------


@dataclass
class ServerProcess:
    """A server from :data:`SERVERS` running in a subprocess.

    Use as a context manager, or call :meth:`start` / :meth:`stop`. After
    start, ``port`` and ``info`` (the READY line's ``key=value`` pairs) are
    set and ``url`` is the address a client should use (``ws://`` URL for a
    WebSocket server, ``tcp://host:port`` for a raw one).
    """

    name: str
    host: str = "127.0.0.1"
    env: Mapping[str, str] | None = None
    cpu: int | None = None
    start_timeout: float = 20.0
    stop_timeout: float = 10.0
    port: int = 0
    #: A command the server runs under (a tracer such as valgrind), if any.
    prefix: tuple[str, ...] = ()
    info: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[str] | None = None
    _errfile: IO[str] | None = field(default=None, repr=False)

    @property
    def spec(self) -> ServerSpec:
        return SERVERS[self.name]

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        if self.spec.protocol == "raw":
            return f"tcp://{self.host}:{self.port}"
        return f"ws://{self.host}:{self.port}{WS_PATH}"

    def start(self) -> ServerProcess:
        env = dict(os.environ if self.env is None else self.env)
        env.setdefault("PYTHONUNBUFFERED", "1")
        script = str(Path(__file__).resolve())
        cmd = [*self.prefix, sys.executable, script, self.name, "--host", self.host, "--port", "0"]
        # stderr goes to a file: a pipe nobody reads could fill up and stall the server.
        self._errfile = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=self._errfile, text=True)
        if self.cpu is not None:
            set_affinity(self.proc.pid, self.cpu)
        deadline = time.monotonic() + self.start_timeout
        assert self.proc.stdout is not None
        line = _readline_until(self.proc, deadline)
        if line is None or not line.startswith("READY "):
            err = self._kill_and_collect()
            raise RuntimeError(f"server {self.name!r} did not become ready (got {line!r}); stderr:\n{err}")
        parts = line.split()
        self.port = int(parts[1])
        self.info = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        return self

    def stop(self) -> int | None:
        """SIGINT, wait up to ``stop_timeout``, then SIGKILL. Returns the exit code."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                print(f"warning: server {self.name} ignored SIGINT for {self.stop_timeout}s; killing", file=sys.stderr)
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.returncode not in (0, None):
            print(f"server {self.name} stderr:\n{self.stderr_text()}", file=sys.stderr)
        self._close_errfile()
        self.proc = None
        return proc.returncode

    def stderr_text(self, limit: int = 4000) -> str:
        """The last ``limit`` characters the server wrote to stderr."""
        if self._errfile is None:
            return ""
        self._errfile.flush()
        self._errfile.seek(0)
        return self._errfile.read()[-limit:]

    def _close_errfile(self) -> None:
        if self._errfile is not None:
            self._errfile.close()
            self._errfile = None

    def _kill_and_collect(self) -> str:
        proc = self.proc
        assert proc is not None
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=5)
        err = self.stderr_text()
        self._close_errfile()
        self.proc = None
        return err

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _readline_until(proc: subprocess.Popen[str], deadline: float) -> str | None:
    """Read one stdout line, giving up at ``deadline`` or when the process dies."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if sel.select(min(left, 0.2)):
                line = proc.stdout.readline()
                return line.strip() if line else None
            if proc.poll() is not None:
                return None


# -- child side ---------------------------------------------------------------


def _print_ready(port: int, **info: object) -> None:
    extra = "".join(f" {k}={v}" for k, v in info.items())
    print(f"READY {port}{extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(SERVERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    raise_fd_limit()
    with contextlib.suppress(KeyboardInterrupt):
        SERVERS[args.name].run(args.host, args.port, _print_ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
