"""Static handlers under hostile paths and header values (issue 11, item 9).

Every request goes over a raw socket, byte for byte: HTTP clients normalise
paths (``/a.txt/.``, ``..``) and would never send what is tested here.
"""

from __future__ import annotations

import calendar
import email.utils
import errno
import os
import time
from pathlib import Path

import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Response, running_server, without_date
from wsnest.handlers import _static

CONTENT = b"0123456789abcdefghijklmnopqrstuvwxyz"  # 36 bytes
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 10\r\nConnection: close\r\n\r\nNot Found\n"
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    d = tmp_path / "root"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_bytes(CONTENT)
    (d / "sub" / "page.txt").write_bytes(b"sub page")
    (d / "sub" / "index.html").write_bytes(b"sub index")
    return d


async def exchange(url: str, target: bytes, headers: bytes = b"") -> bytes:
    """Send one ``Connection: close`` request with ``target`` as given; every
    byte of the answer but its (checked) Date header."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + headers + b"\r\n")
            return without_date(await client.read_until_eof())
        finally:
            await client.aclose()


async def get(url: str, target: bytes, headers: bytes = b"") -> Response:
    """One request on its own connection; the parsed response."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n" + headers + b"\r\n")
            return await client.read_head()
        finally:
            await client.aclose()


# -- a file name used as a directory --------------------------------------------------------


FILE_AS_DIR = [
    b"/a.txt/",
    b"/a.txt/.",
    b"/a.txt//",
    b"/a.txt/%2e",
    b"/a.txt/./",
    b"/sub/page.txt/",
    b"/sub/./page.txt/",
]


@pytest.mark.parametrize("tail", FILE_AS_DIR, ids=[t.decode() for t in FILE_AS_DIR])
@pytest.mark.parametrize("route", ["/static", "/"])
async def test_trailing_slash_after_a_file_name_is_404(root: Path, route: str, tail: bytes) -> None:
    """``/static/a.txt/`` names a directory; ``a.txt`` is a file (nginx: 404)."""
    async with running_server([wsnest.handler_directory(route, root)]) as (_, url):
        prefix = b"" if route == "/" else route.encode()
        assert await exchange(url, prefix + tail) == NOT_FOUND
        # The file itself, and a real directory with a slash, still work.
        assert (await get(url, prefix + b"/a.txt")).body == CONTENT
        assert (await get(url, prefix + b"/sub/")).body == b"sub index"
        assert (await get(url, prefix + b"/sub/./page.txt")).body == b"sub page"


# -- names the file system refuses ----------------------------------------------------------

LONG_NAMES = {
    "component-256": b"/" + b"x" * 256,
    "component-300": b"/" + b"x" * 300,
    "component-300-mid": b"/" + b"x" * 300 + b"/a.txt",
    "component-300-dir": b"/" + b"x" * 300 + b"/",
    "component-300-encoded": b"/" + b"%78" * 300,
    "path-over-PATH_MAX-short-parts": b"/d" * 2100,
    "path-over-PATH_MAX-long-parts": (b"/" + b"y" * 200) * 25,
}


@pytest.mark.parametrize("tail", LONG_NAMES.values(), ids=LONG_NAMES.keys())
async def test_over_long_names_are_404(root: Path, tail: bytes) -> None:
    """ENAMETOOLONG (a component over NAME_MAX, a path over PATH_MAX) means
    no such file can exist: 404, as nginx answers, and not a 500. (Not 414:
    the request line was within the server's limits and was understood.)"""
    async with running_server([wsnest.handler_directory("/static", root)]) as (_, url):
        assert await exchange(url, b"/static" + tail) == NOT_FOUND
        assert (await get(url, b"/static/a.txt")).body == CONTENT


def test_the_long_names_really_are_too_long(root: Path) -> None:
    """The cases above reach ENAMETOOLONG on this system (so they test the mapping)."""
    for tail in (b"/" + b"x" * 300, (b"/" + b"y" * 200) * 25):
        with pytest.raises(OSError) as info:
            os.stat(os.fsdecode(bytes(root) + tail))
        assert info.value.errno == errno.ENAMETOOLONG


async def test_symlink_loops_are_404(root: Path) -> None:
    """ELOOP (a symlink loop inside the root) is a 404, never a 500."""
    os.symlink("self", root / "self")
    os.symlink("ping", root / "pong")
    os.symlink("pong", root / "ping")
    with pytest.warns(UserWarning, match="does not exist"):
        looped = wsnest.handler_file("/looped", root / "self")
    with pytest.warns(UserWarning, match="does not exist"):
        long = wsnest.handler_file("/long", root / ("x" * 300))
    handlers = [wsnest.handler_directory("/static", root), looped, long]
    async with running_server(handlers) as (_, url):
        for target in (b"/static/self", b"/static/self/", b"/static/self/x", b"/static/ping", b"/static/pong/a.txt"):
            assert await exchange(url, target) == NOT_FOUND, target
        assert await exchange(url, b"/looped") == NOT_FOUND
        assert await exchange(url, b"/long") == NOT_FOUND
        assert (await get(url, b"/static/a.txt")).body == CONTENT


# -- a read error after the head ----------------------------------------------------------


async def test_read_error_while_streaming_ends_the_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An I/O error in the middle of a large file cannot be answered with an
    error status (the 200 head is out): the body stops short and the
    connection closes, with no second response written into the body."""
    data = os.urandom(3 * _static.CHUNK)
    (tmp_path / "big.bin").write_bytes(data)
    real_read = _static._read_at
    calls = 0

    def failing_read(f: object, start: int, size: int) -> bytes:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real_read(f, start, size)  # type: ignore[arg-type]

    monkeypatch.setattr(_static, "_read_at", failing_read)
    async with running_server([wsnest.handler_file("/big", tmp_path / "big.bin")]) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                await client.send(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")  # keep-alive
                head = await client.read_head(body=False)
                assert (head.status, head.header("content-length")) == (200, str(len(data)))
                rest = await client.read_until_eof()  # the server must close
            finally:
                await client.aclose()
        assert rest == data[: _static.CHUNK]
        assert calls == 2
        monkeypatch.setattr(_static, "_read_at", real_read)
        assert (await get(url, b"/big")).body == data


# -- Range: digits only -----------------------------------------------------------------------

INVALID_RANGES = [
    b"bytes=1_0-2_0",
    b"bytes=+5-10",
    b"bytes=5-+10",
    b"bytes=-+5",
    b"bytes=-1_0",
    b"bytes=5 -10",
    b"bytes=5- 10",
    b"bytes=\xa05-10",  # NBSP: str.strip() and int() would both skip it
    b"bytes=\x855-10",  # NEL, likewise
    b"bytes=-\xa05",
    b"bytes=5-10\xa0",
    b"bytes=\xb2-10",  # superscript two: str.isdigit() is true for it
    b"bytes =5-10",
    b"bytes\x85=5-10",
    b"bytes=0x5-10",
    b"bytes=5e0-10",
    b"bytes=-",
    b"bytes=10-5",
]


@pytest.mark.parametrize("rng", INVALID_RANGES, ids=[r.decode("latin-1") for r in INVALID_RANGES])
async def test_invalid_range_is_ignored(root: Path, rng: bytes) -> None:
    """RFC 9110 ranges are 1*DIGIT; a Range that is not valid is ignored
    (section 14.2): 200 with the whole file, no Content-Range."""
    async with running_server([wsnest.handler_directory("/static", root)]) as (_, url):
        r = await get(url, b"/static/a.txt", b"Range: " + rng + b"\r\n")
        assert (r.status, r.body, r.header("content-range")) == (200, CONTENT, None)


VALID_RANGES = [
    (b"bytes=5-10", 5, 10),
    (b"Bytes=5-10", 5, 10),  # range units are case-insensitive
    (b"bytes= 5-10", 5, 10),  # OWS around a list element
    (b"bytes=5-10\t", 5, 10),
    (b"bytes=005-010", 5, 10),
    (b"bytes=-5", 31, 35),
    (b"bytes=30-", 30, 35),
    (b"bytes=0-99999999999999999999999999", 0, 35),
]


@pytest.mark.parametrize("rng,first,last", VALID_RANGES, ids=[r.decode() for r, _, _ in VALID_RANGES])
async def test_valid_ranges_still_work(root: Path, rng: bytes, first: int, last: int) -> None:
    async with running_server([wsnest.handler_directory("/static", root)]) as (_, url):
        r = await get(url, b"/static/a.txt", b"Range: " + rng + b"\r\n")
        assert r.status == 206, r
        assert r.header("content-range") == f"bytes {first}-{last}/{len(CONTENT)}"
        assert r.body == CONTENT[first : last + 1]


async def test_if_range_compares_with_http_whitespace_only(root: Path) -> None:
    async with running_server([wsnest.handler_directory("/static", root)]) as (_, url):
        etag = (await get(url, b"/static/a.txt")).header("etag")
        assert etag is not None
        rng = b"Range: bytes=0-1\r\n"
        r = await get(url, b"/static/a.txt", rng + b"If-Range: " + etag.encode() + b"\r\n")
        assert (r.status, r.body) == (206, CONTENT[:2])
        r = await get(url, b"/static/a.txt", rng + b"If-Range: \x85" + etag.encode() + b"\r\n")
        assert (r.status, r.body) == (200, CONTENT)


# -- If-Modified-Since: an HTTP-date, nothing else ----------------------------------------------

FUTURE = time.gmtime(time.time() + 10 * 365 * 86400)  # well after the file's mtime
FUTURE_YEAR = FUTURE.tm_year
# Not an HTTP-date, yet email.utils reads each as a date after the file's
# mtime, so a lax parser answers 304.
LAX_DATES = [
    f"Sun, 0_6 Nov {FUTURE_YEAR} 08:49:37 GMT",
    f"Sun, +6 Nov {FUTURE_YEAR} 08:49:37 GMT",
    f"Sun, 06 Nov {FUTURE_YEAR} 08:49 GMT",
    f"Sun, 6 Nov {FUTURE_YEAR} 08:49:37 GMT",
    f"06 Nov {FUTURE_YEAR} 08:49:37 GMT",
    f"Sun, 06 nov {FUTURE_YEAR} 08:49:37 GMT",
    f"Sun, 06 Nov {FUTURE_YEAR} 08:49:37 +0000",
    f"Sun, 06 Nov {FUTURE_YEAR} 08:49:37 -0000",
    f"Sun, 06 Nov {FUTURE_YEAR} 08:49:37",
    f"Sun, 06 Nov {FUTURE_YEAR} 08:49:37 UTC",
    f"Sun, 06 Nov {FUTURE_YEAR} 08:49:37 GMT, Sun, 06 Nov {FUTURE_YEAR} 08:49:37 GMT",
    f"Sun, 06 Nov {FUTURE_YEAR} 08:49:37 GMT\x85",
]
# Well-formed but impossible dates.
INVALID_DATES = [*LAX_DATES, f"Sun, 31 Feb {FUTURE_YEAR} 08:49:37 GMT", f"Sun, 06 Nov {FUTURE_YEAR} 25:49:37 GMT"]


def test_the_lax_dates_fool_email_utils() -> None:
    """Each lax case is a 304 with the lenient parser (so the test below
    checks strictness, not a date in the past)."""
    now = time.time()
    for value in LAX_DATES:
        assert email.utils.parsedate_to_datetime(value).timestamp() > now, value


@pytest.mark.parametrize("value", INVALID_DATES)
async def test_invalid_if_modified_since_is_ignored(root: Path, value: str) -> None:
    """RFC 9110 section 13.1.3: an If-Modified-Since that is not a valid
    HTTP-date (or has more than one member) is ignored."""
    async with running_server([wsnest.handler_directory("/static", root)]) as (_, url):
        r = await get(url, b"/static/a.txt", b"If-Modified-Since: " + value.encode("latin-1") + b"\r\n")
        assert (r.status, r.body) == (200, CONTENT)


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _forms(t: time.struct_time) -> list[str]:
    """``t`` in the three HTTP-date forms (IMF-fixdate, rfc850, asctime)."""
    mon = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")[t.tm_mon - 1]
    hms = f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    return [
        f"{DAYS[t.tm_wday]}, {t.tm_mday:02d} {mon} {t.tm_year} {hms} GMT",
        f"{LONG_DAYS[t.tm_wday]}, {t.tm_mday:02d}-{mon}-{t.tm_year % 100:02d} {hms} GMT",
        f"{DAYS[t.tm_wday]} {mon} {t.tm_mday:2d} {hms} {t.tm_year}",
    ]


async def test_every_http_date_form_is_understood(root: Path) -> None:
    """RFC 9110 section 5.6.7: recipients accept all three forms."""
    past = time.gmtime(calendar.timegm((2001, 2, 3, 4, 5, 6, 0, 0, 0)))
    async with running_server([wsnest.handler_directory("/static", root)]) as (_, url):
        for value in _forms(FUTURE):
            r = await get(url, b"/static/a.txt", b"If-Modified-Since: " + value.encode() + b"\r\n")
            assert r.status == 304, value
        for value in _forms(past):
            r = await get(url, b"/static/a.txt", b"If-Modified-Since: " + value.encode() + b"\r\n")
            assert (r.status, r.body) == (200, CONTENT), value


def test_http_date_values() -> None:
    when = calendar.timegm((1994, 11, 6, 8, 49, 37, 0, 0, 0))
    assert _static.http_date("Sun, 06 Nov 1994 08:49:37 GMT") == when
    assert _static.http_date("Sunday, 06-Nov-94 08:49:37 GMT") == when
    assert _static.http_date("Sun Nov  6 08:49:37 1994") == when
    assert _static.http_date(" Sun, 06 Nov 1994 08:49:37 GMT\t") == when  # field OWS
    assert _static.http_date("Sun, 29 Feb 2000 00:00:00 GMT") is not None
    assert _static.http_date("Tue, 29 Feb 2100 00:00:00 GMT") is None  # not a leap year
    assert _static.http_date("Sat, 31 Dec 2016 23:59:60 GMT") == calendar.timegm((2017, 1, 1, 0, 0, 0, 0, 0, 0))
    # A two-digit year more than 50 years ahead is in the past century.
    yy = (time.gmtime().tm_year + 51) % 100
    got = _static.http_date(f"Monday, 01-Jan-{yy:02d} 00:00:00 GMT")
    assert got is not None and time.gmtime(got).tm_year == time.gmtime().tm_year + 51 - 100
