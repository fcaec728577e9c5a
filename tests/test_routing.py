"""Routing (decisions 15, nanonext-server.md section 3): longest path first,
insertion order for equal lengths, trailing-slash tolerance, prefix routes,
methods, HEAD fallback, 404/405, duplicate routes, percent-decoding.

The :class:`~wsnest.server._routing.Router` is tested directly, then end to
end over real sockets."""

from __future__ import annotations

from typing import Any

import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Response, running_server
from wsnest.server._routing import Router


def tag(name: str, path: str, method: str = "GET", prefix: bool = False) -> wsnest.Handler:
    """A handler whose response body names it."""
    return wsnest.handler(path, lambda req: {"body": name}, method=method, prefix=prefix)


def request_bytes(method: str, target: str, *, host: str | None = "test", extra: str = "") -> bytes:
    head = f"{method} {target} HTTP/1.1\r\n"
    if host is not None:
        head += f"Host: {host}\r\n"
    return (head + extra + "\r\n").encode("latin-1")


async def fetch(url: str, method: str, target: str) -> Response:
    """One request on a fresh raw connection (so nothing normalises ``target``)."""
    with trio.fail_after(TIMEOUT):
        client = await RawClient.connect(url)
        try:
            await client.send(request_bytes(method, target))
            return await client.read_head(body=method != "HEAD")
        finally:
            await client.aclose()


def name_of(router: Router, path: str, method: str = "GET") -> Any:
    handler, allowed = router.match(path, method)
    if handler is None:
        return ("405", allowed) if allowed else "404"
    return handler.callback(None)["body"]


# -- the Router on its own -------------------------------------------------------


def test_longest_path_first_whatever_the_insertion_order() -> None:
    short = tag("short", "/a", prefix=True)
    long = tag("long", "/a/b", prefix=True)
    for handlers in ([short, long], [long, short]):
        router = Router(handlers)
        assert name_of(router, "/a/b") == "long"
        assert name_of(router, "/a/b/c") == "long"
        assert name_of(router, "/a/c") == "short"
        assert name_of(router, "/a") == "short"


def test_equal_lengths_keep_insertion_order() -> None:
    # Same path, different methods: no conflict, and the first one wins.
    get_first = Router([tag("get", "/x"), tag("any", "/x", method="*")])
    assert name_of(get_first, "/x", "GET") == "get"
    assert name_of(get_first, "/x", "POST") == "any"
    any_first = Router([tag("any", "/x", method="*"), tag("get", "/x")])
    assert name_of(any_first, "/x", "GET") == "any"
    assert name_of(any_first, "/x", "POST") == "any"
    # Two equal-length prefix routes that both match: insertion order.
    a = Router([tag("one", "/p/", method="*", prefix=True), tag("two", "/p", prefix=True)])
    assert name_of(a, "/p/q", "GET") == "one"
    b = Router([tag("two", "/p", prefix=True), tag("one", "/p/", method="*", prefix=True)])
    assert name_of(b, "/p/q", "GET") == "two"


def test_exact_route_tolerates_one_trailing_slash() -> None:
    router = Router([tag("a", "/a")])
    assert name_of(router, "/a") == "a"
    assert name_of(router, "/a/") == "a"
    assert name_of(router, "/a//") == "404"
    assert name_of(router, "/a/b") == "404"
    assert name_of(router, "/ab") == "404"


def test_route_with_trailing_slash_does_not_match_without_it() -> None:
    router = Router([tag("a/", "/a/")])
    assert name_of(router, "/a/") == "a/"
    assert name_of(router, "/a") == "404"


def test_prefix_matches_sub_paths_but_never_a_longer_name() -> None:
    router = Router([tag("api", "/api", prefix=True)])
    for path in ("/api", "/api/", "/api/x", "/api/x/y/z"):
        assert name_of(router, path) == "api", path
    for path in ("/apix", "/apix/y", "/ap", "/", "/x/api"):
        assert name_of(router, path) == "404", path
    # Without prefix, sub-paths are not matched.
    assert name_of(Router([tag("api", "/api")]), "/api/x") == "404"


def test_root_route() -> None:
    exact = Router([tag("root", "/")])
    assert name_of(exact, "/") == "root"
    assert name_of(exact, "") == "root"
    assert name_of(exact, "/x") == "404"
    tree = Router([tag("root", "/", prefix=True)])
    assert name_of(tree, "/x/y") == "root"


def test_method_exact_case_sensitive_or_star() -> None:
    router = Router([tag("post", "/p", method="POST"), tag("any", "/s", method="*")])
    assert name_of(router, "/p", "POST") == "post"
    assert name_of(router, "/p", "post") == ("405", ["POST"])
    assert name_of(router, "/p", "GET") == ("405", ["POST"])
    for method in ("GET", "HEAD", "POST", "DELETE", "PATCH", "BREW"):
        assert name_of(router, "/s", method) == "any"


def test_head_falls_back_to_get_only_without_an_exact_match() -> None:
    router = Router([tag("get", "/h")])
    assert name_of(router, "/h", "HEAD") == "get"
    both = Router([tag("get", "/h"), tag("head", "/h", method="HEAD")])
    assert name_of(both, "/h", "HEAD") == "head"
    # A shorter "*" route matches HEAD exactly, so it beats the GET fallback.
    star = Router([tag("get", "/h/x"), tag("star", "/h", method="*", prefix=True)])
    assert name_of(star, "/h/x", "HEAD") == "star"


def test_405_lists_allowed_methods_404_when_no_path_matches() -> None:
    router = Router([tag("get", "/r"), tag("put", "/r", method="PUT")])
    assert name_of(router, "/r", "DELETE") == ("405", ["GET", "PUT", "HEAD"])
    assert name_of(router, "/nowhere", "GET") == "404"
    # A shorter prefix route with a matching method wins over a 405.
    fallback = Router([tag("post", "/api/x", method="POST"), tag("api", "/api", prefix=True)])
    assert name_of(fallback, "/api/x", "GET") == "api"
    assert name_of(fallback, "/api/x", "POST") == "post"
    assert name_of(fallback, "/api/x", "PUT") == ("405", ["POST", "GET", "HEAD"])


def test_duplicates_raise_naming_both_routes() -> None:
    with pytest.raises(ValueError, match=r"duplicate") as info:
        Router([tag("a", "/a"), wsnest.handler_inline("/a/", b"x")])
    assert "CallbackHandler" in str(info.value) and "InlineHandler" in str(info.value)
    assert "/a/" in str(info.value)
    with pytest.raises(ValueError, match="duplicate"):
        Router([tag("a", "/a", method="*"), tag("b", "/a", method="*")])
    # Different methods do not conflict.
    Router([tag("a", "/a"), tag("b", "/a", method="POST"), tag("c", "/a", method="*")])


def test_router_rejects_non_handlers() -> None:
    with pytest.raises(TypeError, match="handlers"):
        Router(["/a"])  # type: ignore[list-item]


def test_directory_at_root_plus_api_route(tmp_path: Any) -> None:
    router = Router([wsnest.handler_directory("/", tmp_path), tag("api", "/api")])
    assert name_of(router, "/api") == "api"
    handler, _ = router.match("/index.html", "GET")
    assert isinstance(handler, wsnest.handlers.DirectoryHandler)


# -- end to end ------------------------------------------------------------------


def test_duplicate_routes_raise_at_http_server() -> None:
    first = wsnest.handler("/dup", lambda req: {"body": "1"})
    second = wsnest.handler("/dup", lambda req: {"body": "2"})
    with pytest.raises(ValueError, match="duplicate") as info:
        wsnest.http_server("http://127.0.0.1:0", [first, second])
    assert str(info.value).count("/dup") == 2
    with pytest.raises(ValueError, match="duplicate"):
        wsnest.http_server("http://127.0.0.1:0", [first, wsnest.handler_inline("/dup/", "x")])


async def test_routing_end_to_end() -> None:
    handlers = [
        tag("api", "/api", prefix=True),
        tag("api-users", "/api/users"),
        tag("exact", "/exact"),
        tag("slash", "/slash/"),
        tag("post", "/form", method="POST"),
        tag("any", "/any", method="*"),
    ]
    async with running_server(handlers) as (_, url):
        cases = [
            ("GET", "/api/users", 200, "api-users"),
            ("GET", "/api/users/", 200, "api-users"),
            ("GET", "/api/users/1", 200, "api"),
            ("GET", "/api", 200, "api"),
            ("GET", "/api/x/y?z=1", 200, "api"),
            ("GET", "/apix", 404, None),
            ("GET", "/exact/", 200, "exact"),
            ("GET", "/exact?q=/x", 200, "exact"),
            ("GET", "/exact/more", 404, None),
            ("GET", "/slash/", 200, "slash"),
            ("GET", "/slash", 404, None),
            ("POST", "/form", 200, "post"),
            ("DELETE", "/any", 200, "any"),
            ("PATCH", "/any", 200, "any"),
            ("GET", "/nothing", 404, None),
        ]
        for method, target, status, body in cases:
            resp = await fetch(url, method, target)
            assert resp.status == status, (method, target, resp)
            if body is not None:
                assert resp.body == body.encode(), (method, target, resp)


async def test_405_carries_allow_then_server_still_serves() -> None:
    async with running_server([tag("get", "/g"), tag("post", "/p", method="POST")]) as (_, url):
        resp = await fetch(url, "DELETE", "/g")
        assert resp.status == 405
        allowed = {m.strip() for m in (resp.header("allow") or "").split(",")}
        assert allowed == {"GET", "HEAD"}
        resp = await fetch(url, "GET", "/p")
        assert resp.status == 405
        assert resp.header("allow") == "POST"
        resp = await fetch(url, "GET", "/g")
        assert (resp.status, resp.body) == (200, b"get")


async def test_head_falls_back_to_get_with_length_and_no_body() -> None:
    body = "x" * 1234
    seen: list[str] = []

    def cb(req: wsnest.Request) -> dict[str, Any]:
        seen.append(req.method)
        return {"body": body, "headers": {"X-Route": "get"}}

    async with running_server([wsnest.handler("/h", cb)]) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                # HEAD, then GET on the same connection: if the HEAD response
                # carried body bytes, the second head would not parse.
                await client.send(request_bytes("HEAD", "/h") + request_bytes("GET", "/h"))
                head = await client.read_head(body=False)
                assert head.status == 200
                assert head.header("content-length") == str(len(body))
                assert head.header("x-route") == "get"
                get = await client.read_head()
                assert get.status == 200
                assert get.body == body.encode()
                assert not client.buf
            finally:
                await client.aclose()
    assert seen == ["HEAD", "GET"]


async def test_directory_at_root_and_api_route_together(tmp_path: Any) -> None:
    (tmp_path / "index.html").write_text("<p>home</p>")
    (tmp_path / "style.css").write_text("p{}")
    handlers = [wsnest.handler_directory("/", tmp_path), tag("api", "/api", method="*")]
    async with running_server(handlers) as (_, url):
        assert (await fetch(url, "GET", "/api")).body == b"api"
        assert (await fetch(url, "POST", "/api")).body == b"api"
        assert (await fetch(url, "GET", "/")).body == b"<p>home</p>"
        assert (await fetch(url, "GET", "/style.css")).body == b"p{}"
        assert (await fetch(url, "GET", "/missing.txt")).status == 404


async def test_routing_uses_the_percent_decoded_path() -> None:
    handlers = [tag("space", "/a b"), tag("slash", "/x/y"), tag("utf8", "/caf\u00e9")]
    async with running_server(handlers) as (_, url):
        assert (await fetch(url, "GET", "/a%20b")).body == b"space"
        assert (await fetch(url, "GET", "/%61%20%62")).body == b"space"
        assert (await fetch(url, "GET", "/x%2Fy")).body == b"slash"
        assert (await fetch(url, "GET", "/caf%C3%A9")).body == b"utf8"
        assert (await fetch(url, "GET", "/a%2520b")).status == 404  # decoded once only


async def test_absolute_form_target_routes_on_its_path() -> None:
    async with running_server([tag("abs", "/abs")]) as (_, url):
        assert (await fetch(url, "GET", "http://example.com/abs?x=1")).body == b"abs"
        assert (await fetch(url, "GET", "http://example.com/other")).status == 404
