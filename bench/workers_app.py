"""The application ``bench_workers.py`` serves with ``wsnest serve
workers_app:handlers --workers N``: the same two routes as the other
benchmarks, ``GET /small`` (``hello, world``) and a WebSocket echo at
``/ws`` (a plain callback, as in ``bench/servers.py``)."""

from __future__ import annotations

import wsnest


def _echo(ws: wsnest.WebSocket, data: bytes | str) -> None:
    ws.send(data)


def handlers() -> list[wsnest.Handler]:
    """The benchmark's routes."""
    return [
        wsnest.handler("/small", lambda req: {"body": "hello, world"}),
        wsnest.handler_ws("/ws", _echo),
    ]
