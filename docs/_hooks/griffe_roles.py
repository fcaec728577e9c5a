"""Griffe extension: render the Sphinx roles of wsnest's docstrings as code.

The docstrings use ``:func:`name``` and friends (read by Python's help()
and by editors); Markdown would show the role name literally.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

_ROLE = re.compile(r":(?:func|class|meth|attr|data|mod|exc|obj):`(~?)([^`]+)`")


def _shown(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"``{target.rsplit('.', 1)[-1] if tilde else target}``"  # ~a.b.C shows C, as Sphinx does


class SphinxRolesAsCode(Extension):
    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_shown, obj.docstring.value)
