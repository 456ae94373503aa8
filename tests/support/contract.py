"""The message contract in the tests: every plugin message a test receives is checked against its
type's shipped JSON Schema (koji_messagebus/schemas), as a consumer sees it.

The shared receivers (tests/support/pika_consumer.py Consumer, tests/support/receiver.py Receiver) call `check` on what
they collect, so every test that reads messages back, on every broker, checks them.  Messages of no
known type (a test's own probes) are left alone.  `document` turns what arrived into the JSON
document a schema validates.
"""

from __future__ import annotations

from typing import Any

from koji_messagebus import schema
from koji_messagebus.format.messages import MESSAGE_TYPES
from koji_messagebus.listener import jsonable


def document(routing_key: Any, headers: Any, body: Any) -> dict[str, Any]:
    """Decoded AMQP values -> the JSON document (bytes as text, as `koji-messagebus listen` shows)."""
    return schema.document(jsonable(routing_key), jsonable(headers), jsonable(body))


def problems(routing_key: Any, headers: Any, body: Any) -> list[schema.Problem]:
    return schema.validate(document(routing_key, headers, body))


def is_plugin_message(headers: Any) -> bool:
    return isinstance(headers, dict) and headers.get("type") in MESSAGE_TYPES


def check(messages: list[Any]) -> list[Any]:
    """Fail on the first received plugin message that misses its schema; return them all.  The
    routing key is the subject (the plugin's key) where the consumer sees it, else the key the
    broker routed with; a consumer that sees neither (RabbitMQ 4.x's headers exchange through
    AMQP 0-9-1: no subject, empty key) checks the rest."""
    for msg in messages:
        if not is_plugin_message(msg.headers):
            continue
        key = msg.subject or msg.routing_key
        found = problems(key, msg.headers, msg.body)
        if not key:
            found = [p for p in found if not p.path.startswith("$.routing_key")]
        assert not found, (f"{msg.headers.get('type')} message {key!r} does not match its schema: "
                           + "; ".join(map(str, found)))
    return messages
