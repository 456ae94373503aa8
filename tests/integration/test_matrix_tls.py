"""The plugin over TLS (verified CA and host name, PLAIN) on the run's broker: every broker of the
matrix serves the test CA's localhost certificate on its own TLS port (scripts/services/*.sh)."""

from __future__ import annotations

import logging

import pytest

from devkit.recorded import entries
from tests.support import tls
from tests.support.hub import Hub, fire, load_plugin, unload_plugin
from tests.support.pika_consumer import bound_consumer

pytestmark = [pytest.mark.integration, pytest.mark.matrix, pytest.mark.requires("tls")]


def test_plugin_over_tls_delivers(broker, conf_file, monkeypatch, exchange_name, plugin_log):
    if broker.tls_port is None:
        pytest.skip(f"{broker.flavour}: no TLS port (KMB_BROKER_TLS_PORT)")
    consumer = bound_consumer(exchange_name)
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(broker={
        "host": "localhost", "port": broker.tls_port, "ssl": "true", "cacert": tls.CA}))
    load_plugin()
    hub = Hub()
    try:
        hub.request(fire("postTag", entries("postTag")[0]["kwargs"]))
        got = consumer.collect(expect=1)
    finally:
        hub.close()
        unload_plugin()
        consumer.close()
    assert [m.headers["type"] for m in got] == ["Tag"]
    assert not [r for r in plugin_log.records if r.levelno >= logging.ERROR]


def test_plugin_refuses_a_certificate_of_another_ca(broker, conf_file, monkeypatch, exchange_name, plugin_log):
    if broker.tls_port is None:
        pytest.skip(f"{broker.flavour}: no TLS port (KMB_BROKER_TLS_PORT)")
    consumer = bound_consumer(exchange_name)
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(broker={
        "host": "localhost", "port": broker.tls_port, "ssl": "true", "cacert": tls.UNTRUSTED_CA,
        "connect_timeout": "3"}))
    load_plugin()
    hub = Hub()
    try:
        hub.request(fire("postTag", entries("postTag")[0]["kwargs"]))
        got = consumer.collect(quiet=0.5)
    finally:
        hub.close()
        unload_plugin()
        consumer.close()
    assert got == []
    errors = " ".join(r.getMessage() for r in plugin_log.records if r.levelno >= logging.ERROR)
    assert f"localhost:{broker.tls_port}" in errors
