"""A case-insensitive header mapping that keeps arrival order and repeats."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping


class Headers(Mapping[str, str]):
    """Request headers: case-insensitive lookup, arrival order, repeats kept.

    ``headers["accept"]`` returns all values of that name joined with
    ``", "`` (the HTTP meaning of a repeated header); ``getall`` returns them
    one by one. Iteration yields each name once, as the client first spelt it.
    ``raw`` is the list of ``(name, value)`` pairs as received.
    """

    __slots__ = ("raw",)

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        self.raw: list[tuple[str, str]] = list(pairs)

    def getall(self, name: str) -> list[str]:
        """Every value of ``name`` in arrival order (empty if absent)."""
        key = name.lower()
        return [v for k, v in self.raw if k.lower() == key]

    def __getitem__(self, name: str) -> str:
        values = self.getall(name)
        if not values:
            raise KeyError(name)
        return values[0] if len(values) == 1 else ", ".join(values)

    def get(self, name: str, default: str | None = None) -> str | None:  # type: ignore[override]
        """The value of ``name`` (repeats joined), or ``default``."""
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = name.lower()
        return any(k.lower() == key for k, _ in self.raw)

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for k, _ in self.raw:
            low = k.lower()
            if low not in seen:
                seen.add(low)
                yield k

    def __len__(self) -> int:
        return len({k.lower() for k, _ in self.raw})

    def __repr__(self) -> str:
        return f"Headers({self.raw!r})"
