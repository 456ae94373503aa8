"""AMQP 1.0 encoding of events: the exact bytes that go to the broker (and into the outbox)."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from proton import Message

from koji_messagebus.format import codec as amqp_codec
from koji_messagebus.format.messages import Event
from koji_messagebus.format.values import safe_repr

#: every value takes at least one byte, so a message shorter than this holds fewer values than
#: proton's decoder can keep
PROTON_SAFE_BYTES = 65535


@dataclass(frozen=True)
class Outgoing:
    """An encoded message ready to send; `payload` is resent byte for byte on retries."""

    msg_id: str
    created: float
    type: str
    routing_key: str
    payload: bytes


class Unsendable(Exception):
    """A message that cannot be sent at all (too large, or a failure while encoding): the log line
    names its type, routing key, size and reason."""

    def __init__(self, msg_type: str, routing_key: str, size: int, reason: str, too_large: bool = False):
        self.msg_type, self.routing_key, self.size, self.reason = msg_type, routing_key, size, reason
        self.too_large = too_large
        super().__init__(f"{msg_type} message {routing_key} ({size} bytes) cannot be sent: {reason}")


def new_id() -> str:
    """A random (version 4) UUID as str(uuid.uuid4()) writes it, without building the UUID object
    (a third of the cost of an id, on every message of the request path)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def encode(event: Event, to: str | None = None, msg_id: str | None = None,
           created: float | None = None, limit: int | None = None, ttl: float | None = None) -> Outgoing:
    """Encode an event as a durable AMQP message: subject = routing key, headers = application
    properties, body = native AMQP map, unique message-id and creation time.  The body may hold
    any Python values: they are converted while encoding (`codec`, one pass) and every
    conversion is added to `event.conversions`.  `ttl`: the header's time-to-live, in seconds
    (sent in milliseconds, at least 1: 0 would mean none).  Unsendable when the message cannot be sent."""
    msg_id = msg_id or new_id()
    created = time.time() if created is None else created
    limit = amqp_codec.MAX_MESSAGE_BYTES if limit is None else limit
    try:
        payload = amqp_codec.encode_message(msg_id, created, event.routing_key, to, event.headers, event.body,
                                            event.conversions, limit,
                                            None if ttl is None else max(1, int(round(ttl * 1000))))
    except amqp_codec.TooLarge as exc:
        raise Unsendable(event.type, event.routing_key, exc.size, f"larger than {exc.limit} bytes",
                         too_large=True) from None
    except Exception as exc:  # whatever it is, the log line must say which message
        raise Unsendable(event.type, event.routing_key, 0, safe_repr(exc)) from exc
    return Outgoing(msg_id, created, event.type, event.routing_key, payload)


def encode_with_proton(msg_id: str, created: float, subject: str, to: str | None, headers: dict[str, Any],
                       body: Any, ttl: float | None = None) -> bytes:
    """The reference encoding: proton's own Message.encode()."""
    msg = Message(id=msg_id, durable=True, subject=subject, creation_time=created, properties=headers, body=body)
    if ttl is not None:
        msg.ttl = ttl
    if to is not None:
        msg.address = to
    return msg.encode()


def decode(payload: bytes) -> dict[str, Any]:
    """Decode a message into a plain dict (for the listener, tests and logs).  Proton keeps at most
    65,535 values and silently drops the rest, so a message that may hold more (one of 64 KiB or
    more) is decoded by codec.py instead (binaries then come as bytes, not memoryviews)."""
    if len(payload) >= PROTON_SAFE_BYTES:
        return amqp_codec.decode_message(payload)
    msg = Message()
    msg.decode(payload)
    return message_to_dict(msg)


def message_to_dict(msg: Message) -> dict[str, Any]:
    """The parts of a received message a consumer cares about."""
    return {
        "id": msg.id,
        "subject": msg.subject,
        "to": msg.address,
        "durable": msg.durable,
        "ttl": msg.ttl,
        "creation_time": msg.creation_time,
        "headers": dict(msg.properties or {}),
        "body": msg.body,
    }


def describe(messages: list[Outgoing], limit: int = 10) -> str:
    """'3 message(s) (Tag x2, BuildStateChange x1): key1, key2, ...' for log lines."""
    types = Counter(m.type for m in messages)
    keys = [m.routing_key for m in messages[:limit]]
    more = f" and {len(messages) - limit} more" if len(messages) > limit else ""
    kinds = ", ".join(f"{t} x{n}" for t, n in types.items())
    return f"{len(messages)} message(s) ({kinds}): {', '.join(keys)}{more}"
