"""Message brokers for groups across processes and machines.

``broker_from_url("redis://host:6379/0")`` builds the Redis engine
(``pip install 'wsnest[redis]'``); :class:`Broker` is the interface
another engine implements.
"""

from __future__ import annotations

import importlib

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
        try:  # imported on use: coredis is an optional dependency
            engine = importlib.import_module(f"{__name__}._redis")
        except ImportError as exc:
            raise ImportError("broker: redis:// needs the coredis package: pip install 'wsnest[redis]'") from exc
        broker: Broker = engine.RedisBroker(url)
        return broker
    raise ValueError(f"broker: expected a redis:// or rediss:// URL, got {url!r}")
