"""``handler_file`` and ``handler_directory``: files from disk.

Files are read on every request (as nanonext does) and streamed in chunks,
never loaded whole. Responses carry ``ETag``/``Last-Modified`` (answering
``If-None-Match``/``If-Modified-Since`` with 304) and honour one ``Range``.
A directory handler never serves anything outside its directory: ``..``
segments (also percent-encoded), NUL bytes and symlinks that resolve
outside the root are all refused.
"""

from __future__ import annotations

import email.utils
import errno
import mimetypes
import os
import stat
import warnings
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import trio

from ..http import Request
from ._base import Handler, check_path
from ._http import TEXT_PLAIN

if TYPE_CHECKING:
    from ..server._connection import HttpConnection
    from ..server._server import HttpServer

CHUNK = 256 * 1024
SMALL = 64 * 1024
INDEX_FILES = ("index.html", "index.htm")


def content_type(path: str) -> str:
    """The MIME type for a file name (``application/octet-stream`` if unknown)."""
    ctype, encoding = mimetypes.guess_type(path)
    if ctype is None or encoding is not None:
        return "application/octet-stream"
    if ctype.startswith("text/") or ctype in ("application/javascript", "application/json"):
        ctype += "; charset=utf-8"
    return ctype


def _etag(st: os.stat_result) -> str:
    return f'"{st.st_mtime_ns:x}-{st.st_size:x}"'


def _not_modified(req: Request, etag: str, st: os.stat_result) -> bool:
    inm = req.headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip().removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = req.headers.get("if-modified-since")
    if ims is not None:
        try:
            when = email.utils.parsedate_to_datetime(ims).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(st.st_mtime) <= when
    return False


def parse_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """Parse a single ``bytes=`` range against ``size``.

    Returns ``(start, end)`` inclusive, ``None`` to ignore the header (not a
    single byte range: serve the whole file), or ``False`` if unsatisfiable.
    """
    unit, _, spec = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            n = int(last)
            if n <= 0:
                return False
            return (max(0, size - n), size - 1) if size else False
        start = int(first)
        end = int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size:
        return False
    if start < 0 or end < start:
        return None
    return start, min(end, size - 1)


async def _read_chunks(path: str, start: int, length: int) -> AsyncGenerator[bytes, None]:
    f = await trio.to_thread.run_sync(open, path, "rb")
    try:
        await trio.to_thread.run_sync(f.seek, start)
        left = length
        while left > 0:
            chunk = await trio.to_thread.run_sync(f.read, min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk
    finally:
        f.close()


async def serve_file(conn: HttpConnection, req: Request, path: str, st: os.stat_result) -> None:
    """Answer ``req`` with the file at ``path`` (already stat'ed)."""
    etag = _etag(st)
    headers = [
        ("Content-Type", content_type(path)),
        ("ETag", etag),
        ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
        ("Accept-Ranges", "bytes"),
    ]
    if _not_modified(req, etag, st):
        await conn.respond(req, 304, headers, b"")
        return
    size = st.st_size
    status, start, length = 200, 0, size
    rng = req.headers.get("range")
    if_range = req.headers.get("if-range")
    if rng is not None and (if_range is None or if_range.strip() == etag):
        parsed = parse_range(rng, size)
        if parsed is False:
            await conn.respond(req, 416, [("Content-Range", f"bytes */{size}"), ("Content-Type", TEXT_PLAIN)], b"")
            return
        if isinstance(parsed, tuple):
            first, last = parsed
            status, start, length = 206, first, last - first + 1
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    if length <= SMALL:
        with open(path, "rb") as f:
            f.seek(start)
            body = f.read(length)
        await conn.respond(req, status, headers, body)
        return
    chunks = _read_chunks(path, start, length)
    try:
        await conn.respond_chunks(req, status, headers, length, chunks)
    finally:
        await chunks.aclose()  # closes the file now, also when the client stalled or left


async def _error_for(conn: HttpConnection, req: Request, exc: OSError) -> None:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        status, text = 404, b"Not Found\n"
    elif exc.errno in (errno.EACCES, errno.EPERM):
        status, text = 403, b"Forbidden\n"
    else:
        status, text = 500, b"Internal Server Error\n"
    await conn.respond(req, status, [("Content-Type", TEXT_PLAIN)], text)


class FileHandler(Handler):
    """One file; made by :func:`handler_file`."""

    rejects_body = True

    def __init__(self, path: str, file: str | os.PathLike[str], prefix: bool) -> None:
        self.path = check_path(path)
        self.file = os.path.abspath(os.fspath(file))
        if not os.path.isfile(self.file):
            warnings.warn(f"handler_file: {self.file} does not exist (yet)", stacklevel=3)
        self.prefix = bool(prefix)

    async def handle_http(self, server: HttpServer, conn: HttpConnection, req: Request) -> bool:
        try:
            st = os.stat(self.file)
            if not os.path.isfile(self.file):
                raise IsADirectoryError(errno.EISDIR, "not a file")
            await serve_file(conn, req, self.file, st)
        except OSError as exc:
            await _error_for(conn, req, exc)
        return False


class DirectoryHandler(Handler):
    """A directory tree; made by :func:`handler_directory`."""

    rejects_body = True
    prefix = True

    def __init__(self, path: str, directory: str | os.PathLike[str]) -> None:
        self.path = check_path(path)
        root = os.path.realpath(os.fspath(directory))
        if not os.path.isdir(root):
            warnings.warn(f"handler_directory: {root} is not a directory (yet)", stacklevel=3)
        self.root = root

    def resolve(self, rel: str) -> str | None:
        """Map a decoded path below the route to a file system path inside
        the root, or ``None`` if it would leave it."""
        if "\0" in rel or "\\" in rel:
            return None
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            return None
        candidate = os.path.join(self.root, *parts)
        real = os.path.realpath(candidate)
        if real != self.root and not real.startswith(self.root.rstrip(os.sep) + os.sep):
            return None  # a symlink pointing outside
        return real

    async def handle_http(self, server: HttpServer, conn: HttpConnection, req: Request) -> bool:
        base = "" if self.path == "/" else self.path.rstrip("/")
        rel = req.path[len(base) :]
        not_found = (404, [("Content-Type", TEXT_PLAIN)], b"Not Found\n")
        if rel == "":
            # /dir -> /dir/ so that relative links in its index work.
            location = "/" + req.raw_path.lstrip("/") + "/" + ("?" + req.query if req.query else "")
            await conn.respond(req, 301, [("Location", location), ("Content-Type", TEXT_PLAIN)], b"Moved\n")
            return False
        target = self.resolve(rel)
        if target is None:
            await conn.respond(req, *not_found)
            return False
        try:
            if os.path.isdir(target):
                if not rel.endswith("/"):
                    location = "/" + req.raw_path.lstrip("/") + "/" + ("?" + req.query if req.query else "")
                    await conn.respond(req, 301, [("Location", location), ("Content-Type", TEXT_PLAIN)], b"Moved\n")
                    return False
                for name in INDEX_FILES:
                    index = os.path.join(target, name)
                    if os.path.isfile(index) and self.resolve(rel + name) is not None:
                        await serve_file(conn, req, index, os.stat(index))
                        return False
                await conn.respond(req, *not_found)
                return False
            st = os.stat(target)
            if not stat.S_ISREG(st.st_mode):
                await conn.respond(req, *not_found)
                return False
            await serve_file(conn, req, target, st)
        except OSError as exc:
            await _error_for(conn, req, exc)
        return False


def handler_file(path: str, file: str | os.PathLike[str], prefix: bool = False) -> FileHandler:
    """Serve one file at ``path`` (re-read on every request; MIME type from
    its extension). ``prefix=True`` serves it for every sub-path too."""
    return FileHandler(path, file, prefix)


def handler_directory(path: str, directory: str | os.PathLike[str]) -> DirectoryHandler:
    """Serve the files below ``directory`` at ``path`` and its sub-paths.

    ``index.html`` (then ``index.htm``) answers for a directory; ``/dir``
    redirects to ``/dir/``; there is no listing. Nothing outside
    ``directory`` can be reached (``..``, encoded ``%2e%2e``/``%2f``,
    symlinks pointing out).
    """
    return DirectoryHandler(path, directory)
