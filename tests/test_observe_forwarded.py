"""Trusted proxy headers: the parser (sans-I/O) and a real server."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
from typing import Any

import httpx
import pytest
import trio

import wsnest
from serverutil import TIMEOUT, Tracker, run_in_thread, running_server, sync_connect, ws_url
from wsnest.http import Headers, Request
from wsnest.http._forwarded import ProxyTrust, parse_forwarded, parse_node

PEER = ("127.0.0.1", 50000)


def resolve(trust: ProxyTrust, pairs: list[tuple[str, str]], peer: Any = PEER, scheme: str = "http") -> Any:
    return trust.resolve(Headers(pairs), peer, scheme)


# -- the parser ------------------------------------------------------------------


def test_parse_forwarded_elements() -> None:
    assert parse_forwarded(["for=192.0.2.60;proto=http;by=203.0.113.43", 'For="[2001:db8:cafe::17]:4711"']) == [
        {"for": "192.0.2.60", "proto": "http", "by": "203.0.113.43"},
        {"for": "[2001:db8:cafe::17]:4711"},
    ]
    assert parse_forwarded(["for=192.0.2.43, for=198.51.100.17;proto=https ,, for=unknown"]) == [
        {"for": "192.0.2.43"},
        {"for": "198.51.100.17", "proto": "https"},
        {"for": "unknown"},
    ]
    assert parse_forwarded(['for="_hidden";host="a\\"b"']) == [{"for": "_hidden", "host": 'a"b'}]


@pytest.mark.parametrize(
    "value",
    ["for=", "for=a b", 'for="unterminated', "for=1.2.3.4;for=5.6.7.8", "for=1.2.3.4;;proto=http", "=x", "for"],
)
def test_parse_forwarded_malformed(value: str) -> None:
    assert parse_forwarded([value]) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.60", ("192.0.2.60", 0, True)),
        ("192.0.2.60:8080", ("192.0.2.60", 8080, True)),
        ("[2001:db8::1]", ("2001:db8::1", 0, True)),
        ("[2001:db8::1]:4711", ("2001:db8::1", 4711, True)),
        ("[::ffff:10.1.2.3]:80", ("10.1.2.3", 80, True)),
        ("unknown", ("unknown", 0, False)),
        ("_hidden:_port", ("_hidden", 0, False)),
        ("192.0.2.60:_p1", ("192.0.2.60", 0, True)),
        ("2001:db8::1", None),  # IPv6 needs brackets in Forwarded
        ("[192.0.2.60]", None),
        ("192.0.2.60:", None),
        ("192.0.2.60:70000", None),
        ("[2001:db8::1]x", None),
        ("[2001:db8::1", None),
        ("example.com", None),
        ("999.1.1.1", None),
    ],
)
def test_parse_node(text: str, expected: Any) -> None:
    assert parse_node(text) == expected


def test_parse_node_bare_ipv6_for_x_forwarded_for() -> None:
    assert parse_node("2001:db8::1", brackets_required=False) == ("2001:db8::1", 0, True)


def test_trust_list_forms_and_errors() -> None:
    trust = ProxyTrust("127.0.0.1, 10.0.0.0/8 ,")
    assert trust.trusts("127.0.0.1") and trust.trusts("10.9.8.7") and not trust.trusts("11.0.0.1")
    assert trust.trusts("::ffff:10.0.0.5")  # a dual-stack socket's IPv4 peer
    assert not trust.trusts("not an address")
    assert trust.trusts(None)  # a Unix socket peer
    assert ProxyTrust(["::1", "fd00::/8"]).trusts("fd12::1")
    assert ProxyTrust("*").trusts("203.0.113.9")
    assert not ProxyTrust("").trusts("127.0.0.1")
    for bad in ("127.0.0.1, nope", ["10.0.0.0/33"], [10]):
        with pytest.raises(ValueError, match="forwarded_allow_ips"):
            ProxyTrust(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="forwarded_allow_ips"):
        wsnest.http_server("http://127.0.0.1:0", [], forwarded_allow_ips="1.2.3")


# -- resolution ------------------------------------------------------------------


def test_untrusted_peer_headers_are_ignored() -> None:
    trust = ProxyTrust("10.0.0.1")
    headers = [("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"), ("Forwarded", "for=1.2.3.4")]
    assert resolve(trust, headers) == (PEER, "http")
    assert resolve(trust, headers, peer=("10.0.0.1", 1)) == (("1.2.3.4", 0), "http")


def test_forwarded_wins_over_x_forwarded_for() -> None:
    trust = ProxyTrust("127.0.0.1")
    headers = [
        ("X-Forwarded-For", "198.51.100.1"),
        ("X-Forwarded-Proto", "http"),
        ("Forwarded", 'for="[2001:db8::7]:4711";proto=https'),
    ]
    assert resolve(trust, headers) == (("2001:db8::7", 4711), "https")


def test_malformed_forwarded_falls_back_to_x_forwarded_for() -> None:
    trust = ProxyTrust("127.0.0.1")
    headers = [("Forwarded", "for=not-an-ip"), ("X-Forwarded-For", "198.51.100.1"), ("X-Forwarded-Proto", "https")]
    assert resolve(trust, headers) == (("198.51.100.1", 0), "https")
    assert resolve(trust, [("Forwarded", "for=1.2.3.4;proto=gopher")]) == (PEER, "http")


def test_hops_are_walked_from_the_right() -> None:
    trust = ProxyTrust("127.0.0.1, 10.0.0.0/8")
    # The client forged the left-most entry; 10.x are our proxies.
    xff = [("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.0.0.2"), ("X-Forwarded-Proto", "https, https, http")]
    assert resolve(trust, xff) == (("203.0.113.7", 0), "https")
    fwd = [("Forwarded", "for=6.6.6.6;proto=http, for=203.0.113.7;proto=https"), ("Forwarded", "for=10.0.0.2")]
    assert resolve(trust, fwd) == (("203.0.113.7", 0), "https")
    # Every hop trusted: the left-most one is the client.
    assert resolve(trust, [("X-Forwarded-For", "10.1.1.1, 10.0.0.2")]) == (("10.1.1.1", 0), "http")
    # An obfuscated hop ends the walk: it cannot be a trusted proxy.
    assert resolve(trust, [("Forwarded", "for=_x, for=10.0.0.2")]) == (("_x", 0), "http")


def test_x_forwarded_details() -> None:
    trust = ProxyTrust("127.0.0.1")
    assert resolve(trust, [("X-Forwarded-For", "2001:db8::1")]) == (("2001:db8::1", 0), "http")
    assert resolve(trust, [("X-Forwarded-For", "[2001:db8::1]:99")]) == (("2001:db8::1", 99), "http")
    assert resolve(trust, [("X-Forwarded-For", "1.2.3.4, bogus")]) == (PEER, "http")  # malformed: ignored
    assert resolve(trust, [("X-Forwarded-Proto", "HTTPS")]) == (PEER, "https")
    assert resolve(trust, [("X-Forwarded-Proto", "https, ftp")]) == (PEER, "http")
    assert resolve(trust, [("X-Forwarded-For", "1.2.3.4")], scheme="https") == (("1.2.3.4", 0), "https")
    assert resolve(trust, [("Forwarded", "proto=https")]) == (PEER, "https")
    assert resolve(trust, [("X-Forwarded-For", "1.2.3.4")], peer=None) == (("1.2.3.4", 0), "http")


def test_snapshot_keeps_scheme_and_client() -> None:
    req = Request("GET", "/ws?a=1", Headers([("Host", "x")]), b"", ("2001:db8::1", 0), "1.1", "https")
    data = req.snapshot()
    assert data is not None
    back = Request.from_snapshot(data)
    assert (back.client, back.scheme, back.uri) == (("2001:db8::1", 0), "https", "/ws?a=1")
    plain = Request.from_snapshot(Request("GET", "/", Headers([])).snapshot() or b"")
    assert (plain.client, plain.scheme) == (None, "http")


# -- a real server -----------------------------------------------------------------

HEADERS = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


def who(req: wsnest.Request) -> dict[str, Any]:
    host, port = req.client if req.client is not None else ("-", 0)
    return {"body": f"{host} {port} {req.scheme}"}


async def get_who(url: str, headers: dict[str, str]) -> list[str]:
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as client:
        return (await client.get(url + "/who", headers=headers)).text.split()


@pytest.mark.parametrize(
    ("options", "trusted"),
    [
        ({"proxy_headers": True}, True),
        ({"proxy_headers": True, "forwarded_allow_ips": "10.0.0.1"}, False),
        ({"proxy_headers": True, "forwarded_allow_ips": ["127.0.0.0/8"]}, True),
        ({}, False),
    ],
)
async def test_server_trusts_only_allowed_peers(options: dict[str, Any], trusted: bool) -> None:
    server = wsnest.http_server("http://127.0.0.1:0", [wsnest.handler("/who", who)], **options)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)
        got = await get_who(url, HEADERS)
        await server.aclose()
    if trusted:
        assert got == ["203.0.113.7", "0", "https"]
    else:
        assert got[0] == "127.0.0.1" and int(got[1]) > 0 and got[2] == "http"


async def test_websocket_request_and_access_log_see_the_client(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wsnest.access")
    tracker = Tracker()
    server = wsnest.http_server(
        "http://127.0.0.1:0",
        [wsnest.handler_ws("/ws", lambda ws, d: ws.send(d), tracker.on_open, tracker.on_close)],
        proxy_headers=True,
        access_log=True,
    )
    async with trio.open_nursery() as nursery:
        url = await nursery.start(server.serve)

        def scenario() -> None:
            c = sync_connect(ws_url(url), additional_headers={"Forwarded": 'for="[2001:db8::9]";proto=https'})
            try:
                c.send(b"x")
                assert c.recv(timeout=5) == b"x"
            finally:
                c.close()

        await run_in_thread(scenario)
        with trio.fail_after(TIMEOUT):
            await tracker.wait_closed(1)
        ws = tracker.opened[0]
        await server.aclose()
    assert ws.request is not None
    assert (ws.request.client, ws.request.scheme) == (("2001:db8::9", 0), "https")
    [line] = [r.getMessage() for r in caplog.records if r.name == "wsnest.access"]
    assert line.startswith('[2001:db8::9]:0 - "WS /ws" 1000 in=1 out=1 ')


async def test_a_unix_socket_peer_is_trusted() -> None:
    server = wsnest.http_server(
        "http://127.0.0.1:0", [wsnest.handler("/who", who)], proxy_headers=True, forwarded_allow_ips="10.0.0.1"
    )
    ours, theirs = socket.socketpair()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve, listen=False))
        nursery.start_soon(server.serve_connection, ours)
        peer = trio.SocketStream(trio.socket.from_stdlib_socket(theirs))
        with trio.fail_after(TIMEOUT):
            await peer.send_all(
                b"GET /who HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 198.51.100.3\r\nConnection: close\r\n\r\n"
            )
            data = b""
            while chunk := await peer.receive_some():
                data += chunk
        await peer.aclose()
        await server.aclose()
    assert data.endswith(b"\r\n\r\n198.51.100.3 0 http")


async def test_https_is_the_default_scheme_over_tls() -> None:
    pair = wsnest.write_cert()
    tls = wsnest.tls_config(pair.cert, pair.key)
    client_ctx = ssl.create_default_context(cadata=pair.cert)
    async with (
        running_server([wsnest.handler("/who", who)], "https://127.0.0.1:0", tls=tls) as (_, url),
        httpx.AsyncClient(trust_env=False, timeout=TIMEOUT, verify=client_ctx) as client,
    ):
        plain = (await client.get(url + "/who", headers=HEADERS)).text.split()
    assert plain[0] == "127.0.0.1" and plain[2] == "https"
