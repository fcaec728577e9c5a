"""Plumbing shared by the wsnest fuzz harnesses and the seed generator.

Importable without atheris (the regression tests replay seeds through the
harness checks without it), and without importing wsnest (the harnesses
import it lazily, inside atheris' instrumentation when fuzzing).

Input layout
------------
Every harness input is ``payload + trailer``. Parameters are read one byte
at a time from the *end* of the input, the payload is what is left at the
front. That is exactly how ``atheris.FuzzedDataProvider`` behaves for
``ConsumeIntInRange(0, 255)`` (one byte from the end, 0 once exhausted) and
``ConsumeBytes(remaining_bytes())`` (the front), so the fuzz loop uses the
real ``FuzzedDataProvider`` while seeds can be written (and replayed, by
:class:`TailReader`) without atheris. ``tests/test_fuzz_regressions.py``
checks that the two readers agree.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

FUZZ_DIR = Path(__file__).resolve().parent
REPO_DIR = FUZZ_DIR.parent
CORPUS_DIR = FUZZ_DIR / "corpus"
ARTIFACT_DIR = FUZZ_DIR / "artifacts"

#: Feeds per input at most: a longer split pattern is coalesced at the end.
MAX_CHUNKS = 256

INSTALL_HINT = """\
atheris is not installed. Install it from PyPI (prebuilt wheels for CPython 3.11-3.13 on Linux x86_64):

    python -m pip install atheris

(For coverage of the compiled core and AddressSanitizer, see fuzz/README.md and fuzz/build_asan.sh.)
"""


class Reader(Protocol):
    def byte(self) -> int: ...

    def rest(self) -> bytes: ...


class TailReader:
    """``FuzzedDataProvider`` semantics for the two calls the harnesses make."""

    __slots__ = ("_data", "_end")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._end = len(data)

    def byte(self) -> int:
        """Like ``ConsumeIntInRange(0, 255)``: the last unread byte, or 0."""
        if self._end == 0:
            return 0
        self._end -= 1
        return self._data[self._end]

    def rest(self) -> bytes:
        """Like ``ConsumeBytes(remaining_bytes())``: everything still unread."""
        out = self._data[: self._end]
        self._end = 0
        return out


class FDPReader:
    """The same two calls on a real ``atheris.FuzzedDataProvider``."""

    __slots__ = ("_fdp",)

    def __init__(self, fdp: Any) -> None:
        self._fdp = fdp

    def byte(self) -> int:
        return int(self._fdp.ConsumeIntInRange(0, 255))

    def rest(self) -> bytes:
        return bytes(self._fdp.ConsumeBytes(self._fdp.remaining_bytes()))


def make_reader(data: bytes, atheris: Any = None) -> Reader:
    if atheris is None:
        return TailReader(data)
    return FDPReader(atheris.FuzzedDataProvider(data))


def trailer(*params: int) -> bytes:
    """The bytes to append to a payload so that the harness reads ``params``
    (in this order) from its end."""
    for p in params:
        if not 0 <= p <= 255:
            raise ValueError(f"parameter byte out of range: {p}")
    return bytes(reversed(params))


# -- chunk splitting -----------------------------------------------------------

SPLIT_WHOLE = 0
SPLIT_BYTEWISE = 1
SPLIT_FIXED = 2
SPLIT_PATTERN = 3


def read_split(reader: Reader) -> tuple[int, list[int]]:
    """Two bytes (mode, parameter) and, for a pattern, its sizes."""
    mode = reader.byte() & 3
    param = reader.byte()
    if mode == SPLIT_FIXED:
        return mode, [param + 1]
    if mode == SPLIT_PATTERN:
        return mode, [reader.byte() for _ in range(param % 8 + 1)]
    return mode, []


def split_trailer(mode: int, sizes: Sequence[int] = ()) -> list[int]:
    """Parameter bytes that make :func:`read_split` return ``(mode, sizes)``."""
    if mode in (SPLIT_WHOLE, SPLIT_BYTEWISE):
        return [mode, 0]
    if mode == SPLIT_FIXED:
        (size,) = sizes
        return [mode, size - 1]
    if not 1 <= len(sizes) <= 8:
        raise ValueError("a pattern has 1 to 8 sizes")
    return [mode, len(sizes) - 1, *sizes]


def split(stream: bytes, mode: int, sizes: Sequence[int]) -> list[bytes]:
    """Cut ``stream`` into feeds. A pattern is cycled; a size of 0 is an
    empty feed. At most :data:`MAX_CHUNKS` feeds: the rest goes in the last."""
    n = len(stream)
    if mode == SPLIT_WHOLE:
        return [stream]
    if mode == SPLIT_BYTEWISE:
        sizes = [1]
    if not any(sizes):
        return [b"", stream, b""]
    chunks: list[bytes] = []
    pos = 0
    i = 0
    while pos < n:
        if len(chunks) >= MAX_CHUNKS - 1:
            chunks.append(stream[pos:])
            return chunks
        size = sizes[i % len(sizes)]
        i += 1
        chunks.append(stream[pos : pos + size])
        pos += size
    if not chunks:
        chunks.append(b"")
    return chunks


# -- running ---------------------------------------------------------------------


def outcome(fn: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)`` or ``("raise", (type, args))``: comparable results."""
    try:
        return ("ok", fn())
    except Exception as exc:  # every exception is compared, none is expected
        return ("raise", (type(exc), exc.args))


def run_main(name: str, load: Callable[[Any], None], test_one_input: Callable[[bytes], None]) -> None:
    """Command line of a harness: ``python fuzz/fuzz_NAME.py [--quick SECONDS]
    [libFuzzer flags] [corpus dirs or input files]``.

    Without a corpus directory or input file, ``fuzz/corpus/NAME`` is used
    (generated by ``make_corpus.py`` if missing). ``--quick SECONDS`` runs that
    long and exits 0 when nothing failed (a failure exits non-zero, leaving
    the input in ``fuzz/artifacts/``).
    """
    argv = sys.argv[1:]
    quick: float | None = None
    if "--quick" in argv:
        i = argv.index("--quick")
        try:
            quick = float(argv[i + 1])
        except (IndexError, ValueError):
            sys.exit("--quick needs a number of seconds")
        del argv[i : i + 2]
    try:
        import atheris
    except ImportError as exc:
        sys.stderr.write(f"cannot import atheris: {exc}\n\n{INSTALL_HINT}")
        sys.exit(2)
    load(atheris)
    flags = [a for a in argv if a.startswith("-")]
    inputs = [a for a in argv if not a.startswith("-")]
    if not inputs:
        corpus = CORPUS_DIR / name
        if not corpus.is_dir() or not any(corpus.iterdir()):
            sys.path.insert(0, str(FUZZ_DIR))
            import make_corpus

            make_corpus.write(name)
        inputs = [str(corpus)]
    if not any(f.startswith("-artifact_prefix=") for f in flags):
        ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
        flags.append(f"-artifact_prefix={ARTIFACT_DIR}{os.sep}{name}-")
    if quick is not None:
        flags += [f"-max_total_time={max(1, int(quick))}", "-print_final_stats=1"]
    atheris.Setup([sys.argv[0], *flags, *inputs], test_one_input)
    atheris.Fuzz()
