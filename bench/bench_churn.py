"""Server CPU per short-lived connection: what a slowloris flood or a client
that opens a connection per request costs the server.

    python bench/bench_churn.py                        # this checkout
    python bench/bench_churn.py --baseline /tmp/prev   # side by side with another checkout
    python bench/bench_churn.py --floor                # and a bare trio server (trio's own share)

Cases (K connections kept open at once, each replaced as it ends):

- ``loris``: connect, send one byte of a request head, get dropped by
  ``handshake_timeout`` (0.1 s here): accept, one inline read, the reaper's
  drop, close. The soak's slowloris phase is this at a slower pace.
- ``get``: connect, one ``GET`` with ``Connection: close``, read to EOF.

The server (pinned to CPU 0) is a subprocess running the given checkout's
``src/``; the client (this process, CPU 1) is plain non-blocking sockets.
Reported: connections per second and the server's CPU time per connection
(from /proc), the median of ``--repeat`` interleaved windows; with
``--baseline``, the ratio baseline/this (above 1: this checkout is cheaper).
With ``--floor``, two bare servers beside it, doing the least per
connection (accept, a timeout, one wait and read, the close; an answer once
a head ends, no parsing): ``trio-floor`` (a task per connection,
``move_on_after``, ``wait_readable``) and ``uvloop-floor`` (an
``asyncio.Protocol`` and a ``call_later``): trio's own price per connection,
and the kernel's with a loop in C.
Linux only (CPU affinity, /proc).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _util import markdown_table, raise_fd_limit, set_affinity  # noqa: E402

SERVER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import trio
import wsnest

def echo(ws, data):
    ws.send(data)

server = wsnest.http_server(
    "http://127.0.0.1:0",
    [wsnest.handler_ws("/echo", echo), wsnest.handler("/", lambda req: {"status": 200, "body": "hello"})],
    handshake_timeout=float(sys.argv[2]),
)

async def main():
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        print(server.url, flush=True)

trio.run(main)
"""

# ``--floor``: the least a trio server does per connection (accept, a task,
# a timeout, a wait and a read, the close), with no HTTP parsing at all: it
# answers once it sees the end of a head. What wsnest spends beyond it is
# its own.
FLOOR_SERVER = r"""
import socket, sys
import trio

TIMEOUT = float(sys.argv[2])
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"

async def serve(sock):
    with sock:
        buf = bytearray(65536)
        head = b""
        with trio.move_on_after(TIMEOUT):
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
                head += buf[:n]
                if b"\r\n\r\n" in head:
                    sock.send(RESPONSE)
                    return

async def main():
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    listener.setblocking(False)
    print("http://127.0.0.1:%d" % listener.getsockname()[1], flush=True)
    async with trio.open_nursery() as nursery:
        while True:
            await trio.lowlevel.wait_readable(listener)
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            nursery.start_soon(serve, sock)

trio.run(main)
"""

# The same on uvloop (an asyncio.Protocol, a call_later timeout): what the
# kernel's accept and close cost with a loop written in C around them.
UVLOOP_FLOOR_SERVER = r"""
import asyncio, sys
import uvloop

TIMEOUT = float(sys.argv[2])
RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"

class Conn(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.head = b""
        self.timer = asyncio.get_running_loop().call_later(TIMEOUT, transport.close)

    def data_received(self, data):
        self.head += data
        if b"\r\n\r\n" in self.head:
            self.transport.write(RESPONSE)
            self.transport.close()

    def connection_lost(self, exc):
        self.timer.cancel()

async def main():
    server = await asyncio.get_running_loop().create_server(Conn, "127.0.0.1", 0, backlog=1024)
    print("http://127.0.0.1:%d" % server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

uvloop.run(main())
"""

PAYLOADS = {
    "loris": b"G",
    "get": b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n",
}


class Server:
    """One server subprocess on CPU 0."""

    def __init__(self, src: Path | str, handshake_timeout: float) -> None:
        script = {"trio-floor": FLOOR_SERVER, "uvloop-floor": UVLOOP_FLOOR_SERVER}.get(str(src), SERVER)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", script, str(src), str(handshake_timeout)], stdout=subprocess.PIPE, text=True
        )
        set_affinity(self.proc.pid, 0)
        assert self.proc.stdout is not None
        url = self.proc.stdout.readline().strip()
        if not url:
            raise RuntimeError(f"server from {src} did not start")
        self.port = int(url.rsplit(":", 1)[1].split("/")[0])

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def churn(server: Server, payload: bytes, conns: int, seconds: float) -> dict[str, float]:
    """Keep ``conns`` connections going for ``seconds`` (after a 1 s warm-up)."""
    sel = selectors.DefaultSelector()
    ended = 0

    def open_one() -> None:
        s = socket.socket()
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            s.connect(("127.0.0.1", server.port))
        sel.register(s, selectors.EVENT_WRITE, True)

    def run(until: float) -> None:
        nonlocal ended
        while time.monotonic() < until:
            for key, _ in sel.select(0.2):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                if key.data:  # connected: send, then wait for the end
                    with contextlib.suppress(OSError):
                        s.send(payload)
                    sel.modify(s, selectors.EVENT_READ, False)
                    continue
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(s)
                    s.close()
                    ended += 1
                    open_one()

    for _ in range(conns):
        open_one()
    run(time.monotonic() + 1.0)
    n0, c0, t0 = ended, server.cpu(), time.monotonic()
    run(t0 + seconds)
    n1, c1, t1 = ended, server.cpu(), time.monotonic()
    for key in list(sel.get_map().values()):
        key.fileobj.close()  # type: ignore[union-attr]
    sel.close()
    n = max(1, n1 - n0)
    return {"rate": n / (t1 - t0), "us": (c1 - c0) / n * 1e6, "cpu": (c1 - c0) / (t1 - t0)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src", type=Path, default=HERE.parent / "src", help="the checkout's src/ to measure")
    p.add_argument("--baseline", type=Path, help="another checkout (its src/ is measured side by side)")
    p.add_argument("--cases", default="loris,get")
    p.add_argument("--conns", type=int, default=200, help="connections kept going at once")
    p.add_argument("--seconds", type=float, default=3.0, help="per window")
    p.add_argument("--repeat", type=int, default=3, help="interleaved windows per case and checkout")
    p.add_argument("--handshake-timeout", type=float, default=0.1)
    p.add_argument(
        "--floor",
        action="store_true",
        help="add 'trio-floor' and 'uvloop-floor': bare servers on each loop (see FLOOR_SERVER)",
    )
    a = p.parse_args()
    raise_fd_limit()
    set_affinity(os.getpid(), 1)
    sources: dict[str, Path | str] = {"this": a.src}
    if a.baseline is not None:
        sources["baseline"] = a.baseline / "src"
    if a.floor:  # not a checkout: the name picks the script
        sources["trio-floor"] = "trio-floor"
        sources["uvloop-floor"] = "uvloop-floor"
    cases = a.cases.split(",")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for _ in range(a.repeat):
        for case in cases:
            for name, src in sources.items():
                server = Server(src, a.handshake_timeout)
                try:
                    results.setdefault((case, name), []).append(churn(server, PAYLOADS[case], a.conns, a.seconds))
                finally:
                    server.close()
    rows = []
    for case in cases:
        row = [case]
        us = {}
        for name in sources:
            runs = results[(case, name)]
            us[name] = statistics.median(r["us"] for r in runs)
            rate = statistics.median(r["rate"] for r in runs)
            row += [f"{rate:,.0f}", f"{us[name]:.1f}"]
        if "baseline" in us:
            row.append(f"{us['baseline'] / us['this']:.2f}x")
        if "trio-floor" in us:
            row.append(f"{us['this'] - us['trio-floor']:.1f}")
        rows.append(row)
    header = ["case"]
    for name in sources:  # the order the rows were filled in
        header += [f"{name} conns/s", f"{name} server us/conn"]
    if a.baseline is not None:
        header.append("baseline/this CPU")
    if a.floor:
        header.append("this - trio-floor (us/conn)")
    print(markdown_table(header, rows))
    print()
    for case in cases:
        rate = statistics.median(r["rate"] for r in results[(case, "this")])
        us = statistics.median(r["us"] for r in results[(case, "this")])
        print(f"CHURN {case} {rate:.0f} conns/s {us:.1f} us/conn")
        if a.baseline is not None:
            base = statistics.median(r["us"] for r in results[(case, "baseline")])
            print(f"CPURATIO churn_{case}_this_vs_baseline {base / us:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
