"""``http_server``: the trio server (listener, connection tasks, shutdown).

Structured concurrency throughout: ``serve()`` owns one nursery holding the
accept loop, the flusher, and one task per connection; nothing outlives it.
Each connection task owns its transport and is the one place that closes it.
``HttpServer`` implements :class:`~wsnest.server.ServerContext`, the only
part of the server that handlers and sessions use.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import math
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import trio

from .._errors import HTTPError
from .._limits import DEFAULT_LIMITS, Limits
from ..broker import Broker, BrokerError, broker_from_url
from ..core import trim_spare, warn_core_fallback
from ..http import build_response
from ..http._forwarded import ProxyTrust
from ._access import ObservedConnection
from ._connection import HttpConnection
from ._contract import Closable, Endable, Handler, Session
from ._groups import Groups
from ._handshake_slots import HandshakeSlots
from ._listeners import UDS_MODE, Listener, adopt, listen_adopted, listener_url, open_tcp, open_unix, resolve
from ._observe import Observer
from ._poller import Poller, poller_enabled
from ._refuse import MAX_REFUSING, REFUSE_TIME, RefusingRouter
from ._routing import Router
from ._stats import merge_stats
from ._stream import StreamConnection
from ._supervisor import check_workers, supervise
from ._transport import SocketTransport, StreamTransport, TimedWriter, TLSTransport, Transport
from ._worker_board import WorkerBoard
from ._workers import current_board, current_worker

log = logging.getLogger("wsnest")

RECV_BUFFER_SIZE = 256 * 1024
#: Seconds between a worker's publications of its numbers (see ``stats``).
STATS_PERIOD = 0.5
# Seconds between checks of the core's spare buffer (see _reaper).
SPARE_IDLE = 1.0


class HttpServer:
    """An HTTP + WebSocket server on trio; build it with :func:`http_server`.

    Attributes:
        url: the server URL; after start it holds the real port
            (``unix:PATH`` for a Unix socket).
        urls: the URL of every listening socket, once started (a host with
            several addresses has several); ``[url]`` before.
        state: ``"not started"``, ``"started"`` or ``"closed"``.
        limits: the :class:`Limits` in force.
    """

    def __init__(
        self,
        url: str,
        handlers: Handler | Sequence[Handler] = (),
        tls: ssl.SSLContext | None = None,
        limits: Limits = DEFAULT_LIMITS,
        *,
        access_log: bool = False,
        proxy_headers: bool = False,
        forwarded_allow_ips: str | Sequence[str] = "127.0.0.1",
        sock: socket.socket | int | None = None,
        uds_mode: int = UDS_MODE,
        broker: str | Broker | None = None,
    ) -> None:
        scheme, host, port = _parse_url(url)
        trust = ProxyTrust(forwarded_allow_ips)  # validated even when unused
        self._uds_path: str | None = None
        if scheme == "unix":  # unix:PATH serves HTTP, or HTTPS with tls=
            scheme, self._uds_path = ("https" if tls is not None else "http"), host
        if scheme == "https" and tls is None:
            raise ValueError("tls: an https:// URL needs tls=tls_config(...)")
        if scheme == "http" and tls is not None:
            raise ValueError("tls: given with an http:// URL (use https://)")
        if tls is not None and not isinstance(tls, ssl.SSLContext):
            raise TypeError(f"tls: expected the result of tls_config(), got {type(tls).__name__}")
        if isinstance(handlers, Handler):
            handlers = [handlers]
        self._router = Router(list(handlers))
        self._scheme = scheme
        self._host = host
        self._port = port
        if isinstance(uds_mode, bool) or not isinstance(uds_mode, int) or not 0 <= uds_mode <= 0o777:
            raise ValueError(f"uds_mode: expected permission bits such as 0o660, got {uds_mode!r}")
        self._uds_mode = uds_mode
        self._sock = adopt(sock) if sock is not None else None
        self._tls = tls
        self.limits = limits
        # Handshakes in progress (waiters queue in order): each holds an SSL
        # object and up to a ClientHello's worth of buffers. One running for
        # a tenth of handshake_timeout (1 s by default; a real one takes a
        # few round trips) gives its slot up to a client waiting for one.
        self._tls_slots = HandshakeSlots(limits.max_tls_handshakes, limits.handshake_timeout / 10)
        self.url = f"unix:{host}" if self._uds_path is not None else _format_url(scheme, host, port)
        self.urls = [self.url]
        self.state = "not started"
        self._ids = itertools.count(1)
        self._ws_limit_cache: dict[int, Limits] = {}
        self._websockets: set[Closable] = set()
        self._http_conns: set[HttpConnection] = set()
        self._stalled_writers: set[TimedWriter] = set()  # waiting to write, see _reaper
        self._finalizers: set[trio.CancelScope] = set()
        self._stopping = False
        self._dirty: list[Callable[[], None]] = []
        self._flush_wakeup: trio.Event | None = None  # created in serve()
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._done: trio.Event | None = None
        self._listeners: list[Listener] = []
        # Set by the worker supervisor (see _supervisor.py) before it forks.
        self._inherited: list[Listener] | None = None  # serve these, bind nothing
        self._reuse_port = False  # bind SO_REUSEPORT sockets on _bind_addresses
        self._bind_addresses: list[tuple[int, tuple[object, ...]]] | None = None
        self._external: set[trio.CancelScope] = set()  # serve_connection() calls
        # Connection tasks serving a client (max_connections), those of them
        # that became WebSockets (the drain waits for the others), and
        # refusals in progress.
        self._open = 0
        self._ws_open = 0
        self._max_open = sys.maxsize if limits.max_connections is None else limits.max_connections
        self._refusing = 0
        self._refused = 0  # since the last warning
        self._refused_warned = -math.inf
        self._refuse_router: RefusingRouter | None = None
        self._streams: set[Endable] = set()
        self._tls_idle: set[trio.CancelScope] = set()  # TLS clients that have sent nothing yet
        self._draining = False  # new requests are answered with Connection: close
        self._ending = False  # the drain is over: sessions that open are closed at once
        self._drain_timeout: float | None = None  # aclose()'s, else limits.drain_timeout
        self._changed: trio.Event | None = None  # set during shutdown when a connection ends
        #: The receive buffer shared by every connection task (see ServerContext).
        self.recv_buffer = memoryview(bytearray(RECV_BUFFER_SIZE))
        #: The readiness poller while serving (see _poller), None where the
        #: platform has none or ``WSNEST_NO_POLLER`` is set.
        self.poller: Poller | None = None
        self._poller_counts = (0, 0)  # of the last poller, once closed
        #: Counters and access log (see :meth:`stats`).
        self.observer = Observer(bool(access_log), scheme, trust if proxy_headers else None)
        # One class for every connection: a server without access log and
        # proxy headers pays nothing per request for them.
        self._connection_class = ObservedConnection if access_log or proxy_headers else HttpConnection
        if isinstance(broker, str):
            broker = broker_from_url(broker)
        elif broker is not None and not isinstance(broker, Broker):
            raise TypeError(f"broker: expected a URL or a Broker, got {type(broker).__name__}")
        #: The server's groups (see :class:`Groups`); across processes
        #: through ``broker``.
        self.groups = Groups(broker, limits.max_message_size)

    def __repr__(self) -> str:
        return f"<HttpServer {self.url} {self.state}>"

    def stats(self, all_workers: bool = False) -> dict[str, Any]:
        """The server's numbers as a plain, JSON-serialisable dict.

        ``pid``, ``core``; ``connections``: open ones by kind (``http``:
        speaking HTTP, ``websocket``, ``stream``); totals since start:
        ``http_requests``, ``ws_sessions``, ``ws_messages_in`` /
        ``ws_messages_out``, ``ws_bytes_in`` / ``ws_bytes_out`` (WebSocket
        bytes on the wire, frame headers included), ``streams``;
        ``send_refusals``: refused ``send``/``broadcast`` calls by return
        code (``"7"``, ``"8"``, ``"17"``); ``ws_closes``: ended WebSocket
        sessions by close code (``"1000"``, ``"1006"``, ...). Render them
        with :func:`stats_to_prometheus`.

        Each process counts its own. Under ``run(workers=N)``,
        ``all_workers=True`` gives the total of every worker (as
        :func:`merge_stats` sums them, with ``workers`` and a ``pid`` list):
        this process's numbers now, the others' as each last published them
        (every ``STATS_PERIOD``, 0.5 s, through a shared memory board). A
        restarted worker counts from zero again. In a single process it is
        this process's numbers.
        """
        own = self.observer.stats(self._http_conns, self._websockets)
        own.update(self.groups.stats())
        poller = self.poller
        own["poller_reads"], own["poller_wakeups"] = (
            (poller.steps, poller.wakeups) if poller is not None else self._poller_counts
        )
        board = current_board()
        worker = current_worker()
        if not all_workers or board is None or worker is None:
            return own
        parts = [own]
        for index, payload in enumerate(board.read_all()):
            if index == worker.index or not payload:
                continue
            with contextlib.suppress(ValueError):  # a slot being rewritten by a new worker
                parts.append(json.loads(payload))
        return merge_stats(parts)

    async def _publish_stats(self, board: WorkerBoard, index: int) -> None:
        # A worker's numbers for the others' stats(all_workers=True).
        failed = False
        while True:
            try:
                board.publish(index, json.dumps(self.stats(), separators=(",", ":")).encode())
            except ValueError as exc:  # bigger than a slot: say so once, keep serving
                if not failed:
                    log.warning("wsnest: worker %d cannot publish its numbers: %s", index, exc)
                failed = True
            await trio.sleep(STATS_PERIOD)

    # -- lifecycle -------------------------------------------------------------

    async def serve(self, *, listen: bool = True, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and serve until cancelled or :meth:`aclose` is called.

        Works with ``await nursery.start(server.serve)``, which returns the
        URL (with the real port) once the server is listening.
        ``listen=False`` opens no listener: the server then serves only the
        connections given to :meth:`serve_connection`.
        """
        if self.state != "not started":
            raise RuntimeError(f"server: cannot serve, it is {self.state}")
        self._listeners = self._listen() if listen else []
        self.state = "started"
        self._stop = trio.Event()
        self._done = trio.Event()
        self._flush_wakeup = trio.Event()
        failed: BrokerError | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._flusher)
                nursery.start_soon(self._reaper)
                if poller_enabled():
                    self.poller = Poller()
                    nursery.start_soon(self.poller.run)
                self.groups.started()
                broker = self.groups.broker
                if broker is not None:
                    # Before serving anyone: a broker that cannot be reached
                    # fails the start, with the error bare (not in a group).
                    try:
                        await nursery.start(broker.run, self.groups.receive)
                    except BrokerError as exc:
                        failed = exc
                        nursery.cancel_scope.cancel()
                        return
                for listener in self._listeners:
                    nursery.start_soon(self._accept_loop, listener.sock, listener.unmap)
                board, worker = current_board(), current_worker()
                if board is not None and worker is not None:
                    nursery.start_soon(self._publish_stats, board, worker.index)
                if self._listeners:
                    log.info("wsnest serving at %s", self.url)
                warn_core_fallback()  # once per process: a pure core nobody asked for is slow
                task_status.started(self.url)
                try:
                    await self._stop.wait()
                    await self._shutdown(nursery)
                finally:
                    self._bound_finalizers()  # also when serve() itself is cancelled
        finally:
            self._close_listener()
            if self.poller is not None:
                self._poller_counts = (self.poller.steps, self.poller.wakeups)
                self.poller.close()
                self.poller = None
            self.state = "closed"
            self._done.set()
            if failed is not None:
                raise failed

    async def serve_connection(
        self, stream: trio.abc.Stream | socket.socket, client: tuple[str, int] | None = None
    ) -> None:
        """Serve one connected client until it ends, then close it.

        For tests and for embedding wsnest behind another listener. The
        server must be serving (:meth:`serve`, with ``listen=False`` if it
        should accept nothing itself); call this from any task, e.g.
        ``nursery.start_soon(server.serve_connection, stream)``.

        Args:
            stream: a trio ``Stream`` (served as it is: wrap it in
                ``trio.SSLStream`` yourself for TLS), or a connected stdlib
                ``socket.socket`` (the fast path; TLS if the server has it).
            client: the peer address that ``req.client`` shows; by default a
                socket's peer address, None for a stream.

        It counts toward ``max_connections`` (past it, its request gets the
        503) and is drained when the server stops, as those it accepted
        itself.
        """
        if self.state != "started":
            raise RuntimeError(f"server: cannot serve a connection, it is {self.state}")
        deadline = math.inf
        transport: Transport
        if isinstance(stream, socket.socket):
            if client is None:
                client = _peer_of(stream)
            if self._tls is None:
                transport = SocketTransport(stream, self.limits.send_timeout, self._stalled_writers)
            else:
                transport = TLSTransport(stream, self._tls, client, self.limits.send_timeout, self._stalled_writers)
                deadline = trio.current_time() + self.limits.handshake_timeout
        elif isinstance(stream, trio.abc.Stream):
            transport = StreamTransport(stream, client, self.limits.send_timeout)
        else:
            raise TypeError(f"stream: expected a trio Stream or a socket.socket, got {type(stream).__name__}")
        with trio.CancelScope() as scope:
            self._external.add(scope)  # cancelled when the server stops
            try:
                await self._serve_transport(transport, client, deadline)
            finally:
                self._external.discard(scope)

    async def aclose(self, drain_timeout: float | None = None) -> None:
        """Stop gracefully and return once :meth:`serve` has returned.

        1. Stop accepting (the listener is closed).
        2. Drain, for up to ``drain_timeout`` (by default
           ``limits.drain_timeout``; 0: no drain): HTTP connections waiting
           for a request with none of it received close at once; a request
           already started is answered with ``Connection: close``; streams
           may end by themselves.
        3. Then HTTP handlers still running are cancelled, streams still
           open are ended (the terminating chunk is sent, ``on_close``
           runs), and every WebSocket is closed with 1001; up to
           ``close_timeout`` for the close handshakes and ``on_close``.
        4. Anything still running is cancelled.

        So it returns within about ``drain_timeout + close_timeout``. Only
        the first call's ``drain_timeout`` counts.
        """
        if drain_timeout is not None:
            if isinstance(drain_timeout, bool) or not isinstance(drain_timeout, (int, float)):
                raise TypeError(f"drain_timeout: expected a number, got {type(drain_timeout).__name__}")
            if not drain_timeout >= 0:
                raise ValueError(f"drain_timeout: must be 0 or more, got {drain_timeout!r}")
            if self._drain_timeout is None:
                self._drain_timeout = float(drain_timeout)
        if self.state == "not started":
            self.state = "closed"
            return
        if self._stop is not None:
            self._stop.set()
        if self._done is not None:
            await self._done.wait()

    def run(self, workers: int = 1) -> None:
        """Serve in the foreground (blocking). Ctrl+C or SIGTERM stops
        gracefully (:meth:`aclose`, with its drain); a second one stops at
        once.

        ``workers=N`` (POSIX only) forks N worker processes serving the same
        listeners under a supervisor that restarts a worker that dies and
        stops them all (each drains) on SIGINT/SIGTERM (see
        ``wsnest.current_worker``).
        """
        if check_workers(workers) == 1:
            trio.run(self._run_foreground)
        else:
            supervise(self, workers)

    async def _run_foreground(self) -> None:
        signals = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
        error: OSError | BrokerError | None = None
        with trio.open_signal_receiver(*signals) as received:
            async with trio.open_nursery() as nursery:
                try:
                    url = await nursery.start(self.serve)
                except (OSError, BrokerError) as exc:  # cannot listen, no broker: raise it bare, not in a group
                    error = exc
                else:
                    print(f"Serving at {url} - press Ctrl+C to stop", flush=True)
                    async for _ in received:
                        break
                    nursery.start_soon(_stop_now_on_signal, received, nursery.cancel_scope)
                    await self.aclose()
                    nursery.cancel_scope.cancel()  # ends the watcher
        if error is not None:
            raise error

    @contextlib.contextmanager
    def finalizing(self) -> Iterator[trio.CancelScope]:
        """A shielded scope for a connection's last words (final flush,
        on_close): never cancelled by the connection's end, but bounded by
        ``close_timeout`` once the server is shutting down."""
        with trio.CancelScope(shield=True) as scope:
            if self._stopping:
                scope.deadline = trio.current_time() + self.limits.close_timeout
            self._finalizers.add(scope)
            try:
                yield scope
            finally:
                self._finalizers.discard(scope)

    def _bound_finalizers(self) -> None:
        self._stopping = True
        deadline = trio.current_time() + self.limits.close_timeout
        for scope in self._finalizers:
            scope.deadline = min(scope.deadline, deadline)

    async def _shutdown(self, nursery: trio.Nursery) -> None:
        """The sequence of :meth:`aclose`."""
        self._close_listener()
        self._draining = True
        self._changed = trio.Event()
        limits = self.limits
        drain_timeout = limits.drain_timeout if self._drain_timeout is None else self._drain_timeout
        if drain_timeout > 0:
            for conn in list(self._http_conns):
                conn.drain()
            self._drop_tls_idle()
            with trio.move_on_after(drain_timeout):
                # Until every connection left is a WebSocket.
                await self._wait_until(lambda: self._open <= self._ws_open)
        self._ending = True
        self._bound_finalizers()
        self._drop_tls_idle()
        for conn in list(self._http_conns):
            if conn.scope is not None:
                conn.scope.cancel()  # a handler still running, or a request not complete
        for stream in list(self._streams):
            stream.close()
        for ws in list(self._websockets):
            ws.close(1001, "server shutting down")
        with trio.move_on_after(limits.close_timeout + 0.5):
            await self._wait_until(lambda: self._open == 0)
        for scope in self._external:
            scope.cancel()
        nursery.cancel_scope.cancel()

    def _drop_tls_idle(self) -> None:
        for scope in self._tls_idle:
            scope.cancel()

    async def _wait_until(self, done: Callable[[], bool]) -> None:
        # Woken whenever a connection ends or becomes a WebSocket.
        while not done():
            self._changed = trio.Event()
            await self._changed.wait()

    def _close_listener(self) -> None:
        """Close every listening socket (and remove a Unix socket file we made)."""
        for listener in self._listeners:
            if listener.sock.fileno() >= 0:
                trio.lowlevel.notify_closing(listener.sock)
                listener.close()

    # -- listening -------------------------------------------------------------

    def _listen(self) -> list[Listener]:
        if self._inherited is not None:
            listeners = self._inherited
        elif self._bind_addresses is not None:  # a worker: its own SO_REUSEPORT socket(s)
            socks = open_tcp(self._bind_addresses, reuse_port=self._reuse_port)
            listeners = [Listener(s, listener_url(self._scheme, s)) for s in socks]
        else:
            listeners = self._open_listeners()
        self._adopt_listeners(listeners)
        return listeners

    def _open_listeners(self, *, reuse_port: bool = False, listen: bool = True) -> list[Listener]:
        """Create this server's listening sockets (synchronous: the worker
        supervisor calls it before forking). ``listen=False`` only binds
        (reserves the port), for TCP."""
        if self._sock is not None:
            return [listen_adopted(self._sock, self._scheme)]
        if self._uds_path is not None:
            return [open_unix(self._uds_path, self._uds_mode)]
        socks = open_tcp(resolve(self._host, self._port), reuse_port=reuse_port, listen=listen)
        return [Listener(s, listener_url(self._scheme, s)) for s in socks]

    def _adopt_listeners(self, listeners: list[Listener]) -> None:
        """Take the real address(es) as the server's URL(s)."""
        if self._sock is not None or listeners[0].url.startswith("unix:"):
            self.url = listeners[0].url
        else:
            self._port = listeners[0].sock.getsockname()[1]
            self.url = _format_url(self._scheme, self._host, self._port)
        self.urls = [listener.url for listener in listeners]

    async def _accept_loop(self, listener: socket.socket, unmap: bool = False) -> None:
        nursery = self._nursery
        assert nursery is not None
        accepted = 0
        while True:
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                accepted = 0
                try:
                    await trio.lowlevel.wait_readable(listener)
                except (trio.ClosedResourceError, OSError):
                    return
                continue
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("wsnest: cannot accept a connection (%s); retrying", exc)
                    await trio.sleep(0.1)
                    continue
                if listener.fileno() < 0:
                    return
                raise
            client = (addr[0], addr[1]) if isinstance(addr, tuple) else None
            if unmap and client is not None and client[0].startswith("::ffff:"):
                client = (client[0][7:], client[1])  # an IPv4 peer on a dual-stack socket
            if self._tls is None:
                transport = SocketTransport(sock, self.limits.send_timeout, self._stalled_writers)
                nursery.start_soon(self._serve_transport, transport, client)
            else:
                # One budget from accept: the TLS handshake and the first
                # request head together (see HttpConnection.serve).
                deadline = trio.current_time() + self.limits.handshake_timeout
                nursery.start_soon(self._handle_tls, sock, client, deadline)
            accepted += 1
            if accepted >= 64:
                accepted = 0
                await trio.lowlevel.checkpoint()

    async def _handle_tls(self, sock: socket.socket, client: tuple[str, int] | None, deadline: float) -> None:
        assert self._tls is not None
        transport = TLSTransport(sock, self._tls, client, self.limits.send_timeout, self._stalled_writers)
        await self._serve_transport(transport, client, deadline)

    async def _serve_transport(
        self, transport: Transport, client: tuple[str, int] | None, deadline: float = math.inf
    ) -> None:
        """Serve one connection: the TLS handshake if any, HTTP requests
        until it ends or a handler hands it over, then the session. This
        task owns the transport: it alone closes it, once everything is
        over (then the session's ``finish()`` runs ``on_close``).

        The HTTP state (connection, parser, request, cancel scope, the
        coroutines that routed the request) is gone before the session
        starts: a connection held open for hours keeps only what the session
        needs, and every full garbage collection walks those objects for
        every open connection. ``deadline`` bounds the TLS handshake and
        the first request head together.
        """
        if self._open >= self._max_open:
            await self._refuse(transport, client, deadline)
            return
        self._open += 1
        # This frame lives as long as the connection (twice: trio keeps its
        # frame object too): few locals and a shallow stack, so the HTTP part
        # is in _serve_http and the bookkeeping at the end in _release.
        session: Session | None = None
        try:
            session, tail = await self._serve_http(transport, client, deadline) or (None, b"")
            if session is not None:
                if not isinstance(session, StreamConnection):  # a WebSocket: the drain does not wait for it
                    self._ws_open += 1
                    if self._changed is not None:  # shutting down
                        self._changed.set()
                await session.run(tail)
        except Exception:
            log.exception("wsnest: connection from %s failed", client)
        finally:
            await self._release(transport, session)

    async def _serve_http(
        self, transport: Transport, client: tuple[str, int] | None, deadline: float
    ) -> tuple[Session, bytes] | None:
        """The TLS handshake if any, then HTTP requests: the session that
        takes the connection over, or None once it is done."""
        if isinstance(transport, TLSTransport) and not await self._tls_open(transport, client, deadline):
            return None
        conn = self._connection_class(self, self._router, self._http_conns, transport, client, deadline)
        if self._draining:  # accepted just before the listener closed, or from serve_connection()
            if self._ending:
                return None
            conn.keep_alive = False
        return await conn.serve()

    async def _refuse(self, transport: Transport, client: tuple[str, int] | None, deadline: float) -> None:
        """Past ``max_connections``: answer the request with a 503 and close
        (see ``_refuse``); within ``REFUSE_TIME``, ``MAX_REFUSING`` at once."""
        now = trio.current_time()
        self._refused += 1
        if now - self._refused_warned >= 60.0:  # at most one line a minute, whatever the flood
            log.warning(
                "wsnest: max_connections (%d) reached: %d connection(s) refused with 503",
                self._max_open,
                self._refused,
            )
            self._refused_warned = now
            self._refused = 0
        if self._refusing >= MAX_REFUSING:
            with trio.CancelScope(shield=True):
                await transport.aclose()
            return
        self._refusing += 1
        try:
            with trio.move_on_after(min(REFUSE_TIME, self.limits.handshake_timeout)):
                if isinstance(transport, TLSTransport) and not await self._tls_open(transport, client, deadline):
                    return
                if self._refuse_router is None:
                    self._refuse_router = RefusingRouter()
                await HttpConnection(self, self._refuse_router, self._http_conns, transport, client, deadline).serve()
        except Exception:
            log.exception("wsnest: refusing the connection from %s failed", client)
        finally:
            self._refusing -= 1
            with trio.CancelScope(shield=True):
                await transport.aclose()

    async def _release(self, transport: Transport, session: Session | None) -> None:
        """Close the transport, then let the session run ``on_close``:
        shielded, and bounded by ``close_timeout`` once the server stops;
        then the connection no longer counts as open."""
        try:
            if session is None and not isinstance(transport, StreamTransport):
                # Plain HTTP needs no on_close, and a socket closes without
                # waiting: no shielded scope (cheaper; connections that only
                # time out, as slowloris's, end here).
                transport.close()
            else:
                with trio.CancelScope(shield=True) if session is None else self.finalizing() as scope:
                    await transport.aclose()
                    if session is not None:
                        await session.finish()
                if scope.cancelled_caught:
                    log.warning("wsnest: on_close of connection %s was cut short by the shutdown", session)
        finally:
            self._open -= 1
            if session is not None and not isinstance(session, StreamConnection):
                self._ws_open -= 1
            if self._changed is not None:  # shutting down
                self._changed.set()

    async def _tls_open(self, transport: TLSTransport, client: tuple[str, int] | None, deadline: float) -> bool:
        """The TLS handshake within ``deadline``; True when done."""
        done = False
        try:
            with trio.move_on_at(deadline) as scope:
                done = await self._tls_handshake(transport, client)
            if scope.cancelled_caught:
                log.debug("TLS handshake with %s timed out", client)
        except Exception:
            log.exception("wsnest: TLS handshake with %s failed", client)
        return done

    async def _tls_handshake(self, transport: TLSTransport, client: tuple[str, int] | None) -> bool:
        """Handshake once the client's first bytes are in; True when done.

        A client that has sent nothing holds no SSL object and no slot. At
        most ``max_tls_handshakes`` handshakes run at once; the others wait
        for a slot in arrival order (a burst of real clients is served, not
        reset), within their own deadline, so the queue is bounded by the
        accept rate times ``handshake_timeout``; a handshake stalled for a
        tenth of ``handshake_timeout`` is dropped when a client waits for
        its slot (see ``HandshakeSlots``). Failures are logged at
        debug level: one line per connection at error level would let any
        client flood the log.
        """
        with trio.CancelScope() as idle:
            self._tls_idle.add(idle)  # the drain drops a client that has sent nothing
            try:
                first = await transport.first_byte()
            finally:
                self._tls_idle.discard(idle)
        if idle.cancelled_caught:
            return False
        if first < 0:
            log.debug("TLS client %s closed before its handshake", client)
            return False
        if 0x41 <= first <= 0x5A or 0x61 <= first <= 0x7A:  # an ASCII letter: an HTTP method, not TLS
            log.debug("plain HTTP from %s on the TLS port: answered 400", client)
            await transport.reject_plain_http()
            return False
        slots = self._tls_slots
        with trio.CancelScope() as scope:
            await slots.acquire(scope)
            try:
                reason = await transport.handshake()
            finally:
                slots.release(scope)
        if scope.cancelled_caught:
            log.debug("TLS handshake with %s stalled while others waited: dropped", client)
            return False
        if reason is not None:
            log.debug("TLS handshake with %s failed: %s", client, reason)
            return False
        return True

    # -- services for connections and handlers (the ServerContext interface) ---

    def next_id(self) -> int:
        """A connection id unique per server, from 1, never reused.

        With workers, ids are ``(generation << 32) | n``: ``generation`` is
        1, 2, ... for each worker process the supervisor starts (restarts
        included), ``n`` counts from 1 in that process; a single process
        has generation 0 (ids 1, 2, 3, ...). Unique across the workers of
        one server, never reused, and below 2**53 (exact in JavaScript) for
        2**21 worker starts of 2**32 connections each.
        """
        return next(self._ids)

    def limits_for(self, handler: Handler) -> Limits:
        """The server's limits with ``handler.limit_overrides`` applied."""
        cached = self._ws_limit_cache.get(id(handler))
        if cached is None:
            overrides = handler.limit_overrides
            cached = self.limits.replace(**overrides) if overrides else self.limits
            self._ws_limit_cache[id(handler)] = cached
        return cached

    def mark_dirty(self, flush: Callable[[], None]) -> None:
        """Call ``flush()`` on the flusher's next tick."""
        self._dirty.append(flush)
        wakeup = self._flush_wakeup
        if wakeup is not None:
            wakeup.set()

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in the server's nursery; an error is logged."""
        assert self._nursery is not None
        self._nursery.start_soon(self._guarded, fn, *args)

    def session_opened(self, session: Closable) -> None:
        """Track ``session``: the shutdown closes it (1001) and waits for it."""
        self._websockets.add(session)
        if self._ending:
            session.close(1001, "server shutting down")

    def session_closed(self, session: Closable) -> None:
        """Stop tracking ``session``; it leaves its groups."""
        self._websockets.discard(session)
        self.groups.leave_all(session)

    def stream_opened(self, stream: Endable) -> None:
        """Track ``stream``: the shutdown ends it once the drain is over."""
        self._streams.add(stream)
        if self._ending:
            stream.close()

    def stream_closed(self, stream: Endable) -> None:
        """Stop tracking ``stream``; it leaves its groups."""
        self._streams.discard(stream)
        self.groups.leave_all(stream)

    @staticmethod
    async def _guarded(fn: Callable[..., Awaitable[object]], *args: object) -> None:
        # A helper task runs in the server's nursery: an unexpected error in
        # it must cost one connection at most, never the server.
        try:
            await fn(*args)
        except Exception:
            log.exception("wsnest: background task %s failed", getattr(fn, "__qualname__", fn))

    async def _flusher(self) -> None:
        # Writes every connection that got frames outside its own batch,
        # once per scheduler tick: sends made together leave together.
        while True:
            assert self._flush_wakeup is not None
            await self._flush_wakeup.wait()
            self._flush_wakeup = trio.Event()
            dirty, self._dirty = self._dirty, []
            for flush in dirty:
                flush()

    async def _reaper(self) -> None:
        # Cancels HTTP connections whose deadline (waiting for a request)
        # has passed, and gives up on writes that made no progress within
        # send_timeout; checked every 1/8 of the shortest timeout (at most
        # 1 s), so a timeout fires up to 12.5 % late.
        limits = self.limits
        timeouts = [t for t in (limits.handshake_timeout, limits.keepalive_timeout) if t > 0]
        timeouts += [t for t in self._send_timeouts() if t > 0]
        period = min(1.0, max(0.01, min(timeouts) / 8))
        next_trim = trio.current_time() + SPARE_IDLE
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            if now >= next_trim:
                # The core's spare buffer of large messages: freed after a
                # period in which no message used it, so idle memory stays low.
                next_trim = now + SPARE_IDLE
                trim_spare()
            for conn in self._http_conns:
                if conn.deadline <= now:
                    conn.expire()
            for transport in [t for t in self._stalled_writers if t.write_deadline <= now]:
                transport.write_timed_out()

    def _send_timeouts(self) -> list[float]:
        """Every send_timeout in force: the server's and its handlers'."""
        found = [self.limits.send_timeout]
        for handler in self._router.handlers:
            overrides = handler.limit_overrides
            if "send_timeout" in overrides:
                found.append(float(overrides["send_timeout"]))
        return found

    async def send_error(self, transport: Transport, exc: HTTPError, head_only: bool = False) -> None:
        """Send the error response of ``exc`` with ``Connection: close``
        (bounded by ``close_timeout``); the caller then closes."""
        body = (exc.message + "\n").encode("utf-8")
        headers = [("Content-Type", "text/plain; charset=utf-8"), *exc.headers]
        data = build_response(
            exc.status, headers, b"" if head_only else body, content_length=len(body), keep_alive=False
        )
        if self.observer.access is not None:
            self.observer.error_sent(transport, exc.status, 0 if head_only else len(body))
        with trio.move_on_after(self.limits.close_timeout):
            await transport.send_all(data)


async def _stop_now_on_signal(received: Any, scope: trio.CancelScope) -> None:
    # A second Ctrl+C during the drain: the operator will not wait for it.
    async for _ in received:
        log.warning("wsnest: second signal: stopping without waiting for the drain")
        scope.cancel()
        return


def _peer_of(sock: socket.socket) -> tuple[str, int] | None:
    try:
        addr = sock.getpeername()
    except OSError:
        return None
    return (addr[0], addr[1]) if isinstance(addr, tuple) else None


def _parse_url(url: str) -> tuple[str, str, int]:
    if not isinstance(url, str):
        raise TypeError(f"url: expected str, got {type(url).__name__}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "unix":  # unix:PATH; the path comes back as the host
        path = url[len("unix:") :]
        if path.startswith("//"):
            raise ValueError(f"url: write a Unix socket as unix:/abs/path or unix:rel/path, got {url!r}")
        if not path:
            raise ValueError(f"url: a unix: URL needs a socket path, got {url!r}")
        return scheme, path, 0
    if scheme not in ("http", "https"):
        raise ValueError(f"url: scheme must be http, https or unix, got {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"url: invalid port in {url!r}") from None
    host = parts.hostname or ""
    if port is None:
        port = 443 if scheme == "https" else 80
    return scheme, host, port


def _format_url(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def http_server(
    url: str,
    handlers: Handler | Sequence[Handler] = (),
    tls: ssl.SSLContext | None = None,
    *,
    access_log: bool = False,
    proxy_headers: bool = False,
    forwarded_allow_ips: str | Sequence[str] = "127.0.0.1",
    sock: socket.socket | int | None = None,
    uds_mode: int = UDS_MODE,
    broker: str | Broker | None = None,
    **limits: Any,
) -> HttpServer:
    """Build an HTTP + WebSocket server (no I/O until it is served).

    Args:
        url: ``http://host:port`` or ``https://host:port``; port 0 picks a
            free port; IPv6 literals go in brackets (``http://[::1]:0``).
            A host with several addresses listens on all of them (an empty
            host: every interface); ``http://[::]:port`` serves IPv4 and
            IPv6 clients. ``unix:/path/app.sock`` (or a relative path)
            listens on a Unix socket: HTTP, or HTTPS when ``tls`` is given.
            With ``sock``, only the scheme counts (``http://``).
        handlers: one handler or a sequence of them (``handler_ws``,
            ``handler``, ``handler_file``, ...). Conflicting routes raise
            ``ValueError`` here.
        tls: a context from :func:`tls_config`, required for ``https``.
        access_log: log one line per HTTP request, WebSocket session and
            stream on logger ``wsnest.access`` (INFO; the fields are also
            attributes of the log record). Off by default.
        proxy_headers: believe ``Forwarded`` (RFC 7239), or else
            ``X-Forwarded-For`` and ``X-Forwarded-Proto``, from the peers
            in ``forwarded_allow_ips``: they set ``req.client`` (port 0
            when not given) and ``req.scheme``, also for WebSocket
            upgrades; from any other peer they are ignored. The client is
            the right-most address that is not a trusted proxy. A Unix
            socket peer (no address) counts as trusted: only processes
            allowed by the socket file's permissions can connect.
        forwarded_allow_ips: the trusted proxies, a comma-separated string
            or a sequence of IP addresses and CIDR networks; ``"*"`` trusts
            every peer. ``ValueError`` names an invalid entry.
        sock: a bound (or listening) TCP or Unix stream socket, or its file
            descriptor (e.g. 3 from systemd socket activation), to serve
            instead of binding; the server owns it from then on and closes
            it when it stops (a socket file it did not create stays).
        uds_mode: permissions of a ``unix:`` socket file (default 0o660:
            owner and group; 0o666 lets every local user connect).
        broker: links the server's groups (``ws.join``, ``publish``) with
            every other process and machine using the same broker:
            ``redis://host:6379/0`` or ``rediss://`` (TLS; needs
            ``pip install 'wsnest[redis]'``), or a :class:`~wsnest.broker.Broker`.
            The server does not start if the broker cannot be reached
            then (``BrokerError``); later outages are survived. Required for
            groups under ``run(workers=N)``.
        **limits: any field of :class:`Limits`, e.g. ``max_message_size``.

    Serve it with ``await server.serve()`` (or ``nursery.start(server.serve)``)
    inside trio, or ``server.run()`` from synchronous code.
    """
    return HttpServer(
        url,
        handlers,
        tls,
        DEFAULT_LIMITS.replace(**limits) if limits else DEFAULT_LIMITS,
        access_log=access_log,
        proxy_headers=proxy_headers,
        forwarded_allow_ips=forwarded_allow_ips,
        sock=sock,
        uds_mode=uds_mode,
        broker=broker,
    )
