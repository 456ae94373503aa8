"""An AMQP 1.0 receiver (proton) of what the plugin sent, on every broker of the matrix.

How each broker lets an AMQP 1.0 client read what went to an exchange:
- RabbitMQ 3.10: a queue declared and bound with pika, read from `/amq/queue/NAME`;
- RabbitMQ 4.x: a durable queue declared and bound with pika (transient non-exclusive queues are
  denied, an exclusive one belongs to pika's connection), read from `/queues/NAME`;
- Artemis: no exchanges.  Topic: a multicast (capability `topic`) subscription per binding on the
  Artemis wildcard address (`koji.event.#`: the same `.`-split patterns as AMQP topics; "#" alone
  becomes `koji.event.#` so that Artemis' own notification addresses stay out).  Headers: a
  multicast subscription on the exchange's name with a selector on the application-properties;
- Broker-J: topic: a link from the exchange with a legacy topic binding filter; headers: a queue
  bound through Broker-J's AMQP management node `$management` (which also declares the exchange).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pika
from proton import Described, Message, symbol
from proton.reactor import Filter, Selector
from proton.utils import BlockingConnection, BlockingReceiver

from devkit.brokers import BrokerTarget, target
from tests.support.contract import check
from tests.support.pika_consumer import Received, pika_parameters

TOPIC_PREFIX = "koji.event"


def connect(t: BrokerTarget | None = None, timeout: float = 10.0) -> BlockingConnection:
    t = t or target()
    return BlockingConnection(t.url, user=t.user, password=t.password, allowed_mechs="PLAIN",
                              timeout=timeout)


def received(msg: Message) -> Received:
    """What arrived, in the shape the pika decoder gives (routing key: RabbitMQ's annotation,
    else the subject, else the address the message went to)."""
    ann = msg.annotations or {}
    key = ann.get("x-routing-key") or ann.get(symbol("x-routing-key")) or msg.subject or msg.address or ""
    return Received(str(key), 2 if msg.durable else 1, msg.id, dict(msg.properties or {}), msg.body, msg.subject)


def _selector(binding: dict) -> str:
    """An Artemis selector for a headers binding (x-match all, or any)."""
    how = " OR " if binding.get("x-match") == "any" else " AND "
    parts = []
    for key, value in binding.items():
        if key == "x-match":
            continue
        literal = str(value) if isinstance(value, (int, float)) else "'" + str(value).replace("'", "''") + "'"
        parts.append(f"{key} = {literal}")
    return how.join(parts)


def brokerj_manage(operation: str, type_: str, name: str, t: BrokerTarget | None = None, **params: str) -> int:
    """One request to Broker-J's AMQP management node; returns its status code.  CREATE names the
    object in the body; other operations (DELETE, bind) find it by its object-path, with `params`
    as the operation's arguments."""
    conn = connect(t)
    try:
        reply = conn.create_receiver(None, dynamic=True)
        sender = conn.create_sender("$management")
        props: dict[str, Any] = {"operation": operation, "type": type_}
        body: Any = None
        if operation == "CREATE":
            props["name"] = name
            body = {"name": name, "object-path": name, "durable": type_.endswith("Queue")}
        else:
            props.update({"index": "object-path", "key": name, **params})
        sender.send(Message(properties=props, body=body, reply_to=reply.link.remote_source.address,
                            correlation_id=uuid.uuid4().hex))
        answer = reply.receive(timeout=10)
        reply.accept()
        return int((answer.properties or {}).get("statusCode", 0))
    finally:
        conn.close()


def _brokerj_kind(ex_type: str) -> str:
    return "org.apache.qpid.TopicExchange" if ex_type == "topic" else "org.apache.qpid.HeadersExchange"


class Receiver:
    """Subscribed before anything is sent; collect() returns what arrived (as the pika Consumer)."""

    hides_subject = False

    def __init__(self, exchange: str, ex_type: str = "topic", bindings: list | None = None,
                 declare: bool = True, t: BrokerTarget | None = None):
        self.target = t or target()
        self.exchange, self.ex_type, self.declare = exchange, ex_type, declare
        self.bindings = bindings or (["#"] if ex_type == "topic" else [{}])
        self.queue: str | None = None
        self.conn = connect(self.target)
        self.receivers: list[BlockingReceiver] = []
        flavour = self.target.flavour
        if flavour in ("rabbitmq3", "rabbitmq4"):
            self._rabbitmq_queue()
        elif flavour == "artemis":
            self._artemis()
        elif flavour == "brokerj":
            self._brokerj()
        else:
            raise ValueError(f"no AMQP 1.0 receiver for {flavour}")

    def _rabbitmq_queue(self) -> None:
        self.queue = f"kmb-test-{uuid.uuid4().hex[:8]}"
        conn = pika.BlockingConnection(pika_parameters())
        try:
            ch = conn.channel()
            if self.declare:
                ch.exchange_declare(self.exchange, self.ex_type, durable=True, auto_delete=False)
            durable = self.target.flavour == "rabbitmq4"
            ch.queue_declare(self.queue, durable=durable, arguments={"x-expires": 600_000})
            for binding in self.bindings:
                if isinstance(binding, dict):
                    ch.queue_bind(self.queue, self.exchange, "", arguments={"x-match": "all", **binding})
                else:
                    ch.queue_bind(self.queue, self.exchange, binding)
        finally:
            conn.close()
        address = f"/queues/{self.queue}" if self.target.flavour == "rabbitmq4" else f"/amq/queue/{self.queue}"
        self.receivers.append(self.conn.create_receiver(address, credit=500))

    def _artemis(self) -> None:
        for binding in self.bindings:
            options: list[Any] = [_Topic()]
            if self.ex_type == "topic":
                address = f"{TOPIC_PREFIX}.#" if binding == "#" else str(binding)
            else:
                address = self.exchange
                selector = _selector(binding)
                if selector:
                    options.append(Selector(selector))
            self.receivers.append(self.conn.create_receiver(address, credit=500, options=options))

    def _brokerj(self) -> None:
        """Topic: links from the exchange with a topic binding filter.  Headers: Broker-J binds no
        link on a headers exchange (no binding is made, nothing arrives), so a queue of its own,
        bound through the management node with the headers as arguments."""
        kind = _brokerj_kind(self.ex_type)
        if self.declare:
            status = brokerj_manage("CREATE", kind, self.exchange, self.target)
            if status not in (200, 201):
                raise RuntimeError(f"Broker-J would not create exchange {self.exchange}: status {status}")
        if self.ex_type == "topic":
            for binding in self.bindings:
                value = Described(symbol("apache.org:legacy-amqp-topic-binding:string"), binding)
                self.receivers.append(self.conn.create_receiver(
                    self.exchange, credit=500, options=Filter({symbol("binding"): value})))
            return
        self.queue = f"kmb-test-{uuid.uuid4().hex[:8]}"
        status = brokerj_manage("CREATE", "org.apache.qpid.StandardQueue", self.queue, self.target)
        if status not in (200, 201):
            raise RuntimeError(f"Broker-J would not create queue {self.queue}: status {status}")
        for i, binding in enumerate(self.bindings):
            args = json.dumps({"x-match": "all", **binding})
            status = brokerj_manage("bind", kind, self.exchange, self.target, destination=self.queue,
                                    bindingKey=f"b{i}", arguments=args)
            if status != 200:
                raise RuntimeError(f"Broker-J would not bind {self.queue} to {self.exchange}: status {status}")
        self.receivers.append(self.conn.create_receiver(self.queue, credit=500))

    def collect(self, expect: int | None = None, timeout: float = 5.0, quiet: float = 0.3) -> list[Received]:
        """Messages that arrived: wait for `expect` of them (then `quiet` more for extras)."""
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            moved = False
            for rx in self.receivers:
                try:
                    msg = rx.receive(timeout=0.02)
                except Exception:  # noqa: BLE001 - proton's Timeout: nothing there yet
                    continue
                rx.accept()
                got.append(received(msg))
                moved = True
            if moved:
                continue
            if expect is None or len(got) >= expect:
                settle_until = settle_until or time.monotonic() + quiet
                if time.monotonic() >= settle_until:
                    break
        return check(got)  # every plugin message matches its schema (tests/support/contract.py)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, delete_exchange: bool = True) -> None:
        try:
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        flavour = self.target.flavour
        try:
            if flavour in ("rabbitmq3", "rabbitmq4"):
                conn = pika.BlockingConnection(pika_parameters())
                try:
                    ch = conn.channel()
                    if self.queue:
                        ch.queue_delete(self.queue)
                    if delete_exchange:
                        ch.exchange_delete(self.exchange)
                finally:
                    conn.close()
            elif flavour == "brokerj":
                if self.queue:
                    brokerj_manage("DELETE", "org.apache.qpid.StandardQueue", self.queue, self.target)
                if delete_exchange:
                    brokerj_manage("DELETE", _brokerj_kind(self.ex_type), self.exchange, self.target)
        except Exception:  # noqa: BLE001 - clean-up only
            pass


class _Topic:
    """Link option: a multicast (topic) source on Artemis."""

    def apply(self, link) -> None:
        link.source.capabilities.put_object(symbol("topic"))

    def test(self, link) -> bool:
        return bool(link.is_receiver)
