"""Message brokers for groups across processes and machines.

``broker_from_url("redis://host:6379/0")`` builds the Redis engine
(``pip install 'wsnest[redis]'``); :class:`Broker` is the interface
another engine implements.
"""

from __future__ import annotations

from ._base import Broker, BrokerError, Receiver

__all__ = ["Broker", "BrokerError", "Receiver", "broker_from_url"]


def broker_from_url(url: str) -> Broker:
    """The broker for ``url``: ``redis://`` or ``rediss://`` (TLS).

    Raises ``ValueError`` naming ``broker`` for another scheme and
    ``ImportError`` saying what to install when the engine's client
    library is missing.
    """
    if not isinstance(url, str):
        raise TypeError(f"broker: expected a URL string, got {type(url).__name__}")
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        try:
            from ._redis import RedisBroker
        except ImportError as exc:
            raise ImportError(
                "broker: redis:// needs the coredis package: pip install 'wsnest[redis]'"
            ) from exc
        return RedisBroker(url)
    raise ValueError(f"broker: expected a redis:// or rediss:// URL, got {url!r}")
