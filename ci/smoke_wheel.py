"""Smoke test of an installed wsnest: a WebSocket echo over loopback.

Run by ci/dist.sh in a fresh venv holding only the built wheel, from a
directory outside the checkout. Exits non-zero if the compiled core is not
the active one, or if a text and a binary message do not come back.
"""

from __future__ import annotations

import sys

import trio

import wsnest


async def main() -> None:
    if wsnest.CORE != "compiled":
        sys.exit(f"core: {wsnest.CORE} (expected compiled), from {wsnest.__file__}")
    # textframes=None: a text message reaches the handler as str and goes back as text.
    echo = wsnest.handler_ws("/ws", lambda ws, data: ws.send(data), textframes=None)
    server = wsnest.http_server("http://127.0.0.1:0", [echo])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(server.serve)
            async with wsnest.connect("ws" + url[len("http") :] + "/ws") as ws:
                for message in ("hello", b"\x00\x01" * 40_000):
                    ws.send(message)
                    echoed = await ws.receive()
                    assert echoed == message, (message[:20], echoed[:20])
            await server.aclose()
    print(f"smoke: echo OK (wsnest {wsnest.__version__} from {wsnest.__file__})")


if __name__ == "__main__":
    trio.run(main)
