"""Regression tests for the fuzz harnesses in ``fuzz/``.

The fuzzing campaigns (``fuzz/README.md``) found no crash, leak or
divergence, so there is no input-specific regression here yet; a finding
gets its own test below, with the input bytes inline. What these tests keep
valid:

- the seed corpus: every RFC 6455 edge case of ``tests/test_core.py`` is a
  core seed, byte for byte with the same parser options, and every core and
  HTTP seed replays through the harness checks (compiled vs pure core, HTTP
  invariants) without a failure;
- the harness itself: its atheris-free input reader agrees with atheris'
  ``FuzzedDataProvider``, and the differential check does report a
  divergence when the twins disagree.

No atheris needed, except for the reader test: it is skipped without
atheris, or fails when ``WSNEST_REQUIRE_ATHERIS`` is set (as in CI, where
``.ci/run`` installs atheris before the test runs). Well under 5 s.
"""

from __future__ import annotations

import os
import random
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from conftest import load_core

FUZZ_DIR = Path(__file__).resolve().parent.parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))

import _harness  # noqa: E402
import fuzz_core  # noqa: E402
import fuzz_http  # noqa: E402
import make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def cores() -> tuple[ModuleType, ModuleType]:
    """Both twins, loaded into the harness (skipped without the compiled one)."""
    compiled = load_core("compiled")
    pure = load_core("pure")
    fuzz_core.load(None)
    assert fuzz_core.C is compiled and fuzz_core.P is pure
    return compiled, pure


def _atheris() -> ModuleType:
    """atheris, or skip (fail under ``WSNEST_REQUIRE_ATHERIS=1``)."""
    try:
        import atheris
    except ImportError as exc:
        if os.environ.get("WSNEST_REQUIRE_ATHERIS", "") not in ("", "0"):
            pytest.fail(f"WSNEST_REQUIRE_ATHERIS is set but atheris cannot be imported: {exc!r}", pytrace=False)
        pytest.skip(f"atheris is not importable ({exc}; pip install atheris)")
    return atheris


def _key(stream: bytes, kwargs: dict[str, Any]) -> tuple[bytes, tuple[tuple[str, Any], ...]]:
    return stream, tuple(sorted(kwargs.items()))


def test_every_test_core_edge_case_is_a_seed() -> None:
    import test_core

    seeds = {_key(stream, kwargs) for _name, stream, kwargs in make_corpus.core_cases()}
    missing = [c.id for c in test_core.EDGE_CASES if _key(c.values[0], c.values[1]) not in seeds]
    assert not missing, f"edge cases of tests/test_core.py missing from fuzz/make_corpus.py: {missing}"
    chunk_kwargs = {"max_message_size": 200}
    missing = [c.id for c in test_core.CHUNK_STREAMS if _key(c.values[0], chunk_kwargs) not in seeds]
    assert not missing, f"chunking streams of tests/test_core.py missing from fuzz/make_corpus.py: {missing}"


def test_core_seeds_decode_to_their_cases() -> None:
    """A raw-mode seed carries its stream and parser options through the trailer."""
    for name, stream, kwargs in make_corpus.core_cases()[:40]:
        for split_mode in (_harness.SPLIT_WHOLE, _harness.SPLIT_BYTEWISE):
            seed = make_corpus.core_seed(stream, kwargs, split_mode, kind=make_corpus.KIND_BYTEARRAY)
            reader = _harness.TailReader(seed)
            assert reader.byte() & 7 == fuzz_core.MODE_RAW
            got_stream, got_kwargs, chunks, kind = fuzz_core.decode_parser_input(reader, fuzz_core.MODE_RAW)
            assert (got_stream, got_kwargs, kind) == (stream, kwargs, "bytearray"), name
            assert b"".join(chunks) == stream
            if split_mode == _harness.SPLIT_BYTEWISE and stream:
                assert max(len(c) for c in chunks[:-1] or [b"x"]) == 1


def test_core_seeds_replay(cores: tuple[ModuleType, ModuleType]) -> None:
    seeds = make_corpus.core_seeds()
    assert len(seeds) > 500
    for name, data in seeds.items():
        try:
            fuzz_core.check_input(data)
        except AssertionError as exc:
            pytest.fail(f"core seed {name}: {exc}")


def test_http_seeds_replay() -> None:
    seeds = make_corpus.http_seeds()
    assert len(seeds) > 100
    for name, data in seeds.items():
        try:
            fuzz_http.check_input(data)
        except AssertionError as exc:
            pytest.fail(f"http seed {name}: {exc}")


def test_harness_strided_view_no_false_split_report(cores: tuple[ModuleType, ModuleType]) -> None:
    """Harness regression (not a wsnest bug): a strided memoryview shows the
    parsers every other byte of each chunk, so the split-invariance check
    (whole stream fed as bytes) must not run for it. Found by fuzz_core under
    ASan: structured mode, max_message_size=0, input type "odd" -> strided
    view, chunks of 2 bytes; it used to be reported as "events depend on the
    split"."""
    data = bytes.fromhex("09fe000100000101fe00f35d")
    fuzz_core.check_input(data)
    reader = _harness.TailReader(data)
    assert reader.byte() & 7 == fuzz_core.MODE_STRUCTURED_CUT
    stream, kwargs, chunks, kind = fuzz_core.decode_parser_input(reader, fuzz_core.MODE_STRUCTURED_CUT)
    # Its options byte (0xf3) has bit 7 set, which now also turns deflate on
    # (ignored before): the strided-view path it guards is the same.
    assert kind == "memoryview-strided" and kwargs == {"max_message_size": 0, "deflate": True}
    assert [len(c) for c in chunks] == [2] * 5 and len(stream) == 10


def test_split_helper() -> None:
    stream = bytes(range(10))
    assert _harness.split(stream, _harness.SPLIT_WHOLE, []) == [stream]
    assert _harness.split(stream, _harness.SPLIT_BYTEWISE, []) == [bytes([i]) for i in range(10)]
    assert _harness.split(stream, _harness.SPLIT_FIXED, [4]) == [stream[:4], stream[4:8], stream[8:]]
    assert _harness.split(stream, _harness.SPLIT_PATTERN, [3, 0]) == [
        stream[:3],
        b"",
        stream[3:6],
        b"",
        stream[6:9],
        b"",
        stream[9:],
    ]
    assert _harness.split(stream, _harness.SPLIT_PATTERN, [0, 0]) == [b"", stream, b""]
    long = bytes(1000)
    chunks = _harness.split(long, _harness.SPLIT_BYTEWISE, [])
    assert len(chunks) == _harness.MAX_CHUNKS and b"".join(chunks) == long


def test_tail_reader_matches_fuzzed_data_provider() -> None:
    atheris = _atheris()
    rng = random.Random(1234)
    for _ in range(2000):
        data = rng.randbytes(rng.randint(0, 12))
        calls = rng.randint(0, 14)
        ours = _harness.TailReader(data)
        theirs = _harness.make_reader(data, atheris)
        assert [ours.byte() for _ in range(calls)] == [theirs.byte() for _ in range(calls)]
        assert ours.rest() == theirs.rest()


def test_missing_atheris_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without atheris the reader test skips, or fails under WSNEST_REQUIRE_ATHERIS=1."""
    monkeypatch.setitem(sys.modules, "atheris", None)  # import atheris -> ImportError
    monkeypatch.setenv("WSNEST_REQUIRE_ATHERIS", "1")
    with pytest.raises(pytest.fail.Exception, match="WSNEST_REQUIRE_ATHERIS is set but atheris cannot be imported"):
        _atheris()
    monkeypatch.setenv("WSNEST_REQUIRE_ATHERIS", "0")
    with pytest.raises(pytest.skip.Exception, match="atheris is not importable"):
        _atheris()


class _DroppingParser:
    """A "compiled core" whose parser loses the last event of every feed."""

    def __init__(self, real: Any) -> None:
        self._real = real

    @property
    def finished(self) -> bool:
        return bool(self._real.finished)

    def feed(self, data: Any) -> list[Any]:
        return list(self._real.feed(data))[:-1]


def test_differential_reports_a_divergence(
    cores: tuple[ModuleType, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled, _pure = cores
    broken = SimpleNamespace(__name__="broken", FrameParser=lambda **kw: _DroppingParser(compiled.FrameParser(**kw)))
    monkeypatch.setattr(fuzz_core, "C", broken)
    stream = make_corpus.text("hello") + make_corpus.frame(fuzz_core.OP_PING, b"p")
    with pytest.raises(AssertionError, match="compiled and pure cores differ"):
        fuzz_core.check_parser(stream, {}, [stream], "bytes")


def test_differential_reports_a_type_difference(
    cores: tuple[ModuleType, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``b"x" == bytearray(b"x")``: the harness compares exact types too."""
    compiled, _pure = cores

    class _ByteArrayEvents(_DroppingParser):
        def feed(self, data: Any) -> list[Any]:
            return [(e[0], bytearray(e[1]), *e[2:]) if isinstance(e[1], bytes) else e for e in self._real.feed(data)]

    broken = SimpleNamespace(__name__="broken", FrameParser=lambda **kw: _ByteArrayEvents(compiled.FrameParser(**kw)))
    monkeypatch.setattr(fuzz_core, "C", broken)
    stream = make_corpus.frame(fuzz_core.OP_BINARY, b"abc")
    with pytest.raises(AssertionError, match="differ"):
        fuzz_core.check_parser(stream, {}, [stream], "bytes")


def test_client_role_seeds_decode_to_client_parsers(cores: tuple[ModuleType, ModuleType]) -> None:
    """The ROLE_CLIENT bit of the mode byte makes client-role parsers
    (``masked=False``); without it the parsers stay servers."""
    _compiled, pure = cores
    for name, stream, kwargs in make_corpus.client_role_cases():
        seed = make_corpus.core_seed(stream, kwargs, mode=fuzz_core.MODE_RAW | fuzz_core.ROLE_CLIENT)
        reader = _harness.TailReader(seed)
        first = reader.byte()
        assert first & 7 == fuzz_core.MODE_RAW and first & fuzz_core.ROLE_CLIENT
        got_stream, got_kwargs, _chunks, _kind = fuzz_core.decode_parser_input(reader, first & 7, client=True)
        assert (got_stream, got_kwargs) == (stream, {**kwargs, "masked": False}), name
        events = pure.FrameParser(**got_kwargs).feed(stream)
        masked_fail = (-1, 1002, "masked frame from server")
        assert (events[-1] == masked_fail) == ("masked" in name), (name, events)
    server_seed = make_corpus.core_seed(b"", {})
    reader = _harness.TailReader(server_seed)
    assert not reader.byte() & fuzz_core.ROLE_CLIENT
    assert "masked" not in fuzz_core.decode_parser_input(reader, fuzz_core.MODE_RAW)[1]


def test_structured_program_in_both_roles(cores: tuple[ModuleType, ModuleType]) -> None:
    """One structured program gives the same frames in both roles, masked
    for a server and unmasked for a client; high nibble 14 is the wrong kind."""
    _compiled, pure = cores
    program = bytes([0x08, 0x03]) + b"abc" + b"\x00" + make_corpus.MASK + bytes([0x02, 0x02]) + b"de\x00" + b"\x01" * 4
    expected = [(fuzz_core.OP_TEXT, "abcde")]
    server = fuzz_core.build_stream(program)
    client = fuzz_core.build_stream(program, client=True)
    assert len(server) == len(client) + 8  # two masking keys
    assert pure.FrameParser().feed(server) == expected
    assert pure.FrameParser(masked=False).feed(client) == expected
    wrong = bytes([0xE1, 0x01]) + b"!" + b"\x00"
    assert pure.FrameParser().feed(fuzz_core.build_stream(wrong)) == [(-1, 1002, "frame not masked")]
    assert pure.FrameParser(masked=False).feed(fuzz_core.build_stream(wrong, client=True)) == [
        (-1, 1002, "masked frame from server")
    ]
    for stream, kwargs in ((server, {}), (client, {"masked": False})):
        fuzz_core.check_parser(stream, kwargs, [stream[:3], stream[3:]], "bytearray")
