"""Every child role by name: ``python bench/soak.py _child ROLE JSON`` runs one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from _util import raise_fd_limit
from soaklib.clients import (
    bcast_main,
    child_echo,
    child_killme,
    child_trickle,
    flood_main,
    fragments_main,
    idle_main,
    slowloris_main,
)
from soaklib.common import run_async
from soaklib.server_child import child_server
from soaklib.tls_clients import tlsclients_main, wssflood_main

CHILD_ROLES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "server": child_server,
    "idle": lambda cfg: (raise_fd_limit(), run_async(idle_main(cfg)))[1],
    "slowloris": lambda cfg: (raise_fd_limit(), run_async(slowloris_main(cfg)))[1],
    "echo": child_echo,
    "bcast": lambda cfg: (raise_fd_limit(), run_async(bcast_main(cfg)))[1],
    "flood": lambda cfg: (raise_fd_limit(), run_async(flood_main(cfg)))[1],
    "killme": child_killme,
    "trickle": child_trickle,
    "fragments": lambda cfg: (raise_fd_limit(), run_async(fragments_main(cfg)))[1],
    "tlsclients": lambda cfg: (raise_fd_limit(), run_async(tlsclients_main(cfg)))[1],
    "wssflood": lambda cfg: (raise_fd_limit(), run_async(wssflood_main(cfg)))[1],
}
