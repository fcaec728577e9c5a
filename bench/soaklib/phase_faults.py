"""Phases D (SIGKILL, RST, raising callbacks) and E (size, fragment and
deflate bombs)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import struct
import time
import zlib
from typing import Any

from soaklib.base import SoakBase
from soaklib.common import HOST, SERVER_CPU
from soaklib.procs import Child, RssSampler
from wire import (
    DEFLATE_OFFER,
    OP_BINARY,
    OP_CLOSE,
    FrameBuffer,
    client_frame,
    close_frame,
    deflate_message,
    read_head,
    upgrade_request,
    zero_bomb,
)


class FaultPhases(SoakBase):
    """Phases D (SIGKILL, RST, raising callbacks) and E (size, fragment and
    deflate bombs)."""

    def phase_d(self, idle_open: int) -> None:
        a = self.args
        n = a.faults
        self.log(f"D: faults ({n} connections each)")
        assert self.server is not None
        base = self.wait_settled(idle_open, 20)
        # SIGKILL mid-frame and mid-handshake.
        for mode in ("frame", "handshake"):
            before = self.stats()["opened_total"]
            k = self.child("killme", {"port": self.port, "count": n, "mode": mode})
            k.expect("ready", 60)
            if mode == "frame":
                deadline = time.monotonic() + 10
                while self.stats()["opened_total"] < before + n and time.monotonic() < deadline:
                    time.sleep(0.05)
            os.kill(k.pid, signal.SIGKILL)
            k.wait(10)
            self.inputs[f"SIGKILL mid-{mode}"] = n
        # RST (SO_LINGER 0) mid-frame and mid-handshake, from here.
        request = upgrade_request("/echo")
        socks = []
        for i in range(n):
            s = socket.create_connection((HOST, self.port))
            if i % 2:
                s.sendall(request[: 3 + i % (len(request) - 4)])
            else:
                s.sendall(request)
                read_head(s)
                s.sendall(client_frame(OP_BINARY, b"r" * 50, length=4000))
            socks.append(s)
        time.sleep(0.2)
        for s in socks:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
        self.inputs["RST mid-frame"] = n - n // 2
        self.inputs["RST mid-handshake"] = n // 2
        # A callback raising on every 10th message.
        raised_before = self.stats()["raised"]
        conns = []
        for _ in range(a.raise_conns):
            s = socket.create_connection((HOST, self.port))
            s.settimeout(10)
            s.sendall(upgrade_request("/raise"))
            _, rest = read_head(s)
            fb = FrameBuffer()
            conns.append([s, fb, fb.feed(rest)])
        alive = list(range(len(conns)))
        got_1011 = echoed = wrong = 0
        turn = 0
        for seq in range(a.raise_messages):
            if not alive:
                break
            i = alive[turn % len(alive)]
            s, fb, pending = conns[i]
            payload = f"m{seq}".encode()
            s.sendall(client_frame(OP_BINARY, payload))
            while not pending:
                chunk = s.recv(65536)
                if not chunk:
                    raise ConnectionError("raising-callback client: the server hung up without a close frame")
                pending.extend(fb.feed(chunk))
            _, op, data = pending.pop(0)
            if op == OP_CLOSE:
                code = struct.unpack("!H", data[:2])[0]
                got_1011 += code == 1011
                wrong += code != 1011 or bool(data[2:])
                s.sendall(close_frame(code))
                s.close()
                alive.remove(i)
            else:
                echoed += data == payload
                wrong += data != payload
                turn += 1
        survivors_ok = 0
        for i in alive:
            s, fb, pending = conns[i]
            s.sendall(close_frame(1000))
            while not pending:
                chunk = s.recv(65536)
                if not chunk:
                    break
                pending.extend(fb.feed(chunk))
            survivors_ok += bool(pending) and pending[0][1] == OP_CLOSE
            s.close()
        s_after = self.wait_settled(idle_open, 30)
        raised = s_after["raised"] - raised_before
        self.inputs["messages to a raising callback"] = a.raise_messages
        self.lost["raising-callback echoes"] = a.raise_messages - raised - echoed
        self.check(
            "D",
            "raising callback: exactly those connections got 1011",
            f"{got_1011} x 1011 for {raised} raises; {echoed} echoes;"
            f" {survivors_ok}/{len(alive)} survivors closed 1000",
            "1011 count == raises, others unaffected",
            got_1011 == raised == a.raise_messages // 10 and wrong == 0 and survivors_ok == len(alive),
        )
        self.check(
            "D",
            "on_close == on_open after faults",
            f"opened {s_after['opened_total']}, closed {s_after['closed_total']}, open {s_after['open_ws']}",
            "opened - closed == open",
            s_after["opened_total"] - s_after["closed_total"] == s_after["open_ws"] == idle_open,
        )
        leaked = s_after["tasks"] - s_after["open_ws"] - (base["tasks"] - base["open_ws"])
        self.check(
            "D",
            "no task left behind",
            f"{s_after['tasks']} tasks for {s_after['open_ws']} connections"
            f" (before: {base['tasks']} for {base['open_ws']})",
            "tasks - connections unchanged",
            leaked == 0,
        )
        self.numbers["faults"] = {"sigkill": 2 * n, "rst": n, "raised": raised, "got_1011": got_1011}

    def phase_e(self, env: dict[str, str] | None = None, label: str = "") -> None:
        a = self.args
        self.log(f"E: size bombs{label}")
        assert self.server is not None
        # A 1 GiB declared message, header only.
        latencies = []
        codes = []
        for _ in range(a.bomb_headers):
            s = socket.create_connection((HOST, self.port))
            s.settimeout(10)
            s.sendall(upgrade_request("/echo"))
            _, after = read_head(s)
            fb = FrameBuffer()
            rest = fb.feed(after)
            t0 = time.monotonic()
            s.sendall(client_frame(OP_BINARY, b"", length=1 << 30))
            frames = list(rest)
            while not frames:
                chunk = s.recv(4096)
                if not chunk:
                    break
                frames += fb.feed(chunk)
            latencies.append(time.monotonic() - t0)
            codes.append(struct.unpack("!H", frames[0][2][:2])[0] if frames and frames[0][1] == OP_CLOSE else None)
            s.sendall(close_frame(1009))
            s.close()
        self.inputs["1 GiB headers"] = self.inputs.get("1 GiB headers", 0) + a.bomb_headers
        self.check(
            "E",
            f"1 GiB declared length{label}",
            f"{codes.count(1009)}/{a.bomb_headers} closed 1009, max {max(latencies) * 1000:.1f} ms after the header",
            "1009 at once (no payload sent)",
            codes.count(1009) == a.bomb_headers,
        )
        # 100,000 one-byte fragments, under and over the limit, many at once.
        results = {}
        for path, label2 in (("/echo", "under"), ("/small", "over")):
            before = self.rss()
            with RssSampler(self.server.pid) as sampler:
                c = self.child(
                    "fragments", {"port": self.port, "path": path, "count": a.bomb_conns, "fragments": a.fragments}
                )
                r = c.expect("result", 120)
                c.wait(10)
            growth = sampler.peak - before
            results[label2] = {**r, "rss_growth_kib": growth}
            self.inputs["fragment frames"] = self.inputs.get("fragment frames", 0) + a.bomb_conns * a.fragments
        limit_mib = 1.0
        bound_kib = int(a.bomb_conns * 3 * limit_mib * 1024) + 32 * 1024
        under, over = results["under"], results["over"]
        self.lost[f"fragmented messages{label}"] = a.bomb_conns - under["delivered_intact"]
        self.check(
            "E",
            f"{a.fragments} x 1 B fragments under the 1 MiB limit{label}",
            f"{under['delivered_intact']}/{a.bomb_conns} delivered intact in {under['seconds']}s,"
            f" RSS +{under['rss_growth_kib'] / 1024:.1f} MiB",
            f"all delivered, RSS growth <= {bound_kib / 1024:.0f} MiB",
            under["delivered_intact"] == a.bomb_conns and under["rss_growth_kib"] <= bound_kib,
        )
        self.check(
            "E",
            f"{a.fragments} x 1 B fragments over a {a.small_limit} B limit{label}",
            f"{over['close_codes'].count(1009)}/{a.bomb_conns} closed 1009,"
            f" {over['delivered_intact'] + over['delivered_other']}"
            f" delivered, RSS +{over['rss_growth_kib'] / 1024:.1f} MiB",
            f"all 1009, none delivered, RSS growth <= {bound_kib / 1024:.0f} MiB",
            over["close_codes"].count(1009) == a.bomb_conns
            and over["delivered_intact"] + over["delivered_other"] == 0
            and over["rss_growth_kib"] <= bound_kib,
        )
        self.numbers[f"bombs{label}"] = {
            "gib_header_ms_max": round(max(latencies) * 1000, 2),
            "under": results["under"],
            "over": results["over"],
            "deflate": self.deflate_bombs(label, bound_kib),
        }

    def deflate_bombs(self, label: str, bound_kib: int) -> dict[str, Any]:
        """permessage-deflate: a normal compressed echo, then many connections
        at once each sending a small compressed message that would inflate
        to 256 MiB (the limit is 1 MiB): each must be closed with 1009, and
        the server must never hold the inflated data."""
        a = self.args
        assert self.server is not None
        inflated = 256 << 20
        if self._bomb is None:
            self._bomb = client_frame(OP_BINARY, zero_bomb(inflated), rsv=4)  # RSV1: compressed
        bomb = self._bomb
        # A compressed echo first: the route works, it does not just refuse.
        text = (b"wsnest soak, compressed echo " * 4000)[:100_000]
        s = socket.create_connection((HOST, self.port))
        s.settimeout(10)
        s.sendall(upgrade_request("/deflate", extra=DEFLATE_OFFER))
        head, after = read_head(s)
        negotiated = b"permessage-deflate" in head.lower()
        s.sendall(client_frame(OP_BINARY, deflate_message(text), rsv=4))
        fb = FrameBuffer(allow_rsv1=True)
        frames = fb.feed(after)
        while not frames:
            chunk = s.recv(65536)
            if not chunk:
                break
            frames += fb.feed(chunk)
        echoed = None
        if frames and frames[0][1] == OP_BINARY:
            rsv1, payload = fb.rsv1[0], frames[0][2]
            echoed = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff") if rsv1 else payload
        s.sendall(close_frame(1000))
        s.close()
        self.check(
            "E",
            f"compressed echo on the permessage-deflate route{label}",
            f"negotiated: {negotiated}; 100,000 B echoed {'intact' if echoed == text else 'WRONG'}",
            "negotiated, echoed intact",
            negotiated and echoed == text,
        )
        before = self.rss()
        socks = []
        with RssSampler(self.server.pid) as sampler:
            for _ in range(a.bomb_conns):
                c = socket.create_connection((HOST, self.port))
                c.settimeout(30)
                c.sendall(upgrade_request("/deflate", extra=DEFLATE_OFFER))
                socks.append((c, *read_head(c)))
            for c, _head, _after in socks:
                c.sendall(bomb)
            codes = []
            for c, _head, after in socks:
                fb = FrameBuffer(allow_rsv1=True)
                frames = fb.feed(after)
                while not frames:
                    chunk = c.recv(65536)
                    if not chunk:
                        break
                    frames += fb.feed(chunk)
                codes.append(struct.unpack("!H", frames[0][2][:2])[0] if frames and frames[0][1] == OP_CLOSE else None)
                with contextlib.suppress(OSError):
                    c.sendall(close_frame(1009))
                c.close()
        growth = sampler.peak - before
        self.inputs["compressed bombs"] = self.inputs.get("compressed bombs", 0) + a.bomb_conns
        self.check(
            "E",
            f"{a.bomb_conns} compressed bombs at once ({len(bomb) // 1024} KiB -> 256 MiB, 1 MiB limit){label}",
            f"{codes.count(1009)}/{a.bomb_conns} closed 1009, RSS +{growth / 1024:.1f} MiB",
            f"all 1009, RSS growth <= {bound_kib / 1024:.0f} MiB",
            codes.count(1009) == a.bomb_conns and growth <= bound_kib,
        )
        return {"bomb_bytes": len(bomb), "inflates_to": inflated, "codes": codes, "rss_growth_kib": growth}

    def bombs_on_fresh_server(self, core: str) -> None:
        """Phase E again on a server of its own with the given core, so that
        its RSS growth is measured from a clean start."""
        main_server, main_port = self.server, self.port
        a = self.args
        cfg = {
            "handshake_timeout": a.handshake_timeout,
            "close_timeout": a.close_timeout,
            "send_high_water": a.high_water,
            "small_limit": a.small_limit,
        }
        env = {"WSNEST_NO_EXTENSIONS": "1" if core == "pure" else "0"}
        self.server = Child("server", cfg, SERVER_CPU, env=env)
        try:
            msg = self.server.expect("ready", 30)
            self.port = msg["port"]
            if msg["core"] != core:
                raise RuntimeError(f"asked for the {core} core, got {msg['core']}")
            self.phase_e(label=f" (fresh server, {core} core)")
            self.server.proc.send_signal(signal.SIGINT)
            rc = self.server.wait(30)
            final = self.server.expect("final", 5)
            self.check(
                "E",
                f"fresh {core}-core server: clean exit, on_close == on_open",
                f"exit {rc}, opened {final['opened_total']}, closed {final['closed_total']}",
                "0, equal",
                rc == 0 and final["opened_total"] == final["closed_total"] and final["unexpected_errors"] == 0,
            )
        finally:
            self.server.close()
            self.server, self.port = main_server, main_port

    # -- G: TLS ---------------------------------------------------------------------
