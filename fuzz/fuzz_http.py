"""Fuzz harness for the HTTP request layer (``wsnest.http.RequestParser``).

    python fuzz/fuzz_http.py [--quick SECONDS] [libFuzzer flags] [corpus dir | input files]

The input bytes are fed in derived chunks, as the server feeds them. The only
exception allowed out of ``feed`` is ``wsnest._errors.HTTPError`` with a
status in (400, 405, 413, 417, 431, 501, 505); anything else fails, and so does a
400 that hides an exception raised by wsnest's own callbacks (httptools
turns any callback exception into ``HttpParserCallbackError``, which
``RequestParser`` reports as 400). Completed requests must satisfy:
non-empty ``str`` method, ``path`` equal to the percent-decoded path of
``uri``, ``query`` what follows the first ``?``, at most ``max_headers``
headers, a ``bytes`` body of at most ``max_body_size`` bytes, a request head
within ``max_head_size``, and ``http_version`` 1.0 or 1.1; an HTTP/1.0
request with ``Transfer-Encoding`` is not kept alive; a request that the
WebSocket handshake check accepts is one llhttp itself upgraded (no
"zombie" WebSocket). The requests completed before an error are checked
too (the server answers them first). After an upgrade, ``upgrade_tail`` must
be exactly the bytes that followed the request, and only that request has
``upgrade`` set. Each input gets ``-timeout=2`` seconds unless a
``-timeout=`` flag is given: parsing is linear, so a slow input is a fault.

httptools (llhttp) is a third-party C extension: it is not rebuilt with
sanitizers, so this harness checks wsnest's Python layer on top of it (and
would see llhttp crash only as a plain crash).

Input layout (see ``_harness.py``), parameter bytes from the end: limits
selector and input type (bits 0-1: 1 = small limits; bits 2-3: bytes,
bytearray, a memoryview of a reused receive buffer as the server feeds, or
bytes), head size byte (``16 + 4 * b``), header count byte (``b % 24``), body
size byte (``3 * b``), then the split.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import TailReader, make_reader, read_split, run_main, split

ALLOWED_STATUS = frozenset({400, 405, 413, 417, 431, 501, 505})
# Seconds per input before libFuzzer reports a timeout, unless -timeout= is
# given: parsing is linear, so even the largest seed takes milliseconds (a
# quadratic cost, as issue 11 found for 20,000 one-byte chunks, takes seconds).
DEFAULT_TIMEOUT = 2
KINDS = ("bytes", "bytearray", "recv-view", "bytes")

_ATHERIS: Any = None
_mods: dict[str, Any] = {}


def load(atheris: Any = None) -> None:
    global _ATHERIS
    if _mods:
        return
    _ATHERIS = atheris
    if atheris is not None:
        with atheris.instrument_imports(include=["wsnest"]):
            import wsnest.http
    import httptools

    import wsnest
    from wsnest._errors import HTTPError
    from wsnest.http import RequestParser
    from wsnest.http._upgrade import check_upgrade

    _mods.update(
        Limits=wsnest.Limits,
        HTTPError=HTTPError,
        RequestParser=RequestParser,
        httptools=httptools,
        check_upgrade=check_upgrade,
    )


def make_limits(sel: int, head: int, headers: int, body: int) -> Any:
    Limits = _mods["Limits"]
    if sel & 3 != 1:
        return Limits()
    return Limits(max_head_size=16 + 4 * head, max_headers=headers % 24, max_body_size=3 * body)


def _fail(msg: str, stream: bytes, chunks: list[bytes], limits: Any, kind: str) -> None:
    shown = stream if len(stream) <= 600 else stream[:600] + b"..."
    sizes = [len(c) for c in chunks][:40]
    raise AssertionError(
        f"{msg}\nstream ({len(stream)} bytes)={shown!r}\nlimits: head={limits.max_head_size} "
        f"headers={limits.max_headers} body={limits.max_body_size}; kind={kind}; chunk sizes={sizes}"
    )


def _expected_path(uri: str) -> tuple[str, str]:
    raw_path, _, query = uri.partition("?")
    if raw_path.startswith(("http://", "https://")):
        rest = raw_path.split("://", 1)[1]
        slash = rest.find("/")
        raw_path = rest[slash:] if slash >= 0 else "/"
    return unquote(raw_path, errors="surrogateescape"), query


def check_request(req: Any, limits: Any) -> str | None:
    """The invariants of one completed request; a message if one fails."""
    if not isinstance(req.method, str) or not req.method:
        return f"empty or non-str method {req.method!r}"
    if not isinstance(req.uri, str):
        return f"non-str uri {req.uri!r}"
    path, query = _expected_path(req.uri)
    if req.path != path:
        return f"path {req.path!r} is not the decoded path of uri {req.uri!r} ({path!r})"
    if req.query != query:
        return f"query {req.query!r} != {query!r} for uri {req.uri!r}"
    raw = req.headers.raw
    if len(raw) > limits.max_headers:
        return f"{len(raw)} headers > max_headers {limits.max_headers}"
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in raw):
        return f"non-str header {raw!r}"
    head = len(req.uri) + sum(len(k) + len(v) + 4 for k, v in raw)
    if head > limits.max_head_size:
        return f"head of {head} bytes > max_head_size {limits.max_head_size}"
    if type(req.body) is not bytes:
        return f"body is {type(req.body).__name__}, not bytes"
    if len(req.body) > limits.max_body_size:
        return f"body of {len(req.body)} bytes > max_body_size {limits.max_body_size}"
    if req.http_version not in ("1.0", "1.1"):
        return f"http_version {req.http_version!r}"
    if not isinstance(req.keep_alive, bool):
        return f"keep_alive {req.keep_alive!r}"
    if req.http_version == "1.0" and req.keep_alive and "transfer-encoding" in req.headers:
        return "HTTP/1.0 request with Transfer-Encoding kept alive (RFC 9112 6.1)"
    if req.upgrade is not True and _looks_like_upgrade(req):
        # A WebSocket handler would accept it although llhttp did not switch
        # protocols: the "zombie" WebSocket of issue 11.
        return "the handshake check accepts a request llhttp did not upgrade"
    return None


def _looks_like_upgrade(req: Any) -> bool:
    try:
        _mods["check_upgrade"](req)
    except _mods["HTTPError"]:
        return False
    return True


def check_http(stream: bytes, limits: Any, chunks: list[bytes], kind: str) -> None:
    HTTPError = _mods["HTTPError"]
    httptools = _mods["httptools"]
    parser = _mods["RequestParser"](limits, ("127.0.0.1", 1))
    recv = bytearray(max([len(c) for c in chunks] + [1]))
    done: list[Any] = []
    fed = 0
    for chunk in chunks:
        if kind == "recv-view":
            recv[: len(chunk)] = chunk
            data: Any = memoryview(recv)[: len(chunk)]
        elif kind == "bytearray":
            data = bytearray(chunk)
        else:
            data = bytes(chunk)
        try:
            parser.feed(data)
        except HTTPError as exc:
            if exc.status not in ALLOWED_STATUS:
                _fail(f"HTTPError with status {exc.status} ({exc.message})", stream, chunks, limits, kind)
            cause = exc.__cause__
            if isinstance(cause, httptools.HttpParserCallbackError):
                inner = cause.__context__
                if inner is not None and not isinstance(inner, HTTPError):
                    _fail(
                        f"a wsnest callback raised {inner!r}, reported as HTTP {exc.status}",
                        stream,
                        chunks,
                        limits,
                        kind,
                    )
            # The requests completed before the error are answered first.
            _check_queued(parser, limits, stream, chunks, kind, done)
            break
        except Exception as exc:
            _fail(f"RequestParser.feed raised {exc!r}", stream, chunks, limits, kind)
        finally:
            if kind == "recv-view":
                recv[:] = b"\xee" * len(recv)  # the server reuses its buffer
        fed += len(chunk)
        upgraded = [r.upgrade for r in parser.requests]
        if any(upgraded[:-1]) or (upgraded and upgraded[-1] != (parser.upgrade_tail is not None)):
            _fail(f"upgrade flags {upgraded} with upgrade_tail {parser.upgrade_tail!r}", stream, chunks, limits, kind)
        _check_queued(parser, limits, stream, chunks, kind, done)
        if parser.upgrade_tail is not None:
            tail = parser.upgrade_tail
            if type(tail) is not bytes:
                _fail(f"upgrade_tail is {type(tail).__name__}", stream, chunks, limits, kind)
            if not stream[:fed].endswith(tail):
                _fail(f"upgrade_tail {tail[:80]!r} is not a suffix of the bytes fed", stream, chunks, limits, kind)
            if not done:
                _fail("upgrade_tail set but no request was completed", stream, chunks, limits, kind)
            break
        if parser.expect_continue not in (True, False):
            _fail(f"expect_continue is {parser.expect_continue!r}", stream, chunks, limits, kind)


def _check_queued(parser: Any, limits: Any, stream: bytes, chunks: list[bytes], kind: str, done: list[Any]) -> None:
    while parser.requests:
        req = parser.requests.popleft()
        msg = check_request(req, limits)
        if msg:
            _fail(msg, stream, chunks, limits, kind)
        done.append((req.method, req.uri, list(req.headers.raw), req.body))


def check_input(data: bytes, reader: Any = None) -> None:
    if not _mods:
        load(None)
    if reader is None:
        reader = TailReader(data)
    sel = reader.byte()
    head, headers, body = reader.byte(), reader.byte(), reader.byte()
    split_mode, sizes = read_split(reader)
    stream = reader.rest()
    limits = make_limits(sel, head, headers, body)
    check_http(stream, limits, split(stream, split_mode, sizes), KINDS[(sel >> 2) & 3])


def test_one_input(data: bytes) -> None:
    check_input(data, make_reader(data, _ATHERIS))


def main() -> None:
    if not any(a.startswith("-timeout=") for a in sys.argv[1:]):
        sys.argv.append(f"-timeout={DEFAULT_TIMEOUT}")
    run_main("http", load, test_one_input)


if __name__ == "__main__":
    main()
