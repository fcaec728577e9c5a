"""A real ``redis-server`` for the broker tests: started on a free loopback
port in a temporary directory, killable (SIGKILL) and restartable on the
same port. Not a conftest: ``tests/conftest.py`` exposes it as the
``redis_server`` fixture."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

#: How long a redis-server may take to answer PING after it was started.
START_TIMEOUT = 10.0


def redis_server_path() -> str:
    """The redis-server executable; skips the test (fails it under CI) if missing."""
    path = shutil.which("redis-server")
    if path is None and os.path.exists("/usr/bin/redis-server"):
        path = "/usr/bin/redis-server"
    if path is None:
        message = "redis-server is not installed (Debian package redis-server)"
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {message}", pytrace=False)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process (no persistence) on ``127.0.0.1:port``."""

    def __init__(self, directory: Path) -> None:
        self.executable = redis_server_path()
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        assert self.process is None, "already running"
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--daemonize", "no",
            ],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers_ping(self.port):
            if self.process.poll() is not None:
                output = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                self.process = None
                raise RuntimeError(f"redis-server exited during startup:\n{output}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING within {START_TIMEOUT} s")
            time.sleep(0.01)  # polling an external process

    def kill(self) -> None:
        """SIGKILL the server (an outage, not a shutdown) and reap it."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        """SIGSTOP the server: connections stay open but nothing answers."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT a paused server."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Start again on the same port (after :meth:`kill`)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        """Stop the server if it runs."""
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def unused_port_url() -> str:
    """A redis:// URL on a loopback port where nothing listens."""
    return f"redis://127.0.0.1:{_free_port()}/0"
