"""The end-to-end WebSocket suite: wsnest (compiled and pure core) against
picows, aiohttp, websockets (asyncio and trio), trio-websocket and a bare
trio TCP echo, over nine scenarios.

    python bench/bench_suite.py                 # 3 repetitions x 2 s per cell, ~15 min
    python bench/bench_suite.py --quick         # 1 repetition x 0.6 s per cell, ~2.5 min
    python bench/bench_suite.py --servers wsnest,picows --scenarios pingpong64,broadcast64

Rows (scenarios; ``bench/loadclient.py`` has the details):

=================  ======================================================  ============
``pingpong64``     64 B ping-pong, 1 connection                             round trips/s
``pipelined64``    64 B pipelined (256 in flight), 1 connection            msgs/s
``pingpong64x50``  64 B ping-pong, 50 connections                           msgs/s
``binary1m``       1 MiB binary echo, 1 connection                          MB/s
``text16m``        16 MiB ASCII text echo                                   MB/s
``utf8mix16m``     16 MiB text echo, mixed 1-4 byte UTF-8 characters        MB/s
``frag1m``         1 MiB sent as 64 x 16 KiB fragments                      MB/s
``broadcast64``    one trigger client, the server broadcasts 64 B to 200    deliveries/s
``idle2000``       server RSS delta / 2,000 idle handshaken connections     KiB/conn
=================  ======================================================  ============

Columns (servers; ``bench/servers.py`` has the details): ``wsnest``
(compiled core), ``wsnest-pure`` (``WSNEST_NO_EXTENSIONS=1``), ``picows``,
``aiohttp``, ``websockets`` (asyncio), ``websockets-trio``,
``trio-websocket``, ``trio-raw`` (a plain trio TCP byte echo: no handshake,
no parsing; the 64 B rows and ``binary1m`` only, ``n/a`` elsewhere).
Only when named in ``--servers``: ``trio-floor`` and ``uvloop-floor``, the
least a server on each event loop does per read (a raw socket echo: trio's
``wait_readable`` + ``recv`` + ``send``; an ``asyncio.Protocol`` on uvloop),
on the two ping-pong rows: what the loops themselves cost per round trip.
permessage-deflate is off and message limits are 64 MiB everywhere; every
echo answers with the incoming frame type; text is delivered to the
application as ``str`` (decoded and validated) except by picows, which does
neither (and echoes frame by frame, without reassembly).

Method: every server runs in its own process pinned to CPU 0, the load
client (picows on uvloop, compiled) in its own process pinned to CPU 1, and
so is this script. Each repetition starts all servers, then runs the
scenarios in turn, the servers taking turns per scenario (the starting one
rotates per repetition). ``idle2000`` uses a fresh server process per cell
(so memory freed by earlier big messages does not hide the cost). Reported:
median [min-max] over the repetitions; the server's and the client's CPU
fraction over the window, and the server's CPU time per unit (message,
round trip, delivery or MB), which a busy machine disturbs far less than
the rates.

Output: the table (markdown) with the ratios wsnest/picows,
wsnest/trio-websocket and (64 B rows) wsnest/trio-raw, the targets with
PASS/MISS, then ``RATIO suite_<scenario>_wsnest_vs_<other> X`` lines. For
``idle2000`` the ratio is inverted (other KiB / wsnest KiB), so above 1.0
means wsnest uses less memory. A full unfiltered run saves
``bench/results/suite.md``, ``suite.png`` (chart) and ``suite.json``
(raw results, not committed); ``--quick`` or filtered runs save only with
``--save``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import loadclient
import servers
from _util import machine_summary, markdown_table, raise_fd_limit, set_affinity
from bench_echo import Impl, cpu_available, fmt_rate, impl_env, pinning

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    key: str  # loadclient scenario
    label: str
    unit: str  # as shown in the table
    cpu_unit: str  # what the server CPU time is divided by
    lower_is_better: bool = False
    fresh_server: bool = False
    is_64b: bool = False


ROWS = [
    Row("pingpong64", "64 B ping-pong, 1 conn", "rt/s", "rt", is_64b=True),
    Row("pipelined64", "64 B pipelined, 1 conn", "msg/s", "msg", is_64b=True),
    Row("pingpong64x50", "64 B ping-pong, 50 conns", "msg/s", "msg", is_64b=True),
    Row("binary1m", "1 MiB binary echo", "MB/s", "MB"),
    Row("text16m", "16 MiB ASCII text echo", "MB/s", "MB"),
    Row("utf8mix16m", "16 MiB mixed UTF-8 text echo", "MB/s", "MB"),
    Row("frag1m", "1 MiB as 64 x 16 KiB fragments", "MB/s", "MB"),
    Row("broadcast64", "broadcast 64 B to 200 clients", "deliveries/s", "delivery"),
    Row("idle2000", "RSS per idle connection (2,000 open)", "KiB/conn", "-", lower_is_better=True, fresh_server=True),
]
ROW_BY_KEY = {r.key: r for r in ROWS}

RAW_ROWS = frozenset({"pingpong64", "pipelined64", "pingpong64x50", "binary1m"})
FLOOR_ROWS = frozenset({"pingpong64", "pingpong64x50"})
# The wsnest columns run this checkout's src/ (as --baseline runs its own):
# an installed wsnest would otherwise shadow it in the server processes.
_SRC = Path(__file__).resolve().parent.parent / "src"
_SRC_PATH = os.pathsep.join(filter(None, [str(_SRC), os.environ.get("PYTHONPATH")]))
COLUMNS = [
    Impl("wsnest", "wsnest", {"WSNEST_NO_EXTENSIONS": None, "PYTHONPATH": _SRC_PATH}, "compiled"),
    Impl(
        "wsnest-pure",
        "wsnest",
        {"WSNEST_NO_EXTENSIONS": "1", "WSNEST_REQUIRE_EXTENSIONS": None, "PYTHONPATH": _SRC_PATH},
        "pure",
    ),
    Impl("wsnest-async", "wsnest-async", {"WSNEST_NO_EXTENSIONS": None, "PYTHONPATH": _SRC_PATH}, "compiled"),
    Impl("picows", "picows", {}, None),
    Impl("aiohttp", "aiohttp", {}, None),
    Impl("websockets", "websockets", {}, None),
    Impl("websockets-trio", "websockets-trio", {}, None),
    Impl("trio-websocket", "trio-websocket", {}, None),
    Impl("trio-raw", "trio-raw", {}, None, RAW_ROWS),
    # The event loops' own price per round trip, with no WebSocket at all
    # (see servers.py); only when named in --servers.
    Impl("trio-floor", "trio-floor", {}, None, FLOOR_ROWS),
    Impl("uvloop-floor", "uvloop-floor", {}, None, FLOOR_ROWS),
]
COLUMN_BY_LABEL = {c.label: c for c in COLUMNS}
OPT_IN_COLUMNS = frozenset({"trio-floor", "uvloop-floor"})

# What wsnest is compared with: (column, ratio name suffix, rows it applies to, target)
COMPARISONS = [
    ("picows", "picows", None, 1.0),
    ("trio-websocket", "trio_websocket", None, 10.0),
    ("trio-raw", "trio_raw", "64b", 0.8),
]
RSS_TARGET_KIB = 12.0


@dataclass
class Cell:
    rates: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    cpu_per_unit: list[float] = field(default_factory=list)  # server CPU us per unit of work
    errors: list[str] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates else None


def units_of_work(row: Row, res: dict[str, Any]) -> float:
    """How many ``row.cpu_unit`` the result's window held."""
    if row.cpu_unit == "MB":
        return res["messages"] * res["size"] / 1e6
    return float(res["messages"])


def ratio(row: Row, wsnest: float | None, other: float | None) -> float | None:
    """wsnest over other, inverted for lower-is-better rows (above 1.0 = wsnest better)."""
    if wsnest is None or other is None or wsnest <= 0 or other <= 0:
        return None
    return other / wsnest if row.lower_is_better else wsnest / other


def ratios_of(cells: dict[tuple[str, str], Cell], rows: list[Row]) -> list[tuple[str, Row, str, float]]:
    """``(RATIO name, row, other column, value)`` for every measured pair."""
    out = []
    for row in rows:
        ws = cells.get((row.key, "wsnest"))
        for column, suffix, only, _ in COMPARISONS:
            if only == "64b" and not row.is_64b:
                continue
            other = cells.get((row.key, column))
            if ws is None or other is None:
                continue
            value = ratio(row, ws.median, other.median)
            if value is not None:
                out.append((f"suite_{row.key}_wsnest_vs_{suffix}", row, column, value))
    return out


def targets_of(cells: dict[tuple[str, str], Cell], rows: list[Row]) -> list[tuple[str, str, str, bool]]:
    """``(row label, target, measured, passed)`` for every target that can be judged."""
    out = []
    ratios = {(row.key, column): value for _, row, column, value in ratios_of(cells, rows)}
    for row in rows:
        for column, _, only, target in COMPARISONS:
            if only == "64b" and not row.is_64b:
                continue
            if row.lower_is_better and column == "trio-websocket":
                continue  # the RSS row has its own absolute target
            value = ratios.get((row.key, column))
            if value is None:
                continue
            what = f"wsnest {'uses <=' if row.lower_is_better else '>='} {target:g}x {column}"
            if row.lower_is_better:
                what = f"wsnest KiB <= {column} KiB (ratio >= {target:g})"
            out.append((row.label, what, f"{value:.2f}x", value >= target))
        if row.lower_is_better:
            ws = cells.get((row.key, "wsnest"))
            if ws is not None and ws.median is not None:
                out.append(
                    (
                        row.label,
                        f"<= {RSS_TARGET_KIB:g} KiB per idle connection",
                        f"{ws.median:.1f} KiB",
                        ws.median <= RSS_TARGET_KIB,
                    )
                )
    return out


# -- running -------------------------------------------------------------------


def start_server(column: Impl, cpu: int | None) -> servers.ServerProcess:
    proc = servers.ServerProcess(column.server, env=impl_env(column), cpu=cpu).start()
    core = proc.info.get("core")
    if column.expect_core is not None and core != column.expect_core:
        proc.stop()
        hint = ""
        if column.expect_core == "compiled":
            hint = "\nIs wsnest.core._frames_c built? Try: pip install -e . --no-build-isolation"
        raise SystemExit(
            f"column {column.label!r} asked for the {column.expect_core} core, server says core={core}{hint}"
        )
    return proc


def stop_all(procs: dict[str, servers.ServerProcess]) -> None:
    for proc in procs.values():
        try:
            code = proc.stop()
        except Exception as exc:  # keep stopping the others
            print(f"warning: stopping {proc.name}: {exc!r}", file=sys.stderr)
            continue
        if code not in (0, None):
            print(f"warning: server {proc.name} exited with {code}", file=sys.stderr)


def measure_cell(
    row: Row, proc: servers.ServerProcess, duration: float, warmup: float, client_cpu: int | None
) -> dict[str, Any]:
    return loadclient.run_loadclient(
        proc.url, row.key, duration, warmup=warmup, server_pid=proc.pid, cpu=client_cpu, timeout=duration + 90
    )


def run_suite(
    rows: list[Row],
    columns: list[Impl],
    reps: int,
    duration: float,
    warmup: float,
    server_cpu: int | None,
    client_cpu: int | None,
) -> tuple[dict[tuple[str, str], Cell], dict[str, dict[str, str]]]:
    cells = {(r.key, c.label): Cell() for r in rows for c in columns if c.runs(r.key)}
    infos: dict[str, dict[str, str]] = {}
    total = len(cells) * reps
    done = 0
    for rep in range(reps):
        shift = rep % len(columns)
        order = columns[shift:] + columns[:shift]
        procs: dict[str, servers.ServerProcess] = {}
        try:
            for column in order:
                procs[column.label] = start_server(column, server_cpu)
                infos[column.label] = dict(procs[column.label].info)
            for row in rows:
                for column in order:
                    if not column.runs(row.key):
                        continue
                    done += 1
                    cell = cells[(row.key, column.label)]
                    prefix = f"[{done}/{total}] {row.key} {column.label} rep {rep + 1}/{reps} ..."
                    print(prefix, end=" ", file=sys.stderr, flush=True)
                    fresh = None
                    try:
                        if row.fresh_server:
                            fresh = start_server(column, server_cpu)
                            proc = fresh
                        else:
                            proc = procs[column.label]
                            if proc.proc is None or proc.proc.poll() is not None:
                                print(f"(restarting dead server {column.label})", end=" ", file=sys.stderr)
                                proc.stop()
                                proc = procs[column.label] = start_server(column, server_cpu)
                        res = measure_cell(row, proc, duration, warmup, client_cpu)
                    except RuntimeError as exc:
                        cell.errors.append(str(exc))
                        print(f"ERROR {str(exc)[:300]}", file=sys.stderr, flush=True)
                        continue
                    finally:
                        if fresh is not None:
                            fresh.stop()
                    res["rep"] = rep + 1
                    cell.results.append(res)
                    if res.get("error") or res.get("rate") is None:
                        cell.errors.append(str(res.get("error")))
                        print(f"ERROR {res.get('error')}", file=sys.stderr, flush=True)
                        continue
                    cell.rates.append(res["rate"])
                    cell.client_cpu.append(res["client_cpu"])
                    extra = ""
                    if "server_cpu" in res and not row.lower_is_better:
                        cell.server_cpu.append(res["server_cpu"])
                        work = units_of_work(row, res)
                        if work:
                            cell.cpu_per_unit.append(res["server_cpu"] * res["seconds"] / work * 1e6)
                        extra = f" (server CPU {res['server_cpu']:.2f}, client CPU {res['client_cpu']:.2f})"
                    elif row.lower_is_better:
                        extra = f" (VmRSS {res.get('rss_before_kib')} -> {res.get('rss_after_kib')} KiB)"
                    if res.get("missing_deliveries"):
                        extra += f" [{res['missing_deliveries']} deliveries missing]"
                    print(f"{fmt_value(res['rate'])} {row.unit}{extra}", file=sys.stderr, flush=True)
        finally:
            stop_all(procs)
    return cells, infos


# -- report ------------------------------------------------------------------------


def fmt_value(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 100:
        return f"{value:.1f}"
    return fmt_rate(value)


def fmt_cell(cell: Cell | None) -> str:
    if cell is None:
        return "n/a"
    if not cell.rates:
        return "error"
    text = fmt_value(cell.median)
    if len(cell.rates) > 1:
        text += f" [{fmt_value(min(cell.rates))}-{fmt_value(max(cell.rates))}]"
    if cell.errors:
        text += f" ({len(cell.errors)} failed)"
    return text


def fmt_cpu_per_unit(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.1f} ms"
    return f"{value:.1f} us" if value >= 10 else f"{value:.2f} us"


def render_main_table(cells: dict[tuple[str, str], Cell], rows: list[Row], columns: list[Impl]) -> str:
    ratios = {(row.key, column): value for _, row, column, value in ratios_of(cells, rows)}
    labels = [c.label for c in columns]
    comps = [(col, suffix, only) for col, suffix, only, _ in COMPARISONS if col in labels and "wsnest" in labels]
    head = ["scenario", "unit", *labels, *(f"wsnest/{col}" for col, _, _ in comps)]
    body = []
    for row in rows:
        line = [row.label, row.unit + (" (lower is better)" if row.lower_is_better else "")]
        line += [fmt_cell(cells.get((row.key, c.label))) for c in columns]
        for col, _, only in comps:
            if only == "64b" and not row.is_64b:
                line.append("n/a")
                continue
            value = ratios.get((row.key, col))
            line.append("-" if value is None else f"{value:.2f}x")
        body.append(line)
    return markdown_table(head, body)


def render_cpu_table(cells: dict[tuple[str, str], Cell], rows: list[Row], columns: list[Impl]) -> str:
    head = ["scenario", "server CPU per", *(c.label for c in columns)]
    body = []
    for row in rows:
        if row.lower_is_better:
            continue
        line = [row.label, row.cpu_unit]
        for column in columns:
            cell = cells.get((row.key, column.label))
            if cell is None:
                line.append("n/a")
            elif not cell.cpu_per_unit:
                line.append("-")
            else:
                line.append(
                    f"{fmt_cpu_per_unit(statistics.median(cell.cpu_per_unit))} "
                    f"({statistics.median(cell.server_cpu):.2f}/{statistics.median(cell.client_cpu):.2f})"
                )
        body.append(line)
    return markdown_table(head, body)


def render_targets(cells: dict[tuple[str, str], Cell], rows: list[Row]) -> str:
    body = [[label, what, value, "PASS" if ok else "MISS"] for label, what, value, ok in targets_of(cells, rows)]
    return markdown_table(["scenario", "target", "measured", "result"], body) if body else "(no target measurable)"


def render_chart(
    cells: dict[tuple[str, str], Cell], rows: list[Row], columns: list[Impl], path: Path, title: str
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no chart", file=sys.stderr)
        return False
    ncols = 3 if len(rows) > 4 else max(1, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.6 * ncols, 0.42 * len(columns) * nrows + 1.3 * nrows), squeeze=False
    )
    palette = {
        "wsnest": "#d62728",
        "wsnest-pure": "#ff9896",
        "wsnest-async": "#e377c2",
        "picows": "#1f77b4",
        "aiohttp": "#2ca02c",
        "websockets": "#9467bd",
        "websockets-trio": "#c5b0d5",
        "trio-websocket": "#8c564b",
        "trio-raw": "#7f7f7f",
        "trio-floor": "#bcbd22",
        "uvloop-floor": "#17becf",
    }
    for ax, row in zip(axes.flat, rows, strict=False):
        labels, values, lows, highs, colors = [], [], [], [], []
        for column in columns:
            cell = cells.get((row.key, column.label))
            if cell is None or cell.median is None:
                continue
            labels.append(column.label)
            values.append(cell.median)
            lows.append(cell.median - min(cell.rates))
            highs.append(max(cell.rates) - cell.median)
            colors.append(palette.get(column.label, "#17becf"))
        ys = list(range(len(labels)))[::-1]
        ax.barh(ys, values, color=colors, xerr=[lows, highs] if len(values) else None, ecolor="#444444", capsize=2)
        ax.set_yticks(ys, labels, fontsize=8)
        top = max(v + h for v, h in zip(values, highs, strict=True)) if values else 1.0
        for y, v, h in zip(ys, values, highs, strict=True):
            ax.text(v + h + top * 0.02, y, fmt_value(v), va="center", fontsize=7)
        ax.set_xlim(0, top * 1.3)
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:,.0f}"))
        better = "lower is better" if row.lower_is_better else "higher is better"
        ax.set_title(f"{row.label}\n{row.unit}, {better}", fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def load_now() -> float | None:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else None


def other_busy_processes() -> list[str]:
    """Processes using noticeable CPU right now (one ``ps`` snapshot), to
    document a shared machine."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pcpu,pid,args", "--sort=-pcpu", "--no-headers"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    me = os.getpid()
    busy = []
    for line in out.splitlines():
        parts = line.split(None, 2)
        if len(parts) < 3:
            continue
        try:
            pcpu, pid = float(parts[0]), int(parts[1])
        except ValueError:
            continue
        if pcpu >= 20 and pid != me:
            busy.append(f"{parts[2][:70]} ({pcpu:.0f}% CPU)")
    return busy[:5]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="wsnest end-to-end WebSocket suite against other Python servers")
    parser.add_argument("--quick", action="store_true", help="1 repetition, 0.6 s per cell (smoke test)")
    parser.add_argument("--repeat", type=int, help="repetitions (default 3; 1 with --quick)")
    parser.add_argument("--duration", type=float, help="measured seconds per throughput cell (default 2; 0.6 quick)")
    parser.add_argument("--warmup", type=float, help="warm-up seconds per cell (default 0.3; 0.2 quick)")
    parser.add_argument("--servers", help="comma-separated columns: " + ",".join(COLUMN_BY_LABEL))
    parser.add_argument("--scenarios", help="comma-separated rows: " + ",".join(ROW_BY_KEY))
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and client to CPUs 0 and 1")
    save = parser.add_mutually_exclusive_group()
    save.add_argument(
        "--save", action="store_true", help="write bench/results/suite.{md,png,json} (default: full runs)"
    )
    save.add_argument("--no-save", action="store_true", help="do not write bench/results")
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where --save writes (default bench/results)")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="TREE",
        help="add a column 'wsnest-base': the wsnest of another checkout (its src/ with the compiled core built "
        "in place, e.g. a git worktree of the previous commit), interleaved with this one (and "
        "'wsnest-async-base', the same for wsnest-async, when named in --servers); prints "
        "RATIO suite_<row>_wsnest_vs_base lines (target: no row below 0.97)",
    )
    args = parser.parse_args(argv)
    if args.baseline is not None:
        src = args.baseline.resolve() / "src"
        if not (src / "wsnest" / "__init__.py").is_file():
            parser.error(f"--baseline: no src/wsnest in {args.baseline}")
        base = Impl("wsnest-base", "wsnest", {"WSNEST_NO_EXTENSIONS": None, "PYTHONPATH": str(src)}, "compiled")
        COLUMNS.insert(1, base)
        COLUMN_BY_LABEL["wsnest-base"] = base
        # The same for the async on_message server (pick it with --servers).
        async_base = Impl("wsnest-async-base", "wsnest-async", dict(base.env), "compiled")
        COLUMNS.insert(COLUMNS.index(COLUMN_BY_LABEL["wsnest-async"]) + 1, async_base)
        COLUMN_BY_LABEL["wsnest-async-base"] = async_base
        COMPARISONS.insert(0, ("wsnest-base", "base", None, 0.97))

    def pick(text: str | None, table: dict[str, Any], what: str) -> list[Any]:
        if not text:
            return [v for k, v in table.items() if k not in OPT_IN_COLUMNS]
        names = [n.strip() for n in text.split(",") if n.strip()]
        unknown = [n for n in names if n not in table]
        if unknown:
            parser.error(f"unknown {what}: {', '.join(unknown)} (choose from {', '.join(table)})")
        return [table[n] for n in table if n in names]  # table order

    columns = pick(args.servers, COLUMN_BY_LABEL, "server(s)")
    rows = pick(args.scenarios, ROW_BY_KEY, "scenario(s)")
    reps = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    duration = args.duration if args.duration is not None else (0.6 if args.quick else 2.0)
    warmup = args.warmup if args.warmup is not None else (0.2 if args.quick else 0.3)
    if reps < 1 or duration <= 0 or warmup < 0:
        parser.error("--repeat and --duration must be positive")
    filtered = bool(args.servers or args.scenarios)
    do_save = args.save or (not args.no_save and not args.quick and not filtered and args.repeat in (None, 3))

    soft = raise_fd_limit()
    if soft != -1 and soft < 4400 and any(r.key == "idle2000" for r in rows):
        print(f"warning: open-file limit is {soft}; idle2000 needs ~2,100 per process", file=sys.stderr)
    server_cpu, client_cpu = (None, None) if args.no_pin else pinning()
    started = dt.datetime.now(dt.timezone.utc)
    busy_before = other_busy_processes()
    avail_before = {c: cpu_available(c) for c in (server_cpu, client_cpu) if c is not None}
    load_before = load_now()
    if client_cpu is not None:
        set_affinity(os.getpid(), client_cpu)  # this process only waits: off the server's CPU
    n_cells = sum(1 for r in rows for c in columns if c.runs(r.key)) * reps
    print(
        f"# {len(rows)} scenario(s) x {len(columns)} server(s), {reps} repetition(s), {n_cells} cells, "
        f"{duration:g} s per throughput cell; load {load_before}",
        file=sys.stderr,
    )

    t0 = time.monotonic()
    cells, infos = run_suite(rows, columns, reps, duration, warmup, server_cpu, client_cpu)
    elapsed = time.monotonic() - t0
    avail_after = {c: cpu_available(c) for c in (server_cpu, client_cpu) if c is not None}
    load_after = load_now()
    busy_after = other_busy_processes()

    # -- report --------------------------------------------------------------------
    pin = f"servers on CPU {server_cpu}, load client on CPU {client_cpu}" if server_cpu is not None else "not pinned"
    versions = ", ".join(
        f"{label} {info['version']}" for label, info in infos.items() if info.get("version") and info["version"] != "?"
    )
    loops = ", ".join(f"{label}: {info['loop']}" for label, info in infos.items() if "loop" in info)
    lines = [f"# wsnest end-to-end suite ({started:%Y-%m-%d %H:%M} UTC)", ""]
    lines.append(f"- machine: {machine_summary()}")
    lines.append(f"- {pin}; load client: picows on uvloop (compiled), one process per cell")
    lines.append(
        f"- {reps} repetition(s), {duration:g} s per throughput cell (+{warmup:g} s warm-up), "
        f"servers interleaved; {elapsed / 60:.1f} min in all"
    )
    if avail_before:
        avail = ", ".join(
            f"CPU {c}: {avail_before[c]:.2f} before, {(avail_after.get(c) or 0):.2f} after" for c in avail_before
        )
        lines.append(f"- busy-loop CPU share (1.00 = core not shared): {avail}")
    if load_before is not None and load_after is not None:
        lines.append(f"- load average (1 min): {load_before:.2f} before, {load_after:.2f} after")
    lines.append(
        f"- other busy processes (ps, lifetime CPU%): before: {'; '.join(busy_before) or 'none'}; "
        f"after: {'; '.join(busy_after) or 'none'}"
    )
    if versions:
        lines.append(f"- versions: {versions}; event loops: {loops or '-'}")
    cores = ", ".join(f"{label}={infos[label].get('core')}" for label in ("wsnest", "wsnest-pure") if label in infos)
    if cores:
        lines.append(f"- wsnest cores reported by the servers: {cores}")
    lines += ["", "## Results: median [min-max] over repetitions", ""]
    lines.append(render_main_table(cells, rows, columns))
    lines += [
        "",
        "Ratios are of the medians; above 1.00x wsnest is better (for RSS: other KiB / wsnest KiB).",
        "",
        "## Server CPU per unit of work (median), and (server CPU / client CPU) as fractions of a core",
        "",
        render_cpu_table(cells, rows, columns),
        "",
        "A server near 1.00 CPU is the limit of its row; a client near 1.00 would mean the load client is.",
        "In ping-pong the two take turns, so neither reaches 1.00.",
        "",
        "## Targets",
        "",
        render_targets(cells, rows),
        "",
        "## Notes",
        "",
        "- permessage-deflate off everywhere; message limits 64 MiB; echoes answer with the incoming frame type.",
        "- Text is decoded and UTF-8 validated into `str` by wsnest (`textframes=None`), aiohttp, websockets"
        " (both) and trio-websocket. **picows does not validate or decode UTF-8** (its echo sends the raw"
        " payload back as TEXT), and it hands the app frames, not messages: its echo forwards each of the 64"
        " fragments as it arrives, without reassembly. Every other server reassembles the 1 MiB message.",
        "- trio-raw is a trio TCP byte echo (`receive_some(256 KiB)` + `send_all`): no handshake, no parsing;"
        " run on the 64 B rows and `binary1m` only (n/a elsewhere).",
        "- aiohttp, websockets (asyncio) and picows run on uvloop; trio-websocket with its defaults"
        " (`receive_buffer_size=4096`, `message_queue_size=1`) besides `max_message_size`.",
        "- broadcast: 200 receivers on `/bcast`, one trigger on `/trigger` keeping 8 broadcasts in flight"
        " (one counts as done once 200 deliveries came in); deliveries are counted at the receivers."
        " wsnest uses `wsnest.broadcast`, websockets its `broadcast`, the others a loop of sends.",
        "- RSS: a fresh server per cell; 100 warm-up connections, VmRSS, 2,000 more idle handshaken"
        " connections, VmRSS again once it settles; (delta) / 2,000.",
        "- 16 MiB and fragment rows are timed between the first and last echo completing in the window"
        " (stretched until 3 echoes completed).",
    ]
    failed = sum(len(c.errors) for c in cells.values())
    if failed:
        lines.append(f"- {failed} cell run(s) failed (see stderr); medians are over the runs that worked.")
    missing = [
        f"{col}: {sum(r.get('missing_deliveries', 0) for r in cells[(rk, col)].results)}"
        for (rk, col) in cells
        if rk == "broadcast64" and any(r.get("missing_deliveries") for r in cells[(rk, col)].results)
    ]
    if missing:
        lines.append(f"- broadcast deliveries that never arrived: {', '.join(missing)}")
    ratio_lines = [f"RATIO {name} {value:.2f}" for name, _, _, value in ratios_of(cells, rows)]
    lines += ["", "```", *ratio_lines, "```"]
    report = "\n".join(lines) + "\n"
    print(report)

    if do_save:
        out = args.out_dir
        out.mkdir(parents=True, exist_ok=True)
        (out / "suite.md").write_text(report, encoding="utf-8")
        raw = {
            "started": started.isoformat(),
            "reps": reps,
            "duration": duration,
            "infos": infos,
            "cells": {f"{k[0]}|{k[1]}": c.results for k, c in cells.items()},
            "errors": {f"{k[0]}|{k[1]}": c.errors for k, c in cells.items() if c.errors},
        }
        (out / "suite.json").write_text(json.dumps(raw, indent=1), encoding="utf-8")
        title = f"wsnest end-to-end suite, {started:%Y-%m-%d} (median of {reps}, whiskers min-max)"
        if render_chart(cells, rows, columns, out / "suite.png", title):
            print(f"saved {out / 'suite.md'}, {out / 'suite.png'}, {out / 'suite.json'}", file=sys.stderr)
        else:
            print(f"saved {out / 'suite.md'}, {out / 'suite.json'}", file=sys.stderr)
    for busy_cpu in sorted({c for c, v in {**avail_before, **avail_after}.items() if v is not None and v < 0.9}):
        print(f"WARNING: CPU {busy_cpu} was shared with other work: rates are depressed and noisy", file=sys.stderr)
    if failed:
        print(f"{failed} cell run(s) failed; see the errors above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
