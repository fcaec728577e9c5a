"""Phase F: SIGINT with frames in flight, every reader gets a clean prefix."""

from __future__ import annotations

import json
import signal
import time

from soaklib.base import SoakBase
from soaklib.procs import Child


class ShutdownPhase(SoakBase):
    """Phase F: SIGINT with frames in flight, every reader gets a clean prefix."""

    def phase_f(self, holders: list[Child], idle_open: int) -> None:
        a = self.args
        assert self.server is not None
        self.log(f"F: SIGINT with {a.flood_readers} flood readers x {a.flood_count} x {a.flood_size} B in flight")
        flood = self.child("flood", {"port": self.port, "count": a.flood_readers, "timeout": 120})
        flood.expect("ready", 60)
        trickle = self.child("trickle", {"port": self.port, "size": a.trickle_size, "rate": a.trickle_rate})
        trickle.expect("ready", 30)
        self.wait_settled(idle_open + a.flood_readers + 1, 10)
        trickled = json.loads(self.get(f"/ctl/flood?count={a.trickle_count}&size={a.trickle_size}&path=/trickle"))
        sent = json.loads(self.get(f"/ctl/flood?count={a.flood_count}&size={a.flood_size}"))
        t0 = time.monotonic()
        self.server.proc.send_signal(signal.SIGINT)
        rc = self.server.wait(60)
        exit_seconds = time.monotonic() - t0
        final = self.server.expect("final", 5) if rc is not None else {}
        result = flood.expect("result", 120)
        flood.wait(10)
        tr = trickle.expect("result", 120)
        trickle.wait(10)
        readers = result["readers"]
        lost = 0
        complete = 0
        in_order = True
        for r in readers:
            queued = sent.get(str(r["id"]), 0)
            lost += max(0, queued - r["received"])
            complete += r["received"] == queued == a.flood_count and r["close_code"] == 1001
            in_order &= r["gaps"] == 0 and r["out_of_order"] == 0 and r["error"] is None
        self.lost["frames queued before the 1001"] = lost
        self.inputs["frames in flight at SIGINT"] = sum(sent.values())
        bound = 2 * a.close_timeout + 3
        self.numbers["shutdown"] = {
            "exit_code": rc,
            "exit_seconds": round(exit_seconds, 2),
            "aclose_seconds": final.get("shutdown_seconds"),
            "open_at_signal": final.get("open_at_signal"),
            "frames_queued": sum(sent.values()),
            "tasks_after": final.get("tasks_after"),
        }
        self.check(
            "F",
            "server exits cleanly after SIGINT",
            f"exit code {rc} in {exit_seconds:.2f}s with {final.get('open_at_signal')} connections open",
            f"0 within {bound:.0f}s",
            rc == 0 and exit_seconds <= bound,
        )
        self.check(
            "F",
            "frames queued before the 1001 all delivered, in order",
            f"{complete}/{len(readers)} readers got all {a.flood_count} then 1001; {lost} lost",
            "all",
            complete == len(readers) == a.flood_readers and lost == 0 and in_order,
        )
        queued = sum(trickled.values())
        self.numbers["trickle"] = {**tr, "queued": queued}
        self.check(
            "F",
            "slow reader given up on at shutdown: clean truncation",
            f"{tr['received']}/{queued} frames in {tr['bytes']:,} B, close {tr['close_code']};"
            f" {tr['problem'] or 'clean'}",
            "a prefix of the queued frames (+ the close frame), no torn frame",
            tr["problem"] is None,
        )
        statuses = []
        for h in holders:
            h.send("status")
            statuses.append(h.expect("status", 30))
            h.send("exit")
            h.expect("done", 30)
            h.wait(10)
        got_1001 = sum(st["close_codes"].get("1001", 0) for st in statuses)
        self.check("F", "idle connections got the 1001", f"{got_1001}/{idle_open}", "all", got_1001 == idle_open)
        if final:
            self.numbers["final"] = {
                k: final[k]
                for k in ("opened", "closed", "close_codes", "raised", "unexpected_errors", "expected_errors")
            }
            self.check(
                "F",
                "on_close == on_open (whole run)",
                f"opened {final['opened_total']}, closed {final['closed_total']}",
                "equal",
                final["opened_total"] == final["closed_total"],
            )
            self.check(
                "F",
                "no task left after shutdown",
                f"{final['tasks_after']} task(s) left (the main task)",
                "1",
                final["tasks_after"] == 1,
            )
            self.check(
                "all",
                "unexpected errors logged by the server",
                f"{final['unexpected_errors']} {final['unexpected_samples'][:1] or ''}",
                "0",
                final["unexpected_errors"] == 0,
            )
        self.server.close()
        self.server = None
