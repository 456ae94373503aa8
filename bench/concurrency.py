"""A hub under concurrent load: the plugin's time per request with the sender thread, next to a
bare warm sender, on loopback and through a latency proxy.

    .venv/bin/python bench/concurrency.py              # 4 x 4, loopback and 15 ms each way
    .venv/bin/python bench/concurrency.py --quick      # a smoke test of the script
    .venv/bin/python bench/concurrency.py --procs 2 --threads 8 --latency 0 --designs thread,bare

For every (latency, outbox, design): N processes x M threads (devkit/load.py) run `--requests`
requests each (1-10 recorded post* events, `--think` seconds apart on each thread), and the same
design alone on one thread for reference.  Printed (milliseconds): the plugin's time per request
(post* callbacks + preCommit + postCommit: median, p99, max), the after-post* part, where it
went (thread CPU in the plugin; the wait on its own settlements) and what arrived.  Needs the local RabbitMQ (5672)
and PostgreSQL (the `test` database); not part of the test suite.  Bounded: each run ends after
its requests, the whole script within a few minutes.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.sections import update
from devkit.faultproxy import FaultProxy
from devkit.load import Arrivals, Load, Req, Setup, run_context, run_load, stats_ms


def proxy_process(delay: float, conn) -> None:
    """A latency proxy in a process of its own (its thread must not share a GIL with the hubs)."""
    with FaultProxy(("127.0.0.1", 5672), delay=delay) as proxy:
        conn.send(proxy.port)
        conn.recv()  # until the parent says stop


def start_proxy(delay: float) -> tuple[int, mp.Process, object]:
    ctx = mp.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=proxy_process, args=(delay, child), daemon=True)
    proc.start()
    return parent.recv(), proc, parent


def summarize(reqs: list[Req]) -> dict[str, float]:
    plugin = stats_ms([r.plugin for r in reqs])
    post = stats_ms([r.post for r in reqs])
    return {
        "n": len(reqs),
        "plugin_med": plugin[0], "plugin_p99": plugin[1], "plugin_max": plugin[2],
        "post_med": post[0], "post_p99": post[1], "post_max": post[2],
        "cpu_med": statistics.median([r.cpu for r in reqs]) * 1000 if reqs else 0.0,
        "lock_med": statistics.median([r.lock_wait for r in reqs]) * 1000 if reqs else 0.0,
        "send_med": statistics.median([r.in_send for r in reqs]) * 1000 if reqs else 0.0,
        "total_med": statistics.median([r.total for r in reqs]) * 1000 if reqs else 0.0,
    }


def one(setup: Setup, port: int, outbox_on: bool, design: str, procs: int, threads: int, requests: int,
        think: float) -> tuple[dict[str, float], str]:
    setup.reset()
    conf = setup.config(port, outbox_on)
    arrivals = Arrivals(setup.queue)
    start = time.monotonic()
    reqs, _ = run_load(Load(procs, threads, requests, think, design=design, conf=conf, dsn=setup.dsn))
    seconds = time.monotonic() - start
    ids = {i for r in reqs for i in r.ids}
    delivered = ""
    if design != "bare":
        arrivals.wait_for(ids, 30)
        got = set(arrivals.times) & ids
        dups = sum(len(v) - 1 for k, v in arrivals.times.items() if k in ids)
        left = setup.sql("SELECT count(*) FROM messagebus_outbox")[0][0]
        delivered = f"{len(got)}/{len(ids)} arrived, {dups} dup, {left} outbox rows left"
    arrivals.stop()
    row = summarize(reqs)
    row["rate"] = len(reqs) / seconds
    return row, delivered


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--requests", type=int, default=150, help="per thread")
    ap.add_argument("--think", type=float, default=0.05, help="seconds between a thread's requests (x0.5-1.5)")
    ap.add_argument("--latency", default="0,15", help="ms each way through the proxy; 0 = direct")
    ap.add_argument("--designs", default="thread,bare")
    ap.add_argument("--outbox", default="off,on")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--write", action="store_true", help="put the table into bench/results.md")
    ap.add_argument("--section", default="concurrency", help="the results.md section to write")
    args = ap.parse_args()
    if args.quick:
        args.requests, args.procs, args.threads = 10, 2, 2
    setup = Setup.create()
    lines = []
    try:
        for latency in [int(x) for x in args.latency.split(",")]:
            port, proc, ctl = (5672, None, None) if latency == 0 else start_proxy(latency / 1000)
            try:
                for outbox_on in [x == "on" for x in args.outbox.split(",")]:
                    for design in args.designs.split(","):
                        if design == "bare" and outbox_on:
                            continue
                        single, _ = one(setup, port, outbox_on, design, 1, 1, max(20, args.requests // 2),
                                        args.think)
                        row, delivered = one(setup, port, outbox_on, design, args.procs, args.threads,
                                             args.requests, args.think)
                        ratio = row["plugin_med"] / single["plugin_med"] if single["plugin_med"] else 0.0
                        line = (f"| {latency} | {'on' if outbox_on else 'off'} | {design} | "
                                f"{single['plugin_med']:.2f} | "
                                f"{row['plugin_med']:.2f} / {row['plugin_p99']:.2f} / {row['plugin_max']:.2f} | "
                                f"{ratio:.1f}x | {row['post_med']:.2f} / {row['post_p99']:.2f} | "
                                f"{row['cpu_med']:.2f} | {row['lock_med']:.2f} | {row['send_med']:.2f} | "
                                f"{row['rate']:.0f} | {delivered} |")
                        print(line, flush=True)
                        lines.append(line)
            finally:
                if proc is not None:
                    ctl.send("stop")
                    proc.join(5)
    finally:
        setup.drop()
    text = "\n".join([
        f"## Concurrency: {args.procs} processes x {args.threads} threads, {args.think * 1000:.0f} ms between a "
        "thread's requests (plugin time per request, ms)",
        "",
        f"{run_context()}; `.venv/bin/python bench/concurrency.py {' '.join(sys.argv[1:])}`.",
        f"{args.requests} requests per thread, {args.think * 1000:.0f} ms (x0.5-1.5) between a thread's requests, "
        "1-10 recorded events per request; the same design on one thread alone for reference. `thread` = the "
        "process's sender thread, `bare` = the same "
        "messages on a warm connection of each thread's own, no plugin, no database.",
        "",
        "| latency each way (ms) | outbox | design | 1 thread alone: plugin median | N x M: plugin median / p99 / "
        "max | median vs 1 thread | preCommit+postCommit median / p99 | thread CPU in plugin, median | lock wait, "
        "median | round trip under the lock / wait on own settlements, median | requests/s | arrived |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *lines,
    ])
    print()
    print(text)
    if args.write:
        update(args.section, text)


if __name__ == "__main__":
    main()
