"""SIGTERM to a supervisor with HTTP requests in flight: every response
completes and the supervisor exits 0 (each worker drains in aclose()).
Uses tests/test_workers.py's helpers and tests/workers_app.py's /slow handler.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import httpx

from test_workers import STOP_TIMEOUT, supervisor, wait_for


def test_sigterm_with_requests_in_flight_completes_them(tmp_path: Path) -> None:
    with supervisor(tmp_path, "--port", "0") as sup:
        results: list[httpx.Response | BaseException] = []
        lock = threading.Lock()

        def fetch() -> None:
            try:
                response: httpx.Response | BaseException = httpx.get(f"{sup.url}/slow?1.5", timeout=STOP_TIMEOUT)
            except BaseException as exc:  # recorded, then asserted on
                response = exc
            with lock:
                results.append(response)

        threads = [threading.Thread(target=fetch) for _ in range(8)]
        for thread in threads:
            thread.start()
        # Every request is inside its handler (the app logs it) before the signal.
        wait_for("8 requests in flight", lambda: sup.stderr().count("slow request started") == 8)
        code = sup.stop(signal.SIGTERM)
        for thread in threads:
            thread.join(STOP_TIMEOUT)
        assert code == 0, sup.stderr()
        assert len(results) == 8
        for response in results:
            assert isinstance(response, httpx.Response), response
            assert response.status_code == 200 and response.text.startswith("slow done"), response
