"""Client children over plain TCP: idle holders, slowloris, echo load
(picows, ``bench/loadclient.py``), broadcast readers (slow and fast), flood
readers, a trickle reader, processes to SIGKILL, fragment bombs."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import statistics
import struct
import sys
import time
from typing import Any

from _util import raise_fd_limit
from soaklib.common import BENCH, HOST, emit, pct, stdin_lines
from wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_TEXT,
    FrameBuffer,
    client_frame,
    close_frame,
    read_head,
    upgrade_request,
)

# -- child: idle holders -----------------------------------------------------------------


class IdleProtocol(asyncio.Protocol):
    """Holds one WebSocket open; answers the server's close frame."""

    def __init__(self, owner: IdleHolder) -> None:
        self.owner = owner
        self.transport: Any = None
        self.state = "connecting"
        self.buf = bytearray()
        self.upgraded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.owner.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.state == "connecting":
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = self.buf.startswith(b"HTTP/1.1 101 ")
            del self.buf[: end + 4]
            self.state = "open" if ok else "refused"
            if not self.upgraded.done():
                self.upgraded.set_result(ok)
            if not ok:
                self.transport.close()
                return
        if self.state == "open" and len(self.buf) >= 4 and self.buf[0] == 0x88:
            code = struct.unpack("!H", self.buf[2:4])[0] if self.buf[1] >= 2 else 1005
            self.owner.close_codes[code] = self.owner.close_codes.get(code, 0) + 1
            self.state = "closed_by_server"
            self.transport.write(close_frame(code))
        elif self.state == "open" and self.buf:
            self.owner.unexpected += 1
            self.buf.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == "open":
            self.state = "lost"
        if not self.upgraded.done():
            self.upgraded.set_result(False)


class IdleHolder:
    def __init__(self, path: str) -> None:
        self.request = upgrade_request(path)
        self.conns: list[IdleProtocol] = []
        self.close_codes: dict[int, int] = {}
        self.unexpected = 0
        self.errors = 0

    def status(self) -> dict[str, Any]:
        states: dict[str, int] = {}
        for c in self.conns:
            states[c.state] = states.get(c.state, 0) + 1
        return {
            "states": states,
            "close_codes": self.close_codes,
            "unexpected_frames": self.unexpected,
            "errors": self.errors,
        }


async def idle_main(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    holder = IdleHolder(cfg["path"])
    sem = asyncio.Semaphore(cfg.get("concurrency", 200))
    t0 = time.monotonic()

    async def one() -> None:
        async with sem:
            for _attempt in range(5):
                try:
                    _, proto = await loop.create_connection(lambda: IdleProtocol(holder), HOST, cfg["port"])
                except OSError:
                    holder.errors += 1
                    await asyncio.sleep(0.05)
                    continue
                holder.conns.append(proto)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(proto.upgraded), 30)
                return

    await asyncio.gather(*(one() for _ in range(cfg["count"])))
    emit("ready", seconds=round(time.monotonic() - t0, 3), **holder.status())
    commands = await stdin_lines()
    while True:
        cmd = await commands.get()
        if cmd == "status":
            emit("status", **holder.status())
        elif cmd == "exit":
            for c in holder.conns:
                if c.transport is not None:
                    c.transport.close()
            await asyncio.sleep(0.1)
            emit("done", **holder.status())
            return


# -- child: slowloris --------------------------------------------------------------------
#
# Driven by timer callbacks, not a task per connection waiting on a future
# per byte: this process shares its CPU with the echo clients whose rate the
# soak measures, so the attacker's own cost must stay small (with a task and
# ``wait_for`` per byte it took 15 % of that CPU at 500 reconnections a
# second, 10 % so). The attack is the same: how many connections, how fast they
# dribble, and that each is replaced as soon as the server drops it.


class SlowRun:
    """What every slot shares: the settings and the counts."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = cfg["port"]
        self.deadline = time.monotonic() + cfg["duration"]
        self.drop_wait = cfg["drop_wait"]
        # A whole head would take minutes at this pace; it is never finished.
        self.head = upgrade_request("/echo")[:-2] + b"X-Padding: " + b"p" * 200 + b"\r\n\r\n"
        self.drops: list[float] = []
        self.bytes_before_drop: list[int] = []
        self.replies = self.errors = self.attempts = self.still_open = self.completed = 0
        self.slots_left = cfg["count"]
        self.finished = self.loop.create_future()
        self.connecting: set[asyncio.Task[None]] = set()  # referenced until done

    def slot_done(self) -> None:
        self.slots_left -= 1
        if self.slots_left == 0 and not self.finished.done():
            self.finished.set_result(None)


class SlowProtocol(asyncio.Protocol):
    def __init__(self, slot: SlowSlot) -> None:
        self.slot = slot
        self.transport: Any = None
        self.got = 0
        self.closed_at: float | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got += len(data)

    def eof_received(self) -> bool:
        self._ended()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._ended()

    def _ended(self) -> None:
        if self.closed_at is None:
            self.closed_at = time.monotonic()  # the drop, timed as it happens
            self.slot.dropped(self)


class SlowSlot:
    """One connection at a time: connect, dribble the head one byte every
    0.5-1 s until the server drops it (or the run's time is up: then wait
    up to ``drop_wait`` from the connect for the drop), then the next."""

    def __init__(self, run: SlowRun) -> None:
        self.run = run
        self.proto: SlowProtocol | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.t0 = 0.0
        self.sent = 0

    def start(self) -> None:
        if time.monotonic() >= self.run.deadline:
            self.run.slot_done()
            return
        task = self.run.loop.create_task(self._connect())
        self.run.connecting.add(task)
        task.add_done_callback(self.run.connecting.discard)

    async def _connect(self) -> None:
        run = self.run
        run.attempts += 1
        # Timed from before the connect: the server's handshake_timeout
        # starts at its accept, later, so a drop is never measured early.
        t0 = time.monotonic()
        try:
            _, proto = await run.loop.create_connection(lambda: SlowProtocol(self), HOST, run.port)
        except OSError:
            run.errors += 1
            run.loop.call_later(0.1, self.start)
            return
        self.proto, self.t0, self.sent = proto, t0, 0
        if proto.closed_at is None:
            self._tick()
        else:  # dropped before this slot knew it
            self.dropped(proto)

    def _tick(self) -> None:
        run, proto = self.run, self.proto
        assert proto is not None
        if self.sent >= len(run.head):
            run.completed += 1
            self._stop_dribbling()
            return
        proto.transport.write(run.head[self.sent : self.sent + 1])
        self.sent += 1
        left = run.deadline - time.monotonic()
        if left <= 0:
            self._stop_dribbling()
        else:
            self.timer = run.loop.call_later(min(left, random.uniform(0.5, 1.0)), self._tick)

    def _stop_dribbling(self) -> None:
        # The server must still drop it once handshake_timeout (counted from
        # the connect) runs out: wait for that, with room to spare.
        left = self.t0 + self.run.drop_wait - time.monotonic()
        self.timer = self.run.loop.call_later(max(0.0, left), self._give_up)

    def _give_up(self) -> None:
        proto = self.proto
        assert proto is not None
        if proto.closed_at is None:
            self.run.still_open += 1
            self._next()

    def dropped(self, proto: SlowProtocol) -> None:
        run = self.run
        if proto is not self.proto:
            return  # given up on already
        assert proto.closed_at is not None
        run.drops.append(proto.closed_at - self.t0)
        run.bytes_before_drop.append(self.sent)
        if proto.got:
            run.replies += 1
        self._next()

    def _next(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        proto, self.proto = self.proto, None
        assert proto is not None
        proto.transport.close()
        self.start()


async def slowloris_main(cfg: dict[str, Any]) -> None:
    run = SlowRun(cfg)
    # Stagger the start over one handshake_timeout so that the drops (and the
    # reconnections) are spread evenly, not one burst per timeout.
    for _ in range(cfg["count"]):
        run.loop.call_later(random.uniform(0, cfg.get("stagger", 1.0)), SlowSlot(run).start)
    await run.finished
    drops = run.drops
    emit(
        "result",
        attempts=run.attempts,
        dropped=len(drops),
        never_dropped=run.still_open,
        completed_heads=run.completed,
        replies=run.replies,
        connect_errors=run.errors,
        drop_min=round(min(drops), 3) if drops else None,
        drop_median=round(statistics.median(drops), 3) if drops else None,
        drop_p99=round(pct(drops, 0.99) or 0, 3) if drops else None,
        drop_max=round(max(drops), 3) if drops else None,
        max_bytes_before_drop=max(run.bytes_before_drop) if run.bytes_before_drop else None,
    )


# -- child: echo load (picows, bench/loadclient.py) ------------------------------------------


def child_echo(cfg: dict[str, Any]) -> int:
    import dataclasses

    sys.path.insert(0, str(BENCH))
    import loadclient

    scenario = dataclasses.replace(
        loadclient.SCENARIOS["pingpong64x50"], name=f"pingpong64x{cfg['connections']}", connections=cfg["connections"]
    )
    url = f"ws://{HOST}:{cfg['port']}/echo"
    result = loadclient.run(
        loadclient.run_scenario(url, scenario, cfg["duration"], cfg.get("warmup", 1.0), cfg.get("server_pid"))
    )
    emit("result", **result)
    return 0


# -- child: broadcast receivers (slow and fast) ---------------------------------------------


class ReaderProtocol(asyncio.Protocol):
    """A WebSocket client that parses every server frame (fast readers,
    flood readers); ``on_frame`` sees data frames, close is answered."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.transport: Any = None
        self.upgraded = False
        self.head = bytearray()
        self.frames = FrameBuffer()
        self.close_code: int | None = None
        self.done = asyncio.get_running_loop().create_future()
        self.ready = asyncio.get_running_loop().create_future()
        self.error: str | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(upgrade_request(self.path))

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.head.startswith(b"HTTP/1.1 101 "):
                self.error = "upgrade refused"
                self.transport.close()
                return
            self.upgraded = True
            data = bytes(self.head[end + 4 :])
            self.head.clear()
            if not self.ready.done():
                self.ready.set_result(None)
        try:
            frames = self.frames.feed(data)
        except ValueError as exc:
            self.error = str(exc)
            self.transport.abort()
            return
        for fin, op, payload in frames:
            if op == OP_CLOSE:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.transport.write(close_frame(self.close_code))
            elif op in (OP_TEXT, OP_BINARY):
                if not fin:
                    self.error = "fragmented server message"
                self.on_frame(op, payload)

    def on_frame(self, op: int, payload: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)
        if not self.ready.done():
            self.ready.set_result(None)


class SeqReader(ReaderProtocol):
    """Checks that sequence-numbered messages arrive complete and in order."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.ws_id: int | None = None
        self.received = 0
        self.next_seq = 0
        self.gaps = 0
        self.out_of_order = 0

    def on_frame(self, op: int, payload: bytes) -> None:
        if op == OP_TEXT and payload.startswith(b"id:"):
            self.ws_id = int(payload[3:])
            return
        seq = struct.unpack("!I", payload[:4])[0]
        if seq > self.next_seq:
            self.gaps += seq - self.next_seq
        elif seq < self.next_seq:
            self.out_of_order += 1
        self.next_seq = seq + 1
        self.received += 1

    def report(self) -> dict[str, Any]:
        return {
            "id": self.ws_id,
            "received": self.received,
            "next_seq": self.next_seq,
            "gaps": self.gaps,
            "out_of_order": self.out_of_order,
            "close_code": self.close_code,
            "error": self.error,
        }


class SilentProtocol(asyncio.Protocol):
    """A slow reader: reads the 101, then never reads again."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.head = bytearray()
        self.ready = asyncio.get_running_loop().create_future()
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(upgrade_request("/bcast"))

    def data_received(self, data: bytes) -> None:
        self.head += data
        if b"\r\n\r\n" in self.head and not self.ready.done():
            self.ready.set_result(self.head.startswith(b"HTTP/1.1 101 "))
            self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.ready.done():
            self.ready.set_result(False)


async def bcast_main(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    slow: list[SilentProtocol] = []
    for _ in range(cfg["slow"]):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, (HOST, cfg["port"]))
        _, proto = await loop.create_connection(SilentProtocol, sock=sock)
        slow.append(proto)
    fast: list[SeqReader] = []
    for _ in range(cfg["fast"]):
        _, reader = await loop.create_connection(lambda: SeqReader("/bcast"), HOST, cfg["port"])
        fast.append(reader)
    ok_slow = sum([1 for s in await asyncio.gather(*(p.ready for p in slow)) if s])
    await asyncio.gather(*(f.ready for f in fast))
    emit("ready", slow=ok_slow, fast=sum(1 for f in fast if f.upgraded))
    commands = await stdin_lines()
    while True:
        cmd = await commands.get()
        if cmd == "report":
            emit("report", fast=[f.report() for f in fast], slow_lost=sum(1 for s in slow if s.lost))
        elif cmd == "exit":
            for s in slow:
                # RST: SO_LINGER 0 (the unread data would force one anyway).
                sock = s.transport.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.transport.abort()
            for f in fast:
                f.transport.write(close_frame(1000))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(f.done for f in fast)), 10)
            emit("done", fast=[f.report() for f in fast])
            return


# -- child: flood readers (shutdown with frames in flight) ----------------------------------


async def flood_main(cfg: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    readers: list[SeqReader] = []
    for _ in range(cfg["count"]):
        _, r = await loop.create_connection(lambda: SeqReader("/flood"), HOST, cfg["port"])
        readers.append(r)
    await asyncio.gather(*(r.ready for r in readers))
    # Wait for the "id:N" message of every reader.
    for _ in range(500):
        if all(r.ws_id is not None for r in readers):
            break
        await asyncio.sleep(0.01)
    emit("ready", ids=[r.ws_id for r in readers])
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(r.done for r in readers)), cfg.get("timeout", 60))
    emit("result", readers=[r.report() for r in readers])


# -- child: a slow but steady reader at shutdown ---------------------------------------------


def child_trickle(cfg: dict[str, Any]) -> int:
    """One reader with a tiny receive buffer that reads ``rate`` bytes/s,
    whatever happens. It checks that the byte stream it gets is a clean
    prefix of what was queued: every complete frame is a queued frame (in
    order) or the close frame, and whatever is left at EOF is the start of
    a queued frame. A close frame written into the middle of a frame (a
    torn frame) breaks that."""
    size = cfg["size"]
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((HOST, cfg["port"]))
    s.sendall(upgrade_request("/trickle"))
    _, rest = read_head(s)
    fb = FrameBuffer()
    pending = fb.feed(rest)
    while not pending:
        chunk = s.recv(4096)
        if not chunk:
            raise ConnectionError("trickle: closed before the id message")
        pending = fb.feed(chunk)
    ws_id = int(pending.pop(0)[2][3:])
    emit("ready", id=ws_id)
    received = 0
    close_code = None
    problem = None
    total = 0
    t0 = time.monotonic()

    def valid_data(payload: bytes, seq: int) -> bool:
        return len(payload) == size and payload[:4] == struct.pack("!I", seq) and payload[4:] == b"\xcd" * (size - 4)

    while True:
        try:
            chunk = s.recv(8192)
        except OSError as exc:
            problem = problem or f"recv failed: {exc}"
            break
        if not chunk:
            break
        total += len(chunk)
        try:
            frames = fb.feed(chunk)
        except ValueError as exc:
            problem = problem or f"{exc} after {received} frames"
            break
        for fin, op, payload in frames:
            if problem:
                break
            if op == OP_CLOSE:
                close_code = struct.unpack("!H", payload[:2])[0]
                with contextlib.suppress(OSError):
                    s.sendall(close_frame(close_code))
            elif close_code is not None:
                problem = "data after the close frame"
            elif op != OP_BINARY or not fin or not valid_data(payload, received):
                problem = f"frame {received} is not the frame queued: {payload[:12]!r}...{payload[-28:]!r}"
            else:
                received += 1
        if problem:
            break
        # Pace the reads: `rate` bytes per second.
        delay = t0 + total / cfg["rate"] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    tail = bytes(fb.buf[fb.pos :])
    if problem is None and tail:
        # Cut mid-frame: fine if it is the start of the next queued frame.
        expected = bytes([0x82]) + (bytes([size]) if size < 126 else struct.pack("!BH", 126, size))
        expected += struct.pack("!I", received) + b"\xcd" * (size - 4)
        if close_code is not None or not expected.startswith(tail):
            problem = (
                f"stream ends with {len(tail)} bytes that are not the start of frame {received}: ...{tail[-30:]!r}"
            )
    emit("result", id=ws_id, received=received, close_code=close_code, problem=problem, bytes=total)
    s.close()
    return 0


# -- child: processes that get SIGKILLed mid-frame / mid-handshake ---------------------------


def child_killme(cfg: dict[str, Any]) -> int:
    raise_fd_limit()
    socks = []
    request = upgrade_request("/echo")
    for i in range(cfg["count"]):
        s = socket.create_connection((HOST, cfg["port"]))
        socks.append(s)
        if cfg["mode"] == "handshake":
            s.sendall(request[: 5 + i % (len(request) - 6)])
        else:
            s.sendall(request)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = s.recv(4096)
                if not chunk:
                    break
                head += chunk
            # Half a frame: the header says 1000 bytes, 100 follow.
            s.sendall(client_frame(OP_BINARY, b"k" * 100, length=1000))
    emit("ready", count=len(socks))
    time.sleep(3600)  # the parent SIGKILLs us here
    return 0


# -- child: fragment and size bombs -----------------------------------------------------------


async def fragments_main(cfg: dict[str, Any]) -> None:
    """``count`` connections at once send one message of ``fragments``
    one-byte frames to ``path``; each reports what came back."""
    n = cfg["fragments"]
    middle = client_frame(OP_CONT, b"b", fin=False) * (n - 2)
    blob = client_frame(OP_BINARY, b"a", fin=False) + middle + client_frame(OP_CONT, b"c")
    expected = b"a" + b"b" * (n - 2) + b"c"
    loop = asyncio.get_running_loop()

    class FragClient(ReaderProtocol):
        def __init__(self) -> None:
            super().__init__(cfg["path"])
            self.echo: bytes | None = None
            self.t_close: float | None = None

        def on_frame(self, op: int, payload: bytes) -> None:
            self.echo = payload
            self.transport.write(close_frame(1000))

        def data_received(self, data: bytes) -> None:
            had = self.close_code
            super().data_received(data)
            if had is None and self.close_code is not None:
                self.t_close = time.monotonic()

    clients = []
    for _ in range(cfg["count"]):
        _, c = await loop.create_connection(FragClient, HOST, cfg["port"])
        clients.append(c)
    await asyncio.gather(*(c.ready for c in clients))
    t0 = time.monotonic()
    for c in clients:
        c.transport.write(blob)
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.gather(*(c.done for c in clients)), 60)
    emit(
        "result",
        sent_bytes=len(blob),
        delivered_intact=sum(1 for c in clients if c.echo == expected),
        delivered_other=sum(1 for c in clients if c.echo is not None and c.echo != expected),
        close_codes=[c.close_code for c in clients],
        seconds=round(time.monotonic() - t0, 3),
        errors=[c.error for c in clients if c.error],
    )
