"""Routing keys in addresses: a Koji tag name may hold `/` (Koji's default name policy allows it).
With a `{routing_key}` address template the key is percent-encoded in the address, as RabbitMQ 4.x
wants (it rejected `f44/updates` and routes `f44%2Fupdates`), and consumers still see the real key."""

from __future__ import annotations

import pytest

from devkit.brokers import target
from devkit.recorded import entries
from tests.support.hub import Hub, fire, load_plugin, unload_plugin
from tests.support.pika_consumer import Consumer

pytestmark = [pytest.mark.integration, pytest.mark.matrix]


@pytest.fixture
def rabbitmq4():
    if target().flavour != "rabbitmq4":
        pytest.skip("per-message /exchanges/NAME/KEY addresses are RabbitMQ 4.x's (run with KMB_BROKER=rabbitmq4)")


@pytest.mark.parametrize("tag", ["f44/updates", "f44+testing/ü", "a%2Fb"])
def test_a_name_with_a_slash_routes_with_the_real_key(rabbitmq4, tag, monkeypatch, conf_file, exchange_name):
    consumer = Consumer(exchange_name)
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG",
                       conf_file(exchange={"address": "/exchanges/{name}/{routing_key}"}))
    load_plugin()
    hub = Hub()
    try:
        base = entries("postTag")[0]["kwargs"]  # a real hub's maps (the schema check wants their ids)
        kwargs = {**base, "tag": {**base["tag"], "name": tag}, "build": {**base["build"], "name": "bash"},
                  "user": {**base["user"], "name": "kojiadmin"}}
        hub.request(fire("postTag", kwargs))
        (got,) = consumer.collect(expect=1)
        assert got.routing_key == f"koji.event.Tag.{tag}.bash.kojiadmin"
        assert got.headers["tag"] == tag and got.body["tag"]["name"] == tag
    finally:
        unload_plugin()
        hub.close()
        consumer.close()
