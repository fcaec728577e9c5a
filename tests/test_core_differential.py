"""Differential tests: compiled core == pure core == a reference model.

The reference model below is written from RFC 6455 (sections 5 and 7) and
RFC 3629 (UTF-8), not from either core. It is deliberately plain and
non-incremental: it walks the whole byte stream once and returns the events
a parser must produce, using the event tuples and failure reasons of
``wsnest.core._common``. It has the parser's two roles: a server
(``masked=True``) reads client frames, which must be masked, and a client
(``masked=False``) reads server frames, which must not be (RFC 6455 section
5.1); every property below runs in both roles, the client role on the same
generated streams with the MASK bit of every frame flipped.

Where RFC 6455 leaves a choice open, the model follows the documented
behaviour of the cores:

- the checks run in this order: RSV bits, opcode, FIN on a control frame,
  control length > 125, mask bit (wrong for the role: ``R_UNMASKED`` for a
  server, ``R_MASKED`` for a client), continuation rules (these need only
  the first two bytes); then non-minimal length, top bit of a 64-bit length
  and the message size limit (these need the extended length, not the
  masking key);
- each check runs as soon as the bytes it needs are in, so a header cut
  short produces nothing unless the part received already fails;
- a text message fails at its first byte that cannot start or continue
  valid UTF-8, so an invalid fragment fails before any later control frame
  is delivered; an incomplete sequence only fails at the end of the message;
- close frames are validated once complete; nothing follows a close or a
  failure;
- with ``deflate=True`` (RFC 7692 negotiated), RSV1 is allowed on the first
  frame of a text or binary message only; such a message is delivered as
  ``OP_TEXT_DEFLATED``/``OP_BINARY_DEFLATED`` with its raw (still
  compressed) bytes, neither validated nor decoded, and the size limit
  counts those bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsnest.core import _frames_py
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
    R_LENGTH_MSB,
    R_MASKED,
    R_NON_MINIMAL,
    R_OPCODE,
    R_RSV,
    R_TOO_BIG,
    R_UNMASKED,
)

SETTINGS = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- reference model -------------------------------------------------------------


def ref_xor(data: bytes, mask: bytes, offset: int = 0) -> bytes:
    """RFC 6455 section 5.3: octet i is XORed with mask octet (i mod 4)."""
    return bytes(b ^ mask[(i + offset) % 4] for i, b in enumerate(data))


def utf8_scan(data: bytes) -> tuple[bool, bool]:
    """Scan ``data`` with the RFC 3629 section 4 grammar.

    Returns ``(prefix_ok, complete)``: whether ``data`` can still be extended
    to valid UTF-8, and whether it already is valid UTF-8.
    """
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        if b <= 0x7F:
            i += 1
            continue
        if 0xC2 <= b <= 0xDF:
            tail, lo, hi = 1, 0x80, 0xBF
        elif b == 0xE0:
            tail, lo, hi = 2, 0xA0, 0xBF
        elif 0xE1 <= b <= 0xEC or 0xEE <= b <= 0xEF:
            tail, lo, hi = 2, 0x80, 0xBF
        elif b == 0xED:
            tail, lo, hi = 2, 0x80, 0x9F
        elif b == 0xF0:
            tail, lo, hi = 3, 0x90, 0xBF
        elif 0xF1 <= b <= 0xF3:
            tail, lo, hi = 3, 0x80, 0xBF
        elif b == 0xF4:
            tail, lo, hi = 3, 0x80, 0x8F
        else:
            return False, False
        for k in range(1, tail + 1):
            if i + k >= n:
                return True, False  # a valid sequence cut short
            if not lo <= data[i + k] <= hi:
                return False, False
            lo, hi = 0x80, 0xBF
        i += tail + 1
    return True, True


def ref_close_code_ok(code: int) -> bool:
    # RFC 6455 section 7.4.1/7.4.2 and the IANA registry: 1000-1003 and
    # 1007-1014 may be sent; 1004-1006 and 1015 never; 3000-4999 are free.
    return code in (1000, 1001, 1002, 1003) or 1007 <= code <= 1014 or 3000 <= code <= 4999


def ref_close_event(payload: bytes) -> tuple:
    if not payload:
        return (OP_CLOSE, CLOSE_NO_STATUS, "")
    if len(payload) == 1:
        return (FAIL, CLOSE_PROTOCOL_ERROR, R_CLOSE_1_BYTE)
    code = payload[0] * 256 + payload[1]
    if not ref_close_code_ok(code):
        return (FAIL, CLOSE_PROTOCOL_ERROR, R_CLOSE_CODE)
    if utf8_scan(payload[2:]) != (True, True):
        return (FAIL, CLOSE_INVALID_DATA, R_CLOSE_REASON)
    return (OP_CLOSE, code, payload[2:].decode("utf-8"))


def reference_events(
    stream: bytes,
    max_message_size: int | None = 1 << 20,
    decode_text: bool = True,
    deflate: bool = False,
    masked: bool = True,
) -> list[tuple]:
    """Events a server (``masked=True``) must produce for the client byte
    stream ``stream``, or a client (``masked=False``) for a server stream."""
    events: list[tuple] = []

    def proto(reason: str) -> list[tuple]:
        events.append((FAIL, CLOSE_PROTOCOL_ERROR, reason))
        return events

    pos, n = 0, len(stream)
    msg_op = 0  # opcode of the message being assembled, 0 if none
    msg = b""  # its unmasked data so far
    compressed = False  # RSV1 on its first frame (RFC 7692 section 6)
    while True:
        # First two bytes: FIN, RSV1-3, opcode; MASK, 7-bit length.
        if n - pos < 2:
            return events
        b0, b1 = stream[pos], stream[pos + 1]
        fin, rsv, opcode = b0 >> 7, (b0 >> 4) & 7, b0 & 0xF
        mask_bit, len7 = b1 >> 7, b1 & 0x7F
        control = opcode >= 8
        # RFC 7692 section 6: with the extension, RSV1 marks a compressed
        # message on its first frame; it is not allowed on control frames
        # or continuations. RSV2/RSV3 are never ours.
        if rsv and not (deflate and rsv == 4 and opcode in (OP_TEXT, OP_BINARY)):
            return proto(R_RSV)
        if opcode not in (OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG):
            return proto(R_OPCODE)
        if control and not fin:
            return proto(R_CTL_FRAGMENTED)
        if control and len7 > 125:
            return proto(R_CTL_TOO_LONG)
        # Section 5.1: client frames are masked, server frames are not.
        if masked and not mask_bit:
            return proto(R_UNMASKED)
        if mask_bit and not masked:
            return proto(R_MASKED)
        if opcode == OP_CONT and not msg_op:
            return proto(R_CONT_UNEXPECTED)
        if opcode in (OP_TEXT, OP_BINARY) and msg_op:
            return proto(R_DATA_UNEXPECTED)
        # Extended payload length (section 5.2: minimal encoding, top bit 0).
        ext = 2 if len7 == 126 else 8 if len7 == 127 else 0
        if n - pos < 2 + ext:
            return events
        length = int.from_bytes(stream[pos + 2 : pos + 2 + ext], "big") if ext else len7
        if ext == 2 and length < 126:
            return proto(R_NON_MINIMAL)
        if ext == 8:
            if length >= 1 << 63:
                return proto(R_LENGTH_MSB)
            if length < 1 << 16:
                return proto(R_NON_MINIMAL)
        if not control:
            so_far = len(msg) if opcode == OP_CONT else 0
            if max_message_size is not None and so_far + length > max_message_size:
                events.append((FAIL, CLOSE_TOO_BIG, R_TOO_BIG))
                return events
        # Masking key (client frames only), then as much payload as the
        # stream holds.
        key = 4 if masked else 0
        if n - pos < 2 + ext + key:
            return events
        start = pos + 2 + ext + key
        payload = stream[start : start + length]
        if masked:
            payload = ref_xor(payload, stream[pos + 2 + ext : start])
        complete = len(payload) == length
        if not control:
            if opcode != OP_CONT:
                msg_op, msg, compressed = opcode, b"", bool(rsv)
            msg += payload
            if msg_op == OP_TEXT and not compressed and not utf8_scan(msg)[0]:
                events.append((FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8))
                return events
        if not complete:
            return events
        pos = start + length
        if opcode == OP_CLOSE:
            events.append(ref_close_event(payload))
            return events
        if control:
            events.append((opcode, payload))
        elif fin:
            if compressed:
                events.append((OP_TEXT_DEFLATED if msg_op == OP_TEXT else OP_BINARY_DEFLATED, msg))
            elif msg_op == OP_TEXT:
                if not utf8_scan(msg)[1]:
                    events.append((FAIL, CLOSE_INVALID_DATA, R_BAD_UTF8))
                    return events
                events.append((OP_TEXT, msg.decode("utf-8") if decode_text else msg))
            else:
                events.append((msg_op, msg))
            msg_op, msg = 0, b""


def test_reference_model_sanity() -> None:
    # RFC 6455 section 5.7 masked "Hello", then a close.
    stream = bytes.fromhex("818537fa213d7f9f4d5158") + bytes.fromhex("88820000000003e8")
    assert reference_events(stream) == [(OP_TEXT, "Hello"), (OP_CLOSE, 1000, "")]
    assert reference_events(bytes.fromhex("810548656c6c6f")) == [(FAIL, CLOSE_PROTOCOL_ERROR, R_UNMASKED)]
    assert reference_events(bytes.fromhex("01830000000048656c") + bytes.fromhex("80820000000061")) == []
    assert utf8_scan("aé€😀".encode()) == (True, True)
    assert utf8_scan(b"\xf0\x9f") == (True, False)
    assert utf8_scan(b"\xed\xa0") == (False, False)
    # RFC 7692 section 7.2.3.1: "Hello" compressed, in one frame with RSV1.
    compressed = bytes((0xC1, 0x87)) + b"\x00\x00\x00\x00" + bytes.fromhex("f248cdc9c90700")
    assert reference_events(compressed) == [(FAIL, CLOSE_PROTOCOL_ERROR, R_RSV)]
    assert reference_events(compressed, deflate=True) == [(OP_TEXT_DEFLATED, bytes.fromhex("f248cdc9c90700"))]
    # The client role: RFC 6455 section 5.7 unmasked "Hello", then a close;
    # the masked "Hello" fails.
    server_hello = bytes.fromhex("810548656c6c6f")
    assert reference_events(server_hello + bytes.fromhex("880203e8"), masked=False) == [
        (OP_TEXT, "Hello"),
        (OP_CLOSE, 1000, ""),
    ]
    assert reference_events(stream, masked=False) == [(FAIL, CLOSE_PROTOCOL_ERROR, R_MASKED)]
    assert reference_events(bytes.fromhex("010348656c") + bytes.fromhex("80026c6f"), masked=False) == [
        (OP_TEXT, "Hello")
    ]
    # Section 7.2.3.1 in the client role: the same compressed "Hello", unmasked.
    plain = bytes((0xC1, 0x07)) + bytes.fromhex("f248cdc9c90700")
    assert reference_events(plain, deflate=True, masked=False) == [(OP_TEXT_DEFLATED, bytes.fromhex("f248cdc9c90700"))]


# -- frame strategies --------------------------------------------------------------


@dataclass(frozen=True)
class Frame:
    """A frame, possibly malformed: a client frame (masked) unless
    ``masked=False``. ``length`` overrides the declared length."""

    opcode: int
    payload: bytes = b""
    fin: bool = True
    rsv: int = 0
    masked: bool = True
    mask: bytes = b"\x00\x00\x00\x00"
    form: str = "min"  # "min", "16", "64" or "msb" (64-bit with the top bit set)
    length: int | None = None

    def encode(self) -> bytes:
        length = len(self.payload) if self.length is None else self.length
        b0 = (0x80 if self.fin else 0) | (self.rsv << 4) | self.opcode
        mbit = 0x80 if self.masked else 0
        form = self.form
        if form == "min":
            form = "7" if length < 126 else "16" if length < 1 << 16 else "64"
        if form == "7":
            head = bytes((b0, mbit | length))
        elif form == "16":
            head = struct.pack("!BBH", b0, mbit | 126, length & 0xFFFF)
        elif form == "64":
            head = struct.pack("!BBQ", b0, mbit | 127, length)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, (1 << 63) | length)
        if not self.masked:
            return head + self.payload
        return head + self.mask + ref_xor(self.payload, self.mask)


masks = st.one_of(st.just(b"\x00\x00\x00\x00"), st.binary(min_size=4, max_size=4))
CHARS = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["a", "\x00", "é", "€", "\uffff", "😀", "𝄞", "\U00010000", "\U0010ffff"]),
)
texts = st.text(CHARS, max_size=40)
BAD_UTF8 = [
    b"\xff",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xe0\x80\x80",
    b"\xf0\x80\x80\x80",
    b"\xf4\x90\x80\x80",
    b"\xf5",
    b"\x80",
    b"\xbf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xc2",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\xc3\x28",
]
# Prefixes that can never be completed: they fail at once, even mid-message.
DEAD_PREFIXES = [b"\xed\xa0", b"\xed\xbf", b"\xf4\x90", b"\xe0\x9f", b"\xf0\x8f"]
GOOD_PREFIXES = [b"\xc2", b"\xe0\xa0", b"\xed\x9f", b"\xf0\x90", b"\xf4\x8f\xbf"]
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014, 3000, 3999, 4000, 4999]
INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
UNKNOWN_OPCODES = [3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF]

binaries = st.one_of(
    st.binary(max_size=40),
    st.binary(max_size=300),
    # Long payloads for 16-bit lengths, built cheaply from a short pattern.
    st.builds(lambda pat, k: (pat * k)[: k + 120], st.binary(min_size=1, max_size=3), st.integers(100, 400)),
)


@st.composite
def text_bytes(draw: st.DrawFn) -> tuple[bytes, int | None]:
    """UTF-8 text, sometimes corrupted; also returns where the corruption ends."""
    raw = draw(texts).encode("utf-8")
    if draw(st.integers(0, 3)) != 0:
        return raw, None
    at = draw(st.integers(0, len(raw)))
    bad = draw(st.sampled_from(draw(st.sampled_from([BAD_UTF8, DEAD_PREFIXES, GOOD_PREFIXES]))))
    return raw[:at] + bad + raw[at:], at + len(bad)


@st.composite
def split(draw: st.DrawFn, data: bytes, max_parts: int = 4) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=max_parts - 1)))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


@st.composite
def control_frames(draw: st.DrawFn) -> Frame:
    kind = draw(st.sampled_from(["ping", "pong", "ping", "pong", "close"]))
    mask = draw(masks)
    fin = draw(st.integers(0, 31)) != 0  # now and then a (forbidden) fragmented control frame
    if kind != "close":
        opcode = OP_PING if kind == "ping" else OP_PONG
        size = draw(st.sampled_from([0, 1, 5, 10, 124, 125, 125, 126, 127] if draw(st.booleans()) else [0, 1, 5, 10]))
        payload = draw(st.binary(min_size=size, max_size=size))
        return Frame(opcode, payload, fin=fin, mask=mask)
    form = draw(st.sampled_from(["empty", "one", "valid", "valid", "invalid", "random", "bad-reason"]))
    if form == "empty":
        payload = b""
    elif form == "one":
        payload = draw(st.binary(min_size=1, max_size=1))
    else:
        pool = INVALID_CODES if form == "invalid" else VALID_CODES
        code = draw(st.integers(0, 65535) if form == "random" else st.sampled_from(pool))
        reason = draw(st.text(CHARS, max_size=20)).encode("utf-8")[:123]
        if form == "bad-reason":
            reason = (reason + draw(st.sampled_from(BAD_UTF8)))[-123:]
        payload = struct.pack("!H", code) + reason
    return Frame(OP_CLOSE, payload, fin=fin, mask=mask)


@st.composite
def data_messages(draw: st.DrawFn, deflate: bool = False) -> list[Frame]:
    """One text or binary message, maybe fragmented, with interleaved pings and
    pongs; with ``deflate``, often marked compressed (RSV1 on its first frame)."""
    opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY]))
    rsv = 4 if deflate and draw(st.booleans()) else 0
    if opcode == OP_TEXT:
        data, cut = draw(text_bytes())
    else:
        data, cut = draw(binaries), None
    pieces = draw(split(data))
    cut_here = cut is not None and draw(st.booleans())
    if cut_here:
        # End a fragment right after the corruption, then a control frame (or
        # the end of the stream): a prefix that can never be completed must
        # fail before it.
        pieces = [data[:cut], data[cut:]]
        if draw(st.booleans()):
            pieces = pieces[:1]
    frames: list[Frame] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        first = i == 0
        frames.append(
            Frame(
                opcode if first else OP_CONT,
                piece,
                fin=last and not cut_here,
                rsv=rsv if first else 0,
                mask=draw(masks),
            )
        )
        if last:
            break
        interleave = 0 if cut_here else draw(st.integers(0, 23))
        if interleave < 8:
            ctl = draw(control_frames())
            if ctl.opcode != OP_CLOSE or draw(st.integers(0, 3)) == 0:
                frames.append(ctl)
        elif interleave == 8:  # a new message before this one ended
            frames.append(Frame(draw(st.sampled_from([OP_TEXT, OP_BINARY])), b"new", mask=draw(masks)))
    return frames


@st.composite
def big_messages(draw: st.DrawFn) -> list[Frame]:
    """A message needing a 64-bit length (or declaring a huge one)."""
    if draw(st.integers(0, 3)) == 0:
        n = draw(st.integers(1 << 16, (1 << 16) + 300))
        return [Frame(OP_BINARY, bytes([draw(st.integers(0, 255))]) * n, mask=draw(masks))]
    huge = draw(st.sampled_from([1 << 20, (1 << 20) + 1, 1 << 32, 1 << 40, (1 << 63) - 1]))
    return [Frame(draw(st.sampled_from([OP_TEXT, OP_BINARY])), b"abc", length=huge, mask=draw(masks))]


@st.composite
def utf8_probes(draw: st.DrawFn) -> list[Frame]:
    """A text fragment ending in a complete, incomplete or impossible sequence, then a control frame or not."""
    start = draw(texts).encode("utf-8")[:8]
    tail = draw(st.sampled_from(draw(st.sampled_from([BAD_UTF8, DEAD_PREFIXES, GOOD_PREFIXES]))))
    frames = [Frame(OP_TEXT, start + tail, fin=draw(st.integers(0, 3)) == 0, mask=draw(masks))]
    if draw(st.booleans()):
        frames.append(Frame(OP_PING, b"after", mask=draw(masks)))
    return frames


@st.composite
def boundary_headers(draw: st.DrawFn) -> Frame:
    """A data frame header with a length at an encoding boundary (payload: what follows)."""
    form, length = draw(st.sampled_from([("min", 125), ("16", 125), ("16", 126), ("64", 65535), ("64", 65536)]))
    return Frame(draw(st.sampled_from([OP_TEXT, OP_BINARY])), b"", form=form, length=length, mask=draw(masks))


@st.composite
def corrupt(draw: st.DrawFn, frame: Frame) -> Frame:
    how = draw(
        st.sampled_from(
            ["rsv", "rsv1", "opcode", "unmask", "fin", "form16", "form64", "msb", "length", "swap-opcode", "payload"]
        )
    )
    if how == "rsv":
        return replace(frame, rsv=draw(st.integers(1, 7)))
    if how == "rsv1":  # the permessage-deflate bit, on any frame
        return replace(frame, rsv=4)
    if how == "opcode":
        return replace(frame, opcode=draw(st.sampled_from(UNKNOWN_OPCODES)))
    if how == "unmask":
        return replace(frame, masked=False)
    if how == "fin":
        return replace(frame, fin=not frame.fin)
    if how == "form16":
        return replace(frame, form="16", length=draw(st.sampled_from([None, 125, 126])))
    if how == "form64":
        return replace(frame, form="64", length=draw(st.sampled_from([None, 65535, 65536])))
    if how == "msb":
        return replace(frame, form="msb")
    if how == "length":
        n = len(frame.payload)
        return replace(frame, length=draw(st.sampled_from([max(n - 1, 0), n + 1, n + 5, 125, 126, 127, 65535, 65536])))
    if how == "swap-opcode":
        return replace(frame, opcode=draw(st.sampled_from([OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG])))
    # Oversized control payloads, bad UTF-8 in any frame.
    return replace(frame, payload=frame.payload + draw(st.sampled_from([b"x" * 126, *BAD_UTF8])))


def _one(strategy: st.SearchStrategy[Frame]) -> st.SearchStrategy[list[Frame]]:
    return strategy.map(lambda frame: [frame])


junk_frames = st.builds(
    Frame, st.sampled_from([OP_TEXT, OP_BINARY, OP_CONT]), st.binary(max_size=8), rsv=st.sampled_from([0, 0, 0, 4])
)


def stream_items(deflate: bool) -> st.SearchStrategy[list[Frame]]:
    # Weighted by repetition: mostly whole messages and control frames.
    return st.one_of(
        data_messages(deflate),
        data_messages(deflate),
        data_messages(deflate),
        _one(control_frames()),
        _one(control_frames()),
        utf8_probes(),
        _one(boundary_headers()),
        big_messages(),
        _one(junk_frames),
    )


def for_role(frames: list[Frame], masked: bool) -> list[Frame]:
    """``frames`` as written (client frames), or for ``masked=False`` as a
    server sends them: the MASK bit of every frame flipped, so a server frame
    is unmasked and a client frame "corrupted" to unmasked is masked."""
    return frames if masked else [replace(f, masked=not f.masked) for f in frames]


@st.composite
def streams(draw: st.DrawFn, deflate: bool = False, masked: bool = True) -> bytes:
    """A client byte stream (a server one if not ``masked``); with
    ``deflate``, many messages are compressed."""
    frames = [frame for item in draw(st.lists(stream_items(deflate), min_size=1, max_size=5)) for frame in item]
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        at = draw(st.integers(0, len(frames) - 1))
        frames[at] = draw(corrupt(frames[at]))
    stream = b"".join(f.encode() for f in for_role(frames, masked))
    if draw(st.integers(0, 5)) == 0:
        stream = stream[: draw(st.integers(0, len(stream)))]
    if draw(st.integers(0, 7)) == 0:
        stream += draw(st.binary(max_size=20))
    return stream


max_sizes = st.one_of(st.none(), st.integers(0, 16), st.integers(0, 400), st.just(1 << 16), st.just(1 << 20))


DATA_KINDS = (OP_TEXT, OP_BINARY, OP_TEXT_DEFLATED, OP_BINARY_DEFLATED)


def max_sizes_for(stream: bytes, deflate: bool = False, masked: bool = True) -> st.SearchStrategy[int | None]:
    """Limits that often sit right at the size of one of the messages in ``stream``."""
    sizes = [len(e[1]) for e in reference_events(stream, None, False, deflate, masked) if e[0] in DATA_KINDS]
    near = [max(size + delta, 0) for size in sizes for delta in (-1, 0, 1)]
    if not near:
        return st.one_of(max_sizes, st.integers(0, len(stream) + 8))
    return st.one_of(max_sizes, st.integers(0, len(stream) + 8), st.sampled_from(near), st.sampled_from(near))


# -- helpers -----------------------------------------------------------------------


def shape(events: list[tuple]) -> list[tuple]:
    return [tuple(type(field) for field in event) for event in events]


def run(
    core: ModuleType,
    chunks: list[bytes] | list[bytearray],
    max_message_size: int | None,
    decode_text: bool,
    deflate: bool = False,
    masked: bool = True,
) -> list[tuple]:
    parser = core.FrameParser(
        max_message_size=max_message_size, decode_text=decode_text, deflate=deflate, masked=masked
    )
    assert parser.masked is masked
    events: list[tuple] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def check_same(actual: list[tuple], expected: list[tuple]) -> None:
    assert actual == expected
    assert shape(actual) == shape(expected)


# -- properties --------------------------------------------------------------------


@SETTINGS
@given(deflate=st.booleans(), decode_text=st.booleans(), masked=st.booleans(), data=st.data())
def test_cores_match_reference(
    core: ModuleType, deflate: bool, decode_text: bool, masked: bool, data: st.DataObject
) -> None:
    # deflate: a parser for a connection with permessage-deflate, fed streams
    # where many messages carry RSV1 (and RSV1 lands on other frames too).
    # masked: the role; False is a client reading server frames.
    stream = data.draw(streams(deflate, masked), label="stream")
    max_message_size = data.draw(max_sizes_for(stream, deflate, masked), label="max_message_size")
    expected = reference_events(stream, max_message_size, decode_text, deflate, masked)
    chunkings = [[stream], data.draw(split(stream, max_parts=12), label="chunks")]
    if len(stream) <= 64:
        chunkings.append([stream[i : i + 1] for i in range(len(stream))])
    for chunks in chunkings:
        check_same(run(core, chunks, max_message_size, decode_text, deflate, masked), expected)
        if core is not _frames_py:
            check_same(run(_frames_py, chunks, max_message_size, decode_text, deflate, masked), expected)
        if deflate or not masked:
            # The same bytes as writable buffers (the compiled core unmasks in
            # place in the server role, and must leave them alone in the client role).
            writable = [bytearray(c) for c in chunks]
            check_same(run(core, writable, max_message_size, decode_text, deflate, masked), expected)
            if not masked:
                assert writable == chunks


@SETTINGS
@given(
    stream=st.binary(max_size=60),
    max_message_size=max_sizes,
    decode_text=st.booleans(),
    deflate=st.booleans(),
    masked=st.booleans(),
    data=st.data(),
)
def test_cores_match_reference_on_noise(
    core: ModuleType,
    stream: bytes,
    max_message_size: int | None,
    decode_text: bool,
    deflate: bool,
    masked: bool,
    data: st.DataObject,
) -> None:
    # Random bytes, with the MASK bit forced right for the role so parsing
    # gets past the first checks now and then (keeping RSV1 as it is, so
    # deflate parsers see it).
    if stream and data.draw(st.booleans(), label="fix-mask-bit"):
        second = (stream[1] | 0x80 if masked else stream[1] & 0x7F,) if len(stream) > 1 else ()
        stream = bytes((stream[0] & 0xCF, *second)) + stream[2:]
    expected = reference_events(stream, max_message_size, decode_text, deflate, masked)
    chunks = data.draw(split(stream, max_parts=8), label="chunks")
    check_same(run(core, [stream], max_message_size, decode_text, deflate, masked), expected)
    check_same(run(core, chunks, max_message_size, decode_text, deflate, masked), expected)


@st.composite
def valid_messages(draw: st.DrawFn, deflate: bool = False) -> list[Frame]:
    """A valid text or binary message, maybe fragmented, maybe with a ping
    inside; with ``deflate``, maybe compressed (any bytes, RSV1 first)."""
    opcode = draw(st.sampled_from([OP_TEXT, OP_BINARY]))
    rsv = 4 if deflate and draw(st.booleans()) else 0
    data = draw(st.binary(max_size=40)) if rsv or opcode == OP_BINARY else draw(texts).encode("utf-8")
    pieces = draw(split(data, max_parts=3))
    frames = [
        Frame(OP_CONT if i else opcode, p, fin=i == len(pieces) - 1, rsv=0 if i else rsv) for i, p in enumerate(pieces)
    ]
    if len(frames) > 1 and draw(st.booleans()):
        frames.insert(1, Frame(OP_PING, b"!"))
    return frames


@SETTINGS
@given(deflate=st.booleans(), decode_text=st.booleans(), masked=st.booleans(), data=st.data())
def test_cores_match_reference_on_message_sequences(
    core: ModuleType, deflate: bool, decode_text: bool, masked: bool, data: st.DataObject
) -> None:
    # The size limit applies to each message on its own, across its fragments
    # (compressed ones included: their wire size).
    messages = data.draw(st.lists(valid_messages(deflate), min_size=2, max_size=5), label="messages")
    stream = b"".join(f.encode() for frames in messages for f in for_role(frames, masked))
    max_message_size = data.draw(max_sizes_for(stream, deflate, masked), label="max_message_size")
    expected = reference_events(stream, max_message_size, decode_text, deflate, masked)
    check_same(run(core, [stream], max_message_size, decode_text, deflate, masked), expected)
    chunks = data.draw(split(stream, max_parts=6), label="chunks")
    check_same(run(core, chunks, max_message_size, decode_text, deflate, masked), expected)


@SETTINGS
@given(deflate=st.booleans(), decode_text=st.booleans(), masked=st.booleans(), data=st.data())
def test_mask_bit_of_the_other_role_fails(
    core: ModuleType, deflate: bool, decode_text: bool, masked: bool, data: st.DataObject
) -> None:
    # Valid messages for the role, one of their frames with the MASK bit of
    # the other role: everything before it is delivered, then 1002, as soon
    # as that frame's first two bytes are in (a server still refuses unmasked
    # frames, a client refuses masked ones).
    messages = data.draw(st.lists(valid_messages(deflate), min_size=1, max_size=4), label="messages")
    frames = [f for message in messages for f in for_role(message, masked)]
    at = data.draw(st.integers(0, len(frames) - 1), label="at")
    frames[at] = replace(frames[at], masked=not frames[at].masked)
    before = b"".join(f.encode() for f in frames[:at])
    stream = before + b"".join(f.encode() for f in frames[at:])
    expected = reference_events(stream, None, decode_text, deflate, masked)
    assert expected[-1] == (FAIL, CLOSE_PROTOCOL_ERROR, R_UNMASKED if masked else R_MASKED)
    assert expected[:-1] == reference_events(before, None, decode_text, deflate, masked)
    chunks = data.draw(split(stream, max_parts=6), label="chunks")
    for twin in (core, _frames_py):
        check_same(run(twin, [stream], None, decode_text, deflate, masked), expected)
        check_same(run(twin, chunks, None, decode_text, deflate, masked), expected)
        check_same(run(twin, [stream[: len(before) + 2]], None, decode_text, deflate, masked), expected)


# Bytes at the edges of the RFC 3629 ranges, mixed with whole characters.
UTF8_EDGE_BYTES = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF, 0xE0, 0xE1]
UTF8_EDGE_BYTES += [0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]
utf8_ish = st.lists(
    st.one_of(
        st.sampled_from([bytes((b,)) for b in UTF8_EDGE_BYTES]),
        st.sampled_from(DEAD_PREFIXES + GOOD_PREFIXES),
        CHARS.map(lambda c: c.encode("utf-8")),
    ),
    max_size=12,
).map(b"".join)


@SETTINGS
@given(
    raw=utf8_ish,
    decode_text=st.booleans(),
    deflate=st.sampled_from([None, False, True]),
    masked=st.booleans(),
    data=st.data(),
)
def test_cores_match_reference_on_fragmented_text(
    core: ModuleType, raw: bytes, decode_text: bool, deflate: bool | None, masked: bool, data: st.DataObject
) -> None:
    # One text message in fragments with pings between them, maybe unfinished.
    # deflate None: a plain parser; False: a deflate parser, message not
    # compressed (validated as usual); True: compressed (never validated).
    pieces = data.draw(split(raw, max_parts=5), label="fragments")
    finished = data.draw(st.booleans(), label="finished")
    frames: list[Frame] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        rsv = 4 if deflate and i == 0 else 0
        frames.append(Frame(OP_CONT if i else OP_TEXT, piece, fin=last and finished, rsv=rsv, mask=b"\x5a\xa5\x0f\xf0"))
        frames.append(Frame(OP_PING, bytes((i,))))
    stream = b"".join(f.encode() for f in for_role(frames, masked))
    on = deflate is not None
    expected = reference_events(stream, None, decode_text, on, masked)
    check_same(run(core, [stream], None, decode_text, on, masked), expected)
    chunks = data.draw(split(stream, max_parts=8), label="chunks")
    check_same(run(core, chunks, None, decode_text, on, masked), expected)


@SETTINGS
@given(data=st.binary(max_size=200), mask=st.binary(min_size=4, max_size=4), offset=st.integers(0, 3))
def test_apply_mask_matches_reference(core: ModuleType, data: bytes, mask: bytes, offset: int) -> None:
    expected = ref_xor(data, mask, offset)
    result = core.apply_mask(data, mask, offset)
    assert type(result) is bytes
    assert result == expected
    assert _frames_py.apply_mask(data, mask, offset) == expected
    buf = bytearray(data)
    core.mask_inplace(buf, mask, offset)
    assert buf == expected


utf8_inputs = st.one_of(
    st.binary(max_size=20),
    texts.map(lambda s: s.encode("utf-8")),
    st.builds(lambda a, b, c: a + b + c, texts.map(str.encode), st.sampled_from(BAD_UTF8), texts.map(str.encode)),
    st.lists(
        st.sampled_from([b"\x80", b"\xbf", b"\xc2", b"\xe0", b"\xed", b"\xf0", b"\xf4", b"\xa0", b"\x90", b"a"])
    ).map(b"".join),
)


@SETTINGS
@given(data=utf8_inputs)
def test_validate_utf8_matches_reference(core: ModuleType, data: bytes) -> None:
    expected = utf8_scan(data)[1]
    assert core.validate_utf8(data) is expected
    assert _frames_py.validate_utf8(data) is expected


@SETTINGS
@given(
    opcode=st.sampled_from([OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, *UNKNOWN_OPCODES]),
    payload=st.one_of(
        texts,
        binaries,
        st.binary(min_size=124, max_size=127),
        st.integers(65534, 65537).map(bytes),
    ),
    fin=st.booleans(),
    mask=st.one_of(st.none(), st.binary(min_size=4, max_size=4)),
)
def test_encode_frame_matches_reference(
    core: ModuleType, opcode: int, payload: str | bytes, fin: bool, mask: bytes | None
) -> None:
    raw = payload.encode("utf-8") if isinstance(payload, str) else payload
    expected = Frame(opcode, raw, fin=fin, masked=mask is not None, mask=mask or b"").encode()
    result = core.encode_frame(opcode, payload, fin=fin, mask=mask)
    assert type(result) is bytes
    assert result == expected
    assert _frames_py.encode_frame(opcode, payload, fin=fin, mask=mask) == expected
    if mask is None:
        out = bytearray(b"xyz")
        assert core.append_frame(out, opcode, payload, fin) == len(expected)
        assert out == b"xyz" + expected
    # A client frame goes back through a server's parser, a server frame
    # through a client's.
    events = run(core, [result], None, True, masked=mask is not None)
    check_same(events, reference_events(result, None, True, masked=mask is not None))
    if fin and opcode == OP_BINARY:
        check_same(events, [(OP_BINARY, raw)])
    elif fin and opcode == OP_TEXT and isinstance(payload, str):
        check_same(events, [(OP_TEXT, payload)])


@pytest.mark.parametrize("masked", [True, False], ids=["server", "client"])
@pytest.mark.parametrize("length", [65536, 70000])
def test_reference_64bit_length(core: ModuleType, length: int, masked: bool) -> None:
    stream = Frame(OP_BINARY, b"\x01" * length, masked=masked, mask=b"\x01\x02\x03\x04").encode()
    assert stream[1] == (0xFF if masked else 0x7F)
    expected = reference_events(stream, None, True, masked=masked)
    assert expected == [(OP_BINARY, b"\x01" * length)]
    check_same(run(core, [stream[:7], stream[7:1000], stream[1000:]], None, True, masked=masked), expected)
