"""Groups through Redis: fan-out rate, latency and PUBLISHes per message.

    python bench/bench_fanout.py               # 3 repetitions x 5 s, latency 10 s: ~1.5 min
    python bench/bench_fanout.py --quick       # 1 repetition x 2 s, latency 3 s: ~20 s
    python bench/bench_fanout.py --seconds 10

The bench starts a ``redis-server`` (``/usr/bin/redis-server`` or on PATH)
on a free loopback port in a temporary directory (``--save ''
--appendonly no``) and two servers of ``bench/fanout_app.py``:

``redis``
    ``--workers 2`` (``SO_REUSEPORT``), ``broker=redis://...``;
    ``/trigger`` does ``ws.publish("room", data)``: the worker that gets
    it delivers to its own members and sends one ``PUBLISH``; the other
    worker gets it from Redis and delivers to its members.
``local``
    one process, no broker; ``/trigger`` does ``wsnest.broadcast`` to
    the receivers (the baseline: the fastest one-process fan-out).

Every receiver is first told which worker it landed on; the spread is
printed per run.

Rate (``bench/loadclient.py --scenario fanout64``, picows on uvloop in a
separate process): 200 receivers join the group; one publisher on
``/trigger`` keeps ``--window`` messages of 64 B in flight (a message
counts as done when 200 deliveries came in for it, on average);
deliveries/s = messages received by all receivers per second. The two
servers take turns within each repetition (the starting one rotates).
``RATIO redis_fanout_vs_local`` is the median rate of ``redis`` over that of
``local`` (target >= 0.5).

Latency (a client in this file, ``--latency-client``, also picows): the
publisher sends 64 B messages at a fixed ``--rate`` (default 1,000/s),
each carrying ``time.perf_counter()`` (CLOCK_MONOTONIC, one clock for every
process of the machine) at the moment it is written; each receiver takes
the difference when its copy arrives. Reported: p50/p99/p99.9/max over
every delivery of the measured window, in ms, for ``redis`` (target p99
< 5 ms) and for ``local`` beside it.

PUBLISHes per message: ``cmdstat_publish`` calls from Redis's ``INFO
commandstats`` over the whole run of the ``redis`` server, divided by the
messages it published (``group_publishes`` of ``GET /stats``, summed over
the workers). Each message is published by one process, so 1.00 is right.

Nothing is pinned; the load client, both workers and Redis share the
machine's cores (2 here), so the figures say what one machine does with
everything on it. Linux only (``/proc``). Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadclient  # noqa: E402  (beside this script)
from _util import machine_summary  # noqa: E402
from bench_workers import WorkersServer  # noqa: E402
from wire import OP_BINARY, client_frame  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
SIZE = 64
RECEIVERS = 200  # loadclient's fanout64 scenario
STAMP = struct.Struct("<dQ")  # send time (perf_counter), sequence number


# -- Redis ----------------------------------------------------------------------


class Redis:
    """A throwaway ``redis-server`` on a free loopback port."""

    def __init__(self) -> None:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(exe):
            raise RuntimeError("redis-server not found (apt-get install -y redis-server)")
        self.exe = exe
        self.dir = tempfile.TemporaryDirectory(prefix="bench_fanout_")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> None:
        cmd = [self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", self.dir.name, "--daemonize", "no", "--loglevel", "warning"]
        log = open(Path(self.dir.name) / "redis.log", "wb")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(cmd, cwd=self.dir.name, stdout=log, stderr=subprocess.STDOUT)
        self._log = log
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING").startswith(b"+PONG"):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {timeout}s")
            time.sleep(0.05)

    def command(self, line: str) -> bytes:
        """One inline command; the whole reply (a status or one bulk string)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2.0) as sock:
            sock.sendall(line.encode() + b"\r\n")
            reply = b""
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    return reply
                reply += chunk
                head, _, body = reply.partition(b"\r\n")
                if not head.startswith(b"$") or len(body) >= int(head[1:]) + 2:
                    return reply

    def info(self, section: str) -> dict[str, str]:
        text = self.command(f"INFO {section}").decode()
        return dict(ln.split(":", 1) for ln in text.splitlines()[1:] if ":" in ln)

    def publish_calls(self) -> int:
        stat = self.info("commandstats").get("cmdstat_publish", "calls=0")
        return int(stat.split(",")[0].split("=")[1])

    def version(self) -> str:
        return self.info("server").get("redis_version", "?")

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return _cpu_seconds((self.proc.pid,))

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
            self._log.close()
        self.dir.cleanup()


def _cpu_seconds(pids: tuple[int, ...]) -> float:
    total = 0.0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def server_stats(server: WorkersServer) -> dict[str, Any]:
    with urllib.request.urlopen(server.url + "/stats", timeout=5) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


def settled_publishes(server: WorkersServer) -> int:
    """``group_publishes`` of every worker, once the workers' shared board
    (updated every 0.5 s) stops moving."""
    last = -1
    while True:
        time.sleep(0.6)
        now = int(server_stats(server)["group_publishes"])
        if now == last:
            return now
        last = now


# -- the latency client (a subprocess: python bench_fanout.py --latency-client) --


async def latency_client(
    url: str, rate: float, duration: float, warmup: float, server_pid: tuple[int, ...]
) -> dict[str, Any]:
    """``RECEIVERS`` receivers on ``/bcast``, one publisher on ``/trigger``
    sending at ``rate``/s; latency of every delivery in the window."""
    from picows import WSListener

    stats = loadclient.Stats()
    samples = array("d")
    window = [float("inf"), float("inf")]  # send times whose deliveries are recorded
    hellos: dict[str, int] = {}
    perf = time.perf_counter
    unpack = STAMP.unpack_from

    class Receiver(WSListener):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.count = 0
            self.transport: Any = None

        def on_ws_connected(self, transport: Any) -> None:
            self.transport = transport

        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            now = perf()
            if frame.payload_size != SIZE:  # the "worker <n>" hello (or an error)
                self._other(frame)
                return
            self.count += 1
            sent = unpack(frame.get_payload_as_memoryview())[0]
            if window[0] <= sent < window[1]:
                samples.append(now - sent)

        def _other(self, frame: Any) -> None:
            text = frame.get_payload_as_bytes().decode("utf-8", "replace")
            if text.startswith("worker "):
                hellos[text] = hellos.get(text, 0) + 1
            elif stats.error is None:
                stats.error = f"unexpected frame {frame.msg_type.name} of {frame.payload_size} B"

    receivers = await loadclient._connect_many(RECEIVERS, loadclient._ws_url(url, "/bcast"), Receiver, stats)
    (publisher,) = await loadclient._connect_many(
        1, loadclient._ws_url(url, "/trigger"), loadclient._make_passive_class(), stats
    ) or (None,)
    result: dict[str, Any] = {"rate": rate, "receivers": len(receivers)}
    if stats.error is not None or publisher is None:
        result["error"] = stats.error or "no publisher"
        await loadclient._close_all([*receivers, publisher])
        return result
    raw = publisher.transport.underlying_transport
    pad = bytes(SIZE - STAMP.size)
    seq = in_window = 0

    def send() -> None:
        nonlocal seq, in_window
        seq += 1
        now = perf()
        if window[0] <= now < window[1]:
            in_window += 1
        raw.write(client_frame(OP_BINARY, STAMP.pack(now, seq) + pad, mask=os.urandom(4)))

    # Every receiver registered (got a message) before the clock starts.
    deadline = perf() + 10.0
    while any(r.count == 0 for r in receivers) and stats.error is None:
        if perf() > deadline:
            stats.error = f"{sum(r.count == 0 for r in receivers)} receivers got nothing in 10 s"
            break
        send()
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    if stats.error is None:
        interval = 1.0 / rate
        start = perf()
        window[:] = [start + warmup, start + warmup + duration]
        c0: float | None = None
        s0: float | None = None
        due = start
        while True:
            now = perf()
            if now >= window[1]:
                break
            if c0 is None and now >= window[0]:
                c0, s0 = time.process_time(), loadclient.proc_cpu_seconds(server_pid)
            while due <= now:  # late (a timer that fired late): catch up
                send()
                due += interval
            await asyncio.sleep(max(0.0, due - perf()))
        c1, s1 = time.process_time(), loadclient.proc_cpu_seconds(server_pid)
        # Let the window's messages arrive (until nothing moves for 0.2 s, at most 3 s).
        last, t_end = -1, perf() + 3.0
        while len(samples) != last and perf() < t_end:
            last = len(samples)
            await asyncio.sleep(0.2)
        got = sorted(samples)
        n = len(got)

        def pct(q: float) -> float:
            return got[min(n - 1, int(q * n))] * 1e3 if n else float("nan")

        result.update(
            sent=in_window,
            deliveries=n,
            expected=in_window * len(receivers),
            p50_ms=pct(0.50),
            p90_ms=pct(0.90),
            p99_ms=pct(0.99),
            p999_ms=pct(0.999),
            max_ms=got[-1] * 1e3 if n else float("nan"),
            client_cpu=round((c1 - (c0 or c1)) / duration, 3),
            server_cpu=round((s1 - s0) / duration, 3) if s0 is not None and s1 is not None else None,
            workers=dict(sorted(hellos.items())),
        )
    if stats.error is not None:
        result["error"] = stats.error
    await loadclient._close_all([*receivers, publisher])
    return result


def run_latency(server: WorkersServer, rate: float, duration: float, warmup: float, mine: Mine) -> dict[str, Any]:
    url = "ws" + server.url[len("http") :]
    cmd = [sys.executable, os.path.abspath(__file__), "--latency-client", url, "--rate", str(rate)]
    cmd += ["--seconds", str(duration), "--warmup", str(warmup), "--server-pid", ",".join(map(str, server.pids))]
    mine.start()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + warmup + 60)
    background = mine.background()
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"latency client failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["background"] = background
    return result


def _machine_busy() -> float:
    """CPU seconds the whole machine has spent in processes (user, nice,
    system: all CPUs; ``/proc/stat``). Interrupt and softirq time is left
    out: loopback traffic is processed there and no process is charged it."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2]) / CLK_TCK


class Mine:
    """CPU used on the machine by processes other than this bench's (other
    users of a shared machine), in cores over a run: all CPU busy time minus
    that of the servers, Redis and the client subprocesses."""

    def __init__(self, pids: tuple[int, ...]) -> None:
        self.pids = pids

    def _mine(self) -> float:
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        me = resource.getrusage(resource.RUSAGE_SELF)
        return _cpu_seconds(self.pids) + kids.ru_utime + kids.ru_stime + me.ru_utime + me.ru_stime

    def start(self) -> None:
        self.t0, self.busy0, self.mine0 = time.perf_counter(), _machine_busy(), self._mine()

    def background(self) -> float:
        """Cores used by others since :meth:`start`."""
        wall = time.perf_counter() - self.t0
        return max(0.0, (_machine_busy() - self.busy0) - (self._mine() - self.mine0)) / wall


# -- the bench ------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    server: WorkersServer
    rates: list[float] = field(default_factory=list)
    server_cores: list[float] = field(default_factory=list)
    client_cores: list[float] = field(default_factory=list)
    spreads: list[dict[str, int]] = field(default_factory=list)
    missing: int = 0
    redis_cpu: float = 0.0  # seconds of redis-server CPU during the rate runs
    redis_publishes: int = 0  # PUBLISH calls during the rate runs
    background: list[float] = field(default_factory=list)  # cores used by other processes


def run_rate(case: Case, seconds: float, window: int, redis: Redis, mine: Mine) -> None:
    cpu0, pub0 = redis.cpu_seconds(), redis.publish_calls()
    mine.start()
    res = loadclient.run_loadclient(
        "ws" + case.server.url[len("http") :] + "/ws",
        "fanout64",
        seconds,
        warmup=0.5,
        server_pid=case.server.pids,
        window=window,
    )
    case.background.append(mine.background())
    if "error" in res or not res.get("rate"):
        raise RuntimeError(f"{case.name}: load client failed: {res}")
    case.rates.append(float(res["rate"]))
    case.server_cores.append(float(res["server_cpu"]))
    case.client_cores.append(float(res["client_cpu"]))
    case.spreads.append(res.get("workers", {}))
    case.missing += int(res.get("missing_deliveries", 0))
    case.redis_cpu += redis.cpu_seconds() - cpu0
    case.redis_publishes += redis.publish_calls() - pub0


def _spread(workers: dict[str, int]) -> str:
    return ", ".join(f"{name}: {count}" for name, count in workers.items()) or "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition x 2 s, latency 3 s (~20 s)")
    parser.add_argument("--seconds", type=float, help="measured seconds per rate run (default 5; latency: 2x)")
    parser.add_argument("--repeat", type=int, default=3, help="rate repetitions (default 3)")
    parser.add_argument("--window", type=int, default=8, help="messages in flight in the rate runs (default 8)")
    parser.add_argument("--rate", type=float, default=1000.0, help="messages/s in the latency runs (default 1000)")
    parser.add_argument("--warmup", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--latency-client", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.latency_client:
        loadclient.raise_fd_limit()
        pids = tuple(int(p) for p in args.server_pid.split(",") if p)
        result = loadclient.run(latency_client(args.latency_client, args.rate, args.seconds or 10.0, args.warmup, pids))
        print(json.dumps(result), flush=True)
        return 1 if "error" in result else 0
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    repeat = 1 if args.quick else args.repeat
    latency_seconds = 1.5 * seconds if args.quick else 2 * seconds
    loadclient.raise_fd_limit()

    redis = Redis()
    redis.start()
    app = ["fanout_app.py", "--mode"]
    cases = [
        Case("redis", WorkersServer(2, [*app, "groups", "--broker", redis.url])),
        Case("local", WorkersServer(1, [*app, "broadcast"])),
    ]
    try:
        for case in cases:
            case.server.start()
        core = server_stats(cases[0].server)["core"]
        print(f"# bench_fanout: {machine_summary()}")
        print(
            f"# wsnest core {core}, redis-server {redis.version()}, {RECEIVERS} receivers, 64 B, "
            f"window {args.window}, {repeat} x {seconds:g} s; latency at {args.rate:g} msg/s for {latency_seconds:g} s"
        )
        assert redis.proc is not None
        mine = Mine((redis.proc.pid, *(p for case in cases for p in case.server.pids)))
        publishes0 = redis.publish_calls()
        group0 = int(server_stats(cases[0].server)["group_publishes"])
        for rep in range(repeat):
            order = cases[rep % 2 :] + cases[: rep % 2]
            for case in order:
                run_rate(case, seconds, args.window, redis, mine)
        latencies = {case.name: run_latency(case.server, args.rate, latency_seconds, 1.0, mine) for case in cases}
        publishes = redis.publish_calls() - publishes0
        messages = settled_publishes(cases[0].server) - group0
    finally:
        for case in cases:
            case.server.stop()
        redis.stop()

    print()
    for case in cases[:1]:
        for i, spread in enumerate(case.spreads):
            print(f"{case.name} run {i + 1}: receivers per worker: {_spread(spread)}")
        print(f"{case.name} latency run: receivers per worker: {_spread(latencies[case.name].get('workers', {}))}")
    print()
    print(
        "| case | processes | deliveries/s (min-max) | server CPU (cores) | server us/delivery | client CPU (cores) "
        "| others' CPU (cores) |"
    )
    print("|---|---|---|---|---|---|---|")
    medians: dict[str, float] = {}
    for case in cases:
        rate = medians[case.name] = statistics.median(case.rates)
        cores = statistics.median(case.server_cores)
        spread = f"{min(case.rates):,.0f}-{max(case.rates):,.0f}"
        label = "2 workers + Redis" if case.name == "redis" else "1"
        print(
            f"| {case.name} | {label} | {rate:,.0f} ({spread}) | {cores:.2f} | {cores * 1e6 / rate:.2f} "
            f"| {statistics.median(case.client_cores):.2f} | {statistics.median(case.background):.2f} |"
        )
    print()
    print(
        f"| latency ({args.rate:g} msg/s) | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | deliveries "
        "| server CPU | client CPU | others' CPU |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in cases:
        lat = latencies[case.name]
        if "error" in lat:
            print(f"| {case.name} | error: {lat['error']} |")
            continue
        print(
            f"| {case.name} | {lat['p50_ms']:.2f} | {lat['p90_ms']:.2f} | {lat['p99_ms']:.2f} | {lat['p999_ms']:.2f} "
            f"| {lat['max_ms']:.2f} | {lat['deliveries']:,} of {lat['expected']:,} | {lat['server_cpu']:.2f} "
            f"| {lat['client_cpu']:.2f} | {lat['background']:.2f} |"
        )
    print()
    rc = cases[0]
    print(
        f"redis: {publishes:,} PUBLISH calls for {messages:,} messages published; in the rate runs "
        f"redis-server used {rc.redis_cpu * 1e6 / max(rc.redis_publishes, 1):.1f} us CPU per PUBLISH (2 subscribers)"
    )
    for case in cases:
        if case.missing:
            print(f"warning: {case.name}: {case.missing} deliveries missing after the rate runs")
    print()
    print(f"RATIO redis_fanout_vs_local {medians['redis'] / medians['local']:.2f}")
    print(f"DELIVERIES redis {medians['redis']:.0f}")
    print(f"DELIVERIES local {medians['local']:.0f}")
    lat = latencies["redis"]
    if "error" not in lat:
        print(f"LATENCY redis_fanout p50_ms {lat['p50_ms']:.2f} p99_ms {lat['p99_ms']:.2f}")
    print(f"PUBLISHES_PER_MESSAGE {publishes / max(messages, 1):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
