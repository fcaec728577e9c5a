"""Synchronous looks into a real redis-server for the subprocess tests
(test_cli.py, test_demo_browser.py): how many processes follow a channel."""

from __future__ import annotations

import subprocess
import time

#: How long the servers under test may take to subscribe.
SUBSCRIBE_TIMEOUT = 10.0


def numsub(port: int, channel: str) -> int:
    """``PUBSUB NUMSUB channel`` (asked with ``redis-cli``, which comes with
    redis-server): the connections subscribed to it."""
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "PUBSUB", "NUMSUB", channel],
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    ).stdout.split()
    return int(out[1])


def wait_numsub(port: int, channel: str, expected: int) -> None:
    """Poll (bounded) until ``expected`` connections follow ``channel``:
    the servers under test subscribe in their own time, and a message
    published before that would not reach them (at most once)."""
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
    while (count := numsub(port, channel)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} subscribers of {channel!r} after {SUBSCRIBE_TIMEOUT} s, expected {expected}")
        time.sleep(0.01)  # polling an external process
