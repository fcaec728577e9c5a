"""Differential fuzz harness: compiled WebSocket core vs the pure twin.

    python fuzz/fuzz_core.py [--quick SECONDS] [libFuzzer flags] [corpus dir | input files]

Every input is fed to ``wsnest.core._frames_c`` and ``wsnest.core._frames_py``
with the same parameters (the role included: server or client parsers) and
the same chunk splits; any difference in the returned events (values *and*
exact types), in ``finished``, or in the exceptions raised is an
``AssertionError``. A third of the inputs exercise
``apply_mask``, ``mask_inplace``, ``validate_utf8``, ``encode_frame`` and
``append_frame`` the same way (plus a plain reference where one is cheap).

Input layout (see ``_harness.py``): parameter bytes are read from the end,
the payload is what is left at the front. The first parameter byte picks the
mode (``mode % 8``):

- 0-3 raw: the payload is the byte stream itself;
- 4-5 structured: the payload is a small program of frames (opcode, FIN,
  RSV, mask, length form, payload with repetition) encoded into a stream, so
  that fragmentation, interleaved control frames, long UTF-8 texts (the
  compiled 512-byte four-chain DFA) and 64-bit lengths are reached often;
  mode 5 also cuts the end of the stream off;
- 6-7 functions.

Its bit 3 (``ROLE_CLIENT``) picks the role in the parser modes: clear, the
parsers are servers (``FrameParser()``, reading masked client frames); set,
they are clients (``FrameParser(masked=False)``, reading unmasked server
frames). A structured program encodes the same frames in both roles, as the
role's peer sends them (see ``build_stream``).

Its bit 4 (``STREAM``) puts the parsers of the parser modes in stream mode
(``FrameParser(stream=True)``: messages come as ``FRAGMENT`` pieces). Then
a third check runs: the pure twin in stream mode, its pieces joined per
message (and text decoded), must give after every feed exactly the events
of the pure twin without stream mode (same messages, same failure at the
same feed), and every piece must be well formed (``bytes``, never empty
unless final, one kind per message).

For the parser modes the next bytes are: options (max_message_size
selector in bits 0-2, ``decode_text=False`` in bit 3, input type in bits
4-6, ``deflate=True`` in bit 7: RSV1 then marks a compressed message), the
max_message_size value byte, then the split (mode, parameter, pattern
sizes; ``_harness.read_split``).
"""

from __future__ import annotations

import array
import os
import struct
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import TailReader, make_reader, outcome, read_split, run_main, split

# Opcodes (RFC 6455); the harness does not import wsnest before atheris
# instruments it.
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OP_TEXT_DEFLATED, OP_BINARY_DEFLATED, FRAGMENT = 0x11, 0x12, 0x20

MODE_RAW = 0
MODE_STRUCTURED = 4
MODE_STRUCTURED_CUT = 5
MODE_FUNCTIONS = 6
#: In the mode byte of a parser mode: the parsers take the client role.
ROLE_CLIENT = 8
#: In the mode byte of a parser mode: the parsers are in stream mode.
STREAM = 16

C: ModuleType | None = None  # wsnest.core._frames_c
P: ModuleType | None = None  # wsnest.core._frames_py
_ATHERIS: Any = None


def load(atheris: Any = None) -> None:
    """Import both twins (under atheris' instrumentation when fuzzing)."""
    global C, P, _ATHERIS
    if C is not None:
        return
    _ATHERIS = atheris
    if atheris is not None and os.environ.get("FUZZ_PY_COVERAGE", "1") != "0":
        # Coverage of the pure twin (and _common) guides the fuzzer too;
        # FUZZ_PY_COVERAGE=0 leaves only the compiled core's C coverage
        # (ASan build), which is faster.
        with atheris.instrument_imports(include=["wsnest"]):
            import wsnest.core  # noqa: F401
    try:
        from wsnest.core import _frames_c
    except ImportError as exc:
        raise SystemExit(f"fuzz_core: the compiled core wsnest.core._frames_c cannot be imported: {exc!r}") from exc
    from wsnest.core import _common, _frames_py

    ours = (OP_TEXT, OP_BINARY, OP_TEXT_DEFLATED, OP_BINARY_DEFLATED, FRAGMENT)
    theirs = (_common.OP_TEXT, _common.OP_BINARY, _common.OP_TEXT_DEFLATED, _common.OP_BINARY_DEFLATED)
    if ours != (*theirs, _common.FRAGMENT):
        raise SystemExit("fuzz_core: event kinds out of sync with wsnest.core._common")
    C, P = _frames_c, _frames_py
    path = str(Path(_frames_c.__file__).resolve())
    asan_tree = str((Path(__file__).resolve().parent.parent / "build" / "asan").resolve())
    if atheris is not None:
        sys.stderr.write(f"fuzz_core: compiled core {path}{' (ASan build)' if path.startswith(asan_tree) else ''}\n")
    if os.environ.get("FUZZ_REQUIRE_ASAN", "") not in ("", "0") and not path.startswith(asan_tree):
        raise SystemExit(f"fuzz_core: FUZZ_REQUIRE_ASAN is set but the compiled core is {path}")


# -- input objects -------------------------------------------------------------


class BytesSub(bytes):
    """A bytes subclass: the compiled core hands these to the pure code paths."""


class ByteArraySub(bytearray):
    """A bytearray subclass."""


FEED_KINDS = ("bytes", "bytearray", "memoryview-rw", "memoryview-ro", "bytes-sub", "array", "bytes", "odd")
#: For FEED_KINDS[7], picked by the first byte of the stream: the rare types
#: (a 2-byte-item view, which is fed as its bytes; a strided view and a str,
#: which both twins must refuse with the same exception).
ODD_FEED_KINDS = ("bytearray", "memoryview-H", "memoryview-strided", "str")
READ_ONLY_KINDS = frozenset({"bytes", "memoryview-ro", "bytes-sub", "memoryview-H", "memoryview-strided", "str"})
#: Kinds whose ``flat`` bytes are not the chunk itself (a strided view shows
#: every other byte, a str its repr): their "before" is taken with ``flat``.
FLAT_DIFFERS = frozenset({"memoryview-strided", "str"})


def make_obj(kind: str, data: bytes) -> Any:
    """A fresh object of ``kind`` holding ``data`` (never shared between twins)."""
    if kind == "bytes":
        return bytes(data)
    if kind == "bytearray":
        return bytearray(data)
    if kind == "memoryview-rw":
        return memoryview(bytearray(data))
    if kind == "memoryview-ro":
        return memoryview(bytes(data))
    if kind == "bytes-sub":
        return BytesSub(data)
    if kind == "bytearray-sub":
        return ByteArraySub(data)
    if kind == "array":
        return array.array("B", data)
    if kind == "memoryview-H":
        return memoryview(bytes(data)).cast("H") if len(data) % 2 == 0 else memoryview(bytes(data))
    if kind == "memoryview-I-rw":
        return memoryview(bytearray(data)).cast("I") if len(data) % 4 == 0 else memoryview(bytearray(data))
    if kind == "memoryview-strided":
        return memoryview(bytes(data))[::2]
    if kind == "memoryview-offset-rw":
        return memoryview(bytearray(b"\xaa" + data))[1:]
    if kind == "memoryview-released":
        view = memoryview(bytes(data))
        view.release()
        return view
    if kind == "str":
        return data.decode("latin-1")
    if kind == "int":
        return len(data)
    if kind == "none":
        return None
    raise ValueError(kind)


def flat(obj: Any) -> bytes:
    """The bytes an object exposes (for comparing contents after a call)."""
    if isinstance(obj, memoryview):
        return b"<released>" if _released(obj) else obj.tobytes()
    if isinstance(obj, (bytes, bytearray, array.array)):
        return bytes(obj)
    return repr(obj).encode()


def _released(view: memoryview) -> bool:
    try:
        len(view)
    except ValueError:
        return True
    return False


def typed(value: Any) -> Any:
    """``value`` with the exact type of every part spelt out, so that
    ``b"x" == bytearray(b"x")`` or ``1 == True`` cannot hide a difference."""
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [typed(v) for v in value])
    return (type(value).__name__, value)


def typed_outcome(result: tuple[str, Any]) -> Any:
    status, value = result
    if status == "raise":
        exc_type, args = value
        return (status, exc_type, args)
    return (status, typed(value))


def xor_ref(data: bytes, mask: bytes, offset: int) -> bytes:
    """Masking reference (RFC 6455 section 5.3), fast enough for the harness."""
    n = len(data)
    if n == 0:
        return b""
    offset &= 3
    rot = mask[offset:] + mask[:offset]
    full = (rot * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(full, "little")).to_bytes(n, "little")


# -- client frames built by hand (malformed ones included) ----------------------


def raw_frame(
    opcode: int,
    payload: bytes,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
    form: str = "min",
    length: int | None = None,
) -> bytes:
    """A client frame. ``form``: "min" (minimal), "16"/"64" (forced, maybe
    non-minimal), "raw64" (``length`` written as is, top bit included).
    ``length`` overrides the declared length (the payload is appended as is)."""
    declared = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if mask is not None else 0
    if form == "min":
        form = "7" if declared < 126 else "16" if declared < 65536 else "64"
    if form == "16" and declared >= 65536:
        form = "64"
    if form == "7":
        head = bytes((b0, mbit | declared))
    elif form == "16":
        head = struct.pack("!BBH", b0, mbit | 126, declared)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, declared)
    if mask is None:
        return head + payload
    return head + mask + xor_ref(payload, mask, 0)


STRUCT_OPS = (OP_TEXT, OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_CLOSE, OP_CONT, None)
CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999, 0, 999, 1004, 1005, 1006, 1015, 5000)
MAX_STRUCT_STREAM = 300_000
#: The masking key of a masked frame in a server stream (which fails).
WRONG_KIND_KEY = b"\x5a\xa5\x0f\xf0"
SPLIT_CHECK_MAX = 4096
#: Input types whose objects do not expose the chunk's bytes as they are (a
#: strided view shows every other byte): no split-invariance check for them.
SPLIT_CHECK_SKIP = frozenset({"memoryview-strided"})


class _Front:
    """Reads a structured program from the front (0 once exhausted)."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out


def build_stream(program: bytes, client: bool = False) -> bytes:
    """Encode a structured program into a client byte stream, or with
    ``client`` (a parser in the client role) into a server byte stream.

    Per frame: a control byte ``c`` (opcode from ``STRUCT_OPS[c & 7]``, the
    last entry reading a raw 4-bit opcode; FIN unless bit 3; high nibble 15:
    RSV bits from the next byte, 14: the wrong kind for the role, 12/13:
    forced 16/64-bit length), a payload byte ``p`` (``p & 63`` literal bytes
    follow; ``p >> 6``: 0 raw, 1 latin-1 to UTF-8, 2 UTF-8 with replacement
    characters, 3 a close code in front for close frames), a repetition byte
    ``q`` (``q >> 6``: 0 once, 1 ``(q & 63) + 2`` times, 2 repeated up to
    ``((q & 63) + 1) * 64`` bytes, 3 up to ``65536 + (q & 63)`` bytes), then
    (unless high nibble 14) the 4 mask bytes.

    A client frame is masked with those bytes; the wrong kind (14) is then
    unmasked. A server frame skips them (so one program reads the same in
    both roles) and is unmasked; the wrong kind is then masked with
    ``WRONG_KIND_KEY``.
    """
    r = _Front(program)
    out = bytearray()
    frames = 0
    while r.left() and frames < 64 and len(out) < MAX_STRUCT_STREAM:
        frames += 1
        c = r.byte()
        op = STRUCT_OPS[c & 7]
        if op is None:
            op = r.byte() & 0x0F
        fin = not c & 8
        hi = c >> 4
        rsv = r.byte() & 7 if hi == 15 else 0
        form = "16" if hi == 12 else "64" if hi == 13 else "min"
        p = r.byte()
        lit = r.take(p & 63)
        style = p >> 6
        if style == 1:
            lit = lit.decode("latin-1").encode("utf-8")
        elif style == 2:
            lit = lit.decode("utf-8", "replace").encode("utf-8")
        elif style == 3 and op == OP_CLOSE:
            lit = struct.pack("!H", CLOSE_CODES[r.byte() & 15]) + lit
        q = r.byte()
        how, k = q >> 6, q & 63
        if how == 0:
            payload = lit
        elif how == 1:
            payload = lit * (k + 2)
        else:
            target = (k + 1) * 64 if how == 2 else 65536 + k
            if how == 3 and len(out) > MAX_STRUCT_STREAM // 2:
                target = 200 + k
            unit = lit or b"\xe2\x82\xac"
            payload = (unit * (target // len(unit) + 1))[:target]
        mask = None if hi == 14 else r.take(4).ljust(4, b"\x00")
        if client:
            mask = WRONG_KIND_KEY if mask is None else None
        out += raw_frame(op, payload, fin=fin, rsv=rsv, mask=mask, form=form)
    return bytes(out)


# -- parser differential ---------------------------------------------------------


def parser_kwargs(opts: int, value: int) -> dict[str, Any]:
    """FrameParser keyword arguments from the options and value bytes."""
    kwargs: dict[str, Any] = {}
    sel = opts & 7
    if sel == 1:
        kwargs["max_message_size"] = None
    elif sel == 2:
        kwargs["max_message_size"] = value % 17
    elif sel == 3:
        kwargs["max_message_size"] = value * 4
    elif sel == 4:
        kwargs["max_message_size"] = value * 600
    elif sel == 5:
        kwargs["max_message_size"] = (1 << 64) + value - 128  # around the compiled core's 2**64 cut-off
    elif sel == 6:
        kwargs["max_message_size"] = -(value + 1)
    elif sel == 7:
        kwargs["max_message_size"] = float(value)
    if opts & 8:
        kwargs["decode_text"] = False
    if opts & 0x80:
        kwargs["deflate"] = True  # permessage-deflate: RSV1 allowed on a message's first frame
    return kwargs


def run_parser(mod: ModuleType, kwargs: dict[str, Any], chunks: list[bytes], kind: str) -> list[Any]:
    """Feed ``chunks`` (as ``kind`` objects) to a new parser of ``mod``;
    return the trace: constructor outcome, then per feed its outcome and
    ``finished``. Stops after the first exception."""
    made = outcome(lambda: mod.FrameParser(**kwargs))
    trace: list[Any] = [("init", typed_outcome(made) if made[0] == "raise" else "ok")]
    if made[0] == "raise":
        return trace
    parser = made[1]
    # Only read-only inputs (either twin) and the pure twin's inputs must come
    # back unchanged; writable ones may be unmasked in place by the compiled
    # core, so they are not compared (that copy was most of the harness' time).
    check = kind in READ_ONLY_KINDS or mod is P
    same_bytes = kind not in FLAT_DIFFERS
    for i, chunk in enumerate(chunks):
        obj = make_obj(kind, chunk)
        before = (chunk if same_bytes else flat(obj)) if check else None
        res = outcome(lambda obj=obj: parser.feed(obj))  # type: ignore[misc]
        trace.append((i, typed_outcome(res), parser.finished))
        if check and flat(obj) != before:
            who = "pure core" if mod is P else mod.__name__
            raise AssertionError(
                f"{who}: feed modified its {kind} input (feed {i}; read-only: {kind in READ_ONLY_KINDS})"
            )
        if res[0] == "raise":
            break
    return trace


def _events(trace: list[Any]) -> list[Any] | None:
    """All events of a trace in order, or None if anything raised."""
    if trace[0][1] != "ok":
        return None
    events: list[Any] = []
    for _i, result, _fin in trace[1:]:
        if result[0] != "ok":
            return None
        events.extend(result[1][1])
    return events


def _untyped(value: Any) -> Any:
    """Undo ``typed``."""
    name, inner = value
    if name == "list":
        return [_untyped(v) for v in inner]
    if name == "tuple":
        return tuple(_untyped(v) for v in inner)
    return inner


def _folded(events: list[Any], kwargs: dict[str, Any]) -> list[Any]:
    """Typed stream-mode events of a trace, pieces joined per message (still typed)."""
    folder = StreamFolder(bool(kwargs.get("decode_text", True)))
    return [typed(e) for e in folder.add([_untyped(e) for e in events])]


def _describe(stream: bytes, chunks: list[bytes], kwargs: dict[str, Any], kind: str) -> str:
    shown = stream if len(stream) <= 400 else stream[:400] + b"..."
    sizes = [len(c) for c in chunks]
    if len(sizes) > 40:
        sizes = [*sizes[:40], "..."]  # type: ignore[list-item]
    return f"stream ({len(stream)} bytes)={shown!r}\nkwargs={kwargs!r} kind={kind} chunk sizes={sizes}"


def check_parser(stream: bytes, kwargs: dict[str, Any], chunks: list[bytes], kind: str) -> None:
    """The differential itself; raises AssertionError on any difference."""
    assert C is not None and P is not None
    compiled = run_parser(C, kwargs, chunks, kind)
    pure = run_parser(P, kwargs, chunks, kind)
    if compiled != pure:
        for a, b in zip(compiled, pure, strict=False):
            if a != b:
                raise AssertionError(
                    f"compiled and pure cores differ\n{_describe(stream, chunks, kwargs, kind)}\n"
                    f"first difference:\n  compiled: {a!r}\n  pure:     {b!r}"
                )
        raise AssertionError(
            f"compiled and pure traces differ in length\n{_describe(stream, chunks, kwargs, kind)}\n"
            f"compiled: {compiled!r}\npure: {pure!r}"
        )
    # Split invariance (documented by both twins): the pure core fed the
    # whole stream at once gives the same events as fed in these chunks.
    # (Small streams only: a third parse of a 64 KiB stream costs more than
    # it finds.)
    # In stream mode the pieces follow the split: their messages do not.
    split_events = _events(pure)
    if split_events is not None and len(chunks) > 1 and len(stream) <= SPLIT_CHECK_MAX and kind not in SPLIT_CHECK_SKIP:
        whole = _events(run_parser(P, kwargs, [stream], "bytes"))
        if kwargs.get("stream") and whole is not None:
            whole, split_events = _folded(whole, kwargs), _folded(split_events, kwargs)
        if whole != split_events:
            raise AssertionError(
                f"pure core: events depend on the split\n{_describe(stream, chunks, kwargs, kind)}\n"
                f"whole: {whole!r}\nsplit: {split_events!r}"
            )


STREAM_KINDS = (OP_TEXT, OP_BINARY, OP_TEXT_DEFLATED, OP_BINARY_DEFLATED)


class StreamFolder:
    """Joins the FRAGMENT pieces of stream-mode events into the message
    events the parser gives without stream mode, checking each piece."""

    def __init__(self, decode_text: bool) -> None:
        self.decode_text = decode_text
        self.kind: Any = None
        self.parts: list[bytes] = []

    def add(self, events: list[Any]) -> list[Any]:
        """What ``events`` amount to without stream mode (a message once
        its final piece is in)."""
        out: list[Any] = []
        for event in events:
            if event[0] != FRAGMENT:
                out.append(event)
                continue
            assert len(event) == 4, f"FRAGMENT event of {len(event)} items: {event!r}"
            _tag, kind, piece, final = event
            assert kind in STREAM_KINDS, f"FRAGMENT of kind {kind!r}"
            assert type(piece) is bytes and type(final) is bool, f"FRAGMENT field types: {event!r}"
            assert piece or final, "an empty FRAGMENT piece that is not final"
            assert self.kind in (None, kind), f"FRAGMENT kind changed inside a message: {self.kind!r} -> {kind!r}"
            self.kind = kind
            self.parts.append(piece)
            if final:
                data = b"".join(self.parts)
                out.append((kind, data.decode("utf-8") if kind == OP_TEXT and self.decode_text else data))
                self.kind, self.parts = None, []
        return out


def check_stream_reassembly(stream: bytes, kwargs: dict[str, Any], chunks: list[bytes], kind: str) -> None:
    """The pure twin in stream mode, pieces joined per message, gives after
    every feed what it gives without stream mode."""
    assert P is not None
    plain_kwargs = {k: v for k, v in kwargs.items() if k != "stream"}
    made = outcome(lambda: (P.FrameParser(**kwargs), P.FrameParser(**plain_kwargs)))
    if made[0] == "raise":
        return  # bad options: the twins' differential compares the exceptions
    streaming, plain = made[1]
    folder = StreamFolder(bool(kwargs.get("decode_text", True)))
    folded: list[Any] = []
    expected: list[Any] = []
    for i, chunk in enumerate(chunks):
        got = outcome(lambda chunk=chunk: streaming.feed(make_obj(kind, chunk)))  # type: ignore[misc]
        want = outcome(lambda chunk=chunk: plain.feed(make_obj(kind, chunk)))  # type: ignore[misc]
        if got[0] == "raise" or want[0] == "raise":
            if typed_outcome(got) != typed_outcome(want):
                raise AssertionError(
                    f"stream mode raises differently\n{_describe(stream, chunks, kwargs, kind)}\n"
                    f"feed {i}: stream {got!r}, plain {want!r}"
                )
            return
        try:
            folded += folder.add(got[1])
        except AssertionError as exc:
            raise AssertionError(
                f"pure core, stream mode: bad piece ({exc})\n{_describe(stream, chunks, kwargs, kind)}\n"
                f"feed {i} events: {got[1]!r}"
            ) from None
        expected += want[1]
        if typed(folded) != typed(expected) or streaming.finished != plain.finished:
            raise AssertionError(
                "pure core: stream mode reassembled differs from plain mode\n"
                f"{_describe(stream, chunks, kwargs, kind)}\nafter feed {i}:\n"
                f"  stream: {folded!r} (finished {streaming.finished})\n"
                f"  plain:  {expected!r} (finished {plain.finished})"
            )


def decode_parser_input(
    reader: Any, mode: int, client: bool = False, stream_mode: bool = False
) -> tuple[bytes, dict[str, Any], list[bytes], str]:
    """(stream, FrameParser kwargs, chunks, input type) of a parser-mode input
    whose mode byte has been read (``client``: its ``ROLE_CLIENT`` bit,
    ``stream_mode``: its ``STREAM`` bit)."""
    opts = reader.byte()
    value = reader.byte()
    split_mode, sizes = read_split(reader)
    payload = reader.rest()
    kwargs = parser_kwargs(opts, value)
    if client:
        kwargs["masked"] = False
    if stream_mode:
        kwargs["stream"] = True
    kind = FEED_KINDS[(opts >> 4) & 7]
    if mode in (MODE_STRUCTURED, MODE_STRUCTURED_CUT):
        stream = build_stream(payload, client)
        if mode == MODE_STRUCTURED_CUT and stream:
            stream = stream[: -(value % 7 + 1)]
    else:
        stream = payload
    if kind == "odd":
        kind = ODD_FEED_KINDS[stream[0] & 3 if stream else 0]
    return stream, kwargs, split(stream, split_mode, sizes), kind


def check_parser_input(reader: Any, mode: int, client: bool = False, stream_mode: bool = False) -> None:
    args = decode_parser_input(reader, mode, client, stream_mode)
    check_parser(*args)
    if stream_mode:
        check_stream_reassembly(*args)


# -- stateless functions ----------------------------------------------------------

DATA_KINDS = (
    "bytes",
    "bytearray",
    "memoryview-ro",
    "memoryview-rw",
    "bytes-sub",
    "bytearray-sub",
    "array",
    "memoryview-H",
    "memoryview-I-rw",
    "memoryview-strided",
    "memoryview-offset-rw",
    "memoryview-released",
    "str",
    "int",
    "none",
    "bytes",
)
BUF_KINDS = (
    "bytearray",
    "memoryview-rw",
    "bytearray-sub",
    "array",
    "memoryview-I-rw",
    "memoryview-offset-rw",
    "bytes",
    "memoryview-ro",
)
PAYLOAD_KINDS = (
    "bytes",
    "str-utf8",
    "str-surrogates",
    "bytearray",
    "memoryview-ro",
    "memoryview-rw",
    "bytes-sub",
    "array",
    "memoryview-H",
    "memoryview-strided",
    "memoryview-offset-rw",
    "memoryview-released",
    "int",
    "none",
    "str-ascii",
    "bytes",
)
MASK_LENGTHS = (4, 4, 4, 4, 0, 3, 5, 8)
MASK_KINDS = ("bytes", "bytearray", "memoryview-ro", "bytes-sub")
OFFSETS = (0, 1, 2, 3, 4, 5, 7, -1, -2, -3, (1 << 62) + 1, -(1 << 70) - 1, 1 << 64, True, 1.5, None)
OPCODES = (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, 3, 0xF, 16, -1, 255, 1 << 70, True, 1.0, None, 7)
FINS = (True, False, 0, 1, 2, None, "", "x")


def _payload(kind: str, data: bytes) -> Any:
    if kind == "str-utf8":
        return data.decode("utf-8", "replace")
    if kind == "str-surrogates":
        return data.decode("utf-8", "surrogateescape")  # unencodable if data is not UTF-8
    if kind == "str-ascii":
        return data.decode("ascii", "replace")
    return make_obj(kind, data)


def _same(what: str, compiled: tuple[str, Any], pure: tuple[str, Any], detail: str) -> None:
    if typed_outcome(compiled) != typed_outcome(pure):
        raise AssertionError(
            f"{what}: compiled and pure differ\n{detail}\n  compiled: {compiled!r}\n  pure:     {pure!r}"
        )


def check_functions(reader: Any) -> None:
    assert C is not None and P is not None
    t = [reader.byte() for _ in range(6)]
    mask_src = bytes(reader.byte() for _ in range(4))
    data = reader.rest()
    dkind = DATA_KINDS[t[0] & 15]
    mlen = MASK_LENGTHS[t[1] & 7]
    mkind = MASK_KINDS[(t[1] >> 3) & 3]
    mask_bytes = (mask_src * 2)[:mlen]
    offset = OFFSETS[t[2] & 15]
    opcode = OPCODES[t[3] & 15]
    fin = FINS[(t[3] >> 4) & 7]
    pkind = PAYLOAD_KINDS[t[4] & 15]
    bkind = BUF_KINDS[(t[4] >> 4) & 7]
    detail = (
        f"data={data[:200]!r} ({len(data)} bytes) data kind={dkind} mask={mask_bytes!r} ({mkind}) "
        f"offset={offset!r} opcode={opcode!r} fin={fin!r} payload kind={pkind} buffer kind={bkind}"
    )

    # apply_mask
    c = outcome(lambda: C.apply_mask(make_obj(dkind, data), make_obj(mkind, mask_bytes), offset))
    p = outcome(lambda: P.apply_mask(make_obj(dkind, data), make_obj(mkind, mask_bytes), offset))
    _same("apply_mask", c, p, detail)
    if c[0] == "ok" and isinstance(offset, int) and not isinstance(offset, bool):
        src = flat(make_obj(dkind, data))
        if c[1] != xor_ref(src, mask_bytes, offset):
            raise AssertionError(f"apply_mask: wrong result\n{detail}\n  got: {c[1]!r}")

    # mask_inplace, on buffers of several kinds
    bufs = [make_obj(bkind, data), make_obj(bkind, data)]
    c = outcome(lambda: C.mask_inplace(bufs[0], make_obj(mkind, mask_bytes), offset))
    p = outcome(lambda: P.mask_inplace(bufs[1], make_obj(mkind, mask_bytes), offset))
    _same("mask_inplace", c, p, detail)
    if flat(bufs[0]) != flat(bufs[1]):
        raise AssertionError(
            f"mask_inplace: buffers differ\n{detail}\n  compiled: {flat(bufs[0])!r}\n  pure:     {flat(bufs[1])!r}"
        )
    if t[5] & 1:
        # The mask is the buffer itself.
        alias = [bytearray(mask_src), bytearray(mask_src)]
        c = outcome(lambda: C.mask_inplace(alias[0], alias[0], offset))
        p = outcome(lambda: P.mask_inplace(alias[1], alias[1], offset))
        _same("mask_inplace(buf, buf)", c, p, detail)
        if alias[0] != alias[1]:
            raise AssertionError(f"mask_inplace(buf, buf): {alias[0]!r} != {alias[1]!r}\n{detail}")
        # A writable view of the buffer as the data, the buffer as the mask.
        alias = [bytearray(mask_src), bytearray(mask_src)]
        c = outcome(lambda: C.mask_inplace(memoryview(alias[0]), alias[0], offset))
        p = outcome(lambda: P.mask_inplace(memoryview(alias[1]), alias[1], offset))
        _same("mask_inplace(view, buf)", c, p, detail)
        if alias[0] != alias[1]:
            raise AssertionError(f"mask_inplace(view, buf): {alias[0]!r} != {alias[1]!r}\n{detail}")

    # validate_utf8
    c = outcome(lambda: C.validate_utf8(make_obj(dkind, data)))
    p = outcome(lambda: P.validate_utf8(make_obj(dkind, data)))
    _same("validate_utf8", c, p, detail)
    if c[0] == "ok":
        try:
            flat(make_obj(dkind, data)).decode("utf-8")
            ref = True
        except UnicodeDecodeError:
            ref = False
        if c[1] is not ref:
            raise AssertionError(f"validate_utf8: {c[1]!r}, reference {ref!r}\n{detail}")

    # encode_frame, masked or not
    mask_arg = None if t[5] & 2 else mask_bytes
    mask_obj_kind = mkind
    c = outcome(lambda: C.encode_frame(opcode, _payload(pkind, data), fin, _mask_obj(mask_obj_kind, mask_arg)))
    p = outcome(lambda: P.encode_frame(opcode, _payload(pkind, data), fin, _mask_obj(mask_obj_kind, mask_arg)))
    _same("encode_frame", c, p, detail + f" mask arg={mask_arg!r}")
    if c[0] == "ok" and t[5] & 4 and len(c[1]) < 1 << 20:
        # Round trip through both parsers: a masked (client) frame in the
        # server role, an unmasked (server) one in the client role.
        frame = c[1]
        kwargs: dict[str, Any] = {"max_message_size": None}
        if mask_arg is None:
            kwargs["masked"] = False
        check_parser(frame, kwargs, [frame], "bytes")
        check_parser(frame, kwargs, [frame], "bytearray")

    # append_frame, optionally onto itself
    prefix = data[: t[5] >> 4]
    outs = [bytearray(prefix), bytearray(prefix)]
    if t[5] & 8:
        # The payload is the output buffer itself, or a view of it (which
        # pins it: growing it must fail the same way in both twins).
        if t[5] & 32:
            c = outcome(lambda: C.append_frame(outs[0], opcode, memoryview(outs[0]), fin))
            p = outcome(lambda: P.append_frame(outs[1], opcode, memoryview(outs[1]), fin))
        else:
            c = outcome(lambda: C.append_frame(outs[0], opcode, outs[0], fin))
            p = outcome(lambda: P.append_frame(outs[1], opcode, outs[1], fin))
    else:
        c = outcome(lambda: C.append_frame(outs[0], opcode, _payload(pkind, data), fin))
        p = outcome(lambda: P.append_frame(outs[1], opcode, _payload(pkind, data), fin))
    _same("append_frame", c, p, detail + f" aliased={bool(t[5] & 8)} view={bool(t[5] & 32)}")
    if outs[0] != outs[1]:
        raise AssertionError(
            f"append_frame: outputs differ\n{detail}\n  compiled: {outs[0]!r}\n  pure:     {outs[1]!r}"
        )
    if t[5] & 16:
        c = outcome(lambda: C.append_frame(bytes(prefix), OP_BINARY, data))
        p = outcome(lambda: P.append_frame(bytes(prefix), OP_BINARY, data))
        _same("append_frame(bytes out)", c, p, detail)


def _mask_obj(kind: str, mask: bytes | None) -> Any:
    return None if mask is None else make_obj(kind, mask)


# -- entry points -------------------------------------------------------------------


def check_input(data: bytes, reader: Any = None) -> None:
    """Run one harness input (``reader`` defaults to the atheris-free one)."""
    if C is None:
        load(None)
    if reader is None:
        reader = TailReader(data)
    first = reader.byte()
    mode = first & 7
    client = bool(first & ROLE_CLIENT)
    stream_mode = bool(first & STREAM)
    if mode >= MODE_FUNCTIONS:
        check_functions(reader)
    elif mode >= MODE_STRUCTURED:
        check_parser_input(reader, mode, client, stream_mode)
    else:
        check_parser_input(reader, MODE_RAW, client, stream_mode)


def test_one_input(data: bytes) -> None:
    check_input(data, make_reader(data, _ATHERIS))


def main() -> None:
    run_main("core", load, test_one_input)


if __name__ == "__main__":
    main()
