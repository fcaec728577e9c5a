"""The demo's handlers in process (``wsnest._demo``): the ``stats`` event
of ``/events`` and the page, without a browser (tests/test_demo_browser.py
drives the page in Chromium, tests/test_cli.py runs ``python -m wsnest``)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import trio

import wsnest
from serverutil import TIMEOUT, running_server
from wsnest._demo import demo_handlers, render_page, stats_event


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=TIMEOUT)


async def read_events(url: str, count: int) -> list[tuple[str, str]]:
    """The first ``count`` events of ``url`` as ``(event, data)``."""
    events: list[tuple[str, str]] = []
    event = data = ""
    async with http_client() as http, http.stream("GET", url) as r:
        assert r.headers["content-type"] == "text/event-stream"
        async for line in r.aiter_lines():
            if line.startswith("event: "):
                event = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
            elif not line:
                events.append((event, data))
                if len(events) == count:
                    break
    return events


def test_stats_event_is_one_json_line() -> None:
    text = stats_event({"core": "pure", "connections": {"websocket": 2}}, 2.345)
    assert text == 'event: stats\ndata: {"core":"pure","connections":{"websocket":2},"messages_per_s":2.35}\n\n'
    assert '"messages_per_s":null' in stats_event({"core": "pure"}, None)


def test_page_names_the_process() -> None:
    page = render_page(os.getpid()).decode()
    assert f"single process (pid {os.getpid()})" in page
    assert f'<b id="core">{wsnest.CORE}</b>' in page
    assert "{" + "served}" not in page and "same worker" not in page


async def test_stats_events_from_the_server() -> None:
    """Each tick: a ``time`` event, then the server's numbers; the rate
    comes from the change of the message totals between two ticks."""
    calls: list[dict[str, Any]] = []
    box: list[wsnest.HttpServer] = []

    def source() -> dict[str, Any]:
        calls.append(box[0].stats(all_workers=True))
        return calls[-1]

    async with running_server(demo_handlers(stats=source)) as (server, url):
        box.append(server)
        with trio.fail_after(TIMEOUT):
            events = await read_events(url + "/events", 4)
    assert [e for e, _ in events] == ["time", "stats", "time", "stats"]
    first, second = (json.loads(d) for e, d in events if e == "stats")
    assert first["core"] == wsnest.CORE and first["pid"] == os.getpid()
    assert first["connections"]["stream"] == 1
    assert first["messages_per_s"] is None and second["messages_per_s"] == 0.0
    assert len(calls) == 2


async def test_without_a_source_only_the_clock() -> None:
    async with running_server(demo_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT):
            events = await read_events(url + "/events", 2)
        async with http_client() as http:
            page = (await http.get(url + "/")).text
    assert [e for e, _ in events] == ["time", "time"]
    assert '<section id="panel" hidden>' in page  # the script shows it on a stats event
