"""Stream mode of the frame parser (``FrameParser(stream=True)``), on both twins.

In stream mode a text or binary message is never reassembled: each time
``feed`` has taken payload bytes of a data frame, it returns one
``(FRAGMENT, kind, piece, final)`` event for them. The concrete cases below
pin the pieces down exactly; the properties hold the two twins together
(identical events for any stream and any split) and hold stream mode to the
default mode: its pieces, joined per message (text decoded), give after
every feed exactly the events the default mode gives, failures included.
The fuzz harness (``fuzz/fuzz_core.py``, ``STREAM`` bit) checks the same;
the last tests here make sure its check can fail.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import wsnest.core
from conftest import load_core
from test_core_differential import (
    SETTINGS,
    Frame,
    for_role,
    max_sizes_for,
    shape,
    split,
    streams,
    texts,
    utf8_ish,
    utf8_scan,
    valid_messages,
)
from wsnest.core._common import (
    CLOSE_INVALID_DATA,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    CLOSE_TOO_BIG,
    FAIL,
    FRAGMENT,
    OP_BINARY,
    OP_BINARY_DEFLATED,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OP_TEXT_DEFLATED,
    R_BAD_UTF8,
    R_MASKED,
    R_RSV,
    R_TOO_BIG,
)

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import fuzz_core  # noqa: E402

MASK = b"\x37\xfa\x21\x3d"
BAD_UTF8 = (FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8)
TOO_BIG = (FAIL, CLOSE_TOO_BIG, R_TOO_BIG)
DATA_KINDS = (OP_TEXT, OP_BINARY, OP_TEXT_DEFLATED, OP_BINARY_DEFLATED)


def frame(opcode: int, payload: bytes | str = b"", *, fin: bool = True, rsv: int = 0, masked: bool = True) -> bytes:
    """A frame as the peer of a server (``masked``) or of a client sends it."""
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    return Frame(opcode, raw, fin=fin, rsv=rsv, masked=masked, mask=MASK).encode()


def piece(kind: int, data: bytes, final: bool) -> tuple[int, int, bytes, bool]:
    return (FRAGMENT, kind, data, final)


def feed_chunks(core: ModuleType, chunks: list[bytes], **kwargs: Any) -> list[list[tuple]]:
    """The events of each feed, in a new parser made with ``kwargs``."""
    parser = core.FrameParser(**kwargs)
    return [parser.feed(chunk) for chunk in chunks]


def feed_all(core: ModuleType, chunks: list[bytes], **kwargs: Any) -> list[tuple]:
    return [event for events in feed_chunks(core, chunks, **kwargs) for event in events]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def assert_events(actual: list[tuple], expected: list[tuple]) -> None:
    assert actual == expected
    assert shape(actual) == shape(expected)  # bytes, not bytearray; bool, not int


class Folder:
    """Joins the pieces of stream-mode events per message, checking each
    piece, into the events of the default mode (``decode_text`` as given)."""

    def __init__(self, decode_text: bool = True) -> None:
        self.decode_text = decode_text
        self.kind: int | None = None
        self.parts: list[bytes] = []

    def add(self, events: list[tuple]) -> list[tuple]:
        out: list[tuple] = []
        for event in events:
            if event[0] != FRAGMENT:
                assert event[0] not in DATA_KINDS, f"a whole message in stream mode: {event!r}"
                out.append(event)
                continue
            _tag, kind, data, final = event
            assert len(event) == 4 and kind in DATA_KINDS
            assert type(data) is bytes and type(final) is bool
            assert data or final, "empty non-final piece"
            assert self.kind in (None, kind), "the kind changed inside a message"
            self.kind = kind
            self.parts.append(data)
            if final:
                message = b"".join(self.parts)
                out.append((kind, message.decode("utf-8") if kind == OP_TEXT and self.decode_text else message))
                self.kind, self.parts = None, []
        return out


# -- the option ------------------------------------------------------------------


def test_stream_option_and_property(core: ModuleType) -> None:
    assert core.FrameParser().stream is False
    assert core.FrameParser(stream=True).stream is True
    assert core.FrameParser(stream=1).stream is True
    with pytest.raises(TypeError):
        core.FrameParser(None, True, False, True, True)  # keyword-only
    with pytest.raises(AttributeError):
        core.FrameParser().stream = True  # type: ignore[misc]


def test_fragment_is_exported_and_distinct() -> None:
    assert wsnest.core.FRAGMENT is FRAGMENT and "FRAGMENT" in wsnest.core.__all__
    others = {wsnest.core.FAIL, OP_TEXT_DEFLATED, OP_BINARY_DEFLATED, *range(16)}
    assert FRAGMENT not in others


def test_default_mode_unchanged(core: ModuleType) -> None:
    stream = frame(OP_TEXT, "hé", fin=False) + frame(OP_CONT, "llo") + frame(OP_BINARY, b"\x00")
    assert_events(feed_all(core, [stream]), [(OP_TEXT, "héllo"), (OP_BINARY, b"\x00")])
    assert_events(feed_all(core, [stream], stream=False), [(OP_TEXT, "héllo"), (OP_BINARY, b"\x00")])


# -- concrete cases, both roles ----------------------------------------------------

roles = pytest.mark.parametrize("masked", [True, False], ids=["server", "client"])


@roles
def test_single_frame(core: ModuleType, masked: bool) -> None:
    f = frame(OP_BINARY, b"hello", masked=masked)
    assert_events(feed_all(core, [f], stream=True, masked=masked), [piece(OP_BINARY, b"hello", True)])
    # Text stays bytes (decode_text has no say), and is still validated.
    t = frame(OP_TEXT, "héllo €", masked=masked)
    for decode_text in (True, False):
        events = feed_all(core, [t], stream=True, masked=masked, decode_text=decode_text)
        assert_events(events, [piece(OP_TEXT, "héllo €".encode(), True)])


@roles
def test_empty_messages_end_with_an_empty_final_piece(core: ModuleType, masked: bool) -> None:
    stream = frame(OP_TEXT, b"", masked=masked) + frame(OP_BINARY, b"", masked=masked)
    expected = [piece(OP_TEXT, b"", True), piece(OP_BINARY, b"", True)]
    assert_events(feed_all(core, [stream], stream=True, masked=masked), expected)
    assert_events(feed_all(core, bytewise(stream), stream=True, masked=masked), expected)


@roles
def test_fragmented_message(core: ModuleType, masked: bool) -> None:
    stream = (
        frame(OP_BINARY, b"ab", fin=False, masked=masked)
        + frame(OP_CONT, b"", fin=False, masked=masked)  # no piece: empty and not final
        + frame(OP_CONT, b"cde", fin=False, masked=masked)
        + frame(OP_CONT, b"f", masked=masked)
    )
    expected = [piece(OP_BINARY, b"ab", False), piece(OP_BINARY, b"cde", False), piece(OP_BINARY, b"f", True)]
    assert_events(feed_all(core, [stream], stream=True, masked=masked), expected)
    # A final frame with no payload: the last piece is empty.
    stream = frame(OP_TEXT, "ab", fin=False, masked=masked) + frame(OP_CONT, b"", masked=masked)
    expected = [piece(OP_TEXT, b"ab", False), piece(OP_TEXT, b"", True)]
    assert_events(feed_all(core, [stream], stream=True, masked=masked), expected)


@roles
def test_split_at_every_position(core: ModuleType, masked: bool) -> None:
    # One piece per frame per feed: a frame cut in two gives two pieces (the
    # first not final), unless one side holds none of its payload.
    payload = bytes(range(200))  # a 16-bit length: header of 4 (+4) bytes
    f = frame(OP_BINARY, payload, masked=masked)
    head = len(f) - len(payload)
    for cut in range(len(f) + 1):
        per_feed = feed_chunks(core, [f[:cut], f[cut:]], stream=True, masked=masked)
        at = max(cut - head, 0)
        if 0 < at < len(payload):
            expected = [[piece(OP_BINARY, payload[:at], False)], [piece(OP_BINARY, payload[at:], True)]]
        elif at == 0:
            expected = [[], [piece(OP_BINARY, payload, True)]]
        else:
            expected = [[piece(OP_BINARY, payload, True)], []]
        assert per_feed == expected, cut
    # Byte by byte: one piece per payload byte.
    events = feed_all(core, bytewise(f), stream=True, masked=masked)
    assert_events(events, [piece(OP_BINARY, payload[i : i + 1], i == len(payload) - 1) for i in range(len(payload))])


@roles
def test_split_at_every_pair_of_positions(core: ModuleType, masked: bool) -> None:
    # A fragmented text with a ping inside and a close: any three feeds give
    # the same messages as the default mode, each piece well formed.
    stream = (
        frame(OP_TEXT, "a€", fin=False, masked=masked)
        + frame(OP_PING, b"p", masked=masked)
        + frame(OP_CONT, "😀b", masked=masked)
        + frame(OP_BINARY, b"xyz", masked=masked)
        + frame(OP_CLOSE, b"\x03\xe8", masked=masked)
    )
    expected = [(OP_PING, b"p"), (OP_TEXT, "a€😀b"), (OP_BINARY, b"xyz"), (OP_CLOSE, CLOSE_NORMAL, "")]
    for i in range(len(stream) + 1):
        for j in range(i, len(stream) + 1):
            chunks = [stream[:i], stream[i:j], stream[j:]]
            assert Folder().add(feed_all(core, chunks, stream=True, masked=masked)) == expected, (i, j)


@roles
def test_multibyte_characters_split_across_frames(core: ModuleType, masked: bool) -> None:
    # Pieces are raw bytes: a character may straddle pieces and frames.
    raw = "€😀".encode()  # e2 82 ac | f0 9f 98 80
    stream = (
        frame(OP_TEXT, raw[:1], fin=False, masked=masked)
        + frame(OP_PING, b"!", masked=masked)
        + frame(OP_CONT, raw[1:4], fin=False, masked=masked)
        + frame(OP_CONT, raw[4:6], fin=False, masked=masked)
        + frame(OP_CONT, raw[6:], masked=masked)
    )
    expected = [
        piece(OP_TEXT, raw[:1], False),
        (OP_PING, b"!"),
        piece(OP_TEXT, raw[1:4], False),
        piece(OP_TEXT, raw[4:6], False),
        piece(OP_TEXT, raw[6:], True),
    ]
    assert_events(feed_all(core, [stream], stream=True, masked=masked), expected)
    assert Folder().add(feed_all(core, bytewise(stream), stream=True, masked=masked)) == [
        (OP_PING, b"!"),
        (OP_TEXT, "€😀"),
    ]


@roles
def test_invalid_utf8_early(core: ModuleType, masked: bool) -> None:
    # The first piece already holds the bad byte: nothing of it comes out.
    stream = frame(OP_TEXT, b"ab\xffcd", fin=False, masked=masked) + frame(OP_PING, b"never", masked=masked)
    assert_events(feed_all(core, [stream], stream=True, masked=masked), [BAD_UTF8])
    # A prefix that can never be completed (a surrogate) fails at once,
    # before the ping that follows, not at the end of the message.
    first = frame(OP_TEXT, b"ok\xed\xa0", fin=False, masked=masked)
    stream = first + frame(OP_PING, b"never", masked=masked)
    assert_events(feed_all(core, [stream], stream=True, masked=masked), [BAD_UTF8])
    assert core.FrameParser(stream=True, masked=masked).feed(first) == [BAD_UTF8]


@roles
def test_invalid_utf8_late(core: ModuleType, masked: bool) -> None:
    # Pieces before the bad one are out already; the one holding it is not.
    stream = (
        frame(OP_TEXT, "héllo", fin=False, masked=masked)
        + frame(OP_PING, b"p", masked=masked)
        + frame(OP_CONT, b"ok\xc0\x80", masked=masked)
    )
    expected = [piece(OP_TEXT, "héllo".encode(), False), (OP_PING, b"p"), BAD_UTF8]
    assert_events(feed_all(core, [stream], stream=True, masked=masked), expected)
    # Inside one frame split over feeds: "abc" goes out, "d\xff" does not.
    f = frame(OP_TEXT, b"abcd\xffe", masked=masked)
    head = len(f) - 6
    per_feed = feed_chunks(core, [f[: head + 3], f[head + 3 :]], stream=True, masked=masked)
    assert per_feed == [[piece(OP_TEXT, b"abc", False)], [BAD_UTF8]]
    # Nothing is delivered after a failure.
    parser = core.FrameParser(stream=True, masked=masked)
    assert parser.feed(f) == [BAD_UTF8] and parser.finished
    assert parser.feed(frame(OP_BINARY, b"x", masked=masked)) == []


@roles
def test_message_ending_inside_a_sequence(core: ModuleType, masked: bool) -> None:
    # Truncated at the end of the message: 1007 there, in place of the
    # final piece (which holds the cut sequence).
    stream = frame(OP_TEXT, b"a\xe2\x82", masked=masked)
    assert_events(feed_all(core, [stream], stream=True, masked=masked), [BAD_UTF8])
    per_feed = feed_chunks(core, [stream[:-2], stream[-2:]], stream=True, masked=masked)
    assert per_feed == [[piece(OP_TEXT, b"a", False)], [BAD_UTF8]]
    # Cut at the end of a non-final frame is fine; the empty final frame fails.
    stream = frame(OP_TEXT, b"a\xe2", fin=False, masked=masked) + frame(OP_CONT, b"", masked=masked)
    assert_events(feed_all(core, [stream], stream=True, masked=masked), [piece(OP_TEXT, b"a\xe2", False), BAD_UTF8])
    # Completed in the last frame: fine.
    stream = frame(OP_TEXT, b"a\xe2", fin=False, masked=masked) + frame(OP_CONT, b"\x82\xac", masked=masked)
    assert Folder().add(feed_all(core, [stream], stream=True, masked=masked)) == [(OP_TEXT, "a€")]


@roles
def test_deflate_kinds(core: ModuleType, masked: bool) -> None:
    # RSV1 on the first frame: the compressed kinds, bytes never validated.
    stream = (
        frame(OP_TEXT, b"\xff\xed\xa0", fin=False, rsv=4, masked=masked)
        + frame(OP_CONT, b"\xc0", masked=masked)
        + frame(OP_BINARY, b"\x00\x01", rsv=4, masked=masked)
        + frame(OP_TEXT, "plain", masked=masked)
        + frame(OP_TEXT, b"\xff", masked=masked)  # not compressed: still validated
    )
    expected = [
        piece(OP_TEXT_DEFLATED, b"\xff\xed\xa0", False),
        piece(OP_TEXT_DEFLATED, b"\xc0", True),
        piece(OP_BINARY_DEFLATED, b"\x00\x01", True),
        piece(OP_TEXT, b"plain", True),
        BAD_UTF8,
    ]
    assert_events(feed_all(core, [stream], stream=True, deflate=True, masked=masked), expected)
    # Without deflate, or on a continuation, RSV1 is refused as always.
    assert feed_all(core, [frame(OP_BINARY, b"x", rsv=4, masked=masked)], stream=True, masked=masked) == [
        (FAIL, CLOSE_PROTOCOL_ERROR, R_RSV)
    ]
    stream = frame(OP_BINARY, b"x", fin=False, rsv=4, masked=masked) + frame(OP_CONT, b"y", rsv=4, masked=masked)
    assert feed_all(core, [stream], stream=True, deflate=True, masked=masked) == [
        piece(OP_BINARY_DEFLATED, b"x", False),
        (FAIL, CLOSE_PROTOCOL_ERROR, R_RSV),
    ]


@roles
def test_control_frames_interleaved(core: ModuleType, masked: bool) -> None:
    stream = (
        frame(OP_BINARY, b"ab", fin=False, masked=masked)
        + frame(OP_PING, b"1", masked=masked)
        + frame(OP_CONT, b"cd", fin=False, masked=masked)
        + frame(OP_PONG, b"p" * 125, masked=masked)
        + frame(OP_CONT, b"ef", fin=False, masked=masked)
        + frame(OP_CLOSE, b"\x03\xe8bye", masked=masked)
        + frame(OP_CONT, b"never", masked=masked)
    )
    expected = [
        piece(OP_BINARY, b"ab", False),
        (OP_PING, b"1"),
        piece(OP_BINARY, b"cd", False),
        (OP_PONG, b"p" * 125),
        piece(OP_BINARY, b"ef", False),
        (OP_CLOSE, CLOSE_NORMAL, "bye"),
    ]
    assert_events(feed_all(core, [stream], stream=True, masked=masked), expected)
    for chunks in (bytewise(stream), [stream[:20], stream[20:150], stream[150:]]):
        parser = core.FrameParser(stream=True, masked=masked)
        events = [e for c in chunks for e in parser.feed(c)]
        assert [e for e in events if e[0] != FRAGMENT] == [e for e in expected if e[0] != FRAGMENT]
        assert b"".join(e[2] for e in events if e[0] == FRAGMENT) == b"abcdef"
        assert parser.finished


@roles
def test_max_message_size(core: ModuleType, masked: bool) -> None:
    # The bound is on the whole message, checked at each frame's header,
    # before any of its payload is taken.
    stream = frame(OP_BINARY, b"x" * 6, fin=False, masked=masked) + frame(OP_CONT, b"y" * 5, masked=masked)
    for chunks in ([stream], bytewise(stream)):
        events = feed_all(core, chunks, stream=True, max_message_size=10, masked=masked)
        assert Folder().add(events) == [TOO_BIG]
        assert b"".join(e[2] for e in events if e[0] == FRAGMENT) == b"x" * 6
    header_only = stream[: len(stream) - 5]  # the second header, none of its payload
    events = feed_all(core, [header_only], stream=True, max_message_size=10, masked=masked)
    assert events == [piece(OP_BINARY, b"x" * 6, False), TOO_BIG]
    # Exactly at the bound: fine; each message on its own.
    events = feed_all(core, [stream + stream], stream=True, max_message_size=11, masked=masked)
    assert Folder().add(events) == [(OP_BINARY, b"x" * 6 + b"y" * 5)] * 2
    # A single frame declaring too much fails on its header alone.
    big = Frame(OP_TEXT, b"abc", length=(1 << 20) + 1, masked=masked, mask=MASK).encode()
    assert feed_all(core, [big], stream=True, masked=masked) == [TOO_BIG]
    # None lifts the bound: a frame of 2**40 bytes streams what arrives.
    huge = Frame(OP_BINARY, b"abcdef", length=1 << 40, masked=masked, mask=MASK).encode()
    events = feed_all(core, [huge[:-3], huge[-3:]], stream=True, max_message_size=None, masked=masked)
    assert events == [piece(OP_BINARY, b"abc", False), piece(OP_BINARY, b"def", False)]


def test_client_role_unmasked_frames(core: ModuleType) -> None:
    # A client reads unmasked server frames; a masked one fails with 1002.
    stream = frame(OP_TEXT, "hi", fin=False, masked=False) + frame(OP_CONT, "!", masked=False)
    assert_events(
        feed_all(core, [stream], stream=True, masked=False),
        [piece(OP_TEXT, b"hi", False), piece(OP_TEXT, b"!", True)],
    )
    stream = frame(OP_BINARY, b"ok", masked=False) + frame(OP_BINARY, b"masked", masked=True)
    assert_events(
        feed_all(core, [stream], stream=True, masked=False),
        [piece(OP_BINARY, b"ok", True), (FAIL, CLOSE_PROTOCOL_ERROR, R_MASKED)],
    )


@roles
def test_input_buffers(core: ModuleType, masked: bool) -> None:
    # Any bytes-like input; a writable one is left as it was (stream mode
    # copies each piece out, unmasking on the way).
    f = frame(OP_TEXT, "héllo wörld" * 10, masked=masked)
    expected = feed_all(core, [f], stream=True, masked=masked)
    for make in (bytearray, lambda b: memoryview(bytearray(b)), lambda b: memoryview(b)):
        buf = make(f)
        assert feed_all(core, [buf], stream=True, masked=masked) == expected
        assert bytes(buf) == f


def test_no_payload_is_buffered(core: ModuleType) -> None:
    # An 8 MiB message fed in 64 KiB pieces, each piece dropped once taken:
    # the parser holds next to nothing (the default mode holds the message;
    # measured too, so that this test can fail).
    size, step = 8 << 20, 64 << 10
    f = Frame(OP_BINARY, b"", length=size, mask=MASK).encode()
    body = bytes(step)

    def peak(**kwargs: Any) -> int:
        parser = core.FrameParser(max_message_size=None, **kwargs)
        parser.feed(f)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            for _ in range(size // step - 1):
                parser.feed(body)
            return tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    assert peak(stream=True) < 1 << 20
    assert peak(stream=False) > size // 2


# -- properties ------------------------------------------------------------------------


def chunkings(draw: st.DrawFn, stream: bytes) -> list[list[bytes]]:
    out = [[stream], draw(split(stream, max_parts=12), label="chunks")]
    if len(stream) <= 64:
        out.append(bytewise(stream))
    return out


def fold_check(core: ModuleType, chunks: list[bytes], decode_text: bool, **kwargs: Any) -> list[tuple]:
    """Feed ``chunks`` to a stream-mode and a default-mode parser of ``core``:
    after every feed the pieces so far, joined, equal the default events so
    far (so a failure comes at the same feed), and both are ``finished``
    alike. Returns the stream-mode events."""
    streaming = core.FrameParser(stream=True, decode_text=decode_text, **kwargs)
    plain = core.FrameParser(decode_text=decode_text, **kwargs)
    folder = Folder(decode_text)
    events: list[tuple] = []
    folded: list[tuple] = []
    expected: list[tuple] = []
    for chunk in chunks:
        got = streaming.feed(bytes(chunk))
        events += got
        folded += folder.add(got)
        expected += plain.feed(bytes(chunk))
        assert folded == expected
        assert shape(folded) == shape(expected)
        assert streaming.finished == plain.finished
    return events


@SETTINGS
@given(deflate=st.booleans(), decode_text=st.booleans(), masked=st.booleans(), data=st.data())
def test_twins_identical_in_stream_mode(deflate: bool, decode_text: bool, masked: bool, data: st.DataObject) -> None:
    compiled, pure = load_core("compiled"), load_core("pure")
    stream = data.draw(streams(deflate, masked), label="stream")
    max_message_size = data.draw(max_sizes_for(stream, deflate, masked), label="max_message_size")
    kwargs = {"max_message_size": max_message_size, "decode_text": decode_text, "deflate": deflate, "masked": masked}
    for chunks in chunkings(data.draw, stream):
        expected = feed_chunks(pure, chunks, stream=True, **kwargs)
        assert_events_per_feed(feed_chunks(compiled, chunks, stream=True, **kwargs), expected)
        writable = [bytearray(c) for c in chunks]
        assert_events_per_feed(feed_chunks(compiled, writable, stream=True, **kwargs), expected)  # type: ignore[arg-type]
        assert writable == chunks


def assert_events_per_feed(actual: list[list[tuple]], expected: list[list[tuple]]) -> None:
    assert actual == expected
    assert [shape(events) for events in actual] == [shape(events) for events in expected]


@SETTINGS
@given(deflate=st.booleans(), decode_text=st.booleans(), masked=st.booleans(), data=st.data())
def test_stream_reassembled_is_default_mode(
    core: ModuleType, deflate: bool, decode_text: bool, masked: bool, data: st.DataObject
) -> None:
    stream = data.draw(streams(deflate, masked), label="stream")
    max_message_size = data.draw(max_sizes_for(stream, deflate, masked), label="max_message_size")
    for chunks in chunkings(data.draw, stream):
        fold_check(core, chunks, decode_text, max_message_size=max_message_size, deflate=deflate, masked=masked)


@SETTINGS
@given(deflate=st.booleans(), masked=st.booleans(), data=st.data())
def test_stream_reassembled_on_valid_message_sequences(
    core: ModuleType, deflate: bool, masked: bool, data: st.DataObject
) -> None:
    messages = data.draw(st.lists(valid_messages(deflate), min_size=1, max_size=5), label="messages")
    stream = b"".join(f.encode() for frames in messages for f in for_role(frames, masked))
    chunks = data.draw(split(stream, max_parts=8), label="chunks")
    events = fold_check(core, chunks, True, max_message_size=None, deflate=deflate, masked=masked)
    # One piece per data frame per feed at most: never more pieces than
    # (data frames + feeds), and a message's pieces are all its bytes.
    data_frames = sum(1 for frames in messages for f in frames if f.opcode < OP_CLOSE)
    assert sum(1 for e in events if e[0] == FRAGMENT) <= data_frames + len(chunks)
    assert sum(1 for e in events if e[0] == FRAGMENT and e[3]) == len(messages)


@SETTINGS
@given(raw=utf8_ish, masked=st.booleans(), finished=st.booleans(), data=st.data())
def test_stream_utf8_fails_where_default_mode_does(
    core: ModuleType, raw: bytes, masked: bool, finished: bool, data: st.DataObject
) -> None:
    # A text message of edge-case bytes in fragments with pings between
    # them, maybe unfinished: the same failure at the same feed, and the
    # pieces out before it hold no invalid byte.
    pieces = data.draw(split(raw, max_parts=5), label="fragments")
    frames: list[Frame] = []
    for i, part in enumerate(pieces):
        frames.append(Frame(OP_CONT if i else OP_TEXT, part, fin=finished and i == len(pieces) - 1, mask=MASK))
        frames.append(Frame(OP_PING, bytes((i,))))
    stream = b"".join(f.encode() for f in for_role(frames, masked))
    chunks = data.draw(split(stream, max_parts=8), label="chunks")
    events = fold_check(core, chunks, True, masked=masked)
    sent = b"".join(e[2] for e in events if e[0] == FRAGMENT)
    assert raw.startswith(sent)
    assert utf8_scan(sent)[0]


@SETTINGS
@given(text=texts, masked=st.booleans(), data=st.data())
def test_stream_text_pieces_join_to_the_text(core: ModuleType, text: str, masked: bool, data: st.DataObject) -> None:
    stream = Frame(OP_TEXT, text.encode("utf-8"), masked=masked, mask=MASK).encode()
    chunks = data.draw(split(stream, max_parts=6), label="chunks")
    events = feed_all(core, chunks, stream=True, masked=masked)
    assert Folder().add(events) == [(OP_TEXT, text)]
    assert len(events) <= len(chunks)  # one frame: at most one piece per feed


# -- the fuzz harness's stream check -----------------------------------------------


def test_fuzz_stream_bit_makes_stream_parsers() -> None:
    load_core("compiled")
    fuzz_core.load(None)
    stream = frame(OP_TEXT, "hé", fin=False) + frame(OP_CONT, "llo")
    seed = stream + bytes(reversed([fuzz_core.MODE_RAW | fuzz_core.STREAM, 0, 0, 1, 0]))
    reader = fuzz_core.TailReader(seed)
    first = reader.byte()
    got = fuzz_core.decode_parser_input(reader, first & 7, False, bool(first & fuzz_core.STREAM))
    assert got[1] == {"stream": True}
    assert b"".join(got[2]) == stream and len(got[2]) == len(stream)  # byte by byte
    fuzz_core.check_input(seed)


class _Holding:
    """A parser in stream mode whose pieces come one feed late (the same
    pieces, so the messages are right, but not when they should be)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self._held: list[Any] = []

    @property
    def finished(self) -> bool:
        return bool(self._real.finished)

    def feed(self, data: Any) -> list[Any]:
        events = self._real.feed(data)
        out = [*self._held, *(e for e in events if e[0] != FRAGMENT)]
        self._held = [e for e in events if e[0] == FRAGMENT]
        return out


def test_fuzz_stream_checks_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled = load_core("compiled")
    pure = load_core("pure")
    fuzz_core.load(None)
    stream = frame(OP_BINARY, b"ab", fin=False) + frame(OP_CONT, b"cd")
    chunks = [stream[:8], stream[8:]]
    kwargs = {"stream": True}
    fuzz_core.check_parser(stream, kwargs, chunks, "bytes")
    fuzz_core.check_stream_reassembly(stream, kwargs, chunks, "bytes")
    # Compiled pieces a feed late: the twins' differential says so.
    broken = SimpleNamespace(__name__="broken", FrameParser=lambda **kw: _Holding(compiled.FrameParser(**kw)))
    monkeypatch.setattr(fuzz_core, "C", broken)
    with pytest.raises(AssertionError, match="compiled and pure cores differ"):
        fuzz_core.check_parser(stream, kwargs, chunks, "bytes")
    monkeypatch.undo()

    # The pure twin's pieces a feed late: its message ends a feed after the
    # default mode's; the reassembly check says so.
    def late(**kw: Any) -> Any:
        return _Holding(pure.FrameParser(**kw)) if kw.get("stream") else pure.FrameParser(**kw)

    monkeypatch.setattr(fuzz_core, "P", SimpleNamespace(__name__="late", FrameParser=late))
    with pytest.raises(AssertionError, match="stream mode reassembled differs"):
        fuzz_core.check_stream_reassembly(stream, kwargs, chunks, "bytes")
    # And an empty non-final piece is refused.
    with pytest.raises(AssertionError, match="empty FRAGMENT piece"):
        fuzz_core.StreamFolder(True).add([(FRAGMENT, OP_BINARY, b"", False)])
