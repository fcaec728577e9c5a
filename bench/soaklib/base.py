"""The soak's state and plumbing: checks, children, the server under test,
``/stats``, settled RSS, echo windows, idle holders, the report at the end."""

from __future__ import annotations

import argparse
import json
import os
import ssl
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from soaklib.common import CLIENT_CPU, DOC, HOST, ROOT, SERVER_CPU, cpu_seconds, expected_core, rss_kib, unread_bytes
from soaklib.procs import Child
from soaklib.report import Check, other_cpu_users, summary, write_doc


@dataclass
class SoakBase:
    """The state of a soak run and the plumbing every phase uses."""

    args: argparse.Namespace
    checks: list[Check] = field(default_factory=list)
    numbers: dict[str, Any] = field(default_factory=dict)
    children: list[Child] = field(default_factory=list)
    server: Child | None = None
    port: int = 0
    inputs: dict[str, int] = field(default_factory=dict)
    lost: dict[str, int] = field(default_factory=dict)
    _bomb: bytes | None = None  # the compressed bomb frame, built once
    tls: ssl.SSLContext | None = None  # set while the server under test is HTTPS
    cert: str = ""

    # -- plumbing ---------------------------------------------------------------

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    def check(self, phase: str, what: str, measured: Any, bound: str, ok: bool) -> None:
        self.checks.append(Check(phase, what, str(measured), bound, bool(ok)))
        self.log(f"  {'ok  ' if ok else 'FAIL'} {phase}: {what}: {measured} ({bound})")

    def info(self, phase: str, what: str, measured: Any) -> None:
        self.checks.append(Check(phase, what, str(measured), "-", True, info=True))
        self.log(f"  info {phase}: {what}: {measured}")

    def child(self, role: str, cfg: dict[str, Any], cpu: int | None = CLIENT_CPU, **kw: Any) -> Child:
        c = Child(role, cfg, cpu, **kw)
        self.children.append(c)
        return c

    def stats(self) -> dict[str, Any]:
        return json.loads(self.get("/stats"))  # type: ignore[no-any-return]

    def get(self, path: str) -> bytes:
        scheme = "https" if self.tls else "http"
        with urllib.request.urlopen(f"{scheme}://{HOST}:{self.port}{path}", timeout=30, context=self.tls) as resp:
            return resp.read()  # type: ignore[no-any-return]

    def rss(self) -> int:
        assert self.server is not None
        return rss_kib(self.server.pid)

    def settled_rss(self, timeout: float = 10.0) -> int:
        """The server's RSS once it has read everything sent to it (no byte
        waiting in its sockets) and is idle (no CPU used over 0.1 s, RSS
        unchanged), or after ``timeout``."""
        assert self.server is not None
        pid = self.server.pid
        deadline = time.monotonic() + timeout
        while unread_bytes(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        rss, cpu = rss_kib(pid), cpu_seconds(pid)
        while time.monotonic() < deadline:
            time.sleep(0.1)
            rss0, cpu0 = rss, cpu
            rss, cpu = rss_kib(pid), cpu_seconds(pid)
            if rss == rss0 and cpu - cpu0 < 0.005:
                break
        return rss

    def wait_settled(self, expect_open: int, timeout: float) -> dict[str, Any]:
        """Poll /stats until the server holds exactly ``expect_open``
        WebSockets and every on_open has its on_close."""
        deadline = time.monotonic() + timeout
        while True:
            s = self.stats()
            balanced = s["opened_total"] - s["closed_total"] == s["open_ws"]
            if (s["open_ws"] == expect_open and balanced) or time.monotonic() > deadline:
                return s
            time.sleep(0.1)

    def echo_load(self, connections: int, duration: float) -> dict[str, Any]:
        assert self.server is not None
        cfg = {"port": self.port, "connections": connections, "duration": duration, "server_pid": self.server.pid}
        c = self.child("echo", cfg)
        try:
            return c.expect("result", duration + 60)
        finally:
            c.wait(10)

    # -- phases -----------------------------------------------------------------

    def start_server(self) -> None:
        a = self.args
        cfg = {
            "handshake_timeout": a.handshake_timeout,
            "close_timeout": a.close_timeout,
            "send_high_water": a.high_water,
            "small_limit": a.small_limit,
        }
        self.server = Child("server", cfg, SERVER_CPU)
        msg = self.server.expect("ready", 30)
        self.port = msg["port"]
        self.numbers["core"] = msg["core"]
        want = expected_core()
        if want is not None:
            self.check(
                "A",
                "server core selected by the environment",
                msg["core"],
                f"{want} ({'WSNEST_NO_EXTENSIONS' if want == 'pure' else 'WSNEST_REQUIRE_EXTENSIONS'} set)",
                msg["core"] == want,
            )
        s = self.stats()
        self.numbers["tasks_idle"] = s["tasks"]  # root, main, serve, flusher, accept loop...
        self.numbers["rss_start_kib"] = s["rss_kib"]
        self.log(
            f"server pid {self.server.pid} on port {self.port}, core {msg['core']}"
            f" (wsnest from {msg.get('package')}), {s['tasks']} tasks"
        )

    def echo_window(self, what: str) -> dict[str, Any]:
        a = self.args
        r = self.echo_load(a.echo, a.duration)
        if "error" in r:
            raise RuntimeError(f"echo ({what}) failed: {r}")
        self.inputs["echo messages"] = self.inputs.get("echo messages", 0) + r["messages"]
        us = r["server_cpu"] * r["seconds"] / max(1, r["messages"]) * 1e6 if r.get("server_cpu") is not None else None
        r["server_us_per_msg"] = round(us, 1) if us is not None else None
        self.log(
            f"  {what}: {r['rate']:.0f} msg/s, server {r.get('server_cpu')} CPU, {us:.1f} us/msg;"
            f" echo client {r.get('client_cpu')} CPU"
        )
        return r

    def open_idle(self) -> tuple[list[Child], int, float]:
        a = self.args
        holders = []
        left = a.idle
        t0 = time.monotonic()
        while left > 0:
            n = min(a.idle_per_proc, left)
            holders.append(self.child("idle", {"port": self.port, "path": "/echo", "count": n}))
            left -= n
        opened = sum(h.expect("ready", 120)["states"].get("open", 0) for h in holders)
        return holders, opened, time.monotonic() - t0

    def close_idle(self, holders: list[Child]) -> None:
        for h in holders:
            h.send("exit")
            h.expect("done", 30)
            h.wait(10)

    def stop_children(self) -> None:
        for c in self.children:
            c.close()
        if self.server is not None:
            self.server.close()

    def finish(self, started: float) -> int:
        a = self.args
        if a.only_ab:
            self.stop_children()
        self.numbers["seconds"] = round(time.monotonic() - started, 1)
        self.numbers["loadavg_end"] = os.getloadavg()[0]
        self.numbers["other_cpu_users_end"] = other_cpu_users(os.getpid())
        table = summary(self)
        print()
        print(table)
        failed = [c for c in self.checks if not c.ok]
        checks = [c for c in self.checks if not c.info]
        print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed in {self.numbers['seconds']}s")
        if a.json:
            Path(a.json).write_text(
                json.dumps({"numbers": self.numbers, "checks": [c.__dict__ for c in self.checks]}, indent=1)
            )
        if a.write_doc:
            write_doc(self, table)
            print(f"results written to {DOC.relative_to(ROOT)}")
        return 1 if failed else 0
