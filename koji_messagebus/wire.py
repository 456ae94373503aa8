"""AMQP 1.0 encoding of events: the exact bytes that go to the broker (and into the outbox)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from proton import Message

from . import amqp_codec
from .messages import Event


@dataclass(frozen=True)
class Outgoing:
    """An encoded message ready to send; `payload` is resent byte for byte on retries."""

    msg_id: str
    created: float
    type: str
    routing_key: str
    payload: bytes

    def describe(self) -> str:
        return f"{self.type} {self.routing_key} (id {self.msg_id})"


def encode(event: Event, to: str | None = None, msg_id: str | None = None,
           created: float | None = None) -> Outgoing:
    """Encode an event as a durable AMQP message: subject = routing key, headers = application
    properties, body = native AMQP map, unique message-id and creation time.  The bytes are built
    by `amqp_codec` (the same bytes proton writes, faster); proton encodes what it does not know."""
    msg_id = msg_id or str(uuid.uuid4())
    created = time.time() if created is None else created
    try:
        payload = amqp_codec.encode_message(msg_id, created, event.routing_key, to, event.headers, event.body)
    except amqp_codec.Unsupported:
        payload = encode_with_proton(msg_id, created, event.routing_key, to, event.headers, event.body)
    return Outgoing(msg_id, created, event.type, event.routing_key, payload)


def encode_with_proton(msg_id: str, created: float, subject: str, to: str | None, headers: dict[str, Any],
                       body: Any) -> bytes:
    """The reference encoding: proton's own Message.encode()."""
    msg = Message(id=msg_id, durable=True, subject=subject, creation_time=created, properties=headers, body=body)
    if to is not None:
        msg.address = to
    return msg.encode()


def decode(payload: bytes) -> dict[str, Any]:
    """Decode a message into a plain dict (for the listener, tests and logs)."""
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
        "creation_time": msg.creation_time,
        "headers": dict(msg.properties or {}),
        "body": msg.body,
    }
