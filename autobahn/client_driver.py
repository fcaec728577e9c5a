"""Drive a WebSocket client through the Autobahn|Testsuite fuzzingserver.

    python3 autobahn/client_driver.py --client websockets ws://127.0.0.1:9002
    PYTHONPATH=src python3 autobahn/client_driver.py --client wsnest ws://127.0.0.1:9002

The fuzzingserver's protocol: read the case count N from /getCaseCount; for each
case i in 1..N connect to /runCase?case=i&agent=AGENT and echo every message
back, with its frame type, until the server closes; then connect to
/updateReports?agent=AGENT, which makes wstest write the report.

A case that errors on the client side is normal (the suite sends broken frames
on purpose); the report grades it. A case that runs past --case-timeout is cut
off, which drops the connection (the report then grades what it saw), and makes
the exit status 1. Exit 2: the fuzzingserver could not be reached.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

MAX_MESSAGE = 64 * 2**20

# One connection: connect to a URL and (if the flag is true) echo every message
# until the server closes.  Returns how it ended (close code, or the error) and
# the first message received (the answer to a control request, which must not
# be echoed: the server would take it as a command).  Raises TimeoutError when
# it runs past its time.
Echo = Callable[[str, float, bool], Awaitable[tuple[str, Any]]]


async def ask(echo: Echo, url: str, timeout: float) -> Any:
    """The JSON answer of a control request (/getCaseCount, /getCaseInfo, ...), or None."""
    try:
        _, answer = await echo(url, timeout, False)
        return json.loads(answer)
    except (TimeoutError, TypeError, ValueError):
        return None


async def drive(echo: Echo, base: str, agent: str, case_timeout: float, verbose: bool) -> int:
    """The fuzzingserver protocol for one client; returns the exit status."""
    count = await ask(echo, f"{base}/getCaseCount", case_timeout)
    if not isinstance(count, int):
        print(f"driver: no case count from {base}/getCaseCount", file=sys.stderr)
        return 2
    print(f"driver: {count} cases for agent {agent}", flush=True)
    timed_out, endings, grades = [], Counter[str](), Counter[str]()
    start = time.monotonic()
    for case in range(1, count + 1):
        began = time.monotonic()
        try:
            note, _ = await echo(f"{base}/runCase?case={case}&agent={agent}", case_timeout, True)
        except TimeoutError:
            note = f"TIMEOUT after {case_timeout:g} s, connection dropped"
        took = time.monotonic() - began
        # Answered once the server has graded the case: the next case starts only
        # then, and /updateReports cannot overtake the last one.
        status = await ask(echo, f"{base}/getCaseStatus?case={case}&agent={agent}", case_timeout)
        grade = status.get("behavior", "?") if isinstance(status, dict) else "no result"
        endings[note.split(":")[0]] += 1
        grades[grade] += 1
        if verbose or note.startswith("TIMEOUT"):
            info = await ask(echo, f"{base}/getCaseInfo?case={case}", case_timeout)
            cid = info.get("id", "?") if isinstance(info, dict) else "?"
            print(f"driver: case {cid} (#{case}): {note} ({took:.2f} s) -> {grade}", flush=True)
            if note.startswith("TIMEOUT"):
                timed_out.append(cid)
    print(f"driver: {count} cases in {time.monotonic() - start:.1f} s", flush=True)
    print(f"driver: how they ended on the client side: {dict(endings.most_common())}", flush=True)
    print(f"driver: the server's grades: {dict(grades.most_common())}", flush=True)
    note, _ = await echo(f"{base}/updateReports?agent={agent}", case_timeout, False)
    print(f"driver: updateReports: {note}", flush=True)
    if timed_out:
        print(f"driver: {len(timed_out)} case(s) timed out: {' '.join(timed_out)}", file=sys.stderr)
        return 1
    return 0


def with_websockets(args: argparse.Namespace) -> int:
    """The websockets library's asyncio client."""
    import asyncio

    from websockets.asyncio.client import connect

    async def session(url: str, reply: bool, received: list[Any]) -> int | None:
        async with connect(url, max_size=MAX_MESSAGE, compression="deflate", proxy=None, ping_interval=None) as ws:
            async for msg in ws:
                received.append(msg)
                if reply:
                    await ws.send(msg)
        return ws.close_code

    async def echo(url: str, timeout: float, reply: bool) -> tuple[str, Any]:
        received: list[Any] = []
        try:
            code = await asyncio.wait_for(session(url, reply, received), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError(url) from None
        except Exception as exc:  # the fuzzer provokes protocol errors on purpose
            return f"{type(exc).__name__}: {exc}", received[0] if received else None
        return f"closed {code}", received[0] if received else None

    return asyncio.run(drive(echo, args.url, args.agent or "websockets", args.case_timeout, args.verbose))


def with_wsnest(args: argparse.Namespace) -> int:
    """wsnest's trio client."""
    import trio

    import wsnest

    async def echo(url: str, timeout: float, reply: bool) -> tuple[str, Any]:
        received: list[Any] = []
        note = "no connection"
        with trio.move_on_after(timeout) as scope:
            try:
                async with wsnest.connect(
                    url, textframes=None, permessage_deflate=True, max_message_size=MAX_MESSAGE
                ) as ws:
                    async for msg in ws:
                        received.append(msg)
                        if reply:
                            await ws.send_wait(msg)
                note = f"closed {ws.close_code}"
            except Exception as exc:  # the fuzzer provokes protocol errors on purpose
                note = f"{type(exc).__name__}: {exc}"
        if scope.cancelled_caught:
            raise TimeoutError(url)
        return note, received[0] if received else None

    return trio.run(drive, echo, args.url, args.agent or "wsnest", args.case_timeout, args.verbose)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("url", help="the fuzzingserver, e.g. ws://127.0.0.1:9002")
    ap.add_argument("--client", required=True, choices=["websockets", "wsnest"])
    ap.add_argument("--agent", help="name in the report (default: the client's name)")
    ap.add_argument("--case-timeout", type=float, default=60.0, help="seconds one case may take (default 60)")
    ap.add_argument("--verbose", "-v", action="store_true", help="print how every case ended")
    args = ap.parse_args()
    args.url = args.url.rstrip("/")
    return with_websockets(args) if args.client == "websockets" else with_wsnest(args)


if __name__ == "__main__":
    sys.exit(main())
