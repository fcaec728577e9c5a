"""The demo's handlers in process (``wsnest._demo``): the ``stats`` event
of ``/events``, the page, and the chat as a group (in memory, and between
two servers on a real redis-server), without a browser (tests/test_demo_browser.py
drives the page in Chromium, tests/test_cli.py runs ``python -m wsnest``)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import trio

import wsnest
from _redis_server import RedisServer
from redisutil import wait_numsub
from serverutil import TIMEOUT, running_server, ws_url
from wsnest._demo import CHAT, demo_handlers, render_page, stats_event
from wsnest.server._groups import CHANNEL_PREFIX


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


async def receive_until(ws: Any, wanted: str) -> list[str]:
    """The messages of ``ws`` up to and including ``wanted``."""
    seen: list[str] = []
    while not seen or seen[-1] != wanted:
        seen.append(await ws.receive())
    return seen


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


def test_page_with_a_broker_says_chat_goes_through_redis() -> None:
    page = render_page(os.getpid(), True).decode()
    assert f"single process (pid {os.getpid()})" in page
    assert '<p class="note shared">' in page and "through Redis" in page
    assert "through Redis" not in render_page(os.getpid()).decode()


async def test_chat_is_the_group_chat() -> None:
    """In one process without a broker the chat is the group ``chat`` in
    memory: users join it, lines are published to it, leaving is told."""
    async with (
        running_server(demo_handlers()) as (server, url),
        wsnest.connect(ws_url(url)) as a,
    ):
        with trio.fail_after(TIMEOUT):
            assert await a.receive() == "* you are user 1"
            assert await a.receive() == "* user 1 joined"
            async with wsnest.connect(ws_url(url)) as b:
                assert await b.receive() == "* you are user 2"
                assert await a.receive() == "* user 2 joined"
                assert await b.receive() == "* user 2 joined"
                assert len(server.groups.members(CHAT)) == 2
                b.send("hello")
                assert await a.receive() == "user 2: hello"
                assert await b.receive() == "user 2: hello"
            assert await a.receive() == "* user 2 left"
            assert len(server.groups.members(CHAT)) == 1
            assert server.stats()["group_publishes"] == 4  # 2 joined, hello, left


async def test_chat_between_two_servers_on_one_redis(redis_server: RedisServer) -> None:
    """Two demo servers sharing a Redis (as two ``python -m wsnest --redis``
    would): a line said on one reaches the users of the other, once."""
    pid = os.getpid()
    handlers = demo_handlers(broker=True)
    async with (
        running_server(handlers, broker=redis_server.url) as (_, url_a),
        running_server(demo_handlers(broker=True), broker=redis_server.url) as (_, url_b),
        wsnest.connect(ws_url(url_a)) as a,
        wsnest.connect(ws_url(url_b)) as b,
    ):
        with trio.fail_after(TIMEOUT):
            assert await a.receive() == f"* you are user {pid}.1"  # a name other processes cannot take
            assert await a.receive() == f"* user {pid}.1 joined"
            assert await b.receive() == f"* you are user {pid}.1"  # (two servers in one process here)
            assert await b.receive() == f"* user {pid}.1 joined"
        await trio.to_thread.run_sync(wait_numsub, redis_server.port, CHANNEL_PREFIX + CHAT, 2)
        # Before both servers followed the group, a "joined" line may or may not have crossed.
        with trio.fail_after(TIMEOUT):
            a.send("across")
            await receive_until(a, f"user {pid}.1: across")
            seen_b = await receive_until(b, f"user {pid}.1: across")
            b.send("and back")
            seen_b += await receive_until(b, f"user {pid}.1: and back")
            seen_a = await receive_until(a, f"user {pid}.1: and back")
    assert seen_b.count(f"user {pid}.1: across") == 1
    assert f"user {pid}.1: across" not in seen_a  # delivered once, and to A by its own server
