"""Command line.

python -m wsnest                      # the demo: chat at /, WebSocket /ws, SSE clock and numbers /events
python -m wsnest --info               # version and active core
wsnest serve pkg.module:handlers      # serve your own handlers
python -m wsnest --workers 2 --redis redis://127.0.0.1:6379/0   # the demo's chat across workers
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class TargetError(Exception):
    """A ``module:attribute`` target that cannot be served."""


def load_handlers(target: str) -> list[Any]:
    """Import ``module:attribute`` and return its handler list.

    The attribute may be a handler, a sequence of handlers, or a callable
    returning either. Raises :class:`TargetError` with a one-line reason.
    """
    from .handlers import Handler

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise TargetError(f"target must look like 'package.module:handlers', got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules beside you are found
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import module {module_name!r}: {exc}") from None
    except Exception as exc:
        raise TargetError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"module {module_name!r} has no attribute {attr!r}") from None
    if callable(obj) and not isinstance(obj, Handler):
        try:
            obj = obj()
        except Exception as exc:
            raise TargetError(f"calling {target}() failed: {type(exc).__name__}: {exc}") from None
    handlers = [obj] if isinstance(obj, Handler) else obj
    if isinstance(handlers, (str, bytes)) or not isinstance(handlers, Sequence):
        raise TargetError(f"{target} must be a handler or a list of handlers, got {type(obj).__name__}")
    for h in handlers:
        if not isinstance(h, Handler):
            raise TargetError(f"{target} must contain only handlers, found {type(h).__name__}")
    return list(handlers)


SD_LISTEN_FDS_START = 3  # the first socket systemd passes


def _systemd_socket() -> int | None:
    """The socket systemd's socket activation passed to this process, if
    any (``LISTEN_PID`` is this process and ``LISTEN_FDS`` is 1). The
    variables are removed so that no child process takes them as its own.
    Raises ValueError when several sockets were passed."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return None
    count = os.environ.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    if count == "1":
        return SD_LISTEN_FDS_START
    raise ValueError(f"--fd: systemd passed LISTEN_FDS={count!r} sockets; wsnest serves exactly one")


def _octal_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected octal permission bits such as 660, got {text!r}") from None
    if not 0 <= mode <= 0o777:
        raise argparse.ArgumentTypeError(f"expected octal permission bits such as 660, got {text!r}")
    return mode


def _add_listen_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    parser.add_argument("--uds", metavar="PATH", help="listen on this Unix socket instead of --host/--port")
    parser.add_argument(
        "--uds-mode", type=_octal_mode, default=0o660, metavar="MODE", help="--uds file permissions (default 660)"
    )
    parser.add_argument(
        "--fd", type=int, metavar="N", help="serve the bound socket on fd N (default: systemd's, if it passed one)"
    )
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1; POSIX only)")
    parser.add_argument(
        "--max-connections", type=int, metavar="N", help="past N open connections new ones get 503 (default: no limit)"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="on Ctrl+C/SIGTERM, seconds for requests and streams in flight to finish (default 5)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="one INFO line per request and per WebSocket session on logger wsnest.access (default on)",
    )
    parser.add_argument(
        "--proxy-headers",
        action="store_true",
        help="take the client address and scheme from Forwarded / X-Forwarded-* sent by a trusted proxy",
    )
    parser.add_argument(
        "--forwarded-allow-ips",
        default="127.0.0.1",
        metavar="IPS",
        help="comma-separated proxies (IPs, CIDR networks, *) trusted with --proxy-headers (default 127.0.0.1; "
        "a Unix socket peer is always trusted)",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="link the groups of every worker and machine through Redis pub/sub at URL "
        "(redis://host:6379/0, rediss:// for TLS; needs wsnest[redis]); the server does not start if it is unreachable",
    )
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="logging level (default info)")


def _explain_pure_core() -> None:
    """The lines ``--info`` adds after ``core: pure`` (never on the
    ``core:`` line itself, which CI matches whole)."""
    from .core import CORE_FALLBACK, CORE_FALLBACK_REASON, PURE_CORE_ADVICE

    if not CORE_FALLBACK:
        import importlib.util

        built = importlib.util.find_spec("wsnest.core._frames_c") is not None
        hint = "unset it to use the compiled core" if built else "the compiled core is not installed either"
        print(f"note: the pure-Python core was chosen with WSNEST_NO_EXTENSIONS ({hint})")
        return
    print(f"warning: {PURE_CORE_ADVICE[0]}")
    for line in PURE_CORE_ADVICE[1:]:
        print(f"  {line}")
    print(f"  (import error: {CORE_FALLBACK_REASON})")


def _poller_state() -> str:
    """The ``--info`` line of the readiness poller (see server/_poller)."""
    import select

    from .server._poller import poller_enabled

    if poller_enabled():
        return "epoll"
    if not hasattr(select, "epoll"):
        return "off (not on this platform: every connection waits in its own task)"
    return "off (WSNEST_NO_POLLER is set: every connection waits in its own task)"


_OPTION_OF = {"sock": "--fd", "uds_mode": "--uds-mode", "broker": "--redis"}


def _as_option(message: str) -> str:
    """An error naming a keyword (``max_connections: ...``) names the
    command-line option instead (``--max-connections: ...``)."""
    name, sep, rest = message.partition(":")
    if not sep or not name.isidentifier():
        return message
    return f"{_OPTION_OF.get(name, '--' + name.replace('_', '-'))}:{rest}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m wsnest`` and the ``wsnest`` script."""
    parser = argparse.ArgumentParser(prog="wsnest", description="wsnest: a fast HTTP + WebSocket server for trio")
    parser.add_argument("--info", action="store_true", help="print the version and which core is active")
    _add_listen_args(parser)
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the handlers named by module:attribute")
    serve.add_argument("target", help="e.g. myapp.web:handlers (a handler list, or a function returning one)")
    _add_listen_args(serve)
    serve.add_argument("--tls-cert", help="certificate (PEM file) to serve HTTPS/WSS")
    serve.add_argument("--tls-key", help="private key (PEM file) for --tls-cert")
    args = parser.parse_args(argv)

    import wsnest

    if args.info:
        print(f"wsnest {wsnest.__version__}")
        print(f"core: {wsnest.CORE}")
        print(f"python: {sys.version.split()[0]}")
        print(f"poller: {_poller_state()}")
        if wsnest.CORE == "pure":
            _explain_pure_core()
        return 0
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tls = None
    scheme = "http"
    if args.command == "serve":
        try:
            handlers = load_handlers(args.target)
        except TargetError as exc:
            print(f"wsnest: error: {exc}", file=sys.stderr)
            return 2
        if bool(args.tls_cert) != bool(args.tls_key):
            print("wsnest: error: --tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        if args.tls_cert:
            # Paths only here; an error names the option, never its value
            # (key text pasted in place of a path must not be echoed).
            for option, path in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
                if not os.path.isfile(path):
                    print(f"wsnest: error: {option}: no such file (expected the path of a PEM file)", file=sys.stderr)
                    return 2
            try:
                tls = wsnest.tls_config(args.tls_cert, args.tls_key)
            except (TypeError, ValueError, OSError) as exc:
                print(f"wsnest: error: {exc}", file=sys.stderr)
                return 2
            scheme = "https"
    else:
        from ._demo import demo_handlers

        # The page's numbers: the server built below, looked up when a page asks.
        handlers = demo_handlers(stats=lambda: server.stats(all_workers=True), broker=args.redis is not None)
    from .broker import BrokerError
    from .server._supervisor import check_workers

    try:
        check_workers(args.workers)
    except (ValueError, RuntimeError) as exc:
        print(f"wsnest: error: --{exc}", file=sys.stderr)
        return 2
    host = f"[{args.host}]" if ":" in args.host else args.host
    url, sock = f"{scheme}://{host}:{args.port}", None
    if args.uds is not None and args.fd is not None:
        print("wsnest: error: --uds and --fd: choose one", file=sys.stderr)
        return 2
    if args.fd is None and args.uds is None:
        try:
            args.fd = _systemd_socket()
        except ValueError as exc:
            print(f"wsnest: error: {exc}", file=sys.stderr)
            return 2
    if args.fd is not None:
        url, sock = f"{scheme}://", args.fd
    elif args.uds is not None:
        url = f"unix:{args.uds}"
    try:
        server = wsnest.http_server(
            url,
            handlers,
            tls=tls,
            sock=sock,
            uds_mode=args.uds_mode,
            access_log=args.access_log,
            proxy_headers=args.proxy_headers,
            forwarded_allow_ips=args.forwarded_allow_ips,
            max_connections=args.max_connections,
            drain_timeout=args.drain_timeout,
            broker=args.redis,
        )
    except (ValueError, TypeError, ImportError) as exc:  # ImportError: --redis without coredis
        print(f"wsnest: error: {_as_option(str(exc))}", file=sys.stderr)
        return 2
    try:
        server.run(workers=args.workers)
    except OSError as exc:  # the message names the address ("cannot listen on ...")
        print(f"wsnest: error: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except BrokerError as exc:  # unreachable at start: the message names the URL (without its password)
        print(f"wsnest: error: --redis: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:  # a worker failed to start
        print(f"wsnest: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
