"""End-to-end WebSocket echo benchmark: wsnest compiled core vs pure core,
with a bare trio byte echo as the ceiling.

    python bench/bench_echo.py            # 3 repetitions x 2 s per cell, ~1.5 min
    python bench/bench_echo.py --quick    # 1 repetition x 1 s per cell, ~20 s

Every server (``bench/servers.py``) runs in its own process pinned to CPU 0;
the load client (``bench/loadclient.py``: picows on uvloop) runs in its own
process pinned to CPU 1. The two wsnest columns run the same code; the pure
one gets ``WSNEST_NO_EXTENSIONS=1`` and each server's READY line must report
the core asked for, or the run aborts (``--allow-core-mismatch`` to go on).

Within each repetition all servers are up and the implementations take
turns per scenario (compiled, pure, trio-raw, compiled, ...; the starting
one rotates per repetition), so a burst of machine noise hits them alike.
Each cell reports the median over repetitions and the spread (min-max),
plus the CPU fraction of the server process (``/proc/PID/stat``) and of the
client process over the same window. A client near 1.0 CPU means the client
may be the limit; in ping-pong the two take turns, so neither reaches 1.0.

The trio-raw echo speaks no WebSocket: the client skips the handshake,
sends the same masked frames and counts echoed bytes. It only runs the
single-connection 64 B scenarios (other cells ``n/a``). It bounds batched
throughput (pipelined64); in ping-pong it is no ceiling, since trio's
stream calls each go through the scheduler (see its server us/msg).

The output ends with ``RATIO`` lines, speed(A)/speed(B) of the medians:
``RATIO echo_<scenario>_compiled_vs_pure`` and, where measured,
``RATIO echo_<scenario>_compiled_vs_trio_raw``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field

import loadclient
import servers
from _util import machine_summary, markdown_table, set_affinity

SERVER_CPU = 0
CLIENT_CPU = 1


@dataclass(frozen=True)
class Impl:
    """One column: a server from ``servers.SERVERS`` in a given environment."""

    label: str
    server: str
    env: dict[str, str | None]  # None: remove the variable
    expect_core: str | None
    scenarios: frozenset[str] | None = None  # None: all

    def runs(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios


IMPLS = [
    Impl("compiled", "wsnest", {"WSNEST_NO_EXTENSIONS": None}, "compiled"),
    Impl("pure", "wsnest", {"WSNEST_NO_EXTENSIONS": "1", "WSNEST_REQUIRE_EXTENSIONS": None}, "pure"),
    Impl("trio_raw", "trio-raw", {}, None, frozenset({"pingpong64", "pipelined64"})),
]


@dataclass
class Cell:
    rates: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_us: list[float] = field(default_factory=list)  # server CPU microseconds per message
    errors: list[str] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


def impl_env(impl: Impl) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in impl.env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def pinning() -> tuple[int | None, int | None]:
    """(server CPU, client CPU), or (None, None) if we cannot pin both apart."""
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    allowed = os.sched_getaffinity(0)
    if SERVER_CPU in allowed and CLIENT_CPU in allowed:
        return SERVER_CPU, CLIENT_CPU
    return None, None


def cpu_available(cpu: int | None, seconds: float = 0.25) -> float | None:
    """CPU fraction a busy loop gets on ``cpu`` (1.0 = the core is ours alone).

    Well below 1.0 means other work shares the core, so rates are depressed
    and a saturated process shows this value, not 1.0, as its CPU fraction.
    """
    if cpu is None or not hasattr(os, "sched_getaffinity"):
        return None
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {cpu})
        t0, c0 = time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            pass
        return (time.process_time() - c0) / (time.perf_counter() - t0)
    finally:
        os.sched_setaffinity(0, before)


def start_servers(impls: list[Impl], cpu: int | None, allow_mismatch: bool) -> dict[str, servers.ServerProcess]:
    procs: dict[str, servers.ServerProcess] = {}
    try:
        for impl in impls:
            proc = servers.ServerProcess(impl.server, env=impl_env(impl), cpu=cpu).start()
            procs[impl.label] = proc
            core = proc.info.get("core")
            if impl.expect_core is not None and core != impl.expect_core:
                msg = (
                    f"*** CORE MISMATCH: column {impl.label!r} asked for the {impl.expect_core} core "
                    f"but the server reports core={core} ***"
                )
                if not allow_mismatch:
                    hint = ""
                    if impl.expect_core == "compiled":
                        hint = (
                            "\nIs wsnest.core._frames_c built? Try: pip install -e . --no-build-isolation"
                            "\n(or pass --allow-core-mismatch to measure anyway)"
                        )
                    raise SystemExit(msg + hint)
                print(msg, file=sys.stderr)
    except BaseException:
        stop_servers(procs)
        raise
    return procs


def stop_servers(procs: dict[str, servers.ServerProcess]) -> None:
    for proc in procs.values():
        code = proc.stop()
        if code not in (0, None):
            print(f"warning: server {proc.name} exited with {code}", file=sys.stderr)


def ratios_of(cells: dict[tuple[str, str], Cell], scenarios: list[str]) -> list[tuple[str, float]]:
    """``(name, speed(compiled)/speed(other))`` for every measured pair."""
    out = []
    for scenario in scenarios:
        compiled = cells.get((scenario, "compiled"))
        for other in ("pure", "trio_raw"):
            cell = cells.get((scenario, other))
            if compiled is None or cell is None or compiled.median is None or cell.median is None:
                continue
            out.append((f"echo_{scenario}_compiled_vs_{other}", compiled.median / cell.median))
    return out


def render_tables(cells: dict[tuple[str, str], Cell], impls: list[Impl], scenarios: list[str]) -> tuple[str, str]:
    """The throughput table and the CPU table, in markdown."""
    ratios = dict(ratios_of(cells, scenarios))
    head1 = ["scenario", "unit", *(i.label for i in impls), "compiled/pure", "compiled/trio_raw"]
    head2 = ["scenario", *(f"CPU s/c {i.label}" for i in impls), *(f"server us/msg {i.label}" for i in impls)]
    rows1, rows2 = [], []
    for scenario in scenarios:
        row1 = [scenario, loadclient.SCENARIOS[scenario].unit]
        cpu_cells, per_msg = [], []
        for impl in impls:
            cell = cells.get((scenario, impl.label))
            if cell is None:
                row1.append("n/a")
                cpu_cells.append("n/a")
                per_msg.append("n/a")
                continue
            if not cell.rates:
                row1.append("error")
                cpu_cells.append("-")
                per_msg.append("-")
                continue
            spread = f" [{fmt_rate(min(cell.rates))}-{fmt_rate(max(cell.rates))}]" if len(cell.rates) > 1 else ""
            failed = f" ({len(cell.errors)} failed)" if cell.errors else ""
            row1.append(f"{fmt_rate(cell.median)}{spread}{failed}")
            cpu_cells.append(f"{fmt_cpu(cell.server_cpu)}/{fmt_cpu(cell.client_cpu)}")
            per_msg.append(f"{statistics.median(cell.server_us):.2f}" if cell.server_us else "-")
        for other in ("pure", "trio_raw"):
            value = ratios.get(f"echo_{scenario}_compiled_vs_{other}")
            row1.append("n/a" if value is None else f"{value:.2f}")
        rows1.append(row1)
        rows2.append([scenario, *cpu_cells, *per_msg])
    return markdown_table(head1, rows1), markdown_table(head2, rows2)


def fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    return f"{value:.1f}"


def fmt_cpu(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="wsnest end-to-end echo benchmark (compiled vs pure vs trio-raw)")
    parser.add_argument("--quick", action="store_true", help="1 repetition, 1 s per cell")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="measured seconds per cell (default 2; 1 with --quick)")
    parser.add_argument("--warmup", type=float, default=0.3, help="warm-up seconds per cell (default 0.3)")
    parser.add_argument(
        "--scenario",
        action="append",
        choices=sorted(loadclient.SCENARIOS),
        help="run only this scenario (repeatable; default all)",
    )
    parser.add_argument(
        "--window",
        type=int,
        help=f"messages in flight in pipelined64 (default {loadclient.SCENARIOS['pipelined64'].window})",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs 0 and 1")
    parser.add_argument(
        "--allow-core-mismatch",
        action="store_true",
        help="measure even if a server's core is not the one asked for (the table says which ran)",
    )
    args = parser.parse_args(argv)
    reps = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (1.0 if args.quick else 2.0)
    scenarios = args.scenario or list(loadclient.SCENARIOS)
    if reps < 1 or duration <= 0:
        parser.error("--repeat and --duration must be positive")

    server_cpu, client_cpu = (None, None) if args.no_pin else pinning()
    avail_before = {c: cpu_available(c) for c in (server_cpu, client_cpu) if c is not None}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if client_cpu is not None:
        # This process only waits; keep it off the server's CPU.
        set_affinity(os.getpid(), client_cpu)

    impls = IMPLS
    cells = {(s, i.label): Cell() for s in scenarios for i in impls if i.runs(s)}
    cores: dict[str, set[str]] = {i.label: set() for i in impls}
    loops: set[str] = set()
    t_start = time.monotonic()
    for rep in range(reps):
        order = impls[rep % len(impls) :] + impls[: rep % len(impls)]
        procs = start_servers(order, server_cpu, args.allow_core_mismatch)
        try:
            for impl in order:
                cores[impl.label].add(procs[impl.label].info.get("core", "?"))
            for scenario in scenarios:
                for impl in order:
                    if not impl.runs(scenario):
                        continue
                    proc = procs[impl.label]
                    cell = cells[(scenario, impl.label)]
                    try:
                        res = loadclient.run_loadclient(
                            proc.url,
                            scenario,
                            duration,
                            warmup=args.warmup,
                            server_pid=proc.pid,
                            cpu=client_cpu,
                            window=args.window if loadclient.SCENARIOS[scenario].window > 1 else None,
                        )
                    except RuntimeError as exc:
                        cell.errors.append(str(exc))
                        print(f"ERROR {scenario} {impl.label}: {exc}", file=sys.stderr)
                        continue
                    loops.add(res.get("loop", "?"))
                    if res.get("error") or res.get("rate") is None:
                        cell.errors.append(str(res.get("error")))
                        print(f"ERROR {scenario} {impl.label}: {res.get('error')}", file=sys.stderr)
                        continue
                    cell.rates.append(res["rate"])
                    cell.client_cpu.append(res["client_cpu"])
                    if "server_cpu" in res:
                        cell.server_cpu.append(res["server_cpu"])
                        if res["messages"]:
                            cell.server_us.append(res["server_cpu"] * res["seconds"] / res["messages"] * 1e6)
                    print(
                        f"# rep {rep + 1}/{reps} {scenario:<14} {impl.label:<9} {fmt_rate(res['rate']):>11} "
                        f"{res['unit']:<6} server_cpu={res.get('server_cpu', '-')} client_cpu={res['client_cpu']}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if proc.proc is not None and proc.proc.poll() is not None:
                        raise SystemExit(f"server {impl.label} died during {scenario}")
        finally:
            stop_servers(procs)
    elapsed = time.monotonic() - t_start
    avail_after = {c: cpu_available(c) for c in (server_cpu, client_cpu) if c is not None}
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    # -- report ------------------------------------------------------------------
    pin_text = f"server on CPU {server_cpu}, client on CPU {client_cpu}" if server_cpu is not None else "not pinned"
    print("# wsnest end-to-end echo benchmark")
    print()
    print(f"- machine: {machine_summary()}")
    print(f"- client: picows on {', '.join(sorted(loops)) or '?'}; {pin_text}")
    print("- cores reported by the servers: " + ", ".join(f"{k}={'/'.join(sorted(v))}" for k, v in cores.items()))
    print(f"- {reps} repetition(s) x {duration:g} s per cell (+{args.warmup:g} s warm-up); {elapsed:.0f} s in all")
    window = args.window or loadclient.SCENARIOS["pipelined64"].window
    print(f"- pipelined64 keeps {window} messages in flight, refilled a quarter at a time")
    if avail_before:
        avail = ", ".join(
            f"CPU {c}: {avail_before[c]:.2f} before, {avail_after.get(c) or 0:.2f} after" for c in avail_before
        )
        print(f"- busy-loop CPU fraction (1.00 = core not shared): {avail}")
    if load_before is not None and load_after is not None:
        print(f"- load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    print("- throughput: median [min-max] over repetitions; ratios are of the medians")
    print(
        "- CPU: fraction of one core used during the window by the server/client process (median), and"
        " server CPU time per message (per round trip in ping-pong), which other load on the machine"
        " disturbs much less than the rates"
    )
    print()
    throughput, cpu = render_tables(cells, impls, scenarios)
    print(throughput)
    print()
    print(cpu)
    print()
    for name, value in ratios_of(cells, scenarios):
        print(f"RATIO {name} {value:.2f}")
    shared = [c for c, v in {**avail_before, **avail_after}.items() if v is not None and v < 0.9]
    if shared:
        print(
            f"\nWARNING: CPU(s) {sorted(set(shared))} were shared with other work (busy loop got < 0.90 of a core); "
            "these numbers are depressed and noisy",
            file=sys.stderr,
        )
    failed = sum(len(c.errors) for c in cells.values())
    if failed:
        print(f"\n{failed} run(s) failed; see the errors above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
