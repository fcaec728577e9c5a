"""Which worker process this is: :func:`current_worker`."""

from __future__ import annotations

from dataclasses import dataclass

from ._worker_board import WorkerBoard


@dataclass(frozen=True)
class Worker:
    """A worker process of a server run with ``workers=N``.

    Attributes:
        index: 0 .. count-1; a restarted worker keeps the index it replaces.
        count: how many workers the server runs.
        generation: 1, 2, ... for each worker process the supervisor has
            started (restarts included): the high part of ``ws.id``.
        pid: this process's id.
    """

    index: int
    count: int
    generation: int
    pid: int


_current: Worker | None = None
_board: WorkerBoard | None = None


def current_worker() -> Worker | None:
    """The :class:`Worker` this code runs in, or None in a single process."""
    return _current


def current_board() -> WorkerBoard | None:
    """The board shared by this server's workers, or None in a single process."""
    return _board


def enter_worker(worker: Worker, board: WorkerBoard) -> None:
    """Record, in a forked worker, which worker it is (the supervisor calls it)."""
    global _current, _board
    _current, _board = worker, board
