"""What a connection (a WebSocket, a stream) offers for groups: ``join``,
``leave``, ``groups`` and ``publish``, forwarded to its server's
:class:`~wsnest.server.Groups`. A mixin without state of its own: the
memberships live in the server's registry, so an idle connection pays
nothing for them."""

from __future__ import annotations

from typing import Any


class GroupMember:
    """Group methods of :class:`WebSocket` and :class:`StreamConnection`."""

    __slots__ = ()
    _server: Any

    def _groups(self) -> Any:  # the server's Groups (not imported: it imports the connections)
        groups = getattr(self._server, "groups", None)
        if groups is None:
            raise RuntimeError("groups are a server feature: a client connection cannot join one")
        return groups

    def join(self, group: str) -> int:
        """Become a member of ``group`` (idempotent): messages published to
        it reach this connection, wherever they were published (every
        worker and machine sharing the server's broker).

        Returns 0, or 7 if the connection is already closed (it then never
        joins). A connection leaves all its groups when it ends. Raises
        ``TypeError``/``ValueError`` naming ``group`` for an invalid name.
        """
        return int(self._groups().join(self, group))

    def leave(self, group: str) -> None:
        """Stop being a member of ``group`` (nothing happens if it was not)."""
        self._groups().leave(self, group)

    @property
    def groups(self) -> frozenset[str]:
        """The groups this connection is a member of."""
        return frozenset(self._groups().groups_of(self))

    def publish(self, group: str, data: str | bytes | bytearray | memoryview) -> int:
        """Publish ``data`` to ``group`` through this connection's server:
        the same as ``server.groups.publish(group, data)`` (see there)."""
        return int(self._groups().publish(group, data))
