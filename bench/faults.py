"""Faults under load: N processes x M hub threads (devkit/load.py) send through a fault proxy to the
shared RabbitMQ (never stopped: the proxy plays the broker's faults) while a fault is injected,
counting every message against the ledger the hubs write in their own transactions.

    .venv/bin/python bench/faults.py                       # the short faults, outbox on and off
    .venv/bin/python bench/faults.py --faults stop,sigstop --outbox on --fault-seconds 10
    .venv/bin/python bench/faults.py --long                # the broker's return (issue 18), with targets
    .venv/bin/python bench/faults.py --long --faults slow --outbox off
    .venv/bin/python bench/faults.py --quick               # short: a smoke test of the script

Faults (the proxy stands for the broker; PostgreSQL is a private cluster started here):
- stop: the broker stops (it settles what it had taken, closes every connection with a FIN and
  refuses new ones), then starts again;
- kill9: the broker dies (connections reset, new ones refused), then starts again;
- sigstop: the broker is frozen (SIGSTOP: nothing answers, new connections hang), then resumes;
- cut: every connection is reset once, the broker stays up;
- pgrestart: the private PostgreSQL cluster restarts (pg_ctl restart -m fast);
- hubkill: one hub process is killed with SIGKILL mid-run (its unsent rows are the drain's).
The broker's return (`--long` runs these four, after `none`):
- outage30: a refused outage, 30 s (stop, for 30 s);
- silent30: a silent broker, 30 s (sigstop, for 30 s);
- slow: a slow broker: the proxy holds every byte the broker sends (its settlements) 1-2 s, in
  order, nothing dropped, for --fault-seconds;
- rejectq: a full `x-overflow: reject-publish` queue bound for koji.event.Tag.# on the run's
  exchange (RabbitMQ 3.10's AMQP 1.0 session crashes on its refusal), removed after --fault-seconds;
- none: no fault, the same load and windows: the floor the others are read against (what the load
  alone costs a request on this machine).

`--long` also takes the sample config's broker settings (timeout = 10, connect_timeout = 5,
heartbeat = 60, retry_interval = 30, max_pending = 10000), 50 ms between a thread's requests, the
fault 5 s into the run and 15 s of load after it (options given on the command line win).

Printed per run: committed / delivered / lost / duplicates, request latency (the plugin's time:
median, p99, max) during the fault, seconds from the heal to the first delivery of a message
committed after it ("normal delivery") and to the delivery of the whole backlog; then, with the
targets beside them: the plugin's p99 and max for requests started in the 10 s after the heal,
connection losses, and each hub process's RSS (/proc/<pid>/status VmRSS, sampled in the hub
processes) at its end against just before the fault.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sections import update
from devkit.faults import AFTER_WINDOW, FAULTS, RETURN, SHORT, Outcome, PrivatePostgres, Run, run_fault
from devkit.load import run_context

#: --long: the sample config's broker settings and the issue's load, unless given on the command line
LONG = {"timeout": 10.0, "connect_timeout": 5.0, "heartbeat": 60, "retry_interval": 30.0, "max_pending": 10000,
        "think": 0.05, "before": 5.0, "fault_seconds": 20.0, "after": 15.0, "drain_wait": 20.0, "linger": 20.0}
QUICK = {"procs": 2, "threads": 2, "before": 2.0, "fault_seconds": 2.0, "sigstop_seconds": 3.0, "after": 4.0}


def options() -> tuple[argparse.Namespace, Run]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faults", help=f"comma-separated, of: {', '.join(FAULTS)} (default: the short six; "
                    "with --long the four of the broker's return)")
    ap.add_argument("--outbox", default="on,off")
    ap.add_argument("--long", action="store_true", help="the broker's return: see above")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="put the table into bench/results.md")
    ap.add_argument("--section", help="bench/results.md's section to write (default: faults; faults-return "
                    "with --long)")
    for f in dataclasses.fields(Run):
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=None,
                        help=f"default {f.default} ({LONG[f.name]} with --long)" if f.name in LONG
                        else f"default {f.default}")
    args = ap.parse_args()
    chosen = {**(LONG if args.long else {}), **(QUICK if args.quick else {})}
    chosen.update({f.name: getattr(args, f.name) for f in dataclasses.fields(Run)
                   if getattr(args, f.name) is not None})
    if args.faults is None:
        args.faults = ",".join(RETURN if args.long else SHORT)
    unknown = set(args.faults.split(",")) - set(FAULTS)
    if unknown:
        ap.error(f"unknown fault(s): {', '.join(sorted(unknown))}")
    return args, Run(**chosen)


def floor_lines(outcomes: list[Outcome]) -> list[str]:
    """What each fault adds to the p99 after the return over the no-fault run (`none`) of the same outbox
    setting: the load alone sets that floor on this machine."""
    floors = {o.outbox: o.after for o in outcomes if o.fault == "none"}
    added = [f"{o.fault} {'on' if o.outbox else 'off'} {o.after[1] - floors[o.outbox][1]:+.1f}"
             for o in outcomes if o.fault != "none" and o.outbox in floors]
    if not added:
        return []
    floor = "; ".join(f"outbox {'on' if ob else 'off'} {after[1]:.1f} / {after[2]:.1f}" for ob, after in floors.items())
    return ["", f"The floor (`none`: the same load, no fault), p99 / max ms of the requests in the same 10 s window: "
            f"{floor}. Added to that p99 by the fault (ms): {', '.join(added)}."]


def main() -> None:
    args, run = options()
    faults = args.faults.split(",")
    pg = PrivatePostgres() if "pgrestart" in faults else None
    outcomes: list[Outcome] = []
    try:
        for outbox_on in [x == "on" for x in args.outbox.split(",")]:
            for fault in faults:
                out = run_fault(fault, outbox_on, run, pg if fault == "pgrestart" else None)
                print(out.row(), flush=True)
                print(out.target_row(), flush=True)
                print(f"# CPU in the {AFTER_WINDOW:g} s after the return (cores): {out.cpu_line()}", flush=True)
                outcomes.append(out)
    finally:
        if pg is not None:
            pg.stop()
    lengths = ", ".join(f"{name} {run.length(FAULTS[name]):g} s" for name in faults)
    text = "\n".join([
        f"## Faults under load{': the broker returns' if args.long else ''}: {run.procs} processes x "
        f"{run.threads} threads",
        "",
        f"{run_context()}; `.venv/bin/python bench/faults.py {' '.join(sys.argv[1:])}`.",
        f"{run.think * 1000:.0f} ms (x0.5-1.5) between a thread's requests, 1-10 events each; timeout = "
        f"{run.timeout:g} s, connect_timeout = {run.connect_timeout:g} s, heartbeat = {run.heartbeat}, "
        f"retry_interval = {run.retry_interval:g} s, max_pending = {run.max_pending}; the fault {run.before:g} s "
        f"into the run ({lengths}), then {run.after:g} s more. The broker's faults are played by the fault proxy "
        "in front of the shared RabbitMQ; PostgreSQL restarts are of a private cluster. Latency = the plugin's "
        "time per request started during the fault (5 s after it for cut, pgrestart, hubkill). Normal delivery = "
        "the first message committed after the heal arriving; backlog = the last message committed before it "
        "arriving. Committed = the hubs' own ledger; duplicates are resends of messages the broker had already "
        f"taken (at-least-once); lost = committed and not arrived {run.drain_wait:g} s after the load ended.",
        "",
        "| fault | outbox | committed | delivered | lost | duplicates | plugin time during the fault: median / p99 / "
        "max (ms) | heal to normal delivery (s) | heal to backlog delivered (s) | requests |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[o.row() for o in outcomes],
        "",
        "Against issue 18's targets. Connection losses = the hub processes' sender reconnections; the duplicates "
        "target is 0 after a refused outage (the broker took nothing it did not settle), otherwise the sender's "
        "in-flight bound per connection loss. RSS = VmRSS of each hub process at its end (its sender and outbox "
        "emptied, or `linger` over: 'not emptied') minus its last sample before the fault; peak = its highest "
        "after the fault.",
        "",
        Outcome.TARGET_HEADER,
        *[o.target_row() for o in outcomes],
        *floor_lines(outcomes),
        "",
        f"Where the CPU went in the {AFTER_WINDOW:g} s after the return (cores used on average, devkit/cpusplit.py; "
        "the harness is the ledger's consumer and the fault proxy):",
        "",
        *[f"- {o.cpu_line()}" for o in outcomes],
    ])
    print()
    print(text)
    if args.write:
        update(args.section or ("faults-return" if args.long else "faults"), text)


if __name__ == "__main__":
    main()
