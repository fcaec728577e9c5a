"""Unit tests for the sans-I/O WebSocket core, run on both twins.

Every test that touches a core takes the ``core`` fixture (``compiled`` and
``pure``). Client frames are built by hand here, not with ``encode_frame``,
so parser tests do not depend on the encoder and can be malformed at will.
"""

from __future__ import annotations

import itertools
import struct
from types import ModuleType

import pytest

from wsnest.core._common import (
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    FAIL,
    OP_BINARY,
    OP_BINARY_DEFLATED,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OP_TEXT_DEFLATED,
    R_BAD_UTF8,
    R_CLOSE_1_BYTE,
    R_CLOSE_CODE,
    R_CLOSE_REASON,
    R_CONT_UNEXPECTED,
    R_CTL_FRAGMENTED,
    R_CTL_TOO_LONG,
    R_DATA_UNEXPECTED,
    R_LENGTH_MSB,
    R_NON_MINIMAL,
    R_OPCODE,
    R_RSV,
    R_TOO_BIG,
    R_UNMASKED,
    accept_key,
    close_payload,
    frame_header,
    parse_close_payload,
)

MASK = bytes.fromhex("37fa213d")

# -- hand-made client frames ---------------------------------------------------


def xor(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """Bytewise reference for masking (RFC 6455 section 5.3)."""
    return bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))


def header(
    opcode: int, length: int, *, fin: bool = True, rsv: int = 0, masked: bool = True, form: str = "min"
) -> bytes:
    """Frame header without the masking key.

    ``form`` picks the length encoding: ``"min"`` (minimal), ``"16"`` or
    ``"64"`` (forced, possibly non-minimal) or ``"raw64"`` (``length`` written
    as is into a 64-bit field, even with its top bit set).
    """
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    mbit = 0x80 if masked else 0
    if form == "min":
        form = "7" if length < 126 else "16" if length < 65536 else "64"
    if form == "7":
        return bytes((b0, mbit | length))
    if form == "16":
        return struct.pack("!BBH", b0, mbit | 126, length)
    return struct.pack("!BBQ", b0, mbit | 127, length)


def frame(
    opcode: int,
    payload: bytes | str = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = MASK,
    form: str = "min",
) -> bytes:
    """A complete client frame; ``mask=None`` leaves it unmasked."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    head = header(opcode, len(payload), fin=fin, rsv=rsv, masked=mask is not None, form=form)
    if mask is None:
        return head + payload
    return head + mask + xor(payload, mask)


def text(payload: bytes | str, fin: bool = True) -> bytes:
    return frame(OP_TEXT, payload, fin=fin)


def cont(payload: bytes | str, fin: bool = True) -> bytes:
    return frame(OP_CONT, payload, fin=fin)


def close(code: int | None = None, reason: bytes | str = b"") -> bytes:
    if isinstance(reason, str):
        reason = reason.encode("utf-8")
    payload = b"" if code is None else struct.pack("!H", code) + reason
    return frame(OP_CLOSE, payload)


def fail(code: int, reason: str) -> tuple:
    return (FAIL, code, reason)


def proto(reason: str) -> tuple:
    return fail(CLOSE_PROTOCOL_ERROR, reason)


BAD_UTF8 = fail(CLOSE_INVALID_DATA, R_BAD_UTF8)
TOO_BIG = fail(CLOSE_TOO_BIG, R_TOO_BIG)


def shape(events: list[tuple]) -> list[tuple]:
    """Exact types of every event field (``b"x" == bytearray(b"x")`` is true)."""
    return [tuple(type(field) for field in event) for event in events]


def assert_events(actual: list[tuple], expected: list[tuple]) -> None:
    assert actual == expected
    assert shape(actual) == shape(expected)


def feed_all(core: ModuleType, chunks: list[bytes], **kwargs: object) -> list[tuple]:
    parser = core.FrameParser(**kwargs)
    events: list[tuple] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def bytewise(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


# -- RFC 6455 section 5 edge cases ---------------------------------------------

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


def _case(id: str, stream: bytes, expected: list[tuple], **kwargs: object):
    return pytest.param(stream, kwargs, expected, id=id)


def _dcase(id: str, stream: bytes, expected: list[tuple], **kwargs: object):
    return _case(f"deflate-{id}", stream, expected, deflate=True, **kwargs)


def ztext(payload: bytes | str, fin: bool = True) -> bytes:
    """The first frame of a compressed text message (RSV1). The core does not
    inflate, so any bytes do as its payload."""
    return frame(OP_TEXT, payload, fin=fin, rsv=4)


def zbinary(payload: bytes | str, fin: bool = True) -> bytes:
    return frame(OP_BINARY, payload, fin=fin, rsv=4)


# A parser with deflate=True (RFC 7692): RSV1 on the first frame of a data
# message marks it compressed; it comes out as raw bytes, never validated.
DEFLATE_CASES = [
    _dcase("text", ztext(b"\xf2H\xcd\xc9\xc9\x07\x00"), [(OP_TEXT_DEFLATED, b"\xf2H\xcd\xc9\xc9\x07\x00")]),
    _dcase("binary", zbinary(b"\x00\xff"), [(OP_BINARY_DEFLATED, b"\x00\xff")]),
    _dcase("text-empty", ztext(b""), [(OP_TEXT_DEFLATED, b"")]),
    _dcase("binary-empty", zbinary(b""), [(OP_BINARY_DEFLATED, b"")]),
    _dcase("text-not-utf8-not-checked", ztext(b"ab\xff\xed\xa0"), [(OP_TEXT_DEFLATED, b"ab\xff\xed\xa0")]),
    _dcase("text-raw", ztext(b"\xff"), [(OP_TEXT_DEFLATED, b"\xff")], decode_text=False),
    _dcase(
        "text-fragmented",
        ztext(b"\xf0\x9f", fin=False)
        + frame(OP_PING, b"p")
        + cont(b"\xff", fin=False)
        + cont(b"", fin=False)
        + cont(b"z"),
        [(OP_PING, b"p"), (OP_TEXT_DEFLATED, b"\xf0\x9f\xffz")],
    ),
    _dcase(
        "binary-fragmented",
        zbinary(b"ab", fin=False) + cont(b"cd"),
        [(OP_BINARY_DEFLATED, b"abcd")],
    ),
    _dcase("text-16bit", ztext(b"\xe2" * 600), [(OP_TEXT_DEFLATED, b"\xe2" * 600)]),
    _dcase("binary-64bit", zbinary(b"\x01" * 65536), [(OP_BINARY_DEFLATED, b"\x01" * 65536)]),
    _dcase(
        "text-64bit-unlimited", ztext(b"\xff" * 70000), [(OP_TEXT_DEFLATED, b"\xff" * 70000)], max_message_size=None
    ),
    # Uncompressed messages on a deflate parser: exactly as without deflate.
    _dcase("plain-text", text("héllo"), [(OP_TEXT, "héllo")]),
    _dcase("plain-text-bad-utf8", text(b"ab\xff"), [BAD_UTF8]),
    _dcase("plain-text-raw", text("é"), [(OP_TEXT, "é".encode())], decode_text=False),
    _dcase("plain-binary", frame(OP_BINARY, b"\x00"), [(OP_BINARY, b"\x00")]),
    _dcase(
        "mixed",
        ztext(b"\xff") + text("plain") + zbinary(b"z", fin=False) + cont(b"y") + frame(OP_BINARY, b"b") + ztext(b"t"),
        [
            (OP_TEXT_DEFLATED, b"\xff"),
            (OP_TEXT, "plain"),
            (OP_BINARY_DEFLATED, b"zy"),
            (OP_BINARY, b"b"),
            (OP_TEXT_DEFLATED, b"t"),
        ],
    ),
    # RSV1 anywhere but the first frame of a data message; RSV2, RSV3.
    _dcase("rsv1-on-continuation", ztext(b"a", fin=False) + frame(OP_CONT, b"b", rsv=4), [proto(R_RSV)]),
    _dcase("rsv1-on-continuation-of-plain", text("a", fin=False) + frame(OP_CONT, b"b", rsv=4), [proto(R_RSV)]),
    _dcase("rsv1-on-lone-continuation", frame(OP_CONT, b"b", rsv=4), [proto(R_RSV)]),
    *[
        _dcase(f"rsv1-on-{name}", frame(op, payload, rsv=4), [proto(R_RSV)])
        for name, op, payload in [("ping", OP_PING, b"p"), ("pong", OP_PONG, b""), ("close", OP_CLOSE, b"\x03\xe8")]
    ],
    _dcase("rsv1-on-ping-inside-compressed", ztext(b"a", fin=False) + frame(OP_PING, b"", rsv=4), [proto(R_RSV)]),
    _dcase("rsv1-on-unknown-opcode", frame(0x3, b"", rsv=4), [proto(R_RSV)]),
    *[_dcase(f"rsv-{rsv}", frame(OP_TEXT, "hi", rsv=rsv), [proto(R_RSV)]) for rsv in (1, 2, 3, 5, 6, 7)],
    _dcase("rsv2-on-binary", frame(OP_BINARY, b"x", rsv=2), [proto(R_RSV)]),
    _dcase(
        "compressed-inside-fragmented",
        frame(OP_BINARY, b"a", fin=False) + ztext(b"b"),
        [proto(R_DATA_UNEXPECTED)],
    ),
    _dcase("rsv1-unmasked", frame(OP_TEXT, b"x", rsv=4, mask=None), [proto(R_UNMASKED)]),
    # The size limit counts the compressed (wire) bytes, decided from the header.
    _dcase("limit-exact", zbinary(b"0123456789"), [(OP_BINARY_DEFLATED, b"0123456789")], max_message_size=10),
    _dcase("limit-over", ztext(b"0123456789A"), [TOO_BIG], max_message_size=10),
    _dcase("limit-over-header-only", header(OP_TEXT, 11, rsv=4)[:2], [TOO_BIG], max_message_size=10),
    _dcase(
        "limit-over-fragments-header-only",
        ztext(b"012345", fin=False) + header(OP_CONT, 5)[:2],
        [TOO_BIG],
        max_message_size=10,
    ),
    _dcase("limit-zero-empty-ok", zbinary(b""), [(OP_BINARY_DEFLATED, b"")], max_message_size=0),
    _dcase("length-2**40-header-only", header(OP_BINARY, 1 << 40, rsv=4), [TOO_BIG]),
    _dcase("incomplete", ztext(b"abc")[:-1], []),
]

EDGE_CASES = [
    # Framing.
    _case("unmasked", frame(OP_TEXT, "Hello", mask=None), [proto(R_UNMASKED)]),
    _case("unmasked-ping", frame(OP_PING, b"", mask=None), [proto(R_UNMASKED)]),
    *[_case(f"rsv{bit}", frame(OP_TEXT, "hi", rsv=1 << (3 - bit)), [proto(R_RSV)]) for bit in (1, 2, 3)],
    _case("rsv-all", frame(OP_BINARY, b"x", rsv=7), [proto(R_RSV)]),
    _case("rsv-on-continuation", text("a", fin=False) + frame(OP_CONT, "b", rsv=4), [proto(R_RSV)]),
    *[_case(f"opcode-{op:#x}", frame(op, b"x"), [proto(R_OPCODE)]) for op in UNKNOWN_OPCODES],
    _case("ping-125", frame(OP_PING, b"p" * 125), [(OP_PING, b"p" * 125)]),
    _case("ping-126", frame(OP_PING, b"p" * 126), [proto(R_CTL_TOO_LONG)]),
    _case("ping-126-header-only", header(OP_PING, 126), [proto(R_CTL_TOO_LONG)]),
    _case("pong-64bit-length", frame(OP_PONG, b"p" * 3, form="64"), [proto(R_CTL_TOO_LONG)]),
    _case("close-126", frame(OP_CLOSE, b"\x03\xe8" + b"r" * 124), [proto(R_CTL_TOO_LONG)]),
    _case("fragmented-ping", frame(OP_PING, b"a", fin=False), [proto(R_CTL_FRAGMENTED)]),
    _case("fragmented-pong", frame(OP_PONG, b"a", fin=False), [proto(R_CTL_FRAGMENTED)]),
    _case("fragmented-close", frame(OP_CLOSE, b"\x03\xe8", fin=False), [proto(R_CTL_FRAGMENTED)]),
    _case("continuation-first", cont("x"), [proto(R_CONT_UNEXPECTED)]),
    _case("continuation-after-message", text("a") + cont("b"), [(OP_TEXT, "a"), proto(R_CONT_UNEXPECTED)]),
    _case("text-inside-fragmented", text("a", fin=False) + text("b"), [proto(R_DATA_UNEXPECTED)]),
    _case(
        "binary-inside-fragmented",
        frame(OP_BINARY, b"a", fin=False) + frame(OP_BINARY, b"b"),
        [proto(R_DATA_UNEXPECTED)],
    ),
    _case(
        "controls-inside-fragmented",
        text("Hel", fin=False) + frame(OP_PING, b"p") + cont("l", fin=False) + frame(OP_PONG, b"q") + cont("lo"),
        [(OP_PING, b"p"), (OP_PONG, b"q"), (OP_TEXT, "Helllo")],
    ),
    _case(
        "close-inside-fragmented",
        frame(OP_BINARY, b"ab", fin=False) + close(1000, "bye") + cont(b"cd"),
        [(OP_CLOSE, 1000, "bye")],
    ),
    # Lengths.
    _case("16bit-minimal", frame(OP_BINARY, b"b" * 126), [(OP_BINARY, b"b" * 126)]),
    _case("16bit-non-minimal-125", frame(OP_BINARY, b"b" * 125, form="16"), [proto(R_NON_MINIMAL)]),
    _case("16bit-non-minimal-0", header(OP_BINARY, 0, form="16"), [proto(R_NON_MINIMAL)]),
    _case("64bit-minimal", frame(OP_BINARY, b"b" * 65536), [(OP_BINARY, b"b" * 65536)]),
    _case("64bit-non-minimal-65535", header(OP_BINARY, 65535, form="64"), [proto(R_NON_MINIMAL)]),
    _case("64bit-non-minimal-5", frame(OP_TEXT, "hello", form="64"), [proto(R_NON_MINIMAL)]),
    _case("64bit-top-bit", header(OP_BINARY, 1 << 63, form="raw64"), [proto(R_LENGTH_MSB)]),
    _case("64bit-all-ones", header(OP_BINARY, (1 << 64) - 1, form="raw64"), [proto(R_LENGTH_MSB)]),
    _case("64bit-top-bit-small", header(OP_BINARY, (1 << 63) | 5, form="raw64"), [proto(R_LENGTH_MSB)]),
    # Only the 10 header bytes: the size check needs neither the mask nor the payload.
    _case("length-2**40-header-only", header(OP_BINARY, 1 << 40), [TOO_BIG]),
    _case("length-2**40-unlimited", header(OP_BINARY, 1 << 40) + MASK + b"x", [], max_message_size=None),
    _case("default-limit-header-only", header(OP_TEXT, (1 << 20) + 1), [TOO_BIG]),
    # Message size limit.
    _case("limit-exact", text("0123456789"), [(OP_TEXT, "0123456789")], max_message_size=10),
    _case("limit-over", text("0123456789A"), [TOO_BIG], max_message_size=10),
    _case("limit-over-header-only", header(OP_BINARY, 11)[:2], [TOO_BIG], max_message_size=10),
    _case(
        "limit-exact-fragments",
        frame(OP_BINARY, b"012345", fin=False) + cont(b"6789"),
        [(OP_BINARY, b"0123456789")],
        max_message_size=10,
    ),
    _case(
        "limit-over-fragments-header-only",
        frame(OP_BINARY, b"012345", fin=False) + header(OP_CONT, 5)[:2],
        [TOO_BIG],
        max_message_size=10,
    ),
    _case(
        "limit-resets-per-message",
        text("01234567") + text("89abcdef"),
        [(OP_TEXT, "01234567"), (OP_TEXT, "89abcdef")],
        max_message_size=8,
    ),
    _case("limit-zero-empty-ok", text(""), [(OP_TEXT, "")], max_message_size=0),
    _case("limit-zero-one-byte", text("a"), [TOO_BIG], max_message_size=0),
    _case("limit-not-for-control", frame(OP_PING, b"ping"), [(OP_PING, b"ping")], max_message_size=0),
    _case("unlimited", frame(OP_BINARY, b"x" * 70000), [(OP_BINARY, b"x" * 70000)], max_message_size=None),
    # Close frames.
    _case("close-empty", close(), [(OP_CLOSE, CLOSE_NO_STATUS, "")]),
    _case("close-1-byte", frame(OP_CLOSE, b"\x03"), [proto(R_CLOSE_1_BYTE)]),
    *[_case(f"close-{code}", close(code), [(OP_CLOSE, code, "")]) for code in VALID_CLOSE_CODES],
    *[_case(f"close-bad-{code}", close(code), [proto(R_CLOSE_CODE)]) for code in INVALID_CLOSE_CODES],
    _case("close-reason", close(1000, "bye 😀"), [(OP_CLOSE, 1000, "bye 😀")]),
    _case("close-reason-123-bytes", close(4000, "r" * 123), [(OP_CLOSE, 4000, "r" * 123)]),
    _case("close-bad-reason", close(1000, b"bye\xff"), [fail(CLOSE_INVALID_DATA, R_CLOSE_REASON)]),
    _case("close-truncated-reason", close(1000, b"\xe2\x82"), [fail(CLOSE_INVALID_DATA, R_CLOSE_REASON)]),
    _case("close-bad-code-and-reason", close(1004, b"\xff"), [proto(R_CLOSE_CODE)]),
    _case("after-close-ignored", close(1001, "bye") + text("more") + b"\xff" * 10, [(OP_CLOSE, 1001, "bye")]),
    # UTF-8 in text messages.
    _case("text-bad-utf8", text(b"ab\xffcd"), [BAD_UTF8]),
    _case("text-bad-utf8-first-fragment-only", text(b"ab\xff", fin=False), [BAD_UTF8]),
    _case(
        "text-bad-utf8-before-control",
        text(b"\xc3\x28", fin=False) + frame(OP_PING, b"p") + cont(b"ok"),
        [BAD_UTF8],
    ),
    _case("text-split-sequence", text(b"\xe2", fin=False) + cont(b"\x82\xac"), [(OP_TEXT, "€")]),
    _case(
        "text-4-byte-split-thrice",
        text(b"a\xf0", fin=False) + cont(b"\x9f", fin=False) + frame(OP_PING, b"") + cont(b"\x98\x80z"),
        [(OP_PING, b""), (OP_TEXT, "a😀z")],
    ),
    _case("text-incomplete-at-end", text(b"a\xe2\x82"), [BAD_UTF8]),
    _case("text-incomplete-then-empty-final", text(b"a\xf0\x9f", fin=False) + cont(b""), [BAD_UTF8]),
    _case("text-incomplete-non-final-ok", text(b"a\xf0\x9f", fin=False), []),
    _case("text-surrogate-prefix-non-final", text(b"ok\xed\xa0", fin=False), [BAD_UTF8]),
    _case("text-e0-80-non-final", text(b"\xe0\x80", fin=False), [BAD_UTF8]),
    _case("text-f4-90-non-final", text(b"\xf4\x90", fin=False), [BAD_UTF8]),
    _case("text-surrogate-across-fragments", text(b"\xed", fin=False) + cont(b"\xa0\x80"), [BAD_UTF8]),
    *[_case(f"text-{name}", text(b"x" + seq + b"y"), [BAD_UTF8]) for name, seq in BAD_SEQUENCES.items()],
    *[_case(f"text-{name}-non-final", text(seq, fin=False), [BAD_UTF8]) for name, seq in BAD_SEQUENCES.items()],
    _case("text-bad-utf8-raw", text(b"\xff"), [BAD_UTF8], decode_text=False),
    # Valid content, empty and zero-length frames.
    _case("text-empty", text(""), [(OP_TEXT, "")]),
    _case("binary-empty", frame(OP_BINARY, b""), [(OP_BINARY, b"")]),
    _case("ping-empty", frame(OP_PING, b""), [(OP_PING, b"")]),
    _case("pong", frame(OP_PONG, b"\x00\xff"), [(OP_PONG, b"\x00\xff")]),
    _case("text-4-byte", text("😀𝄞\U0010ffff"), [(OP_TEXT, "😀𝄞\U0010ffff")]),
    _case("text-mixed-widths", text("aé€😀"), [(OP_TEXT, "aé€😀")]),
    _case("text-nul-and-noncharacter", text("\x00\ufffe\uffff"), [(OP_TEXT, "\x00\ufffe\uffff")]),
    _case(
        "zero-length-fragments",
        text("", fin=False) + cont("ab", fin=False) + cont("", fin=False) + cont("c"),
        [(OP_TEXT, "abc")],
    ),
    _case("zero-length-final-continuation", text("abc", fin=False) + cont(""), [(OP_TEXT, "abc")]),
    _case(
        "binary-zero-length-final-continuation",
        frame(OP_BINARY, b"\x00\x01", fin=False) + cont(b""),
        [(OP_BINARY, b"\x00\x01")],
    ),
    _case("text-raw", text("héllo 😀"), [(OP_TEXT, "héllo 😀".encode())], decode_text=False),
    _case(
        "text-raw-fragmented",
        text(b"\xe2", fin=False) + cont(b"\x82\xac"),
        [(OP_TEXT, b"\xe2\x82\xac")],
        decode_text=False,
    ),
    _case("text-raw-empty", text(""), [(OP_TEXT, b"")], decode_text=False),
    _case(
        "several-messages",
        text("one") + frame(OP_BINARY, b"two") + frame(OP_PING, b"3") + text("four"),
        [(OP_TEXT, "one"), (OP_BINARY, b"two"), (OP_PING, b"3"), (OP_TEXT, "four")],
    ),
    _case("incomplete-header", text("hello")[:5], []),
    _case("incomplete-payload", text("hello")[:-1], []),
    _case("zero-mask", frame(OP_BINARY, b"abc", mask=b"\x00" * 4), [(OP_BINARY, b"abc")]),
    # Check order: the first failing check wins.
    _case("order-rsv-before-opcode", frame(0x3, b"", rsv=4), [proto(R_RSV)]),
    _case("order-opcode-before-unmasked", frame(0xB, b"", mask=None), [proto(R_OPCODE)]),
    _case("order-fragmented-before-too-long", header(OP_PING, 200, fin=False), [proto(R_CTL_FRAGMENTED)]),
    _case("order-too-long-before-unmasked", header(OP_PING, 200, masked=False), [proto(R_CTL_TOO_LONG)]),
    _case("order-unmasked-before-continuation", frame(OP_CONT, b"", mask=None), [proto(R_UNMASKED)]),
    _case(
        "order-continuation-before-length",
        header(OP_CONT, 5, form="16"),
        [proto(R_CONT_UNEXPECTED)],
    ),
    _case("order-top-bit-before-limit", header(OP_BINARY, 1 << 63, form="raw64"), [proto(R_LENGTH_MSB)]),
    _case(
        "order-non-minimal-before-limit", header(OP_BINARY, 100, form="16"), [proto(R_NON_MINIMAL)], max_message_size=1
    ),
    *DEFLATE_CASES,
]


@pytest.mark.parametrize(("stream", "kwargs", "expected"), EDGE_CASES)
def test_rfc6455_edge_cases(core: ModuleType, stream: bytes, kwargs: dict, expected: list[tuple]) -> None:
    assert_events(feed_all(core, [stream], **kwargs), expected)


@pytest.mark.parametrize(("stream", "kwargs", "expected"), [c for c in EDGE_CASES if len(c.values[0]) < 300])
def test_rfc6455_edge_cases_bytewise(core: ModuleType, stream: bytes, kwargs: dict, expected: list[tuple]) -> None:
    assert_events(feed_all(core, bytewise(stream), **kwargs), expected)


def test_finished_after_close_and_failure(core: ModuleType) -> None:
    parser = core.FrameParser()
    assert not parser.finished
    assert parser.feed(close(1000)) == [(OP_CLOSE, 1000, "")]
    assert parser.finished
    assert parser.feed(text("ignored")) == []
    parser = core.FrameParser()
    assert parser.feed(frame(OP_TEXT, "x", mask=None)) == [proto(R_UNMASKED)]
    assert parser.finished
    assert parser.feed(text("ignored")) == []


# -- chunking --------------------------------------------------------------------

CHUNK_STREAMS = [
    pytest.param(
        text("hé", fin=False)
        + frame(OP_PING, b"p1")
        + cont("l😀", fin=False)
        + cont("")
        + frame(OP_BINARY, bytes(range(130)))
        + frame(OP_PONG, b"")
        + text("")
        + close(1000, "bye"),
        id="valid",
    ),
    pytest.param(text("ok") + text(b"\xf0\x9f", fin=False) + frame(OP_PING, b"x") + cont(b"\x41"), id="bad-utf8"),
    pytest.param(text("ok") + frame(OP_BINARY, b"ab", fin=False) + header(OP_CONT, 300) + b"junk", id="too-big"),
    pytest.param(frame(OP_PING, b"x") + header(OP_BINARY, 70, form="64") + MASK, id="non-minimal"),
]


@pytest.mark.parametrize("stream", CHUNK_STREAMS)
def test_chunking_gives_same_events(core: ModuleType, stream: bytes) -> None:
    kwargs = {"max_message_size": 200}
    whole = feed_all(core, [stream], **kwargs)
    assert whole  # every stream above produces something
    assert_events(feed_all(core, bytewise(stream), **kwargs), whole)
    for cut in range(len(stream) + 1):
        assert_events(feed_all(core, [stream[:cut], stream[cut:]], **kwargs), whole)


def test_chunking_valid_stream_events(core: ModuleType) -> None:
    events = feed_all(core, [CHUNK_STREAMS[0].values[0]])
    assert_events(
        events,
        [
            (OP_PING, b"p1"),
            (OP_TEXT, "hél😀"),
            (OP_BINARY, bytes(range(130))),
            (OP_PONG, b""),
            (OP_TEXT, ""),
            (OP_CLOSE, 1000, "bye"),
        ],
    )


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_feed_accepts_bytes_like(core: ModuleType, kind: type) -> None:
    stream = text("héllo") + frame(OP_BINARY, b"\x00\x01") + frame(OP_PING, b"x") + text("", fin=False)
    expected = feed_all(core, [stream])
    assert_events(feed_all(core, [kind(stream)]), expected)
    assert_events(feed_all(core, [kind(c) for c in bytewise(stream)]), expected)
    assert_events(expected, [(OP_TEXT, "héllo"), (OP_BINARY, b"\x00\x01"), (OP_PING, b"x")])


def test_feed_does_not_keep_reference_to_input(core: ModuleType) -> None:
    parser = core.FrameParser()
    buf = bytearray(text("abc", fin=False)[:-1])
    assert parser.feed(buf) == []
    buf[:] = b"\x00" * len(buf)  # the caller reuses its buffer
    assert_events(parser.feed(text("abc", fin=False)[-1:] + cont("d")), [(OP_TEXT, "abcd")])


# -- permessage-deflate framing (deflate=True) ------------------------------------

DEFLATE_CHUNK_STREAM = (
    ztext(b"\xf0\x9f", fin=False)
    + frame(OP_PING, b"p1")
    + cont(b"\xff" * 130, fin=False)
    + cont(b"")
    + zbinary(bytes(range(200)))
    + text("plain é")
    + ztext(b"\xed\xa0")
    + frame(OP_BINARY, b"b")
    + ztext(b"")
    + close(1000)
)


def test_deflate_chunking_gives_same_events(core: ModuleType) -> None:
    kwargs = {"max_message_size": 400, "deflate": True}
    expected = [
        (OP_PING, b"p1"),
        (OP_TEXT_DEFLATED, b"\xf0\x9f" + b"\xff" * 130),
        (OP_BINARY_DEFLATED, bytes(range(200))),
        (OP_TEXT, "plain é"),
        (OP_TEXT_DEFLATED, b"\xed\xa0"),
        (OP_BINARY, b"b"),
        (OP_TEXT_DEFLATED, b""),
        (OP_CLOSE, 1000, ""),
    ]
    stream = DEFLATE_CHUNK_STREAM
    assert_events(feed_all(core, [stream], **kwargs), expected)
    assert_events(feed_all(core, bytewise(stream), **kwargs), expected)
    for cut in range(len(stream) + 1):
        assert_events(feed_all(core, [stream[:cut], stream[cut:]], **kwargs), expected)
        assert_events(feed_all(core, [bytearray(stream[:cut]), bytearray(stream[cut:])], **kwargs), expected)


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("size", [0, 5, 600, 70000])
def test_deflate_payload_is_bytes(core: ModuleType, kind: type, size: int) -> None:
    # Whole single frames, first-and-final frames split after their header
    # (preallocated result) and fragments: always exactly bytes, never str.
    payload = bytes((i * 31 + 7) & 0xFF for i in range(size))  # not UTF-8
    half = size // 2
    stream = ztext(payload) + zbinary(payload) + ztext(payload[:half], fin=False) + cont(payload[half:])
    expected = [(OP_TEXT_DEFLATED, payload), (OP_BINARY_DEFLATED, payload), (OP_TEXT_DEFLATED, payload)]
    head = len(ztext(payload)) - size
    for cuts in ([], [2], [head], [head + half], [head, len(stream) - 3]):
        bounds = [0, *cuts, len(stream)]
        chunks = [kind(stream[a:b]) for a, b in itertools.pairwise(bounds)]
        for decode_text in (True, False):
            events = feed_all(core, chunks, max_message_size=None, decode_text=decode_text, deflate=True)
            assert_events(events, expected)


def test_deflate_is_keyword_only_and_off_by_default(core: ModuleType) -> None:
    with pytest.raises(TypeError):
        core.FrameParser(None, True, True)
    assert_events(core.FrameParser().feed(ztext(b"x")), [proto(R_RSV)])
    assert_events(core.FrameParser(deflate=False).feed(ztext(b"x")), [proto(R_RSV)])
    assert_events(core.FrameParser(deflate=1).feed(ztext(b"x")), [(OP_TEXT_DEFLATED, b"x")])


def test_frame_header_rsv1() -> None:
    for length in (0, 5, 125, 126, 65535, 65536):
        plain = frame_header(OP_TEXT, length)
        assert frame_header(OP_TEXT, length, rsv1=True) == bytes((plain[0] | 0x40,)) + plain[1:]
    assert frame_header(OP_BINARY, 3, rsv1=True) == b"\xc2\x03"
    assert frame_header(OP_TEXT, 3, fin=False, rsv1=True) == b"\x41\x03"


# -- encoder ---------------------------------------------------------------------

ROUND_TRIP_PAYLOADS = [
    pytest.param(OP_TEXT, "", id="text-empty"),
    pytest.param(OP_TEXT, "Hello, wörld 😀", id="text"),
    pytest.param(OP_TEXT, "€" * 42, id="text-126-bytes"),
    pytest.param(OP_BINARY, b"", id="binary-empty"),
    pytest.param(OP_BINARY, bytes(range(256)) * 3, id="binary-768"),
    pytest.param(OP_BINARY, b"\xaa" * 125, id="binary-125"),
    pytest.param(OP_BINARY, b"\xaa" * 126, id="binary-126"),
    pytest.param(OP_BINARY, b"\x55" * 65535, id="binary-65535"),
    pytest.param(OP_BINARY, b"\x55" * 65536, id="binary-65536"),
    pytest.param(OP_PING, b"ping", id="ping"),
    pytest.param(OP_PONG, b"p" * 125, id="pong-125"),
]


@pytest.mark.parametrize(("opcode", "payload"), ROUND_TRIP_PAYLOADS)
@pytest.mark.parametrize("mask", [MASK, b"\x00\x00\x00\x00", b"\xff\x00\xff\x01"], ids=["mask", "zero", "ff"])
def test_encode_frame_round_trip(core: ModuleType, opcode: int, payload: bytes | str, mask: bytes) -> None:
    data = core.encode_frame(opcode, payload, mask=mask)
    assert type(data) is bytes
    events = core.FrameParser(max_message_size=None).feed(data)
    assert_events(events, [(opcode, payload)])


def test_encode_frame_round_trip_fragments(core: ModuleType) -> None:
    raw = "fragmented 😀 message".encode()
    stream = (
        core.encode_frame(OP_TEXT, raw[:12], fin=False, mask=MASK)
        + core.encode_frame(OP_PING, b"", mask=b"abcd")
        + core.encode_frame(OP_CONT, raw[12:14], fin=False, mask=b"wxyz")
        + core.encode_frame(OP_CONT, raw[14:], mask=MASK)
        + core.encode_frame(OP_CLOSE, close_payload(1000, "done"), mask=MASK)
    )
    assert_events(
        core.FrameParser().feed(stream),
        [(OP_PING, b""), (OP_TEXT, raw.decode()), (OP_CLOSE, 1000, "done")],
    )


@pytest.mark.parametrize(
    ("length", "unmasked_head"),
    [
        (0, "8200"),
        (125, "827d"),
        (126, "827e007e"),
        (65535, "827effff"),
        (65536, "827f0000000000010000"),
    ],
)
def test_encode_frame_minimal_length(core: ModuleType, length: int, unmasked_head: str) -> None:
    payload = b"\xab" * length
    head = bytes.fromhex(unmasked_head)
    assert core.encode_frame(OP_BINARY, payload) == head + payload
    masked = core.encode_frame(OP_BINARY, payload, mask=MASK)
    masked_head = bytes((head[0], head[1] | 0x80)) + head[2:]
    assert masked[: len(head)] == masked_head
    assert masked[len(head) : len(head) + 4] == MASK
    assert masked[len(head) + 4 :] == xor(payload, MASK)
    assert len(masked) == len(head) + 4 + length


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        pytest.param((OP_TEXT, "Hello"), {}, "810548656c6c6f", id="text-unmasked"),
        pytest.param((OP_TEXT, "Hello"), {"mask": MASK}, "818537fa213d7f9f4d5158", id="text-masked"),
        pytest.param((OP_TEXT, b"Hel"), {"fin": False}, "010348656c", id="first-fragment"),
        pytest.param((OP_CONT, b"lo"), {}, "80026c6f", id="last-fragment"),
        pytest.param((OP_PING, b"Hello"), {}, "890548656c6c6f", id="ping-unmasked"),
        pytest.param((OP_PONG, b"Hello"), {"mask": MASK}, "8a8537fa213d7f9f4d5158", id="pong-masked"),
        pytest.param((OP_CLOSE, b"\x03\xe8"), {}, "880203e8", id="close"),
        pytest.param((OP_CLOSE,), {}, "8800", id="close-empty-default-payload"),
    ],
)
def test_encode_frame_rfc_vectors(core: ModuleType, args: tuple, kwargs: dict, expected: str) -> None:
    assert core.encode_frame(*args, **kwargs) == bytes.fromhex(expected)


def test_rfc_masked_vector_parses(core: ModuleType) -> None:
    assert_events(core.FrameParser().feed(bytes.fromhex("818537fa213d7f9f4d5158")), [(OP_TEXT, "Hello")])


def test_encode_frame_big_vectors(core: ModuleType) -> None:
    # RFC 6455 section 5.7: 256 bytes and 64 KiB in a single unmasked binary frame.
    assert core.encode_frame(OP_BINARY, b"\x00" * 256)[:4] == bytes.fromhex("827e0100")
    assert core.encode_frame(OP_BINARY, b"\x00" * 65536)[:10] == bytes.fromhex("827f0000000000010000")


@pytest.mark.parametrize(
    ("opcode", "payload", "fin"),
    [
        (OP_TEXT, "", True),
        (OP_TEXT, "héllo 😀", True),
        (OP_BINARY, b"\x00" * 125, False),
        (OP_BINARY, bytearray(b"\x01" * 126), True),
        (OP_BINARY, memoryview(b"\x02" * 65536), True),
        (OP_CONT, b"tail", True),
        (OP_PING, b"", True),
        (OP_CLOSE, b"\x03\xe8bye", True),
    ],
)
def test_append_frame(core: ModuleType, opcode: int, payload: bytes | str, fin: bool) -> None:
    out = bytearray(b"prefix")
    added = core.append_frame(out, opcode, payload, fin)
    expected = core.encode_frame(opcode, payload, fin=fin)
    assert out == b"prefix" + expected
    assert added == len(expected)
    added = core.append_frame(out, opcode, payload, fin=fin)
    assert out == b"prefix" + expected * 2
    assert added == len(expected)


def test_append_frame_default_fin(core: ModuleType) -> None:
    out = bytearray()
    assert core.append_frame(out, OP_TEXT, "Hello") == 7
    assert out == bytes.fromhex("810548656c6c6f")


def test_str_payloads_are_utf8(core: ModuleType) -> None:
    s = "aé€😀"
    assert core.encode_frame(OP_TEXT, s) == core.encode_frame(OP_TEXT, s.encode("utf-8"))
    assert core.encode_frame(OP_TEXT, s, mask=MASK) == core.encode_frame(OP_TEXT, s.encode("utf-8"), mask=MASK)
    assert core.encode_frame(OP_TEXT, s)[1] == len(s.encode("utf-8"))
    out = bytearray()
    core.append_frame(out, OP_TEXT, s)
    assert out == core.encode_frame(OP_TEXT, s.encode("utf-8"))


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_bytes_like_payloads(core: ModuleType, kind: type) -> None:
    payload = bytes(range(200))
    assert core.encode_frame(OP_BINARY, kind(payload)) == core.encode_frame(OP_BINARY, payload)
    assert core.encode_frame(OP_BINARY, kind(payload), mask=MASK) == core.encode_frame(OP_BINARY, payload, mask=MASK)


@pytest.mark.parametrize("payload", [123, None, 1.5, ["a"], object()], ids=["int", "None", "float", "list", "object"])
def test_wrong_payload_type(core: ModuleType, payload: object) -> None:
    with pytest.raises(TypeError):
        core.encode_frame(OP_BINARY, payload)
    with pytest.raises(TypeError):
        core.encode_frame(OP_BINARY, payload, mask=MASK)
    with pytest.raises(TypeError):
        core.append_frame(bytearray(), OP_BINARY, payload)


@pytest.mark.parametrize("mask", [b"", b"abc", b"abcde", b"\x00" * 8], ids=["0", "3", "5", "8"])
def test_bad_mask_length(core: ModuleType, mask: bytes) -> None:
    with pytest.raises(ValueError):
        core.encode_frame(OP_BINARY, b"data", mask=mask)
    with pytest.raises(ValueError):
        core.apply_mask(b"data", mask)
    with pytest.raises(ValueError):
        core.apply_mask(b"", mask)
    with pytest.raises(ValueError):
        core.mask_inplace(bytearray(b"data"), mask)


def test_opcode_out_of_range(core: ModuleType) -> None:
    with pytest.raises(ValueError):
        core.encode_frame(16, b"x")
    with pytest.raises(ValueError):
        core.encode_frame(16, b"x", mask=MASK)
    with pytest.raises(ValueError):
        core.append_frame(bytearray(), 16, b"x")


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
@pytest.mark.parametrize("length", [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099])
def test_apply_mask_reference(core: ModuleType, offset: int, length: int) -> None:
    data = bytes((i * 7 + 3) & 0xFF for i in range(length))
    mask = b"\x01\x80\xfe\x5a"
    expected = xor(data, mask, offset)
    for kind in (bytes, bytearray, memoryview):
        result = core.apply_mask(kind(data), mask, offset)
        assert type(result) is bytes
        assert result == expected
    assert core.apply_mask(expected, mask, offset) == data


def test_apply_mask_default_offset(core: ModuleType) -> None:
    assert core.apply_mask(b"Hello", MASK) == bytes.fromhex("7f9f4d5158")


@pytest.mark.parametrize("offset", [0, 1, 2, 3])
@pytest.mark.parametrize("length", [0, 1, 5, 64, 67])
def test_mask_inplace(core: ModuleType, offset: int, length: int) -> None:
    data = bytes((i * 13 + 1) & 0xFF for i in range(length))
    buf = bytearray(data)
    assert core.mask_inplace(buf, MASK, offset) is None
    assert buf == xor(data, MASK, offset)
    core.mask_inplace(buf, MASK, offset)
    assert buf == data


def test_mask_inplace_default_offset(core: ModuleType) -> None:
    buf = bytearray(b"Hello")
    core.mask_inplace(buf, MASK)
    assert buf == bytes.fromhex("7f9f4d5158")


GOOD_UTF8 = [b"", b"ascii", "é€😀".encode(), b"\x00", "\U0010ffff".encode(), b"\xed\x9f\xbf", b"\xee\x80\x80"]
BAD_UTF8_INPUTS = [
    *BAD_SEQUENCES.values(),
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xc2",
    b"a\xc3\x28",
    b"\xed\xa0",
    b"\xed\xbf\xbf",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
]


@pytest.mark.parametrize("data", GOOD_UTF8)
def test_validate_utf8_good(core: ModuleType, data: bytes) -> None:
    for kind in (bytes, bytearray, memoryview):
        assert core.validate_utf8(kind(data)) is True


@pytest.mark.parametrize("data", BAD_UTF8_INPUTS)
def test_validate_utf8_bad(core: ModuleType, data: bytes) -> None:
    for kind in (bytes, bytearray, memoryview):
        assert core.validate_utf8(kind(data)) is False
    assert core.validate_utf8(b"valid prefix " + data) is False


# -- argument checks -------------------------------------------------------------


@pytest.mark.parametrize("size", [-1, -(1 << 40)])
def test_negative_max_message_size(core: ModuleType, size: int) -> None:
    with pytest.raises(ValueError):
        core.FrameParser(max_message_size=size)


def test_parser_defaults(core: ModuleType) -> None:
    parser = core.FrameParser()
    assert_events(parser.feed(text("é")), [(OP_TEXT, "é")])
    assert_events(core.FrameParser().feed(header(OP_BINARY, 1 << 20) + MASK), [])
    assert_events(core.FrameParser().feed(header(OP_BINARY, (1 << 20) + 1)), [TOO_BIG])


# -- shared helpers (wsnest.core._common, tested once) -------------------------


def test_accept_key() -> None:
    # RFC 6455 section 1.3 (note "zzh", confirmed by wsproto and websockets).
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
@pytest.mark.parametrize("reason", ["", "bye", "é😀"])
def test_close_payload_round_trip(code: int, reason: str) -> None:
    payload = close_payload(code, reason)
    assert payload == struct.pack("!H", code) + reason.encode("utf-8")
    assert parse_close_payload(payload) == (OP_CLOSE, code, reason)


def test_close_payload_defaults_and_empty() -> None:
    assert close_payload() == b"\x03\xe8"
    assert parse_close_payload(close_payload()) == (OP_CLOSE, CLOSE_NORMAL, "")
    assert close_payload(None) == b""
    assert parse_close_payload(b"") == (OP_CLOSE, CLOSE_NO_STATUS, "")


def test_close_payload_truncates_long_reason() -> None:
    payload = close_payload(1000, "😀" * 40)  # 160 bytes of reason
    assert len(payload) <= 125
    event = parse_close_payload(payload)
    assert event[:2] == (OP_CLOSE, 1000)
    assert event[2] == "😀" * 30  # cut at a character boundary: 120 bytes


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 5000])
def test_close_payload_rejects_bad_codes(code: int) -> None:
    with pytest.raises(ValueError):
        close_payload(code)


def test_close_payload_no_code_with_reason() -> None:
    with pytest.raises(ValueError):
        close_payload(None, "why")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x03", proto(R_CLOSE_1_BYTE)),
        (b"\x03\xec", proto(R_CLOSE_CODE)),
        (b"\x03\xe8\xff", fail(CLOSE_INVALID_DATA, R_CLOSE_REASON)),
        (b"\x0f\x9f", (OP_CLOSE, 3999, "")),
    ],
)
def test_parse_close_payload_errors(payload: bytes, expected: tuple) -> None:
    assert parse_close_payload(payload) == expected
