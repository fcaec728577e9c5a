"""Groups across servers through a real redis-server (started per test by
the ``redis_server`` fixture): two ``HttpServer``s in one trio run stand
for two processes (each has its own broker connection and origin), and
``python -m wsnest``-style worker processes for the real thing. Faults:
Redis down at start, killed and restarted mid-run, malformed messages,
slow receivers."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

import wsnest
from _redis_server import RedisServer, admin_client, numsub, publish_calls, unused_port_url, wait_numsub
from serverutil import TIMEOUT, RawClient, running_server, ws_url

CHANNEL = "wsnest:group:chat"


def chat_handlers(**kw: Any) -> list[wsnest.Handler]:
    """The README's chat: members of "chat" publish what they get."""

    def on_open(ws: wsnest.WebSocket, req: wsnest.Request) -> None:
        ws.join("chat")

    def on_message(ws: wsnest.WebSocket, data: Any) -> None:
        ws.publish("chat", data)

    return [wsnest.handler_ws("/chat", on_message, on_open=on_open, textframes=True, **kw)]


@asynccontextmanager
async def two_servers(url: str, **limits: Any) -> AsyncIterator[list[tuple[wsnest.HttpServer, str]]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running_server(chat_handlers(), broker=url, **limits)) for _ in "ab"]


async def eventually(what: str, check: Any) -> None:
    with trio.fail_after(TIMEOUT):
        while not check():
            await trio.sleep(0.005)  # waiting on another process (Redis)
    assert check(), what


async def test_a_message_reaches_members_on_every_server_once_and_in_order(redis_server: RedisServer) -> None:
    async with (
        two_servers(redis_server.url) as [(a, url_a), (b, url_b)],
        wsnest.connect(ws_url(url_a, "/chat")) as on_a,
        wsnest.connect(ws_url(url_b, "/chat")) as on_b,
    ):
        await eventually("both subscribed", lambda: a.groups.broker.connected and b.groups.broker.connected)
        await eventually("one member each", lambda: len(a.groups.members("chat")) == len(b.groups.members("chat")) == 1)
        await wait_numsub(redis_server, CHANNEL, 2)
        for i in range(300):
            on_a.send(f"a{i}")
        for i in range(300):
            assert await on_b.receive() == f"a{i}"  # from the other server, in order
        for i in range(300):
            assert await on_a.receive() == f"a{i}"  # its own server: delivered at publish, once
        on_b.send("last")
        assert await on_a.receive() == "last"  # nothing else (no echo copies) came first
        assert await on_b.receive() == "last"
        assert a.stats()["group_duplicates"] == b.stats()["group_duplicates"] == 0


async def test_one_publish_per_message_per_process_and_one_subscription_per_group(redis_server: RedisServer) -> None:
    async with two_servers(redis_server.url) as [(a, url_a), (b, url_b)]:
        async with AsyncExitStack() as stack:
            members = [await stack.enter_async_context(wsnest.connect(ws_url(url_a, "/chat"))) for _ in range(5)]
            members += [await stack.enter_async_context(wsnest.connect(ws_url(url_b, "/chat"))) for _ in range(5)]
            await eventually("ten members", lambda: len(a.groups.members("chat")) + len(b.groups.members("chat")) == 10)
            await wait_numsub(redis_server, CHANNEL, 2)
            assert await numsub(redis_server, CHANNEL) == 2  # one per process, not per member
            before = await publish_calls(redis_server)
            for i in range(100):
                members[i % 10].send(f"m{i}")
            for ws in members:
                got = [await ws.receive() for _ in range(100)]
                assert sorted(got) == sorted(f"m{i}" for i in range(100))  # each message once
                for publisher in range(10):  # ordered per publisher (not across publishers)
                    mine = [int(m[1:]) for m in got if int(m[1:]) % 10 == publisher]
                    assert mine == sorted(mine)
            after = await publish_calls(redis_server)
            assert after - before == 100  # one PUBLISH per message, never one per receiver
        # Every member gone: both processes unsubscribe.
        await wait_numsub(redis_server, CHANNEL, 0)
        assert a.groups.names() == b.groups.names() == []


async def test_redis_down_at_start_stops_the_server_with_the_url_named() -> None:
    url = unused_port_url()
    server = wsnest.http_server("http://127.0.0.1:0", chat_handlers(), broker=url)
    with pytest.raises(wsnest.BrokerError, match=r"cannot connect to broker redis://127\.0\.0\.1"):
        await server.serve()  # raised bare, not in an exception group
    assert server.state == "closed"


async def test_redis_killed_then_back(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsnest")
    async with (
        two_servers(redis_server.url) as [(a, url_a), (b, url_b)],
        wsnest.connect(ws_url(url_a, "/chat")) as on_a,
        wsnest.connect(ws_url(url_a, "/chat")) as also_a,
        wsnest.connect(ws_url(url_b, "/chat")) as on_b,
    ):
        await wait_numsub(redis_server, CHANNEL, 2)
        redis_server.kill()
        await eventually("a sees the outage", lambda: not a.groups.broker.connected)
        # Local members keep getting local publishes; the remote publish is refused and counted.
        for i in range(50):
            on_a.send(f"during {i}")
        for i in range(50):
            assert await also_a.receive() == f"during {i}"
            assert await on_a.receive() == f"during {i}"
        await eventually("refusals counted", lambda: a.stats()["broker_refused"] >= 50)
        lost = [r for r in caplog.records if r.levelno == logging.WARNING and "broker" in r.getMessage()]
        assert 1 <= len(lost) <= 2  # once per process that noticed, not once per message
        start = trio.current_time()
        redis_server.start()
        await eventually("both reconnected", lambda: a.groups.broker.connected and b.groups.broker.connected)
        await wait_numsub(redis_server, CHANNEL, 2)
        print(f"subscriptions restored {trio.current_time() - start:.3f} s after redis-server started")
        on_b.send("after")
        assert await on_a.receive() == "after"
        assert await also_a.receive() == "after"
        assert await on_b.receive() == "after"  # nothing from the outage was queued for it
        stats = a.stats()
        assert stats["broker_outages"] == 1 and stats["group_duplicates"] == 0
        assert any("reconnected" in r.getMessage() for r in caplog.records)


async def test_malformed_and_foreign_messages_are_dropped_and_counted(redis_server: RedisServer) -> None:
    async with (
        two_servers(redis_server.url) as [(a, url_a), _],
        wsnest.connect(ws_url(url_a, "/chat")) as ws,
    ):
        await wait_numsub(redis_server, CHANNEL, 1)
        async with admin_client(redis_server) as client:
            for junk in (b"", b"hello", b"WSN\x01x" + bytes(30), b"\x00" * 100):
                await client.publish(CHANNEL, junk)
        await eventually("four dropped", lambda: a.stats()["group_malformed"] == 4)
        ws.send("still fine")
        assert await ws.receive() == "still fine"  # nothing malformed was delivered before it


async def test_a_slow_receiver_never_slows_the_others(redis_server: RedisServer) -> None:
    async with two_servers(redis_server.url, send_high_water=64 * 1024) as [(a, _), (b, url_b)]:
        slow = await RawClient.connect(url_b)
        await slow.handshake("/chat")  # joins, never reads
        async with wsnest.connect(ws_url(url_b, "/chat"), max_message_size=None) as fast:
            await eventually("two members on b", lambda: len(b.groups.members("chat")) == 2)
            await wait_numsub(redis_server, CHANNEL, 1)
            payload = "x" * 16 * 1024
            for i in range(300):  # paced by the fast member: its own buffer never fills
                a.groups.publish("chat", f"{i:05d}{payload}")
                assert (await fast.receive())[:5] == f"{i:05d}"
            assert b.stats()["send_refusals"].get("8", 0) > 0  # the slow one was skipped
        await slow.abort()


# -- worker processes -------------------------------------------------------------------

APP = """
import os, wsnest
def on_open(ws, req):
    ws.join("chat")
    ws.send("worker %d" % wsnest.current_worker().index)
def on_message(ws, data):
    ws.publish("chat", data)
handlers = [wsnest.handler_ws("/chat", on_message, on_open=on_open, textframes=True)]
server = wsnest.http_server("http://127.0.0.1:0", handlers, broker=os.environ["REDIS_URL"])
server.run(workers=2)
"""


async def test_members_on_two_workers_hear_each_other(redis_server: RedisServer, tmp_path: Path) -> None:
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {**os.environ, "REDIS_URL": redis_server.url, "PYTHONPATH": str(Path(wsnest.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-u", str(script)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        url = line.split("Serving at ")[1].split(" ")[0]
        with trio.fail_after(TIMEOUT * 3):
            async with AsyncExitStack() as stack:
                by_worker: dict[str, Any] = {}
                while len(by_worker) < 2:  # the kernel spreads connections: open until both are hit
                    ws = await stack.enter_async_context(wsnest.connect(ws_url(url, "/chat")))
                    by_worker.setdefault(await ws.receive(), ws)
                first, second = by_worker["worker 0"], by_worker["worker 1"]
                await wait_numsub(redis_server, CHANNEL, 2)
                first.send(json.dumps({"from": 0}))
                assert json.loads(await second.receive()) == {"from": 0}
                assert json.loads(await first.receive()) == {"from": 0}  # its own worker, once
                second.send("back")
                assert await first.receive() == "back"
                assert await second.receive() == "back"
    finally:
        proc.terminate()
        proc.wait(timeout=TIMEOUT)
