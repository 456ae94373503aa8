"""The sender thread's connection: a pipelined AMQP sender link driven without blocking (start,
poll, select on its socket); `Pipe` is what the thread needs of one (fakes in unit tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from koji_messagebus.amqp import AmqpConnection, BrokerError, Settlement
from koji_messagebus.config.settings import Config
from koji_messagebus.config.settings import Endpoint as BrokerEndpoint


class Pipe(Protocol):
    """A pipelined connection (amqp sender link); `AmqpPipe` in production, fakes in unit tests."""

    endpoint: BrokerEndpoint
    on_settled: Callable[[str, Settlement], None] | None

    def open(self, deadline: float) -> None: ...

    def start(self, payload: bytes) -> str: ...

    def poll(self) -> None: ...

    def credit(self) -> int: ...

    def fileno(self) -> int: ...

    def wants_write(self) -> bool: ...

    def healthy(self) -> bool: ...

    def close(self, wait: float = ...) -> None: ...

    def address(self) -> str | None: ...

    @property
    def error(self) -> BrokerError | None: ...


PipeFactory = Callable[[Config, BrokerEndpoint], Pipe]


class AmqpPipe:
    """amqp.AmqpConnection driven without blocking: start, poll, select on its socket."""

    def __init__(self, config: Config, endpoint: BrokerEndpoint):
        self.endpoint = endpoint
        self._amqp = AmqpConnection(config.broker, config.exchange, endpoint)
        self.on_settled: Callable[[str, Settlement], None] | None = None
        self._amqp.sender.on_settled = self._settled

    def _settled(self, tag: str, settlement: Settlement) -> None:
        self._amqp.sender.settlements.pop(tag, None)  # we keep our own books
        if self.on_settled is not None:
            self.on_settled(tag, settlement)

    def open(self, deadline: float) -> None:
        self._amqp.open(deadline)

    def start(self, payload: bytes) -> str:
        return self._amqp.sender.start(payload)

    def credit(self) -> int:
        """Messages the broker will still take on the link now (its credit less what is queued)."""
        return self._amqp.sender.credit

    def poll(self) -> None:
        """Write what is queued, read and dispatch what arrived; never waits."""
        self._amqp.connection.process(0.0)

    def fileno(self) -> int:
        return self._amqp.connection.fileno()

    def wants_write(self) -> bool:
        return self._amqp.connection.wants_write()

    def healthy(self) -> bool:
        return self._amqp.healthy()

    def address(self) -> str | None:
        """The target in use (status)."""
        return self._amqp.route.describe() if self._amqp.route is not None else None

    def close(self, wait: float = 1.0) -> None:
        self._amqp.close(wait)

    @property
    def error(self) -> BrokerError | None:
        return self._amqp.error
