"""Large text messages: both cores against Python's own UTF-8 codec.

The compiled core builds a large text message's ``str`` its own way (an
all-ASCII message is unmasked straight into its ``str``; other text is
assembled in a spare buffer kept between messages and decoded by a kernel
of its own), above sizes that the property tests of
``test_core_differential.py`` never reach. These cases cross those sizes
(4 KiB for the decoder, 256 KiB for the spare buffer and the in-place
``str``) with every kind of ``str`` (ASCII, Latin-1, 2 and 4 bytes per
character), where the first non-ASCII byte falls, invalid UTF-8 in the
middle and at the very end, fragmented messages, both roles and both
``decode_text`` settings. ``utf8_payload`` (a ``str``'s UTF-8 for sending,
without a copy in the compiled core) is checked here too.
"""

from __future__ import annotations

import gc
import struct
from types import ModuleType

import pytest

from wsnest.core import _frames_py
from wsnest.core._common import CLOSE_INVALID_DATA, FAIL, OP_CONT, OP_PING, OP_TEXT, R_BAD_UTF8

MASK = b"\x37\xfa\x21\x3d"
BAD = (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8)


def frame(opcode: int, payload: bytes, fin: bool = True, masked: bool = True) -> bytes:
    n = len(payload)
    head = bytes(((0x80 if fin else 0) | opcode,))
    mbit = 0x80 if masked else 0
    if n < 126:
        head += bytes((mbit | n,))
    elif n < 65536:
        head += bytes((mbit | 126,)) + struct.pack("!H", n)
    else:
        head += bytes((mbit | 127,)) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    body = bytes(b ^ MASK[i & 3] for i, b in enumerate(payload)) if n < 4096 else _xor(payload)
    return head + MASK + body


def _xor(payload: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((MASK * (n // 4 + 1))[:n], "little")
    return (int.from_bytes(payload, "little") ^ key).to_bytes(n, "little")


def pieces(stream: bytes, size: int) -> list[bytes]:
    return [stream[i : i + size] for i in range(0, len(stream), size)]


def feed_all(core: ModuleType, chunks: list[bytes], decode_text: bool, masked: bool) -> list[tuple]:
    parser = core.FrameParser(None, decode_text, masked=masked)
    events: list[tuple] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def expected_events(messages: list[bytes], decode_text: bool) -> list[tuple]:
    out: list[tuple] = []
    for raw in messages:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append(BAD)
            break
        out.append((OP_TEXT, text if decode_text else raw))
    return out


def check(core: ModuleType, messages: list[bytes], stream: bytes, decode_text: bool, masked: bool) -> None:
    expected = expected_events(messages, decode_text)
    for size in (len(stream), 65536, 4093):
        for twin in (core, _frames_py):
            events = feed_all(twin, pieces(stream, size), decode_text, masked)
            assert events == expected
            # Same kinds of str (== compares them, but say it plainly).
            assert [type(e[-1]) for e in events] == [type(e[-1]) for e in expected]


# One sample character of each width of str, and where the first wide one sits.
WIDE = {"latin1": "\xe9", "ucs2": "\u20ac", "ucs2-lead-c4": "\u0100", "ucs4": "\U0001f600"}
SIZES = [5000, 300_000]


def text_of(size: int, wide: str | None, where: str) -> bytes:
    """About ``size`` bytes of UTF-8: ASCII with ``wide`` at ``where``."""
    if wide is None:
        return (b"abcdefghij" * (size // 10 + 1))[:size]
    w = wide.encode("utf-8")
    body = b"x" * (size - len(w))
    if where == "start":
        return w + body
    if where == "middle":
        return body[: size // 2] + w + body[size // 2 :]
    if where == "end":
        return body + w
    return (b"ab" + w) * (size // (2 + len(w)))  # "dense"


@pytest.mark.parametrize("masked", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("decode_text", [True, False], ids=["str", "bytes"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    ("wide", "where"), [(None, "all")] + [(w, where) for w in WIDE for where in ("start", "middle", "end", "dense")]
)
def test_large_text_single_frame(
    core: ModuleType, masked: bool, decode_text: bool, size: int, wide: str | None, where: str
) -> None:
    raw = text_of(size, WIDE[wide] if wide else None, where)
    check(core, [raw], frame(OP_TEXT, raw, masked=masked), decode_text, masked)


@pytest.mark.parametrize("masked", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("decode_text", [True, False], ids=["str", "bytes"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    "bad",
    ["end-truncated", "end-stray", "middle-stray", "middle-surrogate", "start-overlong", "after-wide"],
)
def test_large_text_invalid(core: ModuleType, masked: bool, decode_text: bool, size: int, bad: str) -> None:
    body = b"y" * size
    raw = {
        "end-truncated": body + b"\xe2\x82",  # a character cut short by the end of the message
        "end-stray": body + b"\x80",
        "middle-stray": body[: size // 2] + b"\xbf" + body[size // 2 :],
        "middle-surrogate": body[: size // 2] + b"\xed\xa0\x80" + body[size // 2 :],
        "start-overlong": b"\xc0\xaf" + body,
        "after-wide": "\u20ac".encode() + body + b"\xff",
    }[bad]
    # A valid message after the bad one must never be delivered.
    stream = frame(OP_TEXT, raw, masked=masked) + frame(OP_TEXT, b"after", masked=masked)
    check(core, [raw, b"after"], stream, decode_text, masked)


@pytest.mark.parametrize("masked", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("decode_text", [True, False], ids=["str", "bytes"])
@pytest.mark.parametrize("wide", [None, "ucs2", "ucs4"])
@pytest.mark.parametrize("fail", [None, "middle", "end"])
def test_large_text_fragmented(
    core: ModuleType, masked: bool, decode_text: bool, wide: str | None, fail: str | None
) -> None:
    # A message in three fragments with a ping between (the assembly buffer
    # grows, then becomes the spare), then a large message that reuses the
    # spare, then small and empty messages.
    w = WIDE[wide].encode() if wide else b"z"
    parts = [b"a" * 200_000, w * 50_000, b"c" * 120_000]
    if fail == "middle":
        parts[1] = parts[1][:1000] + b"\xf5" + parts[1][1000:]
    elif fail == "end":
        parts[2] += b"\xf0\x9f\x98"
    stream = b"".join(
        frame(OP_CONT if i else OP_TEXT, p, fin=i == 2, masked=masked) + frame(OP_PING, b"p", masked=masked)
        for i, p in enumerate(parts)
    )
    second = b"b" * 400_000 + w
    stream += frame(OP_TEXT, second, masked=masked) + frame(OP_TEXT, b"", masked=masked)
    stream += frame(OP_TEXT, w, masked=masked)
    whole = b"".join(parts)
    expected: list[tuple] = [(OP_PING, b"p")]
    if fail == "middle":
        expected.append(BAD)  # at its first bad byte: before the second ping
    else:
        expected.append((OP_PING, b"p"))
        expected += expected_events([whole], decode_text)
        if fail is None:
            expected.append((OP_PING, b"p"))
            expected += expected_events([second, b"", w], decode_text)
    for size in (len(stream), 65536, 7):
        if size == 7 and fail is not None:
            continue  # slow in the pure core, and nothing more to learn
        for twin in (core, _frames_py):
            assert feed_all(twin, pieces(stream, size), decode_text, masked) == expected


def test_empty_and_tiny_text(core: ModuleType) -> None:
    for raw in (b"", b"a", "\xe9".encode(), "\U0001f600".encode()):
        check(core, [raw], frame(OP_TEXT, raw), True, True)


@pytest.mark.parametrize("text", ["", "ascii only", "caf\xe9", "\u20ac" * 5000, "\U0001f600x" * 70_000])
def test_utf8_payload(core: ModuleType, text: str) -> None:
    payload = core.utf8_payload(text)
    view = memoryview(payload)
    assert view.readonly
    assert view.nbytes == len(text.encode("utf-8"))
    assert bytes(view) == text.encode("utf-8")
    assert bytes(_frames_py.utf8_payload(text)) == text.encode("utf-8")
    del text
    gc.collect()
    assert view.tobytes() == bytes(payload)  # the view keeps its str alive


def test_utf8_payload_other_types(core: ModuleType) -> None:
    class Sub(str):
        pass

    assert bytes(core.utf8_payload(Sub("\xe9t\xe9"))) == "\xe9t\xe9".encode()
    for bad in (b"bytes", 1, None):
        with pytest.raises(TypeError):
            core.utf8_payload(bad)


def test_trim_spare(core: ModuleType) -> None:
    # The compiled core keeps the buffer of a large non-ASCII message as a
    # spare; trim_spare frees it once a whole period went by without use.
    raw = "\u20ac".encode() * 100_000
    events = feed_all(core, pieces(frame(OP_TEXT, raw), 65536), True, True)
    assert events == [(OP_TEXT, raw.decode())]
    core.trim_spare()  # the period in which it was used
    assert core.trim_spare() is (core is not _frames_py)  # freed by the compiled core
    assert core.trim_spare() is False  # nothing left


def test_utf8_payload_of_received_text(core: ModuleType) -> None:
    # The compiled core keeps the UTF-8 a large text message came from, for
    # sending that str on without encoding it: whatever happens in between
    # (another large message reusing the buffer, the view released or kept,
    # the same str sent twice), every payload is the str's UTF-8.
    first = "\u20ac\U0001f600" * 50_000 + "end1"
    second = "\xe9" * 300_000 + "end2"

    def receive(text: str) -> str:
        events = feed_all(core, pieces(frame(OP_TEXT, text.encode()), 65536), True, True)
        assert events == [(OP_TEXT, text)]
        received: str = events[0][1]
        return received

    got1 = receive(first)
    view1 = memoryview(core.utf8_payload(got1))
    got2 = receive(second)  # while view1 holds the first one's bytes
    again1 = core.utf8_payload(got1)  # a second send of the same str
    view2 = memoryview(core.utf8_payload(got2))
    got3 = receive(first)  # reuses a buffer given back, or a fresh one
    assert bytes(view1) == bytes(again1) == first.encode()
    assert bytes(view2) == second.encode()
    view1.release()
    view2.release()
    got4 = receive(second)
    assert bytes(core.utf8_payload(got3)) == first.encode()
    assert bytes(core.utf8_payload(got4)) == second.encode()
    core.trim_spare()
    core.trim_spare()
