"""Micro-benchmarks of the sans-I/O WebSocket core: compiled twin vs pure twin.

Run ``python bench/bench_core.py`` (about 20 s on 2 noisy cores) or
``python bench/bench_core.py --quick`` (about 2 s, coarse numbers).

Both twins are imported directly (``wsnest.core._frames_c`` and
``wsnest.core._frames_py``), so ``WSNEST_NO_EXTENSIONS`` does not matter here.
Every case times the compiled core, the pure core and plain-CPython
baselines side by side in the same run, interleaved per repetition; the best
of the repetitions is reported (see ``bench/_util.py``).

Throughputs count payload bytes (GB/s = 1e9 bytes/s). The output ends with
``RATIO <name> <value>`` lines; every ratio ``A_vs_B`` is speed(A)/speed(B),
which is time(B)/time(A).
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import Contender, ensure_importable, fmt_num, machine_summary, markdown_table, measure

ensure_importable()

from wsnest.core import _frames_py as fp  # noqa: E402
from wsnest.core._common import OP_BINARY, OP_CONT, OP_TEXT  # noqa: E402

try:
    from wsnest.core import _frames_c as fc  # type: ignore[attr-defined]
except ImportError as exc:  # not built (or the .pyx does not exist yet)
    fc = None
    FC_ERROR = repr(exc)
else:
    FC_ERROR = ""

try:
    from websockets.speedups import apply_mask as ws_apply_mask
except ImportError:
    ws_apply_mask = None

KiB = 1024
MiB = 1024 * KiB
MASK = b"\x37\xfa\x21\x3d"
PARSE_FRAMES = 10_000
PARSE_PAYLOAD = 64
FRAGMENTS = 64
FRAGMENT_SIZE = 16 * KiB
MAX_MESSAGE = 2 * MiB

COLUMNS = ["compiled", "pure", "memcpy", "websockets", "bytes.decode"]


# -- data ---------------------------------------------------------------------


def ascii_text(n: int, seed: int = 1) -> bytes:
    """``n`` bytes of printable ASCII."""
    table = bytes(32 + (b % 95) for b in range(256))
    return random.Random(seed).randbytes(n).translate(table)


def mixed_text(n: int, seed: int = 2) -> bytes:
    """``n`` bytes of valid UTF-8 mixing 1-, 2-, 3- and 4-byte characters
    in roughly equal numbers of characters."""
    rng = random.Random(seed)
    pools = [
        [chr(c) for c in range(0x20, 0x7F)],  # 1 byte: ASCII
        [chr(c) for c in itertools.chain(range(0xC0, 0x250), range(0x410, 0x450))],  # 2: Latin, Cyrillic
        [chr(c) for c in itertools.chain(range(0x3041, 0x3097), range(0x4E00, 0x4F00))],  # 3: kana, CJK
        [chr(c) for c in itertools.chain(range(0x1F300, 0x1F650))],  # 4: emoji
    ]
    chars = [rng.choice(pool) for pool in rng.choices(pools, k=n // 2)]
    raw = "".join(chars).encode("utf-8")
    while len(raw) < n:
        raw += raw
    # Cut at a character boundary, then pad with ASCII to exactly n bytes.
    raw = raw[:n].decode("utf-8", "ignore").encode("utf-8")
    return raw + b"a" * (n - len(raw))


def parse_buffer() -> bytes:
    """``PARSE_FRAMES`` masked binary frames of ``PARSE_PAYLOAD`` bytes each."""
    rng = random.Random(3)
    return b"".join(
        fp.encode_frame(OP_BINARY, rng.randbytes(PARSE_PAYLOAD), mask=rng.randbytes(4)) for _ in range(PARSE_FRAMES)
    )


def fragmented(opcode: int, payload: bytes) -> bytes:
    """``payload`` as ``FRAGMENTS`` masked frames (first ``opcode``, then continuations)."""
    rng = random.Random(4)
    size = FRAGMENT_SIZE
    assert len(payload) == FRAGMENTS * size
    frames = []
    for i in range(FRAGMENTS):
        chunk = payload[i * size : (i + 1) * size]
        frames.append(
            fp.encode_frame(opcode if i == 0 else OP_CONT, chunk, fin=i == FRAGMENTS - 1, mask=rng.randbytes(4))
        )
    return b"".join(frames)


# -- contenders ---------------------------------------------------------------


def loop(fn: Callable, *args: object) -> Callable[[int], Callable[[], None]]:
    """``make`` for a contender that calls ``fn(*args)`` n times on the same data."""
    if len(args) == 1:
        (a,) = args

        def make(n: int) -> Callable[[], None]:
            def run() -> None:
                for _ in itertools.repeat(None, n):
                    fn(a)

            return run

        return make

    a, b = args

    def make2(n: int) -> Callable[[], None]:
        def run() -> None:
            for _ in itertools.repeat(None, n):
                fn(a, b)

        return run

    return make2


def memcpy_loop(size: int) -> Callable[[int], Callable[[], None]]:
    src = bytearray(random.Random(5).randbytes(size))
    dst = bytearray(size)

    def make(n: int) -> Callable[[], None]:
        def run() -> None:
            for _ in itertools.repeat(None, n):
                dst[:] = src

        return run

    return make


def feed_loop(impl, data: bytes, copy: bool) -> Callable[[int], Callable[[], float]]:
    """``make`` for a self-timed contender: n fresh parsers each fed all of
    ``data``, only the ``feed`` calls timed. With ``copy`` each feed gets its
    own bytearray copy, made just before the feed (hot in cache, like a
    server's receive buffer) and outside the timed region."""

    def make(n: int) -> Callable[[], float]:
        def run() -> float:
            clock = time.perf_counter
            total = 0.0
            for _ in itertools.repeat(None, n):
                parser = impl.FrameParser(MAX_MESSAGE)
                buf = bytearray(data) if copy else data
                t0 = clock()
                parser.feed(buf)
                total += clock() - t0
            return total

        return run

    return make


def decode_loop(data: bytes) -> Callable[[int], Callable[[], None]]:
    def make(n: int) -> Callable[[], None]:
        def run() -> None:
            for _ in itertools.repeat(None, n):
                data.decode("utf-8")

        return run

    return make


# -- cases --------------------------------------------------------------------


class Case:
    def __init__(self, name: str, unit: str, per_op: float, contenders: list[Contender]) -> None:
        self.name = name
        self.unit = unit  # "GB/s" or "M frames/s"
        self.per_op = per_op  # bytes or frames per operation
        self.contenders = contenders
        self.seconds: dict[str, float] = {}

    def rate(self, column: str) -> float | None:
        t = self.seconds.get(column)
        if t is None:
            return None
        scale = 1e9 if self.unit == "GB/s" else 1e6
        return self.per_op / t / scale


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"bench_core: sanity check failed: {what}")


def build_cases() -> list[Case]:
    cases: list[Case] = []

    # Unmasking: XOR in place, as the server does with its receive buffer.
    for size, label in ((16, "16 B"), (16 * KiB, "16 KiB"), (MiB, "1 MiB")):
        data = random.Random(6).randbytes(size)
        expected = fp.apply_mask(data, MASK)
        contenders = []
        if fc is not None:
            buf_c = bytearray(data)
            fc.mask_inplace(buf_c, MASK)
            check(bytes(buf_c) == expected, f"compiled mask_inplace {label}")
            contenders.append(Contender("compiled", loop(fc.mask_inplace, bytearray(data), MASK)))
        buf_p = bytearray(data)
        fp.mask_inplace(buf_p, MASK)
        check(bytes(buf_p) == expected, f"pure mask_inplace {label}")
        contenders.append(Contender("pure", loop(fp.mask_inplace, bytearray(data), MASK)))
        contenders.append(Contender("memcpy", memcpy_loop(size)))
        if ws_apply_mask is not None:
            check(ws_apply_mask(data, MASK) == expected, f"websockets apply_mask {label}")
            contenders.append(Contender("websockets", loop(ws_apply_mask, bytearray(data), MASK)))
        cases.append(Case(f"unmask {label}", "GB/s", size, contenders))

    # UTF-8 validation of a complete message.
    for text, label in ((ascii_text(MiB), "ASCII"), (mixed_text(MiB), "multibyte")):
        contenders = []
        if fc is not None:
            check(fc.validate_utf8(text) is True, f"compiled validate_utf8 {label}")
            check(fc.validate_utf8(text[:-1] + b"\xff") is False, f"compiled validate_utf8 rejects {label}")
            contenders.append(Contender("compiled", loop(fc.validate_utf8, text)))
        check(fp.validate_utf8(text) is True, f"pure validate_utf8 {label}")
        contenders.append(Contender("pure", loop(fp.validate_utf8, text)))
        contenders.append(Contender("bytes.decode", decode_loop(text)))
        cases.append(Case(f"UTF-8 validate 1 MiB {label}", "GB/s", len(text), contenders))

    # Parsing many small frames: the per-frame overhead.
    buf = parse_buffer()
    events = fp.FrameParser(MAX_MESSAGE).feed(buf)
    check(len(events) == PARSE_FRAMES and events[0][0] == OP_BINARY, "pure parse")
    contenders = []
    if fc is not None:
        check(fc.FrameParser(MAX_MESSAGE).feed(bytearray(buf)) == events, "compiled parse == pure parse")
        contenders.append(Contender("compiled", feed_loop(fc, buf, copy=True), self_timed=True))
    contenders.append(Contender("pure", feed_loop(fp, buf, copy=False), self_timed=True))
    cases.append(Case(f"parse {PARSE_FRAMES:,} x 64 B frames", "M frames/s", PARSE_FRAMES, contenders))

    # Reassembling one 1 MiB message from 64 masked 16 KiB fragments.
    for opcode, payload, label in (
        (OP_TEXT, ascii_text(MiB, seed=7), "text ASCII"),
        (OP_TEXT, mixed_text(MiB, seed=8), "text multibyte"),
        (OP_BINARY, random.Random(9).randbytes(MiB), "binary"),
    ):
        wire = fragmented(opcode, payload)
        message = payload.decode("utf-8") if opcode == OP_TEXT else payload
        check(fp.FrameParser(MAX_MESSAGE).feed(wire) == [(opcode, message)], f"pure reassembly {label}")
        contenders = []
        if fc is not None:
            got = fc.FrameParser(MAX_MESSAGE).feed(bytearray(wire))
            check(got == [(opcode, message)], f"compiled reassembly {label}")
            contenders.append(Contender("compiled", feed_loop(fc, wire, copy=True), self_timed=True))
        contenders.append(Contender("pure", feed_loop(fp, wire, copy=False), self_timed=True))
        if opcode == OP_TEXT:
            contenders.append(Contender("bytes.decode", decode_loop(payload)))
        else:
            contenders.append(Contender("memcpy", memcpy_loop(len(payload))))
        cases.append(Case(f"reassemble 1 MiB {label} (64 x 16 KiB)", "GB/s", len(payload), contenders))

    return cases


# -- ratios -------------------------------------------------------------------

# name -> (case name prefix, A column, B column, target text, pass test)
RATIOS: list[tuple[str, str, str, str, str, Callable[[float], bool] | None]] = [
    ("unmask_1MiB_compiled_vs_memcpy", "unmask 1 MiB", "compiled", "memcpy", ">= 0.80", lambda r: r >= 0.80),
    ("unmask_1MiB_compiled_vs_pure", "unmask 1 MiB", "compiled", "pure", "-", None),
    ("unmask_1MiB_compiled_vs_websockets", "unmask 1 MiB", "compiled", "websockets", "-", None),
    ("utf8_ascii_compiled_vs_decode", "UTF-8 validate 1 MiB ASCII", "compiled", "bytes.decode", "-", None),
    ("utf8_multibyte_compiled_vs_decode", "UTF-8 validate 1 MiB multibyte", "compiled", "bytes.decode", "-", None),
    ("parse_64B_compiled_vs_pure", "parse ", "compiled", "pure", ">= 30.00", lambda r: r >= 30.0),
    (
        "reassemble_text_ascii_decode_vs_compiled",
        "reassemble 1 MiB text ASCII",
        "bytes.decode",
        "compiled",
        "<= 2.00",
        lambda r: r <= 2.0,
    ),
    (
        "reassemble_text_multibyte_decode_vs_compiled",
        "reassemble 1 MiB text multibyte",
        "bytes.decode",
        "compiled",
        "<= 2.00",
        lambda r: r <= 2.0,
    ),
    ("reassemble_text_ascii_compiled_vs_pure", "reassemble 1 MiB text ASCII", "compiled", "pure", "-", None),
    ("reassemble_binary_compiled_vs_pure", "reassemble 1 MiB binary", "compiled", "pure", "-", None),
]


def compute_ratios(cases: list[Case]) -> list[tuple[str, float, str, str]]:
    out = []
    for name, prefix, a, b, target, ok in RATIOS:
        case = next(c for c in cases if c.name.startswith(prefix))
        ta, tb = case.seconds.get(a), case.seconds.get(b)
        if ta is None or tb is None:
            continue
        value = tb / ta  # speed(a) / speed(b)
        verdict = "-" if ok is None else ("PASS" if ok(round(value, 2)) else "MISS")
        out.append((name, value, target, verdict))
    return out


# -- main ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short run (coarse numbers), under ~10 s")
    ap.add_argument("--reps", type=int, help="repetitions per case (default 30, quick 3)")
    ap.add_argument("--target-ms", type=float, help="length of one timed loop (default 20 ms, quick 5 ms)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON (e.g. bench/results/core.json)")
    args = ap.parse_args(argv)
    reps = args.reps or (3 if args.quick else 30)
    target = (args.target_ms or (5.0 if args.quick else 20.0)) / 1000

    print(f"# wsnest core benchmark{' (quick)' if args.quick else ''}")
    print()
    print(f"- {machine_summary()}")
    print(f"- best of {reps} interleaved repetitions, ~{target * 1000:.0f} ms per timed loop")
    if fc is None:
        print(f"- compiled core not built ({FC_ERROR})")
    if ws_apply_mask is None:
        print("- websockets.speedups not importable: no websockets column")
    print()

    cases = build_cases()
    for case in cases:
        case.seconds = measure(case.contenders, reps, target)
        print(f"  measured: {case.name}", file=sys.stderr)

    present = [c for c in COLUMNS if any(c in case.seconds for case in cases)]
    header = ["case", *present, "unit"]
    rows = [[case.name, *(fmt_num(case.rate(c)) for c in present), case.unit] for case in cases]
    print(markdown_table(header, rows))
    print()
    if fc is None:
        print("compiled core not built: no compiled column and no compiled ratios")
        print()
    print("Notes: higher is better in the table. memcpy is `dst[:] = src` between two")
    print("preallocated bytearrays of the payload size (inline, no function call). websockets is")
    print("websockets.speedups.apply_mask, which returns a new bytes object instead of unmasking in")
    print("place. Parse and reassembly time feed() alone: each feed goes to a fresh parser and gets")
    print("the whole buffer; the compiled parser gets its own bytearray copy (made just before the")
    print("feed, outside the timed region), the pure parser the bytes. The reassembly baselines are")
    print("one bytes.decode (text) or one memcpy (binary) of the whole 1 MiB payload.")
    print()

    ratios = compute_ratios(cases)
    if ratios:
        print("Ratio A_vs_B = speed(A) / speed(B) = time(B) / time(A). For the *_decode_vs_compiled")
        print("ratios that is (compiled reassembly time) / (one bytes.decode time): lower is better,")
        print("and 'within 2x of decode' means <= 2.00. For every other ratio higher is better.")
        print()
        print(markdown_table(["ratio", "value", "target", "verdict"], [[n, f"{v:.2f}", t, d] for n, v, t, d in ratios]))
        print()
    for name, value, _, _ in ratios:
        print(f"RATIO {name} {value:.2f}")

    if args.json:
        result = {
            "machine": machine_summary(),
            "reps": reps,
            "target_s": target,
            "compiled": fc is not None,
            "cases": [{"case": c.name, "unit": c.unit, "per_op": c.per_op, "seconds_per_op": c.seconds} for c in cases],
            "ratios": {n: round(v, 4) for n, v, _, _ in ratios},
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
