"""wire.encode builds the message bytes in Python (koji_messagebus/format/codec.py): they must be proton's
own bytes, for every recorded hub event, every example and every hostile value, and proton must decode
them back into the same message.  Anything the codec does not know is encoded by proton itself."""

from __future__ import annotations

import datetime
import math
import struct
import uuid
from typing import Any

import koji.util
import pytest
from proton import DataException, Described, Message, char, symbol, timestamp, ulong

from devkit.recorded import entries
from koji_messagebus.cli import examples
from koji_messagebus.format import codec as amqp_codec
from koji_messagebus.format import values, wire
from koji_messagebus.format.messages import CALLBACK_TYPES, MESSAGE_TYPES, Event, format_event

MSG_ID = "5d2c4c1e-4d1b-4b8e-9a57-000000000001"
CREATED = 1795871677.765892
LONG_PREFIX = "p" * 240  # routing keys cut at 255 bytes: the properties section no longer fits list8
LONG_TO = "/exchange/koji.events/" + "k" * 250
TARGETS = [pytest.param("koji.event", None, id="short-no-to"), pytest.param("koji.event", "/exchange/x/k", id="to"),
           pytest.param(LONG_PREFIX, LONG_TO, id="long-key-long-to")]


def fast_and_proton(msg_id: str, created: float, subject: str, to: str | None, headers: dict, body: Any):
    fast = amqp_codec.encode_message(msg_id, created, subject, to, headers, body)  # raises if unsupported
    return fast, wire.encode_with_proton(msg_id, created, subject, to, headers, body)


def check_event(event: Event, to: str | None) -> bytes:
    """The codec's bytes equal proton's, wire.encode uses them, and proton decodes the same message."""
    fast, ref = fast_and_proton(MSG_ID, CREATED, event.routing_key, to, event.headers, event.body)
    assert fast == ref, first_difference(fast, ref)
    assert wire.encode(event, to=to, msg_id=MSG_ID, created=CREATED).payload == fast
    check_decodes(fast, event.routing_key, to, event.headers, event.body)
    return fast


def check_decodes(payload: bytes, subject: str, to: str | None, headers: dict, body: Any) -> None:
    msg = Message()
    msg.decode(payload)
    got = wire.message_to_dict(msg)
    assert (got["id"], got["subject"], got["to"], got["durable"]) == (MSG_ID, subject, to, True)
    assert got["creation_time"] == int(CREATED * 1000) / 1000
    assert same(got["headers"], headers) and same(got["body"], body)
    # and proton, encoding what it decoded, writes the very same bytes
    assert wire.encode_with_proton(MSG_ID, CREATED, subject, to, got["headers"], got["body"]) == payload


def same(got: Any, want: Any) -> bool:
    """Equality as a consumer sees it: tuples arrive as lists, binaries as memoryviews (as bytes with
    proton 0.37, the oldest supported), nan is nan (bit for bit)."""
    if isinstance(want, dict):
        return type(got) is dict and list(got) == list(want) and all(same(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)):
        return type(got) is list and len(got) == len(want) and all(map(same, got, want))
    if isinstance(want, float):
        return type(got) is float and struct.pack(">d", got) == struct.pack(">d", want)
    if isinstance(want, bytes):
        return type(got) in (memoryview, bytes) and bytes(got) == want
    return type(got) is type(want) and got == want


def first_difference(a: bytes, b: bytes) -> str:
    at = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"differ at byte {at} of {len(a)}/{len(b)}: {a[at - 8:at + 8].hex()} != {b[at - 8:at + 8].hex()}"


# ---- what the hub really passes ------------------------------------------------------------------
@pytest.mark.parametrize("prefix,to", TARGETS)
@pytest.mark.parametrize("cbtype", sorted(CALLBACK_TYPES))
def test_recorded_hub_events_encode_like_proton(cbtype, prefix, to):
    checked = 0
    for entry in entries(cbtype):
        for kwargs in (entry["kwargs"], entry["converted"]):  # as the hub passed them, and after @convert_datetime
            check_event(format_event(CALLBACK_TYPES[cbtype], kwargs, prefix), to)
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("prefix,to", TARGETS)
@pytest.mark.parametrize("msg_type", MESSAGE_TYPES)
def test_examples_encode_like_proton(msg_type, prefix, to):
    raw = examples.example(msg_type)
    check_event(format_event(msg_type, raw, prefix), to)
    check_event(format_event(msg_type, koji.util.encode_datetime_recurse(raw), prefix), to)


def test_build_story_encodes_like_proton():
    for _method, _what, events in examples.build_story():
        for cbtype, kwargs in events:
            check_event(format_event(CALLBACK_TYPES[cbtype], kwargs, "koji.event"), None)


# ---- hostile values ------------------------------------------------------------------------------
INTS = [0, 1, -1, 127, 128, -128, -129, 255, 256, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32, 2**63 - 1,
        -(2**63)]
FLOATS = [0.0, -0.0, 1.5, 0.1, -2.5e-308, 5e-324, 1e300, math.inf, -math.inf, math.nan, -math.nan,
          struct.unpack(">d", bytes.fromhex("7ff0000000000001"))[0]]  # a signalling nan payload
STRINGS = ["", "a", "é", "\U0001f600", "x" * 255, "x" * 256, "é" * 127 + "x", "é" * 128, "ü" * 300,
           "koji\x00nul", "y" * 5_000, "日本語のタグ" * 50]
BYTES = [b"", b"\x00", b"\xff" * 255, b"\x01" * 256, bytes(range(256)) * 12]
SCALARS = [None, True, False, uuid.UUID(int=0), uuid.UUID("6ba7b810-9dad-11d1-80b4-00c04fd430c8"), *INTS, *FLOATS,
           *STRINGS, *BYTES]


def map_of_bytes(n: int) -> dict:
    """A map whose encoded content is exactly `n` bytes (n >= 3): one key, one string value."""
    return {"k": "v" * (n - 3 - 2)}


COMPOUNDS = {
    "empty map": {},
    "empty list": [],
    "empty tuple": (),
    "list of empty": [[], {}, "", b"", ()],
    "nested lists of maps": [[{"a": [{"b": [1, [2, [3, {"c": None}]]]}]}], [{}], [[[]]]],
    "300-char keys": {"n" * 300: 1, "é" * 300: {"m" * 300: ["v" * 300]}},
    "non-ASCII keys and values": {"назва": "значення", "名前": ["値", {"キー": "🚀"}]},
    "tuple": (1, "two", (3.0, None)),
    "map 250 bytes": map_of_bytes(250),
    "map 255 bytes": map_of_bytes(255),
    "map 256 bytes": map_of_bytes(256),
    "map 300 bytes": map_of_bytes(300),
    "list 255 items": list(range(255)),
    "list 256 items": list(range(256)),
    "map of 300 pairs": {f"k{i}": i for i in range(300)},
    "list of every scalar": SCALARS,
    "map of every scalar": {f"v{i}": v for i, v in enumerate(SCALARS)},
    "build map with hostile values": {**values.to_amqp(examples.build_info(1)), "extra": {
        "typeinfo": {"rpm": None}, "source": {"original_url": "git+https://src.example.org/rpms/hello.git#" + "f" * 40},
        "big": 2**63 - 1, "neg": -(2**63)}},
}


@pytest.mark.parametrize("value", SCALARS + list(COMPOUNDS.values()),
                         ids=[f"scalar{i}" for i in range(len(SCALARS))] + list(COMPOUNDS))
@pytest.mark.parametrize("to", [None, "", LONG_TO], ids=["no-to", "empty-to", "long-to"])
def test_hostile_value_encodes_like_proton(value, to):
    body = {"value": value, "in a list": [value, value], "in a map": {"x": value}}
    headers = {"type": "Tag", "value": value if value is None or type(value) in (str, int, float, bool) else "s"}
    fast, ref = fast_and_proton(MSG_ID, CREATED, "koji.event.Tag.x", to, headers, body)
    assert fast == ref, first_difference(fast, ref)
    check_decodes(fast, "koji.event.Tag.x", to, headers, body)


@pytest.mark.parametrize("length", range(180, 300))
def test_properties_section_list8_list32_boundary(length):
    """The properties list switches from list8 to list32 at 256 bytes: sweep the subject across it."""
    subject = "s" * length
    fast, ref = fast_and_proton(MSG_ID, CREATED, subject, None, {"type": "Tag"}, {})
    assert fast == ref, first_difference(fast, ref)
    fast, ref = fast_and_proton(MSG_ID, CREATED, "s", "t" * length, {"type": "Tag"}, {})
    assert fast == ref, first_difference(fast, ref)


@pytest.mark.parametrize("length", list(range(0, 20)) + list(range(240, 270)) + [4_000])
def test_string_and_binary_lengths(length):
    body = {"s": "x" * length, "b": b"\x00" * length, "map": map_of_bytes(length + 3), "list": [0] * length}
    fast, ref = fast_and_proton(MSG_ID, CREATED, "k", None, {"type": "Tag", "s": "é" * length}, body)
    assert fast == ref, first_difference(fast, ref)


@pytest.mark.parametrize("created", [CREATED, 1.0, 0.001, -5.5, 1e-3 * 2**40, 4102444800.999999, 1795871677])
def test_creation_times(created):
    fast, ref = fast_and_proton(MSG_ID, created, "k", None, {"type": "Tag"}, {"a": 1})
    assert fast == ref, first_difference(fast, ref)


def test_ids_are_unique_and_uuid_strings_by_default():
    event = format_event("Tag", {"tag": {"name": "t"}}, "p")
    a, b = wire.encode(event), wire.encode(event)
    assert a.msg_id != b.msg_id and str(uuid.UUID(a.msg_id)) == a.msg_id
    assert wire.decode(a.payload)["id"] == a.msg_id


def test_new_ids_are_random_version_4_uuids_as_uuid4_writes_them():
    ids = [wire.new_id() for _ in range(500)]
    assert len(set(ids)) == 500
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("length", [1, 64, 65, 255, 256, 70000])
def test_map_keys_encode_as_proton_writes_them_first_and_again(length):
    """Keys are kept encoded (codec._KEYS): the second message must be byte for byte the first."""
    key = "k" * (length - 1) + "é"  # not ASCII: UTF-8 bytes, not characters, count
    headers, body = {"type": "Tag", key: 1}, {key: {key: "v"}}
    first, ref = fast_and_proton(MSG_ID, 1.0, "k", None, headers, body)
    again, _ = fast_and_proton(MSG_ID, 1.0, "k", None, headers, body)
    assert first == ref == again, first_difference(first, ref)


def test_the_kept_keys_are_bounded():
    body = {f"key-{i}": i for i in range(amqp_codec._KEY_CACHE_SIZE + 500)}
    fast, ref = fast_and_proton(MSG_ID, 1.0, "k", None, {"type": "Tag"}, body)
    assert fast == ref, first_difference(fast, ref)
    assert len(amqp_codec._KEYS) <= amqp_codec._KEY_CACHE_SIZE
    assert all(len(k.encode()) <= amqp_codec._KEY_CACHE_BYTES for k in amqp_codec._KEYS)


# ---- values proton refuses or cannot hold: converted, or written where proton fails -------------
PROTON_TYPES = {
    "symbol": (symbol("s"), "s"), "ulong": (ulong(3), 3), "char": (char("c"), "c"),
    "timestamp": (timestamp(1000), 1000),
    "bytearray": (bytearray(b"ab"), b"ab"),
}


@pytest.mark.parametrize("value,plain", list(PROTON_TYPES.values()), ids=list(PROTON_TYPES))
def test_proton_types_are_written_as_the_plain_type(value, plain):
    """No fallback to proton any more: subclasses are written as their plain class."""
    event = format_event("Tag", {"tag": {"name": "t"}}, "p")
    event.body["odd"] = [value, {"x": value}]
    msg = wire.encode(event, msg_id=MSG_ID, created=CREATED)
    body = {**event.body, "odd": [plain, {"x": plain}]}
    assert msg.payload == wire.encode_with_proton(MSG_ID, CREATED, event.routing_key, None, event.headers, body)


def test_a_described_value_becomes_its_repr_and_is_noted():
    event = format_event("Tag", {"tag": {"name": "t"}}, "p")
    event.body["odd"] = Described(symbol("d"), 1)
    got = wire.decode(wire.encode(event).payload)["body"]["odd"]
    assert got == repr(Described(symbol("d"), 1)) and event.conversions.lossy == ["odd: Described -> repr string"]


@pytest.mark.parametrize("value", ["y" * 70_000, bytes(range(256)) * 300, ["z" * 1000] * 66, list(range(30_000))])
def test_messages_over_64_kib_are_protons_bytes_too(value):
    headers, body = {"type": "Tag"}, {"value": value}
    fast, ref = fast_and_proton(MSG_ID, CREATED, "k", None, headers, body)
    assert fast == ref, first_difference(fast, ref)


def test_more_values_than_proton_holds_are_written_in_32_bit_counts():
    """Proton holds at most 65,535 values per message (encoding more fails with DataException [-10],
    decoding more silently drops the rest); AMQP's list32/map32 carry 2^32 - 1."""
    body = {"outputs": [{"id": i, "name": f"file-{i}.rpm"} for i in range(40_000)], "many": list(range(70_000))}
    with pytest.raises(DataException):
        wire.encode_with_proton(MSG_ID, CREATED, "k", None, {"type": "Import"}, body)
    out = wire.encode(Event("Import", "k", {"type": "Import"}, body), msg_id=MSG_ID, created=CREATED)
    got = amqp_codec.decode_message(out.payload)
    assert got["body"] == body and got["subject"] == "k" and got["id"] == MSG_ID
    assert wire.decode(out.payload)["body"] == body  # wire.decode does not use proton for this size
    truncated = Message()
    truncated.decode(out.payload)
    assert truncated.body != body  # what a proton consumer gets: values silently missing (README says so)


@pytest.mark.parametrize("created,headers,body", [
    pytest.param(0.0, {"type": "Tag"}, {}, id="zero-creation-time"),  # proton leaves it out
    pytest.param(CREATED, {"type": "Tag"}, None, id="no-body"),
])
def test_unusual_messages_are_protons_bytes(created, headers, body):
    payload = wire.encode(Event("Tag", "k", headers, body), msg_id=MSG_ID, created=created).payload
    assert payload == wire.encode_with_proton(MSG_ID, created, "k", None, dict(headers), body)


@pytest.mark.parametrize("headers,body,plain_headers,plain_body,note", [
    pytest.param({"type": "Tag"}, {"n": 2**64}, {"type": "Tag"}, {"n": str(2**64)}, "n: int beyond 64 bits -> str",
                 id="int-beyond-64-bits"),
    pytest.param({"type": "Tag"}, {"s": "a\ud800b"}, {"type": "Tag"}, {"s": "a\\ud800b"},
                 "s: lone surrogate -> \\u escape", id="lone-surrogate"),
    pytest.param({"type": "Tag"}, {"k\udcff": 1}, {"type": "Tag"}, {"k\\udcff": 1},
                 "k\\udcff: lone surrogate in a key -> \\u escape", id="lone-surrogate-key"),
    pytest.param({"type": "Tag", 1: "x"}, {}, {"type": "Tag", "1": "x"}, {}, "headers.1: map key of type int -> str",
                 id="int-property-key"),
    pytest.param({"type": "Tag"}, {"s": type("S", (str,), {})("x")}, {"type": "Tag"}, {"s": "x"}, None,
                 id="str-subclass"),
    pytest.param({"type": "Tag"}, {"i": type("I", (int,), {})(5)}, {"type": "Tag"}, {"i": 5}, None, id="int-subclass"),
    pytest.param({"type": "Tag"}, {"f": [type("F", (float,), {})(0.5)]}, {"type": "Tag"}, {"f": [0.5]}, None,
                 id="float-subclass"),
])
def test_values_proton_refuses_are_converted_and_noted(headers, body, plain_headers, plain_body, note):
    event = Event("Tag", "k", headers, body)
    payload = wire.encode(event, msg_id=MSG_ID, created=CREATED).payload
    assert payload == wire.encode_with_proton(MSG_ID, CREATED, "k", None, plain_headers, plain_body)
    noted = event.conversions.lossless + event.conversions.lossy
    assert noted == ([note] if note else [])


@pytest.mark.parametrize("ttl", [0.0001, 0.001, 0.255, 0.256, 2.5, 90, 86400 * 40])
def test_ttl_header_encodes_like_proton(ttl):
    """[message] ttl: the header's ttl field (milliseconds), byte for byte what proton writes."""
    event = format_event("Tag", entries("postTag")[0]["kwargs"], "koji.event")
    ours = wire.encode(event, msg_id=MSG_ID, created=CREATED, ttl=ttl).payload
    millis = max(1, round(ttl * 1000))
    ref = wire.encode_with_proton(MSG_ID, CREATED, event.routing_key, None, event.headers,
                                  wire.decode(ours)["body"], ttl=millis / 1000)
    assert ours == ref
    assert wire.decode(ours)["ttl"] == pytest.approx(millis / 1000)
    assert wire.decode(wire.encode(event, msg_id=MSG_ID, created=CREATED).payload)["ttl"] == 0  # none: no ttl


class _RaisingZone(datetime.tzinfo):
    def utcoffset(self, dt):
        raise RuntimeError("no offset")


def test_datetimes_are_written_as_koji_writes_them_naive_aware_or_broken():
    """Naive datetimes take the encoder's short way (codec._DATETIME); aware ones the values policy;
    a tzinfo that raises gives a placeholder, never an exception."""
    naive = datetime.datetime(2026, 12, 4, 22, 7, 1, 123456)
    aware = datetime.datetime(2026, 12, 4, 22, 7, 1, tzinfo=datetime.timezone.utc)
    body = {"naive": naive, "aware": aware, "list": [naive]}
    event = Event("Tag", "k", {"type": "Tag"}, body)
    decoded = wire.decode(wire.encode(event).payload)["body"]
    expected = koji.util.encode_datetime_recurse({"naive": naive, "aware": aware, "list": [naive]})
    assert decoded == expected and decoded["naive"] == "2026-12-04 22:07:01.123456"
    broken = Event("Tag", "k", {"type": "Tag"}, {"when": datetime.datetime(2026, 1, 1, tzinfo=_RaisingZone())})
    text = wire.decode(wire.encode(broken).payload)["body"]["when"]
    assert text.startswith("<datetime object: cannot be converted") and broken.conversions.lossy
