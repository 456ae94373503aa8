"""The plugin's whole share of a warm 3-message request beside the floor: proton's engine sending
the same 3 messages pipelined on a warm link of its own (no hub, no plugin, no database),
interleaved request by request (the order rotated), with and without the hub's database connection.

    .venv/bin/python bench/floor.py [--requests 300] [--call "importRPM src"] [--events 3]

Plugin share = post* callbacks + preCommit + postCommit (the outbox off: the direct path).
Needs the local RabbitMQ (5672) and PostgreSQL; prints medians (ms) and the ratios to the floor.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import koji.plugin  # noqa: E402
import pika  # noqa: E402
from koji.context import context  # noqa: E402

from bench.run import DB_NAME, EXCHANGE, db_connect, encoded, hub_request, request_events, use_runtime, write_config  # noqa: E402
from koji_messagebus import plugin as mb_plugin  # noqa: E402
from koji_messagebus.amqp import AmqpConnection  # noqa: E402
from koji_messagebus.config.settings import load_config  # noqa: E402
from koji_messagebus.testing import load_plugin  # noqa: E402

perf = time.perf_counter
T = TypeVar("T")


def request_without_db(events) -> float:
    """The same request with no database connection in the context: post* + preCommit + postCommit."""
    context._threadclear()
    context.method, context.params, context.commit_pending = "bench", (), True
    t0 = perf()
    for cbtype, kwargs in events:
        koji.plugin.run_callbacks(cbtype, **kwargs)
    koji.plugin.run_callbacks("preCommit")
    koji.plugin.run_callbacks("postCommit")
    dt = perf() - t0
    context._threadclear()
    return dt


@dataclass
class Bench:
    """The plugin loaded on a direct-path config, the hub's database connection, and the floor."""

    events: list
    raw: Any
    floor_send: Callable[[], float]


@contextlib.contextmanager
def warm_bench(call: str = "importRPM src", count: int = 3) -> Iterator[Bench]:
    """Set up what floor.py and handoff.py measure, and take it down again."""
    ch = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")).channel()
    ch.exchange_declare(EXCHANGE, "topic")
    events = request_events(call, count)
    with tempfile.TemporaryDirectory() as tmp:
        conf = write_config(Path(tmp) / "direct.conf")
        load_plugin()
        use_runtime(conf)
        raw = db_connect(DB_NAME)
        cfg = load_config(conf)
        floor_conn = AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
        floor_conn.open(time.monotonic() + 5)
        batch = encoded(events)

        def floor_send() -> float:
            t0 = perf()
            outcome = floor_conn.send(batch, time.monotonic() + 5)
            if outcome.error:
                raise outcome.error
            return perf() - t0

        try:
            yield Bench(events, raw, floor_send)
        finally:
            floor_conn.close()
            raw.close()
            mb_plugin.reset(None)


def rotated(runs: dict[str, Callable[[], T]], requests: int, warmup: int = 20) -> dict[str, list[T]]:
    """Each of `runs` once per request, interleaved, the order rotated: whatever runs right after a send
    finds the broker still busy with it (its schedulers spin on) and pays 20-90 us more; a fixed order
    gave that to "with the database" every time, and with it most of the gap between the two."""
    got: dict[str, list[T]] = {name: [] for name in runs}
    order = list(runs)
    for i in range(requests + warmup):
        for name in order[i % len(order):] + order[:i % len(order)]:
            value = runs[name]()
            if i >= warmup:
                got[name].append(value)
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--call", default="importRPM src")
    parser.add_argument("--events", type=int, default=3)
    args = parser.parse_args()
    with warm_bench(args.call, args.events) as bench:
        def with_db_request() -> float:
            c, p = hub_request(bench.raw, bench.events)
            return c + p

        times = rotated({"floor": bench.floor_send, "with_db": with_db_request,
                         "without_db": lambda: request_without_db(bench.events)}, args.requests)
    f, d, n = (statistics.median(times[x]) * 1000 for x in ("floor", "with_db", "without_db"))
    print(f"| {args.events}-message request, warm, {args.requests} interleaved | median ms | vs floor |")
    print("|---|---:|---:|")
    print(f"| floor: proton's engine, the same messages pipelined on a warm link | {f:.3f} | 1.00x |")
    print(f"| plugin share, with the hub's database connection | {d:.3f} | {d / f:.2f}x |")
    print(f"| plugin share, without a database connection | {n:.3f} | {n / f:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
