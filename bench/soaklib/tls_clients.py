"""Client children over TLS: idle TLS connections, stalled handshakes,
never-reading WSS clients and WSS echo clients."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import statistics
import struct
import time
from typing import Any

from soaklib.common import HOST, emit, stdin_lines
from wire import OP_BINARY, OP_TEXT, FrameBuffer, client_frame, close_frame, upgrade_request

# -- child: TLS clients (idle, half-open handshakes, never-reading WSS, WSS echo) ----------


def trusting_context(cert: str) -> ssl.SSLContext:
    """A client TLS context that trusts exactly the soak server's certificate."""
    return ssl.create_default_context(cadata=cert)


def partial_client_hello(big: bool) -> bytes:
    """A real ClientHello minus its last byte (the server waits for the rest).
    ``big``: about 60 KB, padded with ALPN names (several TLS records)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if big:
        ctx.set_alpn_protocols([f"{i:04d}" + "p" * 246 for i in range(240)])
    obj = ctx.wrap_bio(ssl.MemoryBIO(), outgoing := ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()[:-1]


#: Modes of ``tlsclients``: TLS connections (handshake done) or plain TCP
#: ones stalled inside the handshake.
TLS_MODES = ("warmup", "fresh", "keepalive")
HALF_OPEN_MODES = ("nothing", "hello", "bighello")
TLS_MODE_NAMES = {
    "warmup": "idle TLS connections (warm-up batch)",
    "fresh": "idle TLS connections",
    "keepalive": "idle keep-alive TLS connections",
    "nothing": "stalled TLS handshakes, nothing sent",
    "hello": "stalled TLS handshakes, ClientHello less 1 B",
    "bighello": "stalled TLS handshakes, 60 KB ClientHello less 1 B",
}


class DropWatch(asyncio.Protocol):
    """A connection that sends ``first`` and then nothing, and records when
    the server drops it, and when it was started, set up (for TLS: when its
    handshake was done) and, for keep-alive, answered."""

    def __init__(self, first: bytes) -> None:
        self.first = first
        self.times: dict[str, float] = {"connect": time.monotonic()}
        self.buf = bytearray()
        self.responded = asyncio.get_running_loop().create_future()
        self.transport: Any = None

    def connection_made(self, transport: Any) -> None:
        self.times["ready"] = time.monotonic()
        self.transport = transport
        if self.first:
            transport.write(self.first)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if self.responded.done() or end < 0:
            return
        length = 0
        for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(self.buf) >= end + 4 + length:
            self.times["response"] = time.monotonic()  # the keep-alive wait starts now
            self.responded.set_result(self.buf.startswith(b"HTTP/1.1 200 "))

    def dropped_after(self, since: str) -> float | None:
        if "dropped" not in self.times or since not in self.times:
            return None
        return self.times["dropped"] - self.times[since]

    def _dropped(self) -> None:
        self.times.setdefault("dropped", time.monotonic())
        if not self.responded.done():
            self.responded.set_result(False)

    def eof_received(self) -> bool:
        self._dropped()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._dropped()


def drop_summary(conns: list[DropWatch]) -> dict[str, Any]:
    """How many were dropped, and when: after the connect, after the set-up
    (TLS handshake done) and after the response (keep-alive)."""
    out: dict[str, Any] = {"count": len(conns), "dropped": sum("dropped" in c.times for c in conns)}
    for since in ("connect", "ready", "response"):
        drops = [d for c in conns if (d := c.dropped_after(since)) is not None]
        if drops:
            out[since] = {
                "min": round(min(drops), 3),
                "median": round(statistics.median(drops), 3),
                "max": round(max(drops), 3),
            }
    return out


async def tlsclients_main(cfg: dict[str, Any]) -> None:
    """Commands: ``open MODE N`` (emits "opened"), ``wait SECONDS`` (until the
    server has dropped them all; emits "result"), ``exit``."""
    loop = asyncio.get_running_loop()
    ctx = trusting_context(cfg["cert"])
    first = {
        "warmup": b"",
        "fresh": b"",
        "keepalive": f"GET /hello HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode(),
        "nothing": b"",
        "hello": partial_client_hello(False),
        "bighello": partial_client_hello(True),
    }
    groups: dict[str, list[DropWatch]] = {}
    sem = asyncio.Semaphore(50)

    async def open_one(mode: str, errors: list[str]) -> None:
        async with sem:
            conn = DropWatch(first[mode])
            tls = {"ssl": ctx, "server_hostname": HOST} if mode in TLS_MODES else {}
            try:
                await loop.create_connection(lambda: conn, HOST, cfg["port"], **tls)
            except (OSError, ssl.SSLError) as exc:
                errors.append(repr(exc))
                return
            groups[mode].append(conn)
            if mode == "keepalive":
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(conn.responded), 30)

    emit("ready", hello_bytes=len(first["hello"]), bighello_bytes=len(first["bighello"]))
    commands = await stdin_lines()
    while True:
        cmd, *rest = (await commands.get()).split()
        if cmd == "open":
            mode, n = rest[0], int(rest[1])
            groups[mode] = []
            errors: list[str] = []
            t0 = time.monotonic()
            await asyncio.gather(*(open_one(mode, errors) for _ in range(n)))
            # Everything written has left this process (asyncio buffers writes).
            while any(c.transport.get_write_buffer_size() for c in groups[mode] if not c.transport.is_closing()):
                await asyncio.sleep(0.01)
            served = sum(1 for c in groups[mode] if c.responded.done() and c.responded.result())
            emit(
                "opened",
                mode=mode,
                opened=len(groups[mode]),
                served=served,
                errors=len(errors),
                error_sample=errors[:1],
                seconds=round(time.monotonic() - t0, 3),
            )
        elif cmd == "wait":
            deadline = time.monotonic() + float(rest[0])
            every = [c for g in groups.values() for c in g]
            while time.monotonic() < deadline and any("dropped" not in c.times for c in every):
                await asyncio.sleep(0.05)
            emit("result", **{mode: drop_summary(g) for mode, g in groups.items()})
        elif cmd == "exit":
            for g in groups.values():
                for c in g:
                    if c.transport is not None:
                        c.transport.close()
            await asyncio.sleep(0.1)
            emit("done")
            return


class NeverReader(asyncio.Protocol):
    """Upgrades to a WebSocket, then never reads another byte."""

    def __init__(self, path: str) -> None:
        self.request = upgrade_request(path)
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.transport: Any = None
        self.lost = False

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded.done() and b"\r\n\r\n" in self.buf:
            self.upgraded.set_result(self.buf.startswith(b"HTTP/1.1 101 "))
            self.transport.pause_reading()  # from now on, nothing is read

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.upgraded.done():
            self.upgraded.set_result(False)


async def wss_echo(port: int, ctx: ssl.SSLContext, tag: int, until: float) -> dict[str, Any]:
    """Ping-pong 1 KiB messages over WSS until ``until``; RTTs and mismatches."""
    reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname=HOST)
    writer.write(upgrade_request("/echo"))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101 "):
        raise ConnectionError(f"WSS echo client not upgraded: {head[:100]!r}")
    fb = FrameBuffer()
    rtts: list[float] = []
    wrong = 0
    seq = 0
    while time.monotonic() < until:
        payload = struct.pack("!II", tag, seq) + bytes(1016)
        t0 = time.monotonic()
        writer.write(client_frame(OP_BINARY, payload))
        frames: list[tuple[bool, int, bytes]] = []
        while not frames:
            chunk = await asyncio.wait_for(reader.read(65536), 30)
            if not chunk:
                raise ConnectionError("WSS echo client: the server hung up")
            frames = fb.feed(chunk)
        rtts.append(time.monotonic() - t0)
        wrong += len(frames) != 1 or frames[0][2] != payload
        seq += 1
    writer.write(close_frame(1000))
    with contextlib.suppress(asyncio.TimeoutError, OSError):
        await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return {"sent": seq, "wrong": wrong, "rtts": rtts}


async def wssflood_main(cfg: dict[str, Any]) -> None:
    """``readers`` never-reading WSS clients on /feed asking for ``count`` x
    ``size`` B every ``interval`` s, and ``echoers`` WSS echo clients, for
    ``duration`` s after the "go" command."""
    loop = asyncio.get_running_loop()
    ctx = trusting_context(cfg["cert"])
    readers = []
    for _ in range(cfg["readers"]):
        _, proto = await loop.create_connection(
            lambda: NeverReader("/feed"), HOST, cfg["port"], ssl=ctx, server_hostname=HOST
        )
        readers.append(proto)
    upgraded = [await asyncio.wait_for(asyncio.shield(r.upgraded), 30) for r in readers]
    emit("ready", upgraded=sum(upgraded))
    commands = await stdin_lines()
    if await commands.get() != "go":
        return
    until = time.monotonic() + cfg["duration"]
    request = client_frame(OP_TEXT, f"{cfg['count']} {cfg['size']}".encode())
    requests = 0

    async def ask() -> None:
        nonlocal requests
        while time.monotonic() < until:
            for r in readers:
                # The server may stop reading us too: do not queue without end here.
                if not r.lost and r.transport.get_write_buffer_size() < 65536:
                    r.transport.write(request)
                    requests += 1
            await asyncio.sleep(cfg["interval"])

    results = await asyncio.gather(
        ask(), *(wss_echo(cfg["port"], ctx, i, until) for i in range(cfg["echoers"])), return_exceptions=True
    )
    echoes = [r for r in results[1:] if isinstance(r, dict)]
    rtts = [t for e in echoes for t in e["rtts"]]
    emit(
        "result",
        requests=requests,
        readers_lost=sum(r.lost for r in readers),
        echo_errors=[repr(r) for r in results if isinstance(r, BaseException)],
        echo_sent=sum(e["sent"] for e in echoes),
        echo_wrong=sum(e["wrong"] for e in echoes),
        rtt_median_ms=round(statistics.median(rtts) * 1000, 2) if rtts else None,
        rtt_max_ms=round(max(rtts) * 1000, 2) if rtts else None,
    )
    await commands.get()
    for r in readers:
        r.transport.abort()
    emit("done")
