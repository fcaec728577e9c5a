"""The command line (``python -m wsnest``), run as a real subprocess.

Every subprocess is bounded by a timeout and killed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest
import websockets.exceptions
import websockets.sync.client

import wsnest
from _redis_server import RedisServer
from redisutil import wait_numsub
from serverutil import has_ipv6_loopback

STARTUP_TIMEOUT = 15.0
RUN_TIMEOUT = 30.0
STOP_TIMEOUT = 8.0
SERVING = re.compile(r"^Serving at (https?://\S+) - press Ctrl\+C to stop$")

MYMOD = textwrap.dedent(
    """
    import wsnest

    def _hello(req):
        return {"status": 200, "headers": {"Content-Type": "text/plain"}, "body": "hello " + req.method}

    def _echo(ws, data):
        ws.send(data)

    handlers = [
        wsnest.handler_ws("/ws", _echo, textframes=None),
        wsnest.handler("/hello", _hello),
    ]

    def make_handlers():
        return [
            wsnest.handler_ws("/ws", _echo, textframes=None),
            wsnest.handler("/hello", lambda req: {"body": "made by a factory"}),
        ]

    single = wsnest.handler("/hello", lambda req: {"body": "single"})
    name = "not handlers"
    mixed = [wsnest.handler("/hello", _hello), 42]
    number = 7

    def broken():
        raise RuntimeError("the factory is broken")

    def _enter_room(ws, req):
        ws.join("room")
        worker = wsnest.current_worker()
        ws.send("worker " + str(worker.index if worker else 0))

    def _say(ws, data):
        ws.publish("room", data)

    room = [wsnest.handler_ws("/room", _say, _enter_room, textframes=True)]
    """
)


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "mymod.py").write_text(MYMOD)
    (tmp_path / "badimport.py").write_text("raise RuntimeError('this module fails on import')\n")
    return tmp_path


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-u", "-m", "wsnest", *args]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)  # WSNEST_NO_EXTENSIONS is inherited: the subprocess uses the core this process uses
    # The subprocess must import the wsnest under test, wherever it is.
    here = os.path.dirname(os.path.dirname(os.path.abspath(wsnest.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(args: Sequence[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion (bounded)."""
    return subprocess.run(
        _cmd(*args),
        cwd=cwd,
        env=_env(**env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


class Served:
    """A running ``python -m wsnest ...`` subprocess and its URL."""

    def __init__(self, proc: subprocess.Popen[str], url: str, stderr_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.stderr_path = stderr_path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :] + "/ws"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def interrupt(self) -> int:
        """Ctrl+C: send SIGINT and return the exit code (bounded)."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not stop within {STOP_TIMEOUT}s of SIGINT; stderr: {self.stderr()}")


@contextmanager
def serving(args: Sequence[str], cwd: Path) -> Iterator[Served]:
    """Start the CLI, wait for its startup line, and kill it in the end.

    stderr goes to a file (the log could otherwise fill a pipe nobody reads).
    """
    stderr_path = cwd / f"stderr-{len(list(cwd.glob('stderr-*')))}.txt"
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            _cmd(*args), cwd=cwd, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err, text=True
        )
    try:
        assert proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(STARTUP_TIMEOUT)
        line = box[0].strip() if box else ""
        match = SERVING.match(line)
        if not match:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT)
            raise AssertionError(
                f"no startup line: stdout={line!r} rc={proc.returncode} stderr={stderr_path.read_text()!r}"
            )
        yield Served(proc, match.group(1), stderr_path)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=STOP_TIMEOUT)
        if proc.stdout is not None:
            proc.stdout.close()


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A failed run: non-zero exit, exactly one ``wsnest: error:`` line on stderr."""
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {result.stderr!r}"
    line = lines[0]
    assert line.startswith("wsnest: error: "), line
    for needle in needles:
        assert needle in line, (needle, line)
    assert "Serving at" not in result.stdout, result.stdout
    return line


def _echo_round_trip(uri: str, ssl_context: ssl.SSLContext | None = None) -> None:
    with websockets.sync.client.connect(uri, ssl=ssl_context, open_timeout=10, close_timeout=5) as ws:
        ws.send("hello text")
        assert ws.recv(timeout=10) == "hello text"
        ws.send(b"\x00\x01 binary")
        assert ws.recv(timeout=10) == b"\x00\x01 binary"


# -- --info ----------------------------------------------------------------------


def test_info_prints_core(tmp_path: Path) -> None:
    result = run_cli(["--info"], tmp_path)
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert f"wsnest {wsnest.__version__}" in lines
    core = [ln for ln in lines if ln.startswith("core:")]
    assert core in (["core: compiled"], ["core: pure"]), lines
    assert core == [f"core: {wsnest.CORE}"]  # the same core as this test process
    assert any(ln.startswith("python: ") for ln in lines), lines


def test_info_pure_when_extensions_disabled(tmp_path: Path) -> None:
    result = run_cli(["--info"], tmp_path, WSNEST_NO_EXTENSIONS="1")  # whatever this process has
    assert result.returncode == 0, result
    assert "core: pure" in result.stdout.splitlines(), result.stdout


# -- serve -------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["mymod:handlers", "mymod:make_handlers"])
def test_serve_handlers(app_dir: Path, target: str) -> None:
    with serving(["serve", target, "--port", "0", "--log-level", "warning"], app_dir) as srv:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", srv.url), srv.url
        assert not srv.url.endswith(":0")
        with httpx.Client(timeout=10) as client:
            r = client.get(srv.url + "/hello")
            assert r.status_code == 200
            assert r.text == ("hello GET" if target == "mymod:handlers" else "made by a factory")
            assert client.get(srv.url + "/missing").status_code == 404
        _echo_round_trip(srv.ws_url)

        # Ctrl+C with a client connected: it gets 1001, the process exits 0.
        with websockets.sync.client.connect(srv.ws_url, open_timeout=10, close_timeout=5) as ws:
            ws.send("before shutdown")
            assert ws.recv(timeout=10) == "before shutdown"
            box: list[int] = []
            stopper = threading.Thread(target=lambda: box.append(srv.interrupt()))
            stopper.start()
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                ws.recv(timeout=10)
            stopper.join(STOP_TIMEOUT + 2)
        assert info.value.rcvd is not None, "no close frame from the server"
        assert info.value.rcvd.code == 1001, info.value
        assert box == [0], (box, srv.stderr())
        assert "Traceback" not in srv.stderr(), srv.stderr()


def test_serve_single_handler_and_log_level(app_dir: Path) -> None:
    with serving(["serve", "mymod:single", "--port", "0", "--log-level", "info"], app_dir) as srv:
        r = httpx.get(srv.url + "/hello", timeout=10)
        assert (r.status_code, r.text) == (200, "single")
        assert srv.interrupt() == 0
        assert "wsnest serving at " + srv.url in srv.stderr()


ACCESS = r"^\S+ \S+ INFO wsnest\.access: 127\.0\.0\.1:\d+ - "
ACCESS_HTTP = re.compile(ACCESS + r'"GET /hello HTTP/1\.1" 200 9 [\d.]+m?s$', re.M)
ACCESS_WS = re.compile(ACCESS + r'"WS /ws" 1000 in=2 out=2 [\d.]+m?s$', re.M)


def test_serve_access_log_on_by_default(app_dir: Path) -> None:
    """The CLI logs every request and WebSocket session (``--no-access-log``: none)."""
    with serving(["serve", "mymod:handlers", "--port", "0"], app_dir) as srv:
        assert httpx.get(srv.url + "/hello", timeout=10).text == "hello GET"
        _echo_round_trip(srv.ws_url)
        assert srv.interrupt() == 0
        log = srv.stderr()
    assert len(ACCESS_HTTP.findall(log)) == 1, log
    assert len(ACCESS_WS.findall(log)) == 1, log
    with serving(["serve", "mymod:handlers", "--port", "0", "--no-access-log"], app_dir) as srv:
        assert httpx.get(srv.url + "/hello", timeout=10).text == "hello GET"
        _echo_round_trip(srv.ws_url)
        assert srv.interrupt() == 0
        assert "wsnest.access" not in srv.stderr(), srv.stderr()


def test_serve_proxy_headers(app_dir: Path) -> None:
    """--proxy-headers: the trusted proxy's X-Forwarded-For is the client in the log."""
    args = ["serve", "mymod:handlers", "--port", "0", "--proxy-headers", "--forwarded-allow-ips", "127.0.0.1"]
    with serving(args, app_dir) as srv:
        r = httpx.get(srv.url + "/hello", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=10)
        assert r.text == "hello GET"
        assert srv.interrupt() == 0
        assert re.search(r'wsnest\.access: 203\.0\.113\.7:0 - "GET /hello', srv.stderr()), srv.stderr()


def test_serve_idle_sigterm_exits_zero(app_dir: Path) -> None:
    with serving(["serve", "mymod:handlers", "--port", "0"], app_dir) as srv:
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=STOP_TIMEOUT) == 0, srv.stderr()


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback")
def test_serve_ipv6_host(app_dir: Path) -> None:
    with serving(["serve", "mymod:handlers", "--host", "::1", "--port", "0"], app_dir) as srv:
        assert re.fullmatch(r"http://\[::1\]:\d+", srv.url), srv.url
        assert httpx.get(srv.url + "/hello", timeout=10).text == "hello GET"
        assert srv.interrupt() == 0


def _sse_events(lines: Iterator[str]) -> Iterator[tuple[str, str]]:
    """``(event, data)`` for each event of a ``text/event-stream`` (the
    demo's: one ``event:`` and one ``data:`` line each)."""
    event, data = "message", ""
    for line in lines:
        if not line:
            yield event, data
            event, data = "message", ""
        elif line.startswith("event: "):
            event = line[len("event: ") :]
        elif line.startswith("data: "):
            data = line[len("data: ") :]


def test_demo_serves_page_and_stops_on_sigint(tmp_path: Path) -> None:
    with serving(["--port", "0", "--log-level", "warning"], tmp_path) as srv:
        r = httpx.get(srv.url + "/", timeout=10)
        assert r.status_code == 200 and "<title>wsnest demo</title>" in r.text
        assert f"single process (pid {srv.proc.pid})" in r.text
        assert f'core <b id="core">{wsnest.CORE}</b>' in r.text
        assert "same worker" not in r.text
        assert srv.interrupt() == 0


def test_demo_stats_event(tmp_path: Path) -> None:
    """/events carries, beside the clock, the server's numbers once a
    second; messages_per_s comes from the change between two events."""
    with serving(["--port", "0", "--log-level", "warning"], tmp_path) as srv:
        with (
            httpx.stream("GET", srv.url + "/events", timeout=10) as r,
            websockets.sync.client.connect(srv.ws_url, open_timeout=10) as ws,
        ):
            assert r.headers["content-type"] == "text/event-stream"
            stats = ((event, json.loads(data)) for event, data in _sse_events(r.iter_lines()) if event == "stats")
            _, first = next(stats)
            assert first["core"] == wsnest.CORE
            assert first["pid"] == srv.proc.pid
            assert first["connections"]["stream"] == 1  # this one
            assert first["messages_per_s"] is None  # no previous event to compare with
            assert "workers" not in first  # a single process
            assert ws.recv(timeout=10) == "* you are user 1"
            assert ws.recv(timeout=10) == "* user 1 joined"
            ws.send("hello")
            assert ws.recv(timeout=10) == "user 1: hello"  # 1 message in, 2 out in all
            for _, numbers in stats:
                assert isinstance(numbers["messages_per_s"], float) and numbers["messages_per_s"] >= 0
                if numbers["ws_messages_in"] >= 1:
                    break
            assert numbers["connections"]["websocket"] == 1
            assert numbers["ws_messages_out"] >= 3  # "you are", "joined", then the echo of "hello"
            assert numbers["messages_per_s"] > 0
        assert srv.interrupt() == 0


def test_demo_with_workers_names_the_worker(tmp_path: Path) -> None:
    with serving(["--port", "0", "--log-level", "warning", "--workers", "2"], tmp_path) as srv:
        r = httpx.get(srv.url + "/", timeout=10)
        match = re.search(r"served by worker ([12]) of 2 \(pid (\d+)\)", r.text)
        assert match, r.text
        assert int(match.group(2)) != srv.proc.pid  # a worker, not the supervisor
        assert "same worker" in r.text and "--redis URL" in r.text
        with httpx.stream("GET", srv.url + "/events", timeout=10) as events:
            numbers = next(json.loads(d) for e, d in _sse_events(events.iter_lines()) if e == "stats")
        assert numbers["workers"] == 2 and len(numbers["pid"]) == 2
        # Without a broker each worker keeps its own room (groups would refuse).
        with websockets.sync.client.connect(srv.ws_url, open_timeout=10) as ws:
            welcome = ws.recv(timeout=10)
            match = WELCOME.fullmatch(welcome)
            assert match and match.group(3) == "2", welcome
            name = match.group(1)
            assert ws.recv(timeout=10) == f"* {name} joined"
            ws.send("hello")
            assert ws.recv(timeout=10) == f"{name}: hello"
        assert srv.interrupt() == 0
        assert "Traceback" not in srv.stderr(), srv.stderr()


# -- --redis -----------------------------------------------------------------------

WELCOME = re.compile(r"\* you are (user (\d+)\.\d+), on worker [12] of (2)")


def _ws(url: str, path: str) -> str:
    return "ws" + url[len("http") :] + path


def _one_per_worker(
    stack: ExitStack, uri: str, worker_of: Callable[[str], str]
) -> dict[str, tuple[websockets.sync.client.ClientConnection, str]]:
    """Connect until two connections are on different workers (the kernel
    spreads them; bounded), each with its first message, by worker."""
    found: dict[str, tuple[websockets.sync.client.ClientConnection, str]] = {}
    for _ in range(MAX_TRIES):
        ws = stack.enter_context(websockets.sync.client.connect(uri, open_timeout=10, close_timeout=5))
        first = ws.recv(timeout=10)
        assert isinstance(first, str)
        found.setdefault(worker_of(first), (ws, first))
        if len(found) == 2:
            return found
    raise AssertionError(f"{MAX_TRIES} connections, all on one worker")


def _recv_until(ws: websockets.sync.client.ClientConnection, wanted: str) -> list[str]:
    """Messages up to and including ``wanted`` (bounded by recv's timeout)."""
    seen: list[str] = []
    while not seen or seen[-1] != wanted:
        message = ws.recv(timeout=10)
        assert isinstance(message, str)
        seen.append(message)
    return seen


MAX_TRIES = 40


def test_help_names_redis(tmp_path: Path) -> None:
    for args in (["--help"], ["serve", "--help"]):
        result = run_cli(args, tmp_path)
        assert result.returncode == 0, result
        assert "--redis URL" in result.stdout, result.stdout
        assert "redis://host:6379/0" in " ".join(result.stdout.split()), result.stdout


@pytest.mark.parametrize(
    ("args", "url_of"),
    [
        ([], lambda port: f"redis://127.0.0.1:{port}/0"),
        (["--workers", "2"], lambda port: f"redis://127.0.0.1:{port}/0"),
        (["serve", "mymod:room"], lambda port: f"redis://127.0.0.1:{port}/0"),
        (["serve", "mymod:room", "--workers", "2"], lambda port: f"redis://app:s3cret@127.0.0.1:{port}/0"),
    ],
    ids=["demo", "demo-workers", "serve", "serve-workers-password"],
)
def test_redis_unreachable_at_start_one_line(app_dir: Path, args: list[str], url_of: Callable[[int], str]) -> None:
    """Nothing listens at the URL: the server does not start; one line
    names the option and the URL (its password hidden), printed once even
    with several workers failing alike."""
    with socket.socket() as closed:  # a free port, closed again: nothing listens there
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    url = url_of(port)
    result = run_cli([*args, "--port", "0", "--log-level", "warning", "--redis", url], app_dir)
    shown = url.replace(":s3cret@", ":***@")
    line = assert_one_line_error(result, "--redis: ", f"cannot connect to broker {shown}: ", f"127.0.0.1:{port}")
    assert "s3cret" not in result.stderr, line
    assert result.returncode == 1


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--redis", "http://127.0.0.1:6379"], ["--redis: ", "redis://", "'http://127.0.0.1:6379'"]),
        (["serve", "mymod:room", "--redis", "redis://host/db1"], ["--redis: ", "database 'db1'"]),
        (["serve", "mymod:room", "--redis", "redis://127.0.0.1:0/0"], ["--redis: ", "port 0"]),
    ],
    ids=["demo-scheme", "serve-database", "serve-port-0"],
)
def test_redis_bad_url_one_line(app_dir: Path, args: list[str], needles: list[str]) -> None:
    result = run_cli([*args, "--port", "0"], app_dir)
    assert_one_line_error(result, *needles)
    assert result.returncode == 2


def test_serve_groups_across_workers_through_redis(app_dir: Path, redis_server: RedisServer) -> None:
    """``serve --workers 2 --redis URL``: a message published on one worker
    reaches the group's member on the other."""
    args = ["serve", "mymod:room", "--port", "0", "--workers", "2", "--redis", redis_server.url]
    with serving(args, app_dir) as srv, ExitStack() as stack:
        found = _one_per_worker(stack, _ws(srv.url, "/room"), lambda first: first)
        (a, _), (b, _) = found.values()
        wait_numsub(redis_server.port, "wsnest:group:room", 2)  # both workers follow the group
        a.send("from one worker")
        assert a.recv(timeout=10) == "from one worker"
        assert b.recv(timeout=10) == "from one worker"
        b.send("and back")
        assert b.recv(timeout=10) == "and back"
        assert a.recv(timeout=10) == "and back"
        stack.close()
        assert srv.interrupt() == 0
        assert "Traceback" not in srv.stderr(), srv.stderr()


def test_demo_chat_across_workers_through_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    """The demo with ``--workers 2 --redis URL``: users on different workers
    chat with each other, their names unique across workers."""
    args = ["--port", "0", "--log-level", "warning", "--workers", "2", "--redis", redis_server.url]
    with serving(args, tmp_path) as srv, ExitStack() as stack:
        page = httpx.get(srv.url + "/", timeout=10).text
        assert "chat reaches every worker" in page and "through Redis" in page
        assert "same worker" not in page

        def worker_of(welcome: str) -> str:
            assert WELCOME.fullmatch(welcome), welcome
            return welcome.rpartition(", on ")[2]

        found = _one_per_worker(stack, srv.ws_url, worker_of)
        (a, welcome_a), (b, welcome_b) = found.values()
        match_a, match_b = WELCOME.fullmatch(welcome_a), WELCOME.fullmatch(welcome_b)
        assert match_a and match_b
        name_a, name_b = match_a.group(1), match_b.group(1)
        assert name_a != name_b and match_a.group(2) != match_b.group(2)  # each worker's pid in the name
        wait_numsub(redis_server.port, "wsnest:group:chat", 2)
        a.send("hello from A")
        assert _recv_until(b, f"{name_a}: hello from A")
        b.send("hi A")
        seen = _recv_until(a, f"{name_b}: hi A")
        assert f"{name_a}: hello from A" in seen  # A's own line came back once, through its worker
        assert seen.count(f"{name_a}: hello from A") == 1
        stack.close()
        assert srv.interrupt() == 0
        assert "Traceback" not in srv.stderr(), srv.stderr()


# -- errors: one line on stderr, no traceback ------------------------------------


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["serve", "nosuchmodule_xyz:handlers"], ["cannot import module 'nosuchmodule_xyz'"]),
        (["serve", "badimport:handlers"], ["importing 'badimport' failed", "RuntimeError"]),
        (["serve", "mymod:nope"], ["has no attribute 'nope'"]),
        (["serve", "mymod:name"], ["mymod:name", "str"]),
        (["serve", "mymod:number"], ["mymod:number", "int"]),
        (["serve", "mymod:mixed"], ["only handlers", "int"]),
        (["serve", "mymod:broken"], ["mymod:broken", "RuntimeError", "the factory is broken"]),
        (["serve", "mymod"], ["package.module:handlers"]),
        (["serve", "mymod:handlers", "--tls-cert", "cert.pem"], ["--tls-cert and --tls-key go together"]),
        (["serve", "mymod:handlers", "--tls-key", "key.pem"], ["--tls-cert and --tls-key go together"]),
        (
            ["serve", "mymod:handlers", "--tls-cert", "nofile.pem", "--tls-key", "nofile.key"],
            ["--tls-cert", "no such file"],
        ),
        (["serve", "mymod:handlers", "--max-connections", "0"], ["--max-connections:", "got 0"]),
        (["serve", "mymod:handlers", "--drain-timeout", "-1"], ["--drain-timeout:", "-1"]),
        (["serve", "mymod:handlers", "--forwarded-allow-ips", "10.0.0.1,bogus"], ["--forwarded-allow-ips:", "bogus"]),
    ],
    ids=[
        "missing-module",
        "module-raises",
        "missing-attribute",
        "str-attribute",
        "int-attribute",
        "non-handler-in-list",
        "factory-raises",
        "no-colon",
        "cert-without-key",
        "key-without-cert",
        "missing-cert-file",
        "max-connections-0",
        "drain-timeout-negative",
        "forwarded-allow-ips-invalid",
    ],
)
def test_serve_errors_are_one_line(app_dir: Path, args: list[str], needles: list[str]) -> None:
    result = run_cli([*args, "--port", "0"], app_dir)
    assert_one_line_error(result, *needles)
    assert result.returncode == 2


def test_serve_bad_pem_files_one_line(app_dir: Path) -> None:
    (app_dir / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
    (app_dir / "key.pem").write_text(wsnest.write_cert().key)
    result = run_cli(["serve", "mymod:handlers", "--tls-cert", "cert.pem", "--tls-key", "key.pem"], app_dir)
    assert_one_line_error(result, "cert/key")
    # A key that does not belong to the certificate.
    (app_dir / "cert.pem").write_text(wsnest.write_cert().cert)
    result = run_cli(["serve", "mymod:handlers", "--tls-cert", "cert.pem", "--tls-key", "key.pem"], app_dir)
    assert_one_line_error(result, "cert/key")


@pytest.mark.parametrize("where", ["port-in-use", "address-not-local"])
def test_serve_cannot_listen_one_line(app_dir: Path, where: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # 192.0.2.1 (TEST-NET-1) is not an address of this machine: bind fails at once, nothing is sent.
        host = "127.0.0.1" if where == "port-in-use" else "192.0.2.1"
        result = run_cli(["serve", "mymod:handlers", "--host", host, "--port", str(port)], app_dir)
    assert_one_line_error(result, "cannot listen", f"{host}:{port}")
    assert result.returncode == 1


# -- TLS ---------------------------------------------------------------------------


def test_serve_tls(app_dir: Path) -> None:
    pair = wsnest.write_cert()
    (app_dir / "cert.pem").write_text(pair.cert)
    (app_dir / "key.pem").write_text(pair.key)
    args = ["serve", "mymod:handlers", "--port", "0", "--tls-cert", "cert.pem", "--tls-key", "key.pem"]
    with serving(args, app_dir) as srv:
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", srv.url), srv.url
        assert srv.ws_url.startswith("wss://127.0.0.1:")
        trusted = ssl.create_default_context(cadata=pair.cert)

        r = httpx.get(srv.url + "/hello", verify=trusted, timeout=10)
        assert (r.status_code, r.text) == (200, "hello GET")
        assert r.http_version == "HTTP/1.1"
        _echo_round_trip(srv.ws_url, trusted)

        # Not trusted: the client refuses the self-signed certificate.
        with pytest.raises(ssl.SSLCertVerificationError):
            websockets.sync.client.connect(srv.ws_url, ssl=ssl.create_default_context(), open_timeout=10)
        # ... and the server keeps serving.
        _echo_round_trip(srv.ws_url, trusted)

        with websockets.sync.client.connect(srv.ws_url, ssl=trusted, open_timeout=10, close_timeout=5) as ws:
            box: list[int] = []
            stopper = threading.Thread(target=lambda: box.append(srv.interrupt()))
            stopper.start()
            with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                ws.recv(timeout=10)
            stopper.join(STOP_TIMEOUT + 2)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1001, info.value
        assert box == [0], (box, srv.stderr())
        assert "Traceback" not in srv.stderr(), srv.stderr()
