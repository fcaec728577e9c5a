"""The parent's side of the children: :class:`Child` (a process running one
role, JSON lines on stdout, commands on stdin) and :class:`RssSampler`."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from _util import set_affinity
from soaklib.common import BENCH, rss_kib

# -- parent side ------------------------------------------------------------------------------


class ChildError(RuntimeError):
    pass


class Child:
    """A child process running one role; JSON lines on stdout, commands on stdin."""

    def __init__(self, role: str, cfg: dict[str, Any], cpu: int | None, env: dict[str, str] | None = None) -> None:
        self.role = role
        self.err = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")  # noqa: SIM115
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "soak.py"), "_child", role, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.err,
            env=full_env,
        )
        if cpu is not None:
            set_affinity(self.proc.pid, cpu)
        self._buf = b""
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_text(self, limit: int = 3000) -> str:
        self.err.flush()
        self.err.seek(0)
        return self.err.read()[-limit:]

    def expect(self, event: str, timeout: float) -> dict[str, Any]:
        """The next JSON line whose ``event`` is ``event``."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                if line.startswith(b"{"):
                    msg = json.loads(line)
                    if msg.get("event") == event:
                        return msg  # type: ignore[no-any-return]
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChildError(f"{self.role}: no {event!r} within {timeout}s; stderr:\n{self.stderr_text()}")
            if self._sel.select(min(left, 0.2)):
                chunk = os.read(fd, 65536)
                if not chunk:
                    self.proc.wait()
                    raise ChildError(
                        f"{self.role}: exited ({self.proc.returncode}) before {event!r}; stderr:\n{self.stderr_text()}"
                    )
                self._buf += chunk

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(command.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._sel.close()
        self.err.close()


class RssSampler:
    """Samples a process's RSS every ``interval`` s in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self.start_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, rss_kib(self.pid))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.start_kib = self.peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
