"""A hub under load, for bench/concurrency.py and bench/faults.py: N processes x M threads, each
running hub requests as kojixmlrpc does (koji's PluginTracker loads the plugin, koji.plugin
run_callbacks fires the recorded post* events, preCommit, COMMIT, postCommit) on a real
PostgreSQL connection of its own, 1-10 messages per request.

Each request writes a ledger row (its message ids) in the hub's own transaction, so what was
committed is known exactly; a consumer (pika, in the parent) records what arrived and when.
Everything lives in a private schema of the `test` database and a private exchange and queue,
all removed at the end.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import koji  # noqa: E402
import koji.plugin  # noqa: E402
import pika  # noqa: E402
import psycopg2  # noqa: E402
from koji.context import context  # noqa: E402

from devkit.hubdb import DBWrapper  # noqa: E402
from devkit.recorded import entries  # noqa: E402
from koji_messagebus import plugin as mb_plugin  # noqa: E402
from koji_messagebus.format.messages import CALLBACK_TYPES  # noqa: E402
from koji_messagebus.runtime import Runtime  # noqa: E402
from koji_messagebus.testing import load_plugin  # noqa: E402
from koji_messagebus.transaction import outbox  # noqa: E402

#: per-thread profile counters, reset by each request (see instrument())
PROFILE = threading.local()
DSN_BASE = os.environ.get("KMB_BENCH_DSN", "dbname=test host=127.0.0.1 user=postgres")
perf = time.perf_counter


def run_context() -> str:
    """When and where a run happened, for the results."""
    import datetime
    import platform
    import subprocess

    tree = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"{when}, tree {tree}; {os.cpu_count()} CPUs, Python {platform.python_version()}, RabbitMQ 3.10 and "
            "PostgreSQL on loopback")


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def stats_ms(values: list[float]) -> tuple[float, float, float]:
    """(median, p99, max) in milliseconds."""
    if not values:
        return (0.0, 0.0, 0.0)
    return (statistics.median(values) * 1000, pct(values, 99) * 1000, max(values) * 1000)


@dataclass
class Setup:
    """Where a load runs: the schema, exchange and config files."""

    schema: str
    exchange: str
    queue: str
    dir: str
    dsn: str
    base: str = DSN_BASE

    @classmethod
    def create(cls, base: str = DSN_BASE) -> Setup:
        tag = uuid.uuid4().hex[:8]
        schema = f"kmb_load_{tag}"
        dsn = f"{base} options='-c search_path={schema}'"
        setup = cls(schema, f"kmb.load.{tag}", f"kmb.load.{tag}.q", tempfile.mkdtemp(prefix="kmb-load-"), dsn, base)
        cnx = psycopg2.connect(base)
        cur = cnx.cursor()
        cur.execute(f"CREATE SCHEMA {schema}")
        cur.execute(f"SET search_path = {schema}")
        cur.execute(outbox.SCHEMA)
        cur.execute("CREATE TABLE ledger (id BIGSERIAL PRIMARY KEY, msg_ids TEXT[] NOT NULL)")
        cnx.commit()
        cnx.close()
        ch = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")).channel()
        ch.exchange_declare(setup.exchange, "topic", durable=False, auto_delete=False)
        ch.queue_declare(setup.queue, auto_delete=False, arguments={"x-max-length": 2_000_000})
        ch.queue_bind(setup.queue, setup.exchange, "#")
        ch.connection.close()
        Path(setup.dir, "hub.conf").write_text(f'[hub]\nDBConnectionString = {dsn}\n')
        return setup

    def config(self, port: int, outbox_on: bool, name: str = "messagebus.conf", **broker: Any) -> str:
        values = {"host": "127.0.0.1", "port": port, "auth": "PLAIN", "username": "guest", "password": "guest",
                  "timeout": 2, "connect_timeout": 2, "retry_interval": 5, "heartbeat": 10, **broker}
        text = "[broker]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
        text += f"[exchange]\nname = {self.exchange}\ntype = topic\n[topic]\nprefix = koji.event\n"
        text += f"[outbox]\nenabled = {str(outbox_on).lower()}\nhub_config = {self.dir}/hub.conf\n"
        path = Path(self.dir, name)
        path.write_text(text)
        path.chmod(0o600)
        return str(path)

    def sql(self, query: str) -> list[tuple]:
        cnx = psycopg2.connect(self.dsn)
        try:
            cur = cnx.cursor()
            cur.execute(query)
            rows = cur.fetchall() if cur.description else []
            cnx.commit()
            return rows
        finally:
            cnx.close()

    def reset(self) -> None:
        """Empty the ledger, the outbox and the queue between runs."""
        self.sql(f"TRUNCATE ledger, {outbox.TABLE}")
        ch = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")).channel()
        ch.queue_purge(self.queue)
        ch.connection.close()

    def drop(self) -> None:
        cnx = psycopg2.connect(self.base)
        cnx.cursor().execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")
        cnx.commit()
        cnx.close()
        try:
            ch = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")).channel()
            ch.queue_delete(self.queue)
            ch.exchange_delete(self.exchange)
            ch.connection.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


class Arrivals:
    """A consumer thread (pika) recording each message id's arrival times, from now on."""

    def __init__(self, queue: str):
        self.queue = queue
        self.times: dict[str, list[float]] = {}
        self.count = 0
        self._stop = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", heartbeat=30))
        ch = conn.channel()
        ch.basic_qos(prefetch_count=2000)

        def on_message(ch_, method, props, body):
            # the message-id is the AMQP 1.0 message's (RabbitMQ maps it); no decoding, no acks: this
            # consumer must keep up with a storm of resends, or its lag would pass for the sender's
            now = time.time()
            msg_id = props.message_id or f"foreign-{method.delivery_tag}"
            with self._lock:
                self.times.setdefault(msg_id, []).append(now)
                self.count += 1

        ch.basic_consume(self.queue, on_message, auto_ack=True)
        while not self._stop:
            conn.process_data_events(time_limit=0.1)
        conn.close()

    def wait_for(self, ids: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if ids.issubset(self.times.keys()):
                    return True
            time.sleep(0.1)
        return False

    def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty and nothing arrived for a second (False on timeout)."""
        deadline = time.monotonic() + timeout
        conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1"))
        try:
            ch = conn.channel()
            seen, quiet_since = -1, time.monotonic()
            while time.monotonic() < deadline:
                ready = ch.queue_declare(self.queue, passive=True).method.message_count
                with self._lock:
                    count = self.count
                if count != seen:
                    seen, quiet_since = count, time.monotonic()
                elif not ready and time.monotonic() - quiet_since >= 1.0:
                    return True
                time.sleep(0.2)
            return False
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop = True
        self._thread.join(5)


def all_events() -> list[tuple[str, dict]]:
    """Every recorded post* event (callback type, kwargs)."""
    found = []
    for cbtype in CALLBACK_TYPES:
        for entry in entries(cbtype):
            found.append((cbtype, entry["kwargs"]))
    return found


@dataclass
class Req:
    """One request's figures (seconds; `start` is wall-clock time.time())."""

    start: float
    total: float
    plugin: float  # post* + preCommit + postCommit
    post: float  # preCommit + postCommit
    cpu: float  # the thread's CPU time in the plugin
    ids: list[str] = field(default_factory=list)
    lock_wait: float = 0.0  # always 0 (the one-lock design is gone; the column stays for old result files)
    in_send: float = 0.0  # waiting on the ticket


@dataclass
class ProcReport:
    """What one hub process reports at its end."""

    pid: int
    reqs: list[Req]
    #: (wall time, VmRSS in MiB) every RSS_EVERY s while it ran, and a last one at its end
    rss: list[tuple[float, float]] = field(default_factory=list)
    connects: int = 0  # the sender's connections (1 = never lost one)
    idle: bool = True  # at its end the sender held nothing and the outbox was empty
    given_up: int = 0  # messages its sender logged as lost (a poison message, a full max_pending)


@dataclass
class Collected:
    """Every report collect_load() got (a killed process sends none)."""

    reports: list[ProcReport]

    @property
    def reqs(self) -> list[Req]:
        return [r for rep in self.reports for r in rep.reqs]


RSS_EVERY = 0.25  # seconds between a hub process's RSS samples


def rss_mib(pid: int | str = "self") -> float:
    """VmRSS of a process, MiB (/proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _sample_rss(out: list[tuple[float, float]], stop: threading.Event) -> None:
    while not stop.wait(RSS_EVERY):
        out.append((time.time(), rss_mib()))


@dataclass
class Load:
    procs: int = 4
    threads: int = 4
    requests: int = 100  # per thread
    think: float = 0.05  # seconds between a thread's requests
    seconds: float = 0.0  # >0: run for this long instead of `requests` (fault runs)
    design: str = "thread"  # "thread" (the plugin) or "bare" (a warm connection per thread, no plugin)
    linger: float = 30.0  # seconds a process lives on after its requests (its sender and drainer finish)
    conf: str = ""
    dsn: str = ""
    seed: int = 1


def instrument(rt: Runtime) -> None:
    """Profile counter: the request thread's wait on its ticket."""
    from koji_messagebus.delivery import ticket

    wait = ticket.Ticket.wait

    def timed_wait(self: Any, *args: Any, **kws: Any) -> Any:
        t0 = perf()
        try:
            return wait(self, *args, **kws)
        finally:
            PROFILE.in_send = getattr(PROFILE, "in_send", 0.0) + perf() - t0

    ticket.Ticket.wait = timed_wait  # type: ignore[method-assign]


def _bare_thread(load: Load, index: int, out: list[Req], stop: threading.Event) -> None:
    """The same messages on a warm connection of the thread's own: no plugin, no database."""
    from koji_messagebus.amqp import AmqpConnection
    from koji_messagebus.config.settings import load_config
    from koji_messagebus.format.messages import format_event
    from koji_messagebus.format.wire import encode

    rng = random.Random(load.seed * 1000 + index)
    cfg = load_config(load.conf)
    events = [encode(format_event(CALLBACK_TYPES[cb], kw, "koji.event")) for cb, kw in all_events()]
    conn = AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
    conn.open(time.monotonic() + 5)
    for _ in range(load.requests):
        batch = [events[rng.randrange(len(events))] for _ in range(rng.randint(1, 10))]
        start_wall, t0, c0 = time.time(), perf(), time.thread_time()
        outcome = conn.send(batch, time.monotonic() + 5)
        dt = perf() - t0
        if outcome.error:
            raise outcome.error
        out.append(Req(start_wall, dt, dt, dt, time.thread_time() - c0, [m.msg_id for m in batch]))
        if load.think:
            time.sleep(load.think * rng.uniform(0.5, 1.5))
    conn.close()


def _hub_thread(load: Load, index: int, out: list[Req], stop: threading.Event) -> None:
    if load.design == "bare":
        _bare_thread(load, index, out, stop)
        return
    rng = random.Random(load.seed * 1000 + index)
    events = all_events()
    raw = psycopg2.connect(load.dsn)
    raw.set_client_encoding("UTF8")
    timed = {"plugin": 0.0, "post": 0.0, "cpu": 0.0}
    run = koji.plugin.run_callbacks

    def callbacks(cbtype: str, **kws: Any) -> None:
        t0, c0 = perf(), time.thread_time()
        try:
            run(cbtype, **kws)
        finally:
            dt = perf() - t0
            timed["plugin"] += dt
            timed["cpu"] += time.thread_time() - c0
            if cbtype in ("preCommit", "postCommit"):
                timed["post"] += dt

    until = time.monotonic() + load.seconds if load.seconds else None
    done = 0
    while not stop.is_set():
        if until is None and done >= load.requests:
            break
        if until is not None and time.monotonic() >= until:
            break
        done += 1
        chosen = [events[rng.randrange(len(events))] for _ in range(rng.randint(1, 10))]
        timed.update(plugin=0.0, post=0.0, cpu=0.0)
        PROFILE.lock_wait = PROFILE.in_send = 0.0
        start_wall, t0 = time.time(), perf()
        ids: list[str] = []
        try:
            # kojixmlrpc: a per-thread connection reused; a raw BEGIN + rollback() resets it
            raw.cursor().execute("BEGIN")
            raw.rollback()
            context._threadclear()
            context.method = "bench"
            context.commit_pending = False
            context.cnx = DBWrapper(raw)
            cur = context.cnx.cursor()
            for cbtype, kwargs in chosen:
                callbacks(cbtype, **kwargs)
            batch = getattr(context, "messagebus_batch", None)
            ids = [m.msg_id for m in batch.messages] if batch else []
            cur.execute("INSERT INTO ledger (msg_ids) VALUES (string_to_array(%(ids)s, ','))", {"ids": ",".join(ids)})
            callbacks("preCommit")
            context.cnx.commit()
            callbacks("postCommit")
        except psycopg2.Error as exc:
            # the database went away (a fault run): this request did not commit
            print(f"hub request failed: {str(exc).strip()}", file=sys.stderr)
            ids = []
            try:
                raw.close()
            except Exception:  # noqa: BLE001
                pass
            time.sleep(0.2)
            try:
                raw = psycopg2.connect(load.dsn)
            except psycopg2.Error:
                continue
            continue
        finally:
            try:
                if context.cnx is not None:
                    context.cnx.close()
            except Exception:  # noqa: BLE001
                pass
            context._threadclear()
        out.append(Req(start_wall, perf() - t0, timed["plugin"], timed["post"], timed["cpu"], ids,
                       PROFILE.lock_wait, PROFILE.in_send))
        if load.think:
            time.sleep(load.think * rng.uniform(0.5, 1.5))
    raw.close()


def hub_process(load: Load, index: int, results: Any) -> None:
    """One hub process: the plugin loaded as the hub loads it, `threads` request threads."""
    os.environ["KOJI_MESSAGEBUS_CONFIG"] = load.conf
    import logging

    logging.basicConfig(filename=os.path.join(os.path.dirname(load.conf), f"hub-{os.getpid()}.log"),
                        level=logging.WARNING, format="%(asctime)s %(threadName)s %(levelname)s %(message)s")
    load_plugin()
    rt = Runtime()
    mb_plugin.reset(rt)
    instrument(rt)
    rss: list[tuple[float, float]] = [(time.time(), rss_mib())]
    sampling = threading.Event()
    threading.Thread(target=_sample_rss, args=(rss, sampling), name="rss", daemon=True).start()
    stop = threading.Event()
    outs: list[list[Req]] = [[] for _ in range(load.threads)]
    threads = [threading.Thread(target=_hub_thread, args=(load, index * 100 + i, outs[i], stop))
               for i in range(load.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    rt = mb_plugin.runtime()
    idle, connects, given_up = True, 0, 0
    if rt.delivery is not None:  # a hub process lives on: let its sender and drainer finish their work
        idle = rt.delivery.sender.wait_idle(load.linger)
        if rt.delivery.drainer is not None:
            deadline = time.monotonic() + load.linger
            cnx = psycopg2.connect(load.dsn)
            left = 1
            while time.monotonic() < deadline:
                cur = cnx.cursor()
                cur.execute(f"SELECT count(*) FROM {outbox.TABLE}")
                left = cur.fetchone()[0]
                cnx.rollback()
                if not left and not rt.delivery.sender.settled_rows:
                    break
                time.sleep(0.5)
            cnx.close()
            idle = idle and not left
        connects, given_up = rt.delivery.sender.connects, rt.delivery.sender.lost
    sampling.set()
    rss.append((time.time(), rss_mib()))
    results.put(ProcReport(os.getpid(), [r for out in outs for r in out], rss, connects, idle, given_up))
    mb_plugin.reset(None)


def start_load(load: Load) -> tuple[list[mp.Process], Any]:
    """Start the hub processes (fork); collect their figures with collect_load()."""
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=hub_process, args=(load, i, results)) for i in range(load.procs)]
    for p in procs:
        p.start()
    return procs, results


def collect_load(load: Load, procs: list[mp.Process], results: Any, timeout: float) -> Collected:
    """The reports of every process still alive (a killed one sends none), within `timeout`."""
    reports: list[ProcReport] = []
    deadline = time.monotonic() + timeout
    expected = sum(1 for p in procs if p.exitcode in (None, 0))
    for _ in range(expected):
        try:
            reports.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
        except Exception:  # noqa: BLE001 - queue.Empty: a process died without reporting
            break
    for p in procs:
        p.join(max(0.1, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
    return Collected(reports)


def run_load(load: Load) -> tuple[list[Req], list[mp.Process]]:
    """Start the processes; returns when all are done."""
    procs, results = start_load(load)
    got = collect_load(load, procs, results, load.requests * (load.think + 5) * 2 + load.seconds + 120)
    return got.reqs, procs
