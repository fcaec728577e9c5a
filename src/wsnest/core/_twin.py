"""Which twin of the frame code runs: the compiled one unless it is
missing or ``WSNEST_NO_EXTENSIONS`` is set (``WSNEST_REQUIRE_EXTENSIONS``
turns a missing compiled twin into an ``ImportError``).

A pure core that nobody asked for (the compiled twin failed to import) is
said out loud: :func:`warn_core_fallback` logs it once per process, and
``python -m wsnest --info`` prints :data:`PURE_CORE_ADVICE`.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _select() -> tuple[ModuleType, str, str]:
    """The twin, its name, and why the compiled one is missing ("" when it
    runs or when the pure one was asked for)."""
    from . import _frames_py

    if _flag("WSNEST_NO_EXTENSIONS"):
        return _frames_py, "pure", ""
    try:
        from . import _frames_c
    except ImportError as exc:
        if _flag("WSNEST_REQUIRE_EXTENSIONS"):
            raise ImportError(
                "WSNEST_REQUIRE_EXTENSIONS is set but the compiled core wsnest.core._frames_c cannot be imported"
            ) from exc
        return _frames_py, "pure", str(exc) or type(exc).__name__
    return _frames_c, "compiled", ""


_impl, CORE, _missing = _select()

FrameParser = _impl.FrameParser
apply_mask = _impl.apply_mask
mask_inplace = _impl.mask_inplace
validate_utf8 = _impl.validate_utf8
encode_frame = _impl.encode_frame
append_frame = _impl.append_frame
utf8_payload = _impl.utf8_payload
trim_spare = _impl.trim_spare

#: True when the pure core runs although nobody asked for it: the compiled
#: twin could not be imported and ``WSNEST_NO_EXTENSIONS`` is not set.
CORE_FALLBACK = bool(_missing)

#: Why the compiled core is missing (the ImportError's message), or "".
CORE_FALLBACK_REASON = _missing

#: What a user should know when the pure core runs without being asked for.
PURE_CORE_ADVICE = (
    "the compiled core is not available, so wsnest runs its pure-Python core:",
    "the same behaviour, but much slower (up to about 10x on large or pipelined messages).",
    "To get the compiled core, reinstall with a C compiler and the Python headers installed:",
    "  pip install --force-reinstall --no-binary wsnest wsnest",
    "or install a wheel built for this platform.",
    "Set WSNEST_NO_EXTENSIONS=1 to choose the pure core on purpose and silence this warning.",
)

log = logging.getLogger("wsnest")
_warned = False


def warn_core_fallback() -> None:
    """Log a warning (logger ``wsnest``) the first time a server starts or a
    client connects on a pure core nobody asked for; later calls, and every
    call on the compiled core or with ``WSNEST_NO_EXTENSIONS`` set, do nothing."""
    global _warned
    if not CORE_FALLBACK or _warned:
        return
    _warned = True
    log.warning(
        "wsnest: %s %s (import error: %s)",
        PURE_CORE_ADVICE[0],
        " ".join(line.strip() for line in PURE_CORE_ADVICE[1:]),
        CORE_FALLBACK_REASON,
    )
