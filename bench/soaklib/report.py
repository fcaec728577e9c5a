"""The report: :class:`Check` (one line of the summary), the summary tables,
the other busy processes, and the results block of ``docs/reliability.md``."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _util import machine_summary, markdown_table
from soaklib.common import CLIENT_CPU, DOC, DOC_BEGIN, DOC_END, SERVER_CPU, cpu_seconds
from soaklib.tls_clients import HALF_OPEN_MODES

if TYPE_CHECKING:
    from soaklib.base import SoakBase


@dataclass
class Check:
    phase: str
    what: str
    measured: str
    bound: str
    ok: bool
    info: bool = False  # a measurement without a pass/fail bound


def summary(soak: SoakBase) -> str:
    """The run's tables: every check, the totals, the numbers."""
    rows = [[c.phase, c.what, c.measured, c.bound, "info" if c.info else "ok" if c.ok else "FAIL"] for c in soak.checks]
    checks = markdown_table(["phase", "check", "measured", "bound", "result"], rows)
    inputs = sum(soak.inputs.values())
    lost = sum(soak.lost.values())
    a = soak.args
    faults = sum(v for k, v in soak.inputs.items() if k.startswith(("SIGKILL", "RST")))
    faults += soak.numbers.get("faults", {}).get("raised", 0)
    totals = markdown_table(
        ["load held", "faults survived", "inputs tried", "items lost"],
        [
            [
                f"{a.idle} idle + {a.slowloris} slowloris + {a.echo} echo"
                + (
                    f" ({soak.numbers['echo_ratio']:.0%} of the unloaded echo rate)"
                    if "echo_ratio" in soak.numbers
                    else ""
                ),
                f"{faults} (SIGKILL, RST, raising callback) + SIGINT shutdown",
                f"{inputs:,}",
                f"{lost}",
            ]
        ],
    )
    detail = "\n".join(f"- {k}: {v:,}" for k, v in soak.inputs.items())
    lost_detail = "\n".join(f"- {k}: {v}" for k, v in soak.lost.items())
    return f"{totals}\n\n{checks}\n\nInputs tried:\n{detail}\n\nItems lost (must be 0):\n{lost_detail}"


def other_cpu_users(exclude: int) -> list[str]:
    """Other processes busy on this machine right now (fuzzers, benchmarks),
    for the record: those using more than 5 % CPU over half a second."""

    def snapshot() -> dict[int, tuple[float, str]]:
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (exclude, os.getpid()):
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    cmd = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
                out[int(entry)] = (cpu_seconds(int(entry)), cmd)
            except (OSError, ValueError):
                continue
        return out

    try:
        before = snapshot()
        time.sleep(0.5)
        after = snapshot()
    except OSError:
        return []
    busy = []
    for pid, (cpu, cmd) in after.items():
        if pid in before and (cpu - before[pid][0]) / 0.5 > 0.05 and "soak.py" not in cmd:
            words = cmd.split()
            script = next((Path(w).name for w in words if w.endswith(".py")), Path(words[0]).name if words else "?")
            busy.append(script)
    return sorted(busy)


DOC_TEMPLATE = f"""# Reliability

{DOC_BEGIN}
{DOC_END}
"""


def write_doc(soak: SoakBase, table: str) -> None:
    n = soak.numbers
    a = soak.args
    cmd = "python bench/soak.py" + (" --short" if a.short else "")
    lines = [
        DOC_BEGIN,
        "",
        f"Measured {n['date']} on {machine_summary()}, wsnest core `{n.get('core')}`; command: `{cmd}`"
        f" ({n['seconds']} s). Server pinned to CPU {SERVER_CPU}, every client process to CPU {CLIENT_CPU}.",
    ]
    if n.get("other_cpu_users") or n.get("other_cpu_users_end"):
        lines.append(
            "\n**Contention:** other processes were busy on the same cores"
            f" (at the start: {', '.join(n['other_cpu_users']) or 'none'};"
            f" at the end: {', '.join(n['other_cpu_users_end']) or 'none'});"
            f" load average {n['loadavg_start']:.1f} at the start, {n['loadavg_end']:.1f} at the end."
        )
    else:
        lines.append(f"\nLoad average {n['loadavg_start']:.1f} at the start, {n['loadavg_end']:.1f} at the end.")
    lines += ["", "Key numbers:", ""]
    key = []
    if "echo_a" in n and "echo_b" in n:

        def rates(runs: list[dict[str, Any]]) -> str:
            return ", ".join(f"{r['rate']:,.0f} ({r['server_us_per_msg']} us/msg)" for r in runs)

        idle_only = n.get("echo_b_idle")
        key.append(
            f"- Echo ({a.echo} picows clients, 64 B ping-pong, {a.duration:g} s windows, A and B alternating over"
            f" {len(n['echo_a'])} round(s)): unloaded {rates(n['echo_a'])} msg/s;"
            + (f" with {a.idle:,} idle connections held {rates([idle_only])} msg/s;" if idle_only else "")
            + f" with {a.idle:,} idle + {a.slowloris:,} slowloris {rates(n['echo_b'])} msg/s:"
            f" **{n['echo_ratio']:.1%}** of the unloaded rate (us/msg: server CPU time per echoed message)."
        )
    if "gc_full_under_load" in n:
        g = n["gc_full_under_load"]
        key.append(
            f"- Server garbage collector during the load windows: {g['collections']:.0f} full (gen-2) collections in"
            f" {g['seconds']} s, {g['total_ms']:.0f} ms in all; the longest full-collection pause since the server"
            f" started was {g['max_pause_ms']:.0f} ms (every connection stalls for that long: a full collection"
            " walks the objects of every open connection)."
        )
    if "kib_per_idle" in n:
        key.append(
            f"- {n['idle_opened']:,} idle connections opened in {n['idle_open_seconds']} s; server RSS"
            f" {n['rss_before_idle_kib'] / 1024:.1f} -> {n['rss_after_idle_kib'] / 1024:.1f} MiB, i.e."
            f" **{n['kib_per_idle']} KiB per idle connection**; peak RSS under load"
            f" {n.get('rss_peak_b_kib', 0) / 1024:.1f} MiB. Server CPU while holding them with no traffic:"
            f" {n.get('idle_cpu', 0):.1%} of a core."
        )
    if "slowloris" in n:
        lo = n["slowloris"]
        key.append(
            f"- Slowloris ({a.slowloris} at a time, one byte every 0.5-1 s, handshake_timeout {a.handshake_timeout} s):"
            f" {lo['dropped']:,} dropped by the server, time to drop min {lo['drop_min']} / median"
            f" {lo['drop_median']} / p99 {lo['drop_p99']} / max {lo['drop_max']} s; none got a response."
        )
    if "bcast" in n:
        b = n["bcast"]
        key.append(
            f"- Broadcast to {a.slow_readers} non-reading + {a.fast_readers} fast clients, {b['messages']} x"
            f" {a.bcast_size} B at {a.bcast_rate:.0f}/s, send_high_water {a.high_water // 1024} KiB: ws.send codes"
            f" {b['send_codes']}, broadcast skipped {b['refused_by_broadcast']:,}; server RSS +"
            f"{b['rss_growth_kib'] / 1024:.1f} MiB (bound {b['rss_bound_kib'] / 1024:.0f} MiB)."
        )
    if "shutdown" in n:
        sd = n["shutdown"]
        key.append(
            f"- SIGINT with {sd['open_at_signal']} connections open and {sd['frames_queued']:,} frames queued to"
            f" {a.flood_readers} readers: exit code {sd['exit_code']} after {sd['exit_seconds']} s (aclose"
            f" {sd['aclose_seconds']} s)."
        )
    if "trickle" in n:
        tr = n["trickle"]
        key.append(
            f"- The slow reader (~{a.trickle_rate / 1e6:.0f} MB/s) at shutdown got {tr['received']:,} of"
            f" {tr['queued']:,} frames queued before the server gave up on it: "
            + (f"**{tr['problem']}** (see Known issues)." if tr["problem"] else "a clean prefix.")
        )
    if "tls_idle" in n:
        o, d = n["tls_idle"]["opened"], n["tls_idle"]["drops"]
        inn = n["tls_innocent"]
        key.append(
            f"- TLS (handshake_timeout {a.tls_handshake_timeout:g} s, keepalive_timeout {a.tls_keepalive_timeout:g} s):"
            f" server RSS **{o['fresh']['kib_each']} KiB per idle TLS connection** (handshake done, nothing sent;"
            f" {o['keepalive']['kib_each']} KiB after one request); per stalled handshake"
            f" **{o['nothing']['kib_each']} KiB** (nothing sent), **{o['hello']['kib_each']} KiB** (a ClientHello"
            f" less its last byte), **{o['bighello']['kib_each']} KiB** (a 60 KB ClientHello less its last byte)."
            f" All dropped: idle ones max {d['fresh']['ready']['max']} s after their TLS handshake"
            f" ({d['fresh']['connect']['max']} s after the connect), keep-alive ones max"
            f" {d['keepalive']['response']['max']} s after their response, stalled handshakes max"
            f" {max(d[m]['connect']['max'] for m in HALF_OPEN_MODES)} s; meanwhile an HTTPS client got"
            f" {inn['ok']}/{inn['requests']} answers (slowest {inn['max_s'] * 1000:.0f} ms)."
        )
    if "tls_flood" in n:
        f = n["tls_flood"]
        key.append(
            f"- WSS: {a.tls_readers} never-reading clients asking for {f['bytes_asked'] / 2**20:,.0f} MiB"
            f" (send_high_water {a.high_water // 1024} KiB): {f['dropped']} dropped by the server, ws.send codes"
            f" {f['send_codes']}, server RSS +{f['rss_growth_kib'] / 1024:.1f} MiB (bound"
            f" {f['rss_bound_kib'] / 1024:.0f} MiB); {a.tls_echoers} WSS echo clients alongside: round trip"
            f" median {f['rtt_median_ms']} ms, max {f['rtt_max_ms']} ms."
        )
    bombs = [(k, v["deflate"]) for k, v in n.items() if k.startswith("bombs") and "deflate" in v]
    if bombs:
        parts = [
            f"{k.removeprefix('bombs').strip(' ()') or 'loaded server'}: {d['codes'].count(1009)}/{len(d['codes'])}"
            f" closed 1009, RSS +{d['rss_growth_kib'] / 1024:.1f} MiB"
            for k, d in bombs
        ]
        d0 = bombs[0][1]
        key.append(
            f"- Compressed bombs (permessage-deflate, {d0['bomb_bytes'] // 1024} KiB on the wire inflating to"
            f" {d0['inflates_to'] >> 20} MiB, 1 MiB limit, {len(d0['codes'])} connections at once): "
            + "; ".join(parts)
            + "."
        )
    lines += [*key, ""]
    lines += ["All checks:", "", table, "", DOC_END]
    block = "\n".join(lines)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else DOC_TEMPLATE
    if DOC_BEGIN in text and DOC_END in text:
        head, rest = text.split(DOC_BEGIN, 1)
        _, tail = rest.split(DOC_END, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")
