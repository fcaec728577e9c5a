"""Write the seed corpora of the fuzz harnesses.

    python fuzz/make_corpus.py [core|http ...] [--out DIR]

Writes ``fuzz/corpus/core/`` and ``fuzz/corpus/http/`` (or ``DIR/core``,
``DIR/http``). The corpus is generated, not committed: it is deterministic,
takes well under a second, and the harnesses run this script themselves when
their default corpus directory is missing. ``fuzz/corpus/`` is git-ignored
(libFuzzer adds its own finds there while fuzzing).

Core seeds: every RFC 6455 edge case of ``tests/test_core.py`` (well-formed
client frames built with ``encode_frame(..., mask=MASK)``, malformed ones as
raw bytes), the chunking streams of that file, valid fragmented and
interleaved streams, and a few inputs for the structured and function modes.
Each stream is written whole and split byte by byte (and a few with
patterns), each as ``bytes`` and as a writable ``bytearray``. For the client
role (parsers made with ``masked=False``): a few server streams (unmasked
frames, and a masked one that must fail) and the structured programs again.
For stream mode (``stream=True``, the ``STREAM`` bit): every stream case and
every tenth edge case, whole, byte by byte and in 7-byte feeds, the client
role cases whole and byte by byte, and the structured programs.

HTTP seeds: valid requests, pipelined requests, chunked bodies, upgrade
requests with WebSocket bytes after the head, Expect: 100-continue, and the
refusals (oversized head, too many headers, big body, bad version, bad
method, malformed lines), whole and split; and the inputs that exposed
faults in issue 11 (20,000 one-byte chunks, upgrade look-alikes with
``\\xa0``/``\\x85``, an HTTP/1.0 upgrade, HTTP/1.0 with chunked, ``gzip,
chunked``, a duplicate Host, a malformed request pipelined after valid ones).
"""

from __future__ import annotations

import argparse
import hashlib
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import (
    CORPUS_DIR,
    SPLIT_BYTEWISE,
    SPLIT_FIXED,
    SPLIT_PATTERN,
    SPLIT_WHOLE,
    split_trailer,
    trailer,
)
from fuzz_core import (
    MODE_FUNCTIONS,
    MODE_RAW,
    MODE_STRUCTURED,
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    ROLE_CLIENT,
    STREAM,
    raw_frame,
)

MASK = bytes.fromhex("37fa213d")
KIND_BYTES = 0
KIND_BYTEARRAY = 1

# -- core seeds -------------------------------------------------------------------


def _encode(opcode: int, payload: bytes | str = b"", fin: bool = True, mask: bytes = MASK) -> bytes:
    """A well-formed masked client frame, built by the pure core's encoder."""
    from wsnest.core import _frames_py

    return _frames_py.encode_frame(opcode, payload, fin=fin, mask=mask)


def frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    form: str = "min",
) -> bytes:
    """Like ``tests/test_core.py``'s ``frame``: ``encode_frame`` when the
    frame is well-formed, raw bytes otherwise."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    if rsv == 0 and mask is not None and form == "min" and 0 <= opcode <= 0xF:
        return _encode(opcode, payload, fin, mask)
    return raw_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask, form=form)


def header(
    opcode: int, length: int, *, fin: bool = True, rsv: int = 0, masked: bool = True, form: str = "min"
) -> bytes:
    """A header without masking key (the declared length is not followed)."""
    head = raw_frame(opcode, b"", fin=fin, rsv=rsv, mask=b"\0\0\0\0" if masked else None, form=form, length=length)
    return head[:-4] if masked else head


def text(payload: bytes | str, fin: bool = True) -> bytes:
    return frame(OP_TEXT, payload, fin=fin)


def cont(payload: bytes | str, fin: bool = True) -> bytes:
    return frame(OP_CONT, payload, fin=fin)


def ztext(payload: bytes | str, fin: bool = True) -> bytes:
    """First frame of a compressed text message (RSV1; any bytes as payload)."""
    return frame(OP_TEXT, payload, fin=fin, rsv=4)


def zbinary(payload: bytes | str, fin: bool = True) -> bytes:
    return frame(OP_BINARY, payload, fin=fin, rsv=4)


def close(code: int | None = None, reason: bytes | str = b"") -> bytes:
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    return frame(OP_CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CLOSE_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
UNKNOWN_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]
BAD_SEQUENCES = {
    "overlong-2": b"\xc0\x80",
    "overlong-3": b"\xe0\x80\x80",
    "overlong-4": b"\xf0\x80\x80\x80",
    "above-max": b"\xf4\x90\x80\x80",
    "f5": b"\xf5\x80\x80\x80",
    "ff": b"\xff",
    "stray-continuation": b"\x80",
    "surrogate": b"\xed\xa0\x80",
}

Case = tuple[str, bytes, dict]


def edge_cases() -> list[Case]:
    """The RFC 6455 edge cases of ``tests/test_core.py`` (same streams, same kwargs)."""
    c: list[Case] = []

    def case(name: str, stream: bytes, **kwargs: object) -> None:
        c.append((name, stream, kwargs))

    # Framing.
    case("unmasked", frame(OP_TEXT, "Hello", mask=None))
    case("unmasked-ping", frame(OP_PING, b"", mask=None))
    for bit in (1, 2, 3):
        case(f"rsv{bit}", frame(OP_TEXT, "hi", rsv=1 << (3 - bit)))
    case("rsv-all", frame(OP_BINARY, b"x", rsv=7))
    case("rsv-on-continuation", text("a", fin=False) + frame(OP_CONT, "b", rsv=4))
    for op in UNKNOWN_OPCODES:
        case(f"opcode-{op:#x}", frame(op, b"x"))
    case("ping-125", frame(OP_PING, b"p" * 125))
    case("ping-126", frame(OP_PING, b"p" * 126))
    case("ping-126-header-only", header(OP_PING, 126))
    case("pong-64bit-length", frame(OP_PONG, b"p" * 3, form="64"))
    case("close-126", frame(OP_CLOSE, b"\x03\xe8" + b"r" * 124))
    case("fragmented-ping", frame(OP_PING, b"a", fin=False))
    case("fragmented-pong", frame(OP_PONG, b"a", fin=False))
    case("fragmented-close", frame(OP_CLOSE, b"\x03\xe8", fin=False))
    case("continuation-first", cont("x"))
    case("continuation-after-message", text("a") + cont("b"))
    case("text-inside-fragmented", text("a", fin=False) + text("b"))
    case("binary-inside-fragmented", frame(OP_BINARY, b"a", fin=False) + frame(OP_BINARY, b"b"))
    case(
        "controls-inside-fragmented",
        text("Hel", fin=False) + frame(OP_PING, b"p") + cont("l", fin=False) + frame(OP_PONG, b"q") + cont("lo"),
    )
    case("close-inside-fragmented", frame(OP_BINARY, b"ab", fin=False) + close(1000, "bye") + cont(b"cd"))
    # Lengths.
    case("16bit-minimal", frame(OP_BINARY, b"b" * 126))
    case("16bit-non-minimal-125", frame(OP_BINARY, b"b" * 125, form="16"))
    case("16bit-non-minimal-0", header(OP_BINARY, 0, form="16"))
    case("64bit-minimal", frame(OP_BINARY, b"b" * 65536))
    case("64bit-non-minimal-65535", header(OP_BINARY, 65535, form="64"))
    case("64bit-non-minimal-5", frame(OP_TEXT, "hello", form="64"))
    case("64bit-top-bit", header(OP_BINARY, 1 << 63, form="raw64"))
    case("64bit-all-ones", header(OP_BINARY, (1 << 64) - 1, form="raw64"))
    case("64bit-top-bit-small", header(OP_BINARY, (1 << 63) | 5, form="raw64"))
    case("length-2**40-header-only", header(OP_BINARY, 1 << 40))
    case("length-2**40-unlimited", header(OP_BINARY, 1 << 40) + MASK + b"x", max_message_size=None)
    case("default-limit-header-only", header(OP_TEXT, (1 << 20) + 1))
    # Message size limit.
    case("limit-exact", text("0123456789"), max_message_size=10)
    case("limit-over", text("0123456789A"), max_message_size=10)
    case("limit-over-header-only", header(OP_BINARY, 11)[:2], max_message_size=10)
    case("limit-exact-fragments", frame(OP_BINARY, b"012345", fin=False) + cont(b"6789"), max_message_size=10)
    case(
        "limit-over-fragments-header-only",
        frame(OP_BINARY, b"012345", fin=False) + header(OP_CONT, 5)[:2],
        max_message_size=10,
    )
    case("limit-resets-per-message", text("01234567") + text("89abcdef"), max_message_size=8)
    case("limit-zero-empty-ok", text(""), max_message_size=0)
    case("limit-zero-one-byte", text("a"), max_message_size=0)
    case("limit-not-for-control", frame(OP_PING, b"ping"), max_message_size=0)
    case("unlimited", frame(OP_BINARY, b"x" * 70000), max_message_size=None)
    # Close frames.
    case("close-empty", close())
    case("close-1-byte", frame(OP_CLOSE, b"\x03"))
    for code in VALID_CLOSE_CODES:
        case(f"close-{code}", close(code))
    for code in INVALID_CLOSE_CODES:
        case(f"close-bad-{code}", close(code))
    case("close-reason", close(1000, "bye 😀"))
    case("close-reason-123-bytes", close(4000, "r" * 123))
    case("close-bad-reason", close(1000, b"bye\xff"))
    case("close-truncated-reason", close(1000, b"\xe2\x82"))
    case("close-bad-code-and-reason", close(1004, b"\xff"))
    case("after-close-ignored", close(1001, "bye") + text("more") + b"\xff" * 10)
    # UTF-8 in text messages.
    case("text-bad-utf8", text(b"ab\xffcd"))
    case("text-bad-utf8-first-fragment-only", text(b"ab\xff", fin=False))
    case("text-bad-utf8-before-control", text(b"\xc3\x28", fin=False) + frame(OP_PING, b"p") + cont(b"ok"))
    case("text-split-sequence", text(b"\xe2", fin=False) + cont(b"\x82\xac"))
    case(
        "text-4-byte-split-thrice",
        text(b"a\xf0", fin=False) + cont(b"\x9f", fin=False) + frame(OP_PING, b"") + cont(b"\x98\x80z"),
    )
    case("text-incomplete-at-end", text(b"a\xe2\x82"))
    case("text-incomplete-then-empty-final", text(b"a\xf0\x9f", fin=False) + cont(b""))
    case("text-incomplete-non-final-ok", text(b"a\xf0\x9f", fin=False))
    case("text-surrogate-prefix-non-final", text(b"ok\xed\xa0", fin=False))
    case("text-e0-80-non-final", text(b"\xe0\x80", fin=False))
    case("text-f4-90-non-final", text(b"\xf4\x90", fin=False))
    case("text-surrogate-across-fragments", text(b"\xed", fin=False) + cont(b"\xa0\x80"))
    for name, seq in BAD_SEQUENCES.items():
        case(f"text-{name}", text(b"x" + seq + b"y"))
    for name, seq in BAD_SEQUENCES.items():
        case(f"text-{name}-non-final", text(seq, fin=False))
    case("text-bad-utf8-raw", text(b"\xff"), decode_text=False)
    # Valid content, empty and zero-length frames.
    case("text-empty", text(""))
    case("binary-empty", frame(OP_BINARY, b""))
    case("ping-empty", frame(OP_PING, b""))
    case("pong", frame(OP_PONG, b"\x00\xff"))
    case("text-4-byte", text("😀𝄞\U0010ffff"))
    case("text-mixed-widths", text("aé€😀"))
    case("text-nul-and-noncharacter", text("\x00\ufffe\uffff"))
    case("zero-length-fragments", text("", fin=False) + cont("ab", fin=False) + cont("", fin=False) + cont("c"))
    case("zero-length-final-continuation", text("abc", fin=False) + cont(""))
    case("binary-zero-length-final-continuation", frame(OP_BINARY, b"\x00\x01", fin=False) + cont(b""))
    case("text-raw", text("héllo 😀"), decode_text=False)
    case("text-raw-fragmented", text(b"\xe2", fin=False) + cont(b"\x82\xac"), decode_text=False)
    case("text-raw-empty", text(""), decode_text=False)
    case(
        "several-messages",
        text("one") + frame(OP_BINARY, b"two") + frame(OP_PING, b"3") + text("four"),
    )
    case("incomplete-header", text("hello")[:5])
    case("incomplete-payload", text("hello")[:-1])
    case("zero-mask", frame(OP_BINARY, b"abc", mask=b"\x00" * 4))
    # Check order.
    case("order-rsv-before-opcode", frame(0x3, b"", rsv=4))
    case("order-opcode-before-unmasked", frame(0xB, b"", mask=None))
    case("order-fragmented-before-too-long", header(OP_PING, 200, fin=False))
    case("order-too-long-before-unmasked", header(OP_PING, 200, masked=False))
    case("order-unmasked-before-continuation", frame(OP_CONT, b"", mask=None))
    case("order-continuation-before-length", header(OP_CONT, 5, form="16"))
    case("order-top-bit-before-limit", header(OP_BINARY, 1 << 63, form="raw64"))
    case("order-non-minimal-before-limit", header(OP_BINARY, 100, form="16"), max_message_size=1)
    c.extend(deflate_cases())
    return c


def deflate_cases() -> list[Case]:
    """The permessage-deflate cases of ``tests/test_core.py`` (``deflate=True``)."""
    c: list[Case] = []

    def case(name: str, stream: bytes, **kwargs: object) -> None:
        c.append((f"deflate-{name}", stream, {"deflate": True, **kwargs}))

    case("text", ztext(b"\xf2H\xcd\xc9\xc9\x07\x00"))
    case("binary", zbinary(b"\x00\xff"))
    case("text-empty", ztext(b""))
    case("binary-empty", zbinary(b""))
    case("text-not-utf8-not-checked", ztext(b"ab\xff\xed\xa0"))
    case("text-raw", ztext(b"\xff"), decode_text=False)
    case(
        "text-fragmented",
        ztext(b"\xf0\x9f", fin=False)
        + frame(OP_PING, b"p")
        + cont(b"\xff", fin=False)
        + cont(b"", fin=False)
        + cont(b"z"),
    )
    case("binary-fragmented", zbinary(b"ab", fin=False) + cont(b"cd"))
    case("text-16bit", ztext(b"\xe2" * 600))
    case("binary-64bit", zbinary(b"\x01" * 65536))
    case("text-64bit-unlimited", ztext(b"\xff" * 70000), max_message_size=None)
    case("plain-text", text("héllo"))
    case("plain-text-bad-utf8", text(b"ab\xff"))
    case("plain-text-raw", text("é"), decode_text=False)
    case("plain-binary", frame(OP_BINARY, b"\x00"))
    case(
        "mixed",
        ztext(b"\xff") + text("plain") + zbinary(b"z", fin=False) + cont(b"y") + frame(OP_BINARY, b"b") + ztext(b"t"),
    )
    case("rsv1-on-continuation", ztext(b"a", fin=False) + frame(OP_CONT, b"b", rsv=4))
    case("rsv1-on-continuation-of-plain", text("a", fin=False) + frame(OP_CONT, b"b", rsv=4))
    case("rsv1-on-lone-continuation", frame(OP_CONT, b"b", rsv=4))
    for name, op, payload in [("ping", OP_PING, b"p"), ("pong", OP_PONG, b""), ("close", OP_CLOSE, b"\x03\xe8")]:
        case(f"rsv1-on-{name}", frame(op, payload, rsv=4))
    case("rsv1-on-ping-inside-compressed", ztext(b"a", fin=False) + frame(OP_PING, b"", rsv=4))
    case("rsv1-on-unknown-opcode", frame(0x3, b"", rsv=4))
    for rsv in (1, 2, 3, 5, 6, 7):
        case(f"rsv-{rsv}", frame(OP_TEXT, "hi", rsv=rsv))
    case("rsv2-on-binary", frame(OP_BINARY, b"x", rsv=2))
    case("compressed-inside-fragmented", frame(OP_BINARY, b"a", fin=False) + ztext(b"b"))
    case("rsv1-unmasked", frame(OP_TEXT, b"x", rsv=4, mask=None))
    case("limit-exact", zbinary(b"0123456789"), max_message_size=10)
    case("limit-over", ztext(b"0123456789A"), max_message_size=10)
    case("limit-over-header-only", header(OP_TEXT, 11, rsv=4)[:2], max_message_size=10)
    case("limit-over-fragments-header-only", ztext(b"012345", fin=False) + header(OP_CONT, 5)[:2], max_message_size=10)
    case("limit-zero-empty-ok", zbinary(b""), max_message_size=0)
    case("length-2**40-header-only", header(OP_BINARY, 1 << 40, rsv=4))
    case("incomplete", ztext(b"abc")[:-1])
    return c


def stream_cases() -> list[Case]:
    """Valid fragmented/interleaved streams and the chunking streams of test_core."""
    euro = "€" * 200  # 600 bytes of 3-byte characters: the compiled four-chain DFA
    emoji = "😀" * 160  # 640 bytes of 4-byte characters
    mixed = ("aé€😀" * 60).encode()
    return [
        (
            "chunk-valid",
            text("hé", fin=False)
            + frame(OP_PING, b"p1")
            + cont("l😀", fin=False)
            + cont("")
            + frame(OP_BINARY, bytes(range(130)))
            + frame(OP_PONG, b"")
            + text("")
            + close(1000, "bye"),
            {"max_message_size": 200},
        ),
        (
            "chunk-bad-utf8",
            text("ok") + text(b"\xf0\x9f", fin=False) + frame(OP_PING, b"x") + cont(b"\x41"),
            {"max_message_size": 200},
        ),
        (
            "chunk-too-big",
            text("ok") + frame(OP_BINARY, b"ab", fin=False) + header(OP_CONT, 300) + b"junk",
            {"max_message_size": 200},
        ),
        (
            "chunk-non-minimal",
            frame(OP_PING, b"x") + header(OP_BINARY, 70, form="64") + MASK,
            {"max_message_size": 200},
        ),
        ("long-text-3-byte", text(euro), {}),
        ("long-text-4-byte", text(emoji) + close(1001), {}),
        ("long-text-raw", text(euro), {"decode_text": False}),
        ("long-text-fragmented", text(mixed[:301], fin=False) + frame(OP_PING, b"!") + cont(mixed[301:]), {}),
        (
            "long-text-bad-in-block",
            text(euro.encode()[:400] + b"\xed\xa0\x80" + euro.encode()[:300]),
            {},
        ),
        ("text-1-byte", text("a") + text("é") + text("ab"), {}),
        ("text-513-ascii", text("x" * 513), {}),
        (
            "binary-fragmented-many",
            b"".join(frame(OP_BINARY if i == 0 else OP_CONT, bytes([i]) * i, fin=i == 9) for i in range(10)),
            {},
        ),
        (
            "interleaved-controls",
            frame(OP_BINARY, b"ab", fin=False)
            + frame(OP_PING, b"1")
            + frame(OP_PONG, b"2")
            + cont(b"cd", fin=False)
            + frame(OP_PING, b"p" * 125)
            + cont(b"ef")
            + text("done")
            + close(1000, "ok"),
            {},
        ),
        (
            "masks-various",
            _encode(OP_TEXT, "héllo", mask=b"\xff\x00\xff\x01") + _encode(OP_BINARY, b"\x00" * 9, mask=b"abcd"),
            {},
        ),
        ("16bit-text-limit", text("y" * 300), {"max_message_size": 300}),
        (
            "64bit-unlimited-fragmented",
            frame(OP_BINARY, b"z" * 65536, fin=False) + cont(b"!"),
            {"max_message_size": None},
        ),
        ("huge-limit", text("ok") + header(OP_BINARY, 1 << 62), {"max_message_size": 1 << 64}),
        ("close-after-fragment", text("a", fin=False) + close(), {}),
        # permessage-deflate: compressed and plain messages interleaved; a
        # compressed message with RSV1 where it is refused.
        (
            "deflate-chunk-stream",
            ztext(b"\xf0\x9f", fin=False)
            + frame(OP_PING, b"p1")
            + cont(b"\xff" * 130, fin=False)
            + cont(b"")
            + zbinary(bytes(range(200)))
            + text("plain é")
            + ztext(b"\xed\xa0")
            + frame(OP_BINARY, b"b")
            + ztext(b"")
            + close(1000),
            {"max_message_size": 400, "deflate": True},
        ),
        ("deflate-long-compressed-text", ztext(euro.encode()[:401] + b"\xff" * 300), {"deflate": True}),
        ("deflate-off-rsv1", ztext(b"x") + text("y"), {}),
    ]


def core_cases() -> list[Case]:
    return edge_cases() + stream_cases()


def server_frame(opcode: int, payload: bytes | str = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """An unmasked (server) frame, as a client-role parser reads it."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return raw_frame(opcode, payload, fin=fin, rsv=rsv, mask=None)


def client_role_cases() -> list[Case]:
    """Server byte streams for parsers in the client role (``masked=False``,
    which the seed carries in its mode byte, not in these kwargs)."""
    s = server_frame
    return [
        (
            "client-valid",
            s(OP_TEXT, "hé", fin=False)
            + s(OP_PING, b"p1")
            + s(OP_CONT, b"l\xf0\x9f", fin=False)
            + s(OP_CONT, b"\x98\x80")
            + s(OP_BINARY, bytes(range(130)))
            + s(OP_PONG)
            + s(OP_TEXT)
            + s(OP_CLOSE, struct.pack("!H", 1000) + b"bye"),
            {"max_message_size": 200},
        ),
        ("client-long-text", s(OP_TEXT, "€" * 200) + s(OP_CLOSE), {}),
        ("client-64bit", s(OP_BINARY, b"z" * 65536, fin=False) + s(OP_CONT, b"!"), {"max_message_size": None}),
        ("client-too-big", s(OP_TEXT, "ok") + s(OP_BINARY, b"ab", fin=False) + s(OP_CONT, b"x" * 300), {}),
        ("client-bad-utf8", s(OP_TEXT, b"a\xed\xa0", fin=False) + s(OP_PING, b"x"), {}),
        ("client-masked-frame", s(OP_TEXT, "ok") + frame(OP_TEXT, "masked") + s(OP_TEXT, "never"), {}),
        ("client-masked-continuation", s(OP_BINARY, b"a", fin=False) + frame(OP_CONT, b"b"), {}),
        (
            "client-deflate",
            s(OP_TEXT, b"\xf2H\xcd\xc9\xc9\x07\x00", rsv=4)
            + s(OP_BINARY, b"\xff", fin=False, rsv=4)
            + s(OP_CONT, b"\xed\xa0")
            + s(OP_TEXT, "plain"),
            {"deflate": True},
        ),
        (
            "client-deflate-rsv1-on-cont",
            s(OP_TEXT, b"a", fin=False, rsv=4) + s(OP_CONT, b"b", rsv=4),
            {"deflate": True},
        ),
    ]


def encode_max(kwargs: dict) -> tuple[int, int]:
    """The (selector, value) bytes of ``fuzz_core.parser_kwargs`` for these kwargs."""
    opts = 0 if kwargs.get("decode_text", True) else 8
    if kwargs.get("deflate", False):
        opts |= 0x80
    if "max_message_size" not in kwargs:
        return opts, 0
    m = kwargs["max_message_size"]
    if m is None:
        return opts | 1, 0
    if 0 <= m <= 16:
        return opts | 2, m
    if m % 4 == 0 and m // 4 <= 255:
        return opts | 3, m // 4
    if m % 600 == 0 and m // 600 <= 255:
        return opts | 4, m // 600
    if (1 << 64) - 128 <= m <= (1 << 64) + 127:
        return opts | 5, m - (1 << 64) + 128
    raise ValueError(f"max_message_size {m} cannot be expressed by the harness")


def core_seed(
    stream: bytes,
    kwargs: dict,
    split_mode: int = SPLIT_WHOLE,
    sizes: tuple[int, ...] = (),
    kind: int = KIND_BYTES,
    mode: int = MODE_RAW,
) -> bytes:
    opts, value = encode_max(kwargs)
    return stream + trailer(mode, opts | kind << 4, value, *split_trailer(split_mode, sizes))


def core_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for name, stream, kwargs in client_role_cases():
        for kind in (KIND_BYTES, KIND_BYTEARRAY):
            k = "b" if kind == KIND_BYTES else "ba"
            client = MODE_RAW | ROLE_CLIENT
            seeds[f"{name}.whole.{k}"] = core_seed(stream, kwargs, SPLIT_WHOLE, kind=kind, mode=client)
            if len(stream) < 4096:
                seeds[f"{name}.bytewise.{k}"] = core_seed(stream, kwargs, SPLIT_BYTEWISE, kind=kind, mode=client)
    for name, stream, kwargs in core_cases():
        for kind in (KIND_BYTES, KIND_BYTEARRAY):
            k = "b" if kind == KIND_BYTES else "ba"
            seeds[f"{name}.whole.{k}"] = core_seed(stream, kwargs, SPLIT_WHOLE, kind=kind)
            if len(stream) < 4096:
                seeds[f"{name}.bytewise.{k}"] = core_seed(stream, kwargs, SPLIT_BYTEWISE, kind=kind)
    for name, stream, kwargs in core_cases()[::10]:
        seeds[f"{name}.whole.odd-type"] = core_seed(stream, kwargs, SPLIT_WHOLE, kind=7)
    for name, stream, kwargs in stream_cases()[:4]:
        seeds[f"{name}.fixed7"] = core_seed(stream, kwargs, SPLIT_FIXED, (7,))
        seeds[f"{name}.pattern"] = core_seed(stream, kwargs, SPLIT_PATTERN, (1, 0, 3, 2, 11))
    # Stream mode: the pieces depend on the split, so several splits.
    stream_mode = [(f"stream-{n}", st, kw, MODE_RAW | STREAM) for n, st, kw in stream_cases() + edge_cases()[::10]]
    stream_mode += [(f"stream-{n}", st, kw, MODE_RAW | STREAM | ROLE_CLIENT) for n, st, kw in client_role_cases()]
    for name, stream, kwargs, mode in stream_mode:
        seeds[f"{name}.whole"] = core_seed(stream, kwargs, SPLIT_WHOLE, mode=mode)
        if len(stream) < 4096:
            seeds[f"{name}.bytewise"] = core_seed(stream, kwargs, SPLIT_BYTEWISE, mode=mode)
        if not mode & ROLE_CLIENT:
            seeds[f"{name}.fixed7.ba"] = core_seed(stream, kwargs, SPLIT_FIXED, (7,), kind=KIND_BYTEARRAY, mode=mode)
    # Structured mode: a few programs (fuzz_core.build_stream).
    programs = {
        "text-ping-cont": bytes([0x09, 0x03])
        + b"abc"
        + b"\x00"
        + MASK
        + bytes([0x03, 0x01])
        + b"p"
        + b"\x00"
        + MASK
        + bytes([0x02, 0x02])
        + b"de"
        + b"\x00"
        + MASK,
        "long-euro": bytes([0x00, 0x80 | 6]) + "€€".encode() + bytes([0x80 | 20]) + MASK,
        "long-latin1": bytes([0x00, 0x40 | 8]) + bytes(range(0xE0, 0xE8)) + bytes([0x80 | 30]) + MASK,
        "close-code": bytes([0x05, 0xC0 | 3]) + b"bye" + bytes([2, 0x00]) + MASK,
        "big-binary": bytes([0x01, 0x04]) + b"abcd" + bytes([0xC0]) + MASK,
    }
    # With deflate=True (options bit 7): control byte 0xF0 | op reads the RSV
    # bits from the next byte (4: RSV1). A compressed fragmented text with a
    # ping inside, then RSV1 on a continuation.
    deflate_programs = {
        "deflate-text-ping-cont": bytes([0xF8 | 0, 4, 0x03])
        + b"\xff\x00a"
        + b"\x00"
        + MASK
        + bytes([0x03, 0x01])
        + b"p"
        + b"\x00"
        + MASK
        + bytes([0x02, 0x02])
        + b"de"
        + b"\x00"
        + MASK,
        "deflate-rsv1-on-cont": bytes([0xF8 | 1, 4, 0x01]) + b"b" + b"\x00" + MASK + bytes([0xF2, 4, 0x01]) + b"c",
    }
    # Each program also in the client role (ROLE_CLIENT: the same frames,
    # unmasked), and once with a frame of the wrong kind for it (control byte
    # high nibble 14: masked in a server stream).
    fixed100 = split_trailer(SPLIT_FIXED, (100,))
    fixed5 = split_trailer(SPLIT_FIXED, (5,))
    for name, program in programs.items():
        seeds[f"structured-{name}"] = program + trailer(MODE_STRUCTURED, 0, 0, *fixed100)
        seeds[f"structured-client-{name}"] = program + trailer(MODE_STRUCTURED | ROLE_CLIENT, 0, 0, *fixed100)
        seeds[f"structured-stream-{name}"] = program + trailer(MODE_STRUCTURED | STREAM, 0, 0, *fixed5)
    for name, program in deflate_programs.items():
        seeds[f"structured-{name}"] = program + trailer(MODE_STRUCTURED, 0x80, 0, *fixed5)
        seeds[f"structured-client-{name}"] = program + trailer(MODE_STRUCTURED | ROLE_CLIENT, 0x80, 0, *fixed5)
        seeds[f"structured-stream-{name}"] = program + trailer(MODE_STRUCTURED | STREAM | ROLE_CLIENT, 0x80, 0, *fixed5)
    wrong_kind = bytes([0x01, 0x02]) + b"ok" + b"\x00" + MASK + bytes([0xE1, 0x01]) + b"!" + b"\x00"
    seeds["structured-client-wrong-kind"] = wrong_kind + trailer(MODE_STRUCTURED | ROLE_CLIENT, 0, 0, *fixed5)
    # Function mode: t[0..5], 4 mask bytes, then the data.
    funcs = {
        "ascii": (b"Hello, world", [0, 0, 1, OP_TEXT, 1, 4 | 1, *MASK]),
        "utf8": ("héllo 😀 €".encode(), [1, 0, 2, OP_BINARY, 3, 2, *MASK]),
        "bad-utf8": (b"ab\xed\xa0\x80cd", [2, 8, 3, OP_PING, 4, 8, *MASK]),
        "long": (bytes(range(256)) * 3, [3, 0, 5, OP_BINARY | 0x10, 5, 16 | 4, *MASK]),
        "long-utf8": (("€😀" * 150).encode(), [0, 0, 0, OP_TEXT, 1, 4, *MASK]),
        # 64-bit frame lengths in encode_frame / append_frame (and a round trip).
        "64k": (bytes(range(256)) * 257, [1, 0, 1, OP_BINARY, 3, 4, *MASK]),
    }
    for name, (data, params) in funcs.items():
        seeds[f"functions-{name}"] = data + trailer(MODE_FUNCTIONS, *params)
    return seeds


# -- HTTP seeds ---------------------------------------------------------------------

WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def http_requests() -> dict[str, bytes]:
    upgrade = (
        b"GET /ws?room=1 HTTP/1.1\r\nHost: localhost:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + WS_KEY + b"\r\nSec-WebSocket-Version: 13\r\nOrigin: http://localhost\r\n\r\n"
    )
    ws_bytes = raw_frame(OP_TEXT, b"hello") + raw_frame(OP_CLOSE, b"\x03\xe8")
    many_headers = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n"
    return {
        "get": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        "get-query": b"GET /a/b%20c/%E2%82%AC?x=1&y=%2F HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n",
        "get-absolute": b"GET http://example.test/path?q HTTP/1.1\r\nHost: example.test\r\n\r\n",
        "get-http10": b"GET /old HTTP/1.0\r\n\r\n",
        "get-http10-keepalive": b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        "head": b"HEAD /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        "options-star": b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
        "post-length": b"POST /submit HTTP/1.1\r\nHost: h\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n"
        b"hello world",
        "post-empty": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        "put-binary": b"PUT /f HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\n\x00\xff\r\n",
        "chunked": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n",
        "chunked-trailers": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"a\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n",
        "chunked-bad-size": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nhello\r\n0\r\n\r\n",
        "pipelined": b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nPOST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
        b"GET /3 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        "pipelined-then-garbage": b"GET /1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n\x00\x01garbage",
        "upgrade": upgrade,
        "upgrade-with-frames": upgrade + ws_bytes,
        "upgrade-h2c": b"GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        "connect": b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n\x16\x03\x01",
        "expect-continue": b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        "expect-bad": b"POST /up HTTP/1.1\r\nHost: h\r\nExpect: something\r\nContent-Length: 1\r\n\r\nx",
        "oversized-head": b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: h\r\n\r\n",
        "oversized-header": b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n",
        "too-many-headers": many_headers,
        "body-too-big": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\nabc",
        "no-host": b"GET / HTTP/1.1\r\n\r\n",
        "http2-version": b"GET / HTTP/2.0\r\nHost: h\r\n\r\n",
        "http09": b"GET /\r\n\r\n",
        "bad-method": b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n",
        "unknown-method": b"BREW /pot HTTP/1.1\r\nHost: h\r\n\r\n",
        "bad-header-name": b"GET / HTTP/1.1\r\nHost: h\r\nBad Header: v\r\n\r\n",
        "lf-only": b"GET / HTTP/1.1\nHost: h\n\n",
        "dup-content-length": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        "cl-and-te": b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "latin1-header": b"GET / HTTP/1.1\r\nHost: h\r\nX-Name: caf\xe9 \xff\r\n\r\n",
        "obs-fold": b"GET / HTTP/1.1\r\nHost: h\r\nX-Folded: a\r\n b\r\n\r\n",
        # issue 11: inputs that exposed faults in the HTTP layer
        "chunked-tiny-many": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"1\r\nx\r\n" * 20000
        + b"0\r\n\r\n",
        "upgrade-connection-nbsp": upgrade.replace(b"Connection: Upgrade", b"Connection: Upgrade\xa0"),
        "upgrade-connection-nel": upgrade.replace(b"Connection: Upgrade", b"Connection: Upgrade\x85"),
        "upgrade-websocket-nbsp": upgrade.replace(b"Upgrade: websocket", b"Upgrade: websocket\xa0"),
        "upgrade-http10": upgrade.replace(b"HTTP/1.1", b"HTTP/1.0"),
        "dup-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "http10-chunked-keepalive": b"POST /c HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.0\r\n\r\n",
        "te-gzip-chunked": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
        b"2\r\nhi\r\n0\r\n\r\n",
        "te-two-headers": b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
        "pipelined-then-malformed": b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"
        b"\x00\x01garbage\r\n\r\n",
        "pipelined-then-too-many-headers": b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" + many_headers,
        "empty": b"",
        "crlf-only": b"\r\n\r\n",
        "binary-garbage": bytes(range(256)),
    }


def encode_limits(small: bool) -> list[int]:
    """Limit bytes of fuzz_http: default limits, or small ones (head 1024 B,
    16 headers, body 300 B)."""
    return [1, (1024 - 16) // 4, 16, 100] if small else [0, 0, 0, 0]


def http_seed(
    request: bytes, split_mode: int = SPLIT_WHOLE, sizes: tuple[int, ...] = (), small: bool = False, kind: int = 0
) -> bytes:
    sel, head, headers, body = encode_limits(small)
    return request + trailer(sel | kind << 2, head, headers, body, *split_trailer(split_mode, sizes))


def http_seeds() -> dict[str, bytes]:
    seeds: dict[str, bytes] = {}
    for name, request in http_requests().items():
        seeds[f"{name}.whole"] = http_seed(request)
        seeds[f"{name}.bytewise.view"] = http_seed(request, SPLIT_BYTEWISE, kind=2)
        seeds[f"{name}.pattern.small"] = http_seed(request, SPLIT_PATTERN, (13, 1, 0, 40), small=True, kind=1)
    return seeds


# -- writing -----------------------------------------------------------------------------

TARGETS = {"core": core_seeds, "http": http_seeds}


def write(target: str, out: Path = CORPUS_DIR) -> Path:
    """Write one target's seeds to ``out/target`` (file names: content hash
    prefixed by the seed name); return the directory."""
    directory = out / target
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in TARGETS[target]().items():
        digest = hashlib.sha1(data).hexdigest()[:12]
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
        (directory / f"seed-{safe}-{digest}").write_bytes(data)
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"any of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--out", type=Path, default=CORPUS_DIR)
    args = parser.parse_args()
    for target in args.targets:
        if target not in TARGETS:
            parser.error(f"unknown target {target!r}")
    for target in args.targets or list(TARGETS):
        directory = write(target, args.out)
        count = sum(1 for _ in directory.iterdir())
        size = sum(p.stat().st_size for p in directory.iterdir())
        print(f"{directory}: {count} files, {size} bytes")


if __name__ == "__main__":
    main()
