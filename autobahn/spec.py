"""Write the JSON spec file that `wstest -m fuzzingserver|fuzzingclient` reads.

    python3 autobahn/spec.py fuzzingserver ws://127.0.0.1:9002 --cases '1.*,2.*' > spec.json
    python3 autobahn/spec.py fuzzingclient ws://127.0.0.1:9001 --agent wsnest --exclude '12.*,13.*'

The report folder inside the chroot is always /report (the runners bind-mount the
host's output folder there).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def patterns(text: str) -> list[str]:
    """Split a comma list of case patterns such as '1.*, 7.1.*' into a list."""
    return [p.strip() for p in text.split(",") if p.strip()]


def build(mode: str, url: str, agent: str, cases: str, exclude: str) -> dict[str, Any]:
    """The spec for one run: which cases, and where the peer is (or listens)."""
    spec: dict[str, Any] = {
        "outdir": "/report",
        "cases": patterns(cases) or ["*"],
        "exclude-cases": patterns(exclude),
        "exclude-agent-cases": {},
        "options": {},
    }
    if mode == "fuzzingserver":
        spec["url"] = url  # where wstest listens; the client under test connects here
    else:
        spec["servers"] = [{"agent": agent, "url": url}]
    return spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=["fuzzingserver", "fuzzingclient"])
    ap.add_argument("url", help="ws:// URL on loopback")
    ap.add_argument("--agent", default="testee", help="name of the server under test (fuzzingclient)")
    ap.add_argument("--cases", default="*", help="comma list of case patterns to run")
    ap.add_argument("--exclude", default="", help="comma list of case patterns to skip")
    args = ap.parse_args()
    json.dump(build(args.mode, args.url, args.agent, args.cases, args.exclude), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
