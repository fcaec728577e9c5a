"""Constants and small helpers of the soak: where things are, which CPU runs
what, /proc probes (RSS, CPU time, unread bytes), the core the environment
asks for, and the children's I/O (JSON lines out, commands in)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
DOC = ROOT / "docs" / "reliability.md"
DOC_BEGIN = "<!-- soak-results:begin -->"
DOC_END = "<!-- soak-results:end -->"

SERVER_CPU = 0
CLIENT_CPU = 1
HOST = "127.0.0.1"


# -- /proc probes and child I/O ------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    """Resident set size of ``pid`` in KiB (Linux /proc)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (Linux /proc)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        stat = fh.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def unread_bytes(port: int) -> int:
    """Bytes received but not yet read by the process listening on ``port``
    (the rx queues of its established IPv4 connections, Linux /proc)."""
    total = 0
    with open("/proc/net/tcp", encoding="ascii") as fh:
        next(fh)
        for line in fh:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                total += int(fields[4].split(":")[1], 16)
    return total


def env_flag(name: str) -> bool:
    """An environment switch as wsnest reads it: set, and not "" or "0"."""
    return os.environ.get(name, "") not in ("", "0")


def expected_core() -> str | None:
    """The core the server children must run, when the environment says:
    they inherit it (``WSNEST_NO_EXTENSIONS`` wins, as in ``wsnest.core``)."""
    if env_flag("WSNEST_NO_EXTENSIONS"):
        return "pure"
    if env_flag("WSNEST_REQUIRE_EXTENSIONS"):
        return "compiled"
    return None


def emit(event: str, **data: Any) -> None:
    print(json.dumps({"event": event, **data}), flush=True)


def run_async(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


async def stdin_lines() -> asyncio.Queue[str]:
    """Commands from the parent, one per line (EOF reads as ``exit``)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.strip())
        loop.call_soon_threadsafe(queue.put_nowait, "exit")

    threading.Thread(target=reader, daemon=True).start()
    return queue


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]
