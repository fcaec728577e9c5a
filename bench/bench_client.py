"""WebSocket *client* libraries side by side, against one picows echo server.

    python bench/bench_client.py                  # 3 repetitions x 2 s per cell
    python bench/bench_client.py --quick          # 1 repetition x 0.6 s per cell
    python bench/bench_client.py --clients websockets,trio-websocket,picows --rows pingpong64

Rows:

===============  ===============================================  =============
``pingpong64``   64 B binary, send, wait for the echo, repeat      round trips/s
``pipelined64``  64 B binary, 256 messages kept in flight          msgs/s
``echo1m``       1 MiB binary, send, wait for the echo, repeat     MB/s (1e6 B)
===============  ===============================================  =============

Columns (clients), each driven the way its documentation shows:

``wsnest``
    ``async with wsnest.connect(url, textframes=None, max_message_size=64 MiB)``
    on trio; ``ws.send(data)`` (a plain call that queues; on 8, over the
    high-water mark, ``await ws.send_wait(data)``), ``await ws.receive()``.
    Until ``wsnest.connect`` exists the column fails with
    ``wsnest.connect not available: ...`` and the others still run.
``websockets``
    ``websockets.asyncio.client.connect(url, compression=None, max_size=64 MiB)``
    on uvloop when installed (else asyncio); ``await ws.send()`` /
    ``await ws.recv()``.
``websockets-trio``
    ``websockets.trio.client.connect`` with the same options, on trio; the
    column is dropped (with a note) if the installed websockets has no
    ``websockets.trio``.
``trio-websocket``
    ``trio_websocket.open_websocket_url(url, max_message_size=64 MiB)``, other
    options at their defaults (``message_queue_size=1``,
    ``receive_buffer_size=4096``); ``send_message`` / ``get_message``.
``picows``
    ``picows.ws_connect`` on uvloop (else asyncio): a ``WSListener`` whose
    ``on_ws_frame`` takes the echo as ``bytes``
    (``frame.get_payload_as_bytes()``) and sends the next message with
    ``transport.send(BINARY, payload)`` from the callback.

Every client runs the same closed loop: send ``window`` messages (1, or 256
for ``pipelined64``), then for every echo that comes back check its length
and send one more; after the window it reads the echoes still in flight
(untimed) and closes. Every client ends up holding each echo as a ``bytes``
object; the first echo of a run is compared with what was sent.

Method: the server (``servers.py picows``: picows on uvloop, frame-by-frame
echo, 64 MiB frame limit) runs in its own process pinned to CPU 0; each cell
runs the client in a fresh process pinned to CPU 1 (unpinned, with a note,
where pinning is impossible), and this script waits on CPU 1 too. A cell
connects, warms up for ``--warmup`` s, then measures for ``--duration`` s
between two completed echoes (time checks are spaced to about 1 ms, so
they cost nothing per message). Per repetition the clients take turns within
each row, the starting client rotating per repetition; the table shows the
median [min-max] over the repetitions. Besides the rate, the client
process's CPU time over the window (``time.process_time()`` inside the
client: user + system of the whole process, as ``getrusage`` gives) per unit
of work, which a noisy machine disturbs far less than the rate, and the
server's CPU fraction (``/proc/PID/stat``) over the same window.

On a virtual machine, waking a process on the other CPU can cost tens of
microseconds (the report's header measures it: a 1-byte pipe round trip
between the two CPUs); ping-pong rates are then bound by wake-ups rather
than by the libraries, and the report says so when client and server
together were idle for over 20 % of the window. ``--cpus 1,1`` runs server
and client on one core instead: they take turns without wake-up IPIs, and
the rate reflects their summed CPU cost.

Output: the tables (markdown), the ratios wsnest/trio-websocket (target
>= 10x), wsnest/websockets (target >= 1.0x), wsnest/picows and
wsnest/websockets-trio (reported) with PASS/MISS on the rates and, as a
second verdict, on the client CPU per unit, then
``RATIO client_<row>_wsnest_vs_<other> X`` lines (medians of the rates) and
``CPURATIO client_<row>_wsnest_vs_<other> X`` lines (other's client CPU per
unit over wsnest's: above 1.0 wsnest spends less). ``--save`` writes
``bench/results/client.md``.

Internally the script is also the client process:
``bench_client.py --child CLIENT --row ROW --url URL ...`` runs one cell and
prints one JSON line; ``--probe CLIENT`` only imports the client and prints
its versions (or why it is unavailable).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import servers
from _util import ensure_importable, machine_summary, markdown_table, raise_fd_limit, set_affinity
from bench_echo import cpu_available, fmt_rate, pinning
from loadclient import make_payload, proc_cpu_seconds

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MAX_MESSAGE_SIZE = 64 << 20
SERVER = "picows"
CHECK_SPACING = 0.001  # seconds between time checks in the message loop
MAX_STRIDE = 1024  # at most this many messages between two time checks
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Row:
    """One row: a closed echo loop of ``window`` messages of ``size`` bytes."""

    key: str
    label: str
    size: int
    window: int
    unit: str  # rate unit as shown
    cpu_unit: str  # what CPU time is divided by: "rt", "msg" or "MB"

    def units(self, messages: int) -> float:
        return messages * self.size / 1e6 if self.cpu_unit == "MB" else float(messages)


ROWS = [
    Row("pingpong64", "64 B ping-pong", 64, 1, "rt/s", "rt"),
    Row("pipelined64", "64 B pipelined (256 in flight)", 64, 256, "msg/s", "msg"),
    Row("echo1m", "1 MiB binary echo", 1 << 20, 1, "MB/s", "MB"),
]
ROW_BY_KEY = {r.key: r for r in ROWS}

CLIENT_NAMES = ["wsnest", "websockets", "websockets-trio", "trio-websocket", "picows"]

# (other column, ratio name suffix, target or None: reported only)
COMPARISONS: list[tuple[str, str, float | None]] = [
    ("trio-websocket", "trio_websocket", 10.0),
    ("websockets", "websockets", 1.0),
    ("picows", "picows", None),
    ("websockets-trio", "websockets_trio", None),
]


class Unavailable(Exception):
    """The client library (or the API it needs) is not installed here.

    ``drop``: leave the column out with a note instead of failing the run.
    """

    def __init__(self, message: str, drop: bool = False) -> None:
        super().__init__(message)
        self.drop = drop


# -- child side: the measured loop ---------------------------------------------------


class Meter:
    """Times one closed loop: warm-up, then a window between two completed echoes.

    A driver counts its echoes in a local ``n`` and calls :meth:`check` only
    when ``n`` reaches the mark it returned last (the first mark is 1);
    :meth:`check` returns the next mark, spaced to about
    :data:`CHECK_SPACING` s, or -1 when the window is over.
    """

    def __init__(self, row: Row, payload: bytes, warmup: float, duration: float, server_pid: int | None) -> None:
        self.row = row
        self.payload = payload
        self.warmup = warmup
        self.duration = duration
        self.server_pid = server_pid
        self.validated = False
        self.measuring = False
        self.deadline = 0.0
        self.last_n = 0
        self.last_t = 0.0
        self.start: tuple[int, float, float, float | None] | None = None
        self.stop: tuple[int, float, float, float | None] | None = None

    def begin(self) -> None:
        """Call once connected, right before the first send."""
        self.last_t = time.perf_counter()
        self.deadline = self.last_t + self.warmup

    def _snapshot(self, n: int, now: float) -> tuple[int, float, float, float | None]:
        server = proc_cpu_seconds(self.server_pid) if self.server_pid else None
        return n, now, time.process_time(), server

    def check(self, n: int, message: object) -> int:
        now = time.perf_counter()
        if not self.validated:
            if not isinstance(message, (bytes, bytearray)):
                raise RuntimeError(f"echo arrived as {type(message).__name__}, expected bytes")
            if message != self.payload:
                raise RuntimeError("the echo differs from the message sent")
            self.validated = True
        if now >= self.deadline:
            if self.measuring:
                self.stop = self._snapshot(n, now)
                return -1
            self.start = self._snapshot(n, now)
            self.measuring = True
            self.deadline = now + self.duration
        dt_ = now - self.last_t
        stride = int((n - self.last_n) / dt_ * CHECK_SPACING) if dt_ > 0 else 1
        self.last_n, self.last_t = n, now
        return n + min(max(stride, 1), MAX_STRIDE)

    def result(self) -> dict[str, Any]:
        if self.start is None or self.stop is None:
            raise RuntimeError("the loop ended before the window was complete")
        n0, t0, c0, s0 = self.start
        n1, t1, c1, s1 = self.stop
        out: dict[str, Any] = {
            "messages": n1 - n0,
            "seconds": t1 - t0,
            "rate": self.row.units(n1 - n0) / (t1 - t0),
            "client_cpu_s": c1 - c0,
        }
        if s0 is not None and s1 is not None:
            out["server_cpu_s"] = s1 - s0
        return out


def _bad_size(got: int, size: int) -> RuntimeError:
    return RuntimeError(f"echo of {got} B, expected {size} B")


def _asyncio_run(main: Callable[[], Any]) -> str:
    """Run ``main()`` on uvloop if installed, else asyncio; the loop's name."""
    import asyncio

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
        return "asyncio"
    uvloop.run(main())
    return "uvloop"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "?"


def _import_wsnest() -> tuple[Any, dict[str, str]]:
    ensure_importable()
    try:
        import wsnest
    except ImportError as exc:
        raise Unavailable(f"wsnest.connect not available: {exc}") from None
    connect = vars(wsnest).get("connect")
    if connect is None:
        # Name the copy imported: an older installed wsnest shadows src/ without PYTHONPATH=src.
        where = f"wsnest {getattr(wsnest, '__version__', '?')} from {os.path.dirname(wsnest.__file__ or '?')}"
        raise Unavailable(f"wsnest.connect not available: module 'wsnest' has no attribute 'connect' ({where})")
    info = {"version": str(wsnest.__version__), "loop": "trio", "core": str(wsnest.CORE), "path": wsnest.__file__}
    return connect, info


def _drive_wsnest(meter: Meter, url: str) -> dict[str, str]:
    connect, info = _import_wsnest()
    import trio

    row, payload, size = meter.row, meter.payload, meter.row.size

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with connect(url, textframes=None, max_message_size=MAX_MESSAGE_SIZE) as ws:
                send, receive = ws.send, ws.receive
                meter.begin()
                for _ in range(row.window):
                    rc = send(payload)
                    if rc:
                        await _wsnest_refused(ws, payload, rc)
                n, mark = 0, 1
                while True:
                    msg = await receive()
                    if len(msg) != size:
                        raise _bad_size(len(msg), size)
                    n += 1
                    if n >= mark:
                        mark = meter.check(n, msg)
                        if mark < 0:
                            break
                    rc = send(payload)
                    if rc:
                        await _wsnest_refused(ws, payload, rc)
                scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                for _ in range(row.window - 1):  # the echoes still in flight
                    await receive()
        _closed_in_time(scope.cancelled_caught)

    trio.run(main)
    return info


async def _wsnest_refused(ws: Any, payload: bytes, rc: int) -> None:
    """``ws.send`` refused ``payload`` with ``rc``: wait for room on 8 (over the
    high-water mark), fail on anything else (7 closed, 17 too big)."""
    if rc != 8:
        raise RuntimeError(f"ws.send returned {rc}")
    await ws.send_wait(payload)


def _closed_in_time(cancelled: bool) -> None:
    """Complain if draining the echoes in flight and closing took longer than
    :data:`CLOSE_TIMEOUT` (the window is measured by then, so this only notes it)."""
    if cancelled:
        raise RuntimeError(f"drain and close took longer than {CLOSE_TIMEOUT:g} s")


def _drive_websockets(meter: Meter, url: str) -> dict[str, str]:
    import asyncio
    import inspect

    from websockets.asyncio.client import connect

    kwargs: dict[str, Any] = {"compression": None, "max_size": MAX_MESSAGE_SIZE, "close_timeout": CLOSE_TIMEOUT}
    if "proxy" in inspect.signature(connect).parameters:
        kwargs["proxy"] = None  # no proxy lookup in the environment
    row, payload, size = meter.row, meter.payload, meter.row.size

    async def drain(ws: Any) -> None:
        for _ in range(row.window - 1):  # the echoes still in flight
            await ws.recv()

    async def main() -> None:
        async with connect(url, **kwargs) as ws:
            send, recv = ws.send, ws.recv
            meter.begin()
            for _ in range(row.window):
                await send(payload)
            n, mark = 0, 1
            while True:
                msg = await recv()
                if len(msg) != size:
                    raise _bad_size(len(msg), size)
                n += 1
                if n >= mark:
                    mark = meter.check(n, msg)
                    if mark < 0:
                        break
                await send(payload)
            try:
                await asyncio.wait_for(drain(ws), CLOSE_TIMEOUT)
            except asyncio.TimeoutError:
                _closed_in_time(True)

    loop = _asyncio_run(main)
    return {"version": _version("websockets"), "loop": loop}


def _drive_websockets_trio(meter: Meter, url: str) -> dict[str, str]:
    import importlib.util

    if importlib.util.find_spec("websockets.trio") is None:
        raise Unavailable(f"websockets {_version('websockets')} has no trio client (no websockets.trio)", drop=True)
    import trio
    from websockets.trio.client import connect

    row, payload, size = meter.row, meter.payload, meter.row.size
    kwargs: dict[str, Any] = {"compression": None, "max_size": MAX_MESSAGE_SIZE, "close_timeout": CLOSE_TIMEOUT}

    async def main() -> None:
        # Draining before the close matters here: websockets 17.4's trio client
        # hangs in close() (past close_timeout) while unread echoes fill its queue.
        with trio.CancelScope() as scope:
            async with connect(url, proxy=None, **kwargs) as ws:
                send, recv = ws.send, ws.recv
                meter.begin()
                for _ in range(row.window):
                    await send(payload)
                n, mark = 0, 1
                while True:
                    msg = await recv()
                    if len(msg) != size:
                        raise _bad_size(len(msg), size)
                    n += 1
                    if n >= mark:
                        mark = meter.check(n, msg)
                        if mark < 0:
                            break
                    await send(payload)
                scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                for _ in range(row.window - 1):  # the echoes still in flight
                    await recv()
        _closed_in_time(scope.cancelled_caught)

    trio.run(main)
    return {"version": _version("websockets"), "loop": "trio"}


def _drive_trio_websocket(meter: Meter, url: str) -> dict[str, str]:
    try:
        import trio_websocket
    except ImportError as exc:
        raise Unavailable(f"trio-websocket is not installed ({exc}); pip install trio-websocket") from None
    import trio

    row, payload, size = meter.row, meter.payload, meter.row.size

    async def main() -> None:
        with trio.CancelScope() as scope:
            async with trio_websocket.open_websocket_url(
                url, max_message_size=MAX_MESSAGE_SIZE, disconnect_timeout=CLOSE_TIMEOUT
            ) as ws:
                send, get = ws.send_message, ws.get_message
                meter.begin()
                for _ in range(row.window):
                    await send(payload)
                n, mark = 0, 1
                while True:
                    msg = await get()
                    if len(msg) != size:
                        raise _bad_size(len(msg), size)
                    n += 1
                    if n >= mark:
                        mark = meter.check(n, msg)
                        if mark < 0:
                            break
                    await send(payload)
                scope.deadline = trio.current_time() + CLOSE_TIMEOUT
                for _ in range(row.window - 1):  # the echoes still in flight
                    await get()
        _closed_in_time(scope.cancelled_caught)

    trio.run(main)
    return {"version": _version("trio-websocket"), "loop": "trio"}


def _drive_picows(meter: Meter, url: str) -> dict[str, str]:
    import asyncio

    from picows import WSListener, WSMsgType, ws_connect

    binary = WSMsgType.BINARY
    row, payload, size = meter.row, meter.payload, meter.row.size

    class Client(WSListener):
        def __init__(self) -> None:
            super().__init__()
            self.n = 0
            self.mark = 1
            self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if self.done.done():
                return
            if frame.payload_size != size:
                self._fail(RuntimeError(f"{frame.msg_type.name} frame of {frame.payload_size} B, expected {size} B"))
                return
            msg = frame.get_payload_as_bytes()
            self.n += 1
            if self.n >= self.mark:
                try:
                    self.mark = meter.check(self.n, msg)
                except RuntimeError as exc:
                    self._fail(exc)
                    return
                if self.mark < 0:
                    self.done.set_result(None)
                    return
            transport.send(binary, payload)

        def on_ws_disconnected(self, transport: Any) -> None:
            self._fail(RuntimeError("server disconnected"))

        def _fail(self, exc: Exception) -> None:
            if not self.done.done():
                self.done.set_exception(exc)

    async def main() -> None:
        transport, client = await ws_connect(Client, url, max_frame_size=MAX_MESSAGE_SIZE)
        assert isinstance(client, Client)
        try:
            meter.begin()
            for _ in range(row.window):
                transport.send(binary, payload)
            await client.done
        finally:
            transport.send_close()
            transport.disconnect()
            await asyncio.wait_for(transport.wait_disconnected(), CLOSE_TIMEOUT)

    loop = _asyncio_run(main)
    return {"version": _version("picows"), "loop": loop}


DRIVERS: dict[str, Callable[[Meter, str], dict[str, str]]] = {
    "wsnest": _drive_wsnest,
    "websockets": _drive_websockets,
    "websockets-trio": _drive_websockets_trio,
    "trio-websocket": _drive_trio_websocket,
    "picows": _drive_picows,
}
assert list(DRIVERS) == CLIENT_NAMES


def probe(name: str) -> dict[str, Any]:
    """Import ``name``'s library in this process: its versions, or why not."""
    try:
        if name == "wsnest":
            info = _import_wsnest()[1]
            import trio  # noqa: F401
        elif name == "websockets":
            import websockets.asyncio.client

            info = {"version": _version("websockets"), "loop": _loop_available()}
        elif name == "websockets-trio":
            import importlib.util

            version = _version("websockets")
            if importlib.util.find_spec("websockets") is None or importlib.util.find_spec("websockets.trio") is None:
                raise Unavailable(f"websockets {version} has no trio client (no websockets.trio module)", drop=True)
            import websockets.trio.client  # noqa: F401

            info = {"version": version, "loop": "trio"}
        elif name == "trio-websocket":
            try:
                import trio_websocket  # noqa: F401
            except ImportError as exc:
                raise Unavailable(f"trio-websocket is not installed ({exc}); pip install trio-websocket") from None
            info = {"version": _version("trio-websocket"), "loop": "trio"}
        else:
            import picows  # noqa: F401

            info = {"version": _version("picows"), "loop": _loop_available()}
    except Unavailable as exc:
        return {"ok": False, "error": str(exc), "drop": exc.drop}
    except ImportError as exc:
        return {"ok": False, "error": f"{name} is not installed ({exc})", "drop": False}
    return {"ok": True, "info": info}


def _loop_available() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def describe(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, or of the leaves of an exception group
    (trio wraps what a nursery's tasks raise)."""
    leaves = getattr(exc, "exceptions", None)  # BaseExceptionGroup (or its backport before 3.11)
    if isinstance(leaves, tuple) and leaves:
        return "; ".join(describe(e) for e in leaves)
    return f"{type(exc).__name__}: {exc}"


def child_main(args: argparse.Namespace) -> int:
    raise_fd_limit()
    row = ROW_BY_KEY[args.row]
    payload = make_payload(row.size)
    meter = Meter(row, payload, args.warmup, args.duration, args.server_pid)
    out: dict[str, Any] = {"client": args.child, "row": row.key, "size": row.size}
    try:
        out["info"] = DRIVERS[args.child](meter, args.url)
        out.update(meter.result())
    except Unavailable as exc:
        out["error"] = str(exc)
        out["unavailable"] = True
    except Exception as exc:  # report it, whatever the library raised
        if meter.stop is not None:
            # The window is complete; only the close went wrong.
            out.update(meter.result())
            out["close_error"] = describe(exc)
        else:
            out["error"] = describe(exc)
    print(json.dumps(out), flush=True)
    return 1 if "error" in out else 0


# -- parent side -------------------------------------------------------------------


@dataclass
class Cell:
    rates: list[float] = field(default_factory=list)
    cpu_per_unit: list[float] = field(default_factory=list)  # client CPU us per unit
    client_frac: list[float] = field(default_factory=list)
    server_frac: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None

    @property
    def cpu_median(self) -> float | None:
        return statistics.median(self.cpu_per_unit) if self.cpu_per_unit else None


def run_child(argv: list[str], cpu: int | None, timeout: float) -> dict[str, Any]:
    """Run this script as a client process (pinned to ``cpu``); its JSON line."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if cpu is not None:
        set_affinity(proc.pid, cpu)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"error": f"timed out after {timeout:g} s; stderr: {err.strip()[-500:]}"}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": f"exit {proc.returncode}, no result; stderr: {err.strip()[-500:]}"}
    return json.loads(lines[-1])  # type: ignore[no-any-return]


def run_rows(
    rows: list[Row],
    clients: list[str],
    reps: int,
    duration: float,
    warmup: float,
    server: servers.ServerProcess,
    client_cpu: int | None,
) -> tuple[dict[tuple[str, str], Cell], dict[str, dict[str, str]]]:
    cells = {(r.key, c): Cell() for r in rows for c in clients}
    infos: dict[str, dict[str, str]] = {}
    total, done = len(cells) * reps, 0
    for rep in range(reps):
        shift = rep % len(clients)
        order = clients[shift:] + clients[:shift]
        for row in rows:
            for client in order:
                done += 1
                print(f"[{done}/{total}] {row.key} {client} rep {rep + 1}/{reps} ...", end=" ", file=sys.stderr)
                if server.proc is None or server.proc.poll() is not None:
                    print("(restarting the dead server)", end=" ", file=sys.stderr)
                    server.stop()
                    server.start()
                argv = ["--child", client, "--row", row.key, "--url", server.url]
                argv += ["--duration", str(duration), "--warmup", str(warmup), "--server-pid", str(server.pid)]
                res = run_child(argv, client_cpu, timeout=warmup + duration * 4 + 60)
                cell = cells[(row.key, client)]
                if "error" in res:
                    cell.errors.append(res["error"])
                    print(f"ERROR {res['error'][:300]}", file=sys.stderr, flush=True)
                    continue
                infos.setdefault(client, res.get("info", {}))
                seconds = res["seconds"]
                units = row.units(res["messages"])
                cell.rates.append(res["rate"])
                cell.cpu_per_unit.append(res["client_cpu_s"] / units * 1e6)
                cell.client_frac.append(res["client_cpu_s"] / seconds)
                if "server_cpu_s" in res:
                    cell.server_frac.append(res["server_cpu_s"] / seconds)
                note = f" (close: {res['close_error'][:80]})" if res.get("close_error") else ""
                print(
                    f"{fmt_value(res['rate'])} {row.unit}, client CPU {fmt_us(cell.cpu_per_unit[-1])}/{row.cpu_unit}"
                    f"{note}",
                    file=sys.stderr,
                    flush=True,
                )
    return cells, infos


# -- report ----------------------------------------------------------------------


def fmt_value(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if value < 100 else fmt_rate(value)


def fmt_us(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.2f} ms"
    return f"{value:.1f} us" if value >= 10 else f"{value:.2f} us"


def fmt_cell(cell: Cell | None) -> str:
    if cell is None:
        return "unavailable"
    if not cell.rates:
        return "error" if cell.errors else "-"
    text = fmt_value(cell.median)
    if len(cell.rates) > 1:
        text += f" [{fmt_value(min(cell.rates))}-{fmt_value(max(cell.rates))}]"
    if cell.errors:
        text += f" ({len(cell.errors)} failed)"
    return text


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b and a > 0 and b > 0 else None


def ratios_of(
    cells: dict[tuple[str, str], Cell], rows: list[Row]
) -> list[tuple[Row, str, str, float | None, float | None]]:
    """``(row, other, suffix, rate ratio, CPU ratio)`` for every pair wsnest has."""
    out = []
    for row in rows:
        ws = cells.get((row.key, "wsnest"))
        for other, suffix, _ in COMPARISONS:
            cell = cells.get((row.key, other))
            if ws is None or cell is None:
                continue
            # CPU: other's CPU per unit over wsnest's, so above 1.0 wsnest is better too.
            out.append((row, other, suffix, ratio(ws.median, cell.median), ratio(cell.cpu_median, ws.cpu_median)))
    return out


def render_rates(cells: dict[tuple[str, str], Cell], rows: list[Row], clients: list[str]) -> str:
    comps = [(other, target) for other, _, target in COMPARISONS if other in clients and "wsnest" in clients]
    head = ["row", "unit", *clients, *(f"wsnest/{o}" for o, _ in comps)]
    found = {(row.key, other): value for row, other, _, value, _ in ratios_of(cells, rows)}
    body = []
    for row in rows:
        line = [row.label, row.unit, *(fmt_cell(cells.get((row.key, c))) for c in clients)]
        for other, _ in comps:
            value = found.get((row.key, other))
            line.append("-" if value is None else f"{value:.2f}x")
        body.append(line)
    return markdown_table(head, body)


def render_cpu(cells: dict[tuple[str, str], Cell], rows: list[Row], clients: list[str]) -> str:
    head = ["row", "client CPU per", *clients]
    body = []
    for row in rows:
        line = [row.label, row.cpu_unit]
        for client in clients:
            cell = cells.get((row.key, client))
            if cell is None or cell.cpu_median is None:
                line.append("-")
                continue
            server = f"{statistics.median(cell.server_frac):.2f}" if cell.server_frac else "-"
            line.append(f"{fmt_us(cell.cpu_median)} ({statistics.median(cell.client_frac):.2f}/{server})")
        body.append(line)
    return markdown_table(head, body)


def idle_notes(cells: dict[tuple[str, str], Cell], rows: list[Row], clients: list[str]) -> list[str]:
    """A warning per row where, for the median client, neither process ran for
    a good part of the window: the rate then measures waiting (wake-ups),
    and the CPU per unit is the number to compare."""
    out = []
    for row in rows:
        idle = []
        for client in clients:
            cell = cells.get((row.key, client))
            if cell is not None and cell.client_frac and cell.server_frac:
                busy = statistics.median(cell.client_frac) + statistics.median(cell.server_frac)
                idle.append(max(0.0, 1.0 - busy))
        if idle and statistics.median(idle) > 0.2:
            out.append(
                f"{row.label}: neither client nor server ran for {statistics.median(idle):.0%} of the window"
                " (median over clients): the rates are bound by wake-up latency, compare the CPU per unit."
            )
    return out


def wakeup_round_trip(cpu_a: int, cpu_b: int, rounds: int = 2000) -> float | None:
    """Microseconds per 1-byte pipe round trip between two processes pinned to
    ``cpu_a`` and ``cpu_b``: what waking the other side costs on this machine."""
    if not hasattr(os, "fork") or not hasattr(os, "sched_setaffinity"):
        return None
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    before = os.sched_getaffinity(0)
    pid = os.fork()
    if pid == 0:  # the echoing side
        try:
            os.sched_setaffinity(0, {cpu_b})
            while os.read(r1, 1) == b"x":
                os.write(w2, b"x")
        finally:
            os._exit(0)
    try:
        os.sched_setaffinity(0, {cpu_a})
        for _ in range(rounds // 10):  # warm-up
            os.write(w1, b"x")
            os.read(r2, 1)
        t0 = time.perf_counter()
        for _ in range(rounds):
            os.write(w1, b"x")
            os.read(r2, 1)
        return (time.perf_counter() - t0) / rounds * 1e6
    finally:
        os.write(w1, b"q")
        os.waitpid(pid, 0)
        os.sched_setaffinity(0, before)
        for fd in (r1, w1, r2, w2):
            os.close(fd)


def render_targets(cells: dict[tuple[str, str], Cell], rows: list[Row], unavailable: dict[str, str]) -> str:
    if "wsnest" in unavailable:
        return f"(wsnest not measured: {unavailable['wsnest']})"
    targets = {other: target for other, _, target in COMPARISONS}
    body = []
    for row, other, _, value, cpu in ratios_of(cells, rows):
        target = targets[other]
        measured = "-" if value is None else f"{value:.2f}x"
        cpu_text = "-" if cpu is None else f"{cpu:.2f}x"
        what = f"wsnest >= {target:g}x {other}" if target is not None else f"wsnest / {other}"
        body.append([row.label, what, measured, _judge(value, target), cpu_text, _judge(cpu, target)])
    if not body:
        return "(no target measurable: wsnest and a peer are needed)"
    return markdown_table(["row", "target", "rate ratio", "result", "CPU ratio", "result (CPU)"], body)


def _judge(value: float | None, target: float | None) -> str:
    if target is None:
        return "(reported)"
    if value is None:
        return "n/a"
    return "PASS" if value >= target else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="WebSocket client libraries against one picows echo server")
    parser.add_argument("--quick", action="store_true", help="1 repetition, 0.6 s per cell (smoke test)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="measured seconds per cell (default 2; 0.6 with --quick)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 0.3; 0.2 with --quick)")
    parser.add_argument("--clients", help="comma-separated columns: " + ",".join(CLIENT_NAMES))
    parser.add_argument("--rows", help="comma-separated rows: " + ",".join(ROW_BY_KEY))
    pins = parser.add_mutually_exclusive_group()
    pins.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs")
    pins.add_argument(
        "--cpus",
        metavar="S,C",
        help="pin the server to CPU S and the clients to CPU C (default 0,1; '1,1' shares one core, which "
        "takes the cross-CPU wake-up out of the closed loops)",
    )
    parser.add_argument("--save", action="store_true", help="write the report to bench/results/client.md")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where --save writes (default bench/results)")
    # The client process (internal).
    parser.add_argument("--child", choices=CLIENT_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--probe", choices=CLIENT_NAMES, help=argparse.SUPPRESS)
    parser.add_argument("--row", choices=sorted(ROW_BY_KEY), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.probe:
        print(json.dumps(probe(args.probe)), flush=True)
        return 0
    if args.child:
        if not args.row or not args.url or args.duration is None or args.warmup is None:
            parser.error("--child needs --row, --url, --duration and --warmup")
        return child_main(args)

    def pick(text: str | None, names: list[str], what: str) -> list[str]:
        if not text:
            return list(names)
        chosen = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in chosen if n not in names]
        if unknown:
            parser.error(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(names)})")
        return [n for n in names if n in chosen]  # table order

    clients = pick(args.clients, CLIENT_NAMES, "client(s)")
    rows = [ROW_BY_KEY[k] for k in pick(args.rows, list(ROW_BY_KEY), "row(s)")]
    reps = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (0.6 if args.quick else 2.0)
    warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 0.3)
    if reps < 1 or duration <= 0 or warmup < 0:
        parser.error("--repeat and --duration must be positive, --warmup not negative")

    # Which clients can run here at all (one import each, in a child).
    unavailable: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for client in clients:
        res = run_child(["--probe", client], None, timeout=60)
        if not res.get("ok"):
            why = str(res.get("error"))
            (dropped if res.get("drop") else unavailable)[client] = why
            print(f"{'dropped' if res.get('drop') else 'ERROR'}: {client}: {why}", file=sys.stderr)
    runnable = [c for c in clients if c not in unavailable and c not in dropped]
    columns = [c for c in clients if c not in dropped]  # unavailable ones stay, as "error"

    raise_fd_limit()
    server_cpu, client_cpu = (None, None) if args.no_pin else pinning()
    if args.cpus:
        try:
            server_cpu, client_cpu = (int(x) for x in args.cpus.split(","))
        except ValueError:
            parser.error(f"--cpus: expected two CPU numbers like 0,1, got {args.cpus!r}")
        allowed = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
        if server_cpu not in allowed or client_cpu not in allowed:
            parser.error(f"--cpus: CPUs {args.cpus} are not all available (allowed: {sorted(allowed)})")
    wake = None
    if server_cpu is not None and client_cpu is not None:
        wake = wakeup_round_trip(server_cpu, client_cpu)
    started = dt.datetime.now(dt.timezone.utc)
    avail_before = {c: cpu_available(c) for c in (server_cpu, client_cpu) if c is not None}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if client_cpu is not None:
        set_affinity(os.getpid(), client_cpu)  # this process only waits: off the server's CPU
    print(
        f"# {len(rows)} row(s) x {len(runnable)} client(s), {reps} repetition(s), {duration:g} s per cell",
        file=sys.stderr,
    )
    t0 = time.monotonic()
    cells: dict[tuple[str, str], Cell] = {}
    infos: dict[str, dict[str, str]] = {}
    server_info: dict[str, str] = {}
    if runnable:
        with servers.ServerProcess(SERVER, cpu=server_cpu) as server:
            server_info = dict(server.info)
            cells, infos = run_rows(rows, runnable, reps, duration, warmup, server, client_cpu)
    elapsed = time.monotonic() - t0
    avail_after = {c: cpu_available(c) for c in avail_before}
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    pin = f"server on CPU {server_cpu}, each client on CPU {client_cpu}" if server_cpu is not None else "not pinned"
    lines = [f"# WebSocket clients against one picows echo server ({started:%Y-%m-%d %H:%M} UTC)", ""]
    lines.append(f"- machine: {machine_summary()}")
    lines.append(
        f"- server: picows {server_info.get('version', '?')} on {server_info.get('loop', '?')}"
        f" (`servers.py picows`); {pin}; a fresh client process per cell"
    )
    lines.append(
        f"- {reps} repetition(s), {duration:g} s per cell (+{warmup:g} s warm-up), clients interleaved per row;"
        f" {elapsed / 60:.1f} min in all"
    )
    clients_text = "; ".join(
        f"{c}: {infos[c].get('version', '?')} on {infos[c].get('loop', '?')}"
        + (f", core {infos[c]['core']}" if "core" in infos[c] else "")
        for c in runnable
        if c in infos
    )
    if clients_text:
        lines.append(f"- clients: {clients_text}")
    if "wsnest" in infos and "path" in infos["wsnest"]:
        lines.append(f"- wsnest measured from {infos['wsnest']['path']}")
    if wake is not None:
        lines.append(
            f"- wake-up: a 1-byte pipe round trip between two processes on CPUs {server_cpu} and {client_cpu}"
            f" takes {wake:.1f} us (a floor under every ping-pong round trip)"
        )
    if avail_before:
        avail = ", ".join(
            f"CPU {c}: {avail_before[c]:.2f} before, {(avail_after[c] or 0):.2f} after" for c in avail_before
        )
        lines.append(f"- busy-loop CPU share (1.00 = core not shared): {avail}")
    if load_before is not None and load_after is not None:
        lines.append(f"- load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    for client, why in {**unavailable, **dropped}.items():
        lines.append(f"- **{client}: {why}**" + (" (column dropped)" if client in dropped else ""))
    lines += ["", "## Rates: median [min-max] over repetitions", "", render_rates(cells, rows, columns), ""]
    lines += [
        "Ratios are of the medians; above 1.00x wsnest is faster.",
        "",
        "## Client CPU per unit of work (median), and (client CPU / server CPU) as fractions of a core",
        "",
        render_cpu(cells, rows, columns),
        "",
        "Client CPU is `time.process_time()` of the client process over the window (user + system).",
        "In ping-pong client and server take turns, so neither reaches 1.00.",
        *idle_notes(cells, rows, columns),
        "",
        "## Targets",
        "",
        render_targets(cells, rows, unavailable),
        "",
        "The result is judged on the rate ratio; result (CPU) judges the CPU ratio (the other client's CPU"
        " per unit over wsnest's, above 1.00x wsnest spends less) against the same target, for machines"
        " where the rates are bound by wake-ups or noise.",
    ]
    failed = {k: c.errors for k, c in cells.items() if c.errors}
    if failed:
        lines += ["", "Failed runs:"]
        lines += [f"- {row} {client}: {errs[0][:300]}" for (row, client), errs in failed.items()]
    pairs = ratios_of(cells, rows)
    ratio_lines = [f"RATIO client_{row.key}_wsnest_vs_{suffix} {v:.2f}" for row, _, suffix, v, _ in pairs if v]
    ratio_lines += [f"CPURATIO client_{row.key}_wsnest_vs_{suffix} {c:.2f}" for row, _, suffix, _, c in pairs if c]
    if ratio_lines:
        lines += ["", "```", *ratio_lines, "```"]
    report = "\n".join(lines) + "\n"
    print(report)
    if args.save:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        path = args.out_dir / "client.md"
        path.write_text(report, encoding="utf-8")
        print(f"saved {path}", file=sys.stderr)
    for busy in sorted(c for c, v in {**avail_before, **avail_after}.items() if v is not None and v < 0.9):
        print(f"WARNING: CPU {busy} was shared with other work: rates are depressed and noisy", file=sys.stderr)
    if unavailable:
        print(f"unavailable: {', '.join(unavailable)}", file=sys.stderr)
    return 1 if unavailable or failed else 0


if __name__ == "__main__":
    sys.exit(main())
