"""``wsnest.connect`` against servers of other libraries: aiohttp and picows.

Both are asyncio, so each runs in a child process (tests/interop_servers.py)
that listens on two ephemeral ports of 127.0.0.1, plain and TLS, and prints
them once it listens. Matrix: {aiohttp, picows} x {ws://, wss://} x
{permessage-deflate off, offered}. aiohttp accepts the offer (on its
``/deflate`` path); picows has no permessage-deflate, so there the client must
open without it. The suite runs once per core.
"""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

import wsnest
from serverutil import TIMEOUT

SERVERS = Path(__file__).with_name("interop_servers.py")
MiB = 1 << 20


@dataclass
class Peer:
    """A running child server: its library, ports and the client's trust."""

    name: str
    plain_port: int
    tls_port: int
    client_tls: ssl.SSLContext

    def url(self, scheme: str, deflate: bool) -> str:
        port = self.tls_port if scheme == "wss" else self.plain_port
        # aiohttp compresses only on /deflate; picows ignores the path.
        return f"{scheme}://127.0.0.1:{port}/{'deflate' if deflate else ''}"

    @property
    def negotiates_deflate(self) -> bool:
        return self.name == "aiohttp"


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The child's first stdout line, read in a thread so that a child that
    never prints cannot hang the test (it is killed instead)."""
    box: list[str] = []
    out = proc.stdout
    assert out is not None
    reader = threading.Thread(target=lambda: box.append(out.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not box or not box[0].strip():
        proc.kill()
        _, err = proc.communicate(timeout=TIMEOUT)
        raise AssertionError(f"{SERVERS.name}: no ports within {timeout} s; stderr: {err}")
    return box[0]


@pytest.fixture(scope="module")
def cert_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    pair = wsnest.write_cert()
    folder = tmp_path_factory.mktemp("interop-cert")
    (folder / "cert.pem").write_text(pair.cert)
    (folder / "key.pem").write_text(pair.key)
    return folder / "cert.pem", folder / "key.pem", pair.cert


@pytest.fixture(scope="module", params=["aiohttp", "picows"])
def peer(request: pytest.FixtureRequest, cert_files: tuple[Path, Path, str]) -> Iterator[Peer]:
    cert, key, pem = cert_files
    proc = subprocess.Popen(
        [sys.executable, "-u", str(SERVERS), request.param, str(cert), str(key)],
        stdin=subprocess.PIPE,  # the child exits when this closes
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        plain, secure = (int(p) for p in _first_line(proc, TIMEOUT).split())
        yield Peer(request.param, plain, secure, ssl.create_default_context(cadata=pem))
    finally:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)


SCHEMES = pytest.mark.parametrize("scheme", ["ws", "wss"])
DEFLATE = pytest.mark.parametrize("deflate", [False, True], ids=["plain", "deflate"])


def connect(peer: Peer, scheme: str, deflate: bool) -> AbstractAsyncContextManager[wsnest.WebSocket]:
    return wsnest.connect(
        peer.url(scheme, deflate),
        permessage_deflate=deflate,
        tls=peer.client_tls if scheme == "wss" else None,
        max_message_size=4 * MiB,
    )


@SCHEMES
@DEFLATE
async def test_echo(peer: Peer, scheme: str, deflate: bool) -> None:
    big_text = "wsnest é " * (MiB // 10)  # ~1 MiB of UTF-8, compressible
    big_binary = os.urandom(MiB)  # incompressible
    with trio.fail_after(TIMEOUT):
        async with connect(peer, scheme, deflate) as ws:
            # picows declines the offer: the client opens without compression.
            assert ws.permessage_deflate is (deflate and peer.negotiates_deflate)
            samples: list[str | bytes] = ["héllo \N{GRINNING FACE}", b"\x00\xff\x01", "", b"", big_text, big_binary]
            for message in samples:
                assert await ws.send_wait(message) == 0
                got = await ws.receive()
                assert type(got) is type(message) and got == message

            # Pipelined: all sent before the first answer is read.
            messages: list[str | bytes] = [f"m{i}" if i % 2 else i.to_bytes(4, "big") for i in range(600)]
            for message in messages:
                assert ws.send(message) == 0
            assert [await ws.receive() for _ in messages] == messages
        assert ws.close_code == 1000


@SCHEMES
@DEFLATE
async def test_close_by_the_client(peer: Peer, scheme: str, deflate: bool) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(peer, scheme, deflate) as ws:
            ws.send("before")
            assert await ws.receive() == "before"
            assert ws.close(4002, "bye") == 0
            with pytest.raises(wsnest.ConnectionClosedError) as info:
                await ws.receive()  # once the server's reply is in: the code it echoed
            assert (info.value.code, info.value.reason) == (4002, "bye")
        assert ws.close_code == 4002

        # What the server saw, asked on a new connection.
        async with connect(peer, scheme, deflate) as ws:
            ws.send("last-close")
            assert await ws.receive() == "4002 bye"
        async with connect(peer, scheme, deflate) as ws:
            ws.send("last-close")
            assert await ws.receive() == "1000 "  # the previous block's exit closed with 1000


@SCHEMES
@DEFLATE
async def test_close_by_the_server(peer: Peer, scheme: str, deflate: bool) -> None:
    with trio.fail_after(TIMEOUT):
        async with connect(peer, scheme, deflate) as ws:
            ws.send("one")
            ws.send("close-4001")
            assert await ws.receive() == "one"
            with pytest.raises(wsnest.ConnectionClosedError) as info:
                await ws.receive()
            assert (info.value.code, info.value.reason) == (4001, "as asked")
            assert ws.send("late") == 7  # closed
        assert ws.close_code == 4001

        async with connect(peer, scheme, deflate) as ws:
            ws.send("close-1000")
            assert [m async for m in ws] == []  # a normal close ends the loop
            with pytest.raises(wsnest.ConnectionClosedOK) as ok:
                await ws.receive()
            assert (ok.value.code, ok.value.reason) == (1000, "done")
