"""Receiver links: a consumer's side of the exchange, for `koji-messagebus listen` and the demo.

`Receivers` attaches one receiver per `Source` on a `Connection` and hands each decoded message
to a callback, accepting it after the callback returned.  `Listener` is a connection with such
receivers; given binding keys instead of sources it reads the broker's open frame and
subscribes the way that broker wants, without deprecated features (`subscription()`):
- RabbitMQ 4.x: an exclusive queue declared and bound through `/management`, read from
  `/queues/NAME`, deleted on close (and by the broker with the connection);
- RabbitMQ 3.x: an auto-delete queue declared over AMQP 0-9-1 when pika is installed, read
  from `/amq/queue/NAME`; else `/exchange/NAME/KEY` (a queue the plugin leaves behind);
- Artemis: a multicast (capability `topic`) subscription per key on the Artemis wildcard
  address (topic), or on the exchange's one address (headers);
- Broker-J and others: a link from the exchange with a legacy binding filter per key.
`open_listener()` connects to the first endpoint that works.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from proton import Data, Delivery, Described, Endpoint, Message, Terminus, symbol

from koji_messagebus.amqp import management
from koji_messagebus.amqp.address import flavour
from koji_messagebus.amqp.connection import BrokerInfo, Connection
from koji_messagebus.amqp.errors import BrokerError, Kind
from koji_messagebus.amqp.failover import connect_first
from koji_messagebus.config.sections import BrokerSettings, ExchangeSettings, TopicSettings
from koji_messagebus.config.sections import Endpoint as BrokerEndpoint
from koji_messagebus.format import codec as amqp_codec
from koji_messagebus.format.wire import PROTON_SAFE_BYTES

CREDIT = 100
DEDUP_WINDOW = 10000
#: the longest one I/O loop run while listening (Ctrl-C is seen between runs)
SLICE = 30.0
LEFTOVER_QUEUE_NOTE = (
    "RabbitMQ {version} keeps a listener's queue (amq.gen-...) after the listener leaves (its AMQP 1.0 "
    "plugin declares it neither exclusive nor auto-delete); to have such queues removed once unused, set "
    "a policy: rabbitmqctl set_policy --apply-to queues koji-messagebus-listeners '^amq\\.gen-' "
    "'{{\"expires\":600000}}'")


TOPIC_BINDING = "apache.org:legacy-amqp-topic-binding:string"
HEADERS_BINDING = "apache.org:legacy-amqp-headers-binding:map"


@dataclass(frozen=True)
class Source:
    """A receiver's source: address, capabilities (`topic`: multicast on Artemis) and a filter."""

    address: str
    capabilities: tuple[str, ...] = ()
    binding: Any = None  # a Described legacy binding filter (Broker-J, qpidd), or None
    durable: bool = False  # a durable subscription (Artemis, Broker-J): kept while the consumer is away

    def __str__(self) -> str:
        return self.address


@dataclass
class Subscription:
    """What `Listener.open()` set up: the sources, a line saying how, and what to remove on close."""

    sources: list[Source]
    how: str
    queue: str = ""  # a RabbitMQ 4.x queue this listener declared (deleted on close)
    leftover: bool = False  # RabbitMQ 3.x /exchange/ sources: a queue stays behind
    notes: list[str] = field(default_factory=list)


def _as_source(item: str | Source) -> Source:
    return item if isinstance(item, Source) else Source(item)


class Receivers:
    """One receiver link per source, each with `credit` messages of credit."""

    def __init__(self, conn: Connection, sources: list[Any], credit: int = CREDIT, name: str | None = None):
        self.conn = conn
        self.sources = [_as_source(s) for s in sources]
        self.credit = credit
        self.name = name or f"koji-messagebus-listen-{os.getpid()}"
        self._links: list[Any] = []
        self._inbox: deque[tuple[Delivery, Message]] = deque()
        self._seen: OrderedDict[Any, None] = OrderedDict()

    def attach(self) -> None:
        for i, src in enumerate(self.sources):
            rcv = self.conn.session.receiver(f"{self.name}-{i}")
            rcv.source.address = src.address
            if src.capabilities:
                caps: Data = rcv.source.capabilities
                caps.put_array(False, Data.SYMBOL)
                caps.enter()
                for cap in src.capabilities:
                    caps.put_symbol(symbol(cap))
                caps.exit()
            if src.binding is not None:
                rcv.source.filter.put_dict({symbol("binding"): src.binding})
            if src.durable:
                rcv.source.durability = Terminus.DELIVERIES
                rcv.source.expiry_policy = Terminus.EXPIRE_NEVER
            rcv.target.address = rcv.name
            self.conn.register(rcv, self)
            rcv.open()
            rcv.flow(self.credit)
            self._links.append(rcv)

    def attached(self) -> bool:
        # a refused link comes back with a null source, followed by a detach naming the error
        return all(r.state & Endpoint.REMOTE_ACTIVE and r.remote_source.address for r in self._links)

    def on_delivery(self, dlv: Delivery) -> None:
        if not dlv.readable or dlv.partial:
            return  # proton keeps the frames until the whole message is there
        link = dlv.link
        data = link.recv(dlv.pending) or b""
        link.advance()
        msg = Message()
        msg.decode(data)
        if len(data) >= PROTON_SAFE_BYTES:
            # proton's decoder keeps at most 65,535 values of a list or map and drops the rest
            # silently; take the sections from our own decoder, which reads 32-bit counts
            whole = amqp_codec.decode_message(data)
            msg.body, msg.properties = whole["body"], whole["headers"]
        self._inbox.append((dlv, msg))

    def listen(self, handle: Callable[[Message], bool | None], until: float | None = None) -> None:
        """Receive until `handle` returns False, until the monotonic time `until`, or Ctrl-C.
        Each message is accepted after `handle` returned; the same message-id arriving over
        several bindings is handed over once."""
        dedup = len(self._links) > 1
        while True:
            slice_end = time.monotonic() + SLICE
            if until is not None:
                slice_end = min(slice_end, until)
            self.conn.process(slice_end, lambda: bool(self._inbox))
            while self._inbox:
                dlv, msg = self._inbox.popleft()
                go_on: bool | None = True
                if not (dedup and self._duplicate(msg.id)):
                    go_on = handle(msg)
                dlv.update(Delivery.ACCEPTED)
                dlv.settle()
                rcv = dlv.link
                if rcv.credit < self.credit // 2:
                    rcv.flow(self.credit - rcv.credit)
                if go_on is False:
                    self.conn.flush()
                    return
            self.conn.flush()
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


class Listener:
    """A connection whose links are receivers; `listen()` hands each message to a callback.
    `sources` are used as given; with `keys` instead (binding keys, or [""] for a headers
    exchange) `open()` subscribes the way the broker wants (see the module's docstring)."""

    def __init__(self, broker: BrokerSettings, exchange: ExchangeSettings, topic: TopicSettings,
                 endpoint: BrokerEndpoint, sources: list[Any] | None = None,
                 credit: int = CREDIT, keys: list[str] | None = None, queue: str | None = None,
                 durable: bool = False):
        self.settings, self.exchange, self.topic = broker, exchange, topic
        self.endpoint = endpoint
        self.keys = keys
        self.queue, self.durable = queue, durable  # a named queue / subscription, and whether it stays
        self.connection = Connection(broker, exchange, endpoint)
        if queue and durable:  # Artemis and Broker-J name a durable subscription by container id and link
            self.connection.container_id = queue
        self.subscription = Subscription([_as_source(s) for s in sources or []], "the given source addresses")
        self.receivers = Receivers(self.connection, self.subscription.sources, credit, name=queue)
        self._mgmt: management.Management | None = None

    @property
    def sources(self) -> list[Source]:
        return self.subscription.sources

    def open(self, deadline: float) -> None:
        if self.keys is None:
            self.connection.start(deadline)  # the receivers attach in the same round trip
        else:
            self.connection.open(deadline)
            kind = flavour(self.connection.broker)
            name = self.exchange.name
            exchange_address = f"/exchange/{name}" if kind == "rabbitmq3" else None
            self.connection.exchange = replace(self.connection.exchange, address=exchange_address)
            self.subscription = self._subscribe(self.keys, deadline)
            self.receivers.sources = self.subscription.sources
            if exchange_address is None:
                self.connection.exchange = replace(self.connection.exchange,
                                                   address=", ".join(map(str, self.subscription.sources)))
        self.receivers.attach()
        self.connection.wait(self.receivers.attached, deadline, "attaching to the exchange")

    def _subscribe(self, keys: list[str], deadline: float) -> Subscription:
        conn = self.connection
        name, topic = self.exchange.name, self.exchange.type == "topic"
        kind = flavour(conn.broker)
        if kind == "rabbitmq4":
            mgmt = self._mgmt = management.Management(conn)
            mgmt.open(deadline)
            queue = self.queue or f"koji-messagebus-listen-{uuid.uuid4().hex[:12]}"
            answer = management.declare_queue(mgmt, queue, deadline, durable=self.durable)
            if not answer.ok:
                raise BrokerError(Kind.REFUSED, f"{conn.broker} at {self.endpoint}: could not declare queue {queue}: "
                                  f"{answer.text()}")
            for key in keys:
                args = {} if topic else {"x-match": "all"}
                answer = management.bind_queue(mgmt, queue, name, key if topic else "", args, deadline)
                if answer.status == 404:
                    raise BrokerError(Kind.NOT_FOUND, f"exchange '{name}' does not exist on {conn.broker} at "
                                      f"{self.endpoint}: {answer.text()}")
                if not answer.ok:
                    raise BrokerError(Kind.REFUSED, f"{conn.broker} at {self.endpoint}: binding queue {queue} to "
                                      f"exchange '{name}' failed: {answer.text()}")
            bound = ", ".join(keys) if topic else "all headers"
            if self.durable:
                return Subscription([Source(f"/queues/{management.encode_segment(queue)}")],
                                    f"durable queue {queue} (declared through /management, bound with {bound}, "
                                    "kept after the listener leaves)")
            return Subscription([Source(f"/queues/{management.encode_segment(queue)}")], f"exclusive queue {queue} "
                                f"(declared through /management, bound with {bound}, deleted when the listener "
                                "leaves)", queue=queue)
        if kind == "rabbitmq3":
            from koji_messagebus.rabbitmq import temporary_queue

            source, how = temporary_queue(self.settings, self.exchange, self.endpoint, keys, self.queue, self.durable)
            if source:
                return Subscription([Source(source)], how)
            if self.queue and "no exchange" not in how:  # a missing exchange: said below, with the fix
                raise BrokerError(Kind.REFUSED, f"--queue on {conn.broker} needs AMQP 0-9-1 (pika) to declare "
                                  f"queue {self.queue}: {how}")
            template = "/exchange/{name}/{key}" if topic else "/exchange/{name}"
            sources = [Source(template.format(name=name, key=k.replace("/", "%2F"))) for k in keys]
            return Subscription(sources, f"{', '.join(map(str, sources))} ({how})", leftover=True)
        if kind == "artemis":
            if topic:
                prefix = self.topic.prefix
                addresses = [f"{prefix}.#" if k == "#" and prefix else k for k in keys]
                return Subscription([Source(a, ("topic",), durable=self.durable) for a in addresses],
                                    f"{self._kind()} on {', '.join(addresses)} (Artemis wildcards)")
            return Subscription([Source(name, ("topic",), durable=self.durable)], f"{self._kind()} on address {name}")
        if topic:
            sources = [Source(name, binding=Described(symbol(TOPIC_BINDING), k), durable=self.durable) for k in keys]
            via = f" ({self._kind()})" if self.durable else ""
            return Subscription(sources, f"links from exchange {name} with binding filters {', '.join(keys)}{via}")
        caveat = (" (Broker-J's headers exchange did not route on AMQP 1.0 application-properties in our tests: "
                  "use a topic exchange there)") if kind == "brokerj" else ""
        return Subscription([Source(name, binding=Described(symbol(HEADERS_BINDING), {"x-match": "all"}))],
                            f"a link from exchange {name} with a headers binding filter{caveat}")

    def _kind(self) -> str:
        if self.durable:
            return (f"durable subscription {self.queue} (container id and link name; kept after the listener "
                    "leaves)")
        return "multicast subscription"

    def listen(self, handle: Callable[[Message], bool | None], until: float | None = None) -> None:
        self.receivers.listen(handle, until)

    def close(self, wait: float = 2.0) -> None:
        """Delete what this listener declared, then close and wait (briefly) for the broker's close,
        so RabbitMQ drops the consumer and its auto-delete queue (see Connection.close)."""
        queue, mgmt = self.subscription.queue, self._mgmt
        if queue and mgmt is not None and self.connection.error is None:
            with contextlib.suppress(BrokerError):
                management.delete_queue(mgmt, queue, time.monotonic() + wait)
        self.connection.close(wait)

    @property
    def broker_info(self) -> BrokerInfo:
        return self.connection.broker

    @property
    def broker(self) -> dict[str, str]:
        """The broker's product and version as it announced them in its open frame."""
        info = self.connection.broker
        return {k: v for k, v in (("product", info.product), ("version", info.version),
                                  ("platform", info.platform)) if v}

    def leftover_queue_note(self) -> str | None:
        """A note for RabbitMQ before 4.0, whose AMQP 1.0 plugin leaves the queue behind."""
        info = self.connection.broker
        if info.product == "RabbitMQ" and info.major is not None and info.major < 4:
            return LEFTOVER_QUEUE_NOTE.format(version=info.version)
        return None


def open_listener(broker: BrokerSettings, exchange: ExchangeSettings, topic: TopicSettings,
                  endpoints: Sequence[BrokerEndpoint], sources: list[Any] | None = None, keys: list[str] | None = None,
                  queue: str | None = None, durable: bool = False) -> Listener:
    """Connect to the first endpoint that works (like the sender thread: each endpoint with its own
    connect_timeout) and attach the receivers: to `sources`, or for binding `keys` the broker's way
    (into the named `queue` or subscription, kept after the listener leaves if `durable`)."""
    listener, _ = connect_first(endpoints, broker.connect_timeout,
                                lambda ep: Listener(broker, exchange, topic, ep, sources, keys=keys, queue=queue,
                                                    durable=durable))
    return listener
