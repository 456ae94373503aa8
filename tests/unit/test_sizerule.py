"""The size rule of [message] max_size: within it nothing changes; above it the body's `extra`
maps are dropped and the message marked; still above, it is not sent; each case logged with the
type, the routing key and the size, nothing cut in the middle."""

from __future__ import annotations

import copy
import logging

import pytest

from devkit.recorded import entries
from koji_messagebus.format import sizerule
from koji_messagebus.format.messages import format_event
from koji_messagebus.format.wire import Unsendable, decode


def tag_event(extra_bytes: int = 0, big_tag_name: int = 0):
    kwargs = copy.deepcopy(entries("postTag")[0]["kwargs"])
    kwargs["build"]["extra"] = {"blob": "x" * extra_bytes, "source": {"url": "git+https://x"}}
    if big_tag_name:
        kwargs["tag"]["perm"] = "p" * big_tag_name
    return kwargs, format_event("Tag", kwargs, "koji.event")


def test_within_max_size_the_message_is_unchanged(caplog):
    _, event = tag_event(100)
    msg = sizerule.encode_within(event, None, 64 * 1024)
    body = decode(msg.payload)["body"]
    assert body["build"]["extra"]["blob"] == "x" * 100
    assert sizerule.HEADER not in decode(msg.payload)["headers"]
    assert not caplog.records


def test_over_max_size_extra_is_dropped_marked_and_logged(caplog):
    caplog.set_level(logging.WARNING)
    kwargs, event = tag_event(20000)
    msg = sizerule.encode_within(event, None, 8192)
    got = decode(msg.payload)
    assert len(msg.payload) <= 8192
    assert "extra" not in got["body"]["build"] and got["body"]["build"]["nvr"] == kwargs["build"]["nvr"]
    assert got["headers"][sizerule.HEADER] == "build.extra"
    assert kwargs["build"]["extra"]["blob"]  # the hub's own objects are not changed
    (record,) = caplog.records
    line = record.getMessage()
    assert record.levelname == "WARNING"
    assert f"Tag {event.routing_key}: at least " in line and "over [message] max_size = 8192" in line
    assert "dropped build.extra" in line and f"now {len(msg.payload)} bytes" in line


def test_still_too_large_without_extra_is_not_sent_and_says_why():
    _, event = tag_event(20000, big_tag_name=20000)
    with pytest.raises(Unsendable) as info:
        sizerule.encode_within(event, None, 8192)
    text = str(info.value)
    assert text.startswith(f"Tag message {event.routing_key} (") and "bytes) cannot be sent" in text
    assert "max_size = 8192 bytes, still" in text and "without build.extra" in text


def test_no_extra_to_drop_is_not_sent():
    kwargs = copy.deepcopy(entries("postTag")[0]["kwargs"])
    kwargs["build"].pop("extra", None)
    kwargs["tag"]["perm"] = "p" * 20000
    event = format_event("Tag", kwargs, "koji.event")
    with pytest.raises(Unsendable, match="no `extra` to drop"):
        sizerule.encode_within(event, None, 8192)


def test_without_a_limit_only_the_encoder_limit_applies():
    _, event = tag_event(300_000)
    msg = sizerule.encode_within(event, None, None)
    assert len(msg.payload) > 300_000


def test_without_extra_reaches_two_levels_and_keeps_empty_extras():
    from koji_messagebus.format.messages import Event

    event = Event("X", "k", {"a": 1}, {"build": {"extra": {"a": 1}, "owner": {"extra": {"b": 2}}},
                                       "tag": {"extra": {}}, "deep": {"x": {"y": {"extra": {"c": 3}}}}})
    smaller, dropped = sizerule.without_extra(event)
    assert dropped == ["build.extra", "build.owner.extra"]
    assert smaller.body["tag"] == {"extra": {}} and smaller.body["deep"]["x"]["y"]["extra"] == {"c": 3}
    assert smaller.headers == {"a": 1, sizerule.HEADER: "build.extra,build.owner.extra"}
    assert event.body["build"]["extra"] == {"a": 1}
