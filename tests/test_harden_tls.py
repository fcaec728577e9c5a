"""TLS hardening (issue 11, items 16-20): bounded handshakes, tiny records read
per wake-up, one budget for the TLS handshake and the first head, no key
material in errors, close_notify, the TLS half-close, plain HTTP on the TLS
port, handshake failures logged with their reason.

Clients are real: trio's SSLStream, or an ``ssl.SSLObject`` over a trio TCP
stream when the test needs to shape the TLS records itself.
"""

from __future__ import annotations

import contextlib
import logging
import os
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import wsnest
from serverutil import TIMEOUT, RawClient, Tracker, host_port, without_date
from test_tls import tls_server, trusting
from wire import OP_CLOSE, client_frame, new_key, upgrade_request
from wsnest.server import _transport

HELLO = b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


@pytest.fixture(scope="module")
def pair() -> wsnest.CertPair:
    return wsnest.write_cert()


@pytest.fixture
def tls(pair: wsnest.CertPair) -> ssl.SSLContext:
    return wsnest.tls_config(pair.cert, pair.key)


async def tls_connect(url: str, cert: str) -> trio.SSLStream[trio.SocketStream]:
    host, port = host_port(url)
    stream = trio.SSLStream(await trio.open_tcp_stream(host, port), trusting(cert), server_hostname=host)
    await stream.do_handshake()
    return stream


async def read_response(stream: trio.abc.ReceiveStream) -> bytes:
    """One response with a Content-Length body (enough for these handlers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        assert chunk, f"EOF before a response head: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        chunk = await stream.receive_some(65536)
        assert chunk, "EOF inside a body"
        body += chunk
    return head + b"\r\n\r\n" + body


async def wait_until(cond: Callable[[], bool]) -> None:
    """Poll a server-side condition (bounded by the test's fail_after)."""
    while not cond():
        await trio.sleep(0.005)


class BioClient:
    """A TLS client on ``ssl.SSLObject`` over a trio TCP stream, so that the
    test decides how the plaintext is cut into records."""

    def __init__(self, tcp: trio.SocketStream, cert: str) -> None:
        self.tcp = tcp
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = trusting(cert).wrap_bio(self.incoming, self.outgoing, server_hostname="127.0.0.1")

    @classmethod
    async def connect(cls, url: str, cert: str) -> BioClient:
        client = cls(await trio.open_tcp_stream(*host_port(url)), cert)
        while True:
            try:
                client.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await client.tcp.send_all(client.outgoing.read())
                client.incoming.write(await client.tcp.receive_some(65536))
        await client.tcp.send_all(client.outgoing.read())
        return client

    def records(self, data: bytes, size: int) -> bytes:
        """``data`` encrypted in records of ``size`` plaintext bytes."""
        for i in range(0, len(data), size):
            self.obj.write(data[i : i + size])
        return self.outgoing.read()

    async def send(self, data: bytes, size: int = 16384) -> None:
        await self.tcp.send_all(self.records(data, size))

    async def receive(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            try:
                out += self.obj.read(n - len(out))
            except ssl.SSLWantReadError:
                data = await self.tcp.receive_some(65536)
                assert data, f"EOF after {len(out)} of {n} bytes"
                self.incoming.write(data)
        return out


# -- 16: concurrent handshakes are bounded --------------------------------------------


async def test_concurrent_handshakes_are_bounded(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    async with tls_server(tls, max_tls_handshakes=2, handshake_timeout=3 * TIMEOUT) as (server, url):
        with trio.fail_after(TIMEOUT):
            old = await tls_connect(url, pair.cert)  # an established connection
            await old.send_all(HELLO)
            assert (await read_response(old)).startswith(b"HTTP/1.1 200")
            # Clients that have sent nothing hold no slot (nor an SSL object).
            silent = [await RawClient.connect(url) for _ in range(4)]
            stalled = []
            for _ in range(2):  # a ClientHello held short: each holds a slot
                client = await RawClient.connect(url)
                await client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                stalled.append(client)
            slots = server._tls_slots
            await wait_until(lambda: slots.free == 0)

            done = trio.Event()
            got: list[bytes] = []

            async def third() -> None:
                stream = await tls_connect(url, pair.cert)
                done.set()
                await stream.send_all(HELLO)
                got.append(await read_response(stream))
                await stream.aclose()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(third)
                await wait_until(lambda: slots.waiting == 1)
                assert not done.is_set()  # waiting for a slot, not handshaking
                # The established connection is untouched by the full slots.
                await old.send_all(HELLO)
                assert (await read_response(old)).startswith(b"HTTP/1.1 200")
                await stalled[0].aclose()  # frees a slot: the third client goes on
            assert got[0].startswith(b"HTTP/1.1 200")
            assert slots.free == 1  # the other stalled handshake still holds one
            for client in [*silent, stalled[1]]:
                await client.aclose()
            await old.aclose()


async def test_stalled_handshakes_cannot_lock_out_new_clients(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    """Every slot held by a ClientHello cut short, for good: a new client
    waits only until the oldest has run a tenth of handshake_timeout, which
    is then dropped for it, not until handshake_timeout (30 s here, longer
    than the test's own limit)."""
    async with tls_server(tls, max_tls_handshakes=2, handshake_timeout=30.0) as (server, url):
        with trio.fail_after(TIMEOUT):
            stalled = []
            for _ in range(2):
                client = await RawClient.connect(url)
                await client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
                stalled.append(client)
            slots = server._tls_slots
            await wait_until(lambda: slots.free == 0)
            stream = await tls_connect(url, pair.cert)  # evicts the oldest stalled handshake
            await stream.send_all(HELLO)
            assert (await read_response(stream)).startswith(b"HTTP/1.1 200")
            assert await stalled[0].stream.receive_some(65536) == b""  # dropped by the server
            assert slots.free == 1  # the younger stalled one was not needed, so it stays
            await stream.aclose()
            for client in stalled:
                await client.aclose()


def test_max_tls_handshakes_validated() -> None:
    with pytest.raises(ValueError, match="max_tls_handshakes"):
        wsnest.http_server("http://127.0.0.1:0", max_tls_handshakes=0)
    with pytest.raises(TypeError, match="max_tls_handshakes"):
        wsnest.http_server("http://127.0.0.1:0", max_tls_handshakes=1.5)


# -- 17: tiny records ---------------------------------------------------------------


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record what every receive_into of a TLS-capable transport returns."""
    sizes: list[int] = []
    for name in ("TLSTransport", "StreamTransport"):
        cls = getattr(_transport, name, None)
        if cls is None:
            continue

        def wrap(original: Any) -> Any:
            async def receive_into(self: Any, buf: memoryview) -> int:
                n: int = await original(self, buf)
                sizes.append(n)
                return n

            return receive_into

        monkeypatch.setattr(cls, "receive_into", wrap(cls.receive_into))
    return sizes


async def test_one_byte_records_are_read_together(
    pair: wsnest.CertPair, tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = count_reads(monkeypatch)
    async with tls_server(tls) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = await BioClient.connect(url, pair.cert)
            # An HTTP request head in 1-byte records is answered.
            await client.send(HELLO, size=1)
            answer = b""
            while not answer.endswith(b"\r\n\r\n"):
                answer += await client.receive(1)
            answer += await client.receive(len(b"hello GET b''"))
            assert (
                without_date(answer)
                == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello GET b''"
            )
            await client.send(upgrade_request(key=new_key()))
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                head += await client.receive(1)
            assert head.startswith(b"HTTP/1.1 101")

            payload = os.urandom(4096)
            frame = client_frame(0x2, payload)
            sizes.clear()
            await client.send(frame, size=1)  # 4,104 records in one write
            echo = await client.receive(4 + len(payload))
            assert echo[4:] == payload
            data_reads = [n for n in sizes if n > 0]
            assert sum(data_reads) == len(frame)
            # One read per wake-up takes every record already there, not one.
            assert len(data_reads) <= 64, f"{len(data_reads)} reads for {len(frame)} records"


# -- 18: one budget for TLS handshake + first head -----------------------------------


async def test_tls_handshake_and_first_head_share_one_deadline(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    budget = 2.0
    async with tls_server(tls, handshake_timeout=budget) as (server, url):
        with trio.fail_after(TIMEOUT):
            tcp = await trio.open_tcp_stream(*host_port(url))
            connected = trio.current_time()
            await trio.sleep(budget / 4)  # the client spends a quarter of the budget before its ClientHello
            stream = trio.SSLStream(tcp, trusting(pair.cert), server_hostname="127.0.0.1")
            await stream.do_handshake()
            conns = server._http_conns
            await wait_until(lambda: len(conns) == 1 and next(iter(conns)).deadline < float("inf"))
            # Counted from accept (after connect), not from the end of the TLS handshake.
            assert next(iter(conns)).deadline <= connected + budget
            await stream.aclose()


async def test_slow_tls_then_trickled_head_is_dropped(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    budget = 1.0
    async with tls_server(tls, handshake_timeout=budget) as (_, url):
        with trio.fail_after(TIMEOUT):
            tcp = await trio.open_tcp_stream(*host_port(url))
            await trio.sleep(0.6 * budget)  # slow TLS: 60 % of the budget
            stream = trio.SSLStream(tcp, trusting(pair.cert), server_hostname="127.0.0.1")
            await stream.do_handshake()
            # The head trickles in over 80 % of the budget: it would complete
            # within a fresh budget, but not within what is left of the first.
            with contextlib.suppress(trio.BrokenResourceError):
                for i in range(len(HELLO)):
                    await stream.send_all(HELLO[i : i + 1])
                    await trio.sleep(0.8 * budget / len(HELLO))
            data = b""
            with contextlib.suppress(trio.BrokenResourceError):
                while chunk := await stream.receive_some(65536):
                    data += chunk
            assert data == b"", data  # dropped, never answered
            await trio.aclose_forcefully(stream)


# -- 19: no key material in errors ----------------------------------------------------


def _body(pem_text: str) -> str:
    """The base64 inside a PEM block, without its armour."""
    return "".join(line for line in pem_text.splitlines() if not line.startswith("-----"))


def _assert_not_echoed(message: str, secret: str) -> None:
    for i in range(0, max(1, len(secret) - 16), 8):
        assert secret[i : i + 16] not in message, f"error echoes secret text: {message!r}"


def _encrypted(pair: wsnest.CertPair, password: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(pair.key.encode(), password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(password),
    ).decode("ascii")


@pytest.mark.parametrize(
    "case", ["key-without-armour", "cert-without-armour", "wrong-password", "garbage-text", "garbage-bytes"]
)
def test_tls_config_errors_never_echo_material(pair: wsnest.CertPair, case: str) -> None:
    key_body, cert_body = _body(pair.key), _body(pair.cert)
    password = None
    if case == "key-without-armour":
        cert, key, secret, name = pair.cert, key_body, key_body, "key"
    elif case == "cert-without-armour":
        cert, key, secret, name = cert_body, pair.key, cert_body, "cert"
    elif case == "wrong-password":
        encrypted = _encrypted(pair, b"s3cret")
        cert, key, secret, name, password = pair.cert, encrypted, _body(encrypted), "cert/key", "wrong"
    elif case == "garbage-text":
        cert, key, secret, name = pair.cert, "Zm9v" * 100 + "\n" + "YmFy" * 100, "Zm9v" * 100, "key"
    else:
        junk = bytes(range(256)) * 4
        cert, key, secret, name = pair.cert, junk, junk.decode("latin-1"), "key"  # type: ignore[assignment]
    with pytest.raises(ValueError) as info:
        wsnest.tls_config(cert, key, password=password)
    message = str(info.value)
    assert message.startswith(f"{name}: "), message
    _assert_not_echoed(message, secret)
    _assert_not_echoed(message, key_body)


def test_client_ca_errors_never_echo_material(pair: wsnest.CertPair) -> None:
    body = _body(pair.cert)
    with pytest.raises(ValueError, match=r"^client_ca: ") as info:
        wsnest.tls_config(pair.cert, pair.key, client_ca=body)
    _assert_not_echoed(str(info.value), body)


def test_cli_never_prints_key_text(pair: wsnest.CertPair, tmp_path: Path) -> None:
    from test_cli import MYMOD, assert_one_line_error, run_cli

    (tmp_path / "mymod.py").write_text(MYMOD)
    (tmp_path / "cert.pem").write_text(pair.cert)
    key_body = _body(pair.key)
    try:
        result = run_cli(
            ["serve", "mymod:handlers", "--port", "0", "--tls-cert", "cert.pem", "--tls-key", key_body], tmp_path
        )
    except subprocess.TimeoutExpired:  # pragma: no cover - a served CLI would hang here
        pytest.fail("the CLI served with key text given as --tls-key")
    line = assert_one_line_error(result, "--tls-key")
    _assert_not_echoed(result.stderr + result.stdout, key_body)
    assert result.returncode == 2, line


# -- 20: close_notify, half-close, plain HTTP, logs, renegotiation ----------------------


async def test_close_notify_on_connection_close(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    async with tls_server(tls, keepalive_timeout=0.2) as (_, url):
        with trio.fail_after(TIMEOUT):
            stream = await tls_connect(url, pair.cert)
            await stream.send_all(b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert (await read_response(stream)).startswith(b"HTTP/1.1 200")
            # trio raises BrokenResourceError on an EOF without close_notify.
            assert await stream.receive_some(65536) == b""
            await stream.aclose()

            stream = await tls_connect(url, pair.cert)  # closed by the keep-alive timeout
            await stream.send_all(HELLO)
            assert (await read_response(stream)).startswith(b"HTTP/1.1 200")
            assert await stream.receive_some(65536) == b""
            await stream.aclose()


async def test_close_notify_after_websocket_close(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    async with tls_server(tls) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = RawClient(await tls_connect(url, pair.cert))
            await client.handshake()
            await client.send(client_frame(OP_CLOSE, b"\x03\xe8"))
            assert await client.read_close() == (1000, "")
            assert await client.stream.receive_some(65536) == b""
            await client.aclose()


async def test_half_close_after_protocol_failure_sends_close_notify(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    # close_timeout is long: the client sees the end of the server's data at
    # once (close_notify), not when the server gives up waiting.
    async with tls_server(tls, close_timeout=3 * TIMEOUT) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = RawClient(await tls_connect(url, pair.cert))
            await client.handshake()
            await client.send(client_frame(0x2, b"unmasked", mask=None))
            code, _ = await client.read_close()
            assert code == 1002
            assert await client.stream.receive_some(65536) == b""
            await client.aclose()


async def test_handshake_failure_logged_with_reason_at_debug(
    pair: wsnest.CertPair, tls: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="wsnest")
    async with tls_server(tls) as (_, url):
        with trio.fail_after(TIMEOUT):
            # A client that does not trust the certificate sends an alert.
            tcp = await trio.open_tcp_stream(*host_port(url))
            local_port = tcp.socket.getsockname()[1]
            incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
            obj = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
            with pytest.raises(ssl.SSLCertVerificationError):
                while True:
                    try:
                        obj.do_handshake()
                    except ssl.SSLWantReadError:
                        await tcp.send_all(outgoing.read())
                        incoming.write(await tcp.receive_some(65536))
            await tcp.send_all(outgoing.read())  # the alert
            await tcp.aclose()

            def logged() -> list[logging.LogRecord]:
                return [r for r in caplog.records if "TLS handshake" in r.getMessage()]

            await wait_until(lambda: bool(logged()))
    (record,) = logged()
    message = record.getMessage()
    assert record.levelno == logging.DEBUG, message
    assert f"'127.0.0.1', {local_port}" in message, message
    reason = message.partition("failed: ")[2]
    assert reason.strip(), message
    assert "UNKNOWN_CA" in reason, message
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_tls_config_refuses_renegotiation(pair: wsnest.CertPair) -> None:
    assert wsnest.tls_config(pair.cert, pair.key).options & ssl.OP_NO_RENEGOTIATION


async def test_broadcast_over_tls(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    # Shared frames (small ones copied into each outbox, large ones queued by
    # reference) reach every TLS client intact.
    sockets: list[wsnest.WebSocket] = []
    handlers: list[wsnest.Handler] = [
        wsnest.handler_ws("/ws", lambda ws, data: None, on_open=lambda ws, req: sockets.append(ws), textframes=None)
    ]
    small, big = b"tick", os.urandom(300_000)
    async with tls_server(tls, handlers, max_message_size=None) as (_, url):
        with trio.fail_after(TIMEOUT):
            clients = [RawClient(await tls_connect(url, pair.cert)) for _ in range(4)]
            for client in clients:
                await client.handshake()
            await wait_until(lambda: len(sockets) == 4)
            assert wsnest.broadcast(sockets, small) == 4
            assert wsnest.broadcast(sockets, big) == 4
            for client in clients:
                assert await client.read_message() == (0x2, small)
                assert await client.read_message() == (0x2, big)
                await client.aclose()


async def test_never_reading_wss_client_is_dropped_by_send_timeout(pair: wsnest.CertPair, tls: ssl.SSLContext) -> None:
    """``send_timeout`` bounds TLS writes as it does plain ones: a WSS peer
    that stops reading while the server has megabytes for it is dropped,
    and ``on_close`` runs exactly once."""
    t = Tracker()

    def flood(ws: wsnest.WebSocket, data: bytes) -> None:
        for _ in range(16):  # far more than the kernel's socket buffers hold
            ws.send(bytes((1 << 20) - 64))

    handler = wsnest.handler_ws("/ws", flood, on_open=t.on_open, on_close=t.on_close, send_high_water=32 << 20)
    async with tls_server(tls, [handler], send_timeout=0.5) as (_, url):
        with trio.fail_after(TIMEOUT):
            client = RawClient(await tls_connect(url, pair.cert))
            await client.handshake()
            await t.wait_opened(1)
            await client.send(client_frame(0x2, b"go"))  # then never read again
            await t.wait_closed(1)
            assert t.codes() == [1006]
            await client.aclose()
    t.assert_balanced()
    assert len(t.closed) == 1
