"""The broker goes away mid-run and comes back (its connections cut, then refused, as a restart
looks to a client), on the run's broker through devkit/faultproxy.py: nothing is lost, no request
waits longer than the configured timeouts."""

from __future__ import annotations

import copy
import time

import pytest

from devkit.faultproxy import FaultProxy
from devkit.recorded import entries
from tests.support.hub import Hub, fire, load_plugin, unload_plugin
from tests.support.pika_consumer import bound_consumer

pytestmark = [pytest.mark.integration, pytest.mark.matrix]

CONNECT_TIMEOUT, TIMEOUT, RETRY = 2.0, 3.0, 0.5


def test_broker_restart_mid_run_loses_nothing(broker, conf_file, monkeypatch, exchange_name):
    consumer = bound_consumer(exchange_name)
    proxy = FaultProxy((broker.host, broker.port)).start()
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(broker={
        "host": "127.0.0.1", "port": proxy.port, "connect_timeout": CONNECT_TIMEOUT, "timeout": TIMEOUT,
        "retry_interval": RETRY}))
    load_plugin()
    hub = Hub()
    base = entries("postTag")[0]["kwargs"]
    sent: list[str] = []
    slowest = 0.0

    def request() -> None:
        nonlocal slowest
        kw = copy.deepcopy(base)
        kw["tag"]["name"] = f"rs{len(sent)}"
        sent.append(kw["tag"]["name"])
        start = time.monotonic()
        hub.request(fire("postTag", kw))
        slowest = max(slowest, time.monotonic() - start)

    try:
        request()
        assert len(consumer.collect(expect=1)) == 1
        proxy.set_mode("refuse")
        assert proxy.cut() >= 1  # the warm connection dies with the broker
        for _ in range(5):
            request()
        proxy.set_mode("pass")
        time.sleep(RETRY * 2)
        request()
        request()
        got = consumer.collect(expect=len(sent) - 1, timeout=15)
    finally:
        hub.close()
        unload_plugin()
        proxy.stop()
        consumer.close()
    arrived = {m.routing_key.split(".")[3] for m in got}
    assert arrived == set(sent[1:]), f"lost: {sorted(set(sent[1:]) - arrived)}"
    assert slowest < CONNECT_TIMEOUT + TIMEOUT + 1.0, slowest
    assert proxy.accepted >= 2  # it came back on a new connection
