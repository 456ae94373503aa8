"""Faults under load: N processes x M hub threads (devkit/load.py) send through a fault proxy to the
shared RabbitMQ (never stopped: the proxy plays the broker's faults) while a fault is injected,
counting every message against the ledger the hubs write in their own transactions.

    .venv/bin/python bench/faults.py                       # every fault, outbox on and off
    .venv/bin/python bench/faults.py --faults stop,sigstop --outbox on --fault-seconds 10
    .venv/bin/python bench/faults.py --quick               # short: a smoke test of the script

Faults (the proxy stands for the broker; PostgreSQL is a private cluster started here):
- stop: the broker stops (connections closed with a FIN, new ones refused), then starts again;
- kill9: the broker dies (connections reset, new ones refused), then starts again;
- sigstop: the broker is frozen (SIGSTOP: nothing answers, new connections hang), then resumes;
- cut: every connection is reset once, the broker stays up;
- pgrestart: the private PostgreSQL cluster restarts (pg_ctl restart -m fast);
- hubkill: one hub process is killed with SIGKILL mid-run (its unsent rows are the drain's).

Printed per run: committed / delivered / lost / duplicates, request latency (the plugin's time:
median, p99, max) during the fault, seconds from the heal to the first delivery of a message
committed after it ("normal delivery") and to the delivery of the whole backlog.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sections import update
from devkit.faults import FAULTS, PrivatePostgres, run_fault
from devkit.load import run_context


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", default=",".join(FAULTS))
    ap.add_argument("--outbox", default="on,off")
    ap.add_argument("--design", default="thread", choices=["thread"])
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--think", type=float, default=0.2)
    ap.add_argument("--before", type=float, default=4.0)
    ap.add_argument("--fault-seconds", type=float, default=5.0)
    ap.add_argument("--sigstop-seconds", type=float, default=10.0)
    ap.add_argument("--after", type=float, default=8.0)
    ap.add_argument("--timeout", type=float, default=2.0)
    ap.add_argument("--connect-timeout", type=float, default=5.0)
    ap.add_argument("--retry-interval", type=float, default=30.0)
    ap.add_argument("--heartbeat", type=int, default=10)
    ap.add_argument("--max-pending", type=int, default=100000)
    ap.add_argument("--drain-wait", type=float, default=40.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="put the table into bench/results.md")
    args = ap.parse_args()
    if args.quick:
        args.procs, args.threads, args.before, args.fault_seconds, args.sigstop_seconds, args.after = 2, 2, 2, 2, 3, 4
    faults = args.faults.split(",")
    pg = PrivatePostgres() if "pgrestart" in faults else None
    rows = []
    try:
        for outbox_on in [x == "on" for x in args.outbox.split(",")]:
            for fault in faults:
                out = run_fault(fault, outbox_on, args, pg if fault == "pgrestart" else None)
                print(out.row(), flush=True)
                rows.append(out.row())
    finally:
        if pg is not None:
            pg.stop()
    text = "\n".join([
        f"## Faults under load: {args.design} design, {args.procs} processes x {args.threads} threads",
        "",
        f"{run_context()}; `.venv/bin/python bench/faults.py {' '.join(sys.argv[1:])}`.",
        f"{args.think * 1000:.0f} ms (x0.5-1.5) between a thread's requests, 1-10 events each; timeout = "
        f"{args.timeout:g} s, connect_timeout = {args.connect_timeout:g} s, retry_interval = "
        f"{args.retry_interval:g} s; the fault {args.before:g} s into the run, for {args.fault_seconds:g} s "
        f"(sigstop {args.sigstop_seconds:g} s), then {args.after:g} s more. The broker's faults are played by the "
        "fault proxy in front of the shared RabbitMQ; PostgreSQL restarts are of a private cluster. Latency = the "
        "plugin's time per request started during the fault (5 s after it for cut, pgrestart, hubkill). Normal "
        "delivery = the first message committed after the heal arriving; backlog = the last message committed "
        "before it arriving. Committed = the hubs' own ledger; duplicates are resends of messages the broker "
        "had already taken (at-least-once).",
        "",
        "| fault | outbox | committed | delivered | lost | duplicates | plugin time during the fault: median / p99 / "
        "max (ms) | heal to normal delivery (s) | heal to backlog delivered (s) | requests |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])
    print()
    print(text)
    if args.write:
        update("faults", text)


if __name__ == "__main__":
    main()
