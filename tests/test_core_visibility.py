"""Which core runs is never a secret: a pure core that nobody asked for
(the compiled twin failed to import, ``WSNEST_NO_EXTENSIONS`` unset) is
logged once per process when a server starts or a client connects, and
``python -m wsnest --info`` explains it under its ``core: pure`` line.

In process, the choice is simulated by setting ``CORE_FALLBACK``; in
subprocesses the compiled twin is really made unimportable (a
``sitecustomize`` that blocks ``wsnest.core._frames_c``)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import wsnest
from conftest import load_core
from serverutil import TIMEOUT, echo_handler, running_server, ws_url
from wsnest.core import _twin

PIP_HINT = "pip install --force-reinstall --no-binary wsnest wsnest"


@pytest.fixture
def fresh_notice(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """As if nothing had warned yet in this process (restored afterwards)."""
    monkeypatch.setattr(_twin, "_warned", False)
    yield


def notices(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "wsnest" and "pure-Python core" in r.getMessage()]


async def start_and_connect(times: int = 2) -> None:
    """Start a server, connect ``times`` clients to it (one echo each)."""
    async with running_server([echo_handler()]) as (_, url):
        for _ in range(times):
            with trio.fail_after(TIMEOUT):
                async with wsnest.connect(ws_url(url)) as ws:
                    ws.send("x")
                    assert await ws.receive() == "x"


def test_this_process_runs_the_core_it_was_asked_for() -> None:
    asked_pure = os.environ.get("WSNEST_NO_EXTENSIONS", "") not in ("", "0")
    if asked_pure:
        assert (wsnest.CORE, _twin.CORE_FALLBACK) == ("pure", False)
    elif _twin.CORE_FALLBACK:
        pytest.skip(f"compiled core not built: {_twin.CORE_FALLBACK_REASON}")
    else:
        assert wsnest.CORE == "compiled"
    assert bool(_twin.CORE_FALLBACK_REASON) == _twin.CORE_FALLBACK


async def test_no_warning_when_the_core_was_not_a_fallback(
    fresh_notice: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Compiled, or pure on purpose (WSNEST_NO_EXTENSIONS): nothing to say.
    monkeypatch.setattr(_twin, "CORE_FALLBACK", False)
    caplog.set_level(logging.INFO, logger="wsnest")
    await start_and_connect()
    assert notices(caplog) == []
    assert any("serving at" in r.getMessage() for r in caplog.records)  # the log was captured


async def test_one_warning_per_process_on_a_fallback(
    fresh_notice: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_twin, "CORE_FALLBACK", True)
    monkeypatch.setattr(_twin, "CORE_FALLBACK_REASON", "No module named 'wsnest.core._frames_c'")
    caplog.set_level(logging.WARNING, logger="wsnest")
    await start_and_connect()
    await start_and_connect()  # a second server, more clients: still one warning
    [record] = notices(caplog)
    assert record.levelno == logging.WARNING
    text = record.getMessage()
    assert PIP_HINT in text
    assert "C compiler" in text and "Python headers" in text
    assert "WSNEST_NO_EXTENSIONS=1" in text
    assert "No module named 'wsnest.core._frames_c'" in text


async def test_the_first_connect_warns_without_a_server(
    fresh_notice: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_server([echo_handler()]) as (_, url):
        monkeypatch.setattr(_twin, "CORE_FALLBACK", True)  # only after this process's server started
        caplog.set_level(logging.WARNING, logger="wsnest")
        for _ in range(2):
            with trio.fail_after(TIMEOUT):
                async with wsnest.connect(ws_url(url)) as ws:
                    ws.send("x")
                    assert await ws.receive() == "x"
    assert len(notices(caplog)) == 1


# -- a really missing compiled twin, in subprocesses -------------------------------

BLOCKER = "import sys\nsys.modules['wsnest.core._frames_c'] = None  # its import now fails\n"

SCRIPT = textwrap.dedent(
    """
    import trio
    import wsnest

    async def main():
        server = wsnest.http_server("http://127.0.0.1:0", [wsnest.handler_ws("/ws", lambda ws, d: ws.send(d))])
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.serve)
            for _ in range(2):
                async with wsnest.connect("ws" + url[4:] + "/ws") as ws:
                    ws.send(b"x")
                    assert await ws.receive() == b"x"
            await server.aclose()
        print("core:", wsnest.CORE)

    trio.run(main)
    """
)


def run_python(args: list[str], tmp_path: Path, block: bool, **env: str) -> subprocess.CompletedProcess[str]:
    """Run Python on this wsnest, with the compiled twin blocked if ``block``.

    The logging is left unconfigured, as in a user's script: a warning
    reaches stderr through logging's last-resort handler."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER if block else "")
    src = os.path.dirname(os.path.dirname(os.path.abspath(wsnest.__file__)))
    full = {k: v for k, v in os.environ.items() if k not in ("WSNEST_NO_EXTENSIONS", "WSNEST_REQUIRE_EXTENSIONS")}
    full["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), src, os.environ.get("PYTHONPATH")) if p)
    full.update(env)
    return subprocess.run(
        [sys.executable, *args],
        cwd=tmp_path,
        env=full,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_subprocess_missing_compiled_core_warns_once(tmp_path: Path) -> None:
    result = run_python(["-c", SCRIPT], tmp_path, block=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["core: pure"]
    assert result.stderr.count("pure-Python core") == 1, result.stderr
    assert PIP_HINT in result.stderr
    assert "import of wsnest.core._frames_c halted" in result.stderr  # the reason is shown


def test_subprocess_pure_on_purpose_is_quiet(tmp_path: Path) -> None:
    result = run_python(["-c", SCRIPT], tmp_path, block=True, WSNEST_NO_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["core: pure"]
    assert "pure-Python core" not in result.stderr, result.stderr


def test_subprocess_compiled_core_is_quiet(tmp_path: Path) -> None:
    load_core("compiled")  # skipped when it is not built (failed if it is required)
    result = run_python(["-c", SCRIPT], tmp_path, block=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["core: compiled"]
    assert result.stderr == "", result.stderr


def test_info_explains_a_missing_compiled_core(tmp_path: Path) -> None:
    result = run_python(["-m", "wsnest", "--info"], tmp_path, block=True)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == [f"wsnest {wsnest.__version__}", "core: pure", f"python: {sys.version.split()[0]}"]
    assert [ln for ln in lines if ln.startswith("core:")] == ["core: pure"]  # what CI matches
    assert any(PIP_HINT in ln for ln in lines[3:]), lines
    assert any("WSNEST_NO_EXTENSIONS=1" in ln for ln in lines[3:]), lines
    assert result.stderr == "", result.stderr  # --info starts nothing: no logged warning


def test_info_says_the_pure_core_was_asked_for(tmp_path: Path) -> None:
    result = run_python(["-m", "wsnest", "--info"], tmp_path, block=True, WSNEST_NO_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "core: pure"
    assert lines[3].startswith("poller: ")
    assert lines[4:] == [
        "note: the pure-Python core was chosen with WSNEST_NO_EXTENSIONS (the compiled core is not installed either)"
    ]
    assert PIP_HINT not in result.stdout


def test_info_says_the_compiled_core_is_there_when_pure_was_asked_for(tmp_path: Path) -> None:
    load_core("compiled")
    result = run_python(["-m", "wsnest", "--info"], tmp_path, block=False, WSNEST_NO_EXTENSIONS="1")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[3].startswith("poller: ")
    del lines[3]
    assert lines[1:] == [
        "core: pure",
        f"python: {sys.version.split()[0]}",
        "note: the pure-Python core was chosen with WSNEST_NO_EXTENSIONS (unset it to use the compiled core)",
    ]


def test_info_on_the_compiled_core_adds_nothing(tmp_path: Path) -> None:
    load_core("compiled")
    result = run_python(["-m", "wsnest", "--info"], tmp_path, block=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1:3] == ["core: compiled", f"python: {sys.version.split()[0]}"]
    assert len(lines) == 4 and lines[3].startswith("poller: ")
