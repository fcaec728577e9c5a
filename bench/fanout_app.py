"""The server ``bench_fanout.py`` runs: one group of receivers and a publisher.

    python bench/fanout_app.py --mode redis --broker redis://127.0.0.1:P/0 --workers 2 --port 0

Routes (the paths of ``loadclient.py``'s broadcast scenarios):

``/bcast``
    a receiver: it is first sent one TEXT message ``worker <index>`` (so
    the load client can count how the kernel spread the connections over
    the workers), then joins the group ``room``.
``/trigger``
    every message here goes to the group: ``ws.publish("room", data)``
    (``--mode groups``: through the broker when there is one), or
    ``wsnest.broadcast`` to this process's receivers (``--mode broadcast``,
    the one-process baseline).
``/stats``
    ``server.stats(all_workers=True)`` as JSON (group publishes, members).
``/small``
    ``hello, world`` (the readiness probe of ``bench_workers.WorkersServer``).
"""

from __future__ import annotations

import argparse
import json

import wsnest

GROUP = "room"


def handlers(mode: str, server: list[wsnest.HttpServer]) -> list[wsnest.Handler]:
    """The routes; ``server`` holds the server once it is built (for ``/stats``)."""
    receivers: set[wsnest.WebSocket] = set()

    def on_open(ws: wsnest.WebSocket, req: object) -> None:
        worker = wsnest.current_worker()
        ws.send(f"worker {worker.index if worker is not None else 0}")  # before joining: arrives first
        ws.join(GROUP)
        receivers.add(ws)

    def publish(ws: wsnest.WebSocket, data: object) -> None:
        ws.publish(GROUP, data)  # type: ignore[arg-type]

    def broadcast(ws: wsnest.WebSocket, data: object) -> None:
        wsnest.broadcast(receivers, data)  # type: ignore[arg-type]

    def stats(req: object) -> dict[str, object]:
        return {
            "headers": [("content-type", "application/json")],
            "body": json.dumps(server[0].stats(all_workers=True)),
        }

    return [
        wsnest.handler("/small", lambda req: {"body": "hello, world"}),
        wsnest.handler("/stats", stats),
        wsnest.handler_ws(
            "/bcast", lambda ws, data: None, on_open=on_open, on_close=receivers.discard, textframes=None
        ),
        wsnest.handler_ws("/trigger", publish if mode == "groups" else broadcast, textframes=None),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=("groups", "broadcast"), required=True)
    parser.add_argument("--broker", help="redis://host:port/db (default: none)")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    box: list[wsnest.HttpServer] = []
    server = wsnest.http_server(
        f"http://127.0.0.1:{args.port}", handlers(args.mode, box), broker=args.broker, access_log=False
    )
    box.append(server)
    server.run(workers=args.workers)


if __name__ == "__main__":
    main()
