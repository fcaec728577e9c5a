"""Groups: named sets of connections that a message is published to.

A connection (WebSocket or stream) joins and leaves groups; publishing to
a group delivers the message to every member of this process at once,
each frame type encoded once (as ``broadcast`` does), and, when the server
has a broker, publishes it once on the group's channel so that the
members in every other process get it too. A process subscribes to a
group's channel while it has a local member.

Delivery is at most once and ordered per publisher while the broker is
up: the envelope names its origin process and numbers its messages, so a
process skips its own messages coming back and anything it has already
seen.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from .._errors import ErrorCode
from . import _envelope as envelope
from ._stream import StreamConnection
from ._websocket import WebSocket, fan_out, message_payload
from ._workers import current_worker

if TYPE_CHECKING:
    from ..broker import Broker

log = logging.getLogger("wsnest")

#: Broker channels of groups are this prefix followed by the group name.
CHANNEL_PREFIX = "wsnest:group:"
#: The longest group name, in UTF-8 bytes.
MAX_GROUP_NAME = 256
# Origins whose last sequence number is remembered (processes seen
# recently; an older one forgotten can at worst be delivered again after
# it has been silent for thousands of other publishers).
_ORIGINS_KEPT = 4096

Member = WebSocket | StreamConnection


def _check_name(group: object) -> str:
    if not isinstance(group, str):
        raise TypeError(f"group: expected a str, got {type(group).__name__}")
    if not group or len(group.encode("utf-8", "surrogatepass")) > MAX_GROUP_NAME:
        raise ValueError(f"group: expected a name of 1 to {MAX_GROUP_NAME} UTF-8 bytes, got {group!r:.80}")
    return group


class Groups:
    """The groups of one server (``server.groups``).

    Connections join with ``ws.join(name)`` / ``conn.join(name)`` and leave
    with ``leave`` or when they end; :meth:`publish` (also
    ``ws.publish``) sends to every member. Without a broker this works in
    one process; with ``broker=`` (``--redis URL``) across every process
    and machine that shares the broker.
    """

    def __init__(self, broker: Broker | None = None, max_message_size: int | None = None) -> None:
        #: The broker linking this process's groups to other processes, or None.
        self.broker = broker
        self._max_size = max_message_size
        # Members per group, in join order (value: is a WebSocket), and the
        # groups of each member.
        self._members: dict[str, dict[Member, bool]] = {}
        self._of: dict[Member, set[str]] = {}
        self._origin = os.urandom(envelope.ORIGIN_SIZE)
        self._seq = 0
        self._seen: OrderedDict[bytes, int] = OrderedDict()
        self._published = 0
        self._delivered = 0
        self._malformed = 0
        self._duplicates = 0

    def started(self) -> None:
        """Called by the server in each process it serves in (a worker is
        a fork: it takes its own origin)."""
        self._origin = os.urandom(envelope.ORIGIN_SIZE)
        self._seq = 0

    def _check_reach(self) -> None:
        worker = current_worker()
        if self.broker is None and worker is not None and worker.count > 1:
            raise RuntimeError(
                f"groups across {worker.count} workers need a broker: http_server(..., broker='redis://host:6379')"
                " or --redis URL (without one, a message would reach only this worker's members)"
            )

    # -- membership -------------------------------------------------------------

    def join(self, member: Member, group: str) -> int:
        """Add ``member`` to ``group``; 0, or 7 if it is already closed."""
        _check_name(group)
        self._check_reach()
        if member.closed:
            return ErrorCode.CLOSED
        mine = self._of.get(member)
        if mine is None:
            mine = self._of[member] = set()
        elif group in mine:
            return ErrorCode.OK
        mine.add(group)
        members = self._members.get(group)
        if members is None:
            members = self._members[group] = {}
            if self.broker is not None:
                self.broker.subscribe(CHANNEL_PREFIX + group)
        members[member] = isinstance(member, WebSocket)
        return ErrorCode.OK

    def leave(self, member: Member, group: str) -> None:
        """Remove ``member`` from ``group`` (nothing if it was not in it)."""
        _check_name(group)
        mine = self._of.get(member)
        if mine is None or group not in mine:
            return
        mine.discard(group)
        if not mine:
            del self._of[member]
        self._drop(member, group)

    def leave_all(self, member: Any) -> None:
        """Remove ``member`` from every group (the server calls this once
        when the connection ends)."""
        mine = self._of.pop(member, None)  # any session may end here: most are in no group
        if mine:
            for group in mine:
                self._drop(member, group)

    def _drop(self, member: Member, group: str) -> None:
        members = self._members[group]
        del members[member]
        if not members:
            del self._members[group]
            if self.broker is not None:
                self.broker.unsubscribe(CHANNEL_PREFIX + group)

    def groups_of(self, member: Member) -> frozenset[str]:
        """The groups ``member`` is in."""
        return frozenset(self._of.get(member, ()))

    def members(self, group: str) -> list[Member]:
        """The members of ``group`` in this process, in join order."""
        return list(self._members.get(_check_name(group), ()))

    def names(self) -> list[str]:
        """The groups that have a member in this process."""
        return list(self._members)

    # -- messages ---------------------------------------------------------------

    def publish(self, group: str, data: str | bytes | bytearray | memoryview) -> int:
        """Send ``data`` to every member of ``group``; never blocks.

        Members in this process get it at once, as ``broadcast`` sends it
        (each one's ``textframes`` mode respected; a member that is closed,
        over its send high-water mark or its message size limit is skipped;
        bytes that are not valid UTF-8 skip ``textframes=True`` members);
        with a broker it is also published once for every other process.
        Returns how many members of this process accepted it: what happened
        elsewhere is not known here. A publish the broker refuses (it is
        down, or its bounded queue is full) is counted in ``stats()``
        (``broker_refused``) and logged once per outage.

        Raises ``TypeError``/``ValueError`` naming ``group`` or ``data``
        (over ``max_message_size``), and ``RuntimeError`` under several
        workers without a broker.
        """
        _check_name(group)
        is_str, payload = message_payload(data)
        limit = self._max_size
        if limit is not None and len(payload) > limit:
            raise ValueError(f"data: {len(payload)} bytes is over max_message_size ({limit})")
        self._check_reach()
        self._published += 1
        count = self._deliver(group, is_str, payload)
        if self.broker is not None:
            self._seq += 1
            self.broker.publish(CHANNEL_PREFIX + group, envelope.pack(is_str, self._origin, self._seq, payload))
        return count

    def _deliver(self, group: str, is_str: bool, payload: bytes) -> int:
        members = self._members.get(group)
        if not members:
            return 0
        websockets: list[WebSocket] = []
        others: list[StreamConnection] = []
        for member, is_ws in members.items():
            if is_ws:
                websockets.append(member)  # type: ignore[arg-type]
            else:
                others.append(member)  # type: ignore[arg-type]
        count = fan_out(websockets, is_str, payload) if websockets else 0
        for stream in others:
            if stream.send(payload) == ErrorCode.OK:
                count += 1
        self._delivered += count
        return count

    def receive(self, channel: str, message: bytes) -> None:
        """A message from the broker: delivered to this process's members
        unless it is malformed or foreign (dropped and counted), this
        process's own, or already seen."""
        opened = envelope.unpack(message) if channel.startswith(CHANNEL_PREFIX) else None
        if opened is None:
            self._malformed += 1
            return
        is_str, origin, seq, payload = opened
        if origin == self._origin:
            return  # delivered here when it was published
        seen = self._seen
        last = seen.get(origin)
        if last is not None:
            if seq <= last:
                self._duplicates += 1
                return
            seen.move_to_end(origin)
        elif len(seen) >= _ORIGINS_KEPT:
            seen.popitem(last=False)
        seen[origin] = seq
        self._deliver(channel[len(CHANNEL_PREFIX) :], is_str, bytes(payload))

    def stats(self) -> dict[str, int]:
        """``groups`` (with a local member), ``group_members`` (memberships),
        ``group_publishes``, ``group_deliveries`` (messages queued to local
        members, from here or from the broker), ``group_malformed``
        (dropped broker messages), ``group_duplicates``, and the broker's
        counters (see ``Broker.stats``)."""
        numbers = {
            "groups": len(self._members),
            "group_members": sum(len(m) for m in self._members.values()),
            "group_publishes": self._published,
            "group_deliveries": self._delivered,
            "group_malformed": self._malformed,
            "group_duplicates": self._duplicates,
        }
        if self.broker is not None:
            numbers.update(self.broker.stats())
        return numbers
