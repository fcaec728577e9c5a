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
from types import ModuleType
from typing import Any

import pytest
import websockets
import websockets.sync.client

import wsnest
from serverutil import (
    MASK,
    TIMEOUT,
    run_in_thread,
    running_server,
    ws_url,
)
from wsnest.core import CLOSE_CODE_RANGES, OP_CLOSE, close_payload

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
