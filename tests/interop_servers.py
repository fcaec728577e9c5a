"""Echo servers of other libraries (asyncio), run as a child process by
tests/test_client_interop.py so that the wsnest client (trio) meets them
over real sockets.

    python tests/interop_servers.py aiohttp|picows CERT.pem KEY.pem

Listens on two ephemeral ports of 127.0.0.1, one plain and one TLS (with the
given certificate), and prints ``PLAIN_PORT TLS_PORT`` on one line once both
listen. Exits when stdin closes, so it cannot outlive the test process.

Every message is echoed with its type, except these text commands:

- ``close-4001``: the server starts the closing handshake, 4001 "as asked";
- ``close-1000``: the same with 1000 "done";
- ``last-close``: answers ``"CODE REASON"`` of the last close frame a client
  sent (on any connection; recorded before the server's reply goes out, so a
  client that has seen the reply can ask on its next connection).

aiohttp answers on ``/`` without compression and on ``/deflate`` with it
(``compress=True``); picows has no permessage-deflate and ignores an offer.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import sys
import threading
from typing import Any

MAX_MESSAGE = 8 * 2**20
COMMANDS = {"close-4001": (4001, "as asked"), "close-1000": (1000, "done")}
last_close: list[Any] = [0, ""]  # code and reason of the last close frame a client sent


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


async def serve_aiohttp(tls: ssl.SSLContext) -> tuple[int, int]:
    from aiohttp import WSMsgType, web

    async def echo(request: web.Request) -> web.WebSocketResponse:
        # autoclose=False: the close frame reaches this loop, which records it
        # before it answers.
        ws = web.WebSocketResponse(compress=request.path == "/deflate", autoclose=False, max_msg_size=MAX_MESSAGE)
        await ws.prepare(request)
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.TEXT:
                if msg.data in COMMANDS:
                    code, reason = COMMANDS[msg.data]
                    await ws.close(code=code, message=reason.encode())  # waits for the client's reply
                    break
                await ws.send_str(f"{last_close[0]} {last_close[1]}" if msg.data == "last-close" else msg.data)
            elif msg.type == WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
            elif msg.type == WSMsgType.CLOSE:
                last_close[:] = [msg.data, msg.extra or ""]
                await ws.close(code=msg.data, message=(msg.extra or "").encode())
                break
            else:  # CLOSING, CLOSED, ERROR
                break
        return ws

    app = web.Application()
    app.router.add_get("/", echo)
    app.router.add_get("/deflate", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    plain, secure = listener(), listener()
    await web.SockSite(runner, plain).start()
    await web.SockSite(runner, secure, ssl_context=tls).start()
    return plain.getsockname()[1], secure.getsockname()[1]


async def serve_picows(tls: ssl.SSLContext) -> tuple[int, int]:
    from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport, ws_create_server

    class Echo(WSListener):
        def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
            kind = frame.msg_type
            if kind == WSMsgType.CLOSE:
                last_close[:] = [frame.get_close_code().value, frame.get_close_reason() or ""]
                if not transport.is_close_frame_sent:  # the client started it: answer with its code
                    transport.send_close(frame.get_close_code(), frame.get_close_message())
                transport.disconnect()
                return
            data = frame.get_payload_as_bytes()
            if kind == WSMsgType.TEXT and frame.fin and len(data) < 16:
                command = data.decode()
                if command in COMMANDS:
                    code, reason = COMMANDS[command]
                    transport.send_close(WSCloseCode(code), reason.encode())  # the client's reply ends it (above)
                    return
                if command == "last-close":
                    data = f"{last_close[0]} {last_close[1]}".encode()
            transport.send(kind, data, frame.fin)  # frame by frame: fragments echo as fragments

    ports = []
    for ctx in (None, tls):
        server = await ws_create_server(lambda _: Echo(), "127.0.0.1", 0, ssl=ctx, max_frame_size=MAX_MESSAGE)
        ports.append(server.sockets[0].getsockname()[1])
    return ports[0], ports[1]


async def main(kind: str, cert: str, key: str) -> None:
    serve: Any = {"aiohttp": serve_aiohttp, "picows": serve_picows}[kind]
    plain, secure = await serve(tls_context(cert, key))
    print(plain, secure, flush=True)
    await asyncio.Event().wait()


def exit_when_stdin_closes() -> None:
    sys.stdin.buffer.read()
    os._exit(0)


if __name__ == "__main__":
    threading.Thread(target=exit_when_stdin_closes, daemon=True).start()
    asyncio.run(main(*sys.argv[1:4]))
