"""The server child: one wsnest server with the soak's routes (echo, broadcast,
floods, raising callbacks, permessage-deflate, TLS), counting on_open /
on_close per route, refusals by code and tasks alive; ``GET /stats`` answers
with JSON."""

from __future__ import annotations

import json
import os
import signal
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from _util import raise_fd_limit
from soaklib.common import HOST, ROOT, emit, expected_core, rss_kib

# -- child: the server -----------------------------------------------------------------


def ensure_wsnest_importable() -> None:
    """Run this checkout's src/ when it can serve the core asked for (the
    compiled core built in place, or the pure core): an installed copy
    left by an earlier ``pip install`` would otherwise shadow it. Else the
    installed wsnest (the one CI built with the compiled core), or src/ if
    none is installed. The parent logs which one runs."""
    src = ROOT / "src"
    built = any(p.suffix in (".so", ".pyd") for p in (src / "wsnest" / "core").glob("_frames_c*"))
    if built or expected_core() == "pure":
        sys.path.insert(0, str(src))
        return
    try:
        import wsnest  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(src))


def child_server(cfg: dict[str, Any]) -> int:
    raise_fd_limit()
    ensure_wsnest_importable()
    import logging

    import trio

    import wsnest

    stats: dict[str, Any] = {
        "opened": {},
        "closed": {},
        "close_codes": {},
        "raised": 0,
        "expected_errors": 0,
        "unexpected_errors": 0,
        "unexpected_samples": [],
        "bcast": {"messages": 0, "accepted": 0, "refused": 0, "send_codes": {}, "done": False},
        "flood": {},
        "feed": {"requests": 0, "send_codes": {}},
    }
    bcast_conns: set[wsnest.WebSocket] = set()
    floods: dict[str, dict[int, wsnest.WebSocket]] = {"/flood": {}, "/trickle": {}}
    message_count = 0

    class Counting(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno < logging.ERROR:
                return
            text = record.getMessage()
            if (
                "on_message callback raised" in text
                and record.exc_info
                and "soak: every 10th" in str(record.exc_info[1])
            ):
                stats["expected_errors"] += 1
                return
            stats["unexpected_errors"] += 1
            if len(stats["unexpected_samples"]) < 5:
                stats["unexpected_samples"].append(self.format(record)[-2000:])

    # Garbage-collector pauses, per generation: [collections, total ms, max ms].
    import gc

    gc_stats: dict[str, list[float]] = {"0": [0, 0.0, 0.0], "1": [0, 0.0, 0.0], "2": [0, 0.0, 0.0]}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
            return
        ms = (time.perf_counter() - gc_started[0]) * 1000
        entry = gc_stats[str(info["generation"])]
        entry[0] += 1
        entry[1] = round(entry[1] + ms, 3)
        entry[2] = round(max(entry[2], ms), 3)

    gc.callbacks.append(on_gc)
    stats["gc"] = gc_stats

    log = logging.getLogger("wsnest")
    log.addHandler(Counting())
    log.setLevel(logging.ERROR)
    log.propagate = False

    def bump(table: str, key: str) -> None:
        stats[table][key] = stats[table].get(key, 0) + 1

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        path = req.path
        bump("opened", path)
        if path == "/bcast":
            bcast_conns.add(ws)
        elif path in floods:
            floods[path][ws.id] = ws
            ws.send(f"id:{ws.id}")

    def on_close(ws: wsnest.WebSocket) -> None:
        path = ws_paths.pop(ws.id, "?")
        bump("closed", path)
        bump("close_codes", str(ws.close_code))
        bcast_conns.discard(ws)
        floods.get(path, {}).pop(ws.id, None)

    ws_paths: dict[int, str] = {}

    def tracked_open(path: str) -> Callable[[wsnest.WebSocket, wsnest.Request], None]:
        def opened(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
            ws_paths[ws.id] = path
            on_open(ws, req)

        return opened

    def echo(ws: wsnest.WebSocket, data: Any) -> None:
        ws.send(data)

    def raiser(ws: wsnest.WebSocket, data: Any) -> None:
        nonlocal message_count
        message_count += 1
        if message_count % 10 == 0:
            stats["raised"] += 1
            raise RuntimeError(f"soak: every 10th message raises ({message_count})")
        ws.send(data)

    def ignore(ws: wsnest.WebSocket, data: Any) -> None:
        pass

    def ws_handler(path: str, on_message: Any, **limits: Any) -> Any:
        return wsnest.handler_ws(
            path, on_message, on_open=tracked_open(path), on_close=on_close, textframes=None, **limits
        )

    nursery_ref: list[trio.Nursery] = []

    def walk(task: Any) -> int:
        return 1 + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    def count_tasks() -> int:
        """Every task alive (trio's system tasks included)."""
        return walk(trio.lowlevel.current_root_task())

    def snapshot() -> dict[str, Any]:
        return {
            **stats,
            "opened_total": sum(stats["opened"].values()),
            "closed_total": sum(stats["closed"].values()),
            "open_ws": len(server._websockets),
            "tasks": count_tasks(),
            "rss_kib": rss_kib(os.getpid()),
            "core": wsnest.CORE,
        }

    def stats_route(req: wsnest.Request) -> dict[str, Any]:
        return {"status": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(snapshot())}

    async def broadcaster(count: int, size: int, rate: float) -> None:
        b = stats["bcast"]
        b["done"] = False
        filler = b"\xab" * (size - 4)
        interval = 1.0 / rate
        start = trio.current_time()
        for seq in range(count):
            data = struct.pack("!I", seq) + filler
            conns = list(bcast_conns)
            if seq % 2 == 0:
                n = wsnest.broadcast(conns, data)
                b["accepted"] += n
                b["refused"] += len(conns) - n
            else:
                codes = b["send_codes"]
                for ws in conns:
                    code = str(int(ws.send(data)))
                    codes[code] = codes.get(code, 0) + 1
            b["messages"] += 1
            await trio.sleep_until(start + (seq + 1) * interval)
        b["done"] = True

    def feed(ws: wsnest.WebSocket, data: Any) -> None:
        """Each message "N SIZE" asks for N messages of SIZE bytes (a feed
        the client subscribes to): what a client that never reads uses to
        make the server send far more than send_high_water."""
        count, size = (int(x) for x in data.split())  # str (text frame) or bytes
        f = stats["feed"]
        f["requests"] += 1
        codes = f["send_codes"]
        payload = feed_payloads.get(size)
        if payload is None:
            payload = feed_payloads[size] = b"\xee" * size
        for _ in range(count):
            code = str(int(ws.send(payload)))
            codes[code] = codes.get(code, 0) + 1

    feed_payloads: dict[int, bytes] = {}

    def hello(req: wsnest.Request) -> dict[str, Any]:
        return {"status": 200, "body": "hello"}

    def ctl_broadcast(req: wsnest.Request) -> dict[str, Any]:
        q = dict(p.split("=", 1) for p in req.query.split("&") if "=" in p)
        nursery_ref[0].start_soon(broadcaster, int(q["count"]), int(q["size"]), float(q["rate"]))
        return {"status": 200, "body": "started"}

    def ctl_flood(req: wsnest.Request) -> dict[str, Any]:
        q = dict(p.split("=", 1) for p in req.query.split("&") if "=" in p)
        count, size = int(q["count"]), int(q["size"])
        filler = b"\xcd" * (size - 4)
        sent: dict[str, int] = {}
        for ws_id, ws in list(floods[q.get("path", "/flood")].items()):
            ok = 0
            for seq in range(count):
                if ws.send(struct.pack("!I", seq) + filler) == 0:
                    ok += 1
            sent[str(ws_id)] = ok
        stats["flood"].update(sent)
        return {"status": 200, "headers": {"Content-Type": "application/json"}, "body": json.dumps(sent)}

    handlers = [
        ws_handler("/echo", echo),
        ws_handler("/raise", raiser),
        ws_handler("/bcast", ignore),
        ws_handler("/flood", ignore, send_high_water=64 << 20),
        ws_handler("/trickle", ignore, send_high_water=64 << 20),
        ws_handler("/small", echo, max_message_size=cfg["small_limit"]),
        ws_handler("/deflate", echo, permessage_deflate=True),
        ws_handler("/feed", feed),
        wsnest.handler("/hello", hello),
        wsnest.handler("/stats", stats_route),
        wsnest.handler("/ctl/broadcast", ctl_broadcast),
        wsnest.handler("/ctl/flood", ctl_flood),
    ]
    # TLS: a fresh self-signed certificate; only the certificate leaves
    # this process (in the "ready" line), for the clients to trust.
    pair = wsnest.write_cert(HOST) if cfg.get("tls") else None
    limits = {k: cfg[k] for k in ("keepalive_timeout",) if k in cfg}
    server = wsnest.http_server(
        f"{'https' if pair else 'http'}://{HOST}:0",
        handlers,
        tls=wsnest.tls_config(pair.cert, pair.key) if pair else None,
        handshake_timeout=cfg["handshake_timeout"],
        close_timeout=cfg["close_timeout"],
        send_high_water=cfg["send_high_water"],
        **limits,
    )
    final: dict[str, Any] = {}

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery_ref.append(nursery)
                url = await nursery.start(server.serve)
                emit(
                    "ready",
                    port=int(url.rsplit(":", 1)[1]),
                    core=wsnest.CORE,
                    package=os.path.dirname(wsnest.__file__),
                    pid=os.getpid(),
                    cert=pair.cert if pair else None,
                )
                async for _ in signals:
                    break
                t0 = time.monotonic()
                open_at_signal = len(server._websockets)
                await server.aclose()
                final["shutdown_seconds"] = round(time.monotonic() - t0, 3)
                final["open_at_signal"] = open_at_signal
                nursery.cancel_scope.cancel()
        # Everything the server started is gone: only this task is left.
        final["tasks_after"] = walk(trio.lowlevel.current_task())
        final.update(snapshot())

    trio.run(main)
    emit("final", **final)
    return 0
