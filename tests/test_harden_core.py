"""Hardening of the WebSocket core (issue 11, items 10 and 14, and the
inflated-size check after the final flush).

- Close codes: what ``close_payload`` (and so ``ws.close``) accepts to send
  is exactly what both parsers accept from a peer; anything else raises
  ``ValueError`` naming the valid ranges.
- Memory: a message arriving in many small pieces (1-byte fragments, or
  one frame fed a byte at a time) costs the parser about one byte per
  payload byte, on both cores, never one object per piece.

The server tests run on whichever core ``wsnest.core`` selected: run this
file once more under ``WSNEST_NO_EXTENSIONS=1`` for the pure one.
"""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import pytest
import trio
import websockets
import websockets.sync.client

import wsnest
from serverutil import TIMEOUT, echo_handler, raw_ws, run_in_thread, running_server, ws_url
from wire import MASK, OP_BINARY, OP_CONT, OP_PING, OP_PONG, OP_TEXT, client_frame, close_frame
from wsnest.core import CLOSE_CODE_RANGES, CLOSE_TOO_BIG, OP_CLOSE, close_payload
from wsnest.core._deflate import R_INFLATE_TOO_BIG

RANGES_TEXT = "1000-1003, 1007-1014 or 3000-4999"

# -- item 10: one set of close codes, both ways -----------------------------------


def _parser_accepts(core: ModuleType, code: int) -> bool:
    frame = core.encode_frame(OP_CLOSE, struct.pack("!H", code), mask=MASK)
    events = core.FrameParser().feed(frame)
    assert len(events) == 1
    return bool(events[0][0] == OP_CLOSE)


def _close_payload_accepts(code: int) -> bool:
    try:
        payload = close_payload(code, "r")
    except ValueError as exc:
        assert str(exc) == f"code: must be {RANGES_TEXT}, got {code}"
        return False
    assert payload == struct.pack("!H", code) + b"r"
    return True


def test_close_codes_sent_are_exactly_the_codes_received(core: ModuleType) -> None:
    sendable = {code for code in range(5001) if _close_payload_accepts(code)}
    receivable = {code for code in range(5001) if _parser_accepts(core, code)}
    assert sendable == receivable
    # The agreed set (RFC 6455 section 7.4, IANA): 1012-1014 accepted from
    # peers, 1004-1006 and 1015 refused both ways.
    expected = {*range(1000, 1004), *range(1007, 1015), *range(3000, 5000)}
    assert sendable == expected
    assert {code for lo, hi in CLOSE_CODE_RANGES for code in range(lo, hi + 1)} == expected


def test_close_payload_rejects_codes_beyond_16_bits_and_non_ints() -> None:
    for code in (-1, 65535, 65536 + 1000):
        with pytest.raises(ValueError) as info:
            close_payload(code)
        assert str(info.value) == f"code: must be {RANGES_TEXT}, got {code}"
    with pytest.raises(TypeError, match=r"^code: expected an int or None, got float$"):
        close_payload(1000.0)  # type: ignore[arg-type]


async def test_ws_close_with_an_invalid_code_raises_and_a_valid_one_reaches_websockets() -> None:
    errors: list[BaseException] = []
    results: list[int] = []

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        for code in (2000, 1015, 1005, 999, 5000):
            try:
                results.append(ws.close(code, "bad"))
            except ValueError as exc:
                errors.append(exc)
        results.append(ws.close(4000, "app code"))

    handler = wsnest.handler_ws("/ws", on_message, textframes=True)
    async with running_server([handler]) as (_, url):

        def scenario() -> tuple[int | None, str | None]:
            with websockets.sync.client.connect(ws_url(url)) as c:
                c.send("close please")
                with pytest.raises(websockets.ConnectionClosed) as info:
                    c.recv(timeout=TIMEOUT)
            rcvd = info.value.rcvd
            return (rcvd.code, rcvd.reason) if rcvd else (None, None)

        assert await run_in_thread(scenario) == (4000, "app code")
    assert results == [0]
    assert [str(e) for e in errors] == [
        f"code: must be {RANGES_TEXT}, got {code}" for code in (2000, 1015, 1005, 999, 5000)
    ]


# -- item 14: memory bounded by the message, however it is cut --------------------

N = 1 << 15  # payload bytes: 32 KiB (the pure core under tracemalloc takes ~1 s per 32 Ki pieces)
BYTES_PER_BYTE = 3  # the bound; the old pure core held 8 (text) to 42 (binary)


def _fragment(first: int, byte: int) -> bytes:
    """A masked frame carrying the single payload byte ``byte``."""
    return bytes((first, 0x81)) + MASK + bytes((byte ^ MASK[0],))


def _fragments(kind: str) -> tuple[bytes, bytes, bytes]:
    """``(all fragments but the last, the last, the message)``: an N-byte
    message in N one-byte fragments. The text is "é" repeated, so every
    character is cut between two fragments."""
    opcode, a, b = (OP_TEXT, 0xC3, 0xA9) if kind == "text" else (OP_BINARY, 0x61, 0x62)
    pair = _fragment(OP_CONT, a) + _fragment(OP_CONT, b)
    head = _fragment(opcode, a) + _fragment(OP_CONT, b) + pair * (N // 2 - 2) + _fragment(OP_CONT, a)
    return head, _fragment(0x80 | OP_CONT, b), bytes((a, b)) * (N // 2)


@contextmanager
def _traced() -> Iterator[list[int]]:
    """Trace allocations in the block; yields a list that receives the
    bytes allocated and still held at its end."""
    result: list[int] = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        yield result
        result.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()


def _expected_event(kind: str, message: bytes) -> tuple[int, Any]:
    return (OP_TEXT, message.decode("utf-8")) if kind == "text" else (OP_BINARY, message)


@pytest.mark.parametrize("kind", ["binary", "text"])
def test_one_byte_fragments_cost_about_one_byte_per_byte(core: ModuleType, kind: str) -> None:
    head, last, message = _fragments(kind)
    parser = core.FrameParser(N)
    with _traced() as held:
        assert parser.feed(head) == []
    # At least the payload so far (the measure sees the buffer), at most a
    # few bytes per byte (no object per fragment).
    assert N - 1 <= held[0] < BYTES_PER_BYTE * N, held[0] / N
    assert parser.feed(last) == [_expected_event(kind, message)]


@pytest.mark.parametrize("kind", ["binary", "text"])
def test_one_frame_fed_a_byte_at_a_time_costs_about_one_byte_per_byte(core: ModuleType, kind: str) -> None:
    _, _, message = _fragments(kind)
    frame = memoryview(core.encode_frame(OP_TEXT if kind == "text" else OP_BINARY, message, mask=MASK))
    parser = core.FrameParser(N)
    with _traced() as held:
        for i in range(len(frame) - 1):
            assert parser.feed(frame[i : i + 1]) == []
    assert N - 1 <= held[0] < BYTES_PER_BYTE * N, held[0] / N
    assert parser.feed(frame[-1:]) == [_expected_event(kind, message)]


@pytest.mark.parametrize("kind", ["binary", "text"])
async def test_server_memory_for_one_byte_fragments_is_bounded(kind: str) -> None:
    # A real server and a real socket: the fragments arrive in whatever
    # reads TCP makes of them; a ping after them proves they were all parsed.
    head, last, message = _fragments(kind)
    async with running_server([echo_handler("/ws")], max_message_size=N) as (_, url), raw_ws(url) as c:
        with trio.fail_after(TIMEOUT), _traced() as held:
            await c.send(head + client_frame(OP_PING, b"parsed?"))
            assert await c.read_message() == (OP_PONG, b"parsed?")
        assert held[0] < BYTES_PER_BYTE * N, held[0] / N
        with trio.fail_after(TIMEOUT):
            await c.send(last)
            assert await c.read_message() == (OP_TEXT if kind == "text" else OP_BINARY, message)
            await c.send(close_frame(1000))
            assert await c.read_close() == (1000, "")


# -- the inflated-size check after the final flush, end to end -------------------


@pytest.mark.parametrize("over", [False, True])
async def test_deflated_message_whose_tail_inflates_past_the_limit_is_refused(over: bool) -> None:
    # The last inflated byte comes out of the 00 00 ff ff the server appends
    # (the payload ends with the header of a stored block of length 1).
    limit = 100
    data = b"d" * (limit if over else limit - 1)
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH) + b"\x00\x01\x00\xfe\xff"

    def on_message(ws: wsnest.WebSocket, message: bytes) -> None:
        ws.send(f"{len(message)} {message[-1]}")  # short: sent uncompressed

    handler = wsnest.handler_ws("/ws", on_message, textframes=None, permessage_deflate=True)
    offer = [("Sec-WebSocket-Extensions", "permessage-deflate")]
    async with running_server([handler], max_message_size=limit) as (_, url), raw_ws(url, extra=offer) as c:
        with trio.fail_after(TIMEOUT):
            await c.send(client_frame(OP_BINARY, payload, rsv=4))
            if over:
                assert await c.read_close() == (CLOSE_TOO_BIG, R_INFLATE_TOO_BIG)
            else:
                assert await c.read_message() == (OP_TEXT, b"100 0")
                await c.send(close_frame(1000))
                assert await c.read_close() == (1000, "")
