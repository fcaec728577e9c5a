"""A static file server for one directory.

Run it on a directory (the current one by default)::

    python examples/static_files.py ./public       # http://127.0.0.1:8080/

Every file below the directory is served with its MIME type, ``ETag`` and
``Last-Modified`` (conditional requests get 304) and single ``Range``
requests; ``index.html`` answers for a directory, there is no listing, and
nothing outside the directory can be reached (``..``, encoded slashes,
symlinks pointing out all give 404). ``/healthz`` shows that other
handlers live beside it: the longest matching route wins.
"""

from __future__ import annotations

import os
import sys

import wsnest


def make_handlers(directory: str | os.PathLike[str]) -> list[wsnest.Handler]:
    """``directory`` served at ``/``, and a ``/healthz`` check beside it."""
    return [
        wsnest.handler_directory("/", directory),
        wsnest.handler_inline("/healthz", "ok\n", content_type="text/plain"),
    ]


if __name__ == "__main__":
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    print(f"serving the files in {os.path.abspath(root)}")
    wsnest.http_server("http://127.0.0.1:8080", make_handlers(root)).run()
