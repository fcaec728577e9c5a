"""A real ``redis-server`` for the broker tests: started on a free loopback
port in a temporary directory, killable (SIGKILL) and restartable on the
same port. Not a conftest: ``tests/conftest.py`` exposes it as the
``redis_server`` fixture."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

#: How long a redis-server may take to answer PING after it was started.
START_TIMEOUT = 10.0


def redis_required() -> bool:
    """Whether a missing redis-server fails the tests instead of skipping them:
    under CI (``CI`` set) or with ``WSNEST_REQUIRE_REDIS=1``;
    ``WSNEST_REQUIRE_REDIS=0`` skips even under CI (runners without Redis)."""
    explicit = os.environ.get("WSNEST_REQUIRE_REDIS", "")
    if explicit:
        return explicit != "0"
    return bool(os.environ.get("CI"))


def redis_server_path() -> str:
    """The redis-server executable; skips the test (fails it under CI) if missing."""
    path = shutil.which("redis-server")
    if path is None and os.path.exists("/usr/bin/redis-server"):
        path = "/usr/bin/redis-server"
    if path is None:
        message = "redis-server is not installed (Debian package redis-server)"
        if redis_required():
            pytest.fail(f"CI or WSNEST_REQUIRE_REDIS is set but {message}", pytrace=False)
        pytest.skip(message)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers_ping(port: int, tls: bool) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw:
            sock = raw
            if tls:  # readiness only: the tests check the certificate themselves
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(raw)
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith((b"+PONG", b"-NOAUTH"))  # up, with or without a password
    except OSError:
        return False


class RedisServer:
    """One redis-server process (no persistence) on ``127.0.0.1:port``;
    with ``tls``, TLS only, with a self-signed certificate for 127.0.0.1
    in :attr:`cert_file`; with ``password``, clients must authenticate
    (:attr:`url` does not carry it)."""

    def __init__(self, directory: Path, *, tls: bool = False, password: str | None = None) -> None:
        self.executable = redis_server_path()
        self.directory = directory
        self.port = _free_port()
        self.tls = tls
        self.password = password
        self.cert_file = directory / "redis-cert.pem"
        self.process: subprocess.Popen[bytes] | None = None
        if tls:
            import wsnest

            pair = wsnest.write_cert("127.0.0.1")
            self.cert_file.write_text(pair.cert)
            (directory / "redis-key.pem").write_text(pair.key)

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0`` (``rediss://`` with TLS)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def _listen_args(self) -> list[str]:
        auth = ["--requirepass", self.password] if self.password else []
        if not self.tls:
            return ["--port", str(self.port), *auth]
        return [
            *auth,
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(self.cert_file),
            "--tls-key-file", str(self.directory / "redis-key.pem"),
            "--tls-ca-cert-file", str(self.cert_file),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def start(self) -> None:
        """Start the server and wait (bounded) until it answers PING."""
        assert self.process is None, "already running"
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [
                self.executable,
                *self._listen_args(),
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
        while not _answers_ping(self.port, self.tls):
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
