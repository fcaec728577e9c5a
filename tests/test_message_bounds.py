"""``MessageBounds.cut`` against a frame-by-frame model, over random frame
streams cut into random reads (its one-whole-frame fast path included)."""

from __future__ import annotations

import random
import struct

import pytest

from wsnest.core import MessageBounds


def _frame(b0: int, length: int, masked: bool) -> bytes:
    b1 = 0x80 if masked else 0
    if length < 126:
        head = bytes([b0, b1 | length])
    elif length < 65536:
        head = bytes([b0, b1 | 126]) + struct.pack("!H", length)
    else:
        head = bytes([b0, b1 | 127]) + struct.pack("!Q", length)
    return head + (b"\x01\x02\x03\x04" if masked else b"") + b"x" * length


def _stream(rng: random.Random, count: int) -> tuple[bytes, list[tuple[int, int, bool, bool]]]:
    """Frames as bytes, and (start, end, is_data, ends_a_message) for each."""
    out = bytearray()
    frames = []
    for _ in range(count):
        opcode = rng.choice([0, 1, 2, 3, 8, 9, 10, 11])
        fin = rng.random() < 0.7
        if rng.random() < 0.5:
            length = rng.choice([0, 1, 5, 64, 125, 126, 200, 65535, 65536, 70000])
        else:
            length = rng.randrange(0, 300)
        data = _frame((0x80 if fin else 0) | opcode, length, masked=rng.random() < 0.8)
        frames.append((len(out), len(out) + len(data), opcode < 8, fin and opcode < 8))
        out += data
    return bytes(out), frames


def _model(frames: list[tuple[int, int, bool, bool]], start: int, end: int, room: int) -> int:
    """How far a read of [start, end) may be fed, frame by frame."""
    pos = start
    for f_start, f_end, is_data, ends in frames:
        if f_end <= pos:
            continue
        if pos >= end:
            break
        if pos == f_start and room <= 0 and is_data:
            return pos - start
        pos = min(f_end, end)
        if pos == f_end and ends:
            room -= 1
    return end - start


@pytest.mark.parametrize("seed", range(40))
def test_cut_matches_the_model(seed: int) -> None:
    rng = random.Random(seed)
    data, frames = _stream(rng, rng.randrange(1, 40))
    bounds = MessageBounds()
    pos = 0
    while pos < len(data):
        if rng.random() < 0.3:  # a read of exactly one frame: the fast path's case
            end = next(f_end for f_start, f_end, _, _ in frames if f_end > pos)
        else:
            end = min(len(data), pos + rng.choice([1, 2, 3, 7, 64, 200, 4096, 100_000]))
        room = rng.choice([0, 0, 1, 1, 2, 5, 16])
        got = bounds.cut(memoryview(data)[pos:end], room)
        assert got == _model(frames, pos, end, room), (seed, pos, end, room)
        pos += got


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("len7", [126, 127])
def test_an_extended_length_header_is_not_taken_for_a_whole_frame(len7: int, masked: bool) -> None:
    # len7 + header size == the read's size, but the length is extended: the
    # frame goes on past the read, so the bounds must remember it.
    data = _frame(0x82, 70_000 if len7 == 127 else 300, masked)
    n = len7 + (6 if masked else 2)
    bounds = MessageBounds()
    assert bounds.cut(memoryview(data)[:n], 1) == n
    rest = memoryview(data)[n:]
    assert bounds.cut(rest, 1) == len(rest)  # the message ends here: room 1 -> 0
    assert bounds.cut(memoryview(_frame(0x82, 3, masked)), 0) == 0  # no room for the next


def test_a_whole_frame_with_no_room_is_held_back() -> None:
    data = _frame(0x81, 5, masked=True)
    assert MessageBounds().cut(memoryview(data), 0) == 0
    ping = _frame(0x89, 5, masked=True)
    assert MessageBounds().cut(memoryview(ping), 0) == len(ping)  # control frames pass
