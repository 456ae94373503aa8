"""The AMQP 1.0 message rebuilt from what RabbitMQ gives an AMQP 0-9-1 consumer: 3.x keeps the
application-properties and properties sections as blobs in x-amqp-1.0-* headers, 4.x gives native
headers.  Used by the tests' pika consumer and by the load harness."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proton import Data


def _decode_section(raw: bytes) -> Any:
    data = Data()
    data.decode(raw)
    data.rewind()
    data.next()
    return data.get_object()


@dataclass
class Received:
    routing_key: str
    delivery_mode: int
    message_id: str
    headers: dict
    body: Any
    subject: str | None


def decode_091(method, props, body: bytes) -> Received:
    """Rebuild the AMQP 1.0 message from what RabbitMQ stored: 3.x keeps the application-properties
    and properties sections as blobs in x-amqp-1.0-* headers; 4.x gives the application-properties
    as native headers and keeps no subject (None then)."""
    hdrs = props.headers or {}
    if "x-amqp-1.0-app-properties" in hdrs:
        app = _decode_section(hdrs["x-amqp-1.0-app-properties"])
    else:  # RabbitMQ 4.x: native headers (only the x-amqp-1.0-* blobs are not application-properties)
        app = {k: v for k, v in hdrs.items() if not k.startswith("x-amqp-1.0-")}
    section = _decode_section(body)  # the amqp-value section (described type 0x77)
    value = section.value if hasattr(section, "value") else section
    subject = None
    if "x-amqp-1.0-properties" in hdrs:
        described = _decode_section(hdrs["x-amqp-1.0-properties"])
        fields = list(getattr(described, "value", []) or [])
        subject = fields[3] if len(fields) > 3 else None
    app_props = getattr(app, "value", app)
    return Received(method.routing_key, props.delivery_mode, props.message_id,
                    dict(app_props or {}), value, subject)
