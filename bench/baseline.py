"""The alternatives the plugin is compared with, written with proton's own reactor (Container).

`per_request_send` sends one request's messages the way Koji's protonmsg hub plugin does: a new
Container and connection for every request, a sender, every message sent at once, wait for all
settlements, close the sender and the connection.  `pipelined_send` is a bare sender that streams
many messages on one connection as fast as the link credit allows and waits for every settlement.
Both send pre-encoded AMQP messages (the same bytes the plugin sends), so encoding costs nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from proton import Delivery
from proton.handlers import MessagingHandler
from proton.reactor import Container


@dataclass
class Broker:
    host: str = "127.0.0.1"
    port: int = 5672
    username: str = "guest"
    password: str = "guest"

    @property
    def url(self) -> str:
        return f"amqp://{self.host}:{self.port}"


def _connect(container: Container, broker: Broker):
    return container.connect(url=broker.url, user=broker.username, password=broker.password,
                             allowed_mechs="PLAIN", allow_insecure_mechs=True, reconnect=False)


def _stream(sender, tag: str, payload: bytes) -> Delivery:
    dlv = sender.delivery(tag)
    sender.stream(payload)
    sender.advance()
    return dlv


class _PerRequest(MessagingHandler):
    """protonmsg's TimeoutHandler, reduced to what it does on the wire."""

    def __init__(self, broker: Broker, address: str, payloads: list[bytes], timeout: float):
        super().__init__()
        self.broker, self.address, self.payloads, self.timeout = broker, address, payloads, timeout
        self.pending = 0
        self.accepted = 0
        self.sender = None
        self.timer = None

    def on_start(self, event):
        _connect(event.container, self.broker)
        self.timer = event.container.schedule(self.timeout, self)

    def on_connection_opened(self, event):
        self.sender = event.container.create_sender(event.connection, target=self.address)
        for i, payload in enumerate(self.payloads):
            _stream(self.sender, str(i), payload)
            self.pending += 1

    def on_accepted(self, event):
        self.accepted += 1

    def on_settled(self, event):
        self.pending -= 1
        if not self.pending:
            self.sender.close()
            if self.timer:
                self.timer.cancel()
                self.timer = None
            event.connection.close()

    def on_timer_task(self, event):
        event.container.stop()


def per_request_send(broker: Broker, address: str, payloads: list[bytes], timeout: float = 10.0) -> int:
    """Connect, send, wait for every settlement, close; return how many were accepted."""
    handler = _PerRequest(broker, address, payloads, timeout)
    Container(handler).run()
    return handler.accepted


class _Pipelined(MessagingHandler):
    def __init__(self, broker: Broker, address: str, payloads: list[bytes]):
        super().__init__()
        self.broker, self.address, self.payloads = broker, address, payloads
        self.sent = 0
        self.settled = 0
        self.accepted = 0
        self.started = 0.0
        self.finished = 0.0

    def on_start(self, event):
        conn = _connect(event.container, self.broker)
        event.container.create_sender(conn, target=self.address)

    def on_link_opened(self, event):
        if not self.started:
            self.started = time.perf_counter()

    def on_sendable(self, event):
        sender = event.sender
        while sender.credit > 0 and self.sent < len(self.payloads):
            _stream(sender, str(self.sent), self.payloads[self.sent])
            self.sent += 1

    def on_accepted(self, event):
        self.accepted += 1

    def on_settled(self, event):
        self.settled += 1
        if self.settled == len(self.payloads):
            self.finished = time.perf_counter()
            event.connection.close()


def pipelined_send(broker: Broker, address: str, payloads: list[bytes]) -> tuple[float, int]:
    """Send everything on one warm connection; return (seconds from attach to the last
    settlement, accepted)."""
    handler = _Pipelined(broker, address, payloads)
    Container(handler).run()
    if handler.settled != len(payloads):
        raise RuntimeError(f"bare sender: only {handler.settled} of {len(payloads)} settled")
    return handler.finished - handler.started, handler.accepted


class _WarmBatches(MessagingHandler):
    def __init__(self, broker: Broker, address: str, payloads: list[bytes], count: int):
        super().__init__()
        self.broker, self.address, self.payloads, self.count = broker, address, payloads, count
        self.times: list[float] = []
        self.sender = None
        self.pending = 0
        self.started = 0.0
        self.tag = 0

    def on_start(self, event):
        conn = _connect(event.container, self.broker)
        self.sender = event.container.create_sender(conn, target=self.address)

    def on_sendable(self, event):
        if not self.started:
            self._batch()

    def _batch(self):
        self.started = time.perf_counter()
        for payload in self.payloads:
            self.tag += 1
            _stream(self.sender, str(self.tag), payload)
        self.pending = len(self.payloads)

    def on_settled(self, event):
        self.pending -= 1
        if self.pending:
            return
        self.times.append(time.perf_counter() - self.started)
        if len(self.times) < self.count:
            self._batch()
        else:
            event.connection.close()


def warm_batches(broker: Broker, address: str, payloads: list[bytes], count: int) -> list[float]:
    """The broker round trip: send `payloads` and wait for their settlements, `count` times back to
    back on one warm connection; return the seconds each batch took."""
    handler = _WarmBatches(broker, address, payloads, count)
    Container(handler).run()
    return handler.times
