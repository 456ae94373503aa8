"""Where a warm 3-message request's plugin share goes, beside the floor (bench/floor.py's): collect
+ preCommit in the hub's thread, then postCommit split at the hand-off to the sender thread.

    .venv/bin/python bench/handoff.py [--requests 300]

postCommit = to submit (the callback up to SenderThread.submit) + submit (the call itself: ticket,
queue, wake byte; or, on an idle connection, until the request itself puts its first message on the
link) + wake-up (until the sender thread puts the first message on the link; 0 when the request did)
+ broker (until the last settlement: the floor's own work, and on an idle connection the rest of
submit) + back (until the waiting request runs again) +
after (closing the ticket, the status figure, returning).  The phases are taken by wrapping
SenderThread.submit, AmqpPipe.start and Ticket._settled/wait (a rename there fails loudly).
Medians in microseconds; the three measurements rotate (floor.rotated).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import koji.plugin  # noqa: E402
from koji.context import context  # noqa: E402

from bench.floor import rotated, warm_bench  # noqa: E402
from devkit.hubdb import DBWrapper  # noqa: E402
from koji_messagebus.delivery import pipe, sender, ticket  # noqa: E402

perf = time.perf_counter
PHASES = ("collect+pre", "to submit", "submit", "wake-up", "broker", "back", "after", "total")
marks: dict[str, float] = {}


def _hook() -> None:
    submit, start, settled, wait = (sender.SenderThread.submit, pipe.AmqpPipe.start, ticket.Ticket._settled,
                                    ticket.Ticket.wait)

    def timed_submit(self, *args, **kwargs):
        marks["submit"] = perf()
        result = submit(self, *args, **kwargs)
        marks["submitted"] = perf()
        return result

    def timed_start(self, payload):
        marks.setdefault("started", perf())
        return start(self, payload)

    def timed_settled(self, msg, lost):
        settled(self, msg, lost)
        if self._left <= 0:
            marks["settled"] = perf()

    def timed_wait(self, *args, **kwargs):
        result = wait(self, *args, **kwargs)
        marks["woke"] = perf()
        return result

    sender.SenderThread.submit = timed_submit  # type: ignore[method-assign]
    pipe.AmqpPipe.start = timed_start  # type: ignore[method-assign]
    ticket.Ticket._settled = timed_settled  # type: ignore[method-assign]
    ticket.Ticket.wait = timed_wait  # type: ignore[method-assign]


def request(events, raw) -> dict[str, float]:
    """One plain request (with `raw`: the hub's database connection, as bench/run.hub_request)."""
    if raw is not None:
        raw.cursor().execute("BEGIN")
        raw.rollback()
    context._threadclear()
    context.method, context.params, context.commit_pending = "bench", (), True
    context.cnx = DBWrapper(raw) if raw is not None else None
    t0 = perf()
    for cbtype, kwargs in events:
        koji.plugin.run_callbacks(cbtype, **kwargs)
    koji.plugin.run_callbacks("preCommit")
    t1 = perf()
    if raw is not None:
        context.cnx.commit()
    marks.clear()
    t2 = perf()
    koji.plugin.run_callbacks("postCommit")
    t3 = perf()
    if raw is not None:
        context.cnx.close()
    context._threadclear()
    m = marks
    started_here = m["started"] < m["submitted"]  # the request started its messages itself (delivery/leader.py)
    return {"collect+pre": t1 - t0, "to submit": m["submit"] - t2,
            "submit": (m["started"] if started_here else m["submitted"]) - m["submit"],
            "wake-up": 0.0 if started_here else m["started"] - m["submitted"], "broker": m["settled"] - m["started"],
            "back": m["woke"] - m["settled"], "after": t3 - m["woke"], "total": (t1 - t0) + (t3 - t2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    _hook()
    with warm_bench() as bench:
        got = rotated({"floor": lambda: {"total": bench.floor_send()},
                       "with the database": lambda: request(bench.events, bench.raw),
                       "without a database": lambda: request(bench.events, None)}, args.requests)
    base = statistics.median(p["total"] for p in got["floor"])
    print(f"| {args.requests} requests, median us | " + " | ".join(PHASES) + " | vs floor |")
    print("|---" * (len(PHASES) + 2) + "|")
    print(f"| floor | {' | '.join('' for _ in PHASES[:-1])} | {base * 1e6:.0f} | 1.00x |")
    for name in ("with the database", "without a database"):
        rows = got[name]
        cells = [f"{statistics.median(r[p] for r in rows) * 1e6:.0f}" for p in PHASES]
        ratio = statistics.median(r["total"] for r in rows) / base
        print(f"| {name} | {' | '.join(cells)} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
