"""koji_messagebus.consumer: the public decoder reads every value of a big message, for proton's
raw bytes and for pika (RabbitMQ 3.x's encoded header blobs and 4.x's native headers)."""

from __future__ import annotations

import types

import pika
from proton import Message

from koji_messagebus import consumer
from koji_messagebus.cli import examples
from koji_messagebus.format.codec import encode_message
from koji_messagebus.format.messages import format_event
from koji_messagebus.format.wire import encode

BIG = 100000


def big_payload() -> bytes:
    event = format_event("Tag", {**examples.tag(), "extra": list(range(BIG))}, "koji.event")
    return encode(event, msg_id="id-1", created=1700000000.25).payload


def test_decode_keeps_all_100000_values_where_proton_does_not():
    msg = consumer.decode(big_payload())
    assert msg.body["extra"] == list(range(BIG))
    assert (msg.routing_key, msg.id, msg.created) == ("koji.event.Tag.f44-updates-candidate.hello.alice", "id-1",
                                                      1700000000.25)
    assert msg.headers["tag"] == "f44-updates-candidate"
    try:
        proton_msg = Message()
        proton_msg.decode(big_payload())
        proton_count = len(proton_msg.body["extra"])
    except Exception:  # noqa: BLE001 - some proton builds refuse instead of cutting
        proton_count = 0
    assert proton_count < BIG  # the trap the public decoder avoids


def sections(payload: bytes) -> dict[int, bytes]:
    """The encoded sections of a message by descriptor code (what RabbitMQ 3.x hands 0-9-1 clients)."""
    from koji_messagebus.format.codec import decode_value

    out, pos = {}, 0
    while pos < len(payload):
        code, after = decode_value(payload, pos + 1)
        _, end = decode_value(payload, after)
        out[code] = payload[pos:end]
        pos = end
    return out


def test_from_pika_reads_rabbitmq3_blobs_with_seconds_and_all_values():
    parts = sections(big_payload())
    props = pika.BasicProperties(headers={consumer.RMQ3_APP_PROPERTIES: parts[0x74],
                                          consumer.RMQ3_PROPERTIES: parts[0x73]},
                                 timestamp=1700000000250, message_id="id-1")
    msg = consumer.from_pika(types.SimpleNamespace(routing_key="rk"), props, parts[0x77])
    assert msg.created == 1700000000.25 and msg.id == "id-1" and msg.routing_key == "rk"
    assert msg.headers["type"] == "Tag" and len(msg.body["extra"]) == BIG


def test_from_pika_reads_rabbitmq4_native_headers():
    payload = encode_message("id-2", 1700000000.0, "rk", None, {"a": 1}, {"b": [1, 2]})
    props = pika.BasicProperties(headers={"type": b"Tag", "new": 1, "old": None}, timestamp=1700000000,
                                 message_id="id-2")
    msg = consumer.from_pika(types.SimpleNamespace(routing_key="rk"), props, sections(payload)[0x77])
    assert msg.headers == {"type": "Tag", "new": 1, "old": None} and type(msg.headers["new"]) is int
    assert msg.created == 1700000000.0 and msg.body == {"b": [1, 2]}


def test_seen_drops_a_repeated_id_within_its_window():
    seen = consumer.Seen(size=2)
    assert [seen.first(i) for i in ("a", "a", "b", "c", "a", None, None)] == [True, False, True, True, True,
                                                                             True, True]


def test_to_json_is_the_listen_format():
    msg = consumer.Received("rk", "id", 1.0, {"h": b"\xff"}, {"b": b"ok"})
    assert msg.to_json() == ('{"body": {"b": "ok"}, "created": 1.0, "headers": {"h": {"base64": "/w=="}}, '
                             '"id": "id", "routing_key": "rk"}')
