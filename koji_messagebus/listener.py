"""A consumer for the command line: receivers on the exchange, decoded messages as JSON.

On RabbitMQ 3.x with its AMQP 1.0 plugin a receiver whose source address is
`/exchange/NAME/BINDING_KEY` gets a server-named queue (`amq.gen-...`) bound to the exchange
with that key.  That plugin (3.10.8, checked in its code and here) declares the queue neither
exclusive nor auto-delete, so it outlives the listener and keeps collecting messages.  So when
pika is installed, `temporary_queue()` declares an auto-delete queue over AMQP 0-9-1 and the
listener consumes it over AMQP 1.0 (`/amq/queue/NAME`); otherwise the `/exchange/` source is
used and `LEFTOVER_QUEUE_NOTE` says how to have such queues expire.  Application properties are
not visible to a headers exchange there, so header matches are applied on the client side.

The connection, TLS, SASL and error reporting are those of `amqp.AmqpConnection`; only the
links differ (receivers instead of the sender).
"""

from __future__ import annotations

import base64
import datetime
import fnmatch
import json
import os
import select
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from proton import Delivery, Endpoint, Message

from .amqp import AmqpConnection, BrokerError
from .config import Config
from .rabbitmq import QUEUE_EXPIRES_MS, amqp091_connect, temporary_queue  # noqa: F401 - re-exported

DEFAULT_SOURCE = "/exchange/{name}/{key}"
CREDIT = 100
DEDUP_WINDOW = 10000
LEFTOVER_QUEUE_NOTE = (
    "RabbitMQ {version} keeps a listener's queue (amq.gen-...) after the listener leaves (its AMQP 1.0 "
    "plugin declares it neither exclusive nor auto-delete); to have such queues removed once unused, set "
    "a policy: rabbitmqctl set_policy --apply-to queues koji-messagebus-listeners '^amq\\.gen-' "
    "'{{\"expires\":600000}}'")


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
    if config.get("exchange", "type") == "headers":
        return [template.replace("/{key}", "").replace("{key}", "").format(name=config.exchange)]
    return [template.format(name=config.exchange, key=key.replace("/", "%2F")) for key in keys or ["#"]]


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
    headers = dict(msg.properties or {})
    annotations = dict(msg.annotations or {})
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
    return "\n".join(lines)


# ---- the receiving connection ------------------------------------------------------------------
class Listener(AmqpConnection):
    """An AmqpConnection whose links are receivers; `listen()` hands each message to a callback."""

    def __init__(self, config: Config, endpoint, sources: list[str], credit: int = CREDIT):
        super().__init__(config, endpoint)
        self.sources = sources
        self.credit = credit
        self._receivers: list = []
        self._inbox: deque[tuple[Delivery, Message]] = deque()
        self._seen: OrderedDict[Any, None] = OrderedDict()

    def _open_links(self) -> None:
        for i, address in enumerate(self.sources):
            rcv = self._session.receiver(f"koji-messagebus-listen-{os.getpid()}-{i}")
            rcv.source.address = address
            rcv.target.address = rcv.name
            rcv.open()
            rcv.flow(self.credit)
            self._receivers.append(rcv)

    def _attached(self) -> bool:
        # a refused link comes back with a null source, followed by a detach naming the error
        return all(r.state & Endpoint.REMOTE_ACTIVE and r.remote_source.address for r in self._receivers)

    def _delivery(self, dlv: Delivery) -> None:
        link = dlv.link
        if not link.is_receiver:
            super()._delivery(dlv)
            return
        if not dlv.readable or dlv.partial:
            return  # proton keeps the frames until the whole message is there
        data = link.recv(dlv.pending)
        link.advance()
        msg = Message()
        msg.decode(data)
        self._inbox.append((dlv, msg))

    def close(self, wait: float = 2.0) -> None:
        """Close and wait (briefly) for the broker's close, so RabbitMQ drops the consumer and its
        auto-delete queue (see AmqpConnection.close)."""
        super().close(wait)

    @property
    def broker(self) -> dict[str, str]:
        """The broker's product and version as it announced them in its open frame."""
        props = self._conn.remote_properties or {}
        return {str(k): str(v) for k, v in props.items() if str(k) in ("product", "version", "platform")}

    def leftover_queue_note(self) -> str | None:
        """A note for RabbitMQ before 4.0, whose AMQP 1.0 plugin leaves the queue behind."""
        info = self.broker
        version = info.get("version", "")
        if info.get("product") == "RabbitMQ" and version[:1].isdigit() and int(version.split(".")[0]) < 4:
            return LEFTOVER_QUEUE_NOTE.format(version=version)
        return None

    def listen(self, handle: Callable[[Message], bool], until: float | None = None) -> None:
        """Receive until `handle` returns False, until the monotonic time `until`, or Ctrl-C.
        Each message is accepted after `handle` returned; the same message-id arriving over
        several bindings is handed over once."""
        dedup = len(self._receivers) > 1
        while True:
            slice_end = time.monotonic() + 30.0
            if until is not None:
                slice_end = min(slice_end, until)
            self._wait(slice_end)
            while self._inbox:
                dlv, msg = self._inbox.popleft()
                go_on = True
                if not (dedup and self._duplicate(msg.id)):
                    go_on = handle(msg)
                dlv.update(Delivery.ACCEPTED)
                dlv.settle()
                rcv = dlv.link
                if rcv.credit < self.credit // 2:
                    rcv.flow(self.credit - rcv.credit)
                if go_on is False:
                    self._io()
                    return
            self._io()
            if until is not None and time.monotonic() >= until:
                return

    def _duplicate(self, msg_id: Any) -> bool:
        if msg_id is None:
            return False
        if msg_id in self._seen:
            return True
        self._seen[msg_id] = None
        if len(self._seen) > DEDUP_WINDOW:
            self._seen.popitem(last=False)
        return False

    def _wait(self, until: float) -> None:
        """Run the I/O loop until a message is in or `until`; raise BrokerError if the link dies."""
        while True:
            self._io()
            self._dispatch()
            if self._error:
                raise self._error
            now = time.monotonic()
            if self._inbox or now >= until:
                return
            wake = until
            tick = self._transport.tick(now)
            if tick:
                wake = min(wake, tick)
            wants_write = self._transport.pending() > 0
            select.select([self._sock], [self._sock] if wants_write else [], [], max(0.0, wake - now))


def open_listener(config: Config, sources: list[str]) -> Listener:
    """Connect to the first endpoint that works (like the publisher: each endpoint with its own
    connect_timeout) and attach the receivers."""
    errors: list[BrokerError] = []
    for endpoint in config.endpoints:
        listener = Listener(config, endpoint, sources)
        try:
            listener.open(time.monotonic() + config.get("broker", "connect_timeout"))
            return listener
        except BrokerError as exc:
            listener.close()
            errors.append(exc)
            if exc.kind in ("not-found", "refused"):  # the broker's verdict (publisher.FINAL_KINDS)
                break
    if len(errors) == 1:
        raise errors[0]
    raise BrokerError(errors[-1].kind, "; ".join(str(e) for e in errors))
