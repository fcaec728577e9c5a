"""``handler_file`` and ``handler_directory``: files from disk.

Files are read on every request (as nanonext does) and streamed in chunks,
never loaded whole. Responses carry ``ETag``/``Last-Modified`` (answering
``If-None-Match``/``If-Modified-Since`` with 304) and honour one ``Range``.
A directory handler never serves anything outside its directory: ``..``
segments (also percent-encoded), NUL bytes and symlinks that resolve
outside the root are all refused. A path the file system rejects (a file
named as a directory, a name too long, a symlink loop) is a 404, never a
500; a header value that is not exactly valid is ignored.
"""

from __future__ import annotations

import calendar
import email.utils
import errno
import io
import mimetypes
import os
import re
import stat
import time
import warnings
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

import trio

from ..http import Request
from ._base import Handler, check_path, log
from ._http import TEXT_PLAIN

if TYPE_CHECKING:
    from ..server import Responder, ServerContext, Session

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


def _mtime(st: os.stat_result) -> int:
    """Whole seconds of the modification time, as ``Last-Modified`` says it."""
    return st.st_mtime_ns // 1_000_000_000


# -- header values -------------------------------------------------------------------
# Parsed to the letter of RFC 9110: int() alone would also take signs, "_",
# surrounding whitespace (Unicode's too) and non-ASCII digits, and
# email.utils takes dates in forms HTTP does not allow. A value that does not
# parse is ignored, which is always safe here: the whole file is sent.

_OWS = " \t"  # HTTP whitespace: str.strip() would also remove \x85, \xa0, ...


def _digits(text: str) -> int | None:
    """``1*DIGIT`` as an int, or None."""
    if not (text.isascii() and text.isdigit()):
        return None
    try:
        return int(text)
    except ValueError:  # over int()'s digit limit: no file is that large
        return None


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "|".join(_MONTHS)
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
# The three forms of RFC 9110 section 5.6.7 (case-sensitive); groups are
# day, month, year, hour, minute, second (asctime's are reordered below).
_IMF_FIXDATE = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{{2}}) ({_MONTH}) ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(
    rf"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), ([0-9]{{2}})-({_MONTH})-([0-9]{{2}}) {_TIME} GMT"
)
_ASCTIME_DATE = re.compile(rf"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) ({_MONTH}) ([0-9 ][0-9]) {_TIME} ([0-9]{{4}})")


def _rfc850_year(yy: int) -> int:
    """A two-digit year: the most recent one with those digits that is not
    more than 50 years in the future (RFC 9110 section 5.6.7)."""
    now = time.gmtime().tm_year
    year = now - now % 100 + yy
    return year - 100 if year > now + 50 else year


def http_date(value: str) -> int | None:
    """Seconds since the epoch of an ``HTTP-date``, or None if ``value`` is
    not exactly one valid HTTP-date."""
    value = value.strip(_OWS)
    m = _IMF_FIXDATE.fullmatch(value)
    if m is not None:
        day, month, year, hh, mm, ss = m.groups()
        y = int(year)
    elif (m := _RFC850_DATE.fullmatch(value)) is not None:
        day, month, year, hh, mm, ss = m.groups()
        y = _rfc850_year(int(year))
    elif (m := _ASCTIME_DATE.fullmatch(value)) is not None:
        month, day, hh, mm, ss, year = m.groups()
        y = int(year)
    else:
        return None
    mon = _MONTHS.index(month) + 1
    d, h, mi, s = int(day), int(hh), int(mm), int(ss)  # ASCII digits (and " 6"): checked by the pattern
    if not (1 <= d <= calendar.monthrange(y, mon)[1] and h < 24 and mi < 60 and s <= 60):  # 60: a leap second
        return None
    return calendar.timegm((y, mon, d, h, mi, s, 0, 0, 0))


def _not_modified(req: Request, etag: str, st: os.stat_result) -> bool:
    inm = req.headers.get("if-none-match")
    if inm is not None:
        tags = [t.strip(_OWS).removeprefix("W/") for t in inm.split(",")]
        return "*" in tags or etag in tags
    ims = req.headers.get("if-modified-since")
    if ims is not None:
        when = http_date(ims)
        # Equal is not modified: browsers send back the Last-Modified they got.
        return when is not None and _mtime(st) <= when
    return False


def parse_range(value: str, size: int) -> tuple[int, int] | bool | None:
    """Parse a single ``bytes=`` range against ``size``.

    Returns ``(start, end)`` inclusive, ``None`` to ignore the header (not a
    single valid byte range: serve the whole file), or ``False`` if
    unsatisfiable. Positions are ASCII digits only (RFC 9110 section 14.1.1);
    whitespace is allowed around the range, as around any list element.
    """
    unit, _, spec = value.strip(_OWS).partition("=")
    if unit.lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip(_OWS).partition("-")
    if not dash:
        return None
    if first == "":
        n = _digits(last)
        if n is None:
            return None
        if n == 0 or size == 0:
            return False
        return max(0, size - n), size - 1
    start = _digits(first)
    end = _digits(last) if last else size - 1
    if start is None or end is None:
        return None
    if start >= size:
        return False
    if end < start:
        return None
    return start, min(end, size - 1)


# -- files ------------------------------------------------------------------------

# Errors that mean "nothing to serve at this path": the name does not exist
# or cannot (too long, a file used as a directory, a symlink loop, a name the
# file system cannot hold, a special file that vanished or changed).
_NOT_FOUND = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EINVAL,
        errno.EILSEQ,
        errno.ENXIO,
        errno.ENODEV,
    }
)
_FORBIDDEN = frozenset({errno.EACCES, errno.EPERM})
# Never wait in open(): a FIFO put in a file's place since it was stat'ed
# would block the event loop until a writer came.
_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _open_regular(path: str) -> tuple[io.BufferedReader, os.stat_result] | None:
    """``path`` opened for reading and the ``fstat`` of that very file (so
    the headers describe the bytes sent), or None if it is not a regular
    file. Raises ``OSError``."""
    fd = os.open(path, _OPEN_FLAGS)
    try:
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode):
            return open(fd, "rb"), st  # the file object owns fd from here
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _read_at(f: io.BufferedReader, start: int, size: int) -> bytes:
    f.seek(start)
    return f.read(size)


async def _read_chunks(f: io.BufferedReader, start: int, length: int) -> AsyncGenerator[bytes, None]:
    """The ``length`` bytes of ``f`` from ``start``, in chunks read in a thread.

    A read error ends the stream early: the head is out by then, so no error
    status can follow; the sender sees the short body and closes."""
    pos, left = start, length
    while left > 0:
        try:
            chunk = await trio.to_thread.run_sync(_read_at, f, pos, min(CHUNK, left))
        except OSError as exc:
            log.warning("static file: read failed after the response head: %s", exc)
            return
        if not chunk:
            return
        pos += len(chunk)
        left -= len(chunk)
        yield chunk


def _file_headers(path: str, etag: str, st: os.stat_result) -> list[tuple[str, str]]:
    return [
        ("Content-Type", content_type(path)),
        ("ETag", etag),
        ("Last-Modified", email.utils.formatdate(_mtime(st), usegmt=True)),
        ("Accept-Ranges", "bytes"),
    ]


async def serve_file(conn: Responder, req: Request, path: str, f: io.BufferedReader, st: os.stat_result) -> None:
    """Answer ``req`` with the open regular file ``f`` (named ``path``,
    fstat'ed as ``st``): 200, 206, 304 or 416."""
    etag = _etag(st)
    headers = _file_headers(path, etag, st)
    if _not_modified(req, etag, st):
        await conn.respond(req, 304, headers, b"")
        return
    size = st.st_size
    status, start, length = 200, 0, size
    rng = req.headers.get("range")
    if_range = req.headers.get("if-range")
    if rng is not None and (if_range is None or if_range.strip(_OWS) == etag):
        parsed = parse_range(rng, size)
        if parsed is False:
            await conn.respond(req, 416, [("Content-Range", f"bytes */{size}"), ("Content-Type", TEXT_PLAIN)], b"")
            return
        if isinstance(parsed, tuple):
            first, last = parsed
            status, start, length = 206, first, last - first + 1
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
    if length <= SMALL:
        try:
            body = _read_at(f, start, length)
        except OSError as exc:
            await _error_for(conn, req, exc)
            return
        await conn.respond(req, status, headers, body)
        return
    chunks = _read_chunks(f, start, length)
    try:
        await conn.respond_chunks(req, status, headers, length, chunks)
    finally:
        await chunks.aclose()  # a client that stalled or left: no reader thread is left pending


async def _send_file(conn: Responder, req: Request, path: str) -> None:
    """Answer ``req`` with the regular file at ``path``; 404 if there is none,
    the status :func:`_error_for` gives for any other OS error."""
    try:
        opened = _open_regular(path)
    except OSError as exc:
        await _error_for(conn, req, exc)
        return
    if opened is None:
        await _not_found(conn, req)
        return
    f, st = opened
    with f:
        await serve_file(conn, req, path, f, st)


async def _not_found(conn: Responder, req: Request) -> None:
    await conn.respond(req, 404, [("Content-Type", TEXT_PLAIN)], b"Not Found\n")


async def _error_for(conn: Responder, req: Request, exc: OSError) -> None:
    """The answer for a file system error (before any byte of a response):
    404 for a path that names nothing servable, 403 for a refused one, 500
    only for a fault of the server's own (out of descriptors, I/O error)."""
    if exc.errno in _NOT_FOUND:
        await _not_found(conn, req)
        return
    if exc.errno in _FORBIDDEN:
        status, text = 403, b"Forbidden\n"
    else:
        log.warning("static file: %s", exc)
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

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> Session | None:
        await _send_file(conn, req, self.file)
        return None


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
        try:
            real = os.path.realpath(candidate)
        except OSError:  # its readlink, if a link is replaced while it resolves
            return None
        if real != self.root and not real.startswith(self.root.rstrip(os.sep) + os.sep):
            return None  # a symlink pointing outside
        return real

    async def handle(self, ctx: ServerContext, conn: Responder, req: Request, tail: bytes) -> Session | None:
        base = "" if self.path == "/" else self.path.rstrip("/")
        rel = req.path[len(base) :]
        if rel == "":
            # /dir -> /dir/ so that relative links in its index work.
            await _redirect_to_slash(conn, req)
            return None
        target = self.resolve(rel)
        if target is None:
            await _not_found(conn, req)
            return None
        try:
            st = os.stat(target)
        except OSError as exc:
            await _error_for(conn, req, exc)
            return None
        if stat.S_ISDIR(st.st_mode):
            if not rel.endswith("/"):
                await _redirect_to_slash(conn, req)
            else:
                await self._serve_index(conn, req, rel)
        elif not stat.S_ISREG(st.st_mode) or rel.rpartition("/")[2] in ("", "."):
            # Not a file, or a file named as a directory ("a.txt/", "a.txt/."),
            # which the OS would refuse with ENOTDIR (realpath dropped the slash).
            await _not_found(conn, req)
        else:
            await _send_file(conn, req, target)
        return None

    async def _serve_index(self, conn: Responder, req: Request, rel: str) -> None:
        for name in INDEX_FILES:
            index = self.resolve(rel + name)  # None for a symlink pointing out
            if index is not None and os.path.isfile(index):
                await _send_file(conn, req, index)
                return
        await _not_found(conn, req)  # no listing


async def _redirect_to_slash(conn: Responder, req: Request) -> None:
    location = "/" + req.raw_path.lstrip("/") + "/" + ("?" + req.query if req.query else "")
    await conn.respond(req, 301, [("Location", location), ("Content-Type", TEXT_PLAIN)], b"Moved\n")


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
