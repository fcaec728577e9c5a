"""The compiled core's C kernels (``src/wsnest/core/_kernels.h``) and their harness.

The kernels are plain C in a header of their own, included by
``_frames_c.pyx`` and by the libFuzzer harness ``fuzz/kernels_fuzz.c``.
These tests keep that arrangement honest without libFuzzer: the header is
clean (each macro defined once), the .pyx carries no C of its own, and the
harness, built with the system C compiler as its standalone driver, passes
on the real kernels and fails on a copy with a planted bug (so a green run
means something). A few seconds in all.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "src" / "wsnest" / "core"
HEADER = CORE / "_kernels.h"
HARNESS = ROOT / "fuzz" / "kernels_fuzz.c"

# Mode 1 (the DFA on the raw payload), zero mask, offset 0, then ED A0 80:
# a UTF-16 surrogate, invalid at its second byte.
SURROGATE_INPUT = b"\x01" + b"\x00" * 4 + b"\x00" + b"\xed\xa0\x80"


def _compiler() -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler on PATH (the compiled core cannot be built here either)")
    return cc


def _build(tmp_path: Path, include: Path) -> Path:
    exe = tmp_path / "kernels_fuzz_standalone"
    cmd = [_compiler(), "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{include}", "-DWSN_STANDALONE"]
    subprocess.run([*cmd, "-o", str(exe), str(HARNESS)], check=True, capture_output=True, timeout=120)
    return exe


def _run(exe: Path, seconds: int, *inputs: Path) -> subprocess.CompletedProcess[str]:
    env = {"WSN_SECONDS": str(seconds), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(exe), *map(str, inputs)], env=env, capture_output=True, text=True, timeout=60)


def test_header_defines_each_macro_once() -> None:
    # Alternatives under #if / #else (WSN_RESTRICT) differ; a repeated
    # identical definition is the leftover this guards against.
    defines = re.findall(r"^\s*#\s*define\s+(.+?)\s*$", HEADER.read_text(), flags=re.M)
    twice = sorted(line for line, count in Counter(defines).items() if count > 1)
    assert defines and twice == []


def test_pyx_includes_the_header_and_holds_no_c() -> None:
    pyx = (CORE / "_frames_c.pyx").read_text()
    assert 'cdef extern from "_kernels.h":' in pyx
    assert "cdef extern from *" not in pyx
    assert "#define" not in pyx


def test_harness_passes_on_the_kernels(tmp_path: Path) -> None:
    exe = _build(tmp_path, CORE)
    seed = tmp_path / "surrogate"
    seed.write_bytes(SURROGATE_INPUT)
    result = _run(exe, 1, seed)
    assert result.returncode == 0, result.stderr
    assert "no failure" in result.stdout


def test_harness_catches_a_planted_dfa_bug(tmp_path: Path) -> None:
    # The DFA row for ED lets A0 through: ED A0 80 (a surrogate) would pass.
    good = "if (b >= 0x80 && b <= 0x9F) row |= (uint64_t)WSN_U_T1 << WSN_U_ED;"
    bad = "if (b >= 0x80 && b <= 0xA0) row |= (uint64_t)WSN_U_T1 << WSN_U_ED;"
    text = HEADER.read_text()
    assert text.count(good) == 1
    (tmp_path / "_kernels.h").write_text(text.replace(good, bad))
    exe = _build(tmp_path, tmp_path)
    seed = tmp_path / "surrogate"
    seed.write_bytes(SURROGATE_INPUT)
    result = _run(exe, 0, seed)
    assert result.returncode != 0
    assert "UTF-8 DFA state" in result.stderr
