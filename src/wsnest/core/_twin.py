"""Which twin of the frame code runs: the compiled one unless it is
missing or ``WSNEST_NO_EXTENSIONS`` is set (``WSNEST_REQUIRE_EXTENSIONS``
turns a missing compiled twin into an ``ImportError``)."""

from __future__ import annotations

import os
from types import ModuleType


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _select() -> tuple[ModuleType, str]:
    from . import _frames_py

    if _flag("WSNEST_NO_EXTENSIONS"):
        return _frames_py, "pure"
    try:
        from . import _frames_c
    except ImportError as exc:
        if _flag("WSNEST_REQUIRE_EXTENSIONS"):
            raise ImportError(
                "WSNEST_REQUIRE_EXTENSIONS is set but the compiled core wsnest.core._frames_c cannot be imported"
            ) from exc
        return _frames_py, "pure"
    return _frames_c, "compiled"


_impl, CORE = _select()

FrameParser = _impl.FrameParser
apply_mask = _impl.apply_mask
mask_inplace = _impl.mask_inplace
validate_utf8 = _impl.validate_utf8
encode_frame = _impl.encode_frame
append_frame = _impl.append_frame
