"""Command line: ``python -m wsnest [--info]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m wsnest`` and the ``wsnest`` script."""
    parser = argparse.ArgumentParser(prog="wsnest", description="wsnest: HTTP + WebSocket server for trio")
    parser.add_argument("--info", action="store_true", help="print the version and which core is active")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080; 0 = any free)")
    args = parser.parse_args(argv)
    import wsnest

    if args.info:
        print(f"wsnest {wsnest.__version__}")
        print(f"core: {wsnest.CORE}")
        print(f"python: {sys.version.split()[0]}")
        return 0
    from ._demo import demo_handlers

    host = f"[{args.host}]" if ":" in args.host else args.host
    wsnest.http_server(f"http://{host}:{args.port}", demo_handlers()).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
