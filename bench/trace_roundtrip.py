"""Where a 64 B WebSocket round trip's server time goes, per round trip:
system calls (``strace -c``), and server CPU time and context switches
(``perf stat -e task-clock,context-switches``; a VM without hardware
counters has no instruction counts), for wsnest and the servers it is
compared with.

System calls are counts, not times: they hold on a noisy machine. One connection does
``--count`` ping-pongs (a blocking client in this process); the tracer is
attached to the server process around exactly those round trips.

    python bench/trace_roundtrip.py                       # wsnest, picows, aiohttp
    python bench/trace_roundtrip.py --baseline /tmp/prev  # adds wsnest-base
    python bench/trace_roundtrip.py --servers wsnest --count 20000

Needs ``strace`` and ``perf`` (Debian: ``strace``, ``linux-perf``); a
missing tool leaves its columns empty. Prints one table and ``TRACE`` lines.

``--callgrind`` adds ``kinstr``: thousands of user-space instructions per
round trip, counted by ``valgrind --tool=callgrind`` (the server runs under
it in a second process: counters zeroed after a warm-up, dumped after
``--callgrind-count`` round trips). Counts do not move with the machine's
load, unlike the CPU column; the kernel's share (the system calls) is not
in them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import servers  # noqa: E402
from wire import OP_BINARY, client_frame, read_head, upgrade_request  # noqa: E402

SRC = str(HERE.parent / "src")


def _connect(port: int, raw: bool) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if raw:  # a byte echo (trio-floor, uvloop-floor, trio-raw): no handshake
        return sock, b""
    sock.sendall(upgrade_request(servers.WS_PATH))
    head, rest = read_head(sock)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"no 101: {head[:100]!r}")
    return sock, rest


#: Messages sent at once per round trip (``--window``): 1 is ping-pong.
WINDOW = 1


def _ping_pong(sock: socket.socket, count: int, raw: bool = False) -> None:
    frame = client_frame(OP_BINARY, b"x" * 64) * WINDOW
    # A byte echo sends the masked frames back; a WebSocket server unmasked ones.
    expected = len(frame) if raw else (2 + 64) * WINDOW
    for _ in range(count):
        sock.sendall(frame)
        got = 0
        while got < expected:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed")
            got += len(chunk)


def _attach(cmd: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(0.5)  # the tracer is attached (nothing to wait on otherwise)
    return proc


def _detach(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return err


def _syscalls(report: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for line in report.splitlines():
        parts = line.split()
        # % time, seconds, usecs/call, calls, [errors,] syscall
        if len(parts) >= 5 and re.fullmatch(r"[\d.]+", parts[0]) and parts[-1] != "total":
            counts[parts[-1]] = int(parts[3])
    return counts


def _perf(report: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in report.splitlines():
        m = re.match(r"\s*([\d,.]+)\s+(?:msec\s+)?(task-clock|context-switches)", line)
        if m:
            found[m.group(2)] = float(m.group(1).replace(",", ""))
    return found


def measure(name: str, env: dict[str, str], count: int) -> dict[str, float]:
    proc = servers.ServerProcess(name, env=env).start()
    try:
        raw = servers.SERVERS[name].protocol == "raw"
        sock, _ = _connect(proc.port, raw)
        _ping_pong(sock, 2000, raw)  # warm up
        result: dict[str, float] = {}
        if shutil.which("strace"):
            tracer = _attach(["strace", "-c", "-f", "-p", str(proc.pid)])
            _ping_pong(sock, count, raw)
            calls = _syscalls(_detach(tracer))
            result["syscalls"] = sum(calls.values()) / count
            for key in ("epoll_wait", "epoll_ctl", "recvfrom", "sendto", "write", "read"):
                result[key] = calls.get(key, 0) / count
        if shutil.which("perf"):
            tracer = _attach(["perf", "stat", "-e", "task-clock,context-switches", "-p", str(proc.pid)])
            _ping_pong(sock, count, raw)
            counts = _perf(_detach(tracer))
            # task-clock is in ms over the whole attach (the round trips plus
            # the idle attach/detach time, when a server uses no CPU).
            result["cpu_us"] = counts.get("task-clock", 0) * 1000 / count
            result["ctx_switches"] = counts.get("context-switches", 0) / count
        sock.close()
        return result
    finally:
        proc.stop()


def callgrind(name: str, env: dict[str, str], count: int) -> float:
    """Thousands of user-space instructions per round trip (see the module doc)."""
    out_dir = Path(tempfile.mkdtemp(prefix="wsnest-callgrind-"))
    prefix = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out_dir}/out")
    proc = servers.ServerProcess(name, env=env, prefix=prefix, start_timeout=180.0, stop_timeout=60.0).start()
    try:
        raw = servers.SERVERS[name].protocol == "raw"
        sock, _ = _connect(proc.port, raw)
        _ping_pong(sock, 500, raw)  # warm up (imports, caches, the first allocations)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        _ping_pong(sock, count, raw)
        subprocess.run(["callgrind_control", "--dump=measured", str(proc.pid)], check=True, capture_output=True)
        sock.close()
        dumps = [p for p in out_dir.iterdir() if p.name != "out"]
        text = max(dumps, key=lambda p: p.stat().st_mtime).read_text(encoding="utf-8", errors="replace")
        summary = re.search(r"^summary: (\d+)", text, re.MULTILINE)
        if summary is None:
            raise RuntimeError(f"no summary line in the callgrind dump of {name}")
        return int(summary.group(1)) / count / 1000
    finally:
        proc.stop()
        shutil.rmtree(out_dir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default="wsnest,picows,aiohttp")
    parser.add_argument("--count", type=int, default=10000, help="round trips traced per tool")
    parser.add_argument("--baseline", help="a checkout whose src/ is added as wsnest-base")
    parser.add_argument("--callgrind", action="store_true", help="add kinstr: instructions per round trip (valgrind)")
    parser.add_argument("--callgrind-count", type=int, default=2000, help="round trips counted under callgrind")
    parser.add_argument(
        "--window", type=int, default=1, help="64 B messages sent together per round trip (default 1: ping-pong)"
    )
    args = parser.parse_args()
    global WINDOW
    WINDOW = args.window
    columns: list[tuple[str, str, dict[str, str]]] = []
    base_env = dict(os.environ)
    base_env.pop("WSNEST_NO_EXTENSIONS", None)
    for label in args.servers.split(","):
        env = dict(base_env)
        name = label
        if label.startswith("wsnest"):
            env["PYTHONPATH"] = SRC
            if label == "wsnest-portable":
                name, env["WSNEST_NO_POLLER"] = "wsnest", "1"
        columns.append((label, name, env))
    if args.baseline:
        columns.append(("wsnest-base", "wsnest", {**base_env, "PYTHONPATH": str(Path(args.baseline) / "src")}))
    keys = ["syscalls", "epoll_wait", "epoll_ctl", "recvfrom", "sendto", "cpu_us", "ctx_switches"]
    if args.callgrind:
        keys.append("kinstr")
    rows = []
    for label, name, env in columns:
        print(f"tracing {label} ({args.count} round trips per tool) ...", flush=True)
        result = measure(name, env, args.count)
        if args.callgrind:
            result["kinstr"] = callgrind(name, env, args.callgrind_count)
        rows.append((label, result))
    print()
    print("| server | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for label, result in rows:
        cells = [f"{result[k]:.2f}" if k in result else "-" for k in keys]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if WINDOW > 1:
        print(f"\n(a round trip is {WINDOW} messages sent together and their {WINDOW} echoes)")
    print("\n(per round trip; cpu_us: server CPU time, user + kernel, in microseconds; kinstr: user-space")
    print("instructions, thousands)")
    for label, result in rows:
        for key, value in result.items():
            print(f"TRACE {label} {key} {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
