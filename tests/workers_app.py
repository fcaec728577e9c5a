"""The app the worker tests serve (``python -m wsnest serve workers_app:handlers``).

Every answer says which worker process sent it.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import trio

import wsnest


def _who() -> dict[str, Any]:
    worker = wsnest.current_worker()
    return {
        "index": None if worker is None else worker.index,
        "count": None if worker is None else worker.count,
        "generation": 0 if worker is None else worker.generation,
        "pid": os.getpid(),
    }


def _on_message(ws: wsnest.WebSocket, data: str | bytes) -> None:
    ws.send(json.dumps({**_who(), "id": ws.id}))


def _who_http(req: wsnest.Request) -> dict[str, Any]:
    return {"headers": {"Content-Type": "application/json"}, "body": json.dumps(_who())}


async def _slow(req: wsnest.Request) -> dict[str, Any]:
    # /slow?SECONDS: answers after that long (a request in flight at shutdown).
    logging.getLogger("workers_app").warning("slow request started in %d", os.getpid())  # the test waits for it
    await trio.sleep(float(req.query or "1"))
    return {"body": f"slow done {os.getpid()}"}


handlers = [
    wsnest.handler_ws("/ws", _on_message, textframes=True),
    wsnest.handler("/who", _who_http),
    wsnest.handler("/slow", _slow),
    wsnest.handler_metrics("/metrics"),  # the total of every worker
]
