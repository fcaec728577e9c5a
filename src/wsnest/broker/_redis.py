"""The Redis engine of :class:`~wsnest.broker.Broker`, on the coredis client.

One session is one fresh coredis client: a dedicated pub/sub connection
that carries the subscriptions, and the client's pool for the publishes.
Any failure of either ends the session; :meth:`RedisBroker.run` then marks
the broker down, drops what was queued and makes a new session with a
backoff. coredis's own retries are switched off everywhere, so a command
is never sent twice (delivery is at most once).
"""

from __future__ import annotations

import collections
import contextvars
import logging
import ssl
import sys
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import coredis
import trio
from coredis.patterns.pubsub import PubSub
from coredis.retry import NoRetryPolicy

from ._base import Broker, BrokerError, Receiver

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

logger = logging.getLogger("wsnest")

# True in the broker's task and in the coredis tasks it starts (they copy
# its context): coredis's own connection-loss records are dropped there, as
# the broker logs each outage once itself.
_IN_BROKER: contextvars.ContextVar[bool] = contextvars.ContextVar("wsnest_broker", default=False)
_COREDIS_CONNECTION_RECORDS = frozenset({"Connection attempt failed unexpectedly!", "Connection closed unexpectedly!"})


class _QuietCoredisOutages(logging.Filter):
    """Drop coredis's per-connection failure records raised on behalf of a broker."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_IN_BROKER.get() and record.msg in _COREDIS_CONNECTION_RECORDS)


logging.getLogger("coredis").addFilter(_QuietCoredisOutages())

_SCHEMES = ("redis", "rediss")
# Query parameters that carry a secret: hidden in ``url`` like the password.
_SECRET_PARAMS = frozenset({"password"})
# TLS settings coredis reads from a rediss:// URL's query.
_SSL_PARAMS = frozenset({"ssl_keyfile", "ssl_certfile", "ssl_check_hostname", "ssl_ca_certs", "ssl_cert_reqs"})

_BACKOFF_START = 0.05
_BACKOFF_CAP = 1.0
# Most publishes sent in one pipeline round trip.
_BATCH = 512


def _redact(url: str) -> str:
    """``url`` with the password (in the userinfo or the query) replaced by ``***``."""
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(name in _SECRET_PARAMS for name, _ in pairs):
            query = urlencode([(n, "***" if n in _SECRET_PARAMS else v) for n, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _validate(url: str, shown: str) -> None:
    """Raise ``ValueError`` naming ``broker`` if ``url`` is not a usable Redis URL
    (``shown`` is the redacted form used in the message)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker: invalid Redis URL {shown!r}: {exc}") from None
    if parts.scheme.lower() not in _SCHEMES:
        raise ValueError(f"broker: expected a redis:// or rediss:// URL, got {shown!r}")
    if not parts.hostname:
        raise ValueError(f"broker: the Redis URL {shown!r} has no host")
    if port == 0:
        raise ValueError(f"broker: the Redis URL {shown!r} has port 0")
    db = parts.path.strip("/")
    if db and not db.isdigit():
        raise ValueError(f"broker: the Redis URL {shown!r} names database {db!r}, expected a number")


def _leaves(exc: BaseException) -> list[BaseException]:
    """The leaf exceptions of a (possibly nested) exception group."""
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            found.extend(_leaves(inner))
        return found
    return [exc]


def _reraise_cancellation(exc: BaseException) -> None:
    """Re-raise only the cancellation if ``exc`` carries one: when the server
    stops, coredis's clean-up may fail on connections already closed, and
    that is no error."""
    if isinstance(exc, trio.Cancelled):
        raise exc
    if isinstance(exc, BaseExceptionGroup):
        cancelled, _ = exc.split(trio.Cancelled)
        if cancelled is not None:
            raise cancelled from None


def _reason(exc: BaseException) -> str:
    """A one-line description of why a session failed, for logs and errors."""
    leaf = _leaves(exc)[0]
    text = str(leaf) or type(leaf).__name__
    cause = leaf.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return text


class RedisBroker(Broker):
    """A :class:`~wsnest.broker.Broker` on Redis pub/sub (``redis://`` or
    ``rediss://`` for TLS).

    ``publish`` appends to a send queue bounded by ``max_queued`` payloads
    and ``max_queued_bytes`` bytes (channel name and payload); the running
    task sends what is queued in pipelined round trips of up to 512 (one
    ``PUBLISH`` per payload, no ``MULTI``), in publish order. ``connect_timeout`` bounds each connection attempt and
    ``reply_timeout`` each reply, so a server that stops answering is
    detected. A ``rediss://`` URL without ``ssl_*`` query parameters
    verifies the server's certificate and host name.
    """

    def __init__(
        self,
        url: str,
        *,
        max_queued: int = 4096,
        max_queued_bytes: int = 64 * 1024 * 1024,
        connect_timeout: float = 5.0,
        reply_timeout: float = 10.0,
    ) -> None:
        if not isinstance(url, str):
            raise TypeError(f"broker: expected a URL string, got {type(url).__name__}")
        try:
            self.url = _redact(url)
        except ValueError as exc:  # the URL is not shown: it may hold a password
            raise ValueError(f"broker: invalid Redis URL: {exc}") from None
        _validate(url, self.url)
        if max_queued < 1 or max_queued_bytes < 1:
            raise ValueError("broker: max_queued and max_queued_bytes must be at least 1")
        self._raw_url = url
        self._max_queued = max_queued
        self._max_queued_bytes = max_queued_bytes
        self._connect_timeout = connect_timeout
        self._reply_timeout = reply_timeout

        self._up = False
        # The send queue: (channel, payload) pairs and their total size.
        self._queue: collections.deque[tuple[bytes, bytes]] = collections.deque()
        self._queued_bytes = 0
        self._in_flight = 0
        self._publish_wake = trio.Event()
        # The channels the groups follow; the session subscribes to exactly these.
        self._desired: set[str] = set()
        self._subscribe_wake = trio.Event()

        self._published = 0
        self._received = 0
        self._refused = 0
        self._outages = 0

    # -- called by the groups (synchronous, never blocking) ------------------

    def subscribe(self, channel: str) -> None:
        """Follow ``channel`` (idempotent); applied by the running task."""
        if channel not in self._desired:
            self._desired.add(channel)
            self._subscribe_wake.set()

    def unsubscribe(self, channel: str) -> None:
        """Stop following ``channel`` (idempotent); nothing more is delivered for it."""
        if channel in self._desired:
            self._desired.discard(channel)
            self._subscribe_wake.set()

    def publish(self, channel: str, payload: bytes) -> bool:
        """Queue one ``PUBLISH``; False (and counted) if the broker is down or
        the queue is full."""
        name = channel.encode()
        size = len(name) + len(payload)
        if (
            not self._up
            or len(self._queue) >= self._max_queued
            or self._queued_bytes + size > self._max_queued_bytes
        ):
            self._refused += 1
            return False
        self._queue.append((name, payload))
        self._queued_bytes += size
        self._publish_wake.set()
        return True

    @property
    def connected(self) -> bool:
        """True while the broker connection is up."""
        return self._up

    def stats(self) -> dict[str, int]:
        """``broker_up``, ``broker_published`` (PUBLISHes Redis acknowledged),
        ``broker_received``, ``broker_refused`` (publishes refused, plus those
        queued or in flight when a connection was lost) and ``broker_outages``."""
        return {
            "broker_up": int(self._up),
            "broker_published": self._published,
            "broker_received": self._received,
            "broker_refused": self._refused,
            "broker_outages": self._outages,
        }

    # -- the broker's task ---------------------------------------------------

    async def run(self, receive: Receiver, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then move messages until cancelled (see :meth:`Broker.run`)."""
        in_broker = _IN_BROKER.set(True)
        started = False
        down_since = 0.0
        backoff = _BACKOFF_START

        def on_up() -> None:
            nonlocal started, backoff
            self._up = True
            backoff = _BACKOFF_START
            if not started:
                started = True
                task_status.started()
            else:
                logger.info("broker %s reconnected after %.2f s", self.url, time.monotonic() - down_since)

        try:
            while True:
                was_up = self._up
                try:
                    await self._session(receive, on_up)
                except BaseException as exc:
                    _reraise_cancellation(exc)
                    if not isinstance(exc, Exception):
                        raise
                    if not started:
                        raise BrokerError(f"cannot connect to broker {self.url}: {_reason(exc)}") from exc
                    if was_up or self._up:
                        # The outage starts: one line, whatever the number of retries.
                        self._mark_down()
                        self._outages += 1
                        down_since = time.monotonic()
                        logger.warning(
                            "broker %s: connection lost (%s); publishes are refused until it is back",
                            self.url,
                            _reason(exc),
                        )
                await trio.sleep(backoff)
                backoff = min(backoff * 2, _BACKOFF_CAP)
        finally:
            self._mark_down()
            _IN_BROKER.reset(in_broker)

    def _mark_down(self) -> None:
        """Refuse publishes from now on and drop what was queued or in flight."""
        self._up = False
        self._refused += len(self._queue) + self._in_flight
        self._queue.clear()
        self._queued_bytes = 0
        self._in_flight = 0

    def _client(self) -> coredis.Redis[bytes]:
        kwargs: dict[str, Any] = {}
        parts = urlsplit(self._raw_url)
        if parts.scheme.lower() == "rediss" and not any(n in _SSL_PARAMS for n, _ in parse_qsl(parts.query)):
            # coredis's default TLS context checks neither the certificate
            # nor the host name; verify both unless the URL says otherwise.
            kwargs["ssl_context"] = ssl.create_default_context()
        return coredis.Redis.from_url(
            self._raw_url,
            decode_responses=False,
            # Retrying a PUBLISH whose reply was lost could deliver it twice.
            retry_policy=NoRetryPolicy(),
            verify_version=False,
            connect_timeout=self._connect_timeout,
            stream_timeout=self._reply_timeout,
            **kwargs,
        )

    async def _session(self, receive: Receiver, on_up: Any) -> None:
        """One connection's life; it ends by raising (the connection failed) or
        by cancellation: its tasks loop forever."""
        client = self._client()
        async with client:
            with trio.fail_after(self._connect_timeout + self._reply_timeout):
                await client.ping()
            pubsub: PubSub[bytes] = PubSub(
                client.connection_pool,
                ignore_subscribe_messages=True,
                retry_policy=None,  # a lost connection ends the session: we resubscribe
                subscription_timeout=self._reply_timeout,
                unsubscription_timeout=self._reply_timeout,
                max_idle_seconds=max(1.0, self._reply_timeout / 2),
            )
            async with pubsub, trio.open_nursery() as nursery:
                nursery.start_soon(self._deliver, pubsub, receive)
                active: set[str] = set()
                await self._apply_subscriptions(pubsub, active)
                on_up()
                nursery.start_soon(self._follow_subscriptions, pubsub, active)
                nursery.start_soon(self._send, client)

    async def _apply_subscriptions(self, pubsub: PubSub[bytes], active: set[str]) -> None:
        """Subscribe and unsubscribe until ``active`` matches the desired set."""
        while active != self._desired:
            add = sorted(self._desired - active)
            drop = sorted(active - self._desired)
            if add:
                await pubsub.subscribe(*add)
                active.update(add)
            if drop:
                await pubsub.unsubscribe(*drop)
                active.difference_update(drop)

    async def _follow_subscriptions(self, pubsub: PubSub[bytes], active: set[str]) -> None:
        while True:
            # A change made while applying sets the new event: one more pass.
            self._subscribe_wake = trio.Event()
            await self._apply_subscriptions(pubsub, active)
            await self._subscribe_wake.wait()

    async def _deliver(self, pubsub: PubSub[bytes], receive: Receiver) -> None:
        while True:
            message = await pubsub.get_message()
            if message is None or message["type"] != "message":
                continue
            raw = message["channel"]
            channel = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
            if channel not in self._desired:
                continue  # unsubscribed while Redis was still sending
            data = message["data"]
            payload = data if isinstance(data, bytes) else str(data).encode()
            self._received += 1
            try:
                receive(channel, payload)
            except Exception:
                logger.exception("broker %s: receive() raised on channel %r", self.url, channel)

    async def _send(self, client: coredis.Redis[bytes]) -> None:
        """Send what ``publish`` queued, in order, one pipeline per round trip."""
        while True:
            await self._publish_wake.wait()
            self._publish_wake = trio.Event()
            while self._queue:
                count = min(len(self._queue), _BATCH)
                batch = [self._queue.popleft() for _ in range(count)]
                self._queued_bytes -= sum(len(c) + len(p) for c, p in batch)
                self._in_flight = count
                async with client.pipeline(transaction=False, raise_on_error=False) as pipe:
                    for channel, payload in batch:
                        pipe.publish(channel, payload)
                self._in_flight = 0
                results = pipe.results or ()
                failed = [r for r in results if isinstance(r, BaseException)]
                if any(isinstance(r, TimeoutError) for r in failed):
                    # Redis stopped answering: end the session (these are lost).
                    self._refused += count
                    raise TimeoutError(f"no reply to PUBLISH within {self._reply_timeout} s")
                if failed:
                    logger.warning("broker %s: PUBLISH failed: %s", self.url, failed[0])
                self._refused += len(failed)
                self._published += count - len(failed)


__all__ = ["RedisBroker"]
