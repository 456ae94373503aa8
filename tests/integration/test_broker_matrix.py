"""The transport against the run's broker (KMB_BROKER*): address = auto, exchange creation, outcomes,
heartbeats, listen without deprecated features, SASL mechanisms beyond PLAIN.  scripts/test.sh runs this
file once per broker of the matrix; a test that cannot apply to a broker is skipped with the reason."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterator

import pytest

from devkit.brokers import need
from devkit.config import write_config
from devkit.recorded import entries
from koji_messagebus.amqp import AmqpConnection, BrokerError, Connection, management
from koji_messagebus.amqp.address import flavour
from koji_messagebus.amqp.receiver import open_listener
from koji_messagebus.amqp.sender import BatchOutcome
from koji_messagebus.config.settings import Config, load_config
from koji_messagebus.format.messages import format_event
from koji_messagebus.format.wire import Outgoing, encode
from tests.support.receiver import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.matrix]

TAG = entries("postTag")[0]["kwargs"]
#: the address each flavour's `auto` resolves to (what README's broker table says)
AUTO = {"rabbitmq3": "/exchange/{name}", "rabbitmq4": "/exchanges/{name}/{routing_key} per message (anonymous relay)",
        "artemis": "{routing_key} per message (anonymous relay)", "brokerj": "{name}"}


def config(tmp_path, name: str, **sections) -> Config:
    return load_config(write_config(tmp_path / f"{uuid.uuid4().hex[:6]}.conf", name, **sections))


def tag_event(tag_name: str = "f44-build") -> Outgoing:
    kwargs = {**TAG, "tag": {**TAG["tag"], "name": tag_name}}
    return encode(format_event("Tag", kwargs, "koji.event"))


def opened(cfg: Config) -> AmqpConnection:
    conn = AmqpConnection(cfg.broker, cfg.exchange, cfg.endpoints[0])
    conn.open(time.monotonic() + 10)
    return conn


@contextlib.contextmanager
def connected(cfg: Config) -> Iterator[AmqpConnection]:
    """The plugin's connection to the first endpoint, open, closed at the end."""
    conn = opened(cfg)
    try:
        yield conn
    finally:
        conn.close()


def send_once(cfg: Config, messages: list[Outgoing], seconds: float = 10.0) -> BatchOutcome:
    """Connect, send `messages` and wait for their outcome, close."""
    with connected(cfg) as conn:
        return conn.send(messages, time.monotonic() + seconds)


def test_auto_picks_the_address_from_the_open_frame_and_says_so_once(tmp_path, exchange_name, broker, plugin_log):
    cfg = config(tmp_path, exchange_name, exchange={"address": "auto"})
    with Receiver(exchange_name, t=broker) as consumer:
        for _ in range(2):
            with connected(cfg) as conn:
                assert flavour(conn.broker) == broker.flavour
                assert conn.route is not None
                assert conn.route.describe() == AUTO[broker.flavour].replace("{name}", exchange_name)
                out = conn.send([tag_event()], time.monotonic() + 10)
                assert out.error is None and len(out.accepted) == 1
        got = consumer.collect(expect=2)
    assert [r.routing_key for r in got] == [tag_event().routing_key] * 2
    said = [r.getMessage() for r in plugin_log.records if "sending to" in r.getMessage()]
    assert len(said) == 1 and f"{broker.product} {broker.version}" in said[0], said


def test_routing_key_with_a_slash_arrives(tmp_path, exchange_name, broker):
    """Koji tag names may hold `/`: RabbitMQ 4.x needs it percent-encoded in the address."""
    cfg = config(tmp_path, exchange_name, exchange={"address": "auto"})
    msg = tag_event("f44/side")
    with Receiver(exchange_name, t=broker) as consumer:
        out = send_once(cfg, [msg])
        got = consumer.collect(expect=1)
    assert out.error is None and out.lost == [] and len(out.accepted) == 1
    assert [r.routing_key for r in got] == [msg.routing_key]


@pytest.mark.requires("headers-match")
def test_headers_exchange_routes_on_the_headers(tmp_path, exchange_name, broker):
    cfg = config(tmp_path, exchange_name, exchange={"address": "auto", "type": "headers"})
    with Receiver(exchange_name, "headers", bindings=[{"type": "Tag"}], t=broker) as consumer:
        out = send_once(cfg, [tag_event()])
        got = consumer.collect(expect=1)
    assert out.error is None and len(out.accepted) == 1
    assert [r.headers["type"] for r in got] == ["Tag"]


def test_the_plugin_creates_the_exchange_where_the_broker_allows(tmp_path, exchange_name, broker):
    need("exchange-creation")
    cfg = config(tmp_path, exchange_name, exchange={"address": "auto", "durable": "false"})
    with connected(cfg) as conn:  # nobody declared the exchange
        with Receiver(exchange_name, declare=False, t=broker) as consumer:
            out = conn.send([tag_event()], time.monotonic() + 10)
            got = consumer.collect(expect=1)
    assert conn.exchange_state in {"rabbitmq4": ("declared",), "brokerj": ("created",), "artemis": ("",)}[
        broker.flavour]
    assert out.error is None and [r.routing_key for r in got] == [tag_event().routing_key]


def test_a_missing_exchange_rabbitmq3_cannot_create_is_one_clear_error(tmp_path, exchange_name, broker):
    if broker.flavour != "rabbitmq3":
        pytest.skip(f"{broker.flavour} creates the exchange (tested above)")
    cfg = config(tmp_path, exchange_name, exchange={"address": "auto"})
    with pytest.raises(BrokerError) as info:
        opened(cfg)
    text = str(info.value)
    assert info.value.kind == "not-found" and info.value.final
    assert f"exchange '{exchange_name}'" in text and broker.endpoint in text
    assert f"<<\"{exchange_name}\">>), topic," in text and "rabbitmqctl eval 'rabbit_exchange:declare(" in text


def test_an_unroutable_message_is_not_lost(tmp_path, exchange_name, broker, plugin_log):
    """RabbitMQ 4.x answers `released` for a message no queue is bound for: counted, said at INFO."""
    need("released-unroutable")
    cfg = config(tmp_path, exchange_name, exchange={"address": "auto", "durable": "false"})
    out = send_once(cfg, [tag_event(), tag_event()])
    assert out.error is None and out.lost == [] and len(out.accepted) == 2 and len(out.unroutable) == 2
    assert not [r for r in plugin_log.records if r.levelno >= logging.WARNING]


def test_heartbeat_of_one_second_is_accepted_and_kept_alive(tmp_path, exchange_name, broker):
    """RabbitMQ 4.x refuses an idle time-out under 1000 ms; proton advertises half the heartbeat."""
    cfg = config(tmp_path, exchange_name, broker={"heartbeat": "1"})
    conn = Connection(cfg.broker, cfg.exchange, cfg.endpoints[0])
    try:
        conn.open(time.monotonic() + 10)
        end = time.monotonic() + 2.5
        while time.monotonic() < end:  # the broker's heartbeats keep us healthy
            assert conn.healthy(), conn.error
            time.sleep(0.2)
    finally:
        conn.close()


@pytest.mark.parametrize("ex_type", ["topic", "headers"])
def test_listen_subscribes_the_brokers_way_and_cleans_up(tmp_path, exchange_name, broker, ex_type):
    if ex_type == "headers" and broker.flavour == "brokerj":
        pytest.skip("brokerj: Broker-J binds no AMQP 1.0 link on a headers exchange (a queue bound through "
                    "$management is needed: tests/support/receiver.py)")
    cfg = config(tmp_path, exchange_name, exchange={"address": "auto", "type": ex_type, "durable": "false"})
    if broker.flavour == "rabbitmq3":
        Receiver(exchange_name, ex_type, t=broker).close(delete_exchange=False)  # declares it (0-9-1)
    else:
        management.prepare_exchange(cfg.broker, cfg.exchange, cfg.endpoints)
    keys = ["koji.event.Tag.#"] if ex_type == "topic" else [""]
    listener = open_listener(cfg.broker, cfg.exchange, cfg.topic, cfg.endpoints, keys=keys)
    got: list = []
    try:
        send_once(cfg, [tag_event(), tag_event()])
        listener.listen(lambda m: got.append(m) or len(got) < 2, time.monotonic() + 10)
        queue = listener.subscription.queue
    finally:
        listener.close()
    assert [m.subject for m in got] == [tag_event().routing_key] * 2
    assert str(listener.broker_info).startswith(broker.product)
    if broker.flavour == "rabbitmq4":  # the exclusive queue went with the listener
        assert queue
        import pika

        from tests.support.pika_consumer import pika_parameters

        with pika.BlockingConnection(pika_parameters()) as check:
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
                check.channel().queue_declare(queue, passive=True)
            assert gone.value.reply_code == 404
    if broker.flavour != "rabbitmq3":
        Receiver(exchange_name, ex_type, declare=False, t=broker).close()  # remove the exchange


@pytest.mark.parametrize("mech", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_end_to_end_and_only_that_mechanism(tmp_path, exchange_name, broker, mech):
    """Mechanisms beyond proton's own come from Cyrus SASL; only the configured one is offered."""
    if not broker.scram_port:
        pytest.skip(f"{broker.flavour}: needs scram: {broker.why_not('scram')}")
    if mech == "SCRAM-SHA-512" and broker.flavour == "brokerj":
        pytest.skip("brokerj: Broker-J's Plain provider offers SCRAM-SHA-1 and SCRAM-SHA-256, not SHA-512")
    over = {"auth": mech, "port": str(broker.scram_port)}
    cfg = config(tmp_path, exchange_name, broker=over, exchange={"durable": "false"})
    with Receiver(exchange_name, t=broker) as consumer:
        with connected(cfg) as conn:
            assert conn.connection.mechanism == mech
            offered = conn.connection.offered_mechanisms or ()
            assert mech in offered and len(offered) > 1, offered  # others offered, and not used
            out = conn.send([tag_event()], time.monotonic() + 10)
        got = consumer.collect(expect=1)
    assert out.error is None and len(got) == 1
    wrong = config(tmp_path, exchange_name, broker={**over, "password": "wrong"})
    with pytest.raises(BrokerError) as info:
        opened(wrong)
    assert info.value.kind == "auth" and f"the broker refused the user name and password ({mech})" in \
        str(info.value)


def test_rabbitmq4_exchange_it_may_not_create_is_one_clear_error_in_check(tmp_path, broker):
    """PUT /exchanges/NAME refused (here: the reserved `amq.` prefix, as for a user without the configure
    right), the exchange missing: found before the first message, one error naming exchange, broker and fix,
    and `koji-messagebus check` says so."""
    if broker.flavour != "rabbitmq4":
        pytest.skip(f"{broker.flavour}: the /management node is RabbitMQ 4.x's")
    import subprocess
    import sys

    name = f"amq.kmb-{uuid.uuid4().hex[:8]}"
    for address in ("auto", "/exchanges/{name}/{routing_key}"):
        cfg = config(tmp_path, name, exchange={"address": address})
        with pytest.raises(BrokerError) as info:
            opened(cfg)
        text = str(info.value)
        assert info.value.kind == "not-found", text
        assert f"exchange '{name}' does not exist on RabbitMQ {broker.version}" in text
        assert f"{broker.endpoint} and the plugin could not create it (PUT /exchanges/{name}: 403" in text
        assert f"<<\"{name}\">>), topic," in text and "rabbitmqctl eval 'rabbit_exchange:declare(" in text
    res = subprocess.run([sys.executable, "-m", "koji_messagebus.cli", "--config", cfg.path, "check"],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and f"exchange '{name}' does not exist" in res.stdout + res.stderr


def test_rabbitmq4_an_exchange_declared_otherwise_is_used_as_it_is(tmp_path, exchange_name, broker, plugin_log):
    if broker.flavour != "rabbitmq4":
        pytest.skip(f"{broker.flavour}: the /management node is RabbitMQ 4.x's")
    with Receiver(exchange_name, "fanout", bindings=[""], t=broker) as consumer:  # fanout, not topic
        with connected(config(tmp_path, exchange_name, exchange={"type": "topic"})) as conn:
            out = conn.send([tag_event()], time.monotonic() + 10)
        got = consumer.collect(expect=1)
    assert conn.exchange_state.startswith("exists (not declared: PUT /exchanges/"), conn.exchange_state
    assert out.error is None and len(got) == 1


def test_through_the_hub_an_unroutable_message_is_info_not_lost(tmp_path, exchange_name, broker, plugin_log,
                                                                 monkeypatch):
    """The plugin as the hub loads it, on RabbitMQ 4.x: nobody bound a queue, so each message is
    `released`; the request logs no error, and one INFO line says so."""
    need("released-unroutable")
    from koji_messagebus.amqp import sender
    from tests.support.hub import Hub, fire, load_plugin, unload_plugin

    monkeypatch.setattr(sender, "UNROUTABLE", sender.UnroutableLog())
    monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", write_config(tmp_path / "hub.conf", exchange_name,
                                                              exchange={"durable": "false"}))
    load_plugin()
    hub = Hub()
    try:
        for _ in range(3):
            hub.request(fire("postTag", TAG))
    finally:
        hub.close()
        unload_plugin()
    assert [r.getMessage() for r in plugin_log.records if r.levelno >= logging.ERROR] == []
    said = [r for r in plugin_log.records if "no queue bound for them" in r.getMessage()]
    # one line at once, the rest counted in one more at exit (log_cause: one line a minute)
    assert len(said) <= 2 and all(r.levelno == logging.INFO for r in said), said
    assert said[0].getMessage().startswith("messagebus: 1 message(s) went to exchange ")
    assert sender.UNROUTABLE.total == 3


def test_cli_listen_says_which_broker_and_prints_what_arrives(tmp_path, exchange_name, broker):
    import json
    import subprocess
    import sys

    cfg = config(tmp_path, exchange_name, exchange={"durable": "false"})
    if broker.flavour == "rabbitmq3":
        Receiver(exchange_name, t=broker).close(delete_exchange=False)  # declares it (0-9-1)
    else:
        management.prepare_exchange(cfg.broker, cfg.exchange, cfg.endpoints)
    proc = subprocess.Popen([sys.executable, "-m", "koji_messagebus.cli", "--config", cfg.path, "listen",
                             "--key", "koji.event.Tag.#", "--count", "2", "--timeout", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None and proc.stdout is not None
        first = proc.stderr.readline()  # "listening on ..." once subscribed
        assert first.startswith("listening on ") and f"{broker.product} {broker.version}" in first, first
        send_once(cfg, [tag_event(), tag_event()])
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["routing_key"] for r in records] == [tag_event().routing_key] * 2
    if broker.flavour != "rabbitmq3":
        Receiver(exchange_name, declare=False, t=broker).close()  # remove the exchange


def test_listen_gets_every_value_of_a_message_beyond_protons_65535(tmp_path, exchange_name, broker):
    """proton's decoder keeps at most 65,535 values of a list or map; the listener must not hand
    over a truncated body (a content-generator Import with thousands of outputs is realistic)."""
    cfg = config(tmp_path, exchange_name, exchange={"address": "auto", "durable": "false"})
    if broker.flavour == "rabbitmq3":
        Receiver(exchange_name, "topic", t=broker).close(delete_exchange=False)  # declares it (0-9-1)
    else:
        management.prepare_exchange(cfg.broker, cfg.exchange, cfg.endpoints)
    kwargs = dict(entries("postImport")[0]["converted"])
    kwargs["outputs"] = list(range(70_000))
    big = encode(format_event("Import", kwargs, "koji.event"))
    listener = open_listener(cfg.broker, cfg.exchange, cfg.topic, cfg.endpoints, keys=["koji.event.Import.#"])
    got: list = []
    try:
        out = send_once(cfg, [big], 20)
        assert out.error is None and out.accepted == [big], out
        listener.listen(lambda m: got.append(m) or False, time.monotonic() + 20)
    finally:
        listener.close()
        if broker.flavour != "rabbitmq3":
            Receiver(exchange_name, "topic", declare=False, t=broker).close()
    assert len(got) == 1 and got[0].body["outputs"] == list(range(70_000))
    assert got[0].properties["type"] == "Import"
