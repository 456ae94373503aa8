"""The drainer (a hub process's background outbox work) against the real PostgreSQL and RabbitMQ,
connected from a hub.conf as the plugin reads it: which rows it takes, which it leaves to their
owner, the batched deletes, and the plugin end to end with it."""

from __future__ import annotations

import time

import koji.plugin
import pytest

from devkit.config import until, write_config
from devkit.recorded import entries
from koji_messagebus import plugin as mb_plugin
from koji_messagebus.config.settings import load_config
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.delivery.drainer import Drainer
from koji_messagebus.delivery.handoff import database_connector
from koji_messagebus.delivery.sender import SenderThread
from koji_messagebus.format.messages import format_event
from koji_messagebus.format.wire import encode
from koji_messagebus.runtime import Runtime
from koji_messagebus.transaction import outbox
from tests.support.hub import DSN, Hub, load_plugin, unload_plugin
from tests.support.outbox_db import SCHEMA, connect_db, sql
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration


@pytest.fixture
def conf(tmp_path, exchange_name):
    hub_conf = tmp_path / "hub.conf"
    hub_conf.write_text(f"[hub]\nDBConnectionString = {DSN} options='-c search_path={SCHEMA}'\n")
    return write_config(tmp_path / "messagebus.conf", exchange_name, broker={"timeout": 1, "connect_timeout": 2},
                        outbox={"enabled": True, "hub_config": str(hub_conf)})


def insert(count: int, age: float, owner=None) -> list[str]:
    """Committed rows `age` seconds old, stored by `owner` (an open connection: a live hub process)
    or by a connection closed right after (a process that died since)."""
    cnx = owner or connect_db()
    ids = []
    try:
        with cnx.cursor() as cur:
            for _ in range(count):
                msg = encode(format_event("Tag", entries("postTag")[0]["kwargs"], "koji.event"))
                cur.execute(f"INSERT INTO {outbox.TABLE} (msg_id, created, msg_type, routing_key, payload, stored) "
                            "VALUES (%s, %s, %s, %s, %s, clock_timestamp() - %s * interval '1 second')",
                            (msg.msg_id, msg.created, msg.type, msg.routing_key, msg.payload, age))
                ids.append(msg.msg_id)
        cnx.commit()
    finally:
        if owner is None:
            cnx.close()
    return ids


def backend_gone(cnx) -> None:
    """Close `cnx` (its hub process is killed) and wait until PostgreSQL no longer lists its backend."""
    pid = cnx.get_backend_pid()
    cnx.close()
    assert until(lambda: sql("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,))[0][0] == 0, 5)


def left() -> list[str]:
    return [r[0] for r in sql(f"SELECT msg_id FROM {outbox.TABLE} ORDER BY id")]


def test_old_rows_are_drained_oldest_first_and_young_ones_left_to_their_owner(db, conf, exchange_name):
    cfg = load_config(conf)
    consumer = Consumer(exchange_name)
    sender = SenderThread(cfg)
    connect = database_connector(cfg)
    assert connect is not None
    drainer = Drainer(cfg, sender, connect)
    owner = connect_db()  # a live hub process
    try:
        old = insert(5, drainer.min_age + 60, owner) + insert(5, drainer.min_age + 1, owner)
        young = insert(3, 0.5, owner)
        drainer.kick()
        got = consumer.collect(expect=10, timeout=10)
        assert [m.message_id for m in got] == old  # oldest first, each once
        assert until(lambda: left() == young, 10)  # the owner's (or, once old, the drain's)
    finally:
        owner.close()
        drainer.close()
        sender.close()
        consumer.close()


def test_rows_of_a_dead_process_are_drained_at_once_in_order_and_a_live_owners_are_left(db, conf, exchange_name):
    """Rows whose storing backend is gone (the hub process died) go out at once, oldest first, each
    once; young rows of a live process stay its own (no duplicate)."""
    cfg = load_config(conf)
    consumer = Consumer(exchange_name)
    sender = SenderThread(cfg)
    drainer = Drainer(cfg, sender, database_connector(cfg))
    dead, live = connect_db(), connect_db()
    try:
        assert consumer.collect(quiet=0.5) == []  # the drainer's first look: nothing there
        first = insert(10, 0.0, dead)
        mine = insert(10, 0.0, live)
        orphans = first + insert(10, 0.0, dead)
        started = time.monotonic()
        backend_gone(dead)
        got = consumer.collect(expect=20, timeout=5)
        seconds = time.monotonic() - started
        assert [m.message_id for m in got] == orphans  # in their order, each once
        assert seconds < 3.0, seconds  # well before min_age (the age rule alone: 25 s by default)
        assert drainer.min_age > 3.0  # so the age rule cannot be what sent them
        print(f"dead process's rows delivered in {seconds:.2f}s")
        assert consumer.collect(quiet=1.5) == []  # the live owner's rows are not taken early
        assert left() == mine
    finally:
        live.close()
        drainer.close()
        sender.close()
        consumer.close()


def claims(pid: int) -> int:
    """How many connections claim the storing backend `pid` (outbox_rows.claim_owners)."""
    return sql("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s "
               "AND objsubid = 2 AND granted", (outbox_rows.OWNER_CLAIM, pid))[0][0]


def test_rows_of_a_live_process_whose_database_connection_closed_are_not_taken_until_it_ends(db, conf,
                                                                                         exchange_name):
    """A hub process's connection may close while the process lives on and its sender holds the
    rows (a PostgreSQL restart, a thread's end, the exit before the exit hook): its drainer claims
    the storing backend, so neither its own drain nor another process's takes the rows (a
    duplicate before); once the process ends, the rows are a dead process's and go out at once."""
    cfg = load_config(conf)
    consumer = Consumer(exchange_name)
    senders = [SenderThread(cfg), SenderThread(cfg)]
    mine = Drainer(cfg, senders[0], database_connector(cfg))  # this process: the elected drainer
    other: Drainer | None = None
    storing = connect_db()
    try:
        rows = insert(10, 0.0, storing)
        pid = storing.get_backend_pid()
        mine.claim(pid)
        assert until(lambda: claims(pid) == 1, 5)
        backend_gone(storing)
        other = Drainer(cfg, senders[1], database_connector(cfg))  # another process: looks at once
        mine.kick()
        assert consumer.collect(quiet=2.0) == []  # neither drain took them
        assert left() == rows
        mine.close()  # the process ends: its claim with it
        assert claims(pid) == 0
        other.kick()
        got = consumer.collect(expect=10, timeout=5)
        assert [m.message_id for m in got] == rows  # in their order, each once
        assert until(lambda: left() == [], 5)
    finally:
        mine.close()
        if other is not None:
            other.close()
        for sender in senders:
            sender.close()
        consumer.close()


def test_without_the_owner_column_the_age_rule_alone_applies(db, conf, exchange_name, monkeypatch, caplog):
    """A table made before owner_pid: the drain works as before (says once at INFO that `outbox
    init` adds the column); `outbox init` (the schema) adds it, existing rows keep NULL."""
    monkeypatch.setattr(outbox_rows, "_said_no_owner", False)
    sql(f"ALTER TABLE {outbox.TABLE} DROP COLUMN owner_pid")
    cfg = load_config(conf)
    consumer = Consumer(exchange_name)
    sender = SenderThread(cfg)
    drainer = Drainer(cfg, sender, database_connector(cfg))
    try:
        caplog.set_level("INFO", logger="koji.plugin.messagebus")
        old = insert(3, drainer.min_age + 1)
        young = insert(3, 0.0)  # its process is gone, but the table cannot tell
        drainer.kick()
        got = consumer.collect(expect=3, timeout=10)
        assert [m.message_id for m in got] == old
        assert consumer.collect(quiet=1.5) == [] and left() == young
        assert sum("has no owner_pid column" in r.getMessage() for r in caplog.records) == 1
        sql(outbox.SCHEMA)  # `koji-messagebus outbox init` on the old table
        assert sql(f"SELECT owner_pid FROM {outbox.TABLE}") == [(None,)] * 3  # unknown owner: the age rule
        fresh = connect_db()
        orphans = insert(2, 0.0, fresh)
        backend_gone(fresh)
        got = consumer.collect(expect=2, timeout=5)
        assert [m.message_id for m in got] == orphans
    finally:
        drainer.close()
        sender.close()
        consumer.close()


def test_abandoned_rows_are_sent_at_once_under_row_locks(db, conf, exchange_name):
    cfg = load_config(conf)
    consumer = Consumer(exchange_name)
    sender = SenderThread(cfg)
    drainer = Drainer(cfg, sender, database_connector(cfg))
    owner = connect_db()  # rows of this (live) process: not the drain's by age or owner
    try:
        young = insert(4, 0.1, owner)
        row_ids = [r[0] for r in sql(f"SELECT id FROM {outbox.TABLE} ORDER BY id")]
        with sender.shared.cond:  # what the sender does when it gives rows up after own_window
            sender.abandoned_rows.extend(row_ids)
        got = consumer.collect(expect=4, timeout=10)
        assert sorted(m.message_id for m in got) == sorted(young)
        assert until(lambda: left() == [], 10)
    finally:
        owner.close()
        drainer.close()
        sender.close()
        consumer.close()


def test_the_plugin_with_its_drainer_leaves_no_row_and_delivers_each_message_once(db, conf, exchange_name,
                                                                                  monkeypatch):
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf)
    consumer = Consumer(exchange_name)
    load_plugin()
    mb_plugin.reset(Runtime())
    hub = Hub(connect_db())
    kwargs = entries("postTag")[0]["kwargs"]
    try:
        for _ in range(20):
            hub.request(lambda cur: [koji.plugin.run_callbacks("postTag", **kwargs) for _ in range(3)])
        rt = mb_plugin.runtime()
        assert rt.delivery is not None and rt.delivery.drainer is not None  # from hub.conf
        got = consumer.collect(expect=60, timeout=10)
        ids = [m.message_id for m in got]
        assert len(ids) == 60 and len(set(ids)) == 60
        assert until(lambda: left() == [], 10)  # deleted in batches, off the request path
        assert rt.delivery.drainer.deleted == 60
    finally:
        hub.close()
        unload_plugin()
        consumer.close()


def test_a_lost_database_connection_is_one_warning_with_its_first_line_and_no_traceback(db, tmp_path, exchange_name,
                                                                                           plugin_log):
    """The elected drainer's connection, through a fault proxy in front of PostgreSQL: the server
    ends it (pg_terminate_backend, what a restart does to every backend), then the port refuses,
    then it is back.  Each cause is one WARNING line a minute (what happened, what the plugin does,
    the exception's first line), never an ERROR or a traceback; the drainer works again after."""
    from devkit.faultproxy import FaultProxy
    from koji_messagebus.log import flush_causes

    def fails_then(step) -> None:
        errors = drainer.errors
        step()
        assert until(lambda: drainer.errors > errors)

    def terminate() -> None:
        sql("SELECT pg_terminate_backend(%s)", (drainer._cnx.get_backend_pid(),))

    with FaultProxy(("127.0.0.1", 5432)) as proxy:
        hub_conf = tmp_path / "hub.conf"
        hub_conf.write_text(f"[hub]\nDBConnectionString = {DSN} port={proxy.port} "
                            f"options='-c search_path={SCHEMA}'\n")
        cfg = load_config(write_config(tmp_path / "messagebus.conf", exchange_name, broker={"timeout": 1},
                                       outbox={"enabled": True, "hub_config": str(hub_conf)}))
        consumer = Consumer(exchange_name)
        sender = SenderThread(cfg)
        connect = database_connector(cfg)
        assert connect is not None
        drainer = Drainer(cfg, sender, connect)
        try:
            for _ in range(2):  # twice within the minute: one line, then the count
                drainer.kick()
                assert until(lambda: drainer.leader)
                fails_then(terminate)
            drainer.kick()
            assert until(lambda: drainer.leader)
            proxy.set_mode("refuse")
            fails_then(terminate)
            fails_then(drainer.kick)  # reconnecting: refused
            fails_then(drainer.kick)
            proxy.set_mode("pass")
            drainer.kick()
            assert until(lambda: drainer.leader)
            ids = insert(2, drainer.min_age + 1)
            assert [m.message_id for m in consumer.collect(expect=2, timeout=10)] == ids  # back at work
            flush_causes(force=True)  # process exit: the counts not said yet
        finally:
            drainer.close()
            sender.close()
            consumer.close()
    said = [(r.levelname, r.getMessage()) for r in plugin_log.records if r.levelno >= 30]
    lost = [m for _, m in said if "database connection was lost" in m]
    unreachable = [m for _, m in said if "cannot connect to the hub's database" in m]
    assert all(level == "WARNING" for level, _ in said), said
    assert len(lost) == 2 and len(unreachable) == 2 and len(said) == 4, said
    assert lost[0].startswith("messagebus: the outbox's database connection was lost (a PostgreSQL restart or a "
                              "cut connection: "), said
    assert lost[0].endswith("); reconnecting; the rows stay in the outbox and are sent once it is back"), said
    assert lost[1].endswith("(2 times in the last 0 s)") or "(2 times in the last" in lost[1], said
    assert "Connection refused" in unreachable[0] and "(1 time in the last" in unreachable[1], said
    assert "\n" not in "".join(m for _, m in said) and "Traceback" not in plugin_log.text
