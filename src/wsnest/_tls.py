"""``tls_config`` and ``write_cert``: HTTPS and WSS on the standard ``ssl`` module."""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from typing import NamedTuple


def _is_pem(value: str | bytes) -> bool:
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    return "-----BEGIN" in text


def _reason(exc: ssl.SSLError) -> str:
    return str(exc.reason or exc.strerror or type(exc).__name__)


def _as_text(name: str, value: object) -> str:
    """``value`` as a path or PEM text. Errors name the argument and never
    show the value: it may be key material (a key pasted without its PEM
    armour) and would end up in logs and on terminals."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        try:
            value = value.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError(f"{name}: not PEM text (not ASCII) nor a file path") from None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name}: expected a file path or PEM text, got {type(value).__name__}")
    if not _is_pem(value) and not os.path.isfile(value):
        raise ValueError(
            f"{name}: neither PEM text nor an existing file"
            f" (no '-----BEGIN' line; the value, {len(value)} characters, is not shown)"
        )
    return value


def tls_config(
    cert: str | bytes | os.PathLike[str],
    key: str | bytes | os.PathLike[str],
    password: str | bytes | None = None,
    client_ca: str | bytes | os.PathLike[str] | None = None,
) -> ssl.SSLContext:
    """Build the server TLS configuration for ``http_server(tls=...)``.

    Args:
        cert: certificate (or chain), as a file path or PEM text.
        key: its private key, as a file path or PEM text.
        password: the key's password, if it is encrypted.
        client_ca: CA certificate(s) (path or PEM text); when given, clients
            must present a certificate signed by them (mutual TLS).

    TLS 1.2 or newer, no compression, no renegotiation, ALPN ``http/1.1``.
    Errors name the argument at fault and never show its value (key
    material must not reach a log).
    """
    cert_s = _as_text("cert", cert)
    key_s = _as_text("key", key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION
    # Client-initiated renegotiation costs us a handshake per request of the
    # client's; OpenSSL 3 refuses it by default, 1.1.1 does not.
    ctx.options |= getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    ctx.set_alpn_protocols(["http/1.1"])
    with tempfile.TemporaryDirectory(prefix="wsnest-tls-") as tmp:
        # ssl loads certificate chains only from files: PEM text goes
        # through a private temporary directory that is removed at once.
        def to_file(name: str, value: str) -> str:
            if not _is_pem(value):
                return value
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(value)
            return path

        try:
            ctx.load_cert_chain(to_file("cert.pem", cert_s), to_file("key.pem", key_s), password)
        except ssl.SSLError as exc:  # OpenSSL's reason names the problem, never the data
            raise ValueError(f"cert/key: cannot load the certificate and key ({_reason(exc)})") from None
    if client_ca is not None:
        ca = _as_text("client_ca", client_ca)
        try:
            if _is_pem(ca):
                ctx.load_verify_locations(cadata=ca)
            else:
                ctx.load_verify_locations(cafile=ca)
        except (ssl.SSLError, ValueError) as exc:
            reason = _reason(exc) if isinstance(exc, ssl.SSLError) else "not PEM certificates"
            raise ValueError(f"client_ca: cannot load ({reason})") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class CertPair(NamedTuple):
    """A PEM certificate and its private key (both ``str``)."""

    cert: str
    key: str


def write_cert(cn: str = "127.0.0.1", valid_days: int = 365) -> CertPair:
    """Make a self-signed certificate for ``cn`` (an IP address or a host
    name) with a matching subjectAltName, so that browsers and Python
    clients accept it once it is trusted. Needs ``pip install wsnest[tls]``.

    Returns ``CertPair(cert, key)`` as PEM text, ready for
    ``tls_config(pair.cert, pair.key)``; trust ``pair.cert`` on the client.
    """
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise ImportError("write_cert needs the 'cryptography' package: pip install 'wsnest[tls]'") from None
    if not isinstance(cn, str) or not cn:
        raise ValueError(f"cn: expected a host name or IP address, got {cn!r}")
    if isinstance(valid_days, bool) or not isinstance(valid_days, int) or valid_days < 1:
        raise ValueError(f"valid_days: expected a positive int, got {valid_days!r}")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wsnest")]
    )
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(cn))
    except ValueError:
        alt = x509.DNSName(cn)
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode("ascii")
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return CertPair(cert_pem, key_pem)
