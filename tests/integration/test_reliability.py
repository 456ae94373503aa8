"""Reliability under faults (more under load in test_sender_faults.py and test_drainer.py): the plugin loaded as the hub
loads it, the real RabbitMQ behind a fault-injecting proxy (devkit/faultproxy.py), the real
PostgreSQL, what arrived checked with pika.

The outbox lives in a private schema of the `test` database (search_path), one per pytest process
and dropped at its end, so these tests never touch another run's `messagebus_outbox`.  Figures of
the fault tests are printed (`-s`) and written to /tmp/koji-messagebus-reliability.json.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import koji.plugin
import pytest

from devkit.config import until, write_config
from devkit.faultproxy import FaultProxy
from devkit.recorded import entries
from koji_messagebus import plugin as mb_plugin
from koji_messagebus import runtime as mb_runtime
from koji_messagebus.cli import outbox as outbox_cli
from koji_messagebus.cli.command_sender import CommandSender
from koji_messagebus.config.settings import load_config
from koji_messagebus.delivery.ticket import Hold
from koji_messagebus.runtime import Runtime
from koji_messagebus.transaction import outbox
from tests.support.hub import DSN, DBWrapper, Hub, load_plugin, unload_plugin
from tests.support.outbox_db import SCHEMA, connect_db, sql
from tests.support.pika_consumer import Consumer, Received

pytestmark = pytest.mark.integration

ROLE = f"kmb_reliability_hub_{os.getpid()}"
FIGURES = "/tmp/koji-messagebus-reliability.json"
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

#: short timeouts so that a fault costs the tests little; the bounds below are derived from them
CONNECT_TIMEOUT = 0.5
SEND_TIMEOUT = 1.0
RETRY = 0.2
FAST = 0.05  # the most a request may spend in the plugin when it does not touch the broker
SLACK = 0.3  # scheduling slack on top of a timeout


def outbox_ids() -> list[str]:
    return [r[0] for r in sql(f"SELECT msg_id FROM {outbox.TABLE} ORDER BY id")]


def hub_rows() -> list[str]:
    return [r[0] for r in sql("SELECT note FROM hub_rows ORDER BY id")]


@pytest.fixture
def proxy():
    with FaultProxy(("127.0.0.1", 5672)) as p:
        yield p


class Timer:
    """Time spent in the plugin's preCommit + postCommit (koji's run_callbacks, wrapped)."""

    def __init__(self, monkeypatch):
        self.seconds = 0.0
        original = koji.plugin.run_callbacks

        def timed(cbtype, *args, **kws):
            if cbtype not in ("preCommit", "postCommit"):
                return original(cbtype, *args, **kws)
            start = time.perf_counter()
            try:
                return original(cbtype, *args, **kws)
            finally:
                self.seconds += time.perf_counter() - start

        monkeypatch.setattr(koji.plugin, "run_callbacks", timed)


@dataclass
class Req:
    ids: list[str]
    seconds: float


class Bus:
    """A hub (plugin loaded as the hub loads it) sending through the proxy, and a consumer."""

    def __init__(self, monkeypatch, tmp_path, exchange, proxy, **sections):
        self.exchange = exchange
        self.proxy = proxy
        self.given: list[str] = []  # every message-id the plugin created, in order
        broker = {"host": "127.0.0.1", "port": proxy.port, "timeout": SEND_TIMEOUT,
                  "connect_timeout": CONNECT_TIMEOUT, "retry_interval": RETRY}
        broker.update(sections.pop("broker", {}))
        self.conf = write_config(tmp_path / "messagebus.conf", exchange, broker=broker, **sections)
        monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", self.conf)
        encode = mb_runtime.encode

        def recording_encode(*args, **kws):
            msg = encode(*args, **kws)
            self.given.append(msg.msg_id)
            return msg

        monkeypatch.setattr(mb_runtime, "encode", recording_encode)
        self.timer = Timer(monkeypatch)
        self.consumer = Consumer(exchange)
        load_plugin()
        mb_plugin.reset(Runtime())
        self.hub = Hub(connect_db())
        self.kwargs = entries("postTag")[0]["kwargs"]

    @property
    def runtime(self) -> Runtime:
        return mb_plugin.runtime()

    @property
    def sender(self):
        return self.runtime.ensure_delivery().sender

    def request(self, events: int = 3, note: str = "r", fail: bool = False, on_commit=None) -> Req:
        """One hub request: insert a row of the hub's own, fire `events` postTag callbacks."""
        first = len(self.given)
        self.timer.seconds = 0.0

        def handler(cur):
            cur.execute("INSERT INTO hub_rows (note) VALUES (%(note)s)", {"note": note})
            for _ in range(events):
                koji.plugin.run_callbacks("postTag", **self.kwargs)

        # what kojihub's db.connect() does before reusing a connection whose last use ended with a raw
        # ROLLBACK (DBWrapper.close): BEGIN + rollback(), so that psycopg2 opens a new transaction again
        self.hub._raw.cursor().execute("BEGIN")
        self.hub._raw.rollback()
        self.hub.request(handler, fail=fail, on_commit=on_commit)
        return Req(self.given[first:], self.timer.seconds)

    def wait_breaker(self) -> None:
        """Sleep until the sender may probe the broker again (it does so in the background)."""
        time.sleep(RETRY + 0.05)

    def held(self) -> int:
        """Messages the sender holds in memory (outbox off) for a broker that did not take them."""
        return len(self.sender.held(Hold.MEMORY))

    def settle(self, rounds: int = 50) -> list[str]:
        """Requests without events until the outbox is empty (they do the deletes and the drain on
        the hub's connection: no hub.conf here, so no drainer); returns what is left."""
        for _ in range(rounds):
            left = outbox_ids()
            if not left:
                return left
            time.sleep(0.1)
            self.request(events=0, note="settle")
        return outbox_ids()

    def collect(self, expect: int, timeout: float = 10.0) -> list[Received]:
        return self.consumer.collect(expect=expect, timeout=timeout)

    def close(self) -> None:
        unload_plugin()
        self.hub.close()
        self.consumer.close()


@pytest.fixture
def bus(monkeypatch, tmp_path, exchange_name, proxy, db):
    made = []

    def make(**sections) -> Bus:
        made.append(Bus(monkeypatch, tmp_path, exchange_name, proxy, **sections))
        return made[-1]

    yield make
    for b in made:
        b.close()


def ids_of(received: list[Received]) -> list[str]:
    return [m.message_id for m in received]


def first_occurrences(ids: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for i in ids:
        if i not in seen:
            seen.add(i)
            out.append(i)
    return out


def assert_all_arrived(given: list[str], received: list[Received], in_order: bool = True) -> int:
    """Every given id arrived, nothing else did; return the number of duplicates."""
    got = ids_of(received)
    assert set(got) == set(given), f"missing {set(given) - set(got)}, unexpected {set(got) - set(given)}"
    if in_order:
        assert first_occurrences(got) == given
    return len(got) - len(set(got))


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "koji.plugin.messagebus" and r.levelno >= logging.ERROR]


def record_figures(name: str, figures: dict) -> None:
    print(f"\n{name}: {json.dumps(figures)}")
    data = {}
    if os.path.exists(FIGURES):
        try:
            with open(FIGURES) as fh:
                data = json.load(fh)
        except ValueError:
            data = {}
    data[name] = figures
    with open(FIGURES, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)


# ---- broker down for N requests, then back ------------------------------------------------------
@pytest.mark.parametrize("use_outbox", [True, False], ids=["outbox", "memory"])
@pytest.mark.parametrize("mode", ["refuse", "silent"])
def test_broker_down_for_n_requests_then_back(bus, plugin_log, mode, use_outbox):
    b = bus(outbox={"enabled": use_outbox})
    warm = b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1

    requests = 20
    outage_start = time.monotonic()
    b.proxy.set_mode(mode)
    b.proxy.cut()  # the broker goes away: the warm connection dies with it
    during = []
    for i in range(requests):
        during.append(b.request(events=3, note=f"outage-{i}"))
        time.sleep(0.04)  # a realistic trickle: some requests land after the retry interval (probes)
    # nothing arrived during the outage; everything was kept
    assert b.collect(0, timeout=0.3) == []
    if use_outbox:
        assert outbox_ids() == [i for r in during for i in r.ids]
    b.proxy.set_mode("pass")
    outage = time.monotonic() - outage_start

    # time in the plugin: bounded by the timeout; once the sender knows the broker is down, a
    # request does not wait for it (the sender probes in the background)
    assert max(r.seconds for r in during) < SEND_TIMEOUT + SLACK
    fast = [r.seconds for r in during if r.seconds < FAST]
    assert len(fast) >= requests - 6, [r.seconds for r in during]
    assert statistics.median(fast) < 0.005

    # recovery: everything goes out once the broker is back
    b.wait_breaker()
    after = b.request(events=1, note="after")
    given = [warm.ids[0]] + [i for r in during for i in r.ids] + after.ids
    assert given == b.given
    if use_outbox:  # rows the sender gave up during the outage: sent by the drain (here on requests)
        assert b.settle() == []
    received = b.collect(len(given) - 1)
    duplicates = assert_all_arrived(given[1:], received, in_order=not use_outbox)
    assert duplicates == 0  # nothing reached the broker during the outage
    assert hub_rows()[:requests + 2] == ["warm"] + [f"outage-{i}" for i in range(requests)] + ["after"]
    assert any("broker unavailable" in e for e in errors(plugin_log))
    record_figures(f"outage-{mode}-{'outbox' if use_outbox else 'memory'}", {
        "requests_during_outage": requests,
        "messages_during_outage": sum(len(r.ids) for r in during),
        "outage_seconds": round(outage, 3),
        "messages_lost": len(set(given) - set(ids_of(received)) - {warm.ids[0]}),
        "duplicates": duplicates,
        "requests_that_waited": requests - len(fast),
        "max_ms_in_plugin_during_outage": round(max(r.seconds for r in during) * 1000, 2),
        "max_ms_in_plugin_broker_known_down": round(max(fast) * 1000, 3),
        "median_ms_in_plugin_broker_known_down": round(statistics.median(fast) * 1000, 3),
        "retry_interval": RETRY, "connect_timeout": CONNECT_TIMEOUT, "timeout": SEND_TIMEOUT,
        "recovery_request_ms": round(after.seconds * 1000, 2),
    })


# ---- connection cut mid-batch -----------------------------------------------------------------
@pytest.mark.parametrize("use_outbox", [True, False], ids=["outbox", "memory"])
def test_connection_cut_mid_batch(bus, plugin_log, use_outbox):
    b = bus(outbox={"enabled": use_outbox})
    b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1
    assert b.sender.connects == 1
    b.proxy.cut_after(60_000)  # roughly the first tenth of the batch reaches the broker
    big = b.request(events=300, note="big")
    # the request may return before the proxy has forwarded its 60 kB (an outbox request stops waiting
    # once the broker goes quiet), so the cut is waited for, bounded
    assert until(lambda: b.proxy.cuts == 1, 10), "the proxy should have cut the connection mid-batch"
    received = b.collect(300)
    assert b.sender.connects == 2
    duplicates = assert_all_arrived(big.ids, received, in_order=False)
    assert all(m.message_id in big.ids for m in received)  # duplicates keep the id first given
    assert any("resending" in r.getMessage() for r in plugin_log.records)
    assert big.seconds < SEND_TIMEOUT + SLACK
    if use_outbox:
        assert b.settle() == []
    record_figures(f"cut-mid-batch-{'outbox' if use_outbox else 'memory'}", {
        "messages": 300, "messages_lost": 0, "duplicates": duplicates,
        "ms_in_plugin": round(big.seconds * 1000, 2)})


# ---- a silent peer ----------------------------------------------------------------------------
@pytest.mark.parametrize("use_outbox", [True, False], ids=["outbox", "memory"])
def test_silent_peer_is_bounded_and_messages_are_kept(bus, plugin_log, use_outbox):
    b = bus(outbox={"enabled": use_outbox})
    b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1
    b.proxy.set_mode("pause")  # the warm connection's peer stops answering
    stuck = b.request(events=3, note="stuck")
    assert stuck.seconds < SEND_TIMEOUT + SLACK
    next_ones = [b.request(events=2, note=f"next-{i}") for i in range(3)]
    assert all(r.seconds < SEND_TIMEOUT + SLACK for r in next_ones)
    if use_outbox:
        assert len(outbox_ids()) == 9
    # new connections to a peer that accepts TCP and never answers: bounded by connect_timeout
    b.proxy.set_mode("silent")
    b.wait_breaker()
    probe = b.request(events=1, note="probe")
    assert probe.seconds < SEND_TIMEOUT + SLACK
    b.proxy.resume()
    b.wait_breaker()
    last = b.request(events=1, note="last")
    given = b.given[1:]
    received = b.collect(len(given))
    # what the paused proxy held may reach the broker on resume: duplicates, with the same id
    duplicates = assert_all_arrived(given, received, in_order=False)
    assert first_occurrences([i for i in ids_of(received) if i not in stuck.ids]) == \
        [i for i in given if i not in stuck.ids]
    assert set(last.ids) <= set(ids_of(received))
    if use_outbox:
        assert b.settle() == []
    record_figures(f"silent-peer-{'outbox' if use_outbox else 'memory'}", {
        "stuck_request_ms": round(stuck.seconds * 1000, 1), "probe_request_ms": round(probe.seconds * 1000, 1),
        "messages_lost": 0, "duplicates": duplicates})


# ---- the hub process dies between COMMIT and postCommit ------------------------------------------
KILLED_SCRIPT = """
import os, sys
sys.path.insert(0, {repo!r})
import psycopg2, koji.plugin
from tests.support.hub import Hub, load_plugin
from devkit.recorded import entries
cnx = psycopg2.connect({dsn!r}, options="-c search_path={schema}")
load_plugin()
kwargs = entries("postTag")[0]["kwargs"]
def handler(cur):
    cur.execute("INSERT INTO hub_rows (note) VALUES ('killed')")
    for _ in range(3):
        koji.plugin.run_callbacks("postTag", **kwargs)
Hub(cnx).request(handler, on_commit=lambda: os._exit(17))
print("postCommit ran: the process was not killed")
"""


def cli_flush(config, cnx, pause: float = 0.0) -> tuple[outbox_cli.Flushed, list[str]]:
    """Drain as `koji-messagebus outbox flush` does (cli.outbox.flush: the one outbox step, a sender
    thread of its own), every row whatever its age (--all), until nothing is left, the broker fails
    or another process keeps the drain lock.  Returns what it did and the ids it sent; `pause`
    holds each batch's rows a little after their send (another drainer runs meanwhile)."""
    sent: list[str] = []

    class Recording(CommandSender):
        def send(self, messages, through=None):
            result = super().send(messages, through)
            sent.extend(m.msg_id for m in result.done)
            time.sleep(pause)
            return result

    with Recording(config) as sender:
        return outbox_cli.flush(cnx, config, sender, min_age=0.0), sent


def run_killed_request(conf: str) -> None:
    script = KILLED_SCRIPT.format(repo=REPO, dsn=DSN, schema=SCHEMA)
    env = {**os.environ, "KOJI_MESSAGEBUS_CONFIG": conf}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 17, proc.stdout + proc.stderr


@pytest.mark.parametrize("recovery", ["next-request", "flush"])
def test_hub_killed_after_commit(bus, recovery):
    b = bus(outbox={"enabled": True})
    run_killed_request(b.conf)
    assert hub_rows() == ["killed"]  # the hub's own change committed
    kept = outbox_ids()
    assert len(kept) == 3
    assert b.collect(0, timeout=0.5) == []
    if recovery == "next-request":
        nxt = b.request(events=1, note="next")
        received = b.collect(4)
        assert assert_all_arrived(kept + nxt.ids, received, in_order=False) == 0
    else:
        cnx = connect_db()  # what `koji-messagebus outbox flush` does, on its own connection
        try:
            result, _sent = cli_flush(load_config(b.conf), cnx)
        finally:
            cnx.close()
        assert result.sent == 3 and result.failure is None and not result.locked_out and not result.taken_over
        assert assert_all_arrived(kept, b.collect(3)) == 0
    assert b.settle() == []


# ---- rollback ------------------------------------------------------------------------------------
def test_rollback_sends_nothing_and_leaves_no_row(bus):
    b = bus(outbox={"enabled": True})
    failed = b.request(events=3, note="rolled-back", fail=True)
    assert len(failed.ids) == 3  # the messages were built, then dropped with the transaction
    assert outbox_ids() == [] and hub_rows() == []
    assert b.collect(0, timeout=0.5) == []
    ok = b.request(events=1, note="ok")
    assert assert_all_arrived(ok.ids, b.collect(1)) == 0  # only the committed request's message
    assert hub_rows() == ["ok"] and b.settle() == []


# ---- the outbox cannot be written -----------------------------------------------------------------
def test_outbox_table_missing(bus, db, plugin_log):
    with db.cursor() as cur:
        cur.execute(f"DROP TABLE {SCHEMA}.{outbox.TABLE}")
    b = bus(outbox={"enabled": True})
    reqs = [b.request(events=2, note=f"r{i}") for i in range(3)]
    assert hub_rows() == ["r0", "r1", "r2"]
    assert assert_all_arrived([i for r in reqs for i in r.ids], b.collect(6)) == 0
    errs = errors(plugin_log)
    assert len(errs) == 1, errs
    assert "messagebus_outbox does not exist" in errs[0] and "koji-messagebus outbox init" in errs[0]


def test_outbox_insert_failing_on_a_constraint(bus, db, plugin_log):
    with db.cursor() as cur:
        cur.execute(f"ALTER TABLE {SCHEMA}.{outbox.TABLE} ADD CONSTRAINT no_tags CHECK (msg_type <> 'Tag')")
    b = bus(outbox={"enabled": True})
    r = b.request(events=3, note="constrained")
    assert hub_rows() == ["constrained"]
    assert assert_all_arrived(r.ids, b.collect(3)) == 0
    # this batch only (a constraint): one WARNING, the outbox stays on for the next request
    errs = [r.getMessage() for r in plugin_log.records
            if r.name == "koji.plugin.messagebus" and r.levelno >= logging.WARNING and "outbox table" in r.getMessage()]
    assert len(errs) == 1 and "cannot write to outbox table" in errs[0] and "no_tags" in errs[0], errs
    assert "Failing row" not in errs[0]  # no payload dump in the log
    assert b.settle() == []


@pytest.fixture
def limited_role(db):
    """A role that may write the hub's table but only read the outbox (INSERT revoked)."""
    with db.cursor() as cur:
        cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,))
        if not cur.fetchone():
            cur.execute(f"CREATE ROLE {ROLE} NOLOGIN")
        cur.execute(f"GRANT USAGE ON SCHEMA {SCHEMA} TO {ROLE}")
        cur.execute(f"GRANT ALL ON {SCHEMA}.hub_rows, {SCHEMA}.hub_rows_id_seq TO {ROLE}")
        cur.execute(f"GRANT SELECT, DELETE ON {SCHEMA}.{outbox.TABLE} TO {ROLE}")
        cur.execute(f"REVOKE INSERT ON {SCHEMA}.{outbox.TABLE} FROM {ROLE}")
    yield ROLE
    with db.cursor() as cur:
        cur.execute(f"DROP OWNED BY {ROLE}")
        cur.execute(f"DROP ROLE {ROLE}")


def test_outbox_insert_failing_on_a_revoked_privilege(bus, limited_role, plugin_log):
    b = bus(outbox={"enabled": True})
    with b.hub._raw.cursor() as cur:
        cur.execute(f"SET ROLE {limited_role}")
    b.hub._raw.commit()
    reqs = [b.request(events=2, note=f"r{i}") for i in range(2)]
    b.hub._raw.cursor().execute("RESET ROLE")
    b.hub._raw.commit()
    assert hub_rows() == ["r0", "r1"]
    assert assert_all_arrived([i for r in reqs for i in r.ids], b.collect(4)) == 0
    errs = errors(plugin_log)
    assert len(errs) == 1 and "permission denied" in errs[0], errs
    assert b.settle() == []


# ---- two drainers at once ------------------------------------------------------------------------
def fill_outbox(count: int, conf: str) -> list[str]:
    """`count` encoded messages stored in the outbox (committed), as a killed hub would leave them."""
    template = entries("postTag")[0]["kwargs"]
    rt = Runtime(load_config(conf))
    batch = mb_runtime.RequestBatch()
    for _ in range(count):
        rt.collect(batch, "Tag", template)
    cnx = connect_db()
    try:
        outbox.store(DBWrapper(cnx), batch.messages)
        cnx.commit()
    finally:
        cnx.close()
    return [m.msg_id for m in batch.messages]


def test_two_processes_draining_at_once_send_nothing_twice(bus):
    b = bus(outbox={"enabled": True, "batch_size": 20})
    stored = fill_outbox(400, b.conf)
    sent_by: dict[str, list[str]] = {"A": [], "B": []}
    locked_out = {"A": 0, "B": 0}
    barrier = threading.Barrier(2)
    config = load_config(b.conf)

    def drainer(name: str) -> None:
        cnx = connect_db()  # each drainer has its own database session, as two processes would
        barrier.wait()
        deadline = time.monotonic() + 20
        try:
            while time.monotonic() < deadline:
                result, sent = cli_flush(config, DBWrapper(cnx), pause=0.005)
                sent_by[name] += sent
                locked_out[name] += result.locked_out
                if not result.taken_over and result.failure is None:
                    break
                time.sleep(0.002)
        finally:
            cnx.close()

    threads = [threading.Thread(target=drainer, args=(n,)) for n in "AB"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    both = sent_by["A"] + sent_by["B"]
    assert sorted(both) == sorted(stored)  # every row sent, none by both
    assert not set(sent_by["A"]) & set(sent_by["B"])
    assert sum(locked_out.values()) > 0, "the drainers never ran at the same time"
    assert assert_all_arrived(stored, b.collect(400), in_order=False) == 0
    assert outbox_ids() == []
    record_figures("two-drainers", {"rows": 400, "sent_by_A": len(sent_by["A"]), "sent_by_B": len(sent_by["B"]),
                                    "locked_out": locked_out, "duplicates": 0})


# ---- without the outbox: the in-memory backlog ---------------------------------------------------
def test_memory_backlog_keeps_messages_over_a_short_outage(bus, plugin_log):
    b = bus(broker={"max_pending": 5})
    b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1
    b.proxy.set_mode("refuse")
    b.proxy.cut()
    kept = [b.request(events=2, note=f"k{i}") for i in range(2)]  # 4 messages: they fit
    assert b.held() == 4
    b.proxy.set_mode("pass")
    b.wait_breaker()
    after = b.request(events=1, note="after")
    given = [i for r in kept for i in r.ids] + after.ids
    assert assert_all_arrived(given, b.collect(5)) == 0
    assert not any("lost" in e for e in errors(plugin_log))


def test_memory_backlog_overflow_is_logged_as_lost(bus, plugin_log):
    b = bus(broker={"max_pending": 5})
    b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1
    b.proxy.set_mode("refuse")
    b.proxy.cut()
    reqs = [b.request(events=2, note=f"o{i}") for i in range(4)]  # 8 messages, room for 5
    assert b.held() == 5
    lost_lines = [e for e in errors(plugin_log) if "in-memory backlog full" in e]
    assert lost_lines and all("lost" in e for e in lost_lines)
    given = [i for r in reqs for i in r.ids]
    lost, kept = given[:3], given[3:]  # the oldest go first
    assert sum(int(e.split("lost ")[1].split(" ")[0]) for e in lost_lines) == 3
    b.proxy.set_mode("pass")
    b.wait_breaker()
    after = b.request(events=1, note="after")
    assert assert_all_arrived(kept + after.ids, b.collect(6)) == 0
    assert not set(lost) & set(ids_of(b.collect(0, timeout=0.3)))


# ---- a stale connection is replaced transparently ------------------------------------------------
def test_stale_connection_replaced_between_requests(bus, plugin_log):
    b = bus()
    first = b.request(events=1, note="one")
    assert len(b.collect(1)) == 1
    b.proxy.cut()  # e.g. the broker restarted between two requests
    second = b.request(events=2, note="two")
    assert assert_all_arrived(second.ids, b.collect(2)) == 0
    assert b.sender.connects == 2
    assert errors(plugin_log) == []
    assert first.ids[0] not in second.ids


def test_silently_dead_connection_found_by_heartbeat_and_replaced(bus, plugin_log):
    """The peer vanished without a FIN (e.g. a dropped NAT entry): after `heartbeat` seconds without a
    frame from the broker the idle connection counts as dead, and the next request reconnects at once
    instead of waiting for the send timeout."""
    b = bus(broker={"heartbeat": 1})
    b.request(events=1, note="one")
    assert len(b.collect(1)) == 1
    assert b.proxy.freeze() == 1
    time.sleep(2.2)  # no heartbeat frame from the broker for more than `heartbeat`
    r = b.request(events=2, note="two")
    assert r.seconds < SEND_TIMEOUT / 2  # it did not wait for the send timeout on the dead connection
    assert assert_all_arrived(r.ids, b.collect(2)) == 0
    assert b.sender.connects == 2
    assert errors(plugin_log) == []
    assert any("no frame from the broker" in rec.getMessage() for rec in plugin_log.records)


@pytest.mark.parametrize("use_outbox", [True, False], ids=["outbox", "memory"])
def test_connection_lost_on_send_resends_with_the_same_ids(bus, plugin_log, use_outbox):
    b = bus(outbox={"enabled": use_outbox})
    b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1
    b.proxy.cut_after(0)  # looks alive until the next bytes go out: the send itself fails
    r = b.request(events=3, note="resent")
    # the same ids, once each; a resend on the new connection may change their order
    assert assert_all_arrived(r.ids, b.collect(3), in_order=False) == 0
    assert b.sender.connects == 2
    assert errors(plugin_log) == []


# ---- failover across [broker] urls ---------------------------------------------------------------
@pytest.mark.parametrize("first_mode", ["refuse", "silent"])
def test_failover_to_the_next_url(bus, proxy, first_mode):
    with FaultProxy(("127.0.0.1", 5672)) as dead:
        dead.set_mode(first_mode)
        b = bus(broker={"urls": f"amqp://127.0.0.1:{dead.port} amqp://127.0.0.1:{proxy.port}"})
        reqs = [b.request(events=1, note=f"f{i}") for i in range(3)]
        assert assert_all_arrived([i for r in reqs for i in r.ids], b.collect(3)) == 0
        assert b.sender.connects == 1  # the working URL is kept
        # each endpoint has its own connect_timeout: a silent first host does not hide the second
        bound = CONNECT_TIMEOUT + SLACK if first_mode == "silent" else 0.2
        assert reqs[0].seconds < bound
        assert all(r.seconds < FAST for r in reqs[1:])


# ---- several hub threads share one connection (mod_wsgi) ------------------------------------------
@pytest.mark.parametrize("use_outbox", [True, False], ids=["outbox", "memory"])
def test_hub_threads_share_one_warm_connection(bus, plugin_log, use_outbox):
    b = bus(outbox={"enabled": use_outbox})
    b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1
    kwargs = b.kwargs
    failures: list[BaseException] = []

    def worker(n: int) -> None:
        hub = Hub(connect_db())
        try:
            for i in range(10):
                def handler(cur, note=f"t{n}-{i}"):
                    cur.execute("INSERT INTO hub_rows (note) VALUES (%(note)s)", {"note": note})
                    for _ in range(3):
                        koji.plugin.run_callbacks("postTag", **kwargs)
                hub._raw.cursor().execute("BEGIN")
                hub._raw.rollback()
                hub.request(handler)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            hub.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
    given = b.given[1:]
    assert len(given) == 120
    assert assert_all_arrived(given, b.collect(120), in_order=False) == 0
    assert b.sender.connects == 1
    assert errors(plugin_log) == []
    assert len(hub_rows()) == 41
    if use_outbox:
        assert b.settle() == []


# ---- outbox rows older than max_age --------------------------------------------------------------
def test_rows_older_than_max_age_are_dropped_with_a_count(bus, plugin_log):
    b = bus(outbox={"enabled": True, "max_age": 3600})
    old = fill_outbox(4, b.conf)
    sql(f"UPDATE {outbox.TABLE} SET stored = stored - interval '2 hours'")
    fresh = b.request(events=2, note="fresh")
    assert assert_all_arrived(fresh.ids, b.collect(2)) == 0
    assert not set(old) & set(ids_of(b.collect(0, timeout=0.3)))
    dropped = [e for e in errors(plugin_log) if "older than max_age" in e]
    assert len(dropped) == 1 and "dropped 4 outbox message(s)" in dropped[0]
    assert b.settle() == []


# ---- a bug in the send path does not wedge the breaker ---------------------------------------------
def test_unexpected_error_while_sending_keeps_messages_and_recovers(bus, plugin_log, monkeypatch):
    from koji_messagebus.delivery.pipe import AmqpPipe

    b = bus()
    b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1
    real_start = AmqpPipe.start
    calls = []

    def broken_start(self, payload):
        calls.append(len(payload))
        if len(calls) == 1:
            raise RuntimeError("simulated bug")
        return real_start(self, payload)

    monkeypatch.setattr(AmqpPipe, "start", broken_start)
    failed = b.request(events=2, note="bug")
    assert any("unexpected error in the sender thread" in e for e in errors(plugin_log))
    b.wait_breaker()
    after = b.request(events=1, note="after")
    assert assert_all_arrived(failed.ids + after.ids, b.collect(3)) == 0


# ---- a long in-memory backlog is sent oldest first -------------------------------------------------------
def test_long_memory_backlog_goes_out_in_order(bus):
    b = bus(outbox={"batch_size": 10})
    b.request(events=1, note="warm")
    assert len(b.collect(1)) == 1
    b.proxy.set_mode("refuse")
    b.proxy.cut()
    during = [b.request(events=5, note=f"d{i}") for i in range(5)]  # 25 messages kept
    assert b.held() == 25
    b.proxy.set_mode("pass")
    b.wait_breaker()
    after = [b.request(events=1, note=f"a{i}") for i in range(4)]
    given = [i for r in during + after for i in r.ids]
    assert assert_all_arrived(given, b.collect(len(given))) == 0
    assert b.held() == 0
    assert all(r.seconds < SEND_TIMEOUT + SLACK for r in after)
