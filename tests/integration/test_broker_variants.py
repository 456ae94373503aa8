"""What RabbitMQ 3.10 cannot show, against a real AMQP 1.0 peer (proton's server side, tests/support/amqp_peer.py):
settlements other than accepted, a link refused with amqp:not-found (RabbitMQ 4.2+, qpidd), per-message
addresses through an anonymous-relay link (RabbitMQ 4.x), and the hints that let qpidd create the exchange."""

from __future__ import annotations

import logging
import time

import pytest

from devkit.recorded import entries
from tests.support.amqp_peer import Peer
from tests.support.hub import Hub, fire, load_plugin, unload_plugin

pytestmark = pytest.mark.integration

TAG = entries("postTag")[0]["kwargs"]


@pytest.fixture
def hub_for(monkeypatch, conf_file):
    hubs = []

    def make(peer: Peer, **sections):
        broker = {"host": "127.0.0.1", "port": str(peer.port), "auth": "ANONYMOUS", "username": None,
                  "password": None, "connect_timeout": "3", "timeout": "3", **sections.pop("broker", {})}
        monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(broker=broker, **sections))
        load_plugin()
        hubs.append(Hub())
        return hubs[-1]

    yield make
    unload_plugin()
    for h in hubs:
        h.close()


def errors(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("outcome", ["reject", "modify"])
def test_refused_messages_are_reported_as_lost_and_not_retried(hub_for, plugin_log, outcome):
    with Peer(outcome) as peer:
        hub = hub_for(peer)
        hub.request(fire("postTag", TAG))
        peer.outcome = "accept"
        hub.request(fire("postTag", TAG))
        time.sleep(0.2)
        sent = list(peer.seen.messages)
    word = {"reject": "rejected", "modify": "modified"}[outcome]
    lost = [e for e in errors(plugin_log) if e.startswith("messagebus: lost 1 message(s) (Tag x1)")]
    assert len(lost) == 1 and f"the broker answered {word}" in lost[0]
    assert "koji.event.Tag.harness-f1-candidate.harness-hello.kojiadmin" in lost[0]
    assert len(sent) == 2 and sent[0][2] != sent[1][2]  # the refused one was not sent again


def test_a_rejection_names_the_brokers_condition_and_description(hub_for, plugin_log, exchange_name):
    """RabbitMQ 4.x rejects a message for a missing exchange with amqp:not-found and says which."""
    why = ("amqp:not-found", f"no exchange '{exchange_name}' in vhost '/'")
    with Peer("reject", reject_condition=why) as peer:
        hub_for(peer).request(fire("postTag", TAG))
    lost = [e for e in errors(plugin_log) if e.startswith("messagebus: lost 1 message(s)")]
    assert len(lost) == 1, errors(plugin_log)
    assert f"the broker answered rejected (amqp:not-found: no exchange '{exchange_name}' in vhost '/')" in lost[0]


def test_released_is_unroutable_counted_and_said_once_a_minute_at_info(plugin_log, monkeypatch, tmp_path,
                                                                        exchange_name):
    """A message no queue is bound for is `released` (RabbitMQ 4.x): not lost, not an error, said at INFO."""
    from devkit.config import write_config
    from koji_messagebus.amqp import sender
    from koji_messagebus.config.settings import load_config
    from koji_messagebus.format.messages import format_event
    from koji_messagebus.format.wire import encode

    monkeypatch.setattr(sender, "UNROUTABLE", sender.UnroutableLog())
    with Peer("release") as peer:
        cfg = load_config(write_config(tmp_path / "c.conf", exchange_name, broker={
            "port": peer.port, "auth": "ANONYMOUS", "username": None, "password": None}))
        conn = sender.AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
        conn.open(time.monotonic() + 5)
        try:
            msgs = [encode(format_event("Tag", TAG, "koji.event")) for _ in range(3)]
            outcomes = [conn.send([m], time.monotonic() + 5) for m in msgs]
        finally:
            conn.close()
    assert [(len(o.accepted), len(o.unroutable), o.lost, o.error) for o in outcomes] == [(1, 1, [], None)] * 3
    assert errors(plugin_log) == []
    said = [r for r in plugin_log.records if "no queue bound for them" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO
    assert "released" in said[0].getMessage() and "not an error" in said[0].getMessage()
    assert sender.UNROUTABLE.total == 3
    assert sender.Settlement("released").lost is None and sender.Settlement("rejected", "c", "d").lost == \
        "rejected (c: d)"


def test_unroutable_log_says_at_most_once_per_interval(plugin_log, monkeypatch):
    from koji_messagebus import log as mblog
    from koji_messagebus.amqp.sender import UnroutableLog
    from koji_messagebus.format.wire import Outgoing

    now = [0.0]
    monkeypatch.setattr(mblog, "CAUSES", mblog.CauseLog(clock=lambda: now[0]))
    counted = UnroutableLog()
    msg = Outgoing("id", 0.0, "Tag", "koji.event.Tag.x", b"")
    for t in (0.0, 1.0, 59.0, 60.5, 61.0, 130.0):
        now[0] = t
        counted.note("ex", [msg])
    said = [r.getMessage() for r in plugin_log.records if "no queue bound" in r.getMessage()]
    assert said == [  # counts since the last line: at 0, 60.5 and 130
        "messagebus: 1 message(s) went to exchange 'ex' with no queue bound for them: the broker answered released, "
        "not an error: nobody subscribed to e.g. koji.event.Tag.x; 1 so far",
        "messagebus: 3 message(s) went to exchange 'ex' with no queue bound for them in the last 60 s: the broker "
        "answered released, not an error: nobody subscribed to e.g. koji.event.Tag.x; 4 so far",
        "messagebus: 2 message(s) went to exchange 'ex' with no queue bound for them in the last 70 s: the broker "
        "answered released, not an error: nobody subscribed to e.g. koji.event.Tag.x; 6 so far"]
    assert counted.total == 6


def test_link_refused_with_not_found_is_reported_at_once(hub_for, plugin_log, exchange_name):
    with Peer(refuse_link="amqp:not-found") as peer:
        hub = hub_for(peer, exchange={"address": "{name}"})
        start = time.monotonic()
        hub.request(fire("postTag", TAG))
        elapsed = time.monotonic() - start
        assert peer.seen.messages == []
    text = " ".join(errors(plugin_log))
    assert f"exchange '{exchange_name}' (address {exchange_name}) does not exist on broker 127.0.0.1:{peer.port}" \
        in text
    assert elapsed < 1.0


def test_per_message_addresses_use_an_anonymous_relay_link(hub_for, exchange_name):
    with Peer() as peer:
        hub = hub_for(peer, exchange={"address": "/exchanges/{name}/{routing_key}"})
        hub.request(fire("postTag", TAG))
        hub.request(fire("postRepoDone", entries("postRepoDone")[0]["kwargs"]))
        time.sleep(0.2)
        targets, messages = list(peer.seen.targets), list(peer.seen.messages)
    assert targets == [None]
    assert [(subject, to) for subject, to, _ in messages] == [
        (key, f"/exchanges/{exchange_name}/{key}") for key in (
            "koji.event.Tag.harness-f1-candidate.harness-hello.kojiadmin",
            f"koji.event.RepoDone.{entries('postRepoDone')[0]['kwargs']['repo']['tag_name']}")]


def test_target_asks_brokers_that_can_to_create_the_exchange(hub_for, exchange_name):
    with Peer() as peer:
        hub = hub_for(peer, exchange={"address": "{name}", "type": "headers", "durable": "false"})
        hub.request(fire("postTag", TAG))
        time.sleep(0.2)
        seen = peer.seen
    assert seen.targets == [exchange_name]
    assert set(seen.capabilities[0]) == {"topic", "create-on-demand"}
    assert seen.properties[0] == {"exchange-type": "headers", "durable": False}
    assert len(seen.messages) == 1
