"""``handler``, ``handler_inline`` and ``handler_redirect`` (decisions 12-14):
the request object, how callback results become responses, errors, and
argument checking."""

from __future__ import annotations

import http
import logging
from typing import Any

import httpx
import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Response, running_server


def request_bytes(
    method: str = "GET", target: str = "/", headers: list[tuple[str, str]] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in headers or []]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def fetch(url: str, data: bytes) -> tuple[Response, bytes]:
    """Send ``data`` on a fresh connection; the first response and any bytes after it."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(data)
            resp = await client.read_head(body=not data.startswith(b"HEAD "))
            return resp, bytes(client.buf)
        finally:
            await client.aclose()


async def get(url: str, target: str = "/", **kw: Any) -> Response:
    resp, _ = await fetch(url, request_bytes("GET", target, **kw))
    return resp


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=TIMEOUT)


async def assert_serving(url: str, target: str = "/ok") -> None:
    resp = await get(url, target)
    assert (resp.status, resp.body) == (200, b"ok"), resp


OK = wsnest.handler("/ok", lambda req: {"body": "ok"})


# -- callbacks -------------------------------------------------------------------


async def test_plain_and_async_callbacks() -> None:
    async def slow(req: wsnest.Request) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return {"status": 201, "body": "async " + req.method}

    handlers = [wsnest.handler("/plain", lambda req: {"body": "plain " + req.method}), wsnest.handler("/async", slow)]
    async with running_server(handlers) as (_, url), http_client() as client:
        r = await client.get(url + "/plain")
        assert (r.status_code, r.text) == (200, "plain GET")
        r = await client.get(url + "/async")
        assert (r.status_code, r.text) == (201, "async GET")


async def test_request_attributes() -> None:
    seen: list[wsnest.Request] = []

    def cb(req: wsnest.Request) -> dict[str, Any]:
        seen.append(req)
        return {"body": "ok"}

    async with running_server([wsnest.handler("/p q", cb, prefix=True, method="*")]) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                local = client.stream.socket.getsockname()  # type: ignore[attr-defined]
                await client.send(
                    request_bytes(
                        "GET",
                        "/p%20q/r%2Fs?x=1&y=%20&x=2",
                        [("X-Test", "a"), ("Another", "c"), ("x-TEST", "b"), ("Empty", "")],
                    )
                )
                assert (await client.read_head()).status == 200
                await client.send(request_bytes("POST", "/p%20q", body=b"\x00binary\xff"))
                assert (await client.read_head()).status == 200
            finally:
                await client.aclose()
    get_req, post_req = seen
    assert get_req.method == "GET"
    assert get_req.uri == "/p%20q/r%2Fs?x=1&y=%20&x=2"
    assert get_req.path == "/p q/r/s"
    assert get_req.query == "x=1&y=%20&x=2"
    assert get_req.body == b""
    assert get_req.http_version == "1.1"
    assert get_req.client == (local[0], local[1])
    h = get_req.headers
    assert h["x-test"] == h["X-TEST"] == "a, b"
    assert h.getall("X-Test") == ["a", "b"]
    assert h.get("another") == "c"
    assert h["empty"] == ""
    assert h.get("missing") is None and "missing" not in h
    assert "HOST" in h
    assert list(h) == ["Host", "X-Test", "Another", "Empty"]  # arrival order, first spelling
    assert h.raw[1:] == [("X-Test", "a"), ("Another", "c"), ("x-TEST", "b"), ("Empty", "")]
    assert post_req.method == "POST"
    assert post_req.body == b"\x00binary\xff"
    assert post_req.query == ""
    assert post_req.uri == "/p%20q"


# -- building the response ---------------------------------------------------------


async def test_status_int_and_httpstatus() -> None:
    handlers = [
        wsnest.handler("/int", lambda req: {"status": 418, "body": "tea"}),
        wsnest.handler("/enum", lambda req: {"status": http.HTTPStatus.ACCEPTED, "body": "e"}),
        wsnest.handler("/default", lambda req: {"body": "d"}),
        wsnest.handler("/odd", lambda req: {"status": 299, "body": "odd"}),
    ]
    async with running_server(handlers) as (_, url):
        r = await get(url, "/int")
        assert (r.status, r.reason, r.body) == (418, "I'm a Teapot", b"tea")
        r = await get(url, "/enum")
        assert (r.status, r.reason) == (202, "Accepted")
        assert (await get(url, "/default")).status == 200
        assert (await get(url, "/odd")).status == 299


async def test_headers_as_mapping_and_as_pairs_with_repeats() -> None:
    handlers = [
        wsnest.handler("/map", lambda req: {"headers": {"X-One": "1", "Cache-Control": "no-store"}, "body": "m"}),
        wsnest.handler(
            "/pairs",
            lambda req: {
                "headers": [("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly"), ("X-Two", "2")],
                "body": "p",
            },
        ),
    ]
    async with running_server(handlers) as (_, url):
        r = await get(url, "/map")
        assert r.header("x-one") == "1"
        assert r.header("cache-control") == "no-store"
        r = await get(url, "/pairs")
        cookies = [v for k, v in r.headers if k.lower() == "set-cookie"]
        assert cookies == ["a=1; Path=/", "b=2; HttpOnly"]
        assert r.header("x-two") == "2"
        async with http_client() as client:
            resp = await client.get(url + "/pairs")
            assert resp.headers.get_list("set-cookie") == ["a=1; Path=/", "b=2; HttpOnly"]
            assert set(resp.cookies.keys()) == {"a", "b"}


async def test_body_types_and_content_length() -> None:
    handlers = [
        wsnest.handler("/str", lambda req: {"body": "h\u00e9llo"}),
        wsnest.handler("/str-typed", lambda req: {"body": "{}", "headers": {"content-type": "application/json"}}),
        wsnest.handler("/bytes", lambda req: {"body": b"\x00\x01\x02"}),
        wsnest.handler("/bytearray", lambda req: {"body": bytearray(b"ba")}),
        wsnest.handler("/memoryview", lambda req: {"body": memoryview(b"mv")}),
        wsnest.handler("/none", lambda req: {"body": None}),
        wsnest.handler("/nokey", lambda req: {}),
        wsnest.handler("/lying", lambda req: {"body": "four", "headers": {"Content-Length": "100"}}),
    ]
    async with running_server(handlers) as (_, url):
        r = await get(url, "/str")
        assert r.body == "h\u00e9llo".encode()
        assert r.header("content-type") == "text/plain; charset=utf-8"
        assert r.header("content-length") == "6"
        r = await get(url, "/str-typed")
        assert r.header("content-type") == "application/json"
        r = await get(url, "/bytes")
        assert (r.body, r.header("content-length")) == (b"\x00\x01\x02", "3")
        assert r.header("content-type") is None
        assert (await get(url, "/bytearray")).body == b"ba"
        assert (await get(url, "/memoryview")).body == b"mv"
        for target in ("/none", "/nokey"):
            resp, rest = await fetch(url, request_bytes("GET", target))
            assert resp.status == 200
            assert resp.header("content-length") == "0"
            assert resp.body == b"" and rest == b""
        # A user Content-Length is replaced by the real one, and only one is sent.
        r = await get(url, "/lying")
        assert [v for k, v in r.headers if k.lower() == "content-length"] == ["4"]
        assert r.body == b"four"


async def test_keep_alive_after_bodyless_response() -> None:
    """Content-Length: 0 lets the client reuse the connection."""
    handlers = [wsnest.handler("/none", lambda req: {"body": None}), OK]
    async with running_server(handlers) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                await client.send(request_bytes("GET", "/none"))
                first = await client.read_head()
                await client.send(request_bytes("GET", "/ok"))
                second = await client.read_head()
            finally:
                await client.aclose()
        assert first.status == 200 and second.body == b"ok"


async def test_post_body_echoed() -> None:
    def echo(req: wsnest.Request) -> dict[str, Any]:
        return {"body": req.body, "headers": {"Content-Type": req.headers.get("content-type", "")}}

    payload = bytes(range(256)) * 100
    async with running_server([wsnest.handler("/echo", echo, method="POST")]) as (_, url), http_client() as client:
        r = await client.post(url + "/echo", content=payload, headers={"Content-Type": "application/x-test"})
        assert r.status_code == 200
        assert r.content == payload
        assert r.headers["content-type"] == "application/x-test"
        r = await client.post(url + "/echo", data={"k": "v w"})
        assert r.content == b"k=v+w"


# -- callback errors ----------------------------------------------------------------


async def test_raising_callback_gives_500_logs_traceback_and_server_lives(caplog: pytest.LogCaptureFixture) -> None:
    def boom(req: wsnest.Request) -> dict[str, Any]:
        raise RuntimeError("secret-detail-xyzzy")

    async def aboom(req: wsnest.Request) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        raise KeyError("async-secret-plugh")

    handlers = [wsnest.handler("/boom", boom), wsnest.handler("/aboom", aboom), OK]
    with caplog.at_level(logging.ERROR, logger="wsnest"):
        async with running_server(handlers) as (_, url):
            for target, secret in (("/boom", b"secret-detail-xyzzy"), ("/aboom", b"async-secret-plugh")):
                with trio.fail_after(TIMEOUT):
                    client = await RawClient.connect(url)
                    try:
                        await client.send(request_bytes("GET", target))
                        resp = await client.read_head()
                        # Same connection: the server keeps serving it.
                        await client.send(request_bytes("GET", "/ok"))
                        after = await client.read_head()
                    finally:
                        await client.aclose()
                assert resp.status == 500
                assert 0 < len(resp.body) < 200
                wire = repr(resp.headers).encode() + resp.body
                assert secret not in wire and b"Traceback" not in wire
                assert (after.status, after.body) == (200, b"ok")
            await assert_serving(url)
    failures = [r for r in caplog.records if r.name == "wsnest" and r.exc_info]
    assert len(failures) == 2
    assert "secret-detail-xyzzy" in caplog.text and "async-secret-plugh" in caplog.text
    assert "Traceback" in caplog.text


@pytest.mark.parametrize(
    "result",
    [
        "just a string",
        None,
        ["status", 200],
        {"status": "200"},
        {"status": 200.0},
        {"status": 99},
        {"body": 12345},
        {"headers": 5},
        {"bogus": 1},
    ],
    ids=["str", "None", "list", "status-str", "status-float", "status-99", "body-int", "headers-int", "unknown-key"],
)
async def test_bad_callback_result_gives_500(result: Any, caplog: pytest.LogCaptureFixture) -> None:
    async with running_server([wsnest.handler("/bad", lambda req: result), OK]) as (_, url):
        with caplog.at_level(logging.ERROR, logger="wsnest"):
            r = await get(url, "/bad")
        assert r.status == 500
        await assert_serving(url)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-A": "v\r\nX-Injected: 1"},
        {"X-A": "v\nX-Injected: 1"},
        {"X-A": "v\rX-Injected: 1"},
        [("X-A\r\nX-Injected", "1")],
        [("X-A: b\r\nX-Injected", "1")],
        {"X-A": "v\r\n\r\n<html>injected body"},
        {"X-A": "nul\x00byte"},
    ],
    ids=["crlf", "lf", "cr", "name-crlf", "name-colon-crlf", "body-split", "nul"],
)
async def test_header_injection_gives_500(headers: Any, caplog: pytest.LogCaptureFixture) -> None:
    async with running_server([wsnest.handler("/inject", lambda req: {"headers": headers, "body": "x"}), OK]) as (
        _,
        url,
    ):
        with caplog.at_level(logging.ERROR, logger="wsnest"):
            resp, rest = await fetch(url, request_bytes("GET", "/inject"))
        assert resp.status == 500
        assert resp.header("x-injected") is None
        assert b"injected" not in resp.body + rest
        await assert_serving(url)


# -- handler_inline ---------------------------------------------------------------------


async def test_handler_inline() -> None:
    data = bytearray(b"original")
    handlers = [
        wsnest.handler_inline("/bin", data),
        wsnest.handler_inline("/text", "h\u00e9", content_type="text/plain; charset=utf-8"),
        wsnest.handler_inline("/tree", b"tree", prefix=True),
        wsnest.handler_inline("/empty", b""),
    ]
    data[:] = b"mutated!"  # copied at creation: the change must not show
    async with running_server(handlers) as (_, url):
        r = await get(url, "/bin")
        assert r.body == b"original"
        assert r.header("content-type") == "application/octet-stream"
        r = await get(url, "/text")
        assert r.body == "h\u00e9".encode()
        assert r.header("content-type") == "text/plain; charset=utf-8"
        assert (await get(url, "/tree/a/b")).body == b"tree"
        assert (await get(url, "/treex")).status == 404
        r = await get(url, "/empty")
        assert (r.status, r.header("content-length")) == (200, "0")
        # HEAD gets the length, no body.
        resp, rest = await fetch(url, request_bytes("HEAD", "/bin"))
        assert resp.header("content-length") == "8" and rest == b""


# -- handler_redirect ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_statuses(status: int) -> None:
    async with running_server([wsnest.handler_redirect("/old", "https://example.com/new", status=status)]) as (
        _,
        url,
    ):
        r = await get(url, "/old")
        assert r.status == status
        assert r.header("location") == "https://example.com/new"


async def test_redirect_default_status_is_302() -> None:
    async with running_server([wsnest.handler_redirect("/old", "/new")]) as (_, url):
        r = await get(url, "/old")
        assert (r.status, r.header("location")) == (302, "/new")


@pytest.mark.parametrize("status", [200, 404, 300, 304, 305, 306, 309, "301", 301.0, True])
def test_redirect_rejects_other_statuses(status: Any) -> None:
    with pytest.raises(ValueError, match="status"):
        wsnest.handler_redirect("/old", "/new", status=status)


async def test_redirect_appends_rest_of_path_and_query_for_any_method() -> None:
    handlers = [
        wsnest.handler_redirect("/old", "https://example.com/new", status=308, prefix=True),
        wsnest.handler_redirect("/docs/", "https://docs.example.com/", prefix=True),
    ]
    async with running_server(handlers) as (_, url):
        cases = [
            ("GET", "/old", "https://example.com/new"),
            ("GET", "/old/", "https://example.com/new/"),
            ("GET", "/old/a/b", "https://example.com/new/a/b"),
            ("GET", "/old?x=1&y=2", "https://example.com/new?x=1&y=2"),
            ("GET", "/old/a%20b?q=%2F", "https://example.com/new/a%20b?q=%2F"),
            ("POST", "/old/p", "https://example.com/new/p"),
            ("PUT", "/old", "https://example.com/new"),
            ("DELETE", "/old/d?z", "https://example.com/new/d?z"),
            ("GET", "/docs/guide/intro", "https://docs.example.com/guide/intro"),
        ]
        for method, target, location in cases:
            resp, _ = await fetch(url, request_bytes(method, target))
            assert resp.status in (301, 302, 308), (method, target, resp)
            assert resp.header("location") == location, (method, target, resp)
        # A request body does not stop a redirect.
        resp, _ = await fetch(url, request_bytes("POST", "/old/form", body=b"a=1"))
        assert (resp.status, resp.header("location")) == (308, "https://example.com/new/form")
        async with http_client() as client:
            r = await client.get(url + "/old/x?y=1")
            assert r.status_code == 308
            assert r.headers["location"] == "https://example.com/new/x?y=1"


async def test_redirect_keeps_the_rest_when_the_route_part_is_percent_encoded() -> None:
    """Routing uses the decoded path, so ``/%7Euser/page`` reaches the
    ``/~user`` route; the remainder ``/page`` must still be appended."""
    async with running_server([wsnest.handler_redirect("/~user", "https://example.com/u", prefix=True)]) as (_, url):
        for target in ("/~user/page?x=1", "/%7Euser/page?x=1", "/%7euser/page?x=1"):
            resp, _ = await fetch(url, request_bytes("GET", target))
            assert resp.status == 302, (target, resp)
            assert resp.header("location") == "https://example.com/u/page?x=1", (target, resp)


# -- argument checking -----------------------------------------------------------------


def cb(req: wsnest.Request) -> dict[str, Any]:
    return {}


@pytest.mark.parametrize(
    ("make", "exc", "name"),
    [
        (lambda: wsnest.handler(1, cb), TypeError, "path"),
        (lambda: wsnest.handler(b"/a", cb), TypeError, "path"),
        (lambda: wsnest.handler("a", cb), ValueError, "path"),
        (lambda: wsnest.handler("", cb), ValueError, "path"),
        (lambda: wsnest.handler("/a?x=1", cb), ValueError, "path"),
        (lambda: wsnest.handler("/a", "not callable"), TypeError, "callback"),
        (lambda: wsnest.handler("/a", None), TypeError, "callback"),
        (lambda: wsnest.handler("/a", cb, method=""), ValueError, "method"),
        (lambda: wsnest.handler("/a", cb, method="GE T"), ValueError, "method"),
        (lambda: wsnest.handler("/a", cb, method=None), ValueError, "method"),
        (lambda: wsnest.handler_inline(5, b"x"), TypeError, "path"),
        (lambda: wsnest.handler_inline("x", b"x"), ValueError, "path"),
        (lambda: wsnest.handler_inline("/x", 5), TypeError, "data"),
        (lambda: wsnest.handler_inline("/x", b"x", content_type=5), TypeError, "content_type"),
        (lambda: wsnest.handler_redirect(5, "/y"), TypeError, "path"),
        (lambda: wsnest.handler_redirect("x", "/y"), ValueError, "path"),
        (lambda: wsnest.handler_redirect("/x", ""), ValueError, "location"),
        (lambda: wsnest.handler_redirect("/x", None), ValueError, "location"),
        (lambda: wsnest.handler_redirect("/x", "/y\r\nX-Injected: 1"), ValueError, "location"),
    ],
)
def test_argument_errors_name_the_argument(make: Any, exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        make()
