"""A hub process that ends normally (atexit; mod_wsgi's shutdown hook calls the same function):
it sends what it holds, deletes the rows the broker settled and closes its connections, so the
next process has nothing to send again.  Real hub processes (tests/support/hub_process.py), PostgreSQL
and broker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from koji_messagebus.transaction import outbox
from tests.support.config import write_config
from tests.support.faultproxy import FaultProxy
from tests.support.hub import DSN
from tests.support.outbox_db import SCHEMA, sql
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hub_process(conf: str, count: int, requests: int = 1, how: str = "normal") -> str:
    """Run one hub process to its end; its stderr (the plugin's log)."""
    proc = subprocess.run([sys.executable, "-m", "tests.support.hub_process", conf, SCHEMA, str(count), str(requests),
                           how],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "requests done" in proc.stdout
    return proc.stderr


def rows() -> int:
    return sql(f"SELECT count(*) FROM {outbox.TABLE}")[0][0]


@pytest.fixture
def conf(tmp_path, exchange_name):
    hub_conf = tmp_path / "hub.conf"
    hub_conf.write_text(f"[hub]\nDBConnectionString = {DSN} options='-c search_path={SCHEMA}'\n")
    return write_config(tmp_path / "messagebus.conf", exchange_name, broker={"timeout": 5},
                        outbox={"enabled": True, "hub_config": str(hub_conf)})


def test_a_normal_exit_leaves_no_row_and_the_next_process_sends_no_duplicate(db, conf, exchange_name):
    consumer = Consumer(exchange_name)
    try:
        log = hub_process(conf, 1200)
        assert rows() == 0, log[-3000:]
        hub_process(conf, 1)  # the next process: its drainer looks for rows left by dead processes at start
        got = [m.message_id for m in consumer.collect(expect=1201, timeout=30, quiet=2.0)]
        assert len(got) == 1201 and len(set(got)) == 1201
        assert rows() == 0
    finally:
        consumer.close()


def test_without_the_outbox_a_normal_exit_delivers_every_message(conf, exchange_name, tmp_path):
    conf = write_config(tmp_path / "nobox.conf", exchange_name, broker={"timeout": 5})
    consumer = Consumer(exchange_name)
    try:
        log = hub_process(conf, 1200)
        got = [m.message_id for m in consumer.collect(expect=1200, timeout=30, quiet=1.0)]
        assert len(got) == 1200 and len(set(got)) == 1200, log[-3000:]
        assert "lost" not in log
    finally:
        consumer.close()


def test_without_the_outbox_messages_held_at_exit_are_reported_in_one_error(exchange_name, tmp_path):
    """The broker refuses connections (a fault proxy): the 1,200 messages the process holds in memory
    cannot be handed to anyone; the exit says so, once, with their count and types."""
    with FaultProxy(("127.0.0.1", 5672)) as proxy:
        proxy.set_mode("refuse")
        conf = write_config(tmp_path / "nobox.conf", exchange_name, broker={"timeout": 2, "port": proxy.port})
        log = hub_process(conf, 1200)
    errors = [line for line in log.splitlines() if line.startswith("ERROR") and "lost" in line]
    assert len(errors) == 1, log[-3000:]
    assert "lost at process exit: 1200 message(s) (Tag x1200)" in errors[0]
