"""The demo served by ``python -m wsnest``: a chat page at ``/``, its
WebSocket at ``/ws`` and a server clock over server-sent events at
``/events``."""

from __future__ import annotations

import itertools
import time

import trio

from .handlers import Handler, handler_inline, handler_stream, handler_ws
from .handlers._stream import StreamConnection, format_sse
from .http import Request
from .server import WebSocket, broadcast

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wsnest demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
  #log { border: 1px solid #ccc; height: 18rem; overflow-y: auto; padding: .5rem; }
  #log p { margin: .2rem 0; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  #text { flex: 1; }
</style>
</head>
<body>
<h1>wsnest chat</h1>
<p>Server time: <span id="clock">(waiting)</span> &middot; status: <span id="status">connecting</span></p>
<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" placeholder="Say something"><button>Send</button></form>
<script>
const log = document.getElementById("log");
function show(text) {
  const p = document.createElement("p");
  p.textContent = text;
  log.appendChild(p);
  log.scrollTop = log.scrollHeight;
}
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
ws.onopen = () => { document.getElementById("status").textContent = "connected"; };
ws.onclose = () => { document.getElementById("status").textContent = "closed"; };
ws.onmessage = (event) => show(event.data);
document.getElementById("form").onsubmit = (event) => {
  event.preventDefault();
  const input = document.getElementById("text");
  if (input.value && ws.readyState === WebSocket.OPEN) ws.send(input.value);
  input.value = "";
};
const clock = new EventSource("/events");
clock.addEventListener("time", (event) => { document.getElementById("clock").textContent = event.data; });
</script>
</body>
</html>
"""


def demo_handlers() -> list[Handler]:
    """The demo's handlers: a chat room over WebSocket, its page, a clock."""
    members: dict[int, WebSocket] = {}
    names: dict[int, str] = {}
    # ws.id counts streams too (the clock), so the chat numbers its own users.
    numbers = itertools.count(1)

    def on_open(ws: WebSocket, req: Request) -> None:
        members[ws.id] = ws
        names[ws.id] = f"user {next(numbers)}"
        broadcast(members.values(), f"* {names[ws.id]} joined")

    def on_message(ws: WebSocket, data: str) -> None:
        broadcast(members.values(), f"{names[ws.id]}: {data}")

    def on_close(ws: WebSocket) -> None:
        members.pop(ws.id, None)
        broadcast(members.values(), f"* {names.pop(ws.id)} left")

    async def clock(conn: StreamConnection, req: Request) -> None:
        conn.set_header("Content-Type", "text/event-stream")
        conn.set_header("Cache-Control", "no-cache")
        while conn.send(format_sse(time.strftime("%H:%M:%S"), event="time")) == 0:
            await trio.sleep(1)

    return [
        handler_inline("/", PAGE, content_type="text/html; charset=utf-8"),
        handler_ws("/ws", on_message, on_open, on_close, textframes=True),
        handler_stream("/events", clock, method="GET"),
    ]
