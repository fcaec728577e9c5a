"""Type stubs for the compiled WebSocket core (``_frames_c.pyx``).

Same API as the pure twin ``_frames_py``; see that module for the event
tuples ``feed`` returns.
"""

from typing import Any

from ._common import DEFAULT_MAX_MESSAGE_SIZE as DEFAULT_MAX_MESSAGE_SIZE

_BytesLike = bytes | bytearray | memoryview

__all__ = [
    "FrameParser",
    "append_frame",
    "apply_mask",
    "encode_frame",
    "mask_inplace",
    "trim_spare",
    "utf8_payload",
    "validate_utf8",
]

def apply_mask(data: _BytesLike, mask: bytes, offset: int = 0) -> bytes: ...
def mask_inplace(buf: bytearray | memoryview, mask: bytes, offset: int = 0) -> None: ...
def validate_utf8(data: _BytesLike) -> bool: ...
def utf8_payload(text: str) -> bytes | memoryview: ...
def trim_spare() -> bool: ...
def encode_frame(
    opcode: int,
    payload: str | _BytesLike = b"",
    fin: bool = True,
    mask: bytes | None = None,
) -> bytes: ...
def append_frame(out: bytearray, opcode: int, payload: str | _BytesLike, fin: bool = True) -> int: ...

class FrameParser:
    def __init__(
        self,
        max_message_size: int | None = ...,
        decode_text: bool = True,
        *,
        deflate: bool = False,
        masked: bool = True,
        stream: bool = False,
    ) -> None: ...
    @property
    def masked(self) -> bool: ...
    @property
    def stream(self) -> bool: ...
    @property
    def finished(self) -> bool: ...
    def feed(self, data: _BytesLike) -> list[tuple[Any, ...]]: ...
