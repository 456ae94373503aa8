"""What an idle hub process costs the database: a process with nothing pending holds no
connection of the plugin's own and runs no query; one process per outbox table (the elected
drainer) keeps one connection and looks for rows left behind; when it ends, the next busy
process takes over and sends the rows of dead processes.  Real PostgreSQL and broker; the
connections are real psycopg2 connections, counted by a thin wrapper."""

from __future__ import annotations

import threading
import time

import pytest

from devkit.config import until, write_config
from devkit.recorded import entries
from koji_messagebus.config.settings import load_config
from koji_messagebus.delivery.drainer import IDLE_CLOSE
from koji_messagebus.delivery.handoff import Delivery, database_connector
from koji_messagebus.format.messages import format_event
from koji_messagebus.format.wire import encode
from koji_messagebus.transaction import outbox
from tests.support.hub import DSN
from tests.support.outbox_db import SCHEMA, connect_db, sql
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration


class Counted:
    """Connections opened by one process's drainer: how many are open, how many statements ran."""

    def __init__(self, connect):
        self._connect = connect
        self.open = 0
        self.queries = 0
        self._lock = threading.Lock()

    def __call__(self):
        counter = self

        class Cursor:
            def __init__(self, cur):
                self._cur = cur

            def __getattr__(self, name):
                return getattr(self._cur, name)

            def execute(self, *args, **kwargs):
                with counter._lock:
                    counter.queries += 1
                return self._cur.execute(*args, **kwargs)

        class Connection:
            def __init__(self, cnx):
                self._cnx = cnx
                with counter._lock:
                    counter.open += 1

            def __getattr__(self, name):
                return getattr(self._cnx, name)

            def cursor(self, *args, **kwargs):
                return Cursor(self._cnx.cursor(*args, **kwargs))

            def close(self):
                if not self._cnx.closed:
                    with counter._lock:
                        counter.open -= 1
                self._cnx.close()

        return Connection(self._connect())


@pytest.fixture
def cfg(tmp_path, exchange_name):
    hub_conf = tmp_path / "hub.conf"
    hub_conf.write_text(f"[hub]\nDBConnectionString = {DSN} options='-c search_path={SCHEMA}'\n")
    return load_config(write_config(tmp_path / "messagebus.conf", exchange_name, broker={"timeout": 2},
                                    outbox={"enabled": True, "hub_config": str(hub_conf)}))


def request(delivery: Delivery, count: int = 3) -> list[str]:
    """One hub request's after-commit path: rows stored in the hub's transaction, then handed over."""
    messages = [encode(format_event("Tag", entries("postTag")[0]["kwargs"], "koji.event")) for _ in range(count)]
    hub = connect_db()
    try:
        ids = outbox.store(hub, messages)
        hub.commit()
        delivery.post_commit(messages, ids, None)
    finally:
        hub.close()
    return [m.msg_id for m in messages]


def test_an_idle_process_holds_no_connection_and_runs_no_query(db, cfg, exchange_name):
    consumer = Consumer(exchange_name)
    first, second = Counted(database_connector(cfg)), Counted(database_connector(cfg))
    elected = Delivery(cfg, connect_db=first)
    assert until(lambda: first.open == 1 and first.queries > 0, 10)  # its first look (and the election)
    other = Delivery(cfg, connect_db=second)
    try:
        sent = request(other)
        assert len(consumer.collect(expect=len(sent), timeout=10)) == len(sent)
        assert until(lambda: sql(f"SELECT count(*) FROM {outbox.TABLE}")[0][0] == 0, 10)  # deleted by its drainer
        assert until(lambda: second.open == 0, IDLE_CLOSE + 5)  # idle: its connection closed
        queries, looks = second.queries, first.queries
        time.sleep(3 * IDLE_CLOSE)  # an idle window: nothing may happen in it
        assert (second.open, second.queries) == (0, queries)
        assert first.open == 1 and first.queries > looks  # the elected one looks for rows left behind
    finally:
        other.close()
        elected.close()
        consumer.close()


def test_when_the_elected_drainer_ends_the_next_busy_process_sends_the_rows_of_dead_processes(db, cfg, exchange_name):
    consumer = Consumer(exchange_name)
    first, second = Counted(database_connector(cfg)), Counted(database_connector(cfg))
    elected = Delivery(cfg, connect_db=first)
    assert until(lambda: first.open == 1, 10)
    other = Delivery(cfg, connect_db=second)
    try:
        assert until(lambda: second.open == 0, IDLE_CLOSE + 5)
        elected.close()  # a clean exit: its connection, and with it the election lock, is gone
        assert first.open == 0
        dead = connect_db()  # a hub process that stored rows and died before sending them
        messages = [encode(format_event("Tag", entries("postTag")[0]["kwargs"], "koji.event")) for _ in range(4)]
        outbox.store(dead, messages)
        dead.commit()
        dead.close()
        orphans = [m.msg_id for m in messages]
        mine = request(other)  # the next request anywhere: that process is elected and drains
        got = [m.message_id for m in consumer.collect(expect=len(orphans) + len(mine), timeout=15)]
        assert sorted(got) == sorted(orphans + mine)
        assert until(lambda: sql(f"SELECT count(*) FROM {outbox.TABLE}")[0][0] == 0, 10)
        assert other.drainer is not None and other.drainer.leader
    finally:
        other.close()
        elected.close()
        consumer.close()
