"""A full `x-overflow: reject-publish` queue on the shared RabbitMQ 3.10: the broker refuses every
message routed to it (RabbitMQ 3.10's AMQP 1.0 session crashes on that refusal).  Declared, bound
and filled over AMQP 0-9-1 (pika), straight to the broker (not through a fault proxy); removed by
close().  bench/faults.py's `rejectq` fault and tests/integration/test_sender_faults.py use it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pika

MAX_LENGTH = 10
DEFAULT_KEYS = ("koji.event.Tag.#",)


class RejectQueue:
    """A full reject-publish queue bound to `exchange` for `keys`, until close()."""

    def __init__(self, exchange: str, keys: Sequence[str] = DEFAULT_KEYS, host: str = "127.0.0.1",
                 port: int = 5672):
        self.exchange = exchange
        self.keys = tuple(keys)
        self.name = f"{exchange}.full.{uuid.uuid4().hex[:6]}"
        self._params = pika.ConnectionParameters(host, port)
        conn = pika.BlockingConnection(self._params)
        try:
            ch = conn.channel()
            ch.confirm_delivery()  # each filler confirmed: the queue is full when this returns
            ch.queue_declare(self.name, auto_delete=False,
                             arguments={"x-max-length": MAX_LENGTH, "x-overflow": "reject-publish"})
            for _ in range(MAX_LENGTH):  # filled before it is bound: under load, routed messages would race
                ch.basic_publish("", self.name, b"fills the queue")
            for key in self.keys:
                ch.queue_bind(self.name, exchange, key)
        finally:
            conn.close()

    def __enter__(self) -> RejectQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove the queue (messages routed to the exchange flow again)."""
        conn = pika.BlockingConnection(self._params)
        try:
            conn.channel().queue_delete(self.name)
        finally:
            conn.close()
