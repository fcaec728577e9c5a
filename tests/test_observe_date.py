"""The ``Date`` header (RFC 9110 6.6.1) on every kind of response."""

from __future__ import annotations

import datetime
import email.utils
from typing import Any

import httpx
import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, running_server, without_date
from wsnest.http import _response


def http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(trust_env=False, timeout=TIMEOUT)


def check_date(value: str) -> datetime.datetime:
    parsed = email.utils.parsedate_to_datetime(value)
    assert value.endswith(" GMT") and parsed.utcoffset() == datetime.timedelta(0)
    now = datetime.datetime.now(datetime.timezone.utc)
    assert abs((now - parsed).total_seconds()) < 3600  # a real clock reading, not a constant
    return parsed


def stream(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
    conn.send("data: 1\n\n")
    conn.close()


def failing(req: wsnest.Request) -> dict[str, Any]:
    raise RuntimeError("boom")


HANDLERS = [
    wsnest.handler("/ok", lambda req: {"body": "ok"}),
    wsnest.handler("/dated", lambda req: {"headers": [("date", "Tue, 15 Nov 1994 08:12:31 GMT")], "body": "x"}),
    wsnest.handler("/fail", failing),
    wsnest.handler_inline("/inline", b"inline", "text/plain"),
    wsnest.handler_stream("/stream", stream),
    wsnest.handler_redirect("/old", "/ok"),
    wsnest.handler_ws("/ws", lambda ws, data: ws.send(data)),
]


@pytest.mark.parametrize("target", ["/ok", "/inline", "/stream", "/missing", "/fail", "/old"])
async def test_responses_carry_one_date(target: str) -> None:
    async with running_server(HANDLERS) as (_, url), http_client() as client:
        for _ in range(2):  # a cached response too (handler_inline)
            r = await client.get(url + target, follow_redirects=False)
            dates = r.headers.get_list("date")
            assert len(dates) == 1, r.headers
            check_date(dates[0])


async def test_a_user_date_wins() -> None:
    async with running_server(HANDLERS) as (_, url), http_client() as client:
        r = await client.get(url + "/dated")
    assert r.headers.get_list("date") == ["Tue, 15 Nov 1994 08:12:31 GMT"]


async def test_switching_protocols_and_parse_errors_are_dated() -> None:
    async with running_server(HANDLERS) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await RawClient.connect(url)
            try:
                resp = await client.handshake("/ws")
            finally:
                await client.aclose()
            assert resp.status == 101
            check_date(resp.header("date"))
            client = await RawClient.connect(url)
            try:
                await client.send(b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
                raw = await client.read_until_eof()
            finally:
                await client.aclose()
    assert raw.startswith(b"HTTP/1.1 400 ")
    without_date(raw)  # exactly one valid Date


def test_date_line_is_cached_per_second(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [784887151.25]
    monkeypatch.setattr(_response, "_clock", lambda: now[0])
    monkeypatch.setattr(_response, "_date_second", -1)
    first = _response.date_line()
    assert first == "Date: Tue, 15 Nov 1994 08:12:31 GMT\r\n"
    now[0] = 784887151.99
    assert _response.date_line() is first  # same second: not formatted again
    now[0] = 784887152.0
    second = _response.date_line()
    assert second == "Date: Tue, 15 Nov 1994 08:12:32 GMT\r\n"
    built = _response.build_response(200, [("Content-Type", "text/plain")], b"hi")
    assert (
        built == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n" + second.encode() + b"Content-Length: 2\r\n\r\nhi"
    )
    user = _response.build_response(204, [("DATE", "x")])
    assert user == b"HTTP/1.1 204 No Content\r\nDATE: x\r\n\r\n"


async def test_a_cached_response_follows_the_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [784887151.5]
    monkeypatch.setattr(_response, "_clock", lambda: now[0])
    monkeypatch.setattr(_response, "_date_second", -1)
    async with running_server(HANDLERS) as (_, url), http_client() as client:
        first = await client.get(url + "/inline")
        now[0] += 1
        second = await client.get(url + "/inline")
    assert first.headers["date"] == "Tue, 15 Nov 1994 08:12:31 GMT"
    assert second.headers["date"] == "Tue, 15 Nov 1994 08:12:32 GMT"
    assert second.text == "inline"
