"""HTTP servers for ``bench_http.py``, one process per server.

Run one with ``python bench/http_servers.py NAME [--host H] [--port P]``.
Once it listens it prints one line ``READY <port> key=value ...`` and serves
until SIGINT or SIGTERM. Port 0 (the default) picks a free port.

Every server answers the same two routes with the same bytes:

``GET /small``
    ``hello, world`` (12 B), ``Content-Type: text/plain; charset=utf-8``.
``GET /big``
    65536 x ``b"x"``, ``Content-Type: application/octet-stream``.

Servers (:data:`SERVERS`):

``wsnest``
    ``wsnest.handler("/small", lambda req: {"body": "hello, world"})`` and
    ``wsnest.handler_inline("/big", ...)`` on ``http_server``. The core is
    what the environment selects (``WSNEST_NO_EXTENSIONS=1``: pure);
    READY reports ``core=``. It runs this checkout's ``src/`` when the
    compiled core is built there (or the pure core is asked for), else the
    installed wsnest; ``WSNEST_BENCH_SRC=/path/to/src`` runs the wsnest
    found there instead (another commit, side by side).
``uvicorn``
    A plain ASGI callable on uvicorn with ``http="httptools"``,
    ``loop="uvloop"`` (``asyncio`` if uvloop is missing),
    ``log_level="warning"``, ``access_log=False``, ``lifespan="off"``, and
    ``server_header=False`` and ``date_header=True`` so that it sends the
    same header set as wsnest (which sends ``Date`` on every response).
``aiohttp``
    ``aiohttp.web`` (``AppRunner(access_log=None)``) on uvloop when it is
    installed. aiohttp always adds a ``Server`` header (about
    40 bytes more per response).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path

SMALL_PATH = "/small"
BIG_PATH = "/big"
SMALL_BODY = b"hello, world"
BIG_BODY = b"x" * 65536
TEXT_PLAIN = "text/plain; charset=utf-8"
OCTET = "application/octet-stream"
# What applications write: a headers mapping, and a JSON body serialised per request.
HEADERS_PATH = "/headers"
REQUEST_ID = "bench-0001"
JSON_PATH = "/json"
JSON_TYPE = "application/json"
JSON_DOC = {"message": "hello, world", "items": [1, 2, 3], "ok": True}
JSON_BODY = json.dumps(JSON_DOC).encode()

#: ``ready(port, **info)``: announce that the server listens.
Ready = Callable[..., None]


def _listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


def _asyncio_run(main: Callable[[], object]) -> None:
    """Run coroutine function ``main`` on uvloop if installed, else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())  # type: ignore[arg-type]
        return
    uvloop.run(main())  # type: ignore[arg-type]


def _loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# -- servers ----------------------------------------------------------------


def _run_wsnest(host: str, port: int, ready: Ready) -> None:
    # Another checkout's src/ when asked; else this checkout's when it can
    # serve the core asked for (compiled core built in place, or pure): an
    # installed copy from an earlier ``pip install`` would otherwise shadow
    # it. Else the installed wsnest.
    src = Path(os.environ.get("WSNEST_BENCH_SRC") or Path(__file__).resolve().parent.parent / "src")
    built = any(p.suffix in (".so", ".pyd") for p in (src / "wsnest" / "core").glob("_frames_c*"))
    if "WSNEST_BENCH_SRC" in os.environ or built or os.environ.get("WSNEST_NO_EXTENSIONS", "") not in ("", "0"):
        sys.path.insert(0, str(src))
    else:
        try:
            import wsnest
        except ImportError:
            sys.path.insert(0, str(src))
    import trio

    import wsnest

    def with_headers(req: wsnest.Request) -> dict[str, object]:
        return {
            "status": 200,
            "headers": {"Content-Type": TEXT_PLAIN, "X-Request-Id": REQUEST_ID},
            "body": "hello, world",
        }

    def json_doc(req: wsnest.Request) -> dict[str, object]:
        return {"headers": {"Content-Type": JSON_TYPE}, "body": json.dumps(JSON_DOC)}

    handlers = [
        wsnest.handler(SMALL_PATH, lambda req: {"body": "hello, world"}),
        wsnest.handler_inline(BIG_PATH, BIG_BODY, OCTET),
        wsnest.handler(HEADERS_PATH, with_headers),
        wsnest.handler(JSON_PATH, json_doc),
    ]
    server = wsnest.http_server(f"http://{host}:{port}", handlers)

    async def main() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                url = await nursery.start(server.serve)
                ready(int(url.rsplit(":", 1)[1]), core=wsnest.CORE, src=Path(wsnest.__file__).parent.parent)
                async for _ in signals:
                    break
                await server.aclose()

    trio.run(main)


def _run_uvicorn(host: str, port: int, ready: Ready) -> None:
    import uvicorn

    small_start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", TEXT_PLAIN.encode()), (b"content-length", str(len(SMALL_BODY)).encode())],
    }
    small_body = {"type": "http.response.body", "body": SMALL_BODY}
    big_start = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", OCTET.encode()), (b"content-length", str(len(BIG_BODY)).encode())],
    }
    big_body = {"type": "http.response.body", "body": BIG_BODY}
    not_found_start = {
        "type": "http.response.start",
        "status": 404,
        "headers": [(b"content-type", TEXT_PLAIN.encode()), (b"content-length", b"10")],
    }
    not_found_body = {"type": "http.response.body", "body": b"Not Found\n"}

    async def app(scope: dict, receive: Callable, send: Callable) -> None:  # type: ignore[type-arg]
        # Built per request, as a real app would (the dicts are small).
        path = scope["path"]
        if path == SMALL_PATH:
            await send(dict(small_start))
            await send(dict(small_body))
        elif path == HEADERS_PATH:
            headers = [(b"content-type", TEXT_PLAIN.encode()), (b"x-request-id", REQUEST_ID.encode())]
            headers.append((b"content-length", str(len(SMALL_BODY)).encode()))
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": SMALL_BODY})
        elif path == JSON_PATH:
            body = json.dumps(JSON_DOC).encode()
            headers = [(b"content-type", JSON_TYPE.encode()), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif path == BIG_PATH:
            await send(dict(big_start))
            await send(dict(big_body))
        else:
            await send(dict(not_found_start))
            await send(dict(not_found_body))

    loop = _loop_name()
    config = uvicorn.Config(
        app,
        http="httptools",
        loop=loop,
        log_level="warning",
        access_log=False,
        lifespan="off",
        server_header=False,
        date_header=True,
    )
    server = uvicorn.Server(config)
    sock = _listen(host, port)

    async def main() -> None:
        async def announce() -> None:
            while not server.started:
                if server.should_exit:
                    return
                await asyncio.sleep(0.01)
            ready(sock.getsockname()[1], loop=loop, uvicorn=uvicorn.__version__)

        task = asyncio.ensure_future(announce())
        try:
            await server.serve(sockets=[sock])  # handles SIGINT/SIGTERM itself
        finally:
            task.cancel()

    _asyncio_run(main)


def _run_aiohttp(host: str, port: int, ready: Ready) -> None:
    import aiohttp
    from aiohttp import web

    async def small(request: web.Request) -> web.Response:
        return web.Response(body=SMALL_BODY, content_type="text/plain", charset="utf-8")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG_BODY, content_type=OCTET)

    async def with_headers(request: web.Request) -> web.Response:
        return web.Response(body=SMALL_BODY, headers={"Content-Type": TEXT_PLAIN, "X-Request-Id": REQUEST_ID})

    async def json_doc(request: web.Request) -> web.Response:
        return web.Response(body=json.dumps(JSON_DOC).encode(), content_type=JSON_TYPE)

    app = web.Application()
    app.router.add_get(SMALL_PATH, small)
    app.router.add_get(BIG_PATH, big)
    app.router.add_get(HEADERS_PATH, with_headers)
    app.router.add_get(JSON_PATH, json_doc)
    sock = _listen(host, port)
    loop_name = _loop_name()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.SockSite(runner, sock)
            await site.start()
            ready(sock.getsockname()[1], loop=loop_name, aiohttp=aiohttp.__version__)
            await stop.wait()
        finally:
            await runner.cleanup()

    _asyncio_run(main)


SERVERS: dict[str, Callable[[str, int, Ready], None]] = {
    "wsnest": _run_wsnest,
    "uvicorn": _run_uvicorn,
    "aiohttp": _run_aiohttp,
}


# -- child side ---------------------------------------------------------------


def _print_ready(port: int, **info: object) -> None:
    extra = "".join(f" {k}={v}" for k, v in info.items())
    print(f"READY {port}{extra}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(SERVERS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        SERVERS[args.name](args.host, args.port, _print_ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
