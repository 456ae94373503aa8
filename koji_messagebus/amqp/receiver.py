"""Receiver links: a consumer's side of the exchange, for `koji-messagebus listen` and the demo.

`Receivers` attaches one receiver per source address on a `Connection` and hands each decoded
message to a callback, accepting it after the callback returned.  `Listener` is a connection
with such receivers; `open_listener()` connects to the first endpoint that works.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

from proton import Delivery, Endpoint, Message

from ..config import Config
from ..config import Endpoint as BrokerEndpoint
from .connection import BrokerInfo, Connection
from .failover import connect_first

CREDIT = 100
DEDUP_WINDOW = 10000
#: the longest one I/O loop run while listening (Ctrl-C is seen between runs)
SLICE = 30.0
LEFTOVER_QUEUE_NOTE = (
    "RabbitMQ {version} keeps a listener's queue (amq.gen-...) after the listener leaves (its AMQP 1.0 "
    "plugin declares it neither exclusive nor auto-delete); to have such queues removed once unused, set "
    "a policy: rabbitmqctl set_policy --apply-to queues koji-messagebus-listeners '^amq\\.gen-' "
    "'{{\"expires\":600000}}'")


class Receivers:
    """One receiver link per source address, each with `credit` messages of credit."""

    def __init__(self, conn: Connection, sources: list[str], credit: int = CREDIT, name: str | None = None):
        self.conn = conn
        self.sources = sources
        self.credit = credit
        self.name = name or f"koji-messagebus-listen-{os.getpid()}"
        self._links: list[Any] = []
        self._inbox: deque[tuple[Delivery, Message]] = deque()
        self._seen: OrderedDict[Any, None] = OrderedDict()

    def attach(self) -> None:
        for i, address in enumerate(self.sources):
            rcv = self.conn.session.receiver(f"{self.name}-{i}")
            rcv.source.address = address
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
        data = link.recv(dlv.pending)
        link.advance()
        msg = Message()
        msg.decode(data)
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
    """A connection whose links are receivers; `listen()` hands each message to a callback."""

    def __init__(self, config: Config, endpoint: BrokerEndpoint, sources: list[str], credit: int = CREDIT):
        self.config = config
        self.endpoint = endpoint
        self.sources = sources
        self.connection = Connection(config, endpoint)
        self.receivers = Receivers(self.connection, sources, credit)

    def open(self, deadline: float) -> None:
        self.connection.start(deadline)
        self.receivers.attach()
        self.connection.wait(self.receivers.attached, deadline, "attaching to the exchange")

    def listen(self, handle: Callable[[Message], bool | None], until: float | None = None) -> None:
        self.receivers.listen(handle, until)

    def close(self, wait: float = 2.0) -> None:
        """Close and wait (briefly) for the broker's close, so RabbitMQ drops the consumer and its
        auto-delete queue (see Connection.close)."""
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


def open_listener(config: Config, sources: list[str]) -> Listener:
    """Connect to the first endpoint that works (like the publisher: each endpoint with its own
    connect_timeout) and attach the receivers."""
    listener, _ = connect_first(config, lambda ep: Listener(config, ep, sources))
    return listener
