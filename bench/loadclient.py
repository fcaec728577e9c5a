"""Load client for the end-to-end echo benchmarks.

    python bench/loadclient.py --url ws://127.0.0.1:P/ws --scenario pingpong64 [--duration 2]

prints one JSON line::

    {"scenario": ..., "rate": ..., "unit": ..., "client_cpu": ..., "messages": ..., ...}

It must never be the bottleneck, so it is built from compiled parts and does
as little as possible per message:

- picows (Cython) on asyncio, with uvloop when installed (else the default
  loop): picows does the handshake and parses the server's frames in C and
  calls :meth:`_WSClient.on_ws_frame` per frame; no future, task or queue
  per message.
- The client frames are encoded and masked *once* at startup (one random
  mask key per run, which RFC 6455 allows) and written as ready-made bytes
  to the transport under picows. In the pipelined scenario the window is
  refilled a quarter at a time, one write per quarter, as soon as a quarter's
  echoes are in (picows' ``send()`` would mask and write every frame
  separately; refilling only after a whole read makes client and server take
  turns instead of overlapping).
- Counters are plain integers bumped in the callbacks; the measurement
  snapshots them (and ``time.process_time()``) at the start and end of the
  window, after a warm-up.

``client_cpu`` is the client's CPU time over wall time during the window,
in cores (1.0 = one core busy): near 1.0 means the client may be the limit.
With ``--server-pid`` the server's CPU fraction over the same window is read
from ``/proc/PID/stat`` and reported as ``server_cpu``.

Raw mode (``--url tcp://host:port``, for the ``trio-raw`` byte echo that
speaks no WebSocket): no handshake; the client writes the very same masked
client frames and counts echoed *bytes* (a message is done when its frame's
bytes are back). There is no parsing on either side: it bounds what a
trio server can push through in batches, not a WebSocket server. (It is no
bound for ping-pong: trio's stream API waits on the scheduler on every call,
so it spends more CPU per round trip than a server that tries the socket
first.)

Scenarios (:data:`SCENARIOS`):

``pingpong64``     1 connection, 64 B binary, send / wait for the echo / repeat; rt/s
``pipelined64``    1 connection, 64 B binary, 256 messages kept in flight; msg/s
``binary1m``       1 connection, 1 MiB binary ping-pong; MB/s of echoed payload (1e6 B)
``pingpong64x50``  50 connections doing ``pingpong64`` at once; total msg/s

More scenarios for ``bench/bench_suite.py`` (:data:`EXTRA_SCENARIOS`; not in
:data:`SCENARIOS`, so ``bench_echo.py`` does not run them by default, but
``--scenario`` accepts them; :data:`ALL_SCENARIOS` holds both):

``text16m``       1 connection, 16 MiB ASCII TEXT ping-pong; MB/s
``utf8mix16m``    1 connection, 16 MiB TEXT of mixed 1-4 byte UTF-8 characters; MB/s
``frag1m``        1 connection, 1 MiB BINARY sent as 64 x 16 KiB fragments; MB/s
                  (the echo may come back in one frame or fragmented)
``broadcast64``   200 receivers on ``/bcast`` and one trigger on ``/trigger``;
                  the trigger keeps ``window`` broadcasts of 64 B in flight
                  (counted from the deliveries at the receivers); deliveries/s
``fanout64``      ``broadcast64`` against ``bench/fanout_app.py``: each receiver is
                  first sent one TEXT ``worker <n>`` naming the server worker it
                  landed on (counted in the result's ``workers``), then deliveries
``idle2000``      RSS per idle connection: open 100 warm-up connections, read the
                  server's VmRSS (``/proc/PID/status``; needs ``--server-pid``),
                  open 2,000 more handshaken connections that stay idle, read it
                  again; KiB per connection = delta / 2,000

The three single-connection message scenarios time completions rather than
a fixed window: the rate is taken between the first and the last echo that
completes in the window, and the window is stretched (up to
``max(4 x duration, 10 s)``) until at least 3 echoes complete, so a message
that takes 0.5 s does not quantise the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from _util import raise_fd_limit, set_affinity
from wire import OP_BINARY, OP_CONT, OP_TEXT, client_frame

MAX_FRAME_SIZE = 64 << 20


@dataclass(frozen=True)
class Scenario:
    name: str
    size: int  # payload bytes per message
    connections: int
    window: int  # messages in flight per connection (1 = ping-pong)
    unit: str
    description: str
    kind: str = "echo"  # "echo", "broadcast" or "idle"
    text: str | None = None  # None: BINARY; "ascii" or "utf8mix": TEXT of that payload
    fragments: int = 1  # frames per message
    hello: bool = False  # broadcast: each receiver is first sent one TEXT "worker <n>"

    @property
    def chunk(self) -> int:
        """Messages per write: the window is refilled in quarters."""
        return max(1, self.window // 4)

    def rate(self, messages: int, seconds: float) -> float:
        if self.unit == "MB/s":
            return messages * self.size / 1e6 / seconds
        return messages / seconds


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("pingpong64", 64, 1, 1, "rt/s", "64 B ping-pong, 1 conn"),
        Scenario("pipelined64", 64, 1, 256, "msg/s", "64 B pipelined (256 in flight), 1 conn"),
        Scenario("binary1m", 1 << 20, 1, 1, "MB/s", "1 MiB binary echo, 1 conn"),
        Scenario("pingpong64x50", 64, 50, 1, "msg/s", "64 B ping-pong, 50 conns"),
    ]
}

#: Scenarios of the full suite (``bench_suite.py``) beyond :data:`SCENARIOS`.
EXTRA_SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in [
        Scenario("text16m", 16 << 20, 1, 1, "MB/s", "16 MiB ASCII text echo, 1 conn", text="ascii"),
        Scenario("utf8mix16m", 16 << 20, 1, 1, "MB/s", "16 MiB mixed UTF-8 text echo, 1 conn", text="utf8mix"),
        Scenario("frag1m", 1 << 20, 1, 1, "MB/s", "1 MiB as 64 x 16 KiB fragments, 1 conn", fragments=64),
        Scenario("broadcast64", 64, 200, 8, "deliveries/s", "broadcast 64 B to 200 clients", kind="broadcast"),
        Scenario("idle2000", 0, 2000, 0, "KiB/conn", "RSS per idle connection, 2,000 open", kind="idle"),
        Scenario(
            "fanout64", 64, 200, 8, "deliveries/s", "group publish of 64 B to 200 clients", kind="broadcast", hello=True
        ),
    ]
}

ALL_SCENARIOS: dict[str, Scenario] = {**SCENARIOS, **EXTRA_SCENARIOS}
BCAST_PATH = "/bcast"  # keep in step with servers.py
TRIGGER_PATH = "/trigger"
IDLE_WARMUP_CONNECTIONS = 100
CONNECT_CONCURRENCY = 64


# -- frames ---------------------------------------------------------------------


def make_payload(size: int) -> bytes:
    """A deterministic, non-repeating-looking payload of ``size`` bytes."""
    pattern = bytes((i * 131 + 7) & 0xFF for i in range(251))  # 251: prime, so frames don't align
    return (pattern * (size // len(pattern) + 1))[:size]


def make_text_payload(size: int, kind: str) -> bytes:
    """UTF-8 text of exactly ``size`` bytes: ``"ascii"`` (printable ASCII) or
    ``"utf8mix"`` (1, 2, 3 and 4 byte characters drawn with equal odds, so
    most bytes belong to multibyte characters; padded with ASCII at the end)."""
    if kind == "ascii":
        pattern = bytes(32 + (i * 131 + 7) % 95 for i in range(251))
        return (pattern * (size // len(pattern) + 1))[:size]
    if kind != "utf8mix":
        raise ValueError(f"unknown text kind {kind!r}")
    import random

    rng = random.Random(20240601)
    ranges = [(0x21, 0x7E), (0xA1, 0x7FF), (0x800, 0xD7FF), (0x10000, 0x10FFFF)]
    chars = []
    for _ in range(4099):  # prime-ish block: repeats don't align with frames
        lo, hi = ranges[rng.randrange(4)]
        chars.append(chr(rng.randint(lo, hi)))
    block = "".join(chars).encode("utf-8")
    text = block * (size // len(block) + 1)
    cut = size
    while cut > 0 and (text[cut] & 0xC0) == 0x80:  # back up to a character boundary
        cut -= 1
    out = text[:cut] + b"x" * (size - cut)
    out.decode("utf-8")  # must be valid
    return out


def client_message(payload: bytes, key: bytes, opcode: int = OP_BINARY, fragments: int = 1) -> bytes:
    """A whole masked client message: one frame, or ``fragments`` frames of
    (nearly) equal size (first ``opcode`` without FIN, CONTINUATION after,
    FIN on the last)."""
    if fragments <= 1:
        return client_frame(opcode, payload, mask=key)
    step = -(-len(payload) // fragments)
    out = bytearray()
    for i in range(fragments):
        part = payload[i * step : (i + 1) * step]
        out += client_frame(opcode if i == 0 else OP_CONT, part, fin=i == fragments - 1, mask=key)
    return bytes(out)


# -- clients ------------------------------------------------------------------


def _refill(transport: Any, chunk_blob: bytes, window: int, chunk: int, outstanding: int) -> int:
    """Top the window up in whole chunks, one write each; returns the new
    number of messages in flight (at start, and in raw mode after each read;
    the WebSocket client writes a chunk inline as soon as one is owed).

    Separate chunk writes rather than one big write give the server a chance
    to start on the first chunk while the rest is still being written.
    """
    while window - outstanding >= chunk:
        transport.write(chunk_blob)
        outstanding += chunk
    return outstanding


class Stats:
    """What every connection of one run shares: the first error."""

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: str | None = None


def _make_ws_client_class() -> type:
    from picows import WSListener, WSMsgType

    binary = WSMsgType.BINARY
    close = WSMsgType.CLOSE

    class _WSClient(WSListener):  # type: ignore[misc]
        """One picows connection: counts echoes and refills the window."""

        def __init__(self, stats: Stats, scenario: Scenario, chunk_blob: bytes, payload: bytes) -> None:
            super().__init__()
            self.stats = stats
            self.size = scenario.size
            self.window = scenario.window
            self.chunk = scenario.chunk
            self.chunk_blob = chunk_blob  # ``chunk`` copies of the masked frame
            self.payload = payload
            self.owed = 0  # echoes received since the last refill write
            self.count = 0  # echoes received
            self.checked = False
            self.raw: Any = None
            self.running = False
            self.disconnected = asyncio.get_running_loop().create_future()

        def on_ws_connected(self, transport: Any) -> None:
            self.raw = transport.underlying_transport

        def start(self) -> None:
            self.running = True
            _refill(self.raw, self.chunk_blob, self.window, self.chunk, 0)

        def stop(self) -> None:
            self.running = False

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            # Hot path: the frame type (a costly enum lookup) is checked on
            # the first echo and on any echo of an unexpected size.
            if (not self.checked or frame.payload_size != self.size) and not self._check(frame):
                return
            self.count += 1
            self.owed += 1
            # Refill as soon as a whole chunk is owed, not at the end of the
            # read: the server gets to work on it while we parse the rest.
            if self.owed == self.chunk and self.running:
                self.owed = 0
                self.raw.write(self.chunk_blob)

        def _check(self, frame: Any) -> bool:
            msg_type = frame.msg_type
            if msg_type is close:
                self._fail(f"server closed: {frame.get_close_code()} {frame.get_close_reason()}")
            elif msg_type is not binary:
                self._fail(f"unexpected {msg_type.name} frame")
            elif frame.payload_size != self.size:
                self._fail(f"echo of {frame.payload_size} B, expected {self.size} B")
            elif frame.get_payload_as_bytes() != self.payload:
                self._fail("echoed payload differs from the one sent")
            else:
                self.checked = True
                return True
            return False

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.running:
                self._fail("server disconnected")
            if not self.disconnected.done():
                self.disconnected.set_result(None)

        def _fail(self, why: str) -> None:
            if self.stats.error is None:
                self.stats.error = why
            self.running = False

    return _WSClient


class _RawClient(asyncio.BufferedProtocol):
    """Raw mode: writes the same masked frames, counts echoed bytes."""

    def __init__(self, stats: Stats, scenario: Scenario, chunk_blob: bytes, frame_len: int) -> None:
        self.stats = stats
        self.window = scenario.window
        self.chunk = scenario.chunk
        self.chunk_blob = chunk_blob
        self.frame_len = frame_len
        self.buf = memoryview(bytearray(max(256 * 1024, 2 * frame_len)))
        self.first = bytearray()
        self.pending = 0  # bytes of the current (partly echoed) message seen
        self.outstanding = 0
        self.count = 0  # echoes received
        self.transport: Any = None
        self.running = False
        self.disconnected = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def start(self) -> None:
        self.running = True
        self.outstanding = _refill(self.transport, self.chunk_blob, self.window, self.chunk, 0)

    def stop(self) -> None:
        self.running = False

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        if len(self.first) < self.frame_len:
            self.first += self.buf[: min(nbytes, self.frame_len - len(self.first))]
            if len(self.first) == self.frame_len and self.first != self.chunk_blob[: self.frame_len]:
                self._fail("echoed bytes differ from the ones sent")
                return
        done, self.pending = divmod(self.pending + nbytes, self.frame_len)
        if not done:
            return
        self.count += done
        self.outstanding -= done
        if self.running:
            self.outstanding = _refill(self.transport, self.chunk_blob, self.window, self.chunk, self.outstanding)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.running:
            self._fail(f"server disconnected ({exc})")
        if not self.disconnected.done():
            self.disconnected.set_result(None)

    def _fail(self, why: str) -> None:
        if self.stats.error is None:
            self.stats.error = why
        self.running = False


# -- measurement ----------------------------------------------------------------


def proc_cpu_seconds(pid: int | tuple[int, ...]) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc);
    a tuple of pids (the workers of one server) gives their sum."""
    total = 0.0
    for one in pid if isinstance(pid, tuple) else (pid,):
        try:
            with open(f"/proc/{one}/stat", encoding="ascii") as fh:
                stat = fh.read()
        except OSError:
            return None
        fields = stat[stat.rindex(")") + 2 :].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


async def _connect(url: str, scenario: Scenario, stats: Stats, frame: bytes, payload: bytes) -> Any:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    chunk_blob = frame * scenario.chunk
    if parts.scheme == "tcp":
        import socket

        transport, client = await loop.create_connection(
            lambda: _RawClient(stats, scenario, chunk_blob, len(frame)), parts.hostname, parts.port
        )
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return client
    if parts.scheme != "ws":
        raise ValueError(f"--url: expected ws:// or tcp://, got {url!r}")
    from picows import ws_connect

    cls = _make_ws_client_class()
    _, client = await ws_connect(
        lambda: cls(stats, scenario, chunk_blob, payload),
        url,
        max_frame_size=MAX_FRAME_SIZE,
        read_buffer_init_size=max(16 * 1024, 2 * len(frame)),
        enable_auto_pong=True,
    )
    return client


async def run_scenario(
    url: str, scenario: Scenario, duration: float, warmup: float = 0.3, server_pid: int | tuple[int, ...] | None = None
) -> dict[str, Any]:
    """Connect, warm up, measure for ``duration`` s; returns the result dict."""
    if scenario.kind == "broadcast":
        return await run_broadcast(url, scenario, duration, warmup, server_pid)
    if scenario.kind == "idle":
        return await run_idle(url, scenario, server_pid)
    if scenario.text is not None or scenario.fragments > 1:
        return await run_messages(url, scenario, duration, warmup, server_pid)
    payload = make_payload(scenario.size)
    frame = client_frame(OP_BINARY, payload, mask=os.urandom(4))
    stats = Stats()
    clients = await asyncio.gather(
        *(_connect(url, scenario, stats, frame, payload) for _ in range(scenario.connections))
    )
    for c in clients:
        c.start()
    await asyncio.sleep(warmup)

    n0, t0, c0 = sum(c.count for c in clients), time.perf_counter(), time.process_time()
    s0 = proc_cpu_seconds(server_pid) if server_pid else None
    await asyncio.sleep(duration)
    n1, t1, c1 = sum(c.count for c in clients), time.perf_counter(), time.process_time()
    s1 = proc_cpu_seconds(server_pid) if server_pid else None

    for c in clients:
        c.stop()
    await asyncio.sleep(0)
    for c in clients:
        if getattr(c, "raw", None) is not None:
            c.raw.close()  # picows: drop the connection, no close handshake needed
        elif getattr(c, "transport", None) is not None:
            c.transport.close()
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.disconnected for c in clients)), 2.0)

    seconds = t1 - t0
    messages = n1 - n0
    result: dict[str, Any] = {
        "scenario": scenario.name,
        "rate": scenario.rate(messages, seconds) if stats.error is None else None,
        "unit": scenario.unit,
        "client_cpu": round((c1 - c0) / seconds, 3),
        "messages": messages,
        "seconds": round(seconds, 3),
        "mode": "raw" if url.startswith("tcp:") else "ws",
        "connections": scenario.connections,
        "size": scenario.size,
        "window": scenario.window,
        "loop": _loop_name(),
    }
    if s0 is not None and s1 is not None:
        result["server_cpu"] = round((s1 - s0) / seconds, 3)
    if stats.error is not None:
        result["error"] = stats.error
    return result


# -- suite scenarios: messages, broadcast, idle connections -----------------------


def _ws_url(url: str, path: str) -> str:
    """``url`` with its path replaced by ``path``."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        raise ValueError(f"this scenario needs a ws:// URL, got {url!r}")
    return f"ws://{parts.netloc}{path}"


def _base_result(scenario: Scenario) -> dict[str, Any]:
    return {
        "scenario": scenario.name,
        "unit": scenario.unit,
        "mode": "ws",
        "connections": scenario.connections,
        "size": scenario.size,
        "window": scenario.window,
        "loop": _loop_name(),
    }


def _make_msg_client_class() -> type:
    from picows import WSListener, WSMsgType

    cont = WSMsgType.CONTINUATION

    class _MsgClient(WSListener):  # type: ignore[misc]
        """One connection doing ping-pong with whole (maybe fragmented, maybe
        TEXT) messages; the echo may be one frame or fragmented. Records the
        time of every completed echo."""

        def __init__(self, stats: Stats, scenario: Scenario, blob: bytes, payload: bytes, opcode: int) -> None:
            super().__init__()
            self.stats = stats
            self.size = scenario.size
            self.blob = blob
            self.payload = payload
            self.msg_type = WSMsgType(opcode)
            self.parts: list[bytes] | None = []  # payload of the first echo, checked once
            self.acc = 0  # bytes of the current echo so far
            self.count = 0
            self.times: list[float] = []
            self.raw: Any = None
            self.running = False
            self.disconnected = asyncio.get_running_loop().create_future()

        def on_ws_connected(self, transport: Any) -> None:
            self.raw = transport.underlying_transport

        def start(self) -> None:
            self.running = True
            self.raw.write(self.blob)

        def stop(self) -> None:
            self.running = False

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            msg_type = frame.msg_type
            expected = cont if self.acc else self.msg_type
            if msg_type is not expected:
                if msg_type is WSMsgType.CLOSE:
                    self._fail(f"server closed: {frame.get_close_code()} {frame.get_close_reason()}")
                else:
                    self._fail(f"unexpected {msg_type.name} frame (expected {expected.name})")
                return
            if self.parts is not None:
                self.parts.append(frame.get_payload_as_bytes())
            n = frame.payload_size
            if not frame.fin:
                self.acc += n
                return
            total, self.acc = self.acc + n, 0
            if total != self.size:
                self._fail(f"echo of {total} B, expected {self.size} B")
                return
            if self.parts is not None:
                if b"".join(self.parts) != self.payload:
                    self._fail("echoed payload differs from the one sent")
                    return
                self.parts = None
            self.count += 1
            self.times.append(time.perf_counter())
            if self.running:
                self.raw.write(self.blob)

        def on_ws_disconnected(self, transport: Any) -> None:
            if self.running:
                self._fail("server disconnected")
            if not self.disconnected.done():
                self.disconnected.set_result(None)

        def _fail(self, why: str) -> None:
            if self.stats.error is None:
                self.stats.error = why
            self.running = False

    return _MsgClient


async def run_messages(
    url: str, scenario: Scenario, duration: float, warmup: float, server_pid: int | tuple[int, ...] | None
) -> dict[str, Any]:
    """Single-connection ping-pong of whole messages, timed by completions."""
    from picows import ws_connect

    if scenario.connections != 1 or scenario.window != 1:
        raise ValueError("message scenarios are single-connection ping-pong")
    opcode = OP_TEXT if scenario.text is not None else OP_BINARY
    payload = make_text_payload(scenario.size, scenario.text) if scenario.text else make_payload(scenario.size)
    blob = client_message(payload, os.urandom(4), opcode, scenario.fragments)
    stats = Stats()
    cls = _make_msg_client_class()
    _, client = await ws_connect(
        lambda: cls(stats, scenario, blob, payload, opcode),
        _ws_url(url, urlsplit(url).path or "/"),
        max_frame_size=MAX_FRAME_SIZE,
        read_buffer_init_size=max(16 * 1024, 2 * len(blob)),
        enable_auto_pong=True,
    )
    cap = max(4 * duration, 10.0)
    client.start()
    # Warm up for ``warmup`` s and at least one echo (the one that is checked).
    t_start = time.perf_counter()
    await asyncio.sleep(warmup)
    while client.count < 1 and stats.error is None and time.perf_counter() - t_start < cap:
        await asyncio.sleep(0.01)

    t0, c0 = time.perf_counter(), time.process_time()
    s0 = proc_cpu_seconds(server_pid) if server_pid else None
    i0 = len(client.times)
    await asyncio.sleep(duration)
    while len(client.times) - i0 < 3 and stats.error is None and time.perf_counter() - t0 < cap:
        await asyncio.sleep(0.01)
    t1, c1 = time.perf_counter(), time.process_time()
    s1 = proc_cpu_seconds(server_pid) if server_pid else None
    times = client.times[i0:]
    client.stop()
    client.raw.close()
    with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
        await asyncio.wait_for(client.disconnected, 2.0)

    seconds = t1 - t0
    result = _base_result(scenario)
    if len(times) >= 2:
        rate = (len(times) - 1) * scenario.size / 1e6 / (times[-1] - times[0])
    else:
        rate = len(times) * scenario.size / 1e6 / seconds
    result.update(
        rate=rate if stats.error is None and times else None,
        client_cpu=round((c1 - c0) / seconds, 3),
        messages=len(times),
        seconds=round(seconds, 3),
        fragments=scenario.fragments,
        text=scenario.text,
    )
    if s0 is not None and s1 is not None:
        result["server_cpu"] = round((s1 - s0) / seconds, 3)
    if stats.error is None and not times:
        stats.error = f"no echo completed in {seconds:.1f} s"
    if stats.error is not None:
        result["error"] = stats.error
    return result


async def _connect_many(n: int, url: str, factory: Any, stats: Stats, timeout: float = 30.0) -> list[Any]:
    """Open ``n`` picows client connections to ``url`` (at most
    :data:`CONNECT_CONCURRENCY` handshakes at a time); returns the listeners."""
    from picows import ws_connect

    sem = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> Any:
        async with sem:
            _, listener = await asyncio.wait_for(
                ws_connect(factory, url, max_frame_size=MAX_FRAME_SIZE, enable_auto_pong=True), timeout
            )
            return listener

    results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
    out = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed and stats.error is None:
        stats.error = f"{len(failed)} of {n} connections failed: {failed[0]!r}"
    return out


def _make_passive_class() -> type:
    from picows import WSListener

    class _Passive(WSListener):  # type: ignore[misc]
        """A connection that only keeps its transport (idle and trigger)."""

        def __init__(self) -> None:
            super().__init__()
            self.transport: Any = None

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

    return _Passive


class _Broadcast:
    """Shared state of one broadcast run."""

    __slots__ = ("base", "delivered", "frame", "hellos", "n", "running", "sent", "trigger", "window")

    def __init__(self, n: int, window: int, frame: bytes, hello: bool = False) -> None:
        self.n = n
        # With ``hello``: receivers per first TEXT message ("worker 0": 100, ...).
        self.hellos: dict[str, int] | None = {} if hello else None
        self.window = window
        self.frame = frame  # the masked client frame the trigger sends
        self.trigger: Any = None  # its raw transport
        self.sent = 0  # broadcasts sent since the flow started
        self.base = 0  # deliveries when the flow started
        self.delivered = 0  # deliveries counted at the receivers (all time)
        self.running = False

    def send(self) -> None:
        self.sent += 1
        self.trigger.write(self.frame)


def _make_receiver_class() -> type:
    from picows import WSListener, WSMsgType

    binary = WSMsgType.BINARY

    class _Receiver(WSListener):  # type: ignore[misc]
        def __init__(self, stats: Stats, shared: _Broadcast, payload: bytes) -> None:
            super().__init__()
            self.stats = stats
            self.shared = shared
            self.payload = payload
            self.size = len(payload)
            self.count = 0
            self.checked = False
            self.hello = False

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if (not self.checked or frame.payload_size != self.size) and not self._check(frame):
                return
            self.count += 1
            st = self.shared
            st.delivered += 1
            # Flow control: keep ``window`` broadcasts in flight, counting one
            # as done when ``n`` deliveries (on average) came in for it.
            if st.running and st.sent * st.n - (st.delivered - st.base) < st.window * st.n:
                st.send()

        def _check(self, frame: Any) -> bool:
            msg_type = frame.msg_type
            hellos = self.shared.hellos
            if hellos is not None and msg_type is WSMsgType.TEXT and not self.hello:
                self.hello = True  # the first message (cold path: not counted as a delivery)
                name = frame.get_payload_as_bytes().decode("utf-8", "replace")
                hellos[name] = hellos.get(name, 0) + 1
                return False
            if msg_type is WSMsgType.CLOSE:
                why = f"server closed a receiver: {frame.get_close_code()} {frame.get_close_reason()}"
            elif msg_type is not binary:
                why = f"unexpected {msg_type.name} frame"
            elif frame.get_payload_as_bytes() != self.payload:
                why = "broadcast payload differs from the one sent"
            else:
                self.checked = True
                return True
            if self.stats.error is None:
                self.stats.error = why
            self.shared.running = False
            return False

    return _Receiver


async def run_broadcast(
    url: str, scenario: Scenario, duration: float, warmup: float, server_pid: int | tuple[int, ...] | None
) -> dict[str, Any]:
    """``scenario.connections`` receivers, one trigger; deliveries/s."""
    payload = make_payload(scenario.size)
    frame = client_frame(OP_BINARY, payload, mask=os.urandom(4))
    stats = Stats()
    shared = _Broadcast(scenario.connections, scenario.window, frame, scenario.hello)
    receiver_cls = _make_receiver_class()
    receivers = await _connect_many(
        scenario.connections, _ws_url(url, BCAST_PATH), lambda: receiver_cls(stats, shared, payload), stats
    )
    passive = _make_passive_class()
    (trigger,) = await _connect_many(1, _ws_url(url, TRIGGER_PATH), passive, stats) or (None,)
    result = _base_result(scenario)
    if stats.error is not None or trigger is None:
        result.update(rate=None, client_cpu=0.0, messages=0, seconds=0.0, error=stats.error or "no trigger")
        await _close_all([*receivers, trigger])
        return result
    shared.trigger = trigger.transport.underlying_transport

    # Registration on the server may lag the handshake: probe until every
    # receiver got something, then let the probes drain.
    deadline = time.perf_counter() + 10.0
    while any(r.count == 0 for r in receivers) and stats.error is None:
        if time.perf_counter() > deadline:
            stats.error = f"{sum(r.count == 0 for r in receivers)} receivers got no broadcast in 10 s"
            break
        shared.trigger.write(frame)
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)

    stalls = 0
    if stats.error is None:
        shared.base, shared.sent, shared.running = shared.delivered, 0, True
        for _ in range(shared.window):
            shared.send()

        async def watchdog() -> None:
            # A server may drop deliveries (e.g. skip a full send buffer);
            # then the window never refills by itself: nudge it.
            nonlocal stalls
            last = -1
            while shared.running:
                await asyncio.sleep(0.05)
                if shared.delivered == last and shared.running:
                    stalls += 1
                    shared.send()
                last = shared.delivered

        dog = asyncio.ensure_future(watchdog())
        await asyncio.sleep(warmup)
        n0, t0, c0 = shared.delivered, time.perf_counter(), time.process_time()
        s0 = proc_cpu_seconds(server_pid) if server_pid else None
        await asyncio.sleep(duration)
        n1, t1, c1 = shared.delivered, time.perf_counter(), time.process_time()
        s1 = proc_cpu_seconds(server_pid) if server_pid else None
        shared.running = False
        dog.cancel()
        # Let the broadcasts still in flight arrive (until nothing moves for 0.2 s, at most 3 s).
        last, t_end = -1, time.perf_counter() + 3.0
        while shared.delivered != last and time.perf_counter() < t_end:
            last = shared.delivered
            await asyncio.sleep(0.2)
        missing = shared.sent * shared.n - (shared.delivered - shared.base)
        seconds = t1 - t0
        result.update(
            rate=(n1 - n0) / seconds if stats.error is None else None,
            client_cpu=round((c1 - c0) / seconds, 3),
            messages=n1 - n0,
            seconds=round(seconds, 3),
            broadcasts=shared.sent,
            missing_deliveries=missing,
            stalls=stalls,
        )
        if shared.hellos is not None:
            result["workers"] = dict(sorted(shared.hellos.items()))
        if s0 is not None and s1 is not None:
            result["server_cpu"] = round((s1 - s0) / seconds, 3)
    else:
        result.update(rate=None, client_cpu=0.0, messages=0, seconds=0.0)
    if stats.error is not None:
        result["error"] = stats.error
    await _close_all([*receivers, trigger])
    return result


async def _close_all(listeners: list[Any]) -> None:
    for listener in listeners:
        transport = getattr(listener, "transport", None)
        if transport is None:
            continue
        with contextlib.suppress(Exception):
            transport.underlying_transport.close()
    await asyncio.sleep(0.05)


def proc_rss_kib(pid: int) -> int | None:
    """VmRSS of process ``pid`` in KiB (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def _settled_rss(pid: int, settle: float = 0.5, limit: float = 5.0) -> int | None:
    """VmRSS once it stops moving (two reads ``settle`` s apart within 0.5 %)."""
    await asyncio.sleep(settle)
    last = proc_rss_kib(pid)
    t_end = time.perf_counter() + limit
    while last is not None and time.perf_counter() < t_end:
        await asyncio.sleep(settle)
        now = proc_rss_kib(pid)
        if now is None or abs(now - last) <= 0.005 * last:
            return now
        last = now
    return last


async def run_idle(url: str, scenario: Scenario, server_pid: int | None) -> dict[str, Any]:
    """RSS per idle connection: the server's VmRSS delta over ``connections``
    handshaken idle connections, after :data:`IDLE_WARMUP_CONNECTIONS`."""
    result = _base_result(scenario)
    if server_pid is None:
        result.update(rate=None, client_cpu=0.0, messages=0, seconds=0.0, error="idle2000 needs --server-pid")
        return result
    stats = Stats()
    passive = _make_passive_class()
    ws_url = _ws_url(url, urlsplit(url).path or "/")
    c0, t0 = time.process_time(), time.perf_counter()
    warm = await _connect_many(IDLE_WARMUP_CONNECTIONS, ws_url, passive, stats)
    rss0 = await _settled_rss(server_pid)
    conns: list[Any] = []
    if stats.error is None:
        conns = await _connect_many(scenario.connections, ws_url, passive, stats)
    t_open = time.perf_counter() - t0
    rss1 = await _settled_rss(server_pid)
    seconds = time.perf_counter() - t0
    ok = stats.error is None and rss0 is not None and rss1 is not None
    result.update(
        rate=(rss1 - rss0) / scenario.connections if ok else None,  # type: ignore[operator]
        client_cpu=round((time.process_time() - c0) / seconds, 3),
        messages=len(conns),
        seconds=round(seconds, 3),
        rss_before_kib=rss0,
        rss_after_kib=rss1,
        warmup_connections=len(warm),
        open_seconds=round(t_open, 3),
    )
    if stats.error is None and (rss0 is None or rss1 is None):
        stats.error = f"cannot read /proc/{server_pid}/status"
    if stats.error is not None:
        result["error"] = stats.error
    await _close_all([*warm, *conns])
    return result


def _loop_name() -> str:
    loop = asyncio.get_running_loop()
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def run(coro: Any) -> Any:
    """Run ``coro`` on uvloop if installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- parent side ------------------------------------------------------------------


def run_loadclient(
    url: str,
    scenario: str,
    duration: float,
    *,
    warmup: float = 0.3,
    server_pid: int | tuple[int, ...] | None = None,
    cpu: int | None = None,
    window: int | None = None,
    timeout: float | None = None,
) -> dict[str, Any]:
    """Run this script as a subprocess (optionally pinned to ``cpu``) and
    return its JSON result (with an ``"error"`` key if the echo went wrong);
    raises ``RuntimeError`` if it produced no result."""
    import subprocess

    cmd = [sys.executable, os.path.abspath(__file__), "--url", url, "--scenario", scenario]
    cmd += ["--duration", str(duration), "--warmup", str(warmup)]
    if server_pid is not None:
        pids = server_pid if isinstance(server_pid, tuple) else (server_pid,)
        cmd += ["--server-pid", ",".join(str(p) for p in pids)]
    if window is not None:
        cmd += ["--window", str(window)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cpu is not None:
        set_affinity(proc.pid, cpu)
    try:
        out, err = proc.communicate(timeout=timeout if timeout is not None else duration + warmup + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise RuntimeError(f"loadclient {scenario} on {url} timed out; stderr:\n{err}") from None
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadclient {scenario} on {url} failed (exit {proc.returncode}); stderr:\n{err}")
    return json.loads(lines[-1])  # type: ignore[no-any-return]  # may hold "error"


def _pids(text: str) -> int | tuple[int, ...]:
    pids = tuple(int(p) for p in text.split(","))
    return pids[0] if len(pids) == 1 else pids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WebSocket echo load client (picows on uvloop)")
    parser.add_argument("--url", required=True, help="ws://host:port/path, or tcp://host:port for a raw byte echo")
    parser.add_argument("--scenario", required=True, choices=sorted(ALL_SCENARIOS))
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds (default 2)")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds before measuring (default 0.3)")
    parser.add_argument("--window", type=int, help="messages in flight per connection (overrides the scenario's)")
    parser.add_argument(
        "--server-pid",
        type=_pids,
        help="also report this process's CPU fraction (comma-separated pids: their sum, e.g. a server's workers)",
    )
    args = parser.parse_args(argv)
    raise_fd_limit()
    scenario = ALL_SCENARIOS[args.scenario]
    if args.window is not None:
        if args.window < 1:
            parser.error("--window must be at least 1")
        scenario = dataclasses.replace(scenario, window=args.window)
    result = run(run_scenario(args.url, scenario, args.duration, args.warmup, args.server_pid))
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
