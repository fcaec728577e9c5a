"""``handler_file`` and ``handler_directory`` (decision 17): MIME types,
re-reading, index files, redirects, traversal (byte-for-byte over raw
sockets), symlinks, streaming of large files, conditional requests, ranges,
HEAD, and request bodies."""

from __future__ import annotations

import email.utils
import mimetypes
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Response, running_server, without_date
from wsnest.handlers import _static

SECRET = b"TOP-SECRET-d41d8cd98f00b204"


def request_bytes(
    method: str = "GET", target: str = "/", headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def fetch(url: str, target: str, headers: list[tuple[str, str]] | None = None, method: str = "GET") -> Response:
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(request_bytes(method, target, headers))
            return await client.read_head(body=method != "HEAD")
        finally:
            await client.aclose()


async def exchange_raw(url: str, raw: bytes) -> bytes:
    """Send ``raw`` exactly as given and return every byte until the server
    closes (the request asks for ``Connection: close``)."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(raw)
            return await client.read_until_eof()
        finally:
            await client.aclose()


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=TIMEOUT)


# -- handler_file -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["page.html", "data.json", "pic.png", "style.css", "app.js", "doc.pdf", "x.zzqq"])
async def test_file_mime_type_from_mimetypes(tmp_path: Path, name: str) -> None:
    f = tmp_path / name
    f.write_bytes(b"content")
    async with running_server([wsnest.handler_file("/f", f)]) as (_, url):
        r = await fetch(url, "/f")
    assert (r.status, r.body) == (200, b"content")
    expected = mimetypes.guess_type(name)[0] or "application/octet-stream"
    assert r.header("content-type").split(";")[0] == expected  # type: ignore[union-attr]


async def test_file_is_reread_on_every_request(tmp_path: Path) -> None:
    f = tmp_path / "note.txt"
    f.write_bytes(b"one")
    async with running_server([wsnest.handler_file("/note", f)]) as (_, url):
        assert (await fetch(url, "/note")).body == b"one"
        f.write_bytes(b"second version")
        assert (await fetch(url, "/note")).body == b"second version"
        f.unlink()
        assert (await fetch(url, "/note")).status == 404
        f.write_bytes(b"back")
        assert (await fetch(url, "/note")).body == b"back"


async def test_missing_file_warns_at_creation_and_gives_404(tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="does not exist"):
        h = wsnest.handler_file("/missing", tmp_path / "nope.txt")
    async with running_server([h]) as (_, url):
        r = await fetch(url, "/missing")
        assert r.status == 404
        assert b"nope" not in r.body  # no file system details on the wire


async def test_file_prefix(tmp_path: Path) -> None:
    f = tmp_path / "app.html"
    f.write_bytes(b"<app>")
    handlers = [wsnest.handler_file("/app", f, prefix=True), wsnest.handler_file("/one", f)]
    async with running_server(handlers) as (_, url):
        for target in ("/app", "/app/", "/app/x/y", "/app/deep/link?z=1"):
            assert (await fetch(url, target)).body == b"<app>", target
        assert (await fetch(url, "/appx")).status == 404
        assert (await fetch(url, "/one/x")).status == 404


# -- handler_directory: normal use ------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """tmp/root (the served directory) and tmp/secret (outside it)."""
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "secretdir").mkdir()
    (tmp_path / "secretdir" / "index.html").write_bytes(SECRET)
    root = tmp_path / "root"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>root index</h1>")
    (root / "a b.txt").write_bytes(b"spaced")
    (root / "caf\u00e9.txt").write_bytes(b"accent")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_bytes(b"<h1>sub index</h1>")
    (root / "sub" / "page.txt").write_bytes(b"sub page")
    (root / "noindex").mkdir()
    (root / "noindex" / "listed-name.txt").write_bytes(b"hidden from listings")
    (root / "htm").mkdir()
    (root / "htm" / "index.htm").write_bytes(b"htm index")
    return root


async def test_directory_basics(site: Path) -> None:
    async with running_server([wsnest.handler_directory("/static", site)]) as (_, url):
        r = await fetch(url, "/static/")
        assert (r.status, r.body) == (200, b"<h1>root index</h1>")
        assert r.header("content-type").startswith("text/html")  # type: ignore[union-attr]
        r = await fetch(url, "/static/sub/")
        assert (r.status, r.body) == (200, b"<h1>sub index</h1>")
        assert (await fetch(url, "/static/sub/page.txt")).body == b"sub page"
        assert (await fetch(url, "/static/sub/index.html")).body == b"<h1>sub index</h1>"
        assert (await fetch(url, "/static/htm/")).body == b"htm index"
        assert (await fetch(url, "/static/a%20b.txt")).body == b"spaced"
        assert (await fetch(url, "/static/caf%C3%A9.txt")).body == b"accent"
        assert (await fetch(url, "/static/missing.txt")).status == 404
        assert (await fetch(url, "/static/sub/missing/deeper")).status == 404
        assert (await fetch(url, "/staticx")).status == 404
        # No listing for a directory without an index.
        r = await fetch(url, "/static/noindex/")
        assert r.status == 404
        assert b"listed-name" not in r.body


async def test_directory_slash_redirects(site: Path) -> None:
    async with running_server([wsnest.handler_directory("/static", site)]) as (_, url):
        for target, location in [
            ("/static", "/static/"),
            ("/static?x=1&y=2", "/static/?x=1&y=2"),
            ("/static/sub", "/static/sub/"),
            ("/static/sub?q", "/static/sub/?q"),
        ]:
            r = await fetch(url, target)
            assert r.status == 301, (target, r)
            assert r.header("location") == location, (target, r)
        async with http_client() as client:
            r = await client.get(url + "/static/sub", follow_redirects=True)
            assert (r.status_code, r.content) == (200, b"<h1>sub index</h1>")


async def test_directory_at_root(site: Path) -> None:
    async with running_server([wsnest.handler_directory("/", site)]) as (_, url):
        assert (await fetch(url, "/")).body == b"<h1>root index</h1>"
        assert (await fetch(url, "/sub/page.txt")).body == b"sub page"
        r = await fetch(url, "/sub")
        assert (r.status, r.header("location")) == (301, "/sub/")


# -- traversal ---------------------------------------------------------------------------

TRAVERSALS = [
    b"/../secret",
    b"/static/../secret",
    b"/static/%2e%2e/secret",
    b"/static/%2E%2E%2Fsecret",
    b"/static/..%2fsecret",
    b"/static/..%2Fsecret",
    b"/static%2f..%2fsecret",
    b"/static%2F%2E%2E%2Fsecret",
    b"/static/%2e%2e%5csecret",
    b"/static/..%5csecret",
    b"/static/..\\secret",
    b"/static/....//secret",
    b"/static/.%2e/secret",
    b"/static/%2e./secret",
    b"/static/sub/../../secret",
    b"/static/sub/%2e%2e/%2e%2e/secret",
    b"/static/%2e%2e/secretdir/",
    b"/static/%2e%2e/secretdir",
    b"/static/%252e%252e/secret",
    b"/static/%00",
    b"/static/secret%00.txt",
    b"/static/%2e%2e%00/secret",
    b"/static//../secret",
    b"/static/./../secret",
    b"/static/%2e%2e",
    b"/static/..",
    b"/..",
    b"/%2e%2e/secret",
    b"../secret",
    b"http://host/static/../secret",
    b"http://host/static/%2e%2e/secret",
    b"http://host/../secret",
]


@pytest.mark.parametrize("target", TRAVERSALS, ids=[t.decode("latin-1") for t in TRAVERSALS])
async def test_traversal_never_leaks(site: Path, target: bytes) -> None:
    handlers = [wsnest.handler_directory("/static", site), wsnest.handler_directory("/", site)]
    async with running_server(handlers) as (_, url):
        raw = b"GET " + target + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        data = await exchange_raw(url, raw)
        assert SECRET not in data
        status = int(data.split(b" ", 2)[1])
        assert status in (400, 404), data[:200]
        # The server is unharmed.
        assert (await fetch(url, "/static/sub/page.txt")).body == b"sub page"


NOT_FOUND_CLOSE = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 10\r\nConnection: close\r\n\r\nNot Found\n"
)


@pytest.mark.parametrize(
    "target",
    [
        b"/static/sub/../index.html",
        b"/static/sub/%2e%2e/index.html",
        b"/static/sub/../sub/page.txt",
        b"/static/x/../a%20b.txt",
    ],
)
async def test_dot_dot_is_refused_even_inside_the_root(site: Path, target: bytes) -> None:
    """A ``..`` segment is refused by itself (404), not only when the
    resolved path leaves the root: these all stay inside it, so the
    realpath guard alone would serve them."""
    async with running_server([wsnest.handler_directory("/static", site)]) as (_, url):
        raw = b"GET " + target + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        assert without_date(await exchange_raw(url, raw)) == NOT_FOUND_CLOSE
        assert (await fetch(url, "/static/sub/page.txt")).body == b"sub page"


async def test_symlink_escaping_the_root_is_refused(site: Path) -> None:
    outside = site.parent
    os.symlink(outside / "secret", site / "escape.txt")
    os.symlink(outside, site / "escdir")
    os.symlink(outside / "secretdir", site / "escindex")
    os.symlink("../secret", site / "relative.txt")
    (site / "leakidx").mkdir()
    os.symlink(outside / "secret", site / "leakidx" / "index.html")
    async with running_server([wsnest.handler_directory("/static", site)]) as (_, url):
        for target in (
            "/static/escape.txt",
            "/static/escdir/secret",
            "/static/escindex/",
            "/static/escindex/index.html",
            "/static/relative.txt",
            "/static/leakidx/",
            "/static/leakidx/index.html",
        ):
            data = await exchange_raw(url, request_bytes("GET", target, [("Connection", "close")]))
            assert SECRET not in data, target
            assert int(data.split(b" ", 2)[1]) in (403, 404), (target, data[:200])


async def test_symlink_inside_the_root_works(site: Path) -> None:
    os.symlink(site / "a b.txt", site / "alias.txt")
    os.symlink("sub", site / "subalias")
    async with running_server([wsnest.handler_directory("/static", site)]) as (_, url):
        assert (await fetch(url, "/static/alias.txt")).body == b"spaced"
        assert (await fetch(url, "/static/subalias/page.txt")).body == b"sub page"
        assert (await fetch(url, "/static/subalias/")).body == b"<h1>sub index</h1>"


async def test_undecodable_and_odd_names_are_404(site: Path) -> None:
    async with running_server([wsnest.handler_directory("/static", site)]) as (_, url):
        for target in ("/static/%ff%fe", "/static/caf%C3", "/static/%C3%A9", "/static/sub/%0a", "/static/a%20b.txt%20"):
            assert (await fetch(url, target)).status == 404, target
        assert (await fetch(url, "/static/sub/page.txt")).body == b"sub page"


async def test_directory_redirect_never_points_to_another_host(site: Path) -> None:
    """``GET //sub`` must not redirect to ``//sub/``: browsers read that
    Location as a network-path reference to the host ``sub`` (an open
    redirect, cf. CVE-2021-28861 in ``http.server``)."""
    async with running_server([wsnest.handler_directory("/", site)]) as (_, url):
        for target in ("//sub", "///sub", "//sub?x=1"):
            data = await exchange_raw(url, request_bytes("GET", target, [("Connection", "close")]))
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            locations = [
                line.split(":", 1)[1].strip() for line in head.split("\r\n")[1:] if line.lower().startswith("location:")
            ]
            for location in locations:
                assert location.startswith("/") and not location.startswith("//"), (target, location)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs mkfifo")
async def test_fifo_in_directory_does_not_block_the_server(site: Path) -> None:
    """A FIFO (or any non-regular file) under the root must not be opened:
    opening it blocks until a writer appears, and the open happens on the
    trio thread, which would freeze every connection. A watchdog thread
    unblocks such an open after 2 s (so the test cannot hang) and records
    that it had to."""
    fifo = site / "pipe"
    os.mkfifo(fifo)
    done = threading.Event()
    rescued: list[bool] = []

    def watchdog() -> None:
        if done.wait(2.0):
            return
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # succeeds only if a reader is blocked on it
        except OSError:
            return
        rescued.append(True)
        os.close(fd)

    thread = threading.Thread(target=watchdog, daemon=True)
    thread.start()
    try:
        async with running_server([wsnest.handler_directory("/static", site)]) as (_, url):
            resp = await fetch(url, "/static/pipe")
            done.set()
            assert (await fetch(url, "/static/sub/page.txt")).body == b"sub page"
    finally:
        done.set()
        thread.join()
    assert not rescued, "the server blocked its event loop opening a FIFO"
    assert resp.status in (403, 404), resp


# -- large files, caching, ranges, HEAD ----------------------------------------------------------

BIG = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def big_bytes() -> bytes:
    return os.urandom(BIG)


async def test_large_file_is_streamed_and_intact(tmp_path: Path, big_bytes: bytes) -> None:
    assert _static.CHUNK < BIG  # so the file goes out in several reads
    (tmp_path / "big.bin").write_bytes(big_bytes)
    handlers = [wsnest.handler_file("/big", tmp_path / "big.bin"), wsnest.handler_directory("/d", tmp_path)]
    async with running_server(handlers) as (_, url), http_client() as client:
        for target in ("/big", "/d/big.bin"):
            r = await client.get(url + target)
            assert r.status_code == 200
            assert r.headers["content-length"] == str(BIG)
            assert r.content == big_bytes
        # A range deep inside the large file (the streamed path).
        r = await client.get(url + "/big", headers={"Range": "bytes=3000000-3000099"})
        assert r.status_code == 206
        assert r.headers["content-range"] == f"bytes 3000000-3000099/{BIG}"
        assert r.content == big_bytes[3000000:3000100]
        r = await client.get(url + "/big", headers={"Range": f"bytes=1-{BIG - 2}"})
        assert r.status_code == 206
        assert r.content == big_bytes[1:-1]


async def test_large_file_head_then_get_on_one_connection(tmp_path: Path, big_bytes: bytes) -> None:
    (tmp_path / "big.bin").write_bytes(big_bytes)
    async with running_server([wsnest.handler_file("/big", tmp_path / "big.bin")]) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                await client.send(request_bytes("HEAD", "/big") + request_bytes("GET", "/big"))
                head = await client.read_head(body=False)
                assert head.status == 200
                assert head.header("content-length") == str(BIG)
                get = await client.read_head()
                assert get.status == 200
                assert get.body == big_bytes
            finally:
                await client.aclose()


@pytest.fixture
def small_file(tmp_path: Path) -> Path:
    f = tmp_path / "data.txt"
    f.write_bytes(b"0123456789abcdefghijklmnopqrstuvwxyz")
    return f


async def test_etag_and_last_modified(small_file: Path) -> None:
    async with running_server([wsnest.handler_file("/f", small_file)]) as (_, url):
        r = await fetch(url, "/f")
        etag = r.header("etag")
        last_modified = r.header("last-modified")
        assert etag and etag.startswith('"') and etag.endswith('"')
        assert last_modified is not None
        when = email.utils.parsedate_to_datetime(last_modified).timestamp()
        assert abs(when - small_file.stat().st_mtime) < 2
        # The ETag changes with the content.
        small_file.write_bytes(b"changed content, longer than before")
        assert (await fetch(url, "/f")).header("etag") != etag


async def test_conditional_requests(small_file: Path) -> None:
    async with running_server([wsnest.handler_file("/f", small_file)]) as (_, url):
        etag = (await fetch(url, "/f")).header("etag")
        assert etag is not None
        future = email.utils.formatdate(time.time() + 3600, usegmt=True)
        past = email.utils.formatdate(0, usegmt=True)
        for headers in (
            [("If-None-Match", etag)],
            [("If-None-Match", f'"nope", {etag}')],
            [("If-Modified-Since", future)],
        ):
            with trio.fail_after(TIMEOUT):
                client = await RawClient.connect(url)
                try:
                    # 304 then a normal GET on the same connection: a 304
                    # with body bytes would break the second response.
                    await client.send(request_bytes("GET", "/f", headers) + request_bytes("GET", "/f"))
                    resp = await client.read_head(body=False)
                    assert resp.status == 304, headers
                    assert resp.header("etag") == etag
                    nxt = await client.read_head()
                    assert (nxt.status, nxt.body) == (200, small_file.read_bytes()), headers
                finally:
                    await client.aclose()
        for headers in ([("If-None-Match", '"other"')], [("If-Modified-Since", past)], [("If-Modified-Since", "junk")]):
            r = await fetch(url, "/f", headers)
            assert (r.status, r.body) == (200, small_file.read_bytes()), headers


async def test_if_modified_since_equal_to_last_modified_is_304(small_file: Path) -> None:
    """What browsers send back: the exact Last-Modified they were given. The
    mtime has a fraction of a second, which Last-Modified drops: the file is
    still not modified since that second."""
    os.utime(small_file, ns=(1_700_000_000_750_000_000, 1_700_000_000_750_000_000))
    async with running_server([wsnest.handler_file("/f", small_file)]) as (_, url):
        first = await fetch(url, "/f")
        last_modified = first.header("last-modified")
        assert last_modified == "Tue, 14 Nov 2023 22:13:20 GMT"
        r = await fetch(url, "/f", [("If-Modified-Since", last_modified)])
        assert (r.status, r.body, r.header("last-modified")) == (304, b"", last_modified)
        # One second earlier: modified since then.
        r = await fetch(url, "/f", [("If-Modified-Since", "Tue, 14 Nov 2023 22:13:19 GMT")])
        assert (r.status, r.body) == (200, small_file.read_bytes())


async def test_ranges(small_file: Path) -> None:
    data = small_file.read_bytes()
    size = len(data)
    async with running_server([wsnest.handler_file("/f", small_file)]) as (_, url):
        cases = [
            ("bytes=0-9", 206, data[:10], f"bytes 0-9/{size}"),
            ("bytes=-5", 206, data[-5:], f"bytes {size - 5}-{size - 1}/{size}"),
            ("bytes=10-", 206, data[10:], f"bytes 10-{size - 1}/{size}"),
            ("bytes=30-1000", 206, data[30:], f"bytes 30-{size - 1}/{size}"),
            ("bytes=-1000", 206, data, f"bytes 0-{size - 1}/{size}"),
            ("bytes=0-1,3-4", 200, data, None),
            ("bytes=5-2", 200, data, None),
            ("items=0-1", 200, data, None),
        ]
        for rng, status, body, content_range in cases:
            r = await fetch(url, "/f", [("Range", rng)])
            assert r.status == status, (rng, r)
            assert r.body == body, rng
            assert r.header("content-length") == str(len(body)), rng
            assert r.header("content-range") == content_range, rng
        async with http_client() as client:
            r = await client.get(url + "/f", headers={"Range": "bytes=2-4"})
            assert (r.status_code, r.content) == (206, data[2:5])


@pytest.mark.parametrize("rng", ["bytes=999999-", "bytes=36-", "bytes=999999-9999999", "bytes=36-40"])
async def test_unsatisfiable_range_is_416(small_file: Path, rng: str) -> None:
    size = small_file.stat().st_size
    assert size == 36
    async with running_server([wsnest.handler_file("/f", small_file)]) as (_, url):
        r = await fetch(url, "/f", [("Range", rng)])
        assert r.status == 416, (rng, r)
        assert r.header("content-range") == f"bytes */{size}"
        assert (await fetch(url, "/f")).status == 200


async def test_head_gives_full_length_and_no_body(small_file: Path, site: Path) -> None:
    handlers = [wsnest.handler_file("/f", small_file), wsnest.handler_directory("/d", site)]
    async with running_server(handlers) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                await client.send(
                    request_bytes("HEAD", "/f") + request_bytes("HEAD", "/d/sub/page.txt") + request_bytes("GET", "/f")
                )
                r = await client.read_head(body=False)
                assert (r.status, r.header("content-length")) == (200, str(small_file.stat().st_size))
                assert r.header("etag") is not None
                r = await client.read_head(body=False)
                assert (r.status, r.header("content-length")) == (200, "8")
                r = await client.read_head()
                assert r.body == small_file.read_bytes()
            finally:
                await client.aclose()


async def test_request_body_to_static_handler_is_400(small_file: Path, site: Path) -> None:
    handlers = [
        wsnest.handler_file("/f", small_file),
        wsnest.handler_directory("/d", site),
        wsnest.handler_inline("/i", b"inline"),
    ]
    async with running_server(handlers) as (_, url):
        for target in ("/f", "/d/sub/page.txt", "/i"):
            data = await exchange_raw(url, request_bytes("GET", target, [("Connection", "close")], body=b"payload"))
            assert data.startswith(b"HTTP/1.1 400 "), (target, data[:200])
            assert small_file.read_bytes() not in data and b"sub page" not in data
            # The same without a body works.
            assert (await fetch(url, target)).status == 200


def test_directory_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="path"):
        wsnest.handler_directory(5, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="path"):
        wsnest.handler_directory("static", tmp_path)
    with pytest.raises(TypeError, match="path"):
        wsnest.handler_file(None, tmp_path / "x")  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="not a directory"):
        wsnest.handler_directory("/d", tmp_path / "missing")
