"""A live dashboard over server-sent events.

Run it, open the page, and post numbers to it from another terminal::

    python examples/sse_dashboard.py          # http://127.0.0.1:8080/
    curl -d '{"name": "queue", "value": 12}' http://127.0.0.1:8080/report

``GET /events`` is a ``handler_stream``: each viewer first gets a
``snapshot`` event with every metric, then one ``metric`` event per report.
``POST /report`` stores a metric and pushes it to every open stream; a
stream's ``on_close`` forgets a viewer that went away.
"""

from __future__ import annotations

import json

import wsnest

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dashboard</title></head>
<body><h1>Metrics</h1><table id="t"></table>
<script>
const table = document.getElementById("t");
function show(name, value) {
  let row = document.getElementById("m-" + name);
  if (!row) { row = table.insertRow(); row.id = "m-" + name; row.insertCell(); row.insertCell(); }
  row.cells[0].textContent = name; row.cells[1].textContent = value;
}
const events = new EventSource("/events");
events.addEventListener("snapshot", (e) => { for (const [k, v] of Object.entries(JSON.parse(e.data))) show(k, v); });
events.addEventListener("metric", (e) => { const m = JSON.parse(e.data); show(m.name, m.value); });
</script></body></html>
"""


def make_handlers() -> list[wsnest.Handler]:
    """The page at ``/``, the event stream at ``/events``, reports at ``/report``."""
    metrics: dict[str, float] = {}
    viewers: dict[int, wsnest.StreamConnection] = {}

    def watch(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.set_header("Content-Type", "text/event-stream")
        conn.set_header("Cache-Control", "no-cache")
        viewers[conn.id] = conn
        conn.send(wsnest.format_sse(json.dumps(metrics), event="snapshot"))

    def report(req: wsnest.Request) -> dict[str, object]:
        try:
            item = json.loads(req.body)
            name, value = str(item["name"]), float(item["value"])
        except (ValueError, KeyError, TypeError):
            return {"status": 400, "body": 'expected JSON: {"name": "...", "value": 1.5}\n'}
        metrics[name] = value
        event = wsnest.format_sse(json.dumps({"name": name, "value": value}), event="metric")
        for conn in list(viewers.values()):
            conn.send(event)  # never blocks; a gone viewer is dropped by on_close
        return {"status": 204, "body": None}

    return [
        wsnest.handler_inline("/", PAGE, content_type="text/html; charset=utf-8"),
        wsnest.handler_stream("/events", watch, on_close=lambda conn: viewers.pop(conn.id, None), method="GET"),
        wsnest.handler("/report", report, method="POST"),
    ]


if __name__ == "__main__":
    wsnest.http_server("http://127.0.0.1:8080", make_handlers()).run()
