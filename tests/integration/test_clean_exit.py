"""A hub process that ends normally (atexit; mod_wsgi's shutdown hook calls the same function):
it sends what it holds, deletes the rows the broker settled and closes its connections, so the
next process has nothing to send again.  Real hub processes (devkit/hub_process.py), PostgreSQL
and broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from devkit.brokers import target
from devkit.config import write_config
from devkit.faultproxy import FaultProxy
from koji_messagebus.delivery.spool import Spool, decode_file
from koji_messagebus.transaction import outbox
from tests.support.hub import DSN
from tests.support.outbox_db import SCHEMA, sql
from tests.support.pika_consumer import Consumer

pytestmark = pytest.mark.integration
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hub_process(conf: str, count: int, requests: int = 1, how: str = "normal") -> str:
    """Run one hub process to its end; its stderr (the plugin's log)."""
    proc = subprocess.run([sys.executable, "-m", "devkit.hub_process", conf, SCHEMA, str(count), str(requests),
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
        after = hub_process(conf, 1)  # the next process: its drainer looks for rows left by dead processes at start
        got = [m.message_id for m in consumer.collect(expect=1201, timeout=30, quiet=2.0)]
        # the hub logs say which path sent a copy twice (a CI run on 2026-12-05 got 91 duplicates here)
        assert len(got) == 1201 and len(set(got)) == 1201, \
            f"{len(got)} arrived, {len(set(got))} distinct\nfirst process:\n{log[-3000:]}\nnext:\n{after[-1500:]}"
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
    """The broker refuses connections (a fault proxy) and there is no spool ([broker] spool_dir
    empty): the 1,200 messages the process holds in memory cannot be handed to anyone; the exit
    says so, once, with their count, types and the reason."""
    with FaultProxy(("127.0.0.1", 5672)) as proxy:
        proxy.set_mode("refuse")
        conf = write_config(tmp_path / "nobox.conf", exchange_name,
                            broker={"timeout": 2, "port": proxy.port, "spool_dir": ""})
        log = hub_process(conf, 1200)
    errors = [line for line in log.splitlines() if line.startswith("ERROR") and "lost" in line]
    assert len(errors) == 1, log[-3000:]
    assert "lost at process exit: 1200 message(s) (Tag x1200)" in errors[0]
    assert "spool_dir is empty" in errors[0]


def raw_messages(consumer: Consumer, expect: int, timeout: float = 30.0) -> list[tuple[str, bytes, bytes]]:
    """(message-id, amqp-value section, application-properties section) as RabbitMQ 3.x stored them:
    the bytes the plugin sent, untouched by any decoding."""
    got: list[tuple[str, bytes, bytes]] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect and time.monotonic() < deadline:
        method, props, body = consumer.ch.basic_get(consumer.queue, auto_ack=True)
        if method is None:
            time.sleep(0.05)
            continue
        got.append((props.message_id, body, (props.headers or {}).get("x-amqp-1.0-app-properties", b"")))
    time.sleep(1.0)  # and nothing more (no duplicate) in the next second
    method, _props, _body = consumer.ch.basic_get(consumer.queue, auto_ack=True)
    assert method is None, "a message more than expected"
    return got


@pytest.mark.skipif(target().flavour != "rabbitmq3", reason="reads RabbitMQ 3.x's x-amqp-1.0-* headers")
def test_without_the_outbox_messages_held_at_exit_are_spooled_and_sent_by_the_next_process(
        exchange_name, tmp_path):
    """The broker is down (a fault proxy refusing) while a process exits holding 300 messages: they
    go to one spool file; the next process, once connected, sends them byte for byte with the same
    message-ids, each once, and deletes the file.  On main (no spool) the 300 are lost."""
    directory = str(tmp_path / "spool")
    consumer = Consumer(exchange_name)
    try:
        with FaultProxy((target().host, target().port)) as proxy:
            proxy.set_mode("refuse")
            conf = write_config(tmp_path / "nobox.conf", exchange_name,
                                broker={"timeout": 2, "port": proxy.port, "spool_dir": directory})
            log = hub_process(conf, 300)
            assert "lost" not in log, log[-3000:]
            entries = Spool(directory).entries()
            assert [e.count for e in entries] == [300], log[-3000:]
            with open(entries[0].path, "rb") as fh:
                spooled = {m.msg_id: m.payload for m in decode_file(fh.read())}
            proxy.set_mode("pass")
            log = hub_process(conf, 1, how="idle:3")  # a live process: it sends the spool after connecting
        got = raw_messages(consumer, 301)
        ids = [i for i, _, _ in got]
        assert len(ids) == 301 and len(set(ids)) == 301, log[-3000:]
        assert set(spooled) < set(ids)
        for msg_id, body, app in got:
            if msg_id in spooled:
                assert body in spooled[msg_id] and app and app in spooled[msg_id]
        assert Spool(directory).entries() == [], log[-3000:]
    finally:
        consumer.close()
