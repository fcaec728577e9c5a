"""The demo served by ``python -m wsnest``: a chat page at ``/``, its
WebSocket at ``/ws``, and over server-sent events at ``/events`` a server
clock and the server's live numbers."""

from __future__ import annotations

import functools
import itertools
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

from .core import CORE
from .handlers import Handler, handler, handler_stream, handler_ws
from .handlers._stream import StreamConnection, format_sse
from .http import Request
from .server import WebSocket, broadcast, current_worker

#: Seconds between two ``time``/``stats`` events of ``/events``.
TICK = 1.0

StatsSource = Callable[[], Mapping[str, Any]]

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wsnest demo</title>
<style>
  body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
  h1 { margin-bottom: .3rem; }
  #log { border: 1px solid #ccc; height: 18rem; overflow-y: auto; padding: .5rem; }
  #log p { margin: .2rem 0; }
  form { display: flex; gap: .5rem; margin-top: .5rem; }
  #text { flex: 1; }
  #panel { border: 1px solid #ddd; border-radius: 6px; background: #fafafa; padding: .6rem .8rem; margin: 1rem 0; }
  #numbers { display: flex; flex-wrap: wrap; gap: .4rem 1.4rem; align-items: flex-end; }
  #numbers div { display: flex; flex-direction: column; }
  #numbers b { font-size: 1.3rem; font-variant-numeric: tabular-nums; }
  #numbers span, .meta { font-size: .8rem; color: #666; }
  #spark { display: block; width: 100%; height: 2rem; margin-top: .5rem; border-bottom: 1px solid #e4e4e4; }
  #spark-line { fill: none; stroke: #2a7ae2; stroke-width: 1.5; vector-effect: non-scaling-stroke; }
  #spark-area { fill: #2a7ae2; opacity: .12; }
  .meta { margin: .4rem 0 0; }
  .note { font-size: .85rem; color: #8a5a00; }
  .note.shared { color: #2d6a2d; }
</style>
</head>
<body>
<h1>wsnest chat</h1>
<p>Server time: <span id="clock">(waiting)</span> &middot; status: <span id="status">connecting</span></p>
<section id="panel" hidden>
  <div id="numbers">
    <div><b id="n-ws">0</b><span>WebSockets</span></div>
    <div><b id="n-stream">0</b><span>event streams</span></div>
    <div><b id="n-http">0</b><span>HTTP</span></div>
    <div><b id="n-req">0</b><span>requests</span></div>
    <div><b id="n-rate">0</b><span>messages/s</span></div>
  </div>
  <svg id="spark" viewBox="0 0 60 20" preserveAspectRatio="none" role="img" aria-label="messages/s, last 60 s">
    <title>messages/s, last 60 s</title><path id="spark-area" d=""/><path id="spark-line" d=""/></svg>
  <p class="meta">core <b id="core">{core}</b> &middot; <span id="served">{served}</span>{across}</p>
</section>
{note}<div id="log"></div>
<form id="form"><input id="text" autocomplete="off" placeholder="Say something"><button>Send</button></form>
<script>
const $ = (id) => document.getElementById(id);
const log = $("log");
function show(text) {
  const p = document.createElement("p");
  p.textContent = text;
  log.appendChild(p);
  log.scrollTop = log.scrollHeight;
}
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
ws.onopen = () => { $("status").textContent = "connected"; };
ws.onclose = () => { $("status").textContent = "closed"; };
ws.onmessage = (event) => show(event.data);
$("form").onsubmit = (event) => {
  event.preventDefault();
  const input = $("text");
  if (input.value && ws.readyState === WebSocket.OPEN) ws.send(input.value);
  input.value = "";
};
const events = new EventSource("/events");
events.addEventListener("time", (event) => { $("clock").textContent = event.data; });
const rates = [];  // messages/s, one a second, the last 60
function spark() {
  const top = Math.max(1, ...rates);
  const x0 = 60 - rates.length;
  const line = rates.map((r, i) => (i ? "L" : "M") + (x0 + i + 1) + "," + (19 - 18 * r / top).toFixed(1)).join("");
  $("spark-line").setAttribute("d", line);
  if (rates.length > 1) $("spark-area").setAttribute("d", line + "L60,20L" + (x0 + 1) + ",20Z");
}
events.addEventListener("stats", (event) => {
  const s = JSON.parse(event.data), c = s.connections || {};
  $("n-ws").textContent = c.websocket || 0;
  $("n-stream").textContent = c.stream || 0;
  $("n-http").textContent = c.http || 0;
  $("n-req").textContent = s.http_requests;
  if (s.messages_per_s !== null) {
    const r = s.messages_per_s;
    $("n-rate").textContent = r < 10 ? r.toFixed(1) : Math.round(r);
    rates.push(r);
    if (rates.length > 60) rates.shift();
    spark();
  }
  $("panel").hidden = false;
});
</script>
</body>
</html>
"""

NOTE = (
    '<p class="note">This server runs {count} worker processes: chat messages reach the users connected '
    "to the same worker only. Start it with <code>--redis URL</code> to chat across workers.</p>\n"
)
NOTE_REDIS = (
    '<p class="note shared">This server runs {count} worker processes: chat reaches every worker '
    "(and every other server on the same Redis) through Redis.</p>\n"
)
NOTE_REDIS_SINGLE = '<p class="note shared">Chat reaches every server on the same Redis through Redis.</p>\n'

#: The group every chat user joins.
CHAT = "chat"


def _chat_is_local(broker: bool) -> bool:
    """True when groups cannot reach every chat user (several workers and
    no broker): the chat then stays within each worker."""
    worker = current_worker()
    return not broker and worker is not None and worker.count > 1


@functools.lru_cache(maxsize=4)
def render_page(pid: int, broker: bool = False) -> bytes:
    """The page as served by this process (``pid`` keys the cache: each
    forked worker renders its own once); ``broker``: the server has one."""
    worker = current_worker()
    if worker is None:
        served, across, note = f"single process (pid {pid})", "", NOTE_REDIS_SINGLE if broker else ""
    else:
        served = f"served by worker {worker.index + 1} of {worker.count} (pid {pid})"
        across = " &middot; numbers of all workers"
        note = (NOTE_REDIS if broker else NOTE).format(count=worker.count)
    page = PAGE  # placeholders replaced one by one: the CSS and JS are full of braces
    for key, value in (("{core}", CORE), ("{served}", served), ("{across}", across), ("{note}", note)):
        page = page.replace(key, value)
    return page.encode("utf-8")


def stats_event(stats: Mapping[str, Any], rate: float | None) -> str:
    """The ``stats`` event: the server's numbers as one JSON line, plus
    ``messages_per_s`` (WebSocket messages in + out per second since the
    previous event of the stream; null on its first)."""
    data = dict(stats, messages_per_s=None if rate is None else round(rate, 2))
    return format_sse(json.dumps(data, separators=(",", ":")), event="stats")


def demo_handlers(stats: StatsSource | None = None, broker: bool = False) -> list[Handler]:
    """The demo's handlers: a chat room over WebSocket, its page, a clock.

    ``stats``: where the page's live numbers come from, called once a
    second per open page (``python -m wsnest`` passes the server's
    ``stats(all_workers=True)``); without it the page shows no numbers.

    ``broker``: the server has one (``--redis``). Every chat user joins the
    group ``chat`` and lines are published to it: in one process, or with
    a broker across every worker and server sharing it. Under several
    workers without a broker groups refuse (a line would silently reach
    only part of the room), so each worker then keeps its own room with
    ``broadcast`` and the page says so.
    """
    local: dict[int, WebSocket] = {}  # the room of this worker, when the chat is local
    names: dict[int, str] = {}
    # ws.id counts streams too (the clock), so the chat numbers its own users.
    numbers = itertools.count(1)

    def page(req: Request) -> dict[str, Any]:
        headers = {"Content-Type": "text/html; charset=utf-8", "Cache-Control": "no-cache"}
        return {"headers": headers, "body": render_page(os.getpid(), broker)}

    def say(ws: WebSocket, line: str) -> None:
        if _chat_is_local(broker):
            broadcast(local.values(), line)
        else:
            ws.publish(CHAT, line)

    def on_open(ws: WebSocket, req: Request) -> None:
        worker = current_worker()
        # Other processes number their users too: there the pid tells them apart.
        alone = worker is None and not broker
        name = names[ws.id] = f"user {next(numbers)}" if alone else f"user {os.getpid()}.{next(numbers)}"
        where = "" if worker is None else f", on worker {worker.index + 1} of {worker.count}"
        ws.send(f"* you are {name}{where}")
        if _chat_is_local(broker):
            local[ws.id] = ws
        else:
            ws.join(CHAT)
        say(ws, f"* {name} joined")

    def on_message(ws: WebSocket, data: str) -> None:
        say(ws, f"{names[ws.id]}: {data}")

    def on_close(ws: WebSocket) -> None:
        local.pop(ws.id, None)
        ws.leave(CHAT)
        say(ws, f"* {names.pop(ws.id)} left")

    async def ticker(conn: StreamConnection, req: Request) -> None:
        conn.set_header("Content-Type", "text/event-stream")
        conn.set_header("Cache-Control", "no-cache")
        last: tuple[float, int] | None = None  # (time, messages) at the previous event
        while conn.send(format_sse(time.strftime("%H:%M:%S"), event="time")) == 0:
            if stats is not None:
                snapshot = stats()
                now, total = trio.current_time(), snapshot["ws_messages_in"] + snapshot["ws_messages_out"]
                # max(0, ...): a restarted worker counts from zero again.
                rate = None if last is None else max(0, total - last[1]) / max(now - last[0], 1e-3)
                last = (now, total)
                if conn.send(stats_event(snapshot, rate)) != 0:
                    break
            await trio.sleep(TICK)

    return [
        handler("/", page),
        handler_ws("/ws", on_message, on_open, on_close, textframes=True),
        handler_stream("/events", ticker, method="GET"),
    ]
