"""The wsnest echo server that the Autobahn fuzzingclient tests (server role).

    PYTHONPATH=src python3 autobahn/echo_server.py [PORT]     # 0 (default): any free port

Listens on 127.0.0.1 and echoes every message with its frame type
(textframes=None), permessage-deflate on, messages up to 64 MiB.  Prints its URL,
with the real port, on the first line of stdout once it listens.
"""

from __future__ import annotations

import sys

import trio

import wsnest


def echo(ws: wsnest.WebSocket, data: str | bytes) -> None:
    """Send every message straight back."""
    ws.send(data)


async def main(port: int) -> None:
    server = wsnest.http_server(
        f"http://127.0.0.1:{port}",
        [wsnest.handler_ws("/", echo, textframes=None, permessage_deflate=True)],
        max_message_size=64 * 2**20,
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        print(str(url).replace("http://", "ws://", 1), flush=True)


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 0)
