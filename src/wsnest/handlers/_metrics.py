"""``handler_metrics``: the server's numbers in the Prometheus text format."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..http import Request
from ..server import PROMETHEUS_CONTENT_TYPE, stats_to_prometheus
from ._base import Handler, call_maybe_async, check_optional_callback, check_path

if TYPE_CHECKING:
    from ..server import Responder, ServerContext, Session

log = logging.getLogger("wsnest")

StatsSource = Callable[[], "Mapping[str, Any]"]


class MetricsHandler(Handler):
    """Serves a stats dict as Prometheus text; made by :func:`handler_metrics`."""

    rejects_body = True

    def __init__(self, path: str, source: StatsSource | None) -> None:
        self.path = check_path(path)
        self.source = check_optional_callback("source", source)

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> Session | None:
        try:
            stats = ctx.stats(all_workers=True) if self.source is None else await call_maybe_async(self.source)
            body = stats_to_prometheus(stats).encode("utf-8")
        except Exception:
            log.exception("wsnest: metrics source for %s failed", req.path)
            await conn.respond(req, 500, [("Content-Type", "text/plain; charset=utf-8")], b"Internal Server Error\n")
            return None
        headers = [("Content-Type", PROMETHEUS_CONTENT_TYPE), ("Cache-Control", "no-store")]
        await conn.respond(req, 200, headers, body)
        return None


def handler_metrics(path: str = "/metrics", source: StatsSource | None = None) -> MetricsHandler:
    """Serve the server's numbers on ``path`` in the Prometheus text
    exposition format 0.0.4.

    By default they are ``server.stats(all_workers=True)`` of the server
    that serves the request: under ``run(workers=N)`` every worker answers
    with the total of all workers (``wsnest_workers`` says how many), so a
    scrape that lands on any of them is complete. ``source``: a function
    (plain or ``async def``) returning the stats dict to serve instead.
    """
    return MetricsHandler(path, source)
