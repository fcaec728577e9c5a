"""Workers: the same server with 1 and with 2 worker processes, side by side.

    python bench/bench_workers.py             # 3 repetitions x 3 s per cell, ~1 min
    python bench/bench_workers.py --quick     # 1 repetition x 2 s per cell
    python bench/bench_workers.py --workers 1,2,4

The server is ``wsnest serve workers_app:handlers --workers N`` (see
``bench/workers_app.py``): ``GET /small`` and a WebSocket echo at ``/ws``.
With ``--workers 1`` it is one process (no supervisor), as users run it
without the option.

Cases:

``http_small``
    ``wrk -t1 -c50 -d<dur>s`` on ``GET /small`` (keep-alive, no pipelining).
``ws_pingpong64x50``
    ``bench/loadclient.py --scenario pingpong64x50`` in ``--ws-clients``
    processes at once (default 2, so 100 connections): each does 64 B
    ping-pong on 50 connections (picows on uvloop); the kernel spreads the
    connections over the workers (``SO_REUSEPORT``). One client process is
    not enough: in ping-pong it takes turns with the server, and a single
    one caps the rate before two workers do.

Nothing is pinned: the workers must be free to use both cores, and the
load client shares them (on this 2-core machine it takes a good part of a
core), so 2 workers cannot reach 2x here. Reported per cell: median rate
over the repetitions with its spread, the CPU used by all server processes
together (in cores) and the server CPU per request or message (us), which
tells whether a second worker costs extra work per request (contention,
cache misses) apart from the noise. The configurations take turns within
each repetition (the starting one rotates).

The output ends with ``RATIO workers2_vs_1 <case> <x>`` (rate with 2
workers over rate with 1) and ``CPURATIO workers2_vs_1 <case> <x>``
(server CPU per request with 1 worker over that with 2: below 1.0 means a
request costs more CPU with 2 workers).

Needs: ``apt-get install -y wrk``; picows and uvloop (the ``bench`` extra).
Linux only (``/proc``). Loopback only.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import loadclient  # noqa: E402  (beside this script)
from bench_http import parse_wrk  # noqa: E402

SERVING = re.compile(r"Serving at (http://\S+)")
CLK_TCK = os.sysconf("SC_CLK_TCK")
CASES = ("http_small", "ws_pingpong64x50")


@dataclass
class Sample:
    rate: float
    server_cores: float
    us_per_unit: float
    client_cores: float


class WorkersServer:
    """``wsnest serve workers_app:handlers --workers N`` in a subprocess
    (``app``: other arguments to ``python`` instead of ``-m wsnest serve
    workers_app:handlers``, run in ``bench/``; they must accept ``--port 0
    --workers N``, print ``Serving at URL`` and serve ``GET /small``)."""

    def __init__(self, workers: int, app: list[str] | None = None) -> None:
        self.workers = workers
        self.app = app or [
            "-m",
            "wsnest",
            "serve",
            "workers_app:handlers",
            "--host",
            "127.0.0.1",
            "--log-level",
            "warning",
        ]
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.pids: tuple[int, ...] = ()

    def start(self, timeout: float = 30.0) -> None:
        src = HERE.parent / "src"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH", "")]))
        cmd = [sys.executable, *self.app, "--port", "0", "--workers", str(self.workers)]
        self.proc = subprocess.Popen(
            cmd, cwd=HERE, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)
        match = SERVING.search(box[0]) if box else None
        if match is None:
            self.stop()
            raise RuntimeError(f"--workers {self.workers}: no 'Serving at' line within {timeout}s")
        self.url = match.group(1)
        deadline = time.monotonic() + timeout
        while True:  # every worker up: its pid is a child of the supervisor
            self.pids = self._server_pids()
            if len(self.pids) == self.workers:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"--workers {self.workers}: found {len(self.pids)} worker processes")
            time.sleep(0.05)
        with urllib.request.urlopen(self.url + "/small", timeout=5) as resp:
            if resp.read() != b"hello, world":
                raise RuntimeError("unexpected /small body")

    def _server_pids(self) -> tuple[int, ...]:
        assert self.proc is not None
        pid = self.proc.pid
        try:
            with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
                children = tuple(int(p) for p in fh.read().split())
        except OSError:
            children = ()
        return children if self.workers > 1 else (pid,)

    def cpu_seconds(self) -> float:
        total = 0.0
        for pid in self.pids:
            with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
        return total

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                print(f"warning: --workers {self.workers} ignored SIGTERM; killing", file=sys.stderr)
                proc.kill()
                proc.wait()
        _, err = proc.communicate()
        if proc.returncode != 0:
            print(f"warning: --workers {self.workers} exited {proc.returncode}:\n{err[-2000:]}", file=sys.stderr)
        self.proc = None


def run_http(wrk: str, server: WorkersServer, duration: float) -> Sample:
    port = server.url.rsplit(":", 1)[1]
    url = f"http://127.0.0.1:{port}/small"
    subprocess.run([wrk, "-t1", "-c50", "-d1s", url], capture_output=True, timeout=30, check=True)  # warm-up
    c0, t0 = server.cpu_seconds(), time.perf_counter()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    res = subprocess.run(
        [wrk, "-t1", "-c50", f"-d{int(duration)}s", url], capture_output=True, text=True, timeout=duration + 30
    )
    wall, cpu = time.perf_counter() - t0, server.cpu_seconds() - c0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if res.returncode != 0:
        raise RuntimeError(f"wrk failed:\n{res.stdout}\n{res.stderr}")
    rps, total, _, errors = parse_wrk(res.stdout)
    if errors:
        raise RuntimeError(f"wrk reported {errors} errors on {server.workers} workers")
    return Sample(rps, cpu / wall, cpu * 1e6 / max(total, 1), client / wall)


def run_ws(server: WorkersServer, duration: float, clients: int) -> Sample:
    """``clients`` load client processes at once, 50 connections each."""
    url = "ws" + server.url[len("http") :] + "/ws"
    results: list[dict[str, object]] = []

    def one() -> None:
        results.append(loadclient.run_loadclient(url, "pingpong64x50", duration, warmup=0.5, server_pid=server.pids))

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for res in results:
        if "error" in res or not res.get("rate"):
            raise RuntimeError(f"loadclient failed on {server.workers} workers: {res}")
    rate = sum(float(r["rate"]) for r in results)  # type: ignore[arg-type]
    cores = max(float(r["server_cpu"]) for r in results)  # type: ignore[arg-type]  # each saw all the workers
    client = sum(float(r["client_cpu"]) for r in results)  # type: ignore[arg-type]
    return Sample(rate, cores, cores * 1e6 / rate, client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="1 repetition x 2 s")
    parser.add_argument("--workers", default="1,2", help="worker counts to compare (default 1,2)")
    parser.add_argument(
        "--ws-clients", type=int, default=2, help="load client processes for ping-pong, 50 connections each (default 2)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.duration = 1, 2.0
    counts = [int(n) for n in args.workers.split(",")]
    wrk = shutil.which("wrk")
    if wrk is None:
        print("error: wrk not found (apt-get install -y wrk)", file=sys.stderr)
        return 2
    loadclient.raise_fd_limit()
    print(f"# bench_workers: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, {args.repeat} x {args.duration}s")
    samples: dict[tuple[int, str], list[Sample]] = {(n, c): [] for n in counts for c in CASES}
    for rep in range(args.repeat):
        order = counts[rep % len(counts) :] + counts[: rep % len(counts)]
        for n in order:
            server = WorkersServer(n)
            try:
                server.start()
                samples[(n, "http_small")].append(run_http(wrk, server, args.duration))
                samples[(n, "ws_pingpong64x50")].append(run_ws(server, args.duration, args.ws_clients))
            finally:
                server.stop()
    print()
    print("| case | workers | rate /s (min-max) | server CPU (cores) | server us/unit | client CPU (cores) |")
    print("|---|---|---|---|---|---|")
    medians: dict[tuple[int, str], tuple[float, float]] = {}
    for case in CASES:
        for n in counts:
            got = samples[(n, case)]
            rate = statistics.median(s.rate for s in got)
            us = statistics.median(s.us_per_unit for s in got)
            cores = statistics.median(s.server_cores for s in got)
            client = statistics.median(s.client_cores for s in got)
            medians[(n, case)] = (rate, us)
            spread = f"{min(s.rate for s in got):,.0f}-{max(s.rate for s in got):,.0f}"
            print(f"| {case} | {n} | {rate:,.0f} ({spread}) | {cores:.2f} | {us:.1f} | {client:.2f} |")
    print()
    base = counts[0]
    for n in counts[1:]:
        for case in CASES:
            rate, us = medians[(n, case)]
            rate1, us1 = medians[(base, case)]
            print(f"RATIO workers{n}_vs_{base} {case} {rate / rate1:.2f}")
            print(f"CPURATIO workers{n}_vs_{base} {case} {us1 / us:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
