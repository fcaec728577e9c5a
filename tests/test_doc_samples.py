"""Every ```python block of README.md and docs/*.md is checked here.

A block is chosen by the HTML comment on the line before its fence (the
comment is invisible on GitHub and on the MkDocs site):

- no comment, or ``<!-- sample: run -->``: the block is a program. It runs
  as a module with the names of ``_preset()`` already defined (``wsnest``,
  ``trio``, ``handlers``, ``on_message``, ...), so a fragment may use them.
  ``wsnest.http_server()`` listens on a free loopback port whatever port
  the block names, and ``HttpServer.run()`` does not block: it serves,
  sends one request to every route (a GET for HTTP routes, a WebSocket
  open and close for ``handler_ws`` routes; any answer below 500 is fine)
  and closes the server.
- ``<!-- sample: async -->``: the block is the body of an async function
  run inside trio (top-level ``await`` and ``async with``). Besides the
  preset names it gets ``url``, the ``ws://`` URL of a running echo server
  that greets each connection with one message (``"welcome"``) and then
  echoes, ``server``, a built server that is not started, and ``stream``,
  one end of an in-memory trio stream. ``url="LITERAL"`` in the comment
  replaces that literal in the block by the echo server's URL. When the
  block waits and every task is blocked, the harness closes its servers
  (1001), so a block looping until the peer closes ends; one still waiting
  after that fails.
- ``<!-- sample: compile-only -->``: compiled, not run (say why beside it).

In every mode an error logged by wsnest (a callback that raised) fails the
block. Loopback only.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import re
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import trio
import trio.testing

import wsnest
from wsnest.handlers import WebSocketHandler

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
TIMEOUT = 10  # a bound for anything that could hang; each block takes milliseconds

_FENCE = re.compile(r"^```python\s*$")
_MARKER = re.compile(r"^<!--\s*sample:\s*(?P<mode>[a-z-]+)(?P<args>.*?)-->\s*$")
_MODES = ("run", "async", "compile-only")


@dataclass
class Sample:
    path: Path
    line: int  # of the fence, 1-based
    mode: str
    args: dict[str, str]
    code: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _samples(path: Path) -> Iterator[Sample]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if not _FENCE.match(lines[i]):
            i += 1
            continue
        start = i
        mode, args = "run", {}
        marker = _MARKER.match(lines[i - 1].strip()) if i else None
        if marker:
            mode = marker["mode"]
            args = dict(re.findall(r'(\w+)="([^"]*)"', marker["args"]))
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        yield Sample(path, start + 1, mode, args, "\n".join(body) + "\n")
        i += 1


SAMPLES = [s for path in SOURCES for s in _samples(path)]


# -- the names a block may use without defining them ----------------------------


class _Sink:
    """A ``sink`` that keeps whatever is written to it (str or bytes)."""

    def __init__(self) -> None:
        self.parts: list[str | bytes] = []

    def write(self, piece: str | bytes) -> None:
        self.parts.append(piece)


async def _chunks() -> Any:
    for piece in ("one message ", "in ", "three chunks"):
        yield piece


def _echo(ws: wsnest.WebSocket, data: Any) -> None:
    ws.send(data)


def _preset() -> dict[str, Any]:
    return {
        "__name__": "__sample__",
        "wsnest": wsnest,
        "trio": trio,
        "functools": functools,
        "on_message": _echo,
        "on_open": lambda ws, req: None,
        "on_close": lambda ws: None,
        "left": lambda ws: None,
        "handlers": [wsnest.handler_ws("/ws", _echo, textframes=None)],
        "sink": _Sink(),
        "chunks": _chunks,
    }


# -- probing a served server ----------------------------------------------------


def _probe_tls() -> ssl.SSLContext:
    # The samples' certificates are self-signed for 127.0.0.1: the probe only
    # checks that the routes answer, not who answers.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def _http_status(url: str, path: str) -> int:
    parts = urlsplit(url)
    stream: trio.abc.Stream = await trio.open_tcp_stream(parts.hostname or "127.0.0.1", parts.port or 80)
    if parts.scheme == "https":
        stream = trio.SSLStream(stream, _probe_tls(), server_hostname=parts.hostname)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
        head = b""
        while b"\r\n" not in head:
            chunk = await stream.receive_some(4096)
            assert chunk, f"GET {path}: connection closed without a status line"
            head += chunk
    return int(head.split(b" ", 2)[1])


async def _probe(server: wsnest.HttpServer, url: str) -> None:
    ws_base = url.replace("http", "ws", 1)
    for route in server._router.handlers:
        path = route.path  # type: ignore[attr-defined]
        if isinstance(route, WebSocketHandler):
            tls = _probe_tls() if ws_base.startswith("wss") else None
            try:
                async with wsnest.connect(ws_base + path, tls=tls) as ws:
                    ws.close()
            except wsnest.InvalidStatus as exc:  # refused by on_open or origins: an answer
                assert exc.status < 500, f"{path}: {exc.status}"
        else:
            status = await _http_status(url, path)
            assert status < 500, f"GET {path}: {status}"


_RUNS: list[wsnest.HttpServer] = []


def _run_and_probe(server: wsnest.HttpServer, workers: int = 1) -> None:
    # run(workers=N) would fork: the sample's server runs here, in one process.
    assert isinstance(workers, int) and workers >= 1, workers
    _RUNS.append(server)

    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                url = await nursery.start(server.serve)
                await _probe(server, url)
                await server.aclose()

    trio.run(main)


def _loopback_any_port(url: str) -> str:
    parts = urlsplit(url)
    assert parts.hostname in ("127.0.0.1", "localhost", "::1", "0.0.0.0"), f"samples listen on loopback: {url}"
    return urlunsplit((parts.scheme, "127.0.0.1:0", parts.path, parts.query, parts.fragment))


@contextlib.contextmanager
def _harnessed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real = wsnest.http_server

    def http_server(url: str, *args: Any, **kwargs: Any) -> wsnest.HttpServer:
        return real(_loopback_any_port(url), *args, **kwargs)

    monkeypatch.setattr(wsnest, "http_server", http_server)
    monkeypatch.setattr(wsnest.HttpServer, "run", _run_and_probe)
    yield


# -- running async blocks ---------------------------------------------------------


async def _greet_and_echo(ws: wsnest.WebSocket) -> None:
    await ws.send_wait("welcome")
    async for msg in ws:
        await ws.send_wait(msg)


async def _run_async(code: Any, ns: dict[str, Any], echo: wsnest.HttpServer) -> None:
    done = trio.Event()

    async def body() -> None:
        result = eval(code, ns)
        if result is not None:
            await result
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(body)
        closed = False
        while True:
            await trio.testing.wait_all_tasks_blocked(cushion=0.01)
            if done.is_set():
                break
            assert not closed, "the block still waits after the harness closed its servers"
            closed = True
            for server in (echo, ns["server"]):
                if server.state == "started":
                    await server.aclose()


def _async_main(sample: Sample, code: Any, ns: dict[str, Any]) -> Callable[[], Any]:
    async def main() -> None:
        with trio.fail_after(TIMEOUT):
            echo = wsnest.http_server(
                "http://127.0.0.1:0", [wsnest.handler_ws("/ws", serve=_greet_and_echo, textframes=None)]
            )
            async with trio.open_nursery() as nursery:
                base = await nursery.start(echo.serve)
                ns["url"] = base.replace("http", "ws", 1) + "/ws"
                ns["server"] = wsnest.http_server("http://127.0.0.1:0", ns["handlers"])
                ns["stream"], ns["_peer"] = trio.testing.memory_stream_pair()
                await _run_async(code, ns, echo)
                await echo.aclose()

    return main


def _compile(sample: Sample) -> Any:
    code = sample.code
    if "url" in sample.args:
        literal = sample.args["url"]
        assert literal in code, f"{sample.id}: url={literal!r} does not occur in the block"
        code = code.replace(f'"{literal}"', "url")
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT if sample.mode == "async" else 0
    return compile(code, sample.id, "exec", flags=flags, dont_inherit=True)


def test_samples_found() -> None:
    # README has a dozen blocks; losing them all (a changed fence) must fail.
    assert sum(s.path.name == "README.md" for s in SAMPLES) >= 8
    assert {s.mode for s in SAMPLES} <= set(_MODES), [s.id for s in SAMPLES if s.mode not in _MODES]


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.id for s in SAMPLES])
def test_sample(
    sample: Sample, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    assert sample.mode in _MODES, f"{sample.id}: unknown mode {sample.mode!r}"
    code = _compile(sample)
    if sample.mode == "compile-only":
        return
    monkeypatch.chdir(tmp_path)  # files a block writes stay in the test's directory
    (tmp_path / "static").mkdir()  # what the static-file samples serve
    (tmp_path / "static" / "favicon.ico").write_bytes(b"\0\0\1\0")
    (tmp_path / "static" / "index.html").write_text("<p>hello</p>")
    monkeypatch.setattr(sys, "argv", ["sample"])
    ns = _preset()
    runs = len(_RUNS)
    with caplog.at_level(logging.ERROR, logger="wsnest"), _harnessed(monkeypatch):
        if sample.mode == "run":
            preset_handlers = ns["handlers"]
            exec(code, ns)
            if ns["handlers"] is not preset_handlers and len(_RUNS) == runs:
                # A block that builds handlers without serving them: serve them.
                _run_and_probe(wsnest.http_server("http://127.0.0.1:0", ns["handlers"]))
        else:
            trio.run(_async_main(sample, code, ns))
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and r.name.startswith("wsnest")]
    assert not errors, f"{sample.id}: wsnest logged errors: {errors}"
