"""The client role of the WebSocket core: ``FrameParser(masked=False)``.

A client reads server frames, which are never masked (RFC 6455 section
5.1): the header has no masking key, the payload is taken as it is, and a
masked frame fails the connection with 1002. Everything else is the server
role's behaviour, which ``tests/test_core.py`` covers in depth; here each
feature is checked once in the client role, on both twins (the ``core``
fixture). Server frames are built by hand, so the tests do not depend on the
encoder and can be malformed at will.
"""

from __future__ import annotations

import itertools
import struct
from types import ModuleType

import pytest

from wsnest.core._common import (
    CLOSE_INVALID_DATA,
    CLOSE_NO_STATUS,
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
    R_MASKED,
    R_NON_MINIMAL,
    R_OPCODE,
    R_RSV,
    R_TOO_BIG,
    R_UNMASKED,
)

KEY = bytes.fromhex("37fa213d")


def head(opcode: int, length: int, *, fin: bool = True, rsv: int = 0, mbit: bool = False, form: str = "min") -> bytes:
    """A frame header up to its length (no masking key). ``form``: "min",
    or "16"/"64" for a forced (maybe non-minimal) extended length."""
    b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
    m = 0x80 if mbit else 0
    if form == "min":
        form = "7" if length < 126 else "16" if length < 65536 else "64"
    if form == "7":
        return bytes((b0, m | length))
    if form == "16":
        return struct.pack("!BBH", b0, m | 126, length)
    return struct.pack("!BBQ", b0, m | 127, length)


def sframe(opcode: int, payload: bytes | str = b"", *, fin: bool = True, rsv: int = 0, form: str = "min") -> bytes:
    """A server frame: unmasked, the payload as it is."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    return head(opcode, len(payload), fin=fin, rsv=rsv, form=form) + payload


def cframe(opcode: int, payload: bytes | str = b"", *, fin: bool = True, key: bytes = KEY) -> bytes:
    """A client frame: masked with ``key`` (what a client must never receive)."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head(opcode, len(payload), fin=fin, mbit=True) + key + masked


def proto(reason: str) -> tuple:
    return (FAIL, CLOSE_PROTOCOL_ERROR, reason)


MASKED = proto(R_MASKED)
BAD_UTF8 = (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8)
TOO_BIG = (FAIL, CLOSE_TOO_BIG, R_TOO_BIG)


def shape(events: list[tuple]) -> list[tuple]:
    return [tuple(type(field) for field in event) for event in events]


def assert_events(actual: list[tuple], expected: list[tuple]) -> None:
    assert actual == expected
    assert shape(actual) == shape(expected)  # exact types: str vs bytes, int vs bool


def client(core: ModuleType, chunks: list[bytes], **kwargs: object) -> list[tuple]:
    """Feed ``chunks`` to a new client-role parser; return all its events."""
    parser = core.FrameParser(masked=False, **kwargs)
    events: list[tuple] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def every_split(core: ModuleType, stream: bytes, expected: list[tuple], **kwargs: object) -> None:
    """``stream`` gives ``expected`` whole, byte by byte and cut anywhere in two."""
    assert_events(client(core, [stream], **kwargs), expected)
    assert_events(client(core, [stream[i : i + 1] for i in range(len(stream))], **kwargs), expected)
    for cut in range(len(stream) + 1):
        assert_events(client(core, [stream[:cut], stream[cut:]], **kwargs), expected)


# -- the role itself ---------------------------------------------------------------


def test_r_masked_text() -> None:
    assert R_MASKED == "masked frame from server"
    assert R_MASKED != R_UNMASKED


def test_role_property_and_default(core: ModuleType) -> None:
    assert core.FrameParser().masked is True
    assert core.FrameParser(masked=True).masked is True
    assert core.FrameParser(masked=False).masked is False
    assert core.FrameParser(None, False, deflate=True, masked=0).masked is False
    with pytest.raises(AttributeError):
        core.FrameParser().masked = False  # type: ignore[misc]


def test_role_is_keyword_only(core: ModuleType) -> None:
    with pytest.raises(TypeError):
        core.FrameParser(None, True, False, False)


def test_server_role_unchanged(core: ModuleType) -> None:
    # The default role still refuses unmasked frames and unmasks masked ones.
    for parser in (core.FrameParser(), core.FrameParser(masked=True)):
        assert_events(parser.feed(sframe(OP_TEXT, "hi")), [proto(R_UNMASKED)])
        assert parser.finished
    assert_events(core.FrameParser().feed(cframe(OP_TEXT, "hé")), [(OP_TEXT, "hé")])


# -- data messages -----------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
def test_text_and_binary(core: ModuleType, kind: type) -> None:
    stream = sframe(OP_TEXT, "héllo 😀") + sframe(OP_BINARY, b"\x00\xff\x80") + sframe(OP_TEXT) + sframe(OP_BINARY)
    expected = [(OP_TEXT, "héllo 😀"), (OP_BINARY, b"\x00\xff\x80"), (OP_TEXT, ""), (OP_BINARY, b"")]
    assert_events(client(core, [kind(stream)]), expected)
    assert_events(client(core, [kind(stream[i : i + 1]) for i in range(len(stream))]), expected)


def test_text_undecoded(core: ModuleType) -> None:
    stream = sframe(OP_TEXT, "é") + sframe(OP_TEXT, "a", fin=False) + sframe(OP_CONT, "€")
    every_split(core, stream, [(OP_TEXT, "é".encode()), (OP_TEXT, "a€".encode())], decode_text=False)


@pytest.mark.parametrize("size", [125, 126, 65535, 65536, 70001])
@pytest.mark.parametrize("opcode", [OP_TEXT, OP_BINARY])
def test_extended_lengths(core: ModuleType, size: int, opcode: int) -> None:
    if opcode == OP_TEXT:
        payload = ("é" * (size // 2)).encode("utf-8") + b"a" * (size % 2)
    else:
        payload = bytes(i & 0xFF for i in range(size))
    message: str | bytes = payload.decode("utf-8") if opcode == OP_TEXT else payload
    stream = sframe(opcode, payload)
    assert len(stream) == size + (2 if size < 126 else 4 if size < 65536 else 10)
    for cuts in ([], [1], [2], [3], [9], [len(stream) // 2], [5, len(stream) - 1]):
        chunks = [stream[a:b] for a, b in itertools.pairwise([0, *cuts, len(stream)])]
        assert_events(client(core, chunks, max_message_size=None), [(opcode, message)])
        assert_events(client(core, [bytearray(c) for c in chunks], max_message_size=None), [(opcode, message)])


def test_fragmented_with_control_frames(core: ModuleType) -> None:
    stream = (
        sframe(OP_TEXT, "h", fin=False)
        + sframe(OP_PING, b"p1")
        + sframe(OP_CONT, b"\xc3", fin=False)  # a character cut across fragments
        + sframe(OP_PONG, b"")
        + sframe(OP_CONT, b"\xa9", fin=False)
        + sframe(OP_CONT, b"")
        + sframe(OP_BINARY, b"ab", fin=False)
        + sframe(OP_CONT, bytes(range(200)))
        + sframe(OP_CLOSE, struct.pack("!H", 1000) + b"bye")
    )
    expected = [
        (OP_PING, b"p1"),
        (OP_PONG, b""),
        (OP_TEXT, "hé"),
        (OP_BINARY, b"ab" + bytes(range(200))),
        (OP_CLOSE, 1000, "bye"),
    ]
    every_split(core, stream, expected)


def test_fragmentation_rules(core: ModuleType) -> None:
    assert_events(client(core, [sframe(OP_CONT, "x")]), [proto(R_CONT_UNEXPECTED)])
    assert_events(client(core, [sframe(OP_TEXT, "a", fin=False) + sframe(OP_BINARY, "b")]), [proto(R_DATA_UNEXPECTED)])


# -- control frames ----------------------------------------------------------------


def test_ping_pong(core: ModuleType) -> None:
    every_split(
        core,
        sframe(OP_PING) + sframe(OP_PING, b"x" * 125) + sframe(OP_PONG, b"\x00\xff"),
        [(OP_PING, b""), (OP_PING, b"x" * 125), (OP_PONG, b"\x00\xff")],
    )


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", (OP_CLOSE, CLOSE_NO_STATUS, "")),
        (struct.pack("!H", 1000), (OP_CLOSE, 1000, "")),
        (struct.pack("!H", 4000) + "é".encode(), (OP_CLOSE, 4000, "é")),
        (b"\x03", proto(R_CLOSE_1_BYTE)),
        (struct.pack("!H", 1005), proto(R_CLOSE_CODE)),
        (struct.pack("!H", 1000) + b"\xff", (FAIL, CLOSE_INVALID_DATA, R_CLOSE_REASON)),
    ],
    ids=["empty", "1000", "reason", "one-byte", "bad-code", "bad-reason"],
)
def test_close(core: ModuleType, payload: bytes, expected: tuple) -> None:
    parser = core.FrameParser(masked=False)
    assert_events(parser.feed(sframe(OP_CLOSE, payload)), [expected])
    assert parser.finished
    assert parser.feed(sframe(OP_TEXT, "after")) == []


def test_control_frame_rules(core: ModuleType) -> None:
    assert_events(client(core, [sframe(OP_PING, b"x" * 126)]), [proto(R_CTL_TOO_LONG)])
    assert_events(client(core, [sframe(OP_PING, b"x", fin=False)]), [proto(R_CTL_FRAGMENTED)])
    assert_events(client(core, [sframe(0x3, b"x")]), [proto(R_OPCODE)])
    assert_events(client(core, [sframe(OP_TEXT, b"x", rsv=2)]), [proto(R_RSV)])


# -- limits and validation ---------------------------------------------------------


def test_too_big(core: ModuleType) -> None:
    assert_events(client(core, [sframe(OP_BINARY, b"0123456789")], max_message_size=10), [(OP_BINARY, b"0123456789")])
    # Decided from the header alone, before any payload.
    assert_events(client(core, [head(OP_BINARY, 11)], max_message_size=10), [TOO_BIG])
    assert_events(client(core, [head(OP_TEXT, 1 << 40)]), [TOO_BIG])
    # Across fragments; control frames do not count.
    stream = sframe(OP_TEXT, "012345", fin=False) + sframe(OP_PING, b"p" * 20) + head(OP_CONT, 5)
    assert_events(client(core, [stream], max_message_size=10), [(OP_PING, b"p" * 20), TOO_BIG])
    assert_events(client(core, [head(OP_BINARY, 70, form="64")]), [proto(R_NON_MINIMAL)])


def test_bad_utf8(core: ModuleType) -> None:
    every_split(core, sframe(OP_TEXT, b"ab\xff"), [BAD_UTF8])
    # A prefix that can never be completed fails at once, before the ping.
    every_split(core, sframe(OP_TEXT, b"a\xed\xa0", fin=False) + sframe(OP_PING, b"p"), [BAD_UTF8])
    # A sequence cut short fails at the end of the message only.
    every_split(
        core,
        sframe(OP_TEXT, b"a\xf0\x9f", fin=False) + sframe(OP_PING, b"p") + sframe(OP_CONT, b"\x98"),
        [(OP_PING, b"p"), BAD_UTF8],
    )
    every_split(core, sframe(OP_TEXT, b"\xf0\x9f\x98", fin=False) + sframe(OP_CONT, b"\x80"), [(OP_TEXT, "😀")])
    # Validated even when delivered as bytes.
    assert_events(client(core, [sframe(OP_TEXT, b"\xc0\x80")], decode_text=False), [BAD_UTF8])


# -- permessage-deflate (RSV1) ------------------------------------------------------


def test_deflate_rsv1(core: ModuleType) -> None:
    hello = bytes.fromhex("f248cdc9c90700")  # RFC 7692 section 7.2.3.1, "Hello" compressed
    stream = (
        sframe(OP_TEXT, hello, rsv=4)
        + sframe(OP_BINARY, b"\xff", rsv=4, fin=False)
        + sframe(OP_PING, b"p")
        + sframe(OP_CONT, b"\xed\xa0")
        + sframe(OP_TEXT, "plain")
    )
    expected = [
        (OP_TEXT_DEFLATED, hello),
        (OP_PING, b"p"),
        (OP_BINARY_DEFLATED, b"\xff\xed\xa0"),
        (OP_TEXT, "plain"),
    ]
    every_split(core, stream, expected, deflate=True)
    assert_events(client(core, [sframe(OP_TEXT, hello, rsv=4)]), [proto(R_RSV)])  # not negotiated
    rsv1_on_cont = sframe(OP_TEXT, b"a", rsv=4, fin=False) + sframe(OP_CONT, b"b", rsv=4)
    assert_events(client(core, [rsv1_on_cont], deflate=True), [proto(R_RSV)])
    assert_events(client(core, [sframe(OP_PING, b"", rsv=4)], deflate=True), [proto(R_RSV)])
    # The compressed (wire) size is bounded.
    assert_events(client(core, [head(OP_TEXT, 11, rsv=4)], deflate=True, max_message_size=10), [TOO_BIG])


# -- masked frames ------------------------------------------------------------------


@pytest.mark.parametrize(
    "stream",
    [
        cframe(OP_TEXT, "Hello"),
        cframe(OP_BINARY, b"\x00", key=b"\x00\x00\x00\x00"),  # a zero key is still a mask
        cframe(OP_PING, b""),
        cframe(OP_CLOSE, struct.pack("!H", 1000)),
        sframe(OP_TEXT, "a", fin=False) + cframe(OP_CONT, "b"),
        sframe(OP_TEXT, "a", fin=False) + cframe(OP_PING, "p"),
        head(OP_BINARY, 1 << 20, mbit=True),  # the header alone
        head(OP_TEXT, 0, mbit=True),
    ],
    ids=["text", "zero-key", "ping", "close", "continuation", "ping-inside", "header-only", "empty"],
)
def test_masked_frame_fails(core: ModuleType, stream: bytes) -> None:
    every_split(core, stream, [MASKED])
    parser = core.FrameParser(masked=False)
    assert_events(parser.feed(stream), [MASKED])
    assert parser.finished
    assert parser.feed(sframe(OP_TEXT, "after")) == []


def test_masked_frame_after_messages(core: ModuleType) -> None:
    stream = sframe(OP_TEXT, "one") + sframe(OP_PING, b"p") + cframe(OP_TEXT, "two") + sframe(OP_TEXT, "three")
    every_split(core, stream, [(OP_TEXT, "one"), (OP_PING, b"p"), MASKED])


def test_masked_check_order(core: ModuleType) -> None:
    # The first two bytes are checked in the server role's order: RSV,
    # opcode, control FIN and length, then the mask bit, then continuation
    # rules; the extended length is checked after the mask bit.
    assert_events(client(core, [head(OP_TEXT, 1, rsv=2, mbit=True)]), [proto(R_RSV)])
    assert_events(client(core, [head(0xB, 1, mbit=True)]), [proto(R_OPCODE)])
    assert_events(client(core, [head(OP_PING, 1, fin=False, mbit=True)]), [proto(R_CTL_FRAGMENTED)])
    assert_events(client(core, [head(OP_PING, 126, mbit=True)[:2]]), [proto(R_CTL_TOO_LONG)])
    assert_events(client(core, [head(OP_CONT, 1, mbit=True)]), [MASKED])
    assert_events(client(core, [head(OP_BINARY, 5, form="16", mbit=True)[:2]]), [MASKED])
    assert_events(client(core, [head(OP_BINARY, 11, mbit=True)], max_message_size=10), [MASKED])


# -- input buffers and the encoder ----------------------------------------------------


def test_writable_input_left_alone(core: ModuleType) -> None:
    # Nothing to unmask: the compiled twin must not write to the caller's buffer.
    stream = sframe(OP_TEXT, "héllo") + sframe(OP_BINARY, b"\x01" * 300) + sframe(OP_TEXT, "x" * 600)
    buf = bytearray(stream)
    assert_events(client(core, [buf]), [(OP_TEXT, "héllo"), (OP_BINARY, b"\x01" * 300), (OP_TEXT, "x" * 600)])
    assert buf == stream
    view = memoryview(bytearray(stream))
    client(core, [view[:7], view[7:400], view[400:]])
    assert view.tobytes() == stream


def test_encoder_output_round_trips(core: ModuleType) -> None:
    # What a server sends (encode_frame without a mask, append_frame) is
    # what a client parser reads.
    out = bytearray()
    core.append_frame(out, OP_TEXT, "fragment ", False)
    core.append_frame(out, OP_CONT, "é")
    stream = core.encode_frame(OP_BINARY, b"\x00" * 300) + bytes(out) + core.encode_frame(OP_PONG, b"!")
    every_split(core, stream, [(OP_BINARY, b"\x00" * 300), (OP_TEXT, "fragment é"), (OP_PONG, b"!")])
    big = core.encode_frame(OP_BINARY, b"\x07" * 70000)
    for chunks in ([big], [big[:5], big[5:12], big[12:]], [big[:10], big[10:]]):
        assert_events(client(core, chunks, max_message_size=None), [(OP_BINARY, b"\x07" * 70000)])
    # And what a client sends is refused: only a server reads masked frames.
    assert_events(client(core, [core.encode_frame(OP_TEXT, "hi", mask=KEY)]), [MASKED])
    assert_events(core.FrameParser().feed(core.encode_frame(OP_TEXT, "hi", mask=KEY)), [(OP_TEXT, "hi")])


def test_reinit_switches_role(core: ModuleType) -> None:
    # __init__ again on a used parser: no masking key of the old role is left
    # behind to garble the new role's payloads.
    parser = core.FrameParser()
    assert_events(parser.feed(cframe(OP_TEXT, "héllo", key=b"\xaa\x55\xff\x01")), [(OP_TEXT, "héllo")])
    parser.__init__(masked=False)  # type: ignore[misc]
    assert parser.masked is False
    stream = sframe(OP_TEXT, "a", fin=False) + sframe(OP_CONT, "é" * 40) + sframe(OP_BINARY, b"\x00" * 9)
    assert_events(parser.feed(stream), [(OP_TEXT, "a" + "é" * 40), (OP_BINARY, b"\x00" * 9)])


def test_masking_keys_come_from_a_bulk_pool_that_a_fork_does_not_share() -> None:
    """Keys are drawn from os.urandom in bulk: 4 bytes each, no two of the
    next thousands alike in a row, and a forked child draws fresh bytes
    instead of repeating its parent's next keys."""
    import os

    from wsnest.core._session import new_mask

    keys = [new_mask() for _ in range(3000)]
    assert all(type(k) is bytes and len(k) == 4 for k in keys)
    assert len(set(keys)) > 2990  # 3,000 random 32-bit keys: collisions are rare
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next key, then out without running anything else
        os.write(write, new_mask())
        os._exit(0)
    os.close(write)
    child_key = os.read(read, 4)
    os.close(read)
    os.waitpid(pid, 0)
    assert child_key != new_mask()
