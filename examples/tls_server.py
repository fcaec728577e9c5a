"""HTTPS and WSS with a self-signed certificate made on the spot.

Run it (needs ``pip install 'wsnest[tls]'`` for the certificate)::

    python examples/tls_server.py              # https://127.0.0.1:8443/
    curl --cacert /tmp/wsnest-tls-.../cert.pem https://127.0.0.1:8443/

``wsnest.write_cert`` makes a certificate for 127.0.0.1 (with the
subjectAltName clients check) and its key; they are written to a private
temporary directory, as a real deployment would keep them in files, and
``wsnest.tls_config`` loads them. Clients trust ``cert.pem``, e.g.
``ssl.create_default_context(cafile=...)``. One port serves a page over
HTTPS and an echo WebSocket over WSS.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import wsnest


def write_self_signed(directory: str | os.PathLike[str], host: str = "127.0.0.1") -> tuple[Path, Path]:
    """Write a new self-signed ``cert.pem`` and ``key.pem`` for ``host``
    into ``directory``; returns their paths. The key file is readable by
    its owner only."""
    pair = wsnest.write_cert(cn=host)
    cert, key = Path(directory, "cert.pem"), Path(directory, "key.pem")
    cert.write_text(pair.cert)
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(pair.key)
    return cert, key


def make_server(cert: str | os.PathLike[str], key: str | os.PathLike[str], url: str) -> wsnest.HttpServer:
    """An HTTPS server at ``url`` (``https://host:port``): a page at ``/``
    and a WSS echo at ``/ws``."""
    handlers = [
        wsnest.handler_inline("/", "hello over TLS\n", content_type="text/plain"),
        wsnest.handler_ws("/ws", lambda ws, data: ws.send(data), textframes=None),
    ]
    return wsnest.http_server(url, handlers, tls=wsnest.tls_config(cert, key))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="wsnest-tls-") as tmp:
        cert, key = write_self_signed(tmp)
        print(f"certificate: {cert} (trust it in the client)")
        make_server(cert, key, "https://127.0.0.1:8443").run()
