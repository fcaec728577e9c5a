"""Unit tests of ``wsnest.core._deflate`` (permessage-deflate, RFC 7692),
without sockets: offer parsing and negotiation, inflating and deflating.

The end-to-end behaviour with real clients is in ``test_ws_deflate.py``.
"""

from __future__ import annotations

import zlib

import pytest

from wsnest.core import CLOSE_INVALID_DATA, CLOSE_TOO_BIG
from wsnest.core._deflate import (
    MEM_LEVEL,
    R_INFLATE_BAD,
    R_INFLATE_TOO_BIG,
    SERVER_WINDOW_BITS,
    DeflateError,
    DeflateParams,
    Deflater,
    Inflater,
    negotiate,
    parse_extensions,
)

PMD = "permessage-deflate"

# -- negotiation -----------------------------------------------------------------

# (header values, response value or None for "declined")
NEGOTIATION = {
    "plain": ([PMD], PMD),
    "case-insensitive-name": (["PerMessage-Deflate"], PMD),
    "websockets-default": ([f"{PMD}; client_max_window_bits"], PMD),
    "client-bits-value": ([f"{PMD}; client_max_window_bits=10"], PMD),
    "client-bits-quoted": ([f'{PMD}; client_max_window_bits="9"'], PMD),
    "server-nct": ([f"{PMD}; server_no_context_takeover"], f"{PMD}; server_no_context_takeover"),
    "client-nct": ([f"{PMD}; client_no_context_takeover"], f"{PMD}; client_no_context_takeover"),
    "both-nct": (
        [f"{PMD}; client_no_context_takeover; server_no_context_takeover"],
        f"{PMD}; server_no_context_takeover; client_no_context_takeover",
    ),
    "param-case-insensitive": (
        ["permessage-deflate; Server_No_Context_Takeover"],
        f"{PMD}; server_no_context_takeover",
    ),
    **{
        f"server-bits-{bits}": ([f"{PMD}; server_max_window_bits={bits}"], f"{PMD}; server_max_window_bits={bits}")
        for bits in range(9, 16)
    },
    "server-bits-quoted": ([f'{PMD}; server_max_window_bits="10"'], f"{PMD}; server_max_window_bits=10"),
    "everything": (
        [
            f"{PMD}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11; "
            "client_max_window_bits=15"
        ],
        f"{PMD}; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=11",
    ),
    "whitespace": ([f"  {PMD} ;\tserver_max_window_bits = 10 ,"], f"{PMD}; server_max_window_bits=10"),
    "after-unknown-extension": (["x-webkit-deflate-frame, permessage-deflate"], PMD),
    "two-header-lines": (["foo; bar=1", f"{PMD}; client_no_context_takeover"], f"{PMD}; client_no_context_takeover"),
    "empty-list-elements": ([f", ,{PMD},"], PMD),
    "quoted-comma-in-other-offer": ([f'foo; x="a,b", {PMD}'], PMD),
    # The first acceptable offer wins; unacceptable ones are skipped.
    "first-of-two": (
        [f"{PMD}; server_max_window_bits=10, {PMD}"],
        f"{PMD}; server_max_window_bits=10",
    ),
    "fallback-after-8": ([f"{PMD}; server_max_window_bits=8, {PMD}; client_max_window_bits"], PMD),
    "fallback-after-unknown-param": (
        [f"{PMD}; foo, {PMD}; server_no_context_takeover"],
        f"{PMD}; server_no_context_takeover",
    ),
    "fallback-after-malformed": ([f"{PMD}; =, {PMD}"], PMD),
    # Declined.
    "none": ([], None),
    "empty": ([""], None),
    "other-extension": (["x-webkit-deflate-frame"], None),
    "prefix-name": (["permessage-deflated"], None),
    "server-bits-8": ([f"{PMD}; server_max_window_bits=8"], None),
    "server-bits-7": ([f"{PMD}; server_max_window_bits=7"], None),
    "server-bits-16": ([f"{PMD}; server_max_window_bits=16"], None),
    "server-bits-leading-zero": ([f"{PMD}; server_max_window_bits=09"], None),
    "server-bits-no-value": ([f"{PMD}; server_max_window_bits"], None),
    "server-bits-not-number": ([f"{PMD}; server_max_window_bits=abc"], None),
    "server-bits-signed": ([f"{PMD}; server_max_window_bits=+10"], None),
    "client-bits-7": ([f"{PMD}; client_max_window_bits=7"], None),
    "client-bits-16": ([f"{PMD}; client_max_window_bits=16"], None),
    "client-bits-empty-quoted": ([f'{PMD}; client_max_window_bits=""'], None),
    "nct-with-value": ([f"{PMD}; server_no_context_takeover=1"], None),
    "client-nct-with-value": ([f'{PMD}; client_no_context_takeover=""'], None),
    "unknown-param": ([f"{PMD}; foo"], None),
    "unknown-param-with-value": ([f"{PMD}; foo=bar"], None),
    "repeated-param": ([f"{PMD}; server_no_context_takeover; server_no_context_takeover"], None),
    "repeated-param-other-case": ([f"{PMD}; client_max_window_bits; CLIENT_MAX_WINDOW_BITS=9"], None),
    "repeated-bits": ([f"{PMD}; server_max_window_bits=10; server_max_window_bits=10"], None),
    "double-semicolon": ([f"{PMD};; server_no_context_takeover"], None),
    "trailing-semicolon": ([f"{PMD};"], None),
    "missing-value": ([f"{PMD}; server_max_window_bits="], None),
    "two-equals": ([f"{PMD}; server_max_window_bits==10"], None),
    "unterminated-quote": ([f'{PMD}; server_max_window_bits="10, {PMD}'], None),
    "params-first": (["; permessage-deflate"], None),
    "space-in-name": (["permessage deflate"], None),
    "garbage-bytes": (["permessage-deflate\x00\xff"], None),
    "non-ascii": (["permessage-deflaté"], None),
    "slash": (["permessage-deflate/1"], None),
}


@pytest.mark.parametrize(("values", "response"), list(NEGOTIATION.values()), ids=list(NEGOTIATION))
def test_negotiation_table(values: list[str], response: str | None) -> None:
    params = negotiate(values)
    if response is None:
        assert params is None
    else:
        assert params is not None
        assert params.response() == response


def test_negotiated_params() -> None:
    params = negotiate([f"{PMD}; server_no_context_takeover; server_max_window_bits=9"])
    assert params == DeflateParams(server_no_context_takeover=True, server_max_window_bits=9)
    assert params.window_bits == 9
    assert negotiate([PMD]) == DeflateParams()
    assert DeflateParams().window_bits == SERVER_WINDOW_BITS == 12
    assert DeflateParams(server_max_window_bits=15).window_bits == 12
    assert negotiate([f"{PMD}; client_no_context_takeover"]) == DeflateParams(client_no_context_takeover=True)


def test_parse_extensions() -> None:
    assert parse_extensions(['a; b=1; c="x\\"y", d', "e;f"]) == [
        ("a", [("b", "1"), ("c", 'x"y')]),
        ("d", []),
        ("e", [("f", None)]),
    ]
    assert parse_extensions(["a; b=", "x y", "ok"]) == [None, None, ("ok", [])]
    assert parse_extensions([""]) == []


@pytest.mark.parametrize("length", [0, 1, 10, 1000, 9000])
def test_negotiation_never_raises_on_junk(length: int) -> None:
    import random

    rng = random.Random(length)
    alphabet = 'permessage-deflate;,="\\ \t\x00\xffserver_max_window_bits0123456789'
    for _ in range(200):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, length)))
        params = negotiate([value])
        assert params is None or params.response().startswith(PMD)


# -- inflating -------------------------------------------------------------------


def client_compress(data: bytes, wbits: int = 15, z: zlib._Compress | None = None) -> bytes:
    """What a client sends: raw DEFLATE, sync flush, 00 00 ff ff stripped."""
    z = z or zlib.compressobj(6, zlib.DEFLATED, -wbits)
    out = z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH)
    assert out.endswith(b"\x00\x00\xff\xff")
    return out[:-4]


def test_rfc7692_examples() -> None:
    # Section 7.2.3.1: "Hello"; 7.2.3.2: sharing the window; 7.2.3.3: a
    # stored block; 7.2.3.4: BFINAL set.
    assert Inflater().decompress(bytes.fromhex("f248cdc9c90700"), None) == b"Hello"
    shared = Inflater()
    assert shared.decompress(bytes.fromhex("f248cdc9c90700"), None) == b"Hello"
    assert shared.decompress(bytes.fromhex("f200110000"), None) == b"Hello"
    assert Inflater().decompress(bytes.fromhex("000500faff48656c6c6f00"), None) == b"Hello"
    final = Inflater()
    assert final.decompress(bytes.fromhex("f348cdc9c9070000"), None) == b"Hello"
    assert final.decompress(bytes.fromhex("f348cdc9c9070000"), None) == b"Hello"  # a new stream each time
    assert Inflater().decompress(b"\x00", None) == b""  # an empty message


@pytest.mark.parametrize("wbits", [9, 12, 15])
def test_inflate_context_takeover(wbits: int) -> None:
    z = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    inflater = Inflater()
    for i in range(20):
        message = f"message {i} ".encode() * (i + 1) * 20
        assert inflater.decompress(client_compress(message, z=z), None) == message


def test_inflate_no_context_takeover_resets() -> None:
    message = b"the same message, repeated " * 10
    shared = zlib.compressobj(6, zlib.DEFLATED, -15)
    first, second = client_compress(message, z=shared), client_compress(message, z=shared)
    assert len(second) < len(first)  # refers back to the first message
    kept = Inflater(no_context_takeover=False)
    assert kept.decompress(first, None) == message
    assert kept.decompress(second, None) == message
    reset = Inflater(no_context_takeover=True)
    assert reset.decompress(first, None) == message
    with pytest.raises(DeflateError) as info:
        reset.decompress(second, None)  # its back-reference points into nothing
    assert (info.value.code, info.value.reason) == (CLOSE_INVALID_DATA, R_INFLATE_BAD)
    assert reset.decompress(client_compress(message), None) == message
    assert reset._z is None  # nothing kept between messages


@pytest.mark.parametrize("limit", [0, 1, 100, 1 << 20])
def test_inflate_limit_is_exact(limit: int) -> None:
    message = bytes(range(256)) * (limit // 256 + 1)
    exact, over = message[:limit], message[: limit + 1]
    assert Inflater().decompress(client_compress(exact), limit) == exact
    with pytest.raises(DeflateError) as info:
        Inflater().decompress(client_compress(over), limit)
    assert (info.value.code, info.value.reason) == (CLOSE_TOO_BIG, R_INFLATE_TOO_BIG)


def test_inflate_bomb_output_is_bounded() -> None:
    import tracemalloc

    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    bomb = b"".join(z.compress(chunk) for _ in range(64)) + z.flush(zlib.Z_SYNC_FLUSH)[:-4]
    assert len(bomb) < 100_000  # 64 MiB of zeros
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        with pytest.raises(DeflateError) as info:
            Inflater().decompress(bomb, 1 << 20)
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert info.value.code == CLOSE_TOO_BIG
    assert peak < 3 << 20, peak  # the 1 MiB limit (+1 byte) and zlib's state, not 64 MiB


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xff\xff\xff", b"\x07", b"\x00\x05\x00\x00\x00hello", bytes(range(200))],
    ids=["ff", "reserved-btype", "stored-length-mismatch", "noise"],
)
def test_inflate_corrupt(payload: bytes) -> None:
    with pytest.raises(DeflateError) as info:
        Inflater().decompress(payload, 1 << 20)
    assert (info.value.code, info.value.reason) == (CLOSE_INVALID_DATA, R_INFLATE_BAD)


# -- deflating -------------------------------------------------------------------


@pytest.mark.parametrize("window_bits", [9, 10, 12])
@pytest.mark.parametrize("reset", [False, True])
def test_deflate_round_trip(window_bits: int, reset: bool) -> None:
    deflater = Deflater(window_bits, no_context_takeover=reset)
    # The client inflates with the window it asked us to keep to.
    client = zlib.decompressobj(-window_bits)
    fresh_sizes = []
    for i in range(10):
        message = b'%d: some JSON-ish text {"a": 1, "b": [1, 2, 3]} ' % i * 30
        payload = deflater.compress(message)
        assert not payload.endswith(b"\x00\x00\xff\xff")
        if reset:
            client = zlib.decompressobj(-window_bits)  # a client that drops its context
        assert client.decompress(payload + b"\x00\x00\xff\xff") == message
        fresh_sizes.append(len(payload))
    if reset:
        assert deflater._z is None  # dropped between messages
    else:
        assert fresh_sizes[-1] < fresh_sizes[0]  # later messages refer back


def test_deflate_inputs_and_sizes() -> None:
    deflater, inflater = Deflater(), Inflater()
    for data in (b"", bytearray(b"abc" * 100), memoryview(b"xyz" * 1000), bytes(1 << 20)):
        payload = deflater.compress(data)
        assert type(payload) is bytes
        assert inflater.decompress(payload, None) == bytes(data)
    assert len(Deflater().compress(bytes(1 << 20))) < 8000  # about 230:1 at level 1


def test_memory_per_connection() -> None:
    """What the README states: about 39 KB for our compressor (12 window
    bits, memLevel 5) and 40 KB for the decompressor, once used; nothing
    before first use."""
    import tracemalloc

    assert (SERVER_WINDOW_BITS, MEM_LEVEL) == (12, 5)
    message = b"hello, compressed world " * 200
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        idle = [(Deflater(), Inflater()) for _ in range(50)]
        unused = (tracemalloc.get_traced_memory()[0] - base) / 50
        for deflater, inflater in idle:
            inflater.decompress(deflater.compress(message), None)
        used = (tracemalloc.get_traced_memory()[0] - base) / 50
    finally:
        tracemalloc.stop()
    assert unused < 1000, unused
    assert 60_000 < used < 100_000, used


def _message_ending_in_the_tail(data: bytes) -> bytes:
    """A compressed message whose last inflated byte comes out of the
    00 00 ff ff the receiver appends: ``data`` and a sync flush, then the
    header of a stored block of length 1 (RFC 1951 section 3.2.4). The
    appended tail's first byte is that block's content (a 0 byte), so the
    message inflates to ``data + b"\\x00"``."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    return z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH) + b"\x00\x01\x00\xfe\xff"


@pytest.mark.parametrize("limit", [1, 100, 1 << 20])
def test_inflate_limit_counts_the_bytes_inflated_from_the_tail(limit: int) -> None:
    # The check after the final flush: the first decompress stops one byte
    # short of the limit + 1, so only the tail can push the message over it.
    exact = bytes(range(256)) * (limit // 256) + bytes(limit % 256)
    assert len(exact) == limit
    payload = _message_ending_in_the_tail(exact[:-1])
    assert Inflater().decompress(payload, limit) == exact[:-1] + b"\x00"
    over = _message_ending_in_the_tail(exact)
    with pytest.raises(DeflateError) as info:
        Inflater().decompress(over, limit)
    assert (info.value.code, info.value.reason) == (CLOSE_TOO_BIG, R_INFLATE_TOO_BIG)
