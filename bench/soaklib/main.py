"""The soak's entry point: the options, the phases in order, the children's dispatch."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time
from dataclasses import dataclass

from _util import raise_fd_limit, set_affinity
from soaklib.common import CLIENT_CPU
from soaklib.phase_faults import FaultPhases
from soaklib.phase_load import LoadPhases
from soaklib.phase_shutdown import ShutdownPhase
from soaklib.phase_tls import TlsPhase
from soaklib.report import other_cpu_users
from soaklib.roles import CHILD_ROLES
from soaklib.server_child import ensure_wsnest_importable

DESCRIPTION = "Soak and fault-injection run for wsnest (loopback only, bounded, stops by itself)."


@dataclass
class Soak(LoadPhases, FaultPhases, ShutdownPhase, TlsPhase):
    """A whole soak run: the phases in order."""

    def run(self) -> int:
        a = self.args
        started = time.monotonic()
        self.numbers["date"] = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
        self.numbers["other_cpu_users"] = other_cpu_users(os.getpid())
        self.numbers["loadavg_start"] = os.getloadavg()[0]
        if self.numbers["other_cpu_users"]:
            self.log(f"note: other busy processes on this machine: {', '.join(self.numbers['other_cpu_users'])}")
        try:
            if not a.only_tls:
                self.start_server()
                holders = self.phase_ab()
                if a.only_ab:
                    return self.finish(started)
                self.phase_c()
                self.phase_d(a.idle)
                self.phase_e(label=" (under load)")
                for core in a.fresh_bomb_cores:
                    self.bombs_on_fresh_server(core)
                self.phase_f(holders, a.idle)
            self.phase_g()
        except Exception as exc:
            self.check("run", "completed", f"{type(exc).__name__}: {exc}"[:2000], "no error", False)
            if self.server is not None:
                with contextlib.suppress(Exception):
                    self.log(f"server stderr:\n{self.server.stderr_text()}")
        finally:
            if not a.only_ab:
                self.stop_children()
        return self.finish(started)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=DESCRIPTION)
    p.add_argument("--short", action="store_true", help="CI-sized run (about 40 s)")
    p.add_argument("--duration", type=float, help="seconds per echo measurement (full 10, short 3)")
    p.add_argument("--idle", type=int, help="idle connections (full 10000, short 500)")
    p.add_argument("--slowloris", type=int, help="slowloris connections (full 1000, short 100)")
    p.add_argument("--echo", type=int, help="echo clients (full 50, short 10)")
    p.add_argument("--write-doc", action=argparse.BooleanOptionalAction, default=None, help="write docs/reliability.md")
    p.add_argument("--json", help="also write the raw numbers to this file")
    p.add_argument(
        "--handshake-timeout",
        type=float,
        help="server handshake_timeout, the slowloris drop time (full: the default, 10 s; short: 2 s)",
    )
    p.add_argument(
        "--rounds", type=int, help="A/B rounds, alternating (full 3, short 1): more average out the machine's noise"
    )
    p.add_argument("--only-ab", action="store_true", help="run phases A and B only (echo under load); prints only")
    p.add_argument("--only-tls", action="store_true", help="run phase G only (TLS); prints only")
    a = p.parse_args(argv)
    full = not a.short
    defaults = {
        "duration": 10.0 if full else 3.0,
        "idle": 10_000 if full else 500,
        "slowloris": 1000 if full else 100,
        "echo": 50 if full else 10,
        "write_doc": full and not a.only_ab and not a.only_tls,
    }
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    a.idle_per_proc = 5000
    if a.rounds is None:
        a.rounds = 3 if full else 1
    ensure_wsnest_importable()
    from wsnest import Limits

    if a.handshake_timeout is None:
        # Full run: the server's default, as deployed; the CI-sized run uses
        # 2 s so that the drops happen within its few seconds.
        a.handshake_timeout = Limits().handshake_timeout if full else 2.0
    a.close_timeout = 3.0 if full else 1.5
    a.high_water = 256 * 1024
    a.small_limit = 64 * 1024
    a.slow_readers = 100 if full else 20
    a.fast_readers = 10 if full else 3
    a.bcast_count = 2000 if full else 300
    a.bcast_size = 16 * 1024
    a.bcast_rate = 400.0 if full else 300.0
    a.faults = 200 if full else 20
    a.raise_conns = 150 if full else 15
    a.raise_messages = 1000 if full else 100
    a.bomb_headers = 20 if full else 3
    a.bomb_conns = 20 if full else 3
    a.fragments = 100_000
    a.flood_readers = 20 if full else 4
    a.flood_count = 500 if full else 200
    a.flood_size = 4096
    # A reader taking ~1 MB/s while 10 MB are queued: still reading when the
    # shutdown gives up on it (close_timeout + 0.5 s).
    a.trickle_size = 100
    a.trickle_rate = 2_000_000
    a.trickle_count = int((a.close_timeout * a.trickle_rate + 6_000_000) / (a.trickle_size + 2))
    a.fresh_bomb_cores = ["compiled", "pure"] if full else []
    # G (TLS). The short run uses 4 s timeouts, long enough to open every
    # connection and read the server's RSS before the first drops.
    a.tls_handshake_timeout = a.handshake_timeout if full else 4.0
    a.tls_keepalive_timeout = Limits().keepalive_timeout if full else 4.0
    a.tls_idle = 500 if full else 100  # of each kind: warm-up, fresh, keep-alive
    a.tls_half_open = 500 if full else 50  # of each kind: nothing, ClientHello less a byte, 60 KB one
    a.tls_readers = 20 if full else 4
    a.tls_echoers = 3 if full else 2
    a.feed_count = 100  # messages asked for by each feed request (5 per second per reader)
    a.feed_size = 64 * 1024
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_child":
        return int(CHILD_ROLES[argv[1]](json.loads(argv[2])) or 0)
    args = parse_args(argv)
    raise_fd_limit()
    set_affinity(0, CLIENT_CPU)  # this process (the fault injector) stays off the server's CPU
    return Soak(args).run()
