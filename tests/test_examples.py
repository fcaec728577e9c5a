"""The runnable examples in ``examples/``, each served on 127.0.0.1:0 and
driven by real clients over loopback (``wsnest.connect``, httpx,
websockets). Every step waits for what it checks: no sleeps."""

from __future__ import annotations

import importlib.util
import json
import ssl
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import trio

import wsnest
from serverutil import TIMEOUT, run_in_thread, running_server, sync_connect

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (the directory is no package)."""
    spec = importlib.util.spec_from_file_location(f"wsnest_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and typing look a module up by name
    spec.loader.exec_module(module)
    return module


def ws_url(url: str, path: str) -> str:
    return "ws" + url[len("http") :] + path


def http_client(**kw: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=TIMEOUT, **kw)


def test_every_example_says_how_to_run_it() -> None:
    files = sorted(EXAMPLES.glob("*.py"))
    assert {f.stem for f in files} >= {"chat_rooms", "sse_dashboard", "token_auth", "static_files", "tls_server"}
    for path in files:
        module = load_example(path.stem)
        assert module.__doc__ and f"python examples/{path.name}" in module.__doc__, path
        assert 'if __name__ == "__main__":' in path.read_text(encoding="utf-8"), path


# -- chat_rooms -------------------------------------------------------------------


async def test_chat_rooms_broadcasts_within_a_room_only() -> None:
    chat = load_example("chat_rooms")
    async with running_server(chat.make_handlers()) as (_, url):
        base = ws_url(url, "/chat")
        with trio.fail_after(TIMEOUT):
            async with wsnest.connect(f"{base}?room=a&name=ann") as ann:
                assert await ann.receive() == "* ann joined a"
                async with wsnest.connect(f"{base}?room=a&name=bob") as bob:
                    assert await bob.receive() == "* bob joined a"
                    assert await ann.receive() == "* bob joined a"
                    async with wsnest.connect(f"{base}?room=b&name=cid") as cid:
                        assert await cid.receive() == "* cid joined b"
                        ann.send("hello a")
                        assert await ann.receive() == "ann: hello a"
                        assert await bob.receive() == "ann: hello a"
                        # Room a's broadcast is done; had cid been in it, its
                        # copy would be queued before the answer to this.
                        cid.send("hello b")
                        assert await cid.receive() == "cid: hello b"
                assert await ann.receive() == "* bob left"
                # bob's room is kept while ann is in it; a fresh room "b" starts empty.
                async with wsnest.connect(f"{base}?room=b") as guest:
                    assert (await guest.receive()).startswith("* guest ")


async def test_chat_rooms_refuses_a_connection_without_a_room() -> None:
    chat = load_example("chat_rooms")
    async with running_server(chat.make_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT), pytest.raises(wsnest.InvalidStatus) as info:
            async with wsnest.connect(ws_url(url, "/chat?name=ann")):
                pass
        assert info.value.status == 400
        assert b"room" in info.value.body


async def test_chat_rooms_with_the_websockets_client() -> None:
    chat = load_example("chat_rooms")
    async with running_server(chat.make_handlers()) as (_, url):
        uri = ws_url(url, "/chat?room=lobby&name=eve")

        def talk() -> list[str]:
            ws = sync_connect(uri, open_timeout=TIMEOUT, close_timeout=TIMEOUT)
            try:
                got = [ws.recv(timeout=TIMEOUT)]
                ws.send("hi")
                got.append(ws.recv(timeout=TIMEOUT))
                return got
            finally:
                ws.close()

        assert await run_in_thread(talk) == ["* eve joined lobby", "eve: hi"]


# -- sse_dashboard ----------------------------------------------------------------


async def next_event(lines: object) -> tuple[str, str]:
    """``(event, data)`` of the next server-sent event from ``aiter_lines()``."""
    event, data = "message", []
    async for line in lines:  # type: ignore[attr-defined]
        if line == "":
            if data:
                return event, "\n".join(data)
            continue
        field, _, value = line.partition(": ")
        if field == "event":
            event = value
        elif field == "data":
            data.append(value)
    raise AssertionError("the stream ended")


async def test_sse_dashboard_snapshot_then_live_metrics() -> None:
    dash = load_example("sse_dashboard")
    async with running_server(dash.make_handlers()) as (_, url), http_client(base_url=url) as client:
        with trio.fail_after(TIMEOUT):
            page = await client.get("/")
            assert page.status_code == 200 and "EventSource" in page.text
            assert (await client.post("/report", content=b'{"name": "queue", "value": 3}')).status_code == 204
            async with http_client(base_url=url) as viewer, viewer.stream("GET", "/events") as stream:
                assert stream.headers["content-type"] == "text/event-stream"
                lines = stream.aiter_lines()
                assert await next_event(lines) == ("snapshot", json.dumps({"queue": 3.0}))
                posted = await client.post("/report", json={"name": "load", "value": 0.5})
                assert posted.status_code == 204
                event, data = await next_event(lines)
                assert (event, json.loads(data)) == ("metric", {"name": "load", "value": 0.5})
            bad = await client.post("/report", content=b"not json")
            assert bad.status_code == 400
            # The viewer has gone: whether or not its on_close has run yet,
            # a report still works (a send to a closed stream never raises).
            assert (await client.post("/report", json={"name": "x", "value": 1})).status_code == 204


# -- token_auth ---------------------------------------------------------------------


async def test_token_auth_header_and_query() -> None:
    auth = load_example("token_auth")
    async with running_server(auth.make_handlers()) as (_, url):
        uri = ws_url(url, "/ws")
        with trio.fail_after(TIMEOUT):
            async with wsnest.connect(uri, headers={"Authorization": "Bearer secret-ann"}) as ws:
                ws.send("hi")
                assert await ws.receive() == "ann: hi"
            async with wsnest.connect(uri + "?token=secret-bob") as ws:
                ws.send("yo")
                assert await ws.receive() == "bob: yo"


@pytest.mark.parametrize(
    ("query", "headers", "status"),
    [
        ("", {}, 401),
        ("", {"Authorization": "Basic YW5uOng="}, 401),
        ("?token=", {}, 401),
        ("?token=guess", {}, 403),
        ("?token=%C3%A9t%C3%A9", {}, 403),  # not ASCII: refused, not a 500
        ("", {"Authorization": "Bearer secret-eve"}, 403),
    ],
)
async def test_token_auth_refusals(query: str, headers: dict[str, str], status: int) -> None:
    auth = load_example("token_auth")
    async with running_server(auth.make_handlers()) as (_, url):
        with trio.fail_after(TIMEOUT), pytest.raises(wsnest.InvalidStatus) as info:
            async with wsnest.connect(ws_url(url, "/ws" + query), headers=headers):
                pass
        assert info.value.status == status


async def test_token_auth_with_the_websockets_client() -> None:
    import websockets.exceptions

    auth = load_example("token_auth")
    async with running_server(auth.make_handlers({"t0k": "zoe"})) as (_, url):
        uri = ws_url(url, "/ws")

        def talk() -> str:
            ws = sync_connect(uri, additional_headers={"Authorization": "Bearer t0k"}, open_timeout=TIMEOUT)
            try:
                ws.send("hello")
                return str(ws.recv(timeout=TIMEOUT))
            finally:
                ws.close()

        def refused() -> int:
            try:
                sync_connect(uri + "?token=secret-ann", open_timeout=TIMEOUT).close()  # not in this server's map
            except websockets.exceptions.InvalidStatus as exc:
                return int(exc.response.status_code)
            raise AssertionError("connected without a valid token")

        assert await run_in_thread(talk) == "zoe: hello"
        assert await run_in_thread(refused) == 403


# -- static_files -------------------------------------------------------------------


async def test_static_files(tmp_path: Path) -> None:
    static = load_example("static_files")
    root = tmp_path / "public"
    (root / "docs").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "docs" / "a.txt").write_text("alpha\n")
    (tmp_path / "secret.txt").write_text("outside")
    async with running_server(static.make_handlers(root)) as (_, url), http_client(base_url=url) as client:
        with trio.fail_after(TIMEOUT):
            home = await client.get("/")
            assert (home.status_code, home.text) == (200, "<h1>home</h1>")
            assert home.headers["content-type"].startswith("text/html")
            doc = await client.get("/docs/a.txt")
            assert (doc.status_code, doc.text) == (200, "alpha\n")
            again = await client.get("/docs/a.txt", headers={"If-None-Match": doc.headers["etag"]})
            assert again.status_code == 304
            part = await client.get("/docs/a.txt", headers={"Range": "bytes=1-3"})
            assert (part.status_code, part.text) == (206, "lph")
            assert (await client.get("/docs")).status_code == 301
            assert (await client.get("/docs/")).status_code == 404  # no index, no listing
            assert (await client.get("/missing.txt")).status_code == 404
            assert (await client.get("/%2e%2e/secret.txt")).status_code == 404
            health = await client.get("/healthz")
            assert (health.status_code, health.text) == (200, "ok\n")


# -- tls_server ---------------------------------------------------------------------


async def test_tls_server_https_and_wss(tmp_path: Path) -> None:
    pytest.importorskip("cryptography")
    tls = load_example("tls_server")
    cert, key = tls.write_self_signed(tmp_path)
    assert key.stat().st_mode & 0o077 == 0  # the key is private
    ctx = ssl.create_default_context(cafile=str(cert))
    server = tls.make_server(cert, key, "https://127.0.0.1:0")
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        try:
            with trio.fail_after(TIMEOUT):
                async with http_client(verify=ctx) as client:
                    page = await client.get(url + "/")
                    assert (page.status_code, page.text) == (200, "hello over TLS\n")
                wss = "wss" + url[len("https") :] + "/ws"
                async with wsnest.connect(wss, tls=ctx) as ws:
                    ws.send("secret")
                    assert await ws.receive() == "secret"
                    ws.send(b"\x00\x01")
                    assert await ws.receive() == b"\x00\x01"

                def over_websockets() -> str:
                    conn = sync_connect(wss, ssl=ctx, open_timeout=TIMEOUT)
                    try:
                        conn.send("via websockets")
                        return str(conn.recv(timeout=TIMEOUT))
                    finally:
                        conn.close()

                assert await run_in_thread(over_websockets) == "via websockets"
                # Without trusting the certificate, the handshake fails.
                with pytest.raises(wsnest.HandshakeError):
                    async with wsnest.connect(wss, tls=ssl.create_default_context()):
                        pass
        finally:
            with trio.CancelScope(shield=True), trio.fail_after(TIMEOUT):
                await server.aclose()
