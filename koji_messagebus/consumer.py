"""Read what the plugin sends, in a consumer: the public decoder (docs/consumers.md).

proton's own decoder (`proton.Message.decode`, `proton.Data`) keeps at most 65,535 values of a
list or map and silently drops the rest, so a large Import or RepoDone arrives cut.  These
functions decode with the package's own decoder (`format/codec.py`, pure Python, no limit) and give
every client the same `Received` record:
- `from_pika(method, properties, body)` for AMQP 0-9-1 consumers on RabbitMQ 3.x and 4.x (the
  body is the encoded amqp-value section; the headers are one encoded blob on 3.x and native
  headers on 4.x; the creation time is read from the AMQP 1.0 properties where 3.x keeps them,
  so it is in seconds on both);
- `from_delivery(delivery)` for proton receivers: reads the delivery's bytes (call it from
  `on_delivery` instead of using `on_message`);
- `decode(payload)` for the bytes of a whole AMQP 1.0 message (any other AMQP 1.0 client that
  hands out raw bytes).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any

from koji_messagebus.format.codec import decode_message, decode_value

#: RabbitMQ 3.x's 0-9-1 headers holding AMQP 1.0 sections (one encoded blob each)
RMQ3_APP_PROPERTIES = "x-amqp-1.0-app-properties"
RMQ3_PROPERTIES = "x-amqp-1.0-properties"


@dataclass
class Received:
    """One message as a consumer sees it: `created` in seconds since the epoch (None if absent)."""

    routing_key: str | None
    id: Any
    created: float | None
    headers: dict[str, Any] = field(default_factory=dict)
    body: Any = None

    def to_json(self) -> str:
        """One JSON line (bytes as {"base64": ...}, UUIDs as text), as `koji-messagebus listen` prints."""
        from koji_messagebus.listener import jsonable

        return json.dumps(jsonable(asdict(self)), sort_keys=True, ensure_ascii=False)


class Seen:
    """The last `size` message ids: `first(id)` is False for a duplicate (at-least-once delivery:
    the plugin resends with the same message-id; docs/consumers.md says how late a copy can come)."""

    def __init__(self, size: int = 100000):
        self.size = size
        self._ids: OrderedDict[Any, None] = OrderedDict()

    def first(self, msg_id: Any) -> bool:
        if msg_id is None:
            return True
        if msg_id in self._ids:
            return False
        self._ids[msg_id] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


def decode_section(raw: bytes) -> Any:
    """The value of one encoded AMQP 1.0 section (a described value), e.g. a pika body."""
    value, _ = decode_value(raw)
    return value


def decode(payload: bytes) -> Received:
    """A whole AMQP 1.0 message (its encoded sections)."""
    whole = decode_message(payload)
    return Received(whole["subject"], whole["id"], whole["creation_time"] or None, dict(whole["headers"] or {}),
                    whole["body"])


def from_delivery(delivery: Any) -> Received | None:
    """A proton receiver's delivery, read and decoded; None while it is still partial.  The caller
    settles it (`delivery.update(Delivery.ACCEPTED); delivery.settle()`) once it is handled."""
    if not delivery.readable or delivery.partial:
        return None
    link = delivery.link
    payload = link.recv(delivery.pending) or b""
    link.advance()
    return decode(payload)


def _native(value: Any) -> Any:
    """A 0-9-1 header value as the AMQP 1.0 decoder gives it: text as str, pika's `long` as int."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def from_pika(method: Any, properties: Any, body: bytes) -> Received:
    """An AMQP 0-9-1 delivery (pika) of a message the plugin published over AMQP 1.0."""
    native = dict(properties.headers or {})
    msg_id, created = properties.message_id, properties.timestamp
    if RMQ3_APP_PROPERTIES in native or RMQ3_PROPERTIES in native:  # RabbitMQ 3.x
        headers = decode_section(native[RMQ3_APP_PROPERTIES]) if RMQ3_APP_PROPERTIES in native else {}
        if RMQ3_PROPERTIES in native:
            fields = list(decode_section(native[RMQ3_PROPERTIES]) or []) + [None] * 13
            msg_id, created = fields[0], fields[9]  # seconds (3.x's 0-9-1 timestamp is in milliseconds)
    else:  # RabbitMQ 4.x: native headers, timestamp in seconds
        headers = {k: _native(v) for k, v in native.items()}
    return Received(method.routing_key, msg_id, float(created) if created else None, dict(headers or {}),
                    decode_section(body))
