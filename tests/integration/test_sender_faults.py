"""The sender thread under faults, short versions of bench/faults.py: hub processes (the plugin
loaded as the hub loads it, real PostgreSQL) sending to the real RabbitMQ through the fault proxy,
every message counted against the hubs' own ledger.  Only numbers that cannot be flaky are
asserted: nothing lost, no duplicate after a refused outage (the broker took nothing it did not
settle), no request longer than `timeout` plus scheduling slack, during the fault or after it.
And a poison message: RabbitMQ 3.10's session crash on a full `x-overflow: reject-publish` queue."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid

import koji.plugin
import pika
import pytest

from devkit.brokers import target
from devkit.config import write_config
from devkit.faults import FAULTS, Run, run_fault
from devkit.load import Arrivals
from devkit.recorded import entries
from devkit.rejectqueue import RejectQueue
from koji_messagebus import plugin as mb_plugin
from koji_messagebus import runtime as mb_runtime
from koji_messagebus.runtime import Runtime
from tests.support.hub import Hub, db_connect, load_plugin, unload_plugin

pytestmark = pytest.mark.integration

TIMEOUT = 1.0
SLACK = 0.5  # scheduling slack on a 2-core machine running hubs, broker and database
#: bench/faults.py's run, short
RUN = Run(procs=2, threads=2, think=0.05, before=1.5, fault_seconds=2.0, sigstop_seconds=2.0, after=2.0,
          timeout=TIMEOUT, connect_timeout=3.0, retry_interval=30.0, heartbeat=10, max_pending=100000,
          drain_wait=40.0, linger=30.0)
#: the slow broker holds settlements 1-2 s: a timeout above that, so a request can wait for its own
SLOW_TIMEOUT = 3.0


@pytest.mark.skipif(target().flavour != "rabbitmq3", reason="the proxy forwards to the RabbitMQ 3.x port")
@pytest.mark.parametrize("outbox_on", [True, False], ids=["outbox", "memory"])
@pytest.mark.parametrize("fault", ["stop", "sigstop", "cut", "hubkill", "slow", "rejectq"])
def test_fault_under_load_loses_nothing_and_no_request_waits_past_timeout(fault, outbox_on):
    if fault == "hubkill" and not outbox_on:
        pytest.skip("without the outbox a killed process loses what it held in memory (by design)")
    run = dataclasses.replace(RUN, timeout=SLOW_TIMEOUT) if fault == "slow" else RUN
    out = run_fault(fault, outbox_on, run, None)
    print(f"\n{out.row()}\n{out.target_row()}")
    assert out.committed > 50
    assert out.lost == 0, out.target_row()
    limit = (run.timeout + SLACK) * 1000
    assert out.during[2] <= limit, out.row()
    assert out.after[2] <= limit, out.target_row()  # the broker's return: no request waits behind the backlog
    if FAULTS[fault].action == "refuse":
        assert out.duplicates == 0, out.target_row()  # the broker took nothing it did not settle
    if fault in ("stop", "sigstop"):
        assert out.normal_after is not None  # delivery resumed after the heal


@pytest.mark.skipif(target().flavour != "rabbitmq3", reason="the proxy forwards to the RabbitMQ 3.x port")
def test_a_slow_broker_is_not_taken_for_a_dead_one():
    """Settlements 1-2 s late, `timeout` above that: no connection is given up, so no message is sent twice."""
    out = run_fault("slow", True, dataclasses.replace(RUN, timeout=SLOW_TIMEOUT), None)
    print(f"\n{out.row()}\n{out.target_row()}")
    assert out.committed > 50
    assert (out.losses, out.duplicates) == (0, 0), out.target_row()


@pytest.fixture
def full_queue():
    """RabbitMQ 3.10: an exchange with a normal queue and a full reject-publish queue for Tag."""
    if target().flavour != "rabbitmq3":
        pytest.skip("the session crash is RabbitMQ 3.x's")
    tag = uuid.uuid4().hex[:8]
    exchange, ok = f"kmb.poison.{tag}", f"kmb.poison.{tag}.ok"
    ch = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")).channel()
    ch.exchange_declare(exchange, "topic", durable=False, auto_delete=False)
    ch.queue_declare(ok, auto_delete=False)
    ch.queue_bind(ok, exchange, "#")
    ch.connection.close()
    with RejectQueue(exchange, ["koji.event.Tag.#"]):
        yield exchange, ok
    ch = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1")).channel()
    ch.queue_delete(ok)
    ch.exchange_delete(exchange)
    ch.connection.close()


def test_a_poison_message_is_set_apart_and_the_rest_flows(full_queue, tmp_path, monkeypatch, plugin_log):
    exchange, ok = full_queue
    conf = write_config(tmp_path / "messagebus.conf", exchange, broker={"timeout": TIMEOUT, "connect_timeout": 2})
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf)
    given: list[tuple[str, str]] = []  # (type, message id) of every message the plugin built
    encode = mb_runtime.encode

    def recording_encode(*args, **kws):
        msg = encode(*args, **kws)
        given.append((msg.type, msg.msg_id))
        return msg

    monkeypatch.setattr(mb_runtime, "encode", recording_encode)
    load_plugin()
    mb_plugin.reset(Runtime())
    arrivals = Arrivals(ok)
    hub = Hub(db_connect())
    tag_kwargs = entries("postTag")[0]["kwargs"]
    other = entries("postBuildStateChange")[0]["kwargs"]
    try:
        times = []

        def request(cbtype, kwargs):
            def handler(cur):
                koji.plugin.run_callbacks(cbtype, **kwargs)
            start = time.monotonic()
            hub.request(handler)
            times.append(time.monotonic() - start)

        request("postTag", tag_kwargs)  # the poison: routed to the full reject-publish queue
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("poison message" in r.getMessage() for r in plugin_log.records):
            request("postBuildStateChange", other)  # others keep flowing meanwhile
            time.sleep(0.05)
        lost = [r.getMessage() for r in plugin_log.records
                if r.levelno >= logging.ERROR and "poison message" in r.getMessage()]
        assert len(lost) == 1, [r.getMessage() for r in plugin_log.records]
        assert "Tag x1" in lost[0] and "koji.event.Tag." in lost[0]
        assert max(times) <= TIMEOUT + SLACK
        sender = mb_plugin.runtime().delivery.sender
        assert sender.wait_idle(5)
        others = {i for t, i in given if t != "Tag"}
        assert len(others) >= 3
        assert arrivals.wait_for(others, 10), f"missing {others - set(arrivals.times)}"  # the rest flowed
        assert sender.lost == 1
    finally:
        arrivals.stop()
        hub.close()
        unload_plugin()
