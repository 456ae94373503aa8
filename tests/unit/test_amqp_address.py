"""address = auto: which address each broker gets (pure), and `to` set in an encoded message."""

from __future__ import annotations

import configparser

import pytest
from proton import Message

from koji_messagebus.amqp.address import encode_segment, flavour, route, subject_of, with_to
from koji_messagebus.amqp.connection import BrokerInfo
from koji_messagebus.config.settings import parse_config
from koji_messagebus.format import codec as amqp_codec

RABBIT3, RABBIT4 = BrokerInfo("RabbitMQ", "3.10.8"), BrokerInfo("RabbitMQ", "4.0.5")
ARTEMIS, BROKERJ = BrokerInfo("apache-activemq-artemis", "2.40.0"), BrokerInfo("Apache Qpid Broker-J Core", "9.2.0")


def cfg(**exchange):
    """The [exchange] settings route() takes."""
    p = configparser.RawConfigParser()
    p.read_dict({"broker": {"username": "u", "password": "p"}, "exchange": {"name": "koji.events", **exchange}})
    return parse_config(p, "t.conf").exchange


@pytest.mark.parametrize("broker, kind", [(RABBIT3, "rabbitmq3"), (RABBIT4, "rabbitmq4"), (ARTEMIS, "artemis"),
                                          (BROKERJ, "brokerj"), (BrokerInfo("qpid-cpp", "1.39"), "other"),
                                          (BrokerInfo(), "other"), (BrokerInfo("RabbitMQ", ""), "rabbitmq3")])
def test_flavour_from_the_open_frame(broker, kind):
    assert flavour(broker) == kind


def test_auto_topic_per_broker():
    c = cfg()
    assert (route(c, RABBIT3).target, route(c, RABBIT3).to) == ("/exchange/koji.events", None)
    r4 = route(c, RABBIT4)
    assert r4.target is None and r4.to_for("koji.event.Tag.f44/x y") == \
        "/exchanges/koji.events/koji.event.Tag.f44%2Fx%20y"
    assert r4.creates == "rabbitmq-management"
    art = route(c, ARTEMIS)
    assert art.target is None and art.to_for("koji.event.Tag.a/b") == "koji.event.Tag.a/b" and not art.creates
    bj = route(c, BROKERJ)
    assert (bj.target, bj.to, bj.creates) == ("koji.events", None, "amqp-management")
    other = route(c, BrokerInfo("qpid-cpp", "1.39"))
    assert other.target == "koji.events" and other.hints and "unknown broker" in other.why


def test_auto_headers_per_broker():
    c = cfg(type="headers")
    assert route(c, RABBIT4).target == "/exchanges/koji.events" and route(c, RABBIT4).to is None
    art = route(c, ARTEMIS)
    assert art.target == "koji.events" and art.capabilities == ("topic",)


def test_explicit_templates_are_used_as_written_on_every_broker():
    for broker in (RABBIT3, RABBIT4, ARTEMIS, BROKERJ):
        assert route(cfg(address="/exchange/{name}"), broker).target == "/exchange/koji.events"
        per = route(cfg(address="/exchanges/{name}/{routing_key}"), broker)
        assert per.target is None and per.to_for("a/b") == "/exchanges/koji.events/a%2Fb"


def test_encode_segment_keeps_only_unreserved_characters():
    assert encode_segment("a.b-c_d~e/f g%h#*") == "a.b-c_d~e%2Ff%20g%25h%23%2A"


@pytest.mark.parametrize("subject", ["k", "k" * 300])
@pytest.mark.parametrize("old_to", [None, "/exchange/x"])
def test_with_to_gives_the_bytes_the_codec_writes_with_that_to(subject, old_to):
    args = ("id-1", 1700000000.25, subject)
    before = amqp_codec.encode_message(*args, old_to, {"a": 1}, {"body": [1, 2]})
    after = with_to(before, "/exchanges/e/k%2F1")
    assert after == amqp_codec.encode_message(*args, "/exchanges/e/k%2F1", {"a": 1}, {"body": [1, 2]})
    assert subject_of(after) == subject


def test_with_to_on_messages_proton_encoded():
    import uuid

    msg = Message(id=uuid.uuid4(), subject="s.k", durable=True, properties={"x": 1}, body={"y": 2})
    out = Message()
    out.decode(with_to(msg.encode(), "/q"))
    assert (out.address, out.subject, out.id, out.properties, out.body) == ("/q", "s.k", msg.id, {"x": 1}, {"y": 2})
    assert subject_of(Message(body=1).encode()) is None
