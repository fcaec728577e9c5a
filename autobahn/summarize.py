"""Summarise an Autobahn|Testsuite report folder and judge it.

    python3 autobahn/summarize.py OUTDIR [--agent NAME] [--list NON-STRICT,INFORMATIONAL] [--accept OK,INFORMATIONAL]

OUTDIR holds the report (index.json and one JSON per case) and wstest.log, from
whose "Cases = [...]" line the cases that should be in the report are read.
For each agent it counts the `behavior` and the `behaviorClose` of its cases
(OK / NON-STRICT / INFORMATIONAL / UNIMPLEMENTED / FAILED, plus any other value
the suite used), lists the cases graded other than the accepted grades (with
the suite's reason) and the missing cases, and writes the same as JSON to
OUTDIR/summary.json.

Exit status: 0 every expected case is in the report and both grades of every
case are accepted (--accept, default OK and INFORMATIONAL: a NON-STRICT,
UNIMPLEMENTED, FAILED, WRONG CODE, UNCLEAN... case fails the run); 1
otherwise; 2 no readable report.
"""

from __future__ import annotations

import argparse
import ast
import html
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

GRADES = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
ACCEPTED = "OK,INFORMATIONAL"


def case_order(case_id: str) -> tuple[int, ...]:
    """Sort key that puts 1.2.10 after 1.2.9."""
    return tuple(int(part) for part in case_id.split(".") if part.isdigit())


def planned_cases(log: Path) -> list[str] | None:
    """The case ids wstest announced in its log, or None if the log has no such line."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    match = re.search(r"^Cases = (\[.*\])$", text, re.M)
    return [str(c) for c in ast.literal_eval(match.group(1))] if match else None


def one_line(text: str, width: int = 100) -> str:
    """A case description or result as plain text on one line."""
    text = html.unescape(re.sub(r"<[^>]+>", " ", text or ""))
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def judge(outdir: Path, cases: dict[str, Any], planned: list[str] | None, accepted: set[str]) -> dict[str, Any]:
    """Counts, rejected (a grade not in ``accepted``) and missing cases of one agent."""
    rejected = sorted(
        (cid for cid, c in cases.items() if {c.get("behavior"), c.get("behaviorClose")} - accepted),
        key=case_order,
    )
    details = {}
    for cid in rejected:
        try:
            report = json.loads((outdir / cases[cid]["reportfile"]).read_text())
        except (OSError, ValueError, KeyError):
            report = {}
        details[cid] = {
            "behavior": cases[cid].get("behavior"),
            "behaviorClose": cases[cid].get("behaviorClose"),
            "description": one_line(report.get("description", "")),
            "result": one_line(report.get("result", "") + " " + report.get("resultClose", "")),
        }
    return {
        "cases": len(cases),
        "behavior": dict(Counter(c.get("behavior", "?") for c in cases.values())),
        "behaviorClose": dict(Counter(c.get("behaviorClose", "?") for c in cases.values())),
        "accepted": sorted(accepted),
        "rejected": details,
        "missing": sorted(set(planned or []) - set(cases), key=case_order),
    }


def show(agent: str, verdict: dict[str, Any], cases: dict[str, Any], listed: list[str]) -> None:
    """Print one agent's verdict as a short table."""
    beh, clo = verdict["behavior"], verdict["behaviorClose"]
    print(f"agent {agent}: {verdict['cases']} cases")
    print(f"  {'':<14}{'behavior':>10}{'behaviorClose':>15}")
    for grade in GRADES + sorted((set(beh) | set(clo)) - set(GRADES)):
        print(f"  {grade:<14}{beh.get(grade, 0):>10}{clo.get(grade, 0):>15}")
    for cid, d in verdict["rejected"].items():
        print(f"  NOT OK  {cid:<8} {d['behavior']}/{d['behaviorClose']}: {d['description']}")
        print(f"          {'':<8} -> {d['result']}")
    if verdict["missing"]:
        print(f"  MISSING ({len(verdict['missing'])}): {' '.join(verdict['missing'])}")
    for grade in listed:
        graded = (cid for cid, c in cases.items() if grade in (c.get("behavior"), c.get("behaviorClose")))
        ids = sorted(graded, key=case_order)
        if ids:
            print(f"  {grade} ({len(ids)}): {' '.join(ids)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--agent", help="judge only this agent (default: every agent in the report)")
    ap.add_argument("--list", default="", help="comma list of grades whose case ids are printed too")
    ap.add_argument(
        "--accept",
        default=ACCEPTED,
        help=f"comma list of the grades (behavior and behaviorClose) that pass (default {ACCEPTED})",
    )
    args = ap.parse_args()

    try:
        index = json.loads((args.outdir / "index.json").read_text())
    except (OSError, ValueError) as exc:
        print(f"summarize: no readable report in {args.outdir}: {exc}", file=sys.stderr)
        return 2
    planned = planned_cases(args.outdir / "wstest.log")
    agents = [args.agent] if args.agent else sorted(index)
    listed = [g.strip().upper() for g in args.list.split(",") if g.strip()]
    accepted = {g.strip().upper() for g in args.accept.split(",") if g.strip()}

    verdicts = {}
    for agent in agents:
        cases = index.get(agent, {})
        verdicts[agent] = judge(args.outdir, cases, planned, accepted)
        show(agent, verdicts[agent], cases, listed)
    (args.outdir / "summary.json").write_text(json.dumps(verdicts, indent=2) + "\n")

    bad = any(v["rejected"] or v["missing"] or not v["cases"] for v in verdicts.values())
    grades = " or ".join(sorted(accepted, key=lambda g: (g not in GRADES, GRADES.index(g) if g in GRADES else 0, g)))
    if bad:
        print(f"verdict: FAIL (a case is missing, or graded other than {grades})")
    else:
        print(f"verdict: PASS (every case graded {grades}, none missing)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
