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

MAX_FRAME_SIZE = 64 << 20
OP_BINARY = 0x2


@dataclass(frozen=True)
class Scenario:
    name: str
    size: int  # payload bytes per message
    connections: int
    window: int  # messages in flight per connection (1 = ping-pong)
    unit: str
    description: str

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


# -- frames ---------------------------------------------------------------------


def make_payload(size: int) -> bytes:
    """A deterministic, non-repeating-looking payload of ``size`` bytes."""
    pattern = bytes((i * 131 + 7) & 0xFF for i in range(251))  # 251: prime, so frames don't align
    return (pattern * (size // len(pattern) + 1))[:size]


def mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")).to_bytes(n, "little")


def client_frame(payload: bytes, key: bytes, opcode: int = OP_BINARY) -> bytes:
    """One complete masked client frame (FIN set)."""
    n = len(payload)
    head = bytearray([0x80 | opcode])
    if n < 126:
        head.append(0x80 | n)
    elif n < 1 << 16:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    return bytes(head) + key + mask(payload, key)


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


def proc_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    url: str, scenario: Scenario, duration: float, warmup: float = 0.3, server_pid: int | None = None
) -> dict[str, Any]:
    """Connect, warm up, measure for ``duration`` s; returns the result dict."""
    payload = make_payload(scenario.size)
    frame = client_frame(payload, os.urandom(4))
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
    server_pid: int | None = None,
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
        cmd += ["--server-pid", str(server_pid)]
    if window is not None:
        cmd += ["--window", str(window)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(proc.pid, {cpu})
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WebSocket echo load client (picows on uvloop)")
    parser.add_argument("--url", required=True, help="ws://host:port/path, or tcp://host:port for a raw byte echo")
    parser.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    parser.add_argument("--duration", type=float, default=2.0, help="measured seconds (default 2)")
    parser.add_argument("--warmup", type=float, default=0.3, help="seconds before measuring (default 0.3)")
    parser.add_argument("--window", type=int, help="messages in flight per connection (overrides the scenario's)")
    parser.add_argument("--server-pid", type=int, help="also report this process's CPU fraction")
    args = parser.parse_args(argv)
    scenario = SCENARIOS[args.scenario]
    if args.window is not None:
        if args.window < 1:
            parser.error("--window must be at least 1")
        scenario = dataclasses.replace(scenario, window=args.window)
    result = run(run_scenario(args.url, scenario, args.duration, args.warmup, args.server_pid))
    print(json.dumps(result), flush=True)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
