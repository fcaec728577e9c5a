"""TLS: ``write_cert``, ``tls_config`` and an ``https://`` server (HTTPS, WSS,
streams, mutual TLS, clients that never finish a handshake).

Blocking clients (httpx, websockets' sync client, ssl sockets) run in worker
threads so that the server on the trio thread keeps serving.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import websockets.exceptions
import websockets.sync.client
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import wsnest
from serverutil import TIMEOUT, RawClient, host_port, run_in_thread, running_server, ws_url

# -- certificates ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair() -> wsnest.CertPair:
    """A server certificate for 127.0.0.1 (made once: key generation costs)."""
    return wsnest.write_cert()


def trusting(cert_pem: str) -> ssl.SSLContext:
    """A client context that trusts exactly ``cert_pem``."""
    return ssl.create_default_context(cadata=cert_pem)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(cn: str = "wsnest test CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_client_cert(ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str = "client 1") -> tuple[str, str]:
    """A client certificate signed by ``ca``: ``(cert_pem, key_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return pem(cert), pem(key)


def pem(obj: Any) -> str:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return obj.private_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


# -- write_cert ----------------------------------------------------------------------


def test_write_cert_ip(pair: wsnest.CertPair) -> None:
    assert isinstance(pair, wsnest.CertPair)
    assert pair.cert.startswith("-----BEGIN CERTIFICATE-----")
    assert pair.key.startswith("-----BEGIN PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(pair.cert.encode())
    key = serialization.load_pem_private_key(pair.key.encode(), password=None)
    assert cert.public_key() == key.public_key()
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert san.get_values_for_type(x509.DNSName) == []
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "127.0.0.1"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    now = datetime.datetime.now(datetime.timezone.utc)
    assert cert.not_valid_before_utc <= now
    assert datetime.timedelta(days=364) < cert.not_valid_after_utc - now <= datetime.timedelta(days=365)


def test_write_cert_dns_name_and_validity() -> None:
    pair = wsnest.write_cert("localhost", valid_days=2)
    cert = x509.load_pem_x509_certificate(pair.cert.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == []
    left = cert.not_valid_after_utc - datetime.datetime.now(datetime.timezone.utc)
    assert datetime.timedelta(days=1) < left <= datetime.timedelta(days=2)


def test_write_cert_ipv6() -> None:
    cert = x509.load_pem_x509_certificate(wsnest.write_cert("::1").cert.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]


@pytest.mark.parametrize("valid_days", [0, -1, True, 1.5, "30", None])
def test_write_cert_bad_valid_days(valid_days: Any) -> None:
    with pytest.raises(ValueError, match="valid_days"):
        wsnest.write_cert(valid_days=valid_days)


@pytest.mark.parametrize("cn", ["", None, 127])
def test_write_cert_bad_cn(cn: Any) -> None:
    with pytest.raises(ValueError, match="cn"):
        wsnest.write_cert(cn)


# -- tls_config ----------------------------------------------------------------------


def _check_context(ctx: ssl.SSLContext, cert_pem: str) -> None:
    """A server context with TLS 1.2+, no client certificates asked for, and
    ``cert_pem`` loaded: a real handshake (over memory BIOs) against a client
    that trusts it succeeds and the server presents that certificate."""
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert ctx.verify_mode == ssl.CERT_NONE  # no client certificates asked for
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    server_cert = x509.load_pem_x509_certificate(memory_handshake(ctx, cert_pem))
    assert server_cert == x509.load_pem_x509_certificate(cert_pem.encode())


def memory_handshake(server_ctx: ssl.SSLContext, trusted_pem: str) -> bytes:
    """Handshake a client trusting ``trusted_pem`` with ``server_ctx`` over
    memory BIOs; return the certificate the server presented (PEM)."""
    client_ctx = trusting(trusted_pem)
    s_in, s_out, c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname="127.0.0.1")
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(ssl.SSLWantReadError):
                side.do_handshake()
        s_in.write(c_out.read())
        c_in.write(s_out.read())
    der = client.getpeercert(binary_form=True)
    assert der is not None, "no handshake"
    return ssl.DER_cert_to_PEM_cert(der).encode("ascii")


def test_check_context_needs_a_certificate(pair: wsnest.CertPair) -> None:
    # The helper above must fail for a context with no certificate loaded.
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    bare.options |= ssl.OP_NO_RENEGOTIATION
    with pytest.raises(ssl.SSLError):
        _check_context(bare, pair.cert)


def test_tls_config_pem_text(pair: wsnest.CertPair) -> None:
    _check_context(wsnest.tls_config(pair.cert, pair.key), pair.cert)
    _check_context(wsnest.tls_config(pair.cert.encode(), pair.key.encode()), pair.cert)


def test_tls_config_files(pair: wsnest.CertPair, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text(pair.cert)
    key.write_text(pair.key)
    _check_context(wsnest.tls_config(str(cert), str(key)), pair.cert)
    _check_context(wsnest.tls_config(cert, key), pair.cert)  # os.PathLike
    _check_context(wsnest.tls_config(cert, pair.key), pair.cert)  # mixed


def test_tls_config_encrypted_key(pair: wsnest.CertPair) -> None:
    key = serialization.load_pem_private_key(pair.key.encode(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"s3cret"),
    ).decode("ascii")
    _check_context(wsnest.tls_config(pair.cert, encrypted, password="s3cret"), pair.cert)
    with pytest.raises(ValueError, match="cert/key"):
        wsnest.tls_config(pair.cert, encrypted, password="wrong")


def test_tls_config_bad_pem(pair: wsnest.CertPair) -> None:
    garbage_cert = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    garbage_key = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ValueError, match="cert/key"):
        wsnest.tls_config(garbage_cert, pair.key)
    with pytest.raises(ValueError, match="cert/key"):
        wsnest.tls_config(pair.cert, garbage_key)
    with pytest.raises(ValueError, match="cert/key"):  # a key of another certificate
        wsnest.tls_config(pair.cert, wsnest.write_cert().key)
    with pytest.raises(ValueError, match="cert/key"):  # cert and key swapped
        wsnest.tls_config(pair.key, pair.cert)


def test_tls_config_missing_files(pair: wsnest.CertPair, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^cert: .*neither PEM text nor an existing file"):
        wsnest.tls_config(str(tmp_path / "nope.pem"), pair.key)
    with pytest.raises(ValueError, match=r"^key: "):
        wsnest.tls_config(pair.cert, tmp_path / "nope.key")
    with pytest.raises(ValueError, match=r"^client_ca: "):
        wsnest.tls_config(pair.cert, pair.key, client_ca=str(tmp_path / "nope-ca.pem"))
    with pytest.raises(ValueError, match=r"^cert: "):  # a directory is not a file
        wsnest.tls_config(str(tmp_path), pair.key)


def test_tls_config_bad_types_and_ca(pair: wsnest.CertPair) -> None:
    with pytest.raises(TypeError, match="cert"):
        wsnest.tls_config(123, pair.key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="key"):
        wsnest.tls_config(pair.cert, "")
    with pytest.raises(ValueError, match="client_ca"):
        wsnest.tls_config(
            pair.cert, pair.key, client_ca="-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )


def test_tls_config_client_ca(pair: wsnest.CertPair, tmp_path: Path) -> None:
    ca, _ = make_ca()
    ctx = wsnest.tls_config(pair.cert, pair.key, client_ca=pem(ca))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    (tmp_path / "ca.pem").write_text(pem(ca))
    ctx = wsnest.tls_config(pair.cert, pair.key, client_ca=tmp_path / "ca.pem")
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert len(ctx.get_ca_certs()) == 1


def test_http_server_scheme_and_tls_must_match(pair: wsnest.CertPair) -> None:
    h = wsnest.handler("/", lambda req: {"body": "x"})
    with pytest.raises(ValueError, match="tls"):
        wsnest.http_server("https://127.0.0.1:0", [h])
    with pytest.raises(ValueError, match="tls"):
        wsnest.http_server("http://127.0.0.1:0", [h], tls=wsnest.tls_config(pair.cert, pair.key))
    with pytest.raises(TypeError, match="tls"):
        wsnest.http_server("https://127.0.0.1:0", [h], tls="not a context")  # type: ignore[arg-type]
    server = wsnest.http_server("https://127.0.0.1:0", [h], tls=wsnest.tls_config(pair.cert, pair.key))
    assert server.url == "https://127.0.0.1:0"


# -- an https server -----------------------------------------------------------------


def all_handlers() -> list[wsnest.Handler]:
    async def stream(conn: wsnest.StreamConnection, req: wsnest.Request) -> None:
        conn.set_header("Content-Type", "text/plain")
        for i in range(3):
            conn.send(f"chunk {i}\n")
            await trio.sleep(0)
        conn.send("x" * 200_000 + "\n")
        conn.close()

    def hello(req: wsnest.Request) -> dict[str, Any]:
        return {"status": 200, "headers": {"Content-Type": "text/plain"}, "body": f"hello {req.method} {req.body!r}"}

    return [
        wsnest.handler("/hello", hello, method="*"),
        wsnest.handler_inline("/inline", "inline body", content_type="text/plain"),
        wsnest.handler_ws("/ws", lambda ws, data: ws.send(data), textframes=None),
        wsnest.handler_stream("/stream", stream, method="GET"),
    ]


@asynccontextmanager
async def tls_server(
    tls: ssl.SSLContext, handlers: list[wsnest.Handler] | None = None, **limits: Any
) -> AsyncIterator[tuple[wsnest.HttpServer, str]]:
    async with running_server(
        all_handlers() if handlers is None else handlers, "https://127.0.0.1:0", tls=tls, **limits
    ) as (server, url):
        assert url.startswith("https://127.0.0.1:") and not url.endswith(":0")
        yield server, url


def wss_echo(uri: str, ctx: ssl.SSLContext, messages: list[str | bytes]) -> Callable[[], list[str | bytes]]:
    def run() -> list[str | bytes]:
        got = []
        with websockets.sync.client.connect(
            uri, ssl=ctx, open_timeout=TIMEOUT, close_timeout=5, max_size=4 * 2**20
        ) as ws:
            for m in messages:
                ws.send(m)
                got.append(ws.recv(timeout=TIMEOUT))
        return got

    return run


async def test_https_every_handler_type(pair: wsnest.CertPair) -> None:
    ctx = trusting(pair.cert)
    async with tls_server(wsnest.tls_config(pair.cert, pair.key)) as (_, url):

        def http_calls() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with httpx.Client(verify=ctx, timeout=TIMEOUT) as client:
                r = client.get(url + "/hello")
                out["hello"] = (r.status_code, r.text, r.http_version)
                r = client.post(url + "/hello", content=b"body over tls")
                out["post"] = (r.status_code, r.text)
                r = client.get(url + "/inline")
                out["inline"] = (r.status_code, r.text, r.headers["content-type"])
                out["missing"] = client.get(url + "/missing").status_code
                with client.stream("GET", url + "/stream") as r:
                    out["stream"] = (r.status_code, r.headers["content-type"], b"".join(r.iter_bytes()))
            return out

        out = await run_in_thread(http_calls)
        assert out["hello"] == (200, "hello GET b''", "HTTP/1.1")
        assert out["post"] == (200, "hello POST b'body over tls'")
        assert out["inline"][:2] == (200, "inline body") and out["inline"][2].startswith("text/plain")
        assert out["missing"] == 404
        status, ctype, body = out["stream"]
        assert (status, ctype) == (200, "text/plain")
        assert body == b"chunk 0\nchunk 1\nchunk 2\n" + b"x" * 200_000 + b"\n"

        big = bytes(range(256)) * 4096  # 1 MiB: many TLS records each way
        got = await run_in_thread(wss_echo(ws_url(url).replace("ws://", "wss://"), ctx, ["héllo", b"\x00bin", big]))
        assert got == ["héllo", b"\x00bin", big]


def test_ws_url_of_https_is_wss() -> None:
    # serverutil.ws_url turns "https://..." into "wss://..." as well.
    assert ws_url("https://127.0.0.1:1") == "wss://127.0.0.1:1/ws"


async def test_https_untrusted_client_refuses_and_server_survives(pair: wsnest.CertPair) -> None:
    async with tls_server(wsnest.tls_config(pair.cert, pair.key)) as (_, url):

        def untrusted() -> None:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                httpx.get(url + "/hello", verify=ssl.create_default_context(), timeout=TIMEOUT)

        await run_in_thread(untrusted)
        r = await run_in_thread(lambda: httpx.get(url + "/hello", verify=trusting(pair.cert), timeout=TIMEOUT))
        assert r.status_code == 200


async def test_wss_close_1001_on_server_shutdown(pair: wsnest.CertPair) -> None:
    ctx = trusting(pair.cert)
    async with trio.open_nursery() as nursery:
        server = wsnest.http_server("https://127.0.0.1:0", all_handlers(), tls=wsnest.tls_config(pair.cert, pair.key))
        url = await nursery.start(server.serve)
        ws = await run_in_thread(
            lambda: websockets.sync.client.connect(ws_url(url), ssl=ctx, open_timeout=TIMEOUT).__enter__()
        )
        try:
            ws.send("ping?")
            assert await run_in_thread(lambda: ws.recv(timeout=TIMEOUT)) == "ping?"

            def wait_close() -> Any:
                with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
                    ws.recv(timeout=TIMEOUT)
                return info.value

            async with trio.open_nursery() as inner:
                inner.start_soon(server.aclose)
                closed = await run_in_thread(wait_close)
            assert closed.rcvd is not None and closed.rcvd.code == 1001
        finally:
            ws.close()
    assert server.state == "closed"


# -- mutual TLS ---------------------------------------------------------------------


def _client_ctx(server_cert: str, tmp_path: Path, cert_key: tuple[str, str] | None, tls12: bool = False) -> Any:
    ctx = trusting(server_cert)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if cert_key is not None:
        cert_file = tmp_path / f"client-{abs(hash(cert_key[0]))}.pem"
        key_file = cert_file.with_suffix(".key")
        cert_file.write_text(cert_key[0])
        key_file.write_text(cert_key[1])
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


def _refused(url: str, ctx: ssl.SSLContext) -> str:
    """Open TLS by hand and send a request: the server must refuse the
    client and never answer it. Returns ``"handshake: ..."`` when the TLS
    handshake itself failed, ``"read: ..."`` when it failed on the first
    read (TLS 1.3 checks the client certificate after the client's side of
    the handshake is done)."""
    host, port = host_port(url)
    with (
        socket.create_connection((host, port), timeout=TIMEOUT) as raw,
        ctx.wrap_socket(raw, server_hostname=host, do_handshake_on_connect=False) as tls,
    ):
        try:
            tls.do_handshake()
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
            return f"handshake: {type(exc).__name__}: {exc}"
        try:
            tls.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            data = tls.recv(4096)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as exc:
            return f"read: {type(exc).__name__}: {exc}"
    assert data == b"", f"the server answered a client it should refuse: {data!r}"
    return "read: EOF"


async def test_mutual_tls(pair: wsnest.CertPair, tmp_path: Path) -> None:
    ca, ca_key = make_ca()
    good = make_client_cert(ca, ca_key)
    other_ca, other_key = make_ca("another CA")
    stranger = make_client_cert(other_ca, other_key, "stranger")
    tls = wsnest.tls_config(pair.cert, pair.key, client_ca=pem(ca))
    async with tls_server(tls) as (_, url):
        with_cert = _client_ctx(pair.cert, tmp_path, good)

        r = await run_in_thread(lambda: httpx.get(url + "/hello", verify=with_cert, timeout=TIMEOUT))
        assert (r.status_code, r.text) == (200, "hello GET b''")

        # No certificate: under TLS 1.2 the handshake itself fails; under TLS 1.3
        # the client's handshake completes and the refusal comes on first read.
        outcome = await run_in_thread(lambda: _refused(url, _client_ctx(pair.cert, tmp_path, None, tls12=True)))
        assert outcome.startswith("handshake: "), outcome
        outcome = await run_in_thread(lambda: _refused(url, _client_ctx(pair.cert, tmp_path, None)))
        assert outcome.startswith(("handshake: ", "read: ")), outcome

        # A certificate from a CA the server does not trust is refused too.
        outcome = await run_in_thread(lambda: _refused(url, _client_ctx(pair.cert, tmp_path, stranger, tls12=True)))
        assert outcome.startswith("handshake: "), outcome
        outcome = await run_in_thread(lambda: _refused(url, _client_ctx(pair.cert, tmp_path, stranger)))
        assert outcome.startswith(("handshake: ", "read: ")), outcome

        def no_cert_httpx() -> None:
            with pytest.raises(httpx.TransportError):
                httpx.get(url + "/hello", verify=trusting(pair.cert), timeout=TIMEOUT)

        await run_in_thread(no_cert_httpx)

        # The server keeps serving good clients, over HTTPS and WSS.
        r = await run_in_thread(lambda: httpx.get(url + "/inline", verify=with_cert, timeout=TIMEOUT))
        assert (r.status_code, r.text) == (200, "inline body")
        got = await run_in_thread(wss_echo(ws_url(url), with_cert, ["mutual", b"tls"]))
        assert got == ["mutual", b"tls"]


# -- clients that do not speak TLS ----------------------------------------------------


async def test_plain_http_on_tls_port_gets_a_clear_text_400(pair: wsnest.CertPair) -> None:
    # As nginx: an HTTP request on the TLS port is answered in clear text.
    async with tls_server(wsnest.tls_config(pair.cert, pair.key)) as (_, url):
        with trio.fail_after(5):
            client = await RawClient.connect(url)
            try:
                await client.send(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                data = await client.read_until_eof()
            finally:
                await client.aclose()
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400 "), data
        assert b"\r\nConnection: close" in head
        assert body == b"plain HTTP request sent to HTTPS port\n"
        r = await run_in_thread(lambda: httpx.get(url + "/hello", verify=trusting(pair.cert), timeout=TIMEOUT))
        assert r.status_code == 200


async def test_other_bytes_on_tls_port_are_dropped(pair: wsnest.CertPair) -> None:
    async with tls_server(wsnest.tls_config(pair.cert, pair.key)) as (_, url):
        with trio.fail_after(5):
            client = await RawClient.connect(url)
            try:
                await client.send(b"\x00\x01\x02 not a TLS record\r\n\r\n")
                data = await client.read_until_eof()
            finally:
                await client.aclose()
        assert b"HTTP/1." not in data, data  # at most a TLS alert, never an HTTP answer


@pytest.mark.parametrize("first_bytes", [b"", b"\x16\x03\x01\x02\x00"], ids=["silent", "partial-hello"])
async def test_stalled_handshake_dropped_after_timeout(pair: wsnest.CertPair, first_bytes: bytes) -> None:
    handshake_timeout = 0.5
    async with tls_server(wsnest.tls_config(pair.cert, pair.key), handshake_timeout=handshake_timeout) as (_, url):
        with trio.fail_after(handshake_timeout + 5):
            idle = await RawClient.connect(url)
            started = trio.current_time()
            try:
                if first_bytes:
                    await idle.send(first_bytes)
                # Meanwhile a good client is served (the stalled handshake blocks nobody).
                r = await run_in_thread(lambda: httpx.get(url + "/hello", verify=trusting(pair.cert), timeout=TIMEOUT))
                assert r.status_code == 200
                assert await idle.read_until_eof() == b""
                elapsed = trio.current_time() - started
            finally:
                await idle.aclose()
        assert handshake_timeout * 0.8 <= elapsed < handshake_timeout + 4, elapsed
