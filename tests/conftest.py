"""Shared fixtures for the wsnest test suite."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

# The wire toolkit (client frames, masking, raw handshakes) is shared with the
# benchmarks and the soak: it lives in bench/wire.py, not in the wheel.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

# tests/ itself is on sys.path (pytest inserts the rootdir conftest's directory).
from _redis_server import RedisServer


def _extensions_required() -> bool:
    return os.environ.get("WSNEST_REQUIRE_EXTENSIONS", "") not in ("", "0")


def load_core(kind: str) -> ModuleType:
    """Return the ``"compiled"`` or ``"pure"`` WebSocket core module.

    The compiled twin is imported directly, bypassing the selector in
    ``wsnest.core``. When it is missing the calling test is skipped, or
    failed if ``WSNEST_REQUIRE_EXTENSIONS`` is set.
    """
    if kind == "pure":
        from wsnest.core import _frames_py

        return _frames_py
    try:
        from wsnest.core import _frames_c  # type: ignore[attr-defined]
    except ImportError as exc:
        error = exc
    else:
        return _frames_c
    if _extensions_required():
        pytest.fail(
            f"WSNEST_REQUIRE_EXTENSIONS is set but wsnest.core._frames_c cannot be imported: {error!r}",
            pytrace=False,
        )
    pytest.skip("compiled core not built")


@pytest.fixture(params=["compiled", "pure"], ids=["compiled", "pure"])
def core(request: pytest.FixtureRequest) -> ModuleType:
    """Each WebSocket core in turn: the Cython twin, then the pure-Python one."""
    return load_core(request.param)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port (tests/_redis_server.py),
    stopped afterwards; skipped if redis-server is missing (failed under CI)."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()
