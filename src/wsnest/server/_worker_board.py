"""A numbers board shared by the worker processes of one server.

One anonymous shared mapping, made by the supervisor before it forks, so
every worker (and the supervisor) sees the same memory. Each worker index
owns one fixed-size slot and is its only writer (a restarted worker takes
over its dead predecessor's slot); anyone may read every slot.

A slot is ``[sequence: u64][length: u32][payload]``. A write makes the
sequence odd, writes, then makes it even again (a seqlock): a reader that
sees an odd sequence, or a different one after copying, retries, so it
never returns a half-written payload.
"""

from __future__ import annotations

import mmap
import struct

SLOT_SIZE = 8192
_HEAD = struct.Struct("<QI")
_SEQ = struct.Struct("<Q")


class WorkerBoard:
    """``count`` slots of ``slot_size`` bytes in shared memory."""

    def __init__(self, count: int, slot_size: int = SLOT_SIZE) -> None:
        if count < 1 or slot_size <= _HEAD.size:
            raise ValueError(f"board: need count >= 1 and slot_size > {_HEAD.size}")
        self.count = count
        self.slot_size = slot_size
        #: Largest payload a slot holds.
        self.capacity = slot_size - _HEAD.size
        self._map = mmap.mmap(-1, count * slot_size)  # anonymous, MAP_SHARED: survives fork as one

    def publish(self, index: int, payload: bytes) -> None:
        """Replace slot ``index``'s payload (only its worker calls this)."""
        if len(payload) > self.capacity:
            raise ValueError(f"board: payload of {len(payload)} bytes exceeds the slot's {self.capacity}")
        base = self._base(index)
        m = self._map
        seq = _SEQ.unpack_from(m, base)[0]
        if seq & 1:  # a writer died mid-write: its successor starts even
            seq += 1
        _SEQ.pack_into(m, base, seq + 1)  # odd: write in progress
        end = base + _HEAD.size + len(payload)
        m[base + _HEAD.size : end] = payload
        _HEAD.pack_into(m, base, seq + 1, len(payload))
        _SEQ.pack_into(m, base, seq + 2)  # even: consistent

    def read(self, index: int) -> bytes | None:
        """Slot ``index``'s last complete payload; None if never published."""
        base = self._base(index)
        m = self._map
        for _ in range(10_000):
            seq, length = _HEAD.unpack_from(m, base)
            if seq & 1:
                continue
            if seq == 0:
                return None
            length = min(length, self.capacity)
            data = m[base + _HEAD.size : base + _HEAD.size + length]
            if _SEQ.unpack_from(m, base)[0] == seq:
                return data
        return None  # its writer died mid-write and nobody has written since

    def read_all(self) -> list[bytes | None]:
        """Every slot's payload, by worker index."""
        return [self.read(i) for i in range(self.count)]

    def close(self) -> None:
        """Unmap (this process's view only)."""
        self._map.close()

    def _base(self, index: int) -> int:
        if not 0 <= index < self.count:
            raise IndexError(f"board: no slot {index} (count {self.count})")
        return index * self.slot_size
