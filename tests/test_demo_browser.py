"""The demo page (``python -m wsnest``) in a real headless Chromium.

The demo runs as a subprocess; Debian's ``chromium`` is driven by the
Playwright Python package (no browser download: ``executable_path`` points
at ``/usr/bin/chromium``). Without a browser or Playwright the test skips,
or fails when ``WSNEST_REQUIRE_BROWSER=1`` (as in CI, where
``ci/install-browser.sh`` installs both).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

import wsnest
from _redis_server import RedisServer
from redisutil import wait_numsub

CHROMIUM = os.environ.get("WSNEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = "/tmp/wsnest-demo.png"
SCREENSHOT_WORKERS = "/tmp/wsnest-demo-workers.png"
SCREENSHOT_REDIS = "/tmp/wsnest-demo-redis.png"
STARTUP_TIMEOUT = 15.0
SERVING = re.compile(r"^Serving at (http://\S+) - press Ctrl\+C to stop$")
TIME = re.compile(r"^\d\d:\d\d:\d\d$")
SPARK_PATH = re.compile(r"^M[\d.]+,[\d.]+(L[\d.]+,[\d.]+)+$")


def _require_browser() -> Any:
    """Playwright's sync API, or skip (fail under WSNEST_REQUIRE_BROWSER=1)."""
    problems = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        problems.append(f"{CHROMIUM} not found (apt-get install chromium, or run ci/install-browser.sh)")
    try:
        from playwright import sync_api
    except ImportError as exc:
        sync_api = None
        problems.append(f"playwright is not importable ({exc}; pip install playwright)")
    if problems:
        msg = "browser test needs: " + "; ".join(problems)
        if os.environ.get("WSNEST_REQUIRE_BROWSER", "") not in ("", "0"):
            pytest.fail(f"WSNEST_REQUIRE_BROWSER is set but {msg}", pytrace=False)
        pytest.skip(msg)
    return sync_api


def _read_startup_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The server URL from the first stdout line (read in a thread so a
    server that never prints cannot hang the test)."""
    assert proc.stdout is not None
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout)
    line = box[0].strip() if box else ""
    match = SERVING.match(line)
    if not match:
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise AssertionError(f"no startup line within {timeout}s: stdout={line!r} stderr={err!r}")
    return match.group(1)


@contextmanager
def _demo(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m wsnest --port 0 --log-level warning *args`` and its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "wsnest", "--port", "0", "--log-level", "warning", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = _read_startup_line(proc, STARTUP_TIMEOUT)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


@pytest.fixture
def demo_server() -> Iterator[tuple[subprocess.Popen[str], str]]:
    with _demo() as served:
        yield served


def _stop_with_sigint(proc: subprocess.Popen[str]) -> None:
    """Ctrl+C stops the demo cleanly: exit 0, no traceback."""
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=8)
    except subprocess.TimeoutExpired:
        pytest.fail("the demo did not stop within 8 s of SIGINT")
    _, err = proc.communicate(timeout=5)
    assert rc == 0, f"exit code {rc}, stderr: {err}"
    assert "Traceback" not in err, err


def test_demo_chat_and_clock_in_chromium(demo_server: tuple[subprocess.Popen[str], str]) -> None:
    sync_api = _require_browser()
    expect = sync_api.expect
    proc, url = demo_server
    assert url.startswith("http://127.0.0.1:")

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000)
        try:
            context = browser.new_context(viewport={"width": 900, "height": 700})
            context.set_default_timeout(10_000)
            a = context.new_page()
            b = context.new_page()
            console: list[str] = []
            failed: list[str] = []
            for page in (a, b):
                page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
                response = page.goto(url + "/")
                assert response is not None and response.status == 200
                assert "text/html" in response.headers["content-type"]
            expect(a).to_have_title("wsnest demo")
            for page in (a, b):
                expect(page.locator("#status")).to_have_text("connected")

            # A says something: both A and B see it.
            a.fill("#text", "hello from A")
            a.press("#text", "Enter")
            for page in (a, b):
                expect(page.locator("#log p", has_text="hello from A")).to_have_count(1)
            line_a = b.locator("#log p", has_text="hello from A").inner_text()
            assert re.fullmatch(r"user \d+: hello from A", line_a), line_a
            expect(a.locator("#text")).to_have_value("")

            # B answers with the Send button: A sees it, attributed to another user.
            b.fill("#text", "hi A, this is B")
            b.click("button")
            for page in (a, b):
                expect(page.locator("#log p", has_text="hi A, this is B")).to_have_count(1)
            line_b = a.locator("#log p", has_text="hi A, this is B").inner_text()
            assert re.fullmatch(r"user \d+: hi A, this is B", line_b), line_b
            assert line_a.split(":")[0] != line_b.split(":")[0], (line_a, line_b)
            # Each page's first line names its user; A saw B join after A itself.
            expect(a.locator("#log p").first).to_have_text(re.compile(r"^\* you are user \d+$"))
            expect(a.locator("#log p", has_text=re.compile(r"^\* user \d+ joined$"))).to_have_count(2)

            # The SSE clock: from "(waiting)" to HH:MM:SS, then it ticks.
            clock = a.locator("#clock")
            expect(clock).not_to_have_text("(waiting)", timeout=5_000)
            expect(clock).to_have_text(TIME)
            first = clock.inner_text()
            expect(clock).not_to_have_text(first, timeout=3_500)
            expect(clock).to_have_text(TIME)

            # The panel: this server's core, both pages' WebSockets, a single process.
            expect(a.locator("#panel")).to_be_visible(timeout=5_000)
            expect(a.locator("#core")).to_have_text(wsnest.CORE)
            expect(a.locator("#n-ws")).to_have_text("2")
            expect(a.locator("#n-stream")).to_have_text("2")  # each page's /events
            expect(a.locator("#served")).to_have_text(re.compile(r"^single process \(pid \d+\)$"))
            assert int(a.locator("#n-req").inner_text()) >= 2  # both pages
            expect(a.locator(".note")).to_have_count(0)
            # messages/s: B chats; the next event's rate is above zero (shown for
            # about a second, so poll often rather than on Playwright's backoff).
            b.fill("#text", "counting")
            b.press("#text", "Enter")
            a.wait_for_function(
                "() => parseFloat(document.getElementById('n-rate').textContent) > 0", polling=50, timeout=5_000
            )
            # The sparkline: a path through at least two of the last 60 s.
            expect(a.locator("#spark-line")).to_have_attribute("d", SPARK_PATH)

            a.screenshot(path=SCREENSHOT, full_page=True)
            assert os.path.getsize(SCREENSHOT) > 1000
            # The demo has no favicon: the browser's automatic /favicon.ico request is the only 404.
            assert all(f.endswith("/favicon.ico") for f in failed), failed
            errors = [m for m in console if m.startswith(("error", "pageerror")) and "Failed to load resource" not in m]
            assert not errors, console

            # B leaves: A is told.
            b.close()
            expect(a.locator("#log p", has_text=re.compile(r"^\* user \d+ left$"))).to_have_count(1)
        finally:
            browser.close()

    _stop_with_sigint(proc)


def test_demo_with_two_workers_in_chromium() -> None:
    """Under --workers 2 the page names its worker, the panel counts the
    WebSockets of both workers, and Ctrl+C stops them all."""
    sync_api = _require_browser()
    expect = sync_api.expect
    pages_open = 4  # the kernel spreads them over the workers; the total is what counts
    with _demo("--workers", "2") as (proc, url), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000)
        try:
            context = browser.new_context(viewport={"width": 900, "height": 700})
            context.set_default_timeout(10_000)
            pages = [context.new_page() for _ in range(pages_open)]
            console: list[str] = []
            for page in pages:
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                response = page.goto(url + "/")
                assert response is not None and response.status == 200
            for page in pages:
                expect(page.locator("#status")).to_have_text("connected")
                expect(page.locator("#served")).to_have_text(re.compile(r"^served by worker [12] of 2 \(pid \d+\)$"))
                expect(page.locator(".note")).to_contain_text("same worker")
            # Every worker publishes its numbers twice a second: the total arrives.
            expect(pages[0].locator("#n-ws")).to_have_text(str(pages_open), timeout=8_000)
            expect(pages[0].locator("#core")).to_have_text(wsnest.CORE)
            pages[0].screenshot(path=SCREENSHOT_WORKERS, full_page=True)
            assert not console, console
        finally:
            browser.close()
        _stop_with_sigint(proc)


WELCOME = re.compile(r"^\* you are (user \d+\.\d+), on worker ([12]) of 2$")
MAX_PAGES = 30


def test_demo_chat_across_workers_through_redis_in_chromium(redis_server: RedisServer) -> None:
    """``--workers 2 --redis URL``: two pages whose chat WebSockets are on
    different workers (each page's first chat line names its worker: the
    page itself may have come from the other one) see each other's lines."""
    sync_api = _require_browser()
    expect = sync_api.expect
    with _demo("--workers", "2", "--redis", redis_server.url) as (proc, url), sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=30_000)
        try:
            context = browser.new_context(viewport={"width": 900, "height": 700})
            context.set_default_timeout(10_000)
            console: list[str] = []
            by_worker: dict[str, tuple[Any, str]] = {}
            for _ in range(MAX_PAGES):  # the kernel spreads connections over the workers
                page = context.new_page()
                page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
                response = page.goto(url + "/")
                assert response is not None and response.status == 200
                expect(page.locator(".note")).to_contain_text("chat reaches every worker")
                expect(page.locator(".note")).to_contain_text("through Redis")
                welcome = page.locator("#log p").first
                expect(welcome).to_have_text(WELCOME)
                match = WELCOME.match(welcome.inner_text())
                assert match
                if match.group(2) in by_worker:
                    # Closed: each open page holds its /events stream, and
                    # Chromium opens at most 6 connections per host, so a
                    # seventh page would never load.
                    page.close()
                    continue
                by_worker[match.group(2)] = (page, match.group(1))
                if len(by_worker) == 2:
                    break
            assert len(by_worker) == 2, f"{MAX_PAGES} pages, all chatting on one worker"
            (a, name_a), (b, name_b) = by_worker["1"], by_worker["2"]
            assert name_a != name_b
            # Both workers follow the group before anyone speaks (a line published
            # before a worker subscribed would not reach it: at most once).
            wait_numsub(redis_server.port, "wsnest:group:chat", 2)

            a.fill("#text", "hello from worker 1")
            a.press("#text", "Enter")
            for page in (a, b):
                expect(page.locator("#log p", has_text="hello from worker 1")).to_have_text(
                    f"{name_a}: hello from worker 1"
                )
            b.fill("#text", "worker 2 here")
            b.click("button")
            for page in (a, b):
                expect(page.locator("#log p", has_text="worker 2 here")).to_have_text(f"{name_b}: worker 2 here")
            # B leaves: A, on the other worker, is told.
            b.close()
            expect(a.locator("#log p", has_text=f"* {name_b} left")).to_have_count(1)
            a.screenshot(path=SCREENSHOT_REDIS, full_page=True)
            assert not console, console
        finally:
            browser.close()
        _stop_with_sigint(proc)


def test_browser_requirement_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a browser the test skips, or fails loudly under WSNEST_REQUIRE_BROWSER=1."""
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("WSNEST_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match=r"WSNEST_REQUIRE_BROWSER is set but .*/nonexistent/chromium"):
        _require_browser()
    monkeypatch.delenv("WSNEST_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception, match="/nonexistent/chromium"):
        _require_browser()
    # Playwright missing (an import of a module set to None raises ImportError).
    monkeypatch.setitem(sys.modules, "playwright", None)
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    with pytest.raises(pytest.skip.Exception, match="playwright is not importable"):
        _require_browser()
    monkeypatch.setenv("WSNEST_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="playwright is not importable"):
        _require_browser()
