"""Small helpers shared by the wsnest benchmarks.

Timing model: every contender of a case (compiled core, pure core,
baselines) is a :class:`Contender` whose ``make(n)`` does all setup for
``n`` operations *outside* the timed region and returns a zero-argument
callable that performs exactly those ``n`` operations. A ``self_timed``
contender's callable needs per-operation setup (a fresh buffer copy) and
returns the seconds spent in the operations alone. :func:`measure`
calibrates ``n`` per contender, then runs ``reps`` repetitions; inside each
repetition every contender is timed once (in a rotating order), so a burst of
machine noise hits all contenders of a case alike. The best (minimum) time
per operation over the repetitions is reported.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard limit (thousands of
    connections); return the soft limit now in force (-1: no such limit here)."""
    try:
        import resource
    except ImportError:
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def set_affinity(pid: int, cpu: int) -> bool:
    """Pin process ``pid`` (0: this one) to ``cpu``; False if that is impossible.

    Pinning this process to a CPU outside its own affinity is refused; another
    process (a child) may be pinned to any CPU the system allows, even when
    this one is already pinned elsewhere.
    """
    if not hasattr(os, "sched_setaffinity"):
        return False
    try:
        if pid in (0, os.getpid()) and cpu not in os.sched_getaffinity(0):
            return False
        os.sched_setaffinity(pid, {cpu})
    except OSError:
        return False
    return True


def ensure_importable() -> None:
    """Let ``python bench/...`` run from a checkout where wsnest is not installed."""
    try:
        import wsnest  # noqa: F401
    except ImportError:
        src = Path(__file__).resolve().parent.parent / "src"
        sys.path.insert(0, str(src))


@dataclass
class Contender:
    """One column of a benchmark row.

    ``make(n)`` prepares ``n`` operations (buffers, parsers) and returns the
    callable to time. With ``self_timed`` the callable times its operations
    itself (``time.perf_counter`` around each one, setup excluded) and
    returns the total seconds.
    """

    name: str
    make: Callable[[int], Callable[[], object]]
    self_timed: bool = False


def _time_once(contender: Contender, n: int) -> float:
    run = contender.make(n)
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = time.perf_counter()
        result = run()
        elapsed = time.perf_counter() - t0
    finally:
        if gc_was_enabled:
            gc.enable()
    del run
    if contender.self_timed:
        assert isinstance(result, float)
        return result
    return elapsed


def calibrate(contender: Contender, target: float) -> int:
    """Pick how many operations one timed loop runs so it lasts about ``target`` s."""
    n = 1
    while True:
        elapsed = _time_once(contender, n)
        if elapsed >= target / 5:
            break
        n = n * 10 if elapsed < target / 100 else n * 2
    return max(1, math.ceil(n * target / elapsed))


def measure(contenders: list[Contender], reps: int, target: float) -> dict[str, float]:
    """Return the best seconds-per-operation of each contender, interleaved."""
    counts = {c.name: calibrate(c, target) for c in contenders}
    best = {c.name: math.inf for c in contenders}
    k = len(contenders)
    for rep in range(reps):
        shift = rep % k
        for c in contenders[shift:] + contenders[:shift]:
            n = counts[c.name]
            best[c.name] = min(best[c.name], _time_once(c, n) / n)
    return best


# -- formatting -------------------------------------------------------------


def fmt_num(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), sep, *(line(r) for r in rows)])


def machine_summary() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for raw in fh:
                if raw.startswith("model name"):
                    cpu = raw.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    impl = platform.python_implementation()
    return (
        f"{impl} {platform.python_version()} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs ({cpu})"
    )
