"""End-to-end HTTP keep-alive benchmark: wsnest (compiled and pure core)
against uvicorn (httptools) and aiohttp.

    python bench/bench_http.py              # 3 repetitions x 3 s per cell, ~1.5 min
    python bench/bench_http.py --quick      # 1 repetition x 2 s per cell, ~25 s
    python bench/bench_http.py --repeat 5 --servers wsnest,uvicorn

Cases (same bytes from every server, see ``bench/http_servers.py``):

``small``
    ``GET /small`` -> ``hello, world`` (12 B text/plain), from
    ``wsnest.handler("/small", lambda req: {"body": "hello, world"})``.
``inline64k``
    ``GET /big`` -> 64 KiB application/octet-stream, from
    ``wsnest.handler_inline("/big", b"x" * 65536, "application/octet-stream")``.
``headers``
    ``GET /headers`` -> ``hello, world`` with a headers mapping, as
    applications write it: ``{"status": 200, "headers": {"Content-Type":
    ..., "X-Request-Id": ...}, "body": "hello, world"}``.
``json``
    ``GET /json`` -> a small JSON document serialised per request
    (``json.dumps`` in every server), ``application/json``.

Servers: ``wsnest`` (compiled core), ``wsnest_pure`` (same code with
``WSNEST_NO_EXTENSIONS=1``; HTTP parsing is httptools in both, so the two
should be equal), ``uvicorn`` (plain ASGI callable, ``http="httptools"``,
uvloop), ``aiohttp`` (``aiohttp.web`` on uvloop, ``access_log=None``).
``--extra-src PATH`` adds ``wsnest_extra``: wsnest imported from another
source tree (to measure a prototype against the checkout side by side).

Load generator: ``wrk`` (Debian package ``wrk``, ``apt-get install -y wrk``),
``wrk -t1 -c50 -d<dur>s --latency URL``: one thread, 50 keep-alive
connections, no pipelining. Each server runs in its own process pinned to
CPU 0, wrk is pinned to CPU 1 (so is this script). Before each measured
window a 0.5 s warm-up (a small keep-alive client in this process) primes
the server. The servers take turns within each repetition (the starting one
rotates), so a burst of machine noise hits them alike.

Reported per cell: median requests/s over the repetitions with the spread
(min-max); the CPU fraction of one core used by the server process
(``/proc/PID/stat`` utime+stime) and by wrk over the window (server near
1.00 = the server is the limit; wrk near 1.00 = the client is); the server's
CPU time per request (us/req), which other load on the machine disturbs far
less than the rate; wrk's p99 latency; and errors (non-2xx responses and
socket errors; any nonzero count is also warned about). A busy-loop probe of
both CPUs before and after tells whether other work shared them.

The output ends with ``RATIO`` lines, rate(A)/rate(B) of the medians:
``RATIO http_{small,inline64k}_wsnest_vs_{uvicorn,aiohttp}`` and
``RATIO http_small_compiled_vs_pure``; then ``CPURATIO`` lines with the
same names comparing requests per server CPU second (us/req of B over
us/req of A), which a machine shared with other work disturbs far less.

Needs: ``apt-get install -y wrk``; ``pip install uvicorn httptools uvloop
aiohttp`` (the ``bench`` extra of pyproject lists uvicorn, uvloop, aiohttp;
httptools is a wsnest dependency). Loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from _util import machine_summary, markdown_table

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "http_servers.py"
SERVER_CPU = 0
CLIENT_CPU = 1
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")

CASES: dict[str, tuple[str, bytes, str]] = {
    # name: (path, expected body, expected content type)
    "small": ("/small", b"hello, world", "text/plain; charset=utf-8"),
    "inline64k": ("/big", b"x" * 65536, "application/octet-stream"),
    "headers": ("/headers", b"hello, world", "text/plain; charset=utf-8"),
    "json": ("/json", b'{"message": "hello, world", "items": [1, 2, 3], "ok": true}', "application/json"),
}


@dataclass(frozen=True)
class Impl:
    label: str
    server: str
    env: dict[str, str | None]  # None: remove the variable
    expect: dict[str, str] = field(default_factory=dict)  # READY key=value that must match


IMPLS = [
    Impl("wsnest", "wsnest", {"WSNEST_NO_EXTENSIONS": None, "WSNEST_BENCH_SRC": None}, {"core": "compiled"}),
    Impl("wsnest_pure", "wsnest", {"WSNEST_NO_EXTENSIONS": "1", "WSNEST_BENCH_SRC": None}, {"core": "pure"}),
    Impl("uvicorn", "uvicorn", {}),
    Impl("aiohttp", "aiohttp", {}),
]


# -- server processes ----------------------------------------------------------


def _pin_preexec(cpu: int | None):  # type: ignore[no-untyped-def]
    if cpu is None:
        return None

    def pin() -> None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})

    return pin


class ServerProc:
    """One server of ``http_servers.py`` in a subprocess pinned to a CPU."""

    def __init__(self, impl: Impl, cpu: int | None) -> None:
        self.impl = impl
        self.cpu = cpu
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.info: dict[str, str] = {}
        self._err: IO[str] | None = None

    def start(self) -> None:
        env = dict(os.environ)
        for k, v in self.impl.env.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        env["PYTHONUNBUFFERED"] = "1"
        self._err = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, str(SERVER_SCRIPT), self.impl.server, "--host", HOST, "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            preexec_fn=_pin_preexec(self.cpu),  # fine: this script starts no threads
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        import selectors

        proc = self.proc
        assert proc is not None and proc.stdout is not None
        deadline = time.monotonic() + timeout
        line = None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(0.2):
                    line = proc.stdout.readline().strip()
                    break
                if proc.poll() is not None:
                    break
        if not line or not line.startswith("READY "):
            raise RuntimeError(f"server {self.impl.label} did not become ready (got {line!r}):\n{self.stderr()}")
        parts = line.split()
        self.port = int(parts[1])
        self.info = dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        for k, v in self.impl.expect.items():
            if self.info.get(k) != v:
                raise RuntimeError(f"server {self.impl.label}: READY says {k}={self.info.get(k)!r}, expected {v!r}")

    def cpu_seconds(self) -> float:
        """utime + stime of the server process so far."""
        assert self.proc is not None
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def stderr(self, limit: int = 4000) -> str:
        if self._err is None:
            return ""
        self._err.flush()
        self._err.seek(0)
        return self._err.read()[-limit:]

    def stop(self, timeout: float = 5.0) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    print(f"warning: {self.impl.label} ignored SIGINT for {timeout}s; killing", file=sys.stderr)
                    proc.kill()
                    proc.wait()
            if proc.returncode not in (0, None, -signal.SIGINT):
                print(f"server {self.impl.label} exited {proc.returncode}:\n{self.stderr()}", file=sys.stderr)
        finally:
            if proc.stdout is not None:
                proc.stdout.close()
            if self._err is not None:
                self._err.close()
                self._err = None
            self.proc = None


# -- a tiny keep-alive client (checks and warm-up) -----------------------------


def _read_response(sock: socket.socket, buf: bytearray) -> tuple[int, dict[str, str], bytes]:
    """Read one response (Content-Length framed) from ``sock``; ``buf`` keeps leftovers."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("connection closed before a full response head")
        buf += chunk
    end = buf.index(b"\r\n\r\n")
    head = bytes(buf[:end]).decode("latin-1").split("\r\n")
    del buf[: end + 4]
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(buf) < length:
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("connection closed inside a response body")
        buf += chunk
    body = bytes(buf[:length])
    del buf[:length]
    return status, headers, body


def _request(path: str, port: int) -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode("ascii")


def check_server(server: ServerProc) -> None:
    """Two keep-alive requests per case on one connection; the bytes must match."""
    with socket.create_connection((HOST, server.port), timeout=5) as sock:
        buf = bytearray()
        for case, (path, body, ctype) in CASES.items():
            for _ in range(2):
                sock.sendall(_request(path, server.port))
                status, headers, got = _read_response(sock, buf)
                if status != 200 or got != body or headers.get("content-type") != ctype:
                    raise RuntimeError(
                        f"{server.impl.label} {case}: got status {status}, content-type "
                        f"{headers.get('content-type')!r}, {len(got)} B body"
                    )
                if headers.get("connection", "").lower() == "close":
                    raise RuntimeError(f"{server.impl.label} {case}: closes a keep-alive connection")


def warm_up(port: int, path: str, seconds: float, conns: int = 8) -> int:
    """Keep ``conns`` keep-alive connections busy (one request in flight each) for ``seconds``."""
    if seconds <= 0:
        return 0
    socks = [socket.create_connection((HOST, port), timeout=5) for _ in range(conns)]
    bufs = [bytearray() for _ in socks]
    req = _request(path, port)
    done = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for s in socks:
                s.sendall(req)
            for s, b in zip(socks, bufs, strict=True):
                _read_response(s, b)
                done += 1
    finally:
        for s in socks:
            s.close()
    return done


# -- wrk -------------------------------------------------------------------------


@dataclass
class Sample:
    rps: float
    requests: int
    server_cpu: float  # fraction of one core
    client_cpu: float
    server_us_per_req: float
    p99_ms: float
    errors: int


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def parse_wrk(out: str) -> tuple[float, int, float, int]:
    """(requests/s, requests, p99 ms, errors) from wrk's output."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s*(\d+) requests in", out, re.M)
    if rps is None or total is None:
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock_err = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock_err:
        errors += sum(int(g) for g in sock_err.groups())
    return float(rps.group(1)), int(total.group(1)), _ms(p99.group(1)) if p99 else float("nan"), errors


def run_cell(
    wrk: str, server: ServerProc, path: str, duration: int, conns: int, warmup: float, client_cpu: int | None
) -> Sample:
    warm_up(server.port, path, warmup)
    cmd = [wrk, "-t1", f"-c{conns}", f"-d{duration}s", "--latency", f"http://{HOST}:{server.port}{path}"]
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    s0 = server.cpu_seconds()
    t0 = time.perf_counter()
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration + 30, preexec_fn=_pin_preexec(client_cpu)
    )
    wall = time.perf_counter() - t0
    s1 = server.cpu_seconds()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"wrk failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    rps, total, p99, errors = parse_wrk(res.stdout)
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return Sample(
        rps=rps,
        requests=total,
        server_cpu=(s1 - s0) / wall,
        client_cpu=client / wall,
        server_us_per_req=(s1 - s0) * 1e6 / max(total, 1),
        p99_ms=p99,
        errors=errors,
    )


# -- machine noise probe ---------------------------------------------------------


def busy_fraction(cpu: int, seconds: float = 0.25) -> float:
    """CPU time a busy loop gets on ``cpu`` per wall second (1.0 = not shared)."""
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
        t0, c0 = time.perf_counter(), time.thread_time()
        while time.perf_counter() - t0 < seconds:
            pass
        return (time.thread_time() - c0) / (time.perf_counter() - t0)
    finally:
        os.sched_setaffinity(0, before)


# -- main --------------------------------------------------------------------------


#: RATIO name -> (case, server A, server B): rate(A) / rate(B).
_RATIO_KEYS: dict[str, tuple[str, str, str]] = {
    "http_small_wsnest_vs_uvicorn": ("small", "wsnest", "uvicorn"),
    "http_inline64k_wsnest_vs_uvicorn": ("inline64k", "wsnest", "uvicorn"),
    "http_small_wsnest_vs_aiohttp": ("small", "wsnest", "aiohttp"),
    "http_inline64k_wsnest_vs_aiohttp": ("inline64k", "wsnest", "aiohttp"),
    "http_small_compiled_vs_pure": ("small", "wsnest", "wsnest_pure"),
    "http_headers_wsnest_vs_uvicorn": ("headers", "wsnest", "uvicorn"),
    "http_headers_wsnest_vs_aiohttp": ("headers", "wsnest", "aiohttp"),
    "http_json_wsnest_vs_uvicorn": ("json", "wsnest", "uvicorn"),
    "http_json_wsnest_vs_aiohttp": ("json", "wsnest", "aiohttp"),
}


def _fmt_rate(v: float) -> str:
    return f"{v:,.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition x 2 s per cell")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=int, default=None, help="seconds per cell (default 3; 2 with --quick)")
    parser.add_argument("--warmup", type=float, default=0.5, help="warm-up seconds before each cell")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--servers", default=None, help="comma list of server labels (default: all)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma list of cases")
    parser.add_argument("--extra-src", default=None, help="also run wsnest from this src tree, as wsnest_extra")
    args = parser.parse_args(argv)
    reps = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (2 if args.quick else 3)
    if reps < 1 or duration < 1:
        parser.error("--repeat and --duration must be >= 1")
    cases = [c for c in args.cases.split(",") if c]
    for c in cases:
        if c not in CASES:
            parser.error(f"unknown case {c!r}")

    wrk = shutil.which("wrk")
    if wrk is None:
        print("error: wrk not found; install it with: apt-get install -y wrk", file=sys.stderr)
        return 2

    impls = list(IMPLS)
    if args.extra_src:
        src = str(Path(args.extra_src).resolve())
        impls.append(Impl("wsnest_extra", "wsnest", {"WSNEST_NO_EXTENSIONS": None, "WSNEST_BENCH_SRC": src}))
    if args.servers:
        wanted = args.servers.split(",")
        unknown = set(wanted) - {i.label for i in impls}
        if unknown:
            parser.error(f"unknown server(s) {sorted(unknown)}; known: {[i.label for i in impls]}")
        impls = [i for i in impls if i.label in wanted]

    cpus = os.sched_getaffinity(0)
    pinned = SERVER_CPU in cpus and CLIENT_CPU in cpus
    if pinned:
        os.sched_setaffinity(0, {CLIENT_CPU})
    else:
        print("warning: fewer than 2 usable CPUs; not pinning", file=sys.stderr)

    probe_before = {c: busy_fraction(c) for c in (SERVER_CPU, CLIENT_CPU)} if pinned else {}
    load_before = os.getloadavg()[0]
    t_start = time.monotonic()
    servers = [ServerProc(i, SERVER_CPU if pinned else None) for i in impls]
    samples: dict[tuple[str, str], list[Sample]] = {(c, i.label): [] for c in cases for i in impls}
    try:
        for s in servers:
            s.start()
        for s in servers:
            s.wait_ready()
            check_server(s)
        k = len(servers)
        for rep in range(reps):
            order = servers[rep % k :] + servers[: rep % k]
            for case in cases:
                path = CASES[case][0]
                for s in order:
                    sample = run_cell(
                        wrk, s, path, duration, args.connections, args.warmup, CLIENT_CPU if pinned else None
                    )
                    samples[(case, s.impl.label)].append(sample)
                    print(
                        f"# rep {rep + 1}/{reps} {case:10s} {s.impl.label:12s} {sample.rps:>10,.0f} req/s  "
                        f"server_cpu={sample.server_cpu:.2f} wrk_cpu={sample.client_cpu:.2f} "
                        f"server_us/req={sample.server_us_per_req:.1f} p99={sample.p99_ms:.2f}ms "
                        f"errors={sample.errors}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for s in servers:
            s.stop()
    elapsed = time.monotonic() - t_start
    probe_after = {c: busy_fraction(c) for c in (SERVER_CPU, CLIENT_CPU)} if pinned else {}
    load_after = os.getloadavg()[0]

    median_rps = {key: statistics.median(x.rps for x in v) for key, v in samples.items()}
    rows = []
    for case in cases:
        for i in impls:
            v = samples[(case, i.label)]
            rates = [x.rps for x in v]
            rows.append(
                [
                    case,
                    i.label,
                    _fmt_rate(median_rps[(case, i.label)]),
                    f"{_fmt_rate(min(rates))}-{_fmt_rate(max(rates))}",
                    f"{statistics.median(x.server_cpu for x in v):.2f}",
                    f"{statistics.median(x.client_cpu for x in v):.2f}",
                    f"{statistics.median(x.server_us_per_req for x in v):.1f}",
                    f"{statistics.median(x.p99_ms for x in v):.2f}",
                    str(sum(x.errors for x in v)),
                ]
            )

    info = {s.impl.label: " ".join(f"{k}={v}" for k, v in s.info.items()) for s in servers}
    print("# wsnest HTTP keep-alive benchmark\n")
    print(f"- machine: {machine_summary()}")
    print(f"- load: wrk -t1 -c{args.connections} --latency, keep-alive, no pipelining; {duration} s per cell")
    print(f"- {reps} repetition(s), {args.warmup} s warm-up per cell; {elapsed:.0f} s in all")
    if pinned:
        print(f"- server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}")
        probe = ", ".join(
            f"CPU {c}: {probe_before[c]:.2f} before, {probe_after[c]:.2f} after" for c in (SERVER_CPU, CLIENT_CPU)
        )
        print(f"- busy-loop CPU fraction (1.00 = core not shared): {probe}")
    print(f"- load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    for label, text in info.items():
        print(f"- {label}: {text}")
    print()
    header = ["case", "server", "req/s", "min-max", "server CPU", "wrk CPU", "server us/req", "p99 ms", "errors"]
    print(markdown_table(header, rows))
    print()

    def ratio(case: str, a: str, b: str) -> float | None:
        if (case, a) not in median_rps or (case, b) not in median_rps or median_rps[(case, b)] == 0:
            return None
        return median_rps[(case, a)] / median_rps[(case, b)]

    ratio_keys = dict(_RATIO_KEYS)
    if args.extra_src:
        for c in cases:
            ratio_keys[f"http_{c}_extra_vs_wsnest"] = (c, "wsnest_extra", "wsnest")
    ratios = [(name, ratio(*key)) for name, key in ratio_keys.items()]
    for name, value in ratios:
        if value is not None:
            print(f"RATIO {name} {value:.2f}")

    # The same comparisons per server CPU second (1 / median us per request):
    # on a machine shared with other work the server gets less than a core and
    # the rates drop, but its CPU cost per request moves far less.
    us = {key: statistics.median(x.server_us_per_req for x in v) for key, v in samples.items()}
    print()
    for name, _ in ratios:
        case, a, b = ratio_keys[name]
        if (case, a) in us and (case, b) in us and us[(case, a)] > 0:
            print(f"CPURATIO {name} {us[(case, b)] / us[(case, a)]:.2f}")

    total_errors = sum(x.errors for v in samples.values() for x in v)
    if total_errors:
        print(f"\nWARNING: wrk counted {total_errors} errors (non-2xx or socket errors); see the errors column")
    if pinned and min(*probe_before.values(), *probe_after.values()) < 0.9:
        print("\nWARNING: a CPU was shared with other work (busy loop got < 0.90 of a core); rates are noisy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
