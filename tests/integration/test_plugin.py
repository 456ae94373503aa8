"""The plugin end to end, as the hub runs it, against the run's broker (KMB_BROKER*, every broker of
the matrix) and PostgreSQL; what arrived is checked with a different client (pika where the broker
speaks 0-9-1, else an AMQP 1.0 receiver)."""

from __future__ import annotations

import logging
import time

import koji.plugin
import pytest

from devkit.brokers import need, target
from devkit.config import until
from devkit.recorded import entries
from koji_messagebus.format.messages import CALLBACK_TYPES
from tests.support.hub import Hub, fire, load_plugin, unload_plugin
from tests.support.pika_consumer import bound_consumer, delete_exchange

pytestmark = [pytest.mark.integration, pytest.mark.matrix]


@pytest.fixture
def hub(monkeypatch, conf_file):
    """A hub with the plugin loaded from a config; call hub.setup(**sections) first."""
    hubs = []

    class Setup:
        def setup(self, **sections):
            monkeypatch.setenv("KOJI_MESSAGEBUS_CONFIG", conf_file(**sections))
            load_plugin()
            hubs.append(Hub())
            return hubs[-1]

    yield Setup()
    unload_plugin()
    for h in hubs:
        h.close()


def recorded_requests():
    """One request per recorded event of every type (the first two of each)."""
    out = []
    for cbtype in CALLBACK_TYPES:
        for entry in entries(cbtype)[:2]:
            out.append((cbtype, entry["kwargs"]))
    return out


def test_loaded_as_the_hub_loads_it(hub):
    hub.setup()
    registered = {cb for cb, funcs in koji.plugin.callbacks.items()
                  for f in funcs if f.__module__ == "koji_messagebus.plugin"}
    assert registered == set(CALLBACK_TYPES) | {"preCommit", "postCommit"}
    for func in koji.plugin.callbacks["postTag"]:
        # not @convert_datetime: koji's copy ran outside any guard; the plugin converts in its one pass
        assert not getattr(func, "convert_datetime", False) and getattr(func, "failure_is_an_option", False)


def test_every_event_type_arrives_exactly_as_documented(hub, exchange_name):
    consumer = bound_consumer(exchange_name)
    h = hub.setup(topic={"unsigned_rpm_sign": True})  # the recorded RPMSigns are unsigned imports (sigkey '')
    try:
        requests = recorded_requests()
        for cbtype, kwargs in requests:
            h.request(fire(cbtype, kwargs))
        got = consumer.collect(expect=len(requests))
    finally:
        consumer.close()
    assert len(got) == len(requests)
    assert len({m.message_id for m in got}) == len(got)
    for (cbtype, kwargs), msg in zip(requests, got):
        mtype = CALLBACK_TYPES[cbtype]
        assert msg.headers["type"] == mtype
        assert msg.subject == (None if consumer.hides_subject else msg.routing_key)
        assert msg.routing_key.startswith(f"koji.event.{mtype}")
        assert msg.delivery_mode == 2
        assert set(msg.body) == set(kwargs)
    sign = next(m for m in got if m.headers["type"] == "RPMSign")
    assert sign.routing_key.startswith("koji.event.RPMSign.~none~.")  # no empty token
    tag = next(m for m in got if m.headers["type"] == "Tag")
    kw = entries("postTag")[0]["kwargs"]
    assert tag.routing_key == f"koji.event.Tag.{kw['tag']['name']}.{kw['build']['name']}.{kw['user']['name']}"
    assert tag.body["build"]["completion_time"] == str(kw["build"]["completion_time"])
    assert tag.body["build"]["completion_ts"] == kw["build"]["completion_ts"]


def test_messages_are_sent_only_after_commit_and_together(hub, exchange_name):
    consumer = bound_consumer(exchange_name)
    h = hub.setup()
    seen_before_post_commit = []
    events = [("postBuildStateChange", e["kwargs"]) for e in entries("postBuildStateChange")[:3]]

    def handler(cursor):
        for cbtype, kwargs in events:
            koji.plugin.run_callbacks(cbtype, **kwargs)

    try:
        h.request(handler, on_commit=lambda: seen_before_post_commit.extend(consumer.collect(quiet=0.3)))
        got = consumer.collect(expect=3)
    finally:
        consumer.close()
    assert seen_before_post_commit == []
    assert [m.headers["attribute"] for m in got] == [kw["attribute"] for _, kw in events]


def test_rollback_sends_nothing_and_next_request_starts_empty(hub, exchange_name):
    consumer = bound_consumer(exchange_name)
    h = hub.setup()
    tag = entries("postTag")[0]["kwargs"]
    untag = entries("postUntag")[0]["kwargs"]
    try:
        h.request(fire("postTag", tag), fail=True)
        h.request(fire("postUntag", untag))
        got = consumer.collect(expect=1, quiet=0.5)
    finally:
        consumer.close()
    assert [m.headers["type"] for m in got] == ["Untag"]


def test_topic_bindings_route_on_the_key(hub, exchange_name):
    tag = entries("postTag")[0]["kwargs"]
    only_tags = bound_consumer(exchange_name, bindings=[f"koji.event.Tag.{tag['tag']['name']}.#"])
    only_builds = bound_consumer(exchange_name, bindings=["koji.event.BuildStateChange.*.*"], declare=False)
    h = hub.setup()
    try:
        h.request(fire("postTag", tag))
        h.request(fire("postBuildStateChange", entries("postBuildStateChange")[0]["kwargs"]))
        got_tags, got_builds = only_tags.collect(expect=1), only_builds.collect(expect=1)
    finally:
        only_builds.close(delete_exchange=False)
        only_tags.close()
    assert [m.headers["type"] for m in got_tags] == ["Tag"]
    assert [m.headers["type"] for m in got_builds] == ["BuildStateChange"]


def test_headers_exchange(hub, exchange_name):
    """RabbitMQ 3.10 does not show AMQP 1.0 application-properties to a headers exchange, so only a
    match-everything binding routes there; the headers still arrive with the message."""
    consumer = bound_consumer(exchange_name, ex_type="headers", bindings=[{}])
    h = hub.setup(exchange={"type": "headers"})
    kw = entries("postRepoDone")[0]["kwargs"]
    try:
        h.request(fire("postRepoDone", kw))
        got = consumer.collect(expect=1)
    finally:
        consumer.close()
    assert len(got) == 1
    assert got[0].headers == {"type": "RepoDone", "tag": kw["repo"]["tag_name"]}


def tag_request(hub, exchange_name: str, **sections) -> list:
    """One hub request firing the recorded postTag, with the plugin set up from `sections`;
    returns what a consumer bound to the exchange received."""
    consumer = bound_consumer(exchange_name)
    h = hub.setup(**sections)
    try:
        h.request(fire("postTag", entries("postTag")[0]["kwargs"]))
        return consumer.collect(quiet=0.5)
    finally:
        consumer.close()


def test_wrong_password_sends_nothing_and_says_why(hub, exchange_name, plugin_log):
    got = tag_request(hub, exchange_name, broker={"password": "Wr0ng-Secret", "connect_timeout": "15"})
    assert got == []
    t = target()
    said = f"authentication with PLAIN as user '{t.user}' failed at broker {t.endpoint}"

    def logged() -> list[str]:
        return [r.getMessage() for r in plugin_log.records if r.levelno >= logging.ERROR]
    # a request stops waiting for a connect after about a second (issue 18: its message is kept), and
    # RabbitMQ may take longer to refuse the password: the sender thread then says why, bounded
    assert until(lambda: any(said in e for e in logged()), 15), logged()
    errors = logged()
    assert any("Tag x1" in e and "koji.event.Tag." in e for e in errors)
    assert not any("Wr0ng-Secret" in r.getMessage() for r in plugin_log.records)


def test_missing_exchange_is_reported_fast_and_clearly(hub, exchange_name, plugin_log):
    t = need("missing-exchange")
    delete_exchange(exchange_name)
    h = hub.setup(broker={"timeout": "10"})
    start = time.monotonic()
    h.request(fire("postTag", entries("postTag")[0]["kwargs"]))
    elapsed = time.monotonic() - start
    errors = " ".join(r.getMessage() for r in plugin_log.records if r.levelno >= logging.ERROR)
    assert f"exchange '{exchange_name}'" in errors and f"does not exist on broker {t.endpoint}" in errors
    if t.flavour == "rabbitmq3":
        assert "RabbitMQ 3.x cannot create exchanges over AMQP 1.0" in errors
    assert elapsed < 2.0


def test_unreachable_broker_names_host_and_port(hub, plugin_log):
    h = hub.setup(broker={"port": "1", "connect_timeout": "2"})
    h.request(fire("postTag", entries("postTag")[0]["kwargs"]))
    errors = " ".join(r.getMessage() for r in plugin_log.records if r.levelno >= logging.ERROR)
    assert "broker 127.0.0.1:1 unreachable" in errors


def test_test_mode_logs_instead_of_sending(hub, exchange_name, plugin_log):
    got = tag_request(hub, exchange_name, broker={"test_mode": "true"})
    assert got == []
    logged = [r.getMessage() for r in plugin_log.records if "test_mode: would send" in r.getMessage()]
    assert len(logged) == 1 and '"routing_key": "koji.event.Tag.' in logged[0]


def test_broken_config_never_breaks_the_hub(hub, plugin_log):
    h = hub.setup(broker={"port": "not-a-port"})
    h.request(fire("postTag", entries("postTag")[0]["kwargs"]))  # must not raise
    errors = " ".join(r.getMessage() for r in plugin_log.records if r.levelno >= logging.ERROR)
    assert "[broker] port = 'not-a-port' is invalid" in errors
    assert "lost 1 message(s) (Tag x1)" in errors


def test_an_unsigned_rpm_sign_is_not_published_by_default(hub, exchange_name):
    """As Koji's protonmsg: an import without a signature fires RPMSign with sigkey '' ; nothing is sent."""
    consumer = bound_consumer(exchange_name)
    h = hub.setup()
    unsigned, signed = entries("postRPMSign")[0]["kwargs"], entries("postRPMSign")[4]["kwargs"]
    assert unsigned["sigkey"] == "" and signed["sigkey"]
    try:
        h.request(fire("postRPMSign", unsigned))
        h.request(fire("postRPMSign", signed))
        got = consumer.collect(expect=1, quiet=0.5)
    finally:
        consumer.close()
    assert [m.routing_key for m in got] == [f"koji.event.RPMSign.{signed['sigkey']}.{signed['build']['name']}"]
