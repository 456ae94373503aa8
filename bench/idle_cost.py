"""What idle hub processes cost the database: N hub processes (devkit/hub_process.py, the plugin
loaded as the hub loads it, the outbox on, the plugin's own connection from hub.conf) each run one
request and then stay idle.  Over an idle window, pg_stat_activity is sampled: the connections of
those processes (application_name set through PGAPPNAME; each also holds the hub's own
connection, not counted) and the statements they start (distinct query_start values seen: a lower bound).

    .venv/bin/python bench/idle_cost.py [--processes 4] [--window 10]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pika  # noqa: E402
import psycopg2  # noqa: E402

from devkit.config import write_config  # noqa: E402
from devkit.hubdb import DSN  # noqa: E402
from koji_messagebus.transaction import outbox  # noqa: E402

SCHEMA = f"kmb_idlecost_{os.getpid()}"



class Counter:
    """A private queue bound to the exchange (pika, RabbitMQ): counts what arrived.  The bench's
    own, so that bench/ does not import tests/."""

    def __init__(self, exchange: str):
        self.conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        self.ch = self.conn.channel()
        self.exchange = exchange
        self.ch.exchange_declare(exchange, "topic", durable=True, auto_delete=False)
        self.queue = self.ch.queue_declare("", exclusive=True).method.queue
        self.ch.queue_bind(self.queue, exchange, "#")

    def count(self, expect: int, timeout: float) -> int:
        got, deadline = 0, time.monotonic() + timeout
        while got < expect and time.monotonic() < deadline:
            method, _, _ = self.ch.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.conn.sleep(0.02)
            else:
                got += 1
        return got

    def close(self) -> None:
        self.ch.exchange_delete(self.exchange)
        self.conn.close()


def admin():
    cnx = psycopg2.connect(DSN)
    cnx.autocommit = True
    return cnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=4)
    ap.add_argument("--window", type=float, default=10.0, help="seconds of idle observation")
    ap.add_argument("--settle", type=float, default=4.0, help="seconds idle before the window")
    args = ap.parse_args()
    app = f"kmb-idle-{uuid.uuid4().hex[:8]}"
    db = admin()
    cur = db.cursor()
    cur.execute(f"CREATE SCHEMA {SCHEMA}; SET search_path = {SCHEMA}")
    cur.execute(outbox.SCHEMA)
    procs = []
    exchange = f"kmb.bench.{uuid.uuid4().hex[:8]}"
    consumer = Counter(exchange)  # declares the exchange, as an operator does
    try:
        with tempfile.TemporaryDirectory() as tmp:
            hub_conf = Path(tmp, "hub.conf")
            hub_conf.write_text(f"[hub]\nDBConnectionString = {DSN} options='-c search_path={SCHEMA}'\n")
            conf = write_config(Path(tmp, "messagebus.conf"), exchange,
                                outbox={"enabled": True, "hub_config": str(hub_conf)})
            stay = args.settle + args.window + 5
            env = dict(os.environ, PGAPPNAME=app, KMB_LOG_LEVEL="WARNING")
            for _ in range(args.processes):
                procs.append(subprocess.Popen([sys.executable, "-m", "devkit.hub_process", conf, SCHEMA, "3",
                                               "1",
                                               f"idle:{stay}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.DEVNULL, text=True))
            for p in procs:
                assert p.stdout is not None and "requests done" in p.stdout.readline()
            time.sleep(args.settle)
            starts: dict[int, set] = {}
            end = time.monotonic() + args.window
            while time.monotonic() < end:
                cur.execute("SELECT pid, query_start FROM pg_stat_activity WHERE application_name = %s", (app,))
                for pid, started in cur.fetchall():
                    starts.setdefault(pid, set()).add(started)
                time.sleep(0.02)
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (app,))
            (backends,) = cur.fetchone()
            delivered = consumer.count(expect=3 * args.processes, timeout=10)
    finally:
        for p in procs:
            p.wait(60)
        cur.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        db.close()
        consumer.close()
    plugin = backends - args.processes
    statements = sum(len(s) - 1 for s in starts.values())
    print(f"{delivered} message(s) delivered; {args.processes} idle hub processes, {args.window:.0f} s window: "
          f"{plugin} plugin connection(s) "
          f"(+{args.processes} hub connections), {statements} statement(s) seen "
          f"= {statements / args.window:.1f}/s in all, {statements / args.window / args.processes:.2f}/s per process")


if __name__ == "__main__":
    main()
