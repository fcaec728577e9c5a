"""The interface between wsnest's groups and a message broker.

A broker carries opaque payloads on named channels between processes
(and machines). The groups code (``wsnest.server._groups``) decides what
goes into a payload and which channels to follow; a broker only moves
bytes, so another engine (NATS, ...) plugs in without touching groups.

Everything a connection's callback calls (:meth:`Broker.publish`,
:meth:`Broker.subscribe`, :meth:`Broker.unsubscribe`) is synchronous and
never blocks: the broker's own task (:meth:`Broker.run`) does the I/O.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

import trio

#: ``receive(channel, payload)``: called by the broker's task for every
#: message that arrives on a subscribed channel. It must not block.
Receiver = Callable[[str, bytes], None]


class BrokerError(Exception):
    """The broker cannot be used (e.g. unreachable when the server starts);
    the message names the broker URL."""


class Broker(abc.ABC):
    """A publish/subscribe engine shared by several server processes.

    Delivery is at most once: a payload published while the broker is
    unreachable is refused (``publish`` returns False), never queued
    without bound; payloads from one publisher arrive in publish order
    while the broker is up.
    """

    #: The URL shown in logs and errors (credentials removed).
    url: str

    @abc.abstractmethod
    async def run(self, receive: Receiver, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, then move messages until cancelled.

        ``task_status.started()`` is called once the first connection is
        up; if it cannot be made, :class:`BrokerError` is raised instead
        (so ``await nursery.start(broker.run, receive)`` fails the start).
        After that, lost connections are re-made with a backoff and the
        subscriptions restored; the outage is logged once when it starts
        and once when it ends, never per message.
        """

    @abc.abstractmethod
    def subscribe(self, channel: str) -> None:
        """Follow ``channel`` (idempotent); applied by the running task."""

    @abc.abstractmethod
    def unsubscribe(self, channel: str) -> None:
        """Stop following ``channel`` (idempotent)."""

    @abc.abstractmethod
    def publish(self, channel: str, payload: bytes) -> bool:
        """Queue one message for ``channel``: exactly one publish on the
        wire per call. False if it was refused (the broker is down, or its
        bounded send queue is full); never blocks."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """True while the broker connection is up."""

    @abc.abstractmethod
    def stats(self) -> dict[str, int]:
        """The broker's counters: ``broker_up`` (0/1), ``broker_published``,
        ``broker_received``, ``broker_refused`` (publishes refused),
        ``broker_outages``."""
