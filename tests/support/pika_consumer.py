"""What actually arrived: a pika (AMQP 0-9-1) consumer bound to the exchange, and a decoder of
the AMQP 1.0 sections RabbitMQ 3.x keeps in the 0-9-1 message (4.x gives native headers).

The broker is the run's target (devkit/brokers.py, from KMB_BROKER*); the AMQP 1.0 receiver for
every broker is in tests/support/receiver.py; `bound_consumer` picks pika where the broker speaks 0-9-1.
"""

from __future__ import annotations

import time
import uuid

import pika

from devkit.amqp091 import Received, decode_091
from devkit.brokers import need, target
from tests.support.contract import check

AMQP_HOST = target().host
AMQP_PORT = target().amqp091_port or target().port  # pika's port; only used where the broker has 0-9-1


def pika_parameters() -> pika.ConnectionParameters:
    """pika to the run's broker (skips the test where the broker has no AMQP 0-9-1)."""
    t = need("pika")
    return pika.ConnectionParameters(t.host, t.amqp091_port or t.port,
                                     credentials=pika.PlainCredentials(t.user, t.password))


class Consumer:
    """A private queue bound to an exchange; collect() returns what arrived."""

    def __init__(self, exchange: str, ex_type: str = "topic", bindings: list | None = None,
                 declare: bool = True):
        self.conn = pika.BlockingConnection(pika_parameters())
        self.ch = self.conn.channel()
        self.hides_subject = target().flavour != "rabbitmq3"  # 4.x gives 0-9-1 consumers no subject
        if declare:
            # durable, as an operator (and the plugin on 4.x) declares it
            self.ch.exchange_declare(exchange, ex_type, durable=True, auto_delete=False)
        self.exchange = exchange
        self.queue = self.ch.queue_declare(f"kmb-test-{uuid.uuid4().hex[:8]}", exclusive=True).method.queue
        for binding in bindings or (["#"] if ex_type == "topic" else [{}]):
            if isinstance(binding, dict):
                self.ch.queue_bind(self.queue, exchange, "", arguments={"x-match": "all", **binding})
            else:
                self.ch.queue_bind(self.queue, exchange, binding)

    def collect(self, expect: int | None = None, timeout: float = 5.0, quiet: float = 0.3) -> list[Received]:
        """Messages in the queue: wait for `expect` of them (then `quiet` more for extras)."""
        got: list[Received] = []
        deadline = time.monotonic() + timeout
        settle_until = None
        while time.monotonic() < deadline:
            method, props, body = self.ch.basic_get(self.queue, auto_ack=True)
            if method is not None:
                got.append(decode_091(method, props, body))
                continue
            if expect is not None and len(got) >= expect:
                settle_until = settle_until or time.monotonic() + quiet
                if time.monotonic() >= settle_until:
                    break
            elif expect is None:
                settle_until = settle_until or time.monotonic() + quiet
                if time.monotonic() >= settle_until:
                    break
            self.conn.sleep(0.02)
        return check(got)  # every plugin message matches its schema (tests/support/contract.py)

    def close(self, delete_exchange: bool = True):
        try:
            if delete_exchange:
                self.ch.exchange_delete(self.exchange)
            self.conn.close()
        except Exception:  # noqa: BLE001
            pass


def delete_exchange(name: str) -> None:
    """Make sure the exchange does not exist (on Artemis, which has no exchanges: nothing to do)."""
    t = target()
    if t.flavour == "brokerj":
        from tests.support.receiver import brokerj_manage
        brokerj_manage("DELETE", "org.apache.qpid.Exchange", name)
        return
    if not t.has("exchanges"):
        return
    conn = pika.BlockingConnection(pika_parameters())
    try:
        conn.channel().exchange_delete(name)
    finally:
        conn.close()


def bound_consumer(exchange: str, ex_type: str = "topic", bindings: list | None = None, declare: bool = True):
    """A consumer of what the plugin sent to `exchange`: pika where the broker speaks 0-9-1, the
    AMQP 1.0 receiver (tests/support/receiver.py) elsewhere; both give collect() and close()."""
    if target().has("pika"):
        return Consumer(exchange, ex_type, bindings, declare)
    from tests.support.receiver import Receiver
    return Receiver(exchange, ex_type, bindings, declare)
