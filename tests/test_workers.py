"""Worker processes (``--workers N`` / ``server.run(workers=N)``), run as
real subprocesses: ``python -m wsnest serve workers_app:handlers --workers 2``.

Each server runs in its own session (process group) and the cleanup kills
the whole group, so a failed test leaves no worker behind. Waits poll with
deadlines; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client
from websockets.sync.client import ClientConnection

import wsnest
from wsnest.server._worker_board import WorkerBoard

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers need os.fork")

TESTS = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0
SERVING = re.compile(r"^Serving at (\S+) - press Ctrl\+C to stop$")
READY = re.compile(r"worker (\d+) \(pid (\d+)\) ready")


def _env() -> dict[str, str]:
    env = dict(os.environ)  # WSNEST_NO_EXTENSIONS is inherited: the same core as this process
    src = os.path.dirname(os.path.dirname(os.path.abspath(wsnest.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, str(TESTS), os.environ.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def wait_for(what: str, check: Callable[[], Any], timeout: float = STARTUP_TIMEOUT) -> Any:
    """Poll ``check()`` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Supervisor:
    """A running ``wsnest serve ... --workers N`` and its URL."""

    def __init__(self, proc: subprocess.Popen[str], url: str, stderr_path: Path) -> None:
        self.proc = proc
        self.url = url
        self.stderr_path = stderr_path

    @property
    def ws_url(self) -> str:
        return "ws" + self.url[len("http") :] + "/ws"

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def ready(self) -> list[tuple[int, int]]:
        """Every ``(index, pid)`` that reported ready, in order."""
        return [(int(i), int(p)) for i, p in READY.findall(self.stderr())]

    def stop(self, sig: int = signal.SIGTERM, group: bool = False) -> int:
        if group:
            os.killpg(self.proc.pid, sig)  # what Ctrl+C in a terminal does
        else:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the supervisor did not stop within {STOP_TIMEOUT}s; stderr: {self.stderr()}")


@contextmanager
def supervisor(cwd: Path, *args: str, workers: int = 2) -> Iterator[Supervisor]:
    """Start the CLI with workers and wait for its startup line."""
    stderr_path = cwd / f"stderr-{len(list(cwd.glob('stderr-*')))}.txt"
    cmd = [sys.executable, "-u", "-m", "wsnest", "serve", "workers_app:handlers", "--workers", str(workers), *args]
    with open(stderr_path, "w") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
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
            raise AssertionError(f"no startup line: {line!r} rc={proc.poll()} stderr={stderr_path.read_text()!r}")
        yield Supervisor(proc, match.group(1), stderr_path)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=STOP_TIMEOUT)
        else:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # any worker left behind
        proc.stdout.close()  # type: ignore[union-attr]


def ask(ws: ClientConnection) -> dict[str, Any]:
    """One round trip: the worker's answer (index, pid, generation, id)."""
    ws.send("who")
    answer: dict[str, Any] = json.loads(ws.recv(timeout=10))
    return answer


def open_clients(stack: ExitStack, url: str, n: int) -> list[tuple[ClientConnection, dict[str, Any]]]:
    """``n`` clients (closed with ``stack``), each with its first answer."""
    clients = []
    for _ in range(n):
        ws = stack.enter_context(websockets.sync.client.connect(url, open_timeout=10, close_timeout=2))
        clients.append((ws, ask(ws)))
    return clients


# -- one server for the tests that do not stop it ---------------------------------------


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervisor]:
    with supervisor(tmp_path_factory.mktemp("workers"), "--port", "0") as sup:
        yield sup


@pytest.fixture(scope="module")
def answers(shared: Supervisor) -> list[dict[str, Any]]:
    """200 WebSocket clients open at once, each asked which worker it has."""
    with ExitStack() as stack:
        return [answer for _, answer in open_clients(stack, shared.ws_url, 200)]


def test_connections_spread_over_both_workers(answers: list[dict[str, Any]]) -> None:
    per_worker = Counter(a["index"] for a in answers)
    assert set(per_worker) == {0, 1}, per_worker
    for index in (0, 1):
        assert 60 <= per_worker[index] <= 140, per_worker  # 30 % .. 70 % of 200
    assert {a["count"] for a in answers} == {2}
    assert len({a["pid"] for a in answers}) == 2


def test_ids_unique_across_workers(answers: list[dict[str, Any]]) -> None:
    ids = [a["id"] for a in answers]
    assert len(set(ids)) == len(ids)
    for a in answers:
        assert a["id"] >> 32 == a["generation"] >= 1  # (generation << 32) | n
        assert 0 < a["id"] < 2**53
    assert len({a["generation"] for a in answers}) == 2  # one per worker process


def _metrics(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """GET /metrics, parsed by prometheus_client: {name: {labels: value}}."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def test_metrics_total_every_worker(shared: Supervisor) -> None:
    """Whichever worker answers /metrics, it counts the WebSockets and
    messages of both (the others' numbers as published, so poll)."""
    with ExitStack() as stack:
        clients = open_clients(stack, shared.ws_url, 40)
        on = Counter(answer["index"] for _, answer in clients)
        assert set(on) == {0, 1}, on  # both workers hold some of them
        for ws, _ in clients:
            ask(ws)  # 2 messages in, 2 out per client in all

        def settled() -> dict[str, Any] | None:
            m = _metrics(shared.url)
            open_ws = m["wsnest_connections"][(("kind", "websocket"),)]
            msgs_in = m["wsnest_ws_messages_total"][(("direction", "in"),)]
            return m if open_ws == 40 and msgs_in >= 80 else None

        m = wait_for("both workers' numbers in /metrics", settled)
        assert m["wsnest_workers"][()] == 2
        assert len(m["wsnest_info"]) == 2  # one sample per worker process
        assert m["wsnest_ws_messages_total"][(("direction", "out"),)] >= 80


def test_killed_worker_is_replaced_and_the_other_never_notices(shared: Supervisor) -> None:
    with ExitStack() as stack:
        clients = open_clients(stack, shared.ws_url, 20)
        # Enough clients on each worker (more connections if the hash was lopsided).
        for _ in range(200):
            if min(Counter(a["index"] for _, a in clients).get(i, 0) for i in (0, 1)) >= 3:
                break
            clients += open_clients(stack, shared.ws_url, 1)
        victim = next(a["pid"] for _, a in clients if a["index"] == 1)
        survivors = [ws for ws, a in clients if a["index"] == 0]
        os.kill(victim, signal.SIGKILL)
        for ws in survivors:
            for _ in range(3):
                assert ask(ws)["index"] == 0
        wait_for(
            "the supervisor to log the death",
            lambda: f"worker 1 (pid {victim}) was killed by SIGKILL" in shared.stderr(),
        )
        replacement = wait_for(
            "a new worker 1", lambda: [p for i, p in shared.ready() if i == 1 and p != victim], STOP_TIMEOUT
        )[-1]
        for ws in survivors:  # still the same connections, still answering
            assert ask(ws)["index"] == 0

        def reach_replacement() -> bool:
            extra = open_clients(stack, shared.ws_url, 1)
            clients.extend(extra)
            answer = extra[0][1]
            return bool(answer["index"] == 1 and answer["pid"] == replacement)

        wait_for("a client served by the new worker", reach_replacement, STOP_TIMEOUT)
        assert "restarting it in 0.1 s" in shared.stderr()


# -- stopping -------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_stop_ends_every_worker_with_exit_0(tmp_path: Path, how: str) -> None:
    with supervisor(tmp_path, "--port", "0") as sup:
        workers = wait_for("two ready workers", lambda: len(sup.ready()) == 2 and sup.ready())
        with websockets.sync.client.connect(sup.ws_url, open_timeout=10) as ws:
            assert ask(ws)["count"] == 2
            code = sup.stop(signal.SIGTERM) if how == "sigterm" else sup.stop(signal.SIGINT, group=True)
        assert code == 0, sup.stderr()
        log = sup.stderr()
        for index, pid in workers:
            assert f"worker {index} (pid {pid}) stopped (exited with status 0)" in log, log
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert "Traceback" not in log and "killed" not in log, log


def test_unix_socket_shared_by_workers(tmp_path: Path) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="wsn") as d:  # short: a socket path has ~100 bytes
        path = os.path.join(d, "w.sock")
        with supervisor(tmp_path, "--uds", path) as sup:
            assert sup.url == f"unix:{path}"
            with httpx.Client(transport=httpx.HTTPTransport(uds=path), timeout=10) as client:
                for _ in range(10):
                    who = client.get("http://localhost/who").json()
                    assert who["count"] == 2 and who["index"] in (0, 1)
            assert sup.stop() == 0, sup.stderr()
        assert not os.path.exists(path)  # removed once, by the supervisor


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
def test_workers_stop_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with supervisor(tmp_path, "--port", "0") as sup:
        workers = wait_for("two ready workers", lambda: len(sup.ready()) == 2 and sup.ready())
        sup.proc.kill()  # SIGKILL: no chance to forward anything
        sup.proc.wait(timeout=STOP_TIMEOUT)
        wait_for("orphaned workers to exit", lambda: all(_gone(pid) for _, pid in workers), STOP_TIMEOUT)
        assert sup.stderr().count("is gone; stopping") == 2


# -- failures at startup -------------------------------------------------------------------

FAILING = textwrap.dedent(
    """
    import sys
    import wsnest

    server = wsnest.http_server("http://127.0.0.1:0", [])

    async def broken_serve(**kw):
        raise RuntimeError("the app cannot start")

    server.serve = broken_serve  # what any error before the worker is ready looks like
    try:
        server.run(workers=2)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    """
)


def test_worker_that_cannot_start_stops_everything_once(tmp_path: Path) -> None:
    (tmp_path / "failing.py").write_text(FAILING)
    result = subprocess.run(
        [sys.executable, "failing.py"],
        cwd=tmp_path,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )
    assert result.returncode == 1, result
    assert result.stderr.count("the app cannot start") == 1, result.stderr
    assert "error: worker " in result.stderr and "failed to start: RuntimeError: the app cannot start" in result.stderr
    assert "restarting" not in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert "Serving at" not in result.stdout


STUCK = textwrap.dedent(
    """
    import logging, sys, time
    import wsnest
    import wsnest.server._supervisor as supervisor

    supervisor.STOP_MARGIN = 0.5  # keeps the test short: close_timeout 0.2 + 0.5

    def stuck(req):
        logging.getLogger("app").warning("stuck request started")
        time.sleep(60)  # blocks the worker's event loop: it cannot even see SIGTERM

    logging.basicConfig(level="INFO")
    server = wsnest.http_server("http://127.0.0.1:0", [wsnest.handler("/stuck", stuck)], close_timeout=0.2)
    server.run(workers=2)
    """
)


def test_worker_that_does_not_stop_is_killed(tmp_path: Path) -> None:
    (tmp_path / "stuck.py").write_text(STUCK)
    err_path = tmp_path / "stuck-err.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-u", "stuck.py"],
            cwd=tmp_path,
            env=_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            start_new_session=True,
        )
    try:
        assert proc.stdout is not None
        match = SERVING.match(proc.stdout.readline().strip())
        assert match, err_path.read_text()
        url = match.group(1)

        def request_stuck() -> None:
            with suppress(httpx.HTTPError):  # its worker gets killed: no response
                httpx.get(url + "/stuck", timeout=30)

        threading.Thread(target=request_stuck, daemon=True).start()
        wait_for("the stuck request", lambda: "stuck request started" in err_path.read_text())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT) == 0
        log = err_path.read_text()
        assert log.count("did not stop in time: killed") == 1, log
        assert log.count("stopped (exited with status 0)") == 1, log  # the other worker stopped by itself
    finally:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)
        proc.stdout.close()  # type: ignore[union-attr]


def test_workers_need_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "fork")
    server = wsnest.http_server("http://127.0.0.1:0", [])
    with pytest.raises(RuntimeError, match="not supported on this platform"):
        server.run(workers=2)


def _run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wsnest", "serve", "workers_app:handlers", *args],
        cwd=cwd,
        env=_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
        start_new_session=True,
    )


def test_cli_workers_port_in_use_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _run_cli(tmp_path, "--workers", "2", "--port", str(port))
    assert result.returncode == 1, result
    assert result.stderr.strip() == f"wsnest: error: cannot listen on 127.0.0.1:{port}: Address already in use"


@pytest.mark.parametrize("value", ["0", "-1", "257"])
def test_cli_workers_out_of_range(tmp_path: Path, value: str) -> None:
    result = _run_cli(tmp_path, "--workers", value)
    assert result.returncode == 2, result
    assert result.stderr.startswith("wsnest: error: --workers: expected an int from 1 to 256"), result.stderr


@pytest.mark.parametrize("value", [0, -3, 257, 2.0, True, "2"])
def test_run_workers_validated(value: Any) -> None:
    server = wsnest.http_server("http://127.0.0.1:0", [])
    with pytest.raises(ValueError, match=r"^workers: expected an int from 1 to 256"):
        server.run(workers=value)
    assert server.state == "not started"


# -- the numbers board --------------------------------------------------------------------


def test_board_across_a_fork() -> None:
    board = WorkerBoard(2, slot_size=4096)
    assert board.read_all() == [None, None]
    with pytest.raises(ValueError, match="exceeds"):
        board.publish(0, b"x" * (board.capacity + 1))
    stop_r, stop_w = os.pipe()
    os.set_blocking(stop_r, False)
    pid = os.fork()
    if pid == 0:  # the writer: whole payloads of one repeated byte, lengths varying, until told to stop
        code = 1
        try:
            n = 0
            while True:
                n += 1
                board.publish(1, bytes([n % 251]) * (1 + n * 7 % board.capacity))
                try:
                    if os.read(stop_r, 1):
                        break
                except BlockingIOError:
                    pass
            board.publish(1, b"done")
            code = 0
        finally:
            os._exit(code)
    board.publish(0, b"from the parent")
    seen: set[bytes] = set()
    try:
        deadline = time.monotonic() + 30
        while len(seen) < 200 and time.monotonic() < deadline:  # reads racing the writer
            data = board.read(1)
            if data is not None:
                assert data == data[:1] * len(data), "a torn read"  # one repeated byte, never a mix
                seen.add(data)
        os.write(stop_w, b"s")
        _, status = os.waitpid(pid, 0)
        pid = 0
        assert os.waitstatus_to_exitcode(status) == 0
        assert board.read_all() == [b"from the parent", b"done"]
        assert len(seen) >= 200
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(stop_r)
        os.close(stop_w)
        board.close()
