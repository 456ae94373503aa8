"""What the multicall check (subcalls.py) costs an ordinary single call: per request, the sub-call
mark at the first event (collect) plus the survival check (preCommit; folded into the outbox
store when the outbox is on), measured as A/B against the same code with the marks switched off,
interleaved request by request.  Real PostgreSQL (a private schema of `test`) and RabbitMQ.

    .venv/bin/python bench/multicall_cost.py [--requests 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
import psycopg2  # noqa: E402

from bench.run import hub_request, request_events, write_config  # noqa: E402
from koji_messagebus import plugin as mb_plugin  # noqa: E402
from koji_messagebus.config.settings import load_config  # noqa: E402
from koji_messagebus.runtime import Runtime  # noqa: E402
from koji_messagebus.testing import load_plugin  # noqa: E402
from koji_messagebus.transaction import outbox, subcalls  # noqa: E402

SCHEMA = f"kmb_mccost_{os.getpid()}"
REQUESTS = {1: ("host.completeBuild", 1), 3: ("importRPM src", 3), 10: ("host.completeBuild", 10)}
perf = time.perf_counter


def request(raw, events, marks: bool) -> tuple[float, float]:
    """One hub request (bench/run.py's hub_request), with the sub-call marks on or off."""
    real = subcalls.SubcallMarks.add
    if not marks:
        subcalls.SubcallMarks.add = lambda self, cnx, method, params: real(self, None, method, params)
    try:
        return hub_request(raw, events)
    finally:
        subcalls.SubcallMarks.add = real


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    exchange = f"kmb.mccost.{uuid.uuid4().hex[:8]}"
    amqp = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", 5672))
    ch = amqp.channel()
    ch.exchange_declare(exchange, "topic")
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, exchange, "#")
    admin = psycopg2.connect("dbname=test host=127.0.0.1 user=postgres")
    admin.autocommit = True
    admin.cursor().execute(f"CREATE SCHEMA {SCHEMA}; SET search_path = {SCHEMA}; {outbox.SCHEMA}")
    raw = psycopg2.connect("dbname=test host=127.0.0.1 user=postgres", options=f"-c search_path={SCHEMA}")
    load_plugin()
    print("| messages | outbox | per request, marks on: median (ms) | marks off | added: median (µs) | "
          "preCommit+postCommit on / off (ms) | collect on / off (ms) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for mode in ("direct", "outbox"):
                conf = write_config(Path(tmp) / f"{mode}.conf", outbox_on=mode == "outbox")
                conf_text = Path(conf).read_text().replace("name = kmb.bench", f"name = {exchange}")
                Path(conf).write_text(conf_text)
                mb_plugin.reset(Runtime(config=load_config(conf)))
                for size, (call, count) in REQUESTS.items():
                    events = request_events(call, count)
                    for _ in range(30):
                        request(raw, events, True)
                        request(raw, events, False)
                    on: list[tuple[float, float]] = []
                    off: list[tuple[float, float]] = []
                    for _ in range(args.requests):
                        on.append(request(raw, events, True))
                        off.append(request(raw, events, False))
                    tot_on = statistics.median(c + p for c, p in on)
                    tot_off = statistics.median(c + p for c, p in off)
                    print(f"| {size} | {mode} | {tot_on * 1000:.2f} | {tot_off * 1000:.2f} | "
                          f"{(tot_on - tot_off) * 1e6:.0f} | {statistics.median(p for _, p in on) * 1000:.2f} / "
                          f"{statistics.median(p for _, p in off) * 1000:.2f} | "
                          f"{statistics.median(c for c, _ in on) * 1000:.2f} / "
                          f"{statistics.median(c for c, _ in off) * 1000:.2f} |", flush=True)
                    ch.queue_purge(queue)
    finally:
        mb_plugin.reset(None)
        raw.close()
        admin.cursor().execute(f"DROP SCHEMA {SCHEMA} CASCADE")
        admin.close()
        ch.exchange_delete(exchange)
        amqp.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
