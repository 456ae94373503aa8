"""Where messages go on each broker: `[exchange] address = auto` resolved from the open frame.

| broker (open frame `product`, `version`) | topic exchange | headers exchange | exchange created |
|---|---|---|---|
| RabbitMQ 3.x | target `/exchange/NAME`, subject = key | same | cannot (AMQP 1.0) |
| RabbitMQ 4.x | anonymous relay, `to` = `/exchanges/NAME/KEY` | target `/exchanges/NAME` | `/management` PUT |
| ActiveMQ Artemis | anonymous relay, `to` = KEY (a multicast address) | target NAME (multicast) | on demand |
| Qpid Broker-J | target NAME, subject = key | same | `$management` CREATE |
| anything else | target NAME, subject = key (qpidd's way) | same | create-on-demand hints |

An explicit template is used as written (`{routing_key}` makes addresses per message).  Names and
keys in RabbitMQ 4.x addresses are percent-encoded (a Koji tag may hold `/`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from urllib.parse import quote

from proton import Message

from koji_messagebus.amqp.connection import BrokerInfo
from koji_messagebus.config.sections import ExchangeSettings
from koji_messagebus.log import log

AUTO = "auto"

RABBITMQ = "RabbitMQ"
ARTEMIS = "apache-activemq-artemis"
BROKERJ_PREFIX = "Apache Qpid Broker-J"


def flavour(broker: BrokerInfo) -> str:
    """rabbitmq3, rabbitmq4, artemis, brokerj or other (from the open frame)."""
    if broker.product == RABBITMQ:
        return "rabbitmq4" if (broker.major or 0) >= 4 else "rabbitmq3"
    if broker.product == ARTEMIS or "artemis" in broker.product.lower():
        return "artemis"
    if broker.product.startswith(BROKERJ_PREFIX):
        return "brokerj"
    return "other"


def encode_segment(text: str) -> str:
    """One path segment of a RabbitMQ 4.x address: everything but unreserved characters
    percent-encoded (RFC 3986), as RabbitMQ's own clients do (`uri_string:quote`)."""
    return quote(text, safe="")


@dataclass(frozen=True)
class Route:
    """How this connection addresses the exchange.  `target` is the sender link's target (None:
    an anonymous-relay link); `to` a template with `{routing_key}` for each message's `to`."""

    flavour: str
    target: str | None
    to: str | None = None
    quote_key: bool = False
    capabilities: tuple[str, ...] = ()
    hints: bool = False  # qpidd's create-on-demand target properties
    creates: str = ""  # how the plugin creates the exchange: rabbitmq-management, amqp-management, ""
    why: str = ""

    def to_for(self, routing_key: str) -> str | None:
        if self.to is None:
            return None
        return self.to.replace("{routing_key}", encode_segment(routing_key) if self.quote_key else routing_key)

    def describe(self) -> str:
        if self.target is not None:
            return self.target
        return f"{self.to} per message (anonymous relay)"


def route(exchange: ExchangeSettings, broker: BrokerInfo) -> Route:
    """The route for this broker: explicit templates as written, `auto` by product and version."""
    template = exchange.address
    name, ex_type = exchange.name, exchange.type
    kind = flavour(broker)
    creates = {"rabbitmq4": "rabbitmq-management", "brokerj": "amqp-management"}.get(kind, "")
    if template != AUTO:
        if "{routing_key}" in template:
            return Route(kind, None, template.replace("{name}", name), quote_key=True, creates=creates,
                         why="[exchange] address")
        return Route(kind, template.format(name=name), hints=True, creates=creates, why="[exchange] address")
    seen = f"{broker} (auto)"
    if kind == "rabbitmq3":
        return Route(kind, f"/exchange/{name}", why=f"{seen}: v1 address, subject = routing key")
    if kind == "rabbitmq4":
        v2 = f"/exchanges/{encode_segment(name)}"
        if ex_type == "headers":
            return Route(kind, v2, creates=creates, why=f"{seen}: v2 address; headers route")
        return Route(kind, None, v2 + "/{routing_key}", quote_key=True, creates=creates,
                     why=f"{seen}: v2 address with the routing key, per message")
    if kind == "artemis":
        if ex_type == "headers":
            return Route(kind, name, capabilities=("topic",),
                         why=f"{seen}: one multicast address; consumers select on the headers")
        return Route(kind, None, "{routing_key}",
                     why=f"{seen}: a multicast address per routing key; consumers subscribe with wildcards")
    if kind == "brokerj":
        return Route(kind, name, creates=creates, why=f"{seen}: the exchange as target, subject = routing key")
    return Route(kind, name, hints=True, why=f"{seen}: unknown broker: the exchange as target, subject = "
                 "routing key (set [exchange] address if this broker wants another address)")


#: one broker of each kind, as its open frame announces it (for previews)
KNOWN_BROKERS = {
    "RabbitMQ 3.x": BrokerInfo(RABBITMQ, "3.13.7"),
    "RabbitMQ 4.x": BrokerInfo(RABBITMQ, "4.0.5"),
    "ActiveMQ Artemis": BrokerInfo(ARTEMIS, "2.40.0"),
    "Qpid Broker-J": BrokerInfo(BROKERJ_PREFIX + " Core", "9.2.0"),
}


def addresses_by_broker(exchange: ExchangeSettings, routing_key: str) -> dict[str, str]:
    """Where one message goes on each kind of broker (what `auto` resolves to, or the template)."""
    out = {}
    for label, info in KNOWN_BROKERS.items():
        r = route(exchange, info)
        to = r.to_for(routing_key)
        out[label] = f"to {to} (anonymous relay)" if to is not None else f"target {r.target}, subject = routing key"
    return out


_logged: set[tuple[str, str]] = set()
_logged_lock = threading.Lock()


def log_choice_once(endpoint: str, r: Route) -> None:
    """The address chosen, logged once per process and endpoint (reconnects stay quiet)."""
    key = (endpoint, r.describe())
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    log.info("%s: sending to %s (%s)", endpoint, r.describe(), r.why)


# ---- setting `to` in an encoded message ----------------------------------------------------------
_SKIP = {0x40: 0, 0x41: 0, 0x42: 0, 0x43: 0, 0x44: 0, 0x56: 1, 0x50: 1, 0x51: 1, 0x52: 1, 0x53: 1, 0x54: 1, 0x55: 1,
         0x60: 2, 0x61: 2, 0x70: 4, 0x71: 4, 0x72: 4, 0x73: 4, 0x80: 8, 0x81: 8, 0x82: 8, 0x83: 8,
         0x98: 16}
_VARIABLE = {0xA0: 1, 0xA1: 1, 0xA3: 1, 0xB0: 4, 0xB1: 4, 0xB3: 4}


def _value_end(buf: bytes, pos: int) -> int:
    """Where the AMQP primitive value at `pos` ends (only the types a message-id or user-id has)."""
    code = buf[pos]
    if code in _SKIP:
        return pos + 1 + _SKIP[code]
    width = _VARIABLE.get(code)
    if width is None:
        raise ValueError(f"type 0x{code:02x}")
    size = int.from_bytes(buf[pos + 1:pos + 1 + width], "big")
    return pos + 1 + width + size


def _list_end(buf: bytes, pos: int) -> tuple[int, int, int]:
    """(start of the first element, end, count) of the list encoded at `pos`."""
    code = buf[pos]
    if code == 0x45:
        return pos + 1, pos + 1, 0
    if code == 0xC0:
        size, count = buf[pos + 1], buf[pos + 2]
        return pos + 3, pos + 2 + size, count
    if code == 0xD0:
        size = int.from_bytes(buf[pos + 1:pos + 5], "big")
        count = int.from_bytes(buf[pos + 5:pos + 9], "big")
        return pos + 9, pos + 5 + size, count
    raise ValueError(f"list type 0x{code:02x}")


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return (b"\xa1" + bytes((len(raw),)) if len(raw) <= 255 else b"\xb1" + len(raw).to_bytes(4, "big")) + raw


def subject_of(payload: bytes) -> str | None:
    """The subject (our routing key) of an encoded message, or None."""
    try:
        buf = payload
        first, end, count = _properties(buf)
        if count < 4:
            return None
        pos = _value_end(buf, _value_end(buf, _value_end(buf, first)))
        if buf[pos] == 0x40:
            return None
        width = _VARIABLE.get(buf[pos])
        if buf[pos] not in (0xA1, 0xB1) or width is None:
            return None
        size = int.from_bytes(buf[pos + 1:pos + 1 + width], "big")
        return buf[pos + 1 + width:pos + 1 + width + size].decode("utf-8")
    except (ValueError, IndexError, UnicodeDecodeError):
        msg = Message()
        msg.decode(payload)
        return msg.subject


def with_to(payload: bytes, to: str) -> bytes:
    """The encoded message with its properties' `to` set (the rest byte for byte); messages are
    encoded once (and stored in the outbox) before the broker, hence the address, is known."""
    try:
        return _with_to(payload, to)
    except (ValueError, IndexError):
        msg = Message()
        msg.decode(payload)
        msg.address = to
        return msg.encode()


def _with_to(buf: bytes, to: str) -> bytes:
    head = _properties_at(buf)
    first, end, count = _list_end(buf, head)
    if count < 3:
        raise ValueError("properties without a to field")
    after_id = _value_end(buf, first)
    after_user = _value_end(buf, after_id)
    after_to = _value_end(buf, after_user)
    fields = buf[first:after_user] + _str(to) + buf[after_to:end]
    size = len(fields) + 1
    if size <= 255 and count <= 255:
        header = b"\xc0" + bytes((size, count))
    else:
        header = b"\xd0" + (len(fields) + 4).to_bytes(4, "big") + count.to_bytes(4, "big")
    return buf[:head] + header + fields + buf[end:]


def _properties(buf: bytes) -> tuple[int, int, int]:
    return _list_end(buf, _properties_at(buf))


def _properties_at(buf: bytes) -> int:
    """Where the properties section's list starts."""
    pos = 0
    while True:  # sections before the properties: header, delivery- and message-annotations
        if buf[pos:pos + 2] != b"\x00\x53":
            raise ValueError("not a described section")
        code = buf[pos + 2]
        if code == 0x73:
            break
        if code not in (0x70, 0x71, 0x72):
            raise ValueError("no properties section")
        body = pos + 3
        if code == 0x70:
            _, end, _ = _list_end(buf, body)
        else:  # a map: same size layout as a list
            if buf[body] == 0xC1:
                end = body + 2 + buf[body + 1]
            elif buf[body] == 0xD1:
                end = body + 5 + int.from_bytes(buf[body + 1:body + 5], "big")
            else:
                raise ValueError("annotations")
        pos = end
    return pos + 3
