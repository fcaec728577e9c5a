"""Where a peer's messages end in its byte stream, found from frame
headers alone (sans I/O; either role)."""

from __future__ import annotations


class MessageBounds:
    """Where the peer's messages end in its byte stream.

    For an owner that queues messages (the server's async ``on_message``):
    it asks how much of a read it may hand the parser so that no more
    messages complete than its queue has room for. Only frame headers are
    read (payloads are skipped by length), so the cost is per frame, never
    per byte. Malformed input
    is the parser's business: whatever is cut here, the parser fails on it.
    """

    __slots__ = ("_ends", "_hdr", "_left")

    def __init__(self) -> None:
        self._hdr = bytearray()  # header bytes of the current frame, while incomplete
        self._left = -1  # payload bytes of the current frame still to come; -1: at a frame boundary
        self._ends = False  # the current frame ends a data message (FIN, opcode < 8)

    def cut(self, data: memoryview, room: int) -> int:
        """How many bytes of ``data`` to feed: up to where ``room`` more data
        messages are complete and the next data frame starts (control frames
        on the way are included, so pings are answered), or all of it."""
        n = len(data)
        if room > 0 and self._left < 0 and n >= 2 and not self._hdr:
            # The read of request/response traffic: one whole small frame,
            # which ends at a frame boundary whatever it is (~0.1 us here,
            # against ~1 us for the loop below).
            len7 = data[1] & 0x7F
            if len7 < 126 and len7 + (6 if data[1] & 0x80 else 2) == n:
                return n
        pos = 0
        while pos < n:
            left = self._left
            if left < 0:  # in a header
                hdr = self._hdr
                if not hdr:
                    b0 = data[pos]
                    if room <= 0 and b0 & 0x0F < 8:
                        return pos  # a data frame with no room for its message
                    if pos + 2 <= n:
                        size = _header_size(data[pos + 1])
                        if pos + size <= n:  # the common case: the whole header is here
                            self._start_frame(b0, data[pos : pos + size])
                            pos += size
                            room = self._frame_done(room)
                            continue
                take = min(n - pos, (_header_size(hdr[1]) if len(hdr) >= 2 else 2) - len(hdr))
                hdr += data[pos : pos + take]
                pos += take
                if len(hdr) >= 2 and len(hdr) == _header_size(hdr[1]):
                    self._start_frame(hdr[0], memoryview(hdr))
                    self._hdr = bytearray()
                    room = self._frame_done(room)
                continue
            take = min(left, n - pos)
            pos += take
            self._left = left - take
            room = self._frame_done(room)
        return n

    def _start_frame(self, b0: int, header: memoryview) -> None:
        len7 = header[1] & 0x7F
        if len7 == 126:
            length = int.from_bytes(header[2:4], "big")
        elif len7 == 127:
            length = int.from_bytes(header[2:10], "big")
        else:
            length = len7
        self._left = length
        self._ends = bool(b0 & 0x80) and b0 & 0x0F < 8

    def _frame_done(self, room: int) -> int:
        """After progress: if the current frame is complete, back to a frame
        boundary, counting the message it ended; returns the room left."""
        if self._left != 0:
            return room
        self._left = -1
        return room - 1 if self._ends else room


def _header_size(b1: int) -> int:
    """A frame header's size from its second byte (the mask key, if the
    MASK bit is set, included): the same for either role."""
    len7 = b1 & 0x7F
    return (2 if len7 < 126 else 4 if len7 == 126 else 10) + (4 if b1 & 0x80 else 0)
