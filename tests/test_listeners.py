"""Listeners: dual stack, every address of a host, Unix sockets, sockets
the caller bound (``sock=`` and the CLI's ``--fd``), and the errors that
name the address. Real sockets and real clients (httpx, websockets).
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import websockets.sync.client

import wsnest
from serverutil import TIMEOUT, has_ipv6_loopback, running_server

needs_ipv6 = pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback on this machine")
needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets on this platform")


def _client(req: wsnest.Request) -> dict[str, Any]:
    return {"body": repr(req.client)}


def _ws_echo(ws: wsnest.WebSocket, data: str | bytes) -> None:
    ws.send(data)


HANDLERS = [wsnest.handler("/client", _client), wsnest.handler_ws("/ws", _ws_echo)]


async def _start_error(server: wsnest.HttpServer) -> OSError:
    """The OSError with which ``server`` fails to start."""
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(server.serve)
        except OSError as exc:
            return exc
    raise AssertionError("the server started")


async def _get(url: str, **kw: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=TIMEOUT, **kw) as client:
        return await client.get(url)


# -- TCP -------------------------------------------------------------------------------


@needs_ipv6
async def test_dual_stack_serves_ipv4_and_ipv6() -> None:
    async with running_server(HANDLERS, "http://[::]:0") as (server, url):
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://[::]:{port}" and server.urls == [url]
        v4 = await _get(f"http://127.0.0.1:{port}/client")
        v6 = await _get(f"http://[::1]:{port}/client")
    # An IPv4 client shows as 127.0.0.1, not as ::ffff:127.0.0.1.
    assert v4.text.startswith("('127.0.0.1', "), v4.text
    assert v6.text.startswith("('::1', "), v6.text


@needs_ipv6
async def test_host_with_several_addresses_binds_them_all(monkeypatch: pytest.MonkeyPatch) -> None:
    # The resolver is the one thing replaced: a name giving 127.0.0.1 and ::1
    # (what `localhost` gives on many machines, but not on every one).
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        if host == "both.test":
            return real("127.0.0.1", port, *args, **kw) + real("::1", port, *args, **kw)
        return real(host, port, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    async with running_server(HANDLERS, "http://both.test:0") as (server, url):
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://both.test:{port}"
        assert server.urls == [f"http://127.0.0.1:{port}", f"http://[::1]:{port}"]  # port 0: one port for all
        monkeypatch.undo()
        v4 = await _get(f"http://127.0.0.1:{port}/client")
        v6 = await _get(f"http://[::1]:{port}/client")
    assert v4.text.startswith("('127.0.0.1', ") and v6.text.startswith("('::1', ")


async def test_address_in_use_names_the_address() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = wsnest.http_server(f"http://127.0.0.1:{port}", HANDLERS)
        error = await _start_error(server)
    assert error.errno == errno.EADDRINUSE
    assert error.strerror == f"cannot listen on 127.0.0.1:{port}: Address already in use"


async def test_single_process_has_no_worker() -> None:
    assert wsnest.current_worker() is None


# -- Unix domain sockets ------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # A Unix socket path is limited to ~100 bytes: pytest's tmp_path can be longer.
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wsn") as d:
        yield Path(d)


def _ws_round_trip_unix(path: str) -> str | bytes:
    with websockets.sync.client.unix_connect(path, "ws://localhost/ws", open_timeout=TIMEOUT) as ws:
        ws.send("over a unix socket")
        return ws.recv(timeout=TIMEOUT)


@needs_unix
async def test_unix_socket_http_and_websocket(short_dir: Path) -> None:
    path = str(short_dir / "app.sock")
    async with running_server(HANDLERS, f"unix:{path}") as (server, url):
        assert url == f"unix:{path}" and server.urls == [url]
        assert stat.S_ISSOCK(os.stat(path).st_mode)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o660  # owner and group
        response = await _get("http://localhost/client", transport=httpx.AsyncHTTPTransport(uds=path))
        assert response.status_code == 200 and response.text == "None"  # no peer address on a Unix socket
        assert await trio.to_thread.run_sync(_ws_round_trip_unix, path) == b"over a unix socket"
    assert not os.path.exists(path)  # removed on exit


@needs_unix
async def test_unix_socket_relative_path_and_mode(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(short_dir)
    server = wsnest.http_server("unix:rel.sock", HANDLERS, uds_mode=0o600)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(server.serve) == "unix:rel.sock"
        assert stat.S_IMODE(os.stat(short_dir / "rel.sock").st_mode) == 0o600
        response = await _get("http://localhost/client", transport=httpx.AsyncHTTPTransport(uds="rel.sock"))
        assert response.status_code == 200
        await server.aclose()
    assert not (short_dir / "rel.sock").exists()


@needs_unix
async def test_unix_socket_https_with_tls(short_dir: Path) -> None:
    import ssl

    pair = wsnest.write_cert("localhost")
    path = str(short_dir / "tls.sock")
    server = wsnest.http_server(f"unix:{path}", HANDLERS, tls=wsnest.tls_config(pair.cert, pair.key))
    ctx = ssl.create_default_context(cadata=pair.cert)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        transport = httpx.AsyncHTTPTransport(uds=path, verify=ctx)
        response = await _get("https://localhost/client", transport=transport)
        assert response.status_code == 200 and response.text == "None"
        await server.aclose()


@needs_unix
async def test_stale_socket_file_is_replaced(short_dir: Path) -> None:
    path = str(short_dir / "stale.sock")
    with socket.socket(socket.AF_UNIX) as dead:
        dead.bind(path)  # closed without unlink: a server that crashed
    assert stat.S_ISSOCK(os.lstat(path).st_mode)
    async with running_server(HANDLERS, f"unix:{path}"):
        response = await _get("http://localhost/client", transport=httpx.AsyncHTTPTransport(uds=path))
        assert response.status_code == 200


@needs_unix
async def test_live_server_path_is_refused(short_dir: Path) -> None:
    path = str(short_dir / "live.sock")
    async with running_server(HANDLERS, f"unix:{path}"):
        second = wsnest.http_server(f"unix:{path}", HANDLERS)
        error = await _start_error(second)
        assert error.errno == errno.EADDRINUSE
        assert error.strerror == f"cannot listen on unix:{path}: in use by a running server"
        # The first server still owns and serves its file.
        response = await _get("http://localhost/client", transport=httpx.AsyncHTTPTransport(uds=path))
        assert response.status_code == 200


@needs_unix
async def test_non_socket_path_is_refused(short_dir: Path) -> None:
    path = short_dir / "notes.txt"
    path.write_text("keep me")
    server = wsnest.http_server(f"unix:{path}", HANDLERS)
    error = await _start_error(server)
    assert error.strerror == f"cannot listen on unix:{path}: the path exists and is not a socket"
    assert path.read_text() == "keep me"


@needs_unix
async def test_socket_file_replaced_by_another_is_left_alone(short_dir: Path) -> None:
    path = str(short_dir / "app.sock")
    with socket.socket(socket.AF_UNIX) as other:
        async with running_server(HANDLERS, f"unix:{path}"):
            os.unlink(path)
            other.bind(path)  # someone else's socket now lives at the path
        assert stat.S_ISSOCK(os.lstat(path).st_mode)  # not ours: not removed


# -- sockets from the caller ----------------------------------------------------------


async def test_sock_bound_by_the_caller() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: the server listens
    port = sock.getsockname()[1]
    server = wsnest.http_server("http://", HANDLERS, sock=sock)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        assert url == f"http://127.0.0.1:{port}" and server.url == url
        response = await _get(f"{url}/client")
        assert response.text.startswith("('127.0.0.1', ")
        await server.aclose()
    assert sock.fileno() == -1  # the server owns it once served, and closed it


async def test_sock_as_listening_file_descriptor() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    fd = sock.detach()
    server = wsnest.http_server("http://", HANDLERS, sock=fd)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        assert (await _get(f"{url}/client")).status_code == 200
        await server.aclose()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the server


@needs_unix
async def test_sock_unix_keeps_the_callers_file(short_dir: Path) -> None:
    path = str(short_dir / "given.sock")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(path)
    server = wsnest.http_server("http://", HANDLERS, sock=sock)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(server.serve) == f"unix:{path}"
        response = await _get("http://localhost/client", transport=httpx.AsyncHTTPTransport(uds=path))
        assert response.status_code == 200
        await server.aclose()
    assert os.path.exists(path)  # the server did not create it: not its to remove


def test_sock_refused_with_a_clear_error() -> None:
    with pytest.raises(TypeError, match=r"^sock: "):
        wsnest.http_server("http://", HANDLERS, sock="3")  # type: ignore[arg-type]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match=r"^sock: expected a TCP or Unix stream socket"):
            wsnest.http_server("http://", HANDLERS, sock=udp)
        fd = udp.fileno()
        with pytest.raises(ValueError, match=r"^sock: "):
            wsnest.http_server("http://", HANDLERS, sock=fd)
        os.fstat(fd)  # a refused descriptor stays open: it is still the caller's
    with socket.socket() as unbound, pytest.raises(ValueError, match=r"^sock: the socket is not bound"):
        wsnest.http_server("http://", HANDLERS, sock=unbound)
    r, w = os.pipe()
    try:
        with pytest.raises(ValueError, match=f"^sock: file descriptor {r} is not a socket"):
            wsnest.http_server("http://", HANDLERS, sock=r)
    finally:
        os.close(r)
        os.close(w)


def test_unix_url_needs_a_path() -> None:
    with pytest.raises(ValueError, match=r"^url: a unix: URL needs a socket path"):
        wsnest.http_server("unix:", HANDLERS)


# -- the CLI: --fd and --uds ------------------------------------------------------------

APP = """
import wsnest
handlers = [wsnest.handler("/client", lambda req: {"body": repr(req.client)})]
"""


@contextmanager
def _cli(
    cwd: Path, *args: str, pass_fds: tuple[int, ...] = (), script: str = ""
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    (cwd / "listen_app.py").write_text(APP)
    here = os.path.dirname(os.path.dirname(os.path.abspath(wsnest.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen(
        [sys.executable, "-u", script]
        if script
        else [sys.executable, "-u", "-m", "wsnest", "serve", "listen_app:handlers", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        pass_fds=pass_fds,
    )
    try:
        assert proc.stdout is not None
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(15)
        line = box[0].strip() if box else ""
        assert line.startswith("Serving at ") and line.endswith(" - press Ctrl+C to stop"), (line, proc.poll())
        yield proc, line[len("Serving at ") : -len(" - press Ctrl+C to stop")]
        proc.send_signal(2)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stdout.close()  # type: ignore[union-attr]


def test_cli_fd(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound by the test, as systemd would
        port = sock.getsockname()[1]
        with _cli(tmp_path, "--fd", str(sock.fileno()), pass_fds=(sock.fileno(),)) as (_, url):
            assert url == f"http://127.0.0.1:{port}"
            assert httpx.get(f"{url}/client", timeout=TIMEOUT).text.startswith("('127.0.0.1', ")


@needs_unix
def test_cli_uds(short_dir: Path) -> None:
    with _cli(short_dir, "--uds", "cli.sock", "--uds-mode", "600") as (_, url):
        assert url == "unix:cli.sock"
        assert stat.S_IMODE(os.stat(short_dir / "cli.sock").st_mode) == 0o600
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(short_dir / "cli.sock")), timeout=TIMEOUT) as c:
            assert c.get("http://localhost/client").text == "None"
    assert not (short_dir / "cli.sock").exists()


@pytest.mark.parametrize("mode", [-1, 0o1000, "660", True])
def test_uds_mode_checked(mode: Any) -> None:
    with pytest.raises(ValueError, match=r"^uds_mode: "):
        wsnest.http_server("unix:x.sock", HANDLERS, uds_mode=mode)


SYSTEMD = """
import os, sys
from wsnest.__main__ import main

os.dup2({fd}, 3)  # what systemd does: the socket at fd 3, and the variables naming this process
os.close({fd})
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS="1")
sys.exit(main(["serve", "listen_app:handlers"]))
"""


def test_cli_systemd_socket_activation(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        (tmp_path / "activated.py").write_text(SYSTEMD.format(fd=sock.fileno()))
        with _cli(tmp_path, script="activated.py", pass_fds=(sock.fileno(),)) as (_, url):
            assert url == f"http://127.0.0.1:{port}"  # fd 3, not --host/--port's default 127.0.0.1:8080
            assert httpx.get(f"{url}/client", timeout=TIMEOUT).status_code == 200


def test_systemd_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    from wsnest.__main__ import _systemd_socket

    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))  # meant for another process: left alone
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert _systemd_socket() is None and os.environ["LISTEN_FDS"] == "1"
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    monkeypatch.setenv("LISTEN_FDS", "2")
    with pytest.raises(ValueError, match=r"^--fd: systemd passed LISTEN_FDS='2' sockets"):
        _systemd_socket()
    assert "LISTEN_PID" not in os.environ and "LISTEN_FDS" not in os.environ  # never seen by a child process
