"""wsnest.broker's Redis engine against a real redis-server (tests/_redis_server.py).

Two RedisBroker instances stand for two server processes. Waits are on
conditions: trio events for deliveries, bounded polling for the state of
the external redis-server process (and the broker's view of it).
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import coredis
import pytest
import trio

from _redis_server import RedisServer, unused_port_url
from wsnest.broker import BrokerError, broker_from_url
from wsnest.broker._redis import RedisBroker

TIMEOUT = 10


class Inbox:
    """A ``receive`` callback that records deliveries and can be waited on."""

    def __init__(self) -> None:
        self.items: list[tuple[str, bytes]] = []
        self._changed = trio.Event()

    def __call__(self, channel: str, payload: bytes) -> None:
        self.items.append((channel, payload))
        self._changed.set()

    async def wait_for(self, count: int) -> list[tuple[str, bytes]]:
        return await self.wait_until(lambda: len(self.items) >= count)

    async def wait_until(self, condition: Callable[[], bool]) -> list[tuple[str, bytes]]:
        with trio.fail_after(TIMEOUT):
            while not condition():
                self._changed = trio.Event()
                await self._changed.wait()
        return self.items


async def poll(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition that follows the redis-server process."""
    with trio.fail_after(TIMEOUT):
        while not condition():
            await trio.sleep(0.01)


@asynccontextmanager
async def admin_client(server: RedisServer) -> AsyncIterator[coredis.Redis[bytes]]:
    extra: dict[str, Any] = {}
    if server.tls:
        extra["ssl_context"] = ssl.create_default_context(cafile=str(server.cert_file))
    async with coredis.Redis.from_url(server.url, **extra) as client:
        yield client


async def numsub(server: RedisServer, channel: str) -> int:
    async with admin_client(server) as admin:
        counts = await admin.pubsub_numsub(channel)
    return int(counts.get(channel.encode(), 0))


async def wait_numsub(server: RedisServer, channel: str, expected: int) -> None:
    with trio.fail_after(TIMEOUT):
        while await numsub(server, channel) != expected:
            await trio.sleep(0.01)


async def publish_calls(server: RedisServer) -> int:
    async with admin_client(server) as admin:
        info = await admin.info("commandstats")
    stat: Any = info.get("cmdstat_publish", {})
    return int(stat.get("calls", 0)) if stat else 0


@asynccontextmanager
async def running(*brokers: tuple[RedisBroker, Callable[[str, bytes], None]]) -> AsyncIterator[trio.Nursery]:
    """Run each broker as the server does (``nursery.start``); cancel them at the end."""
    async with trio.open_nursery() as nursery:
        for broker, receive in brokers:
            await nursery.start(broker.run, receive)
        yield nursery
        nursery.cancel_scope.cancel()


def ignore(channel: str, payload: bytes) -> None:
    pass


async def test_publish_subscribe_between_two_brokers(redis_server: RedisServer) -> None:
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    inbox_a, inbox_b = Inbox(), Inbox()
    async with running((a, inbox_a), (b, inbox_b)):
        assert a.connected and b.connected
        b.subscribe("room")
        await wait_numsub(redis_server, "room", 1)
        assert a.publish("room", b"hello")
        assert a.publish("room", b"\x00\xff binary")
        assert await inbox_b.wait_for(2) == [("room", b"hello"), ("room", b"\x00\xff binary")]
        # A follows the room too: it gets its own publishes (groups filter them).
        a.subscribe("room")
        await wait_numsub(redis_server, "room", 2)
        assert b.publish("room", b"back")
        assert await inbox_a.wait_for(1) == [("room", b"back")]
        assert await inbox_b.wait_for(3) == [("room", b"hello"), ("room", b"\x00\xff binary"), ("room", b"back")]
        assert a.stats() == {
            "broker_up": 1,
            "broker_published": 2,
            "broker_received": 1,
            "broker_refused": 0,
            "broker_outages": 0,
        }
        assert b.stats()["broker_received"] == 3
    assert not a.connected and a.stats()["broker_up"] == 0


async def test_factory_builds_the_redis_engine(redis_server: RedisServer) -> None:
    broker = broker_from_url(redis_server.url)
    assert isinstance(broker, RedisBroker)
    inbox = Inbox()
    async with running((broker, inbox)):
        broker.subscribe("c")
        await wait_numsub(redis_server, "c", 1)
        assert broker.publish("c", b"x")
        assert await inbox.wait_for(1) == [("c", b"x")]


async def test_1000_messages_arrive_in_publish_order(redis_server: RedisServer) -> None:
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    inbox = Inbox()
    async with running((a, ignore), (b, inbox)):
        b.subscribe("seq")
        await wait_numsub(redis_server, "seq", 1)
        sent = [b"%d" % i for i in range(1000)]
        # Half in one burst (one queue drain), half one per scheduling round.
        assert all(a.publish("seq", payload) for payload in sent[:500])
        for payload in sent[500:]:
            assert a.publish("seq", payload)
            await trio.lowlevel.checkpoint()
        received = await inbox.wait_for(1000)
        assert [payload for _, payload in received] == sent
        assert a.stats()["broker_published"] == 1000


async def test_exactly_one_publish_per_call(redis_server: RedisServer) -> None:
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    inbox = Inbox()
    async with running((a, ignore), (b, inbox)):
        b.subscribe("count")
        await wait_numsub(redis_server, "count", 1)
        async with admin_client(redis_server) as admin:
            await admin.config_resetstat()
        assert await publish_calls(redis_server) == 0
        for i in range(300):
            assert a.publish("count", b"%d" % i)
            if i % 7 == 0:
                await trio.lowlevel.checkpoint()  # batches of several sizes
        await inbox.wait_for(300)
        assert await publish_calls(redis_server) == 300
        # A publish nobody listens to is still exactly one PUBLISH.
        assert a.publish("nobody", b"x")
        assert a.publish("count", b"last")
        await inbox.wait_for(301)
        assert await publish_calls(redis_server) == 302


async def test_subscribe_and_unsubscribe_are_idempotent(redis_server: RedisServer) -> None:
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    inbox = Inbox()
    async with running((a, ignore), (b, inbox)):
        for _ in range(3):
            b.subscribe("x")
        b.subscribe("y")
        await wait_numsub(redis_server, "x", 1)
        await wait_numsub(redis_server, "y", 1)
        b.subscribe("x")  # already followed: no second subscription
        b.unsubscribe("x")
        b.unsubscribe("x")
        await wait_numsub(redis_server, "x", 0)
        assert await numsub(redis_server, "y") == 1
        b.unsubscribe("never-followed")
        # x is published first; once y's message is in, x's would have been too.
        assert a.publish("x", b"not for b")
        assert a.publish("y", b"for b")
        assert await inbox.wait_for(1) == [("y", b"for b")]
        # Follow again after leaving: one subscription, delivery resumes.
        b.subscribe("x")
        await wait_numsub(redis_server, "x", 1)
        assert a.publish("x", b"again")
        assert await inbox.wait_for(2) == [("y", b"for b"), ("x", b"again")]


async def test_subscriptions_made_before_start_are_applied_before_started(redis_server: RedisServer) -> None:
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    inbox = Inbox()
    b.subscribe("early")
    assert not b.connected
    assert not b.publish("early", b"too soon")  # not running yet: refused
    assert b.stats()["broker_refused"] == 1
    async with running((a, ignore), (b, inbox)):
        # started() means subscribed: no wait needed.
        assert await numsub(redis_server, "early") == 1
        assert a.publish("early", b"m")
        assert await inbox.wait_for(1) == [("early", b"m")]


async def test_start_with_redis_down_raises_broker_error() -> None:
    url = unused_port_url()
    broker = RedisBroker(url)
    async with trio.open_nursery() as nursery:
        with pytest.raises(BrokerError) as info:
            await nursery.start(broker.run, ignore)
    message = str(info.value)
    assert message.startswith(f"cannot connect to broker {url}: ")
    assert not broker.connected
    assert broker.stats()["broker_outages"] == 0


async def test_start_against_a_silent_server_times_out() -> None:
    """A server that accepts but never answers: the start fails, it does not hang."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def accept_and_stay_silent(stream: trio.SocketStream) -> None:
        held.append(stream)
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, accept_and_stay_silent, listeners)
        broker = RedisBroker(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5, reply_timeout=0.5)
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerError, match=re.escape(f"127.0.0.1:{port}")):
            await nursery.start(broker.run, ignore)
        assert held  # it did connect: the timeout is on the reply
        nursery.cancel_scope.cancel()


async def test_rediss_speaks_tls(redis_server: RedisServer) -> None:
    """rediss:// against a plain-text server fails the start (TLS is really used)."""
    url = f"rediss://127.0.0.1:{redis_server.port}/0"
    broker = RedisBroker(url, connect_timeout=2, reply_timeout=2)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerError, match=re.escape(url)):
            await nursery.start(broker.run, ignore)


async def test_outage_and_recovery(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsnest")
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    inbox = Inbox()
    async with running((a, ignore), (b, inbox)):
        b.subscribe("room")
        b.subscribe("other")
        await wait_numsub(redis_server, "room", 1)
        await wait_numsub(redis_server, "other", 1)
        assert a.publish("room", b"before")
        await inbox.wait_for(1)

        redis_server.kill()
        await poll(lambda: not a.connected and not b.connected)
        assert a.stats()["broker_up"] == 0
        refused = a.stats()["broker_refused"]
        for i in range(10_000):
            assert not a.publish("room", b"during %d" % i)
        assert len(a._queue) == 0 and a._queued_bytes == 0  # nothing kept while down
        assert a.stats()["broker_refused"] == refused + 10_000
        # Changes made during the outage are applied on reconnection.
        b.subscribe("late")
        b.unsubscribe("other")

        started = time.monotonic()
        redis_server.restart()
        await poll(lambda: a.connected and b.connected)
        print(f"\nbroker restore time after redis-server answered PING: {time.monotonic() - started:.3f} s")
        # connected again means resubscribed: no wait.
        assert await numsub(redis_server, "room") == 1
        assert await numsub(redis_server, "late") == 1
        assert await numsub(redis_server, "other") == 0

        for i in range(100):
            assert a.publish("room", b"after %d" % i)
        assert a.publish("late", b"late one")
        received = await inbox.wait_for(102)
        assert received == [
            ("room", b"before"),
            *[("room", b"after %d" % i) for i in range(100)],
            ("late", b"late one"),
        ]
        for broker in (a, b):
            stats = broker.stats()
            assert stats["broker_up"] == 1
            assert stats["broker_outages"] == 1

    records = [r for r in caplog.records if r.name == "wsnest"]
    lost = [r for r in records if "connection lost" in r.getMessage()]
    back = [r for r in records if "reconnected after" in r.getMessage()]
    # One line each per broker, whatever the number of retries.
    assert len(lost) == 2 and all(r.levelno == logging.WARNING for r in lost)
    assert len(back) == 2 and all(r.levelno == logging.INFO for r in back)
    assert all(redis_server.url in r.getMessage() for r in lost + back)


async def test_two_outages_are_counted_twice(redis_server: RedisServer) -> None:
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    inbox = Inbox()
    async with running((a, ignore), (b, inbox)):
        b.subscribe("room")
        for round_ in range(2):
            redis_server.kill()
            await poll(lambda: not a.connected and not b.connected)
            redis_server.restart()
            await poll(lambda: a.connected and b.connected)
            assert a.publish("room", b"%d" % round_)
            await inbox.wait_for(round_ + 1)
        assert inbox.items == [("room", b"0"), ("room", b"1")]
        assert a.stats()["broker_outages"] == 2 and b.stats()["broker_outages"] == 2


async def test_receive_raising_does_not_kill_the_broker(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = RedisBroker(redis_server.url), RedisBroker(redis_server.url)
    inbox = Inbox()

    def fragile(channel: str, payload: bytes) -> None:
        inbox(channel, payload)
        if payload == b"boom":
            raise RuntimeError("receive failed")

    async with running((a, ignore), (b, fragile)):
        b.subscribe("c")
        await wait_numsub(redis_server, "c", 1)
        assert a.publish("c", b"boom")
        assert a.publish("c", b"fine")
        assert await inbox.wait_for(2) == [("c", b"boom"), ("c", b"fine")]
        assert b.connected and b.stats()["broker_outages"] == 0
    errors = [r for r in caplog.records if r.name == "wsnest" and r.exc_info]
    assert len(errors) == 1 and "receive() raised" in errors[0].getMessage()


async def test_bounded_queue_refuses_when_full(redis_server: RedisServer) -> None:
    a = RedisBroker(redis_server.url, max_queued=3)
    sized = RedisBroker(redis_server.url, max_queued_bytes=100)
    b = RedisBroker(redis_server.url)
    inbox = Inbox()
    async with running((a, ignore), (sized, ignore), (b, inbox)):
        b.subscribe("q")
        await wait_numsub(redis_server, "q", 1)
        # No checkpoint in between: the sender cannot drain the queue.
        assert [a.publish("q", b"%d" % i) for i in range(5)] == [True, True, True, False, False]
        assert a.stats()["broker_refused"] == 2
        await inbox.wait_for(3)
        assert a.publish("q", b"room again")  # drained: accepted again
        await inbox.wait_for(4)
        # By bytes: the channel name counts too (1 + 59 = 60 bytes each).
        assert sized.publish("q", b"x" * 59)
        assert not sized.publish("q", b"y" * 59)
        assert not sized.publish("q", b"z" * 200)
        assert sized.publish("q", b"w" * 39)  # 60 + 40 = 100: fits exactly
        received = await inbox.wait_for(6)
        assert [p for _, p in received] == [b"0", b"1", b"2", b"room again", b"x" * 59, b"w" * 39]
        assert sized.stats()["broker_refused"] == 2


def test_password_is_hidden_in_url() -> None:
    assert RedisBroker("redis://user:s3cret@127.0.0.1:6379/0").url == "redis://user:***@127.0.0.1:6379/0"
    assert RedisBroker("redis://:s3cret@example.org").url == "redis://:***@example.org"
    assert RedisBroker("rediss://example.org:6380/2?password=s3cret&client_name=w").url == (
        "rediss://example.org:6380/2?password=***&client_name=w"
    )
    assert RedisBroker("redis://user@host").url == "redis://user@host"  # no password to hide
    assert RedisBroker("redis://127.0.0.1:6379").url == "redis://127.0.0.1:6379"


async def test_password_is_hidden_in_errors() -> None:
    url = unused_port_url().replace("redis://", "redis://user:s3cret@")
    broker = RedisBroker(url)
    async with trio.open_nursery() as nursery:
        with pytest.raises(BrokerError) as info:
            await nursery.start(broker.run, ignore)
    assert "s3cret" not in str(info.value)
    assert "user:***@" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "unix:///tmp/redis.sock",
        "redis://",
        "redis:///0",
        "redis://127.0.0.1:notaport",
        "redis://127.0.0.1:99999",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:6379/zero",
        "redis://:s3cret@127.0.0.1:port",
        "redis://:s3cret@[::1",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="broker") as info:
        RedisBroker(url)
    assert "s3cret" not in str(info.value)
    with pytest.raises(ValueError, match="broker"):
        broker_from_url(url)


def test_url_must_be_a_string() -> None:
    with pytest.raises(TypeError, match="broker"):
        RedisBroker(b"redis://127.0.0.1")  # type: ignore[arg-type]


async def test_cancellation_closes_the_connections(redis_server: RedisServer) -> None:
    broker = RedisBroker(redis_server.url)
    async with admin_client(redis_server) as admin:

        async def clients() -> int:
            listed = await admin.client_list()
            return len(listed)

        baseline = await clients()
        with trio.fail_after(TIMEOUT):
            async with trio.open_nursery() as nursery:
                await nursery.start(broker.run, ignore)
                broker.subscribe("c")
                assert broker.publish("c", b"x")
                await poll(lambda: broker.stats()["broker_published"] == 1)
                assert await clients() >= baseline + 2  # the pub/sub and the publishing connection
                nursery.cancel_scope.cancel()
        assert not broker.connected
        with trio.fail_after(TIMEOUT):
            while await clients() != baseline:
                await trio.sleep(0.01)


async def test_a_server_that_stops_answering_is_an_outage(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGSTOP: the sockets stay open but nothing answers. The keepalive and
    the publish replies time out, the broker goes down instead of hanging,
    and comes back when the server does."""
    caplog.set_level(logging.INFO)
    a = RedisBroker(redis_server.url, connect_timeout=0.5, reply_timeout=0.5)
    b = RedisBroker(redis_server.url, connect_timeout=0.5, reply_timeout=0.5)
    inbox = Inbox()
    async with running((a, ignore), (b, inbox)):
        b.subscribe("room")
        await wait_numsub(redis_server, "room", 1)
        redis_server.pause()
        try:
            # Accepted (the broker does not know yet), then dropped with the
            # connection: in flight or still queued, each is counted.
            assert all(a.publish("room", b"lost %d" % i) for i in range(4))
            await poll(lambda: not a.connected and not b.connected)
            assert a.stats()["broker_refused"] == 4
            assert not a.publish("room", b"refused")
            assert a.stats()["broker_refused"] == 5
        finally:
            redis_server.resume()
        await poll(lambda: a.connected and b.connected)
        assert a.publish("room", b"after")
        received = await inbox.wait_until(lambda: ("room", b"after") in inbox.items)
        # A dropped PUBLISH may still have reached Redis before the connection
        # closed (at most once), but nothing is sent twice and nothing refused arrives.
        payloads = [p for _, p in received]
        assert len(payloads) == len(set(payloads))
        assert set(payloads) <= {b"after", *(b"lost %d" % i for i in range(4))}
        assert a.stats()["broker_published"] == 1
        assert a.stats()["broker_outages"] == 1 and b.stats()["broker_outages"] == 1
    # One warning per broker; coredis's own per-attempt errors are not repeated.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.name for r in warnings] == ["wsnest", "wsnest"], [r.getMessage() for r in warnings]


@pytest.fixture
def tls_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server that speaks TLS only, with a self-signed certificate for 127.0.0.1."""
    server = RedisServer(tmp_path, tls=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_rediss_verifies_the_server_certificate(
    tls_redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = tls_redis_server.url
    assert url.startswith("rediss://")
    # Not trusted by default: the start fails on the certificate.
    untrusting = RedisBroker(url, connect_timeout=2, reply_timeout=2)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(TIMEOUT), pytest.raises(BrokerError, match=re.escape(url)) as info:
            await nursery.start(untrusting.run, ignore)
    print(f"\n{info.value}")
    assert "certificate verify failed" in str(info.value)

    # Trusted through the default verify paths (SSL_CERT_FILE): delivery works.
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_redis_server.cert_file))
    a, b = RedisBroker(url), RedisBroker(url)
    inbox = Inbox()
    async with running((a, ignore), (b, inbox)):
        b.subscribe("secure")
        await wait_numsub(tls_redis_server, "secure", 1)
        assert a.publish("secure", b"ping")
        assert await inbox.wait_for(1) == [("secure", b"ping")]


async def test_rediss_with_ssl_query_parameters_uses_them(tls_redis_server: RedisServer) -> None:
    """``ssl_*`` parameters in the URL configure TLS through coredis."""
    url = f"{tls_redis_server.url}?ssl_ca_certs={tls_redis_server.cert_file}&ssl_cert_reqs=required"
    broker = RedisBroker(url)
    inbox = Inbox()
    async with running((broker, inbox)):
        assert broker.connected
        broker.subscribe("c")
        await wait_numsub(tls_redis_server, "c", 1)
        assert broker.publish("c", b"x")
        assert await inbox.wait_for(1) == [("c", b"x")]


async def test_password_authenticates_and_stays_hidden(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, password="s3cret")
    server.start()
    try:
        good = server.url.replace("redis://", "redis://:s3cret@")
        bad = server.url.replace("redis://", "redis://:wrong@")
        refused = RedisBroker(bad)
        async with trio.open_nursery() as nursery:
            with pytest.raises(BrokerError) as info:
                await nursery.start(refused.run, ignore)
        message = str(info.value)
        assert message.startswith(f"cannot connect to broker redis://:***@127.0.0.1:{server.port}/0: ")
        assert "wrong" not in message and "s3cret" not in message

        a, b = RedisBroker(good), RedisBroker(good)
        assert a.url == f"redis://:***@127.0.0.1:{server.port}/0"
        inbox = Inbox()
        async with running((a, ignore), (b, inbox)):
            b.subscribe("auth")
            # Resubscription after an outage authenticates again.
            server.kill()
            await poll(lambda: not b.connected)
            server.restart()
            await poll(lambda: a.connected and b.connected)
            assert a.publish("auth", b"in")
            assert await inbox.wait_for(1) == [("auth", b"in")]
    finally:
        server.stop()
