"""The test consumers themselves, on the run's broker: what a plain proton sender put on the broker
is what the AMQP 1.0 receiver and the pika consumer report (so a product test cannot pass or fail
because of its consumer).  The probes carry a `kind` header, not `type`: they are not plugin
messages, so the receivers' schema check (tests/support/contract.py) leaves them alone."""

from __future__ import annotations

import pytest
from proton import Delivery, Message, symbol

from devkit.brokers import BrokerTarget, need
from tests.support.pika_consumer import Consumer
from tests.support.receiver import Receiver, connect

pytestmark = [pytest.mark.integration, pytest.mark.matrix]


class _TopicTarget:
    """Link option: a multicast (topic) target on Artemis."""

    def apply(self, link) -> None:
        link.target.capabilities.put_object(symbol("topic"))

    def test(self, link) -> bool:
        return bool(link.is_sender)


def send_plain(t: BrokerTarget, exchange: str, key: str, props: dict, body: object) -> None:
    """One durable message, sent the way each broker routes a topic message without the plugin."""
    conn = connect(t)
    try:
        msg = Message(body=body, subject=key, properties=props, durable=True, id="kmb-harness-1")
        if t.flavour == "rabbitmq4":
            sender = conn.create_sender(f"/exchanges/{exchange}/{key}")
        elif t.flavour == "rabbitmq3":
            sender = conn.create_sender(f"/exchange/{exchange}")
        elif t.flavour == "artemis":
            sender = conn.create_sender(key, options=_TopicTarget())
        else:
            sender = conn.create_sender(exchange)
        sender.send(msg, error_states=[Delivery.REJECTED])  # released: no queue bound (4.x says so)
    finally:
        conn.close()


def test_amqp10_receiver_reads_what_was_sent(broker, exchange_name):
    rx = Receiver(exchange_name, bindings=["koji.event.Tag.#"])
    try:
        send_plain(broker, exchange_name, "koji.event.Tag.f40.pkg.alice", {"kind": "Tag", "n": 3}, {"a": [1, "x"]})
        send_plain(broker, exchange_name, "koji.event.Untag.f40.pkg.alice", {"kind": "Untag"}, {})
        got = rx.collect(expect=1, quiet=0.5)
    finally:
        rx.close()
    assert [(m.routing_key, m.headers, m.body, m.delivery_mode, m.message_id) for m in got] == [
        ("koji.event.Tag.f40.pkg.alice", {"kind": "Tag", "n": 3}, {"a": [1, "x"]}, 2, "kmb-harness-1")]


def test_pika_consumer_reads_what_was_sent(broker, exchange_name):
    need("pika")
    consumer = Consumer(exchange_name, bindings=["koji.event.Tag.#"])
    try:
        send_plain(broker, exchange_name, "koji.event.Tag.f40.pkg.alice", {"kind": "Tag", "n": 3}, {"a": [1, "x"]})
        got = consumer.collect(expect=1, quiet=0.5)
    finally:
        consumer.close()
    assert [(m.routing_key, m.headers, m.body, m.delivery_mode, m.message_id) for m in got] == [
        ("koji.event.Tag.f40.pkg.alice", {"kind": "Tag", "n": 3}, {"a": [1, "x"]}, 2, "kmb-harness-1")]
    assert got[0].subject == (None if consumer.hides_subject else "koji.event.Tag.f40.pkg.alice")


def test_target_comes_from_the_environment(broker):
    from devkit.brokers import from_env
    other = from_env({"KMB_BROKER": "artemis", "KMB_BROKER_PORT": "15680"})
    assert (other.flavour, other.port, other.user, other.has("pika")) == ("artemis", 15680, "admin", False)
    with pytest.raises(ValueError, match="loopback only"):
        from_env({"KMB_BROKER_HOST": "broker.example.org"})
    assert broker == from_env()


@pytest.mark.requires("headers-match")
def test_amqp10_receiver_matches_headers(broker, exchange_name):
    """Headers bindings (RabbitMQ 4, Broker-J) or selectors (Artemis) see only the matching message."""
    rx = Receiver(exchange_name, ex_type="headers", bindings=[{"kind": "Tag", "tag": "f40"}])
    try:
        for props in ({"kind": "Tag", "tag": "f40"}, {"kind": "Tag", "tag": "f41"}, {"kind": "Untag", "tag": "f40"}):
            conn = connect(broker)
            try:
                if broker.flavour == "rabbitmq4":
                    sender = conn.create_sender(f"/exchanges/{exchange_name}")
                elif broker.flavour == "artemis":  # one address for the headers exchange
                    sender = conn.create_sender(exchange_name, options=_TopicTarget())
                else:  # Broker-J: the exchange
                    sender = conn.create_sender(exchange_name)
                sender.send(Message(body=props["tag"], properties=props, durable=True),
                            error_states=[Delivery.REJECTED])
            finally:
                conn.close()
        got = rx.collect(expect=1, quiet=0.5)
    finally:
        rx.close()
    assert [(m.headers, m.body) for m in got] == [({"kind": "Tag", "tag": "f40"}, "f40")]
