"""`koji-messagebus status`, retention and replay, and the message TTL, against the real RabbitMQ
and PostgreSQL: hub processes of their own (subprocesses loading the plugin as the hub does),
the broker reached through a fault proxy of this test's own (never the shared broker stopped),
what arrived checked with pika."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import koji.plugin
import pytest

from devkit.brokers import target
from devkit.config import until, write_config
from devkit.faultproxy import FaultProxy
from devkit.recorded import entries
from koji_messagebus import plugin as mb_plugin
from koji_messagebus.cli import main, outbox_admin
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.runtime import Runtime
from koji_messagebus.transaction import outbox
from tests.support.hub import DSN, Hub, load_plugin, unload_plugin
from tests.support.outbox_db import SCHEMA, connect_db
from tests.support.pika_consumer import Consumer, pika_parameters

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PER_PROCESS = 150

HUB_SCRIPT = """
import sys
sys.path.insert(0, {repo!r})
import koji.plugin
from koji_messagebus import plugin as mb
from devkit.recorded import entries
from tests.support.hub import Hub, fire, load_plugin
load_plugin()
hub = Hub()
kwargs = entries("postTag")[0]["kwargs"]
for _ in range({count}):
    hub.request(fire("postTag", kwargs))
print("sent", flush=True)
sys.stdin.readline()  # until the test says: exit cleanly
mb.reset(None)
hub.close()
"""


def status(capsys, conf: str, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--config", conf, "status", *args])
    return code, capsys.readouterr().out


def metrics(text: str) -> dict[str, float]:
    """'name{labels}' -> value, from the Prometheus text format."""
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def per_pid(values: dict[str, float], metric: str) -> dict[int, float]:
    prefix = f"koji_messagebus_{metric}{{pid=\""
    return {int(k[len(prefix):].split('"')[0]): v for k, v in values.items() if k.startswith(prefix)}


@pytest.mark.requires("pika")
def test_status_of_two_hub_processes_then_one_killed_then_the_broker_unreachable(tmp_path, exchange_name, capsys):
    t = target()
    proxy = FaultProxy(upstream=(t.host, t.port)).start()
    status_dir = tmp_path / "status"
    conf = write_config(tmp_path / "messagebus.conf", exchange_name,
                        broker={"host": "127.0.0.1", "port": proxy.port, "timeout": 2, "connect_timeout": 2},
                        status={"dir": status_dir})
    consumer = Consumer(exchange_name)
    env = {**os.environ, "KOJI_MESSAGEBUS_CONFIG": conf}
    procs = [subprocess.Popen([sys.executable, "-c", HUB_SCRIPT.format(repo=REPO, count=PER_PROCESS)], env=env,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "sent"
        received = consumer.collect(expect=2 * PER_PROCESS, timeout=20)
        assert len(received) == 2 * PER_PROCESS

        def published() -> dict[int, float]:
            return per_pid(metrics(status(capsys, conf, "--format", "prometheus")[1]), "published_total")
        assert until(lambda: published() == {p.pid: PER_PROCESS for p in procs}, 20)
        code, text = status(capsys, conf, "--format", "prometheus")
        values = metrics(text)
        assert code == 0, text
        assert sum(per_pid(values, "published_total").values()) == len(received)
        assert per_pid(values, "connected") == {p.pid: 1 for p in procs}
        assert per_pid(values, "lost_total") == {p.pid: 0 for p in procs}
        assert per_pid(values, "held_messages") == {p.pid: 0 for p in procs}
        assert values['koji_messagebus_processes{state="running"}'] == 2
        assert "# TYPE koji_messagebus_published_total counter" in text
        assert "# HELP koji_messagebus_connected " in text

        # one process killed: shown as gone, its file removed; the other still serves, so healthy
        killed, alive = procs
        killed.send_signal(signal.SIGKILL)
        killed.wait(10)
        code, text = status(capsys, conf)
        assert f"{killed.pid}: gone" in text and code == 0, text
        assert not (status_dir / f"{killed.pid}.json").exists()
        code, text = status(capsys, conf, "--format", "prometheus")
        assert per_pid(metrics(text), "connected") == {alive.pid: 1}

        # the broker unreachable (the proxy refuses and cuts): no process connected, exit 2 with the reason
        proxy.set_mode("refuse")
        proxy.cut()
        assert until(lambda: status(capsys, conf)[0] == 2, 20)
        code, text = status(capsys, conf)
        assert "health: broken: no hub process is connected to the broker" in text, text
        assert f"{alive.pid} " in text.split("health:")[1]

        # a clean exit removes the process's own file
        assert alive.stdin is not None
        alive.stdin.write("exit\n")
        alive.stdin.flush()
        assert alive.wait(20) == 0
        assert not (status_dir / f"{alive.pid}.json").exists()
        code, text = status(capsys, conf)
        assert code == 1 and "no hub process has reported" in text, text
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        consumer.close()
        proxy.stop()


def tag_and_build_kwargs():
    return entries("postTag")[0]["kwargs"], entries("postBuildStateChange")[0]["kwargs"]


@pytest.mark.requires("pika")
def test_kept_messages_replayed_to_a_recreated_queue_with_their_ids_in_order(db, tmp_path, exchange_name,
                                                                             monkeypatch, capsys):
    hub_conf = tmp_path / "hub.conf"
    hub_conf.write_text(f"[hub]\nDBConnectionString = {DSN} options='-c search_path={SCHEMA}'\n")
    conf = write_config(tmp_path / "messagebus.conf", exchange_name,
                        outbox={"enabled": True, "hub_config": hub_conf, "keep": 3600},
                        status={"dir": tmp_path / "status"})
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf)
    consumer = Consumer(exchange_name)
    queue = consumer.queue
    load_plugin()
    mb_plugin.reset(Runtime())
    hub = Hub(connect_db())
    tag, build = tag_and_build_kwargs()
    try:
        for _ in range(100):  # 500 messages: 3 Tag and 2 BuildStateChange per request
            hub.request(lambda cur: ([koji.plugin.run_callbacks("postTag", **tag) for _ in range(3)],
                                     [koji.plugin.run_callbacks("postBuildStateChange", **build) for _ in range(2)]))
        first = consumer.collect(expect=500, timeout=20)
        assert len(first) == 500
        cnx = connect_db()
        try:
            assert until(lambda: outbox_admin.status_kept(cnx)[0] == 0, 20)  # every row marked sent, none waiting
            cur = cnx.cursor()
            cur.execute(f"SELECT count(*) FROM {outbox.TABLE} WHERE sent_at IS NOT NULL")
            assert cur.fetchone()[0] == 500  # kept, not deleted
            cnx.rollback()
        finally:
            cnx.close()
        tags = [m.message_id for m in first if m.routing_key.startswith("koji.event.Tag.")]
        assert len(tags) == 300

        # the consumer's queue is deleted by mistake, then recreated with its binding
        consumer.ch.queue_delete(queue)
        consumer.ch.queue_declare(queue, exclusive=True)
        consumer.ch.queue_bind(queue, exchange_name, "#")
        assert consumer.collect(timeout=0.5) == []

        capsys.readouterr()
        assert main(["--config", conf, "replay", "--since", "1h", "--match", "koji.event.Tag.#", "--dry-run"]) == 0
        assert "would replay 300 message(s) (Tag x300)" in capsys.readouterr().out
        assert consumer.collect(timeout=0.5) == []  # a dry run sends nothing
        assert main(["--config", conf, "replay", "--since", "1h", "--match", "koji.event.Tag.#", "--yes"]) == 0
        assert "replayed 300 message(s) (Tag x300)" in capsys.readouterr().out
        again = consumer.collect(expect=300, timeout=20)
        assert [m.message_id for m in again] == tags  # exactly the Tag messages, in order, original ids

        # the outbox in `status`: nothing waiting, kept rows shown
        code, text = status(capsys, conf, "--format", "prometheus")
        values = metrics(text)
        assert values["koji_messagebus_outbox_up"] == 1 and values["koji_messagebus_outbox_rows"] == 0
        assert values["koji_messagebus_outbox_kept_oldest_seconds"] > 0
        assert per_pid(values, "published_total") in ({os.getpid(): 500}, {})  # rewritten within seconds
    finally:
        hub.close()
        unload_plugin()
        consumer.close()


@pytest.mark.requires("pika")
def test_the_ttl_is_on_the_message_a_pika_consumer_gets(tmp_path, exchange_name, monkeypatch):
    import pika

    conf = write_config(tmp_path / "messagebus.conf", exchange_name, message={"ttl": 90},
                        status={"dir": tmp_path / "status"})
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf)
    conn = pika.BlockingConnection(pika_parameters())
    ch = conn.channel()
    ch.exchange_declare(exchange_name, "topic", durable=True)
    queue = ch.queue_declare("", exclusive=True).method.queue
    ch.queue_bind(queue, exchange_name, "#")
    load_plugin()
    mb_plugin.reset(Runtime())
    hub = Hub()
    try:
        hub.request(lambda cur: koji.plugin.run_callbacks("postTag", **entries("postTag")[0]["kwargs"]))
        got = None
        deadline = time.monotonic() + 10
        while got is None and time.monotonic() < deadline:
            method, props, _body = ch.basic_get(queue, auto_ack=True)
            if method is not None:
                got = props
            else:
                conn.sleep(0.05)
        assert got is not None
        assert got.expiration == "90000"  # the AMQP 1.0 header ttl (ms) as 0-9-1's per-message TTL
    finally:
        hub.close()
        unload_plugin()
        ch.exchange_delete(exchange_name)
        conn.close()


def stored(count: int) -> list[int]:
    """`count` Tag messages stored as a request stores them; their row ids."""
    from koji_messagebus.format.messages import format_event
    from koji_messagebus.format.wire import encode

    cnx = connect_db()
    try:
        msgs = [encode(format_event("Tag", entries("postTag")[0]["kwargs"], "koji.event")) for _ in range(count)]
        ids = outbox.store(cnx, msgs)
        cnx.commit()
        return ids
    finally:
        cnx.close()


def rows() -> dict[int, bool]:
    """id -> marked sent."""
    cnx = connect_db()
    try:
        cur = cnx.cursor()
        cur.execute(f"SELECT id, sent_at IS NOT NULL FROM {outbox.TABLE} ORDER BY id")
        return dict(cur.fetchall())
    finally:
        cnx.close()


def accept_all(sent: list):
    def send(batch):
        sent.extend(m.msg_id for m in batch)
        return SendResult(accepted=list(batch))
    return send


def test_keep_marks_instead_of_deleting_on_every_path_and_never_resends_a_kept_row(db):
    cnx = connect_db()
    sent: list[str] = []
    try:
        own = stored(3)
        from koji_messagebus.format.wire import Outgoing
        cur = cnx.cursor()
        cur.execute(f"SELECT id, msg_id, created, msg_type, routing_key, payload FROM {outbox.TABLE} ORDER BY id")
        msgs = [Outgoing(r[1], r[2], r[3], r[4], bytes(r[5])) for r in cur.fetchall()]
        cnx.rollback()
        accept_all(sent)(msgs)  # the steady state: the sender sends the request's messages from memory ...
        assert outbox_rows.delete(cnx, own, keep=3600) == 3  # ... and its drainer marks their rows sent
        assert len(sent) == 3 and rows() == {i: True for i in own}
        settled = stored(2)
        assert outbox_rows.delete(cnx, settled, keep=3600) == 2  # the sender's batched "deletes"
        assert outbox_rows.delete(cnx, settled, keep=3600) == 0  # marked once
        abandoned = stored(2)
        assert outbox_rows.drain_ids(cnx, abandoned, accept_all(sent), keep=3600).sent == 2
        assert outbox_rows.drain_ids(cnx, abandoned, accept_all(sent), keep=3600).sent == 0  # kept: not sent again
        backlog = stored(4)
        sent.clear()
        result = outbox_rows.drain(cnx, accept_all(sent), 100, keep=3600)
        assert result.sent == 4 and len(sent) == 4  # only the unsent rows, none of the 7 kept before
        assert rows() == {i: True for i in own + settled + abandoned + backlog}
        assert outbox_rows.drain(cnx, accept_all(sent), 100, keep=3600).sent == 0
        assert outbox_admin.status(cnx) == (0, None)  # kept rows are not "waiting"
        assert outbox_admin.status_kept(cnx)[2] is not None
        # older than keep: removed by the drain; keep turned off (0): every kept row removed
        cnx.cursor().execute(f"UPDATE {outbox.TABLE} SET stored = stored - interval '2 hours' WHERE id IN %s",
                             (tuple(own),))
        cnx.commit()
        assert outbox_rows.drain(cnx, accept_all(sent), 100, keep=3600).removed == 3
        assert set(rows()) == set(settled + abandoned + backlog)
        assert outbox_rows.drain(cnx, accept_all(sent), 100, keep=0).removed == 8 and rows() == {}
    finally:
        cnx.close()


def test_keep_without_the_sent_at_column_says_to_run_outbox_init(db):
    from koji_messagebus.transaction.outbox import OutboxUnavailable

    db.cursor().execute(f"SET search_path = {SCHEMA}; ALTER TABLE {outbox.TABLE} DROP COLUMN sent_at")
    cnx = connect_db()
    try:
        with pytest.raises(OutboxUnavailable, match="needs the sent_at column .* `koji-messagebus outbox init`"):
            outbox_rows.drain(cnx, accept_all([]), 10, keep=60)
        cnx.rollback()
        stored(1)
        assert outbox_rows.drain(cnx, accept_all([]), 10).sent == 1  # keep 0: deleted, as before
        assert outbox_admin.status(cnx) == (0, None)
    finally:
        cnx.close()


def test_check_tells_that_keep_needs_the_sent_at_column(db, tmp_path, exchange_name, capsys):
    hub_conf = tmp_path / "hub.conf"
    hub_conf.write_text(f"[hub]\nDBConnectionString = {DSN} options='-c search_path={SCHEMA}'\n")
    conf = write_config(tmp_path / "messagebus.conf", exchange_name,
                        outbox={"enabled": True, "hub_config": hub_conf, "keep": 3600})
    consumer = Consumer(exchange_name)  # the exchange exists
    try:
        assert main(["--config", conf, "check"]) == 0
        db.cursor().execute(f"SET search_path = {SCHEMA}; ALTER TABLE {outbox.TABLE} DROP COLUMN sent_at")
        capsys.readouterr()
        assert main(["--config", conf, "check"]) == 1
        assert "[outbox] keep = 3600 needs the sent_at column" in capsys.readouterr().err
        assert main(["--config", conf, "outbox", "init"]) == 0
        assert main(["--config", conf, "check"]) == 0
    finally:
        consumer.close()
