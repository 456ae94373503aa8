"""The hub's path: kwargs as the hub passed them (no koji @convert_datetime copy) converted and
encoded in one pass.  Consumers must get the very bytes the old path (koji's copy, then format,
then encode) gave them; nothing the hub can pass may raise out of koji's run_callbacks."""

from __future__ import annotations

import datetime
import logging
import uuid
import xmlrpc.client

import koji
import koji.plugin
import koji.util
import pytest
from koji.context import context

from devkit.recorded import entries
from koji_messagebus import plugin as mb_plugin
from koji_messagebus.config.settings import load_config
from koji_messagebus.format import codec as amqp_codec
from koji_messagebus.format import values, wire
from koji_messagebus.format.messages import CALLBACK_TYPES, Event, format_event
from koji_messagebus.runtime import Runtime
from tests.support.hub import load_plugin, unload_plugin

MSG_ID = "5d2c4c1e-4d1b-4b8e-9a57-000000000001"
CREATED = 1795871677.765892


def one_pass(msg_type: str, kwargs: dict, prefix: str = "koji.event") -> tuple[bytes, Event]:
    event = format_event(msg_type, kwargs, prefix, convert=False)
    return wire.encode(event, msg_id=MSG_ID, created=CREATED).payload, event


def old_path(msg_type: str, kwargs: dict, prefix: str = "koji.event") -> bytes:
    """What the plugin sent before: koji's convert_datetime copy, values.to_amqp, then encode."""
    event = format_event(msg_type, koji.util.encode_datetime_recurse(kwargs), prefix)
    return wire.encode(event, msg_id=MSG_ID, created=CREATED).payload


@pytest.mark.parametrize("cbtype", sorted(CALLBACK_TYPES))
def test_recorded_events_give_consumers_the_same_bytes_as_before(cbtype):
    for entry in entries(cbtype):
        payload, event = one_pass(CALLBACK_TYPES[cbtype], entry["kwargs"])
        assert payload == old_path(CALLBACK_TYPES[cbtype], entry["kwargs"])
        assert payload == wire.encode(format_event(CALLBACK_TYPES[cbtype], entry["converted"], "koji.event"),
                                      msg_id=MSG_ID, created=CREATED).payload
        assert not event.conversions.lossy


class BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


class BadStr(str):
    def __str__(self):
        raise RuntimeError("no str")


def deep(n: int, leaf: object = 1) -> object:
    value = leaf
    for i in range(n):
        value = [value] if i % 2 else {"d": value}
    return value


def self_ref() -> dict:
    d: dict = {"name": "loop"}
    d["self"] = d
    d["list"] = [d, {"up": d}]
    return d


HOSTILE = {
    "self-referencing dict": self_ref(),
    "nesting 5000": deep(5000),
    "nesting 950": deep(950),
    "datetime map key": {datetime.datetime(2026, 1, 2, 3, 4, 5): "when", "x": 1},
    "xmlrpc DateTime": xmlrpc.client.DateTime("20260102T03:04:05"),
    "lone surrogates": ["a\ud800", "\udcff", {"k\udc80": "v\ud834"}],
    "repr raises": BadRepr(),
    "set of unorderable": {1, "a", (2, 3)},
    "str subclass whose str raises": BadStr("kept"),
    "int and str keys colliding": {1: "int", "1": "str"},
    "huge ints": [2**64, -(2**80)],
    "uuid and bytes": [uuid.UUID(int=7), b"\x00\xff"],
    "nan and inf": [float("nan"), float("inf")],
}


@pytest.mark.parametrize("value", list(HOSTILE.values()), ids=list(HOSTILE))
def test_hostile_values_encode_and_both_walkers_agree(value):
    kwargs = {"tag": {"name": "f44"}, "build": {"name": "bash"}, "user": {"name": "u"}, "value": value}
    payload, event = one_pass("Tag", kwargs)
    converted = format_event("Tag", kwargs, "koji.event")  # values.to_amqp: the Python view
    assert wire.encode(converted, msg_id=MSG_ID, created=CREATED).payload == payload
    assert sorted(converted.conversions.lossy) == sorted(event.conversions.lossy)
    got = amqp_codec.decode_message(payload)["body"]["value"]
    assert got is not None


def test_what_the_conversions_become():
    body = amqp_codec.decode_message(one_pass("Tag", {"tag": {"name": "t"}, **{
        "loop": self_ref(), "dtkey": {datetime.datetime(2026, 1, 2, 3, 4, 5, 6): 1},
        "surrogate": "a\ud800", "bad": BadRepr(), "deep": deep(200, "leaf"), "badstr": BadStr("kept"),
        "xdt": xmlrpc.client.DateTime("20260102T03:04:05")}})[0])["body"]
    assert body["loop"]["self"] == "<reference to the enclosing dict at loop>"
    assert body["loop"]["list"][1]["up"] == "<reference to the enclosing dict at loop>"
    assert body["dtkey"] == {"2026-01-02 03:04:05.000006": 1}  # koji's convert_datetime format
    assert body["surrogate"] == "a\\ud800"
    assert body["bad"] == "<BadRepr object: repr() raised RuntimeError>"
    assert body["badstr"] == "kept" and body["xdt"] == "2026-01-02 03:04:05"
    level, node = 0, body["deep"]
    while isinstance(node, (dict, list)):
        node = node["d"] if isinstance(node, dict) else node[0]
        level += 1
    assert level == values.MAX_DEPTH - 1 and isinstance(node, str)  # the body map is level 0


def test_every_lossy_conversion_names_where_and_what():
    _, event = one_pass("Tag", {"tag": {"name": "t"}, "a": {"b": [0, BadRepr()]}, "s": ["\ud800"], "c": self_ref()})
    assert "a.b[1]: BadRepr -> repr string" in event.conversions.lossy
    assert "s[0]: lone surrogate -> \\u escape" in event.conversions.lossy
    assert "c.self: reference cycle -> placeholder string" in event.conversions.lossy


def test_too_large_is_unsendable_with_type_key_size_and_reason():
    event = format_event("Tag", {"tag": {"name": "f44"}, "blob": "x" * 5000}, "koji.event", convert=False)
    with pytest.raises(wire.Unsendable) as err:
        wire.encode(event, limit=4096)
    assert (err.value.msg_type, err.value.routing_key) == ("Tag", event.routing_key)
    assert err.value.size >= 5000 and "larger than 4096 bytes" in err.value.reason
    assert str(err.value).startswith(f"Tag message {event.routing_key} (")


# ---- through koji's run_callbacks, with the plugin loaded as the hub loads it ------------------
@pytest.fixture
def hub_plugin(tmp_path):
    conf = tmp_path / "messagebus.conf"
    conf.write_text("[broker]\ntest_mode = true\nusername = u\npassword = p\n")
    load_plugin()
    mb_plugin.reset(Runtime(config=load_config(str(conf))))
    context._threadclear()
    yield
    context._threadclear()
    unload_plugin()


def collected() -> list:
    batch = getattr(context, "messagebus_batch", None)
    return batch.messages if batch else []


@pytest.mark.parametrize("value", [self_ref(), deep(5000), {datetime.datetime(2026, 1, 2): "k"}],
                         ids=["self-referencing", "nesting-5000", "datetime-key"])
def test_nothing_raises_out_of_run_callbacks(hub_plugin, value):
    """koji's @convert_datetime copy raised RecursionError/KeyError here, outside any guard."""
    kwargs = {"tag": {"name": "f44"}, "build": {"name": "bash", "version": "1", "release": "1"},
              "user": {"name": "u"}, "value": value}
    koji.plugin.run_callbacks("postTag", **kwargs)
    (msg,) = collected()
    assert msg.routing_key == "koji.event.Tag.f44.bash.u"
    assert amqp_codec.decode_message(msg.payload)["body"]["tag"] == {"name": "f44"}


def test_the_collect_callback_is_not_convert_datetime():
    assert not getattr(mb_plugin.messagebus_collect, "convert_datetime", False)
    assert getattr(mb_plugin.messagebus_collect, "failure_is_an_option", False)


def test_an_unsendable_message_is_logged_with_type_key_size_and_reason(hub_plugin, monkeypatch, caplog):
    monkeypatch.setattr(amqp_codec, "MAX_MESSAGE_BYTES", 10_000)
    with caplog.at_level(logging.ERROR, logger="koji.plugin.messagebus"):
        koji.plugin.run_callbacks("postTag", tag={"name": "f44"}, build={"name": "bash"}, user={"name": "u"},
                                  blob="x" * 20_000)
    assert collected() == []
    (line,) = [r.getMessage() for r in caplog.records]
    assert "Tag message koji.event.Tag.f44.bash.u (" in line and "bytes) cannot be sent: larger than 10000" in line
