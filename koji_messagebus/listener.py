"""A consumer for the command line: receivers on the exchange, decoded messages as JSON.

How each broker is subscribed (RabbitMQ 4.x through /management, Artemis wildcards, Broker-J
binding filters) is `amqp.receiver`'s job; what follows is the RabbitMQ 3.x story.  On RabbitMQ
3.x with its AMQP 1.0 plugin a receiver whose source address is
`/exchange/NAME/BINDING_KEY` gets a server-named queue (`amq.gen-...`) bound to the exchange
with that key.  That plugin (3.10.8, checked in its code and here) declares the queue neither
exclusive nor auto-delete, so it outlives the listener and keeps collecting messages.  So when
pika is installed, `temporary_queue()` declares an auto-delete queue over AMQP 0-9-1 and the
listener consumes it over AMQP 1.0 (`/amq/queue/NAME`); otherwise the `/exchange/` source is
used and `LEFTOVER_QUEUE_NOTE` says how to have such queues expire.  Application properties are
not visible to a headers exchange there, so header matches are applied on the client side.

The receiving connection itself is `amqp.receiver.Listener` (re-exported here); this module
chooses the sources and renders what arrives.
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from proton import Message

from koji_messagebus.amqp.receiver import CREDIT, DEDUP_WINDOW, LEFTOVER_QUEUE_NOTE, Listener, open_listener  # noqa: F401
from koji_messagebus.config.settings import Config
from koji_messagebus.rabbitmq import QUEUE_EXPIRES_MS, amqp091_connect, temporary_queue  # noqa: F401 - re-exported

DEFAULT_SOURCE = "/exchange/{name}/{key}"


class HeaderMatch:
    """`name=pattern` from the command line; the pattern is a shell glob (`f44*`), compared with
    the header's value as text (None is `null`, booleans `true`/`false`)."""

    def __init__(self, spec: str):
        name, sep, pattern = spec.partition("=")
        if not sep or not name:
            raise ValueError(f"--header {spec!r}: expected NAME=VALUE, e.g. tag=f44-build")
        self.name = name
        self.pattern = pattern

    def matches(self, headers: Mapping[str, Any]) -> bool:
        if self.name not in headers:
            return False
        return fnmatch.fnmatchcase(header_text(headers[self.name]), self.pattern)

    def __str__(self) -> str:
        return f"{self.name}={self.pattern}"


def header_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def source_addresses(config: Config, keys: Iterable[str], template: str = DEFAULT_SOURCE) -> list[str]:
    """One receiver source per binding key (a headers exchange gets one unfiltered binding)."""
    keys = list(keys)
    if config.exchange.type == "headers":
        return [template.replace("/{key}", "").replace("{key}", "").format(name=config.exchange.name)]
    return [template.format(name=config.exchange.name, key=key.replace("/", "%2F")) for key in keys or ["#"]]


# ---- rendering ---------------------------------------------------------------------------------
def jsonable(value: Any) -> Any:
    """Decoded AMQP values -> JSON-compatible values (bytes as text or base64, UUID as text)."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else repr(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(raw).decode("ascii")}
    if isinstance(value, uuid.UUID):
        return str(value)
    described = getattr(value, "descriptor", None)
    if described is not None:
        return {"descriptor": jsonable(described), "value": jsonable(getattr(value, "value", None))}
    return repr(value)


def iso_time(seconds: float | None) -> str | None:
    if not seconds:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


def message_record(msg: Message) -> dict[str, Any]:
    """What a consumer got: routing key, type, id, creation time, headers and body."""
    headers: dict[str, Any] = dict(msg.properties or {})
    annotations: dict[Any, Any] = dict(msg.annotations or {})
    routing_key = msg.subject or annotations.get("x-routing-key")
    return {
        "routing_key": jsonable(routing_key),
        "type": jsonable(headers.get("type")),
        "id": jsonable(msg.id),
        "created": iso_time(msg.creation_time),
        "durable": bool(msg.durable),
        "headers": jsonable(headers),
        "body": jsonable(msg.body),
    }


def render(record: Mapping[str, Any], pretty: bool = False) -> str:
    """One JSON object per line, or a readable block."""
    if not pretty:
        return json.dumps(record, sort_keys=True, ensure_ascii=False)
    headers = record.get("headers") or {}
    head = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in headers.items() if k != "type")
    lines = [f"── {record.get('type') or '?'}  {record.get('routing_key')}",
             f"   id {record.get('id')}  created {record.get('created')}",
             f"   headers: {head or '(none)'}",
             "   body: " + json.dumps(record.get("body"), indent=2, sort_keys=True,
                                      ensure_ascii=False).replace("\n", "\n   ")]
    lines += [f"   DOES NOT MATCH ITS SCHEMA: {p['path']}: {p['reason']}" for p in record.get("schema_problems", [])]
    return "\n".join(lines)
