"""The request object handed to callbacks."""

from __future__ import annotations

from urllib.parse import unquote

from ._headers import Headers


class Request:
    """An HTTP request (also the ``req`` of a WebSocket ``on_open``).

    Attributes:
        method: the request method, e.g. ``"GET"``.
        uri: the raw request target, query included, not percent-decoded.
        path: the percent-decoded path, without the query.
        query: the raw query string after ``?`` (``""`` if none).
        headers: a case-insensitive :class:`Headers` mapping.
        body: the request body (``b""`` if none).
        client: the client's address as ``(host, port)``: the peer's, or
            the one a trusted proxy reports (``proxy_headers``; port 0 when
            it gives none); ``None`` when unknown (a Unix socket peer).
        scheme: ``"http"`` or ``"https"``: how the client reached the
            server (TLS), or what a trusted proxy reports.
        http_version: ``"1.1"`` or ``"1.0"``.
        keep_alive: whether the client allows the connection to be reused.
        upgrade: whether the HTTP parser switched protocols after this
            request (a real ``Upgrade``; header look-alikes do not count).
    """

    __slots__ = (
        "body",
        "client",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query",
        "raw_path",
        "scheme",
        "upgrade",
        "uri",
    )

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Headers,
        body: bytes = b"",
        client: tuple[str, int] | None = None,
        http_version: str = "1.1",
        scheme: str = "http",
    ) -> None:
        self.method = method
        self.uri = uri
        raw_path, _, self.query = uri.partition("?")
        if raw_path[:1] != "/" and raw_path.startswith(("http://", "https://")):
            # absolute-form target (RFC 9112 section 3.2.2): route on its path
            rest = raw_path.split("://", 1)[1]
            slash = rest.find("/")
            raw_path = rest[slash:] if slash >= 0 else "/"
        self.raw_path = raw_path
        self.path = unquote(raw_path, errors="surrogateescape") if "%" in raw_path else raw_path
        self.headers = headers
        self.body = body
        self.client = client
        self.http_version = http_version
        self.scheme = scheme
        self.keep_alive = http_version == "1.1"
        self.upgrade = False

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"

    def snapshot(self) -> bytes | None:
        """The request without its body, packed into one ``bytes`` (what a
        long-lived WebSocket keeps: a fraction of the objects' size), or
        None if a field holds a newline (then keep the object itself);
        :meth:`from_snapshot` rebuilds it."""
        client = self.client
        flags = (
            ("U" if self.upgrade else "") + ("K" if self.keep_alive else "") + ("S" if self.scheme == "https" else "")
        )
        fields = [self.method, self.uri, self.http_version, flags]
        fields += ("", "") if client is None else (str(client[0]), str(client[1]))
        for name, value in self.headers.raw:
            fields += (name, value)
        if any("\n" in field for field in fields):
            return None
        return "\n".join(fields).encode("utf-8", "surrogateescape")

    @classmethod
    def from_snapshot(cls, data: bytes) -> Request:
        """The request :meth:`snapshot` packed (its body is ``b""``)."""
        method, uri, version, flags, host, port, *pairs = data.decode("utf-8", "surrogateescape").split("\n")
        client = (host, int(port)) if port else None
        scheme = "https" if "S" in flags else "http"
        req = cls(method, uri, Headers(zip(pairs[0::2], pairs[1::2], strict=True)), b"", client, version, scheme)
        req.upgrade = "U" in flags
        req.keep_alive = "K" in flags
        return req
