"""Synchronous looks into a real redis-server for the subprocess tests
(test_cli.py, test_demo_browser.py): how many processes follow a channel."""

from __future__ import annotations

import re
import socket
import time

#: How long the servers under test may take to subscribe.
SUBSCRIBE_TIMEOUT = 10.0


def _command(*words: str) -> bytes:
    """One command in the Redis protocol (RESP arrays of bulk strings)."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def numsub(port: int, channel: str) -> int:
    """``PUBSUB NUMSUB channel``: the connections subscribed to it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(_command("PUBSUB", "NUMSUB", channel))
        reply = b""
        # The reply: *2, the channel as a bulk string, then :count.
        while not re.search(rb":(\d+)\r\n$", reply):
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"redis closed the connection; got {reply!r}")
            reply += chunk
    match = re.search(rb":(\d+)\r\n$", reply)
    assert match is not None
    return int(match.group(1))


def wait_numsub(port: int, channel: str, expected: int) -> None:
    """Poll (bounded) until ``expected`` connections follow ``channel``:
    the servers under test subscribe in their own time, and a message
    published before that would not reach them (at most once)."""
    deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
    while (count := numsub(port, channel)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} subscribers of {channel!r} after {SUBSCRIBE_TIMEOUT} s, expected {expected}")
        time.sleep(0.01)  # polling an external process
