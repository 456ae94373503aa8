"""Poison suspects, one at a time, on a connection of their own, so that the main stream goes on
without them (see sender.py's docstring for when a message becomes a suspect).

Why a synchronous send of its own (`Probe`) rather than a second sender thread: a suspect is
tried alone, to learn whether the broker chokes on it, and the answer is wanted before the next
try; a sender thread would pipeline it with others and set apart its own suspects.  It is the
sender's only synchronous send (the commands use a sender thread, cli/command_sender.py).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from koji_messagebus.amqp import AmqpConnection, BatchOutcome, BrokerError, Kind, connect_first
from koji_messagebus.config.sections import Endpoint as BrokerEndpoint
from koji_messagebus.config.settings import Config
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.ticket import Item
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log

PROBE_FIRST = 0.1  # seconds before the first probe after the broker went down (the sender's too)
PROBE_MAX = 1.0  # the longest pause between probes (the sender's also capped by retry_interval)


class BrokerConnection(Protocol):
    """What the probe needs of a connection (amqp.AmqpConnection; fakes in unit tests)."""

    endpoint: BrokerEndpoint

    def open(self, deadline: float) -> None: ...

    def send(self, batch: list[Outgoing], deadline: float) -> BatchOutcome: ...

    def healthy(self) -> bool: ...

    def close(self, wait: float = ...) -> None: ...

    @property
    def error(self) -> BrokerError | None: ...


#: makes an unopened connection to one endpoint
ConnectionFactory = Callable[[Config, BrokerEndpoint], BrokerConnection]


def amqp_connection(config: Config, endpoint: BrokerEndpoint) -> BrokerConnection:
    return AmqpConnection(config.broker, config.exchange, endpoint)


class Probe:
    """One message sent and its settlement waited for, on the caller's thread (the quarantine's):
    a warm connection, failover across the endpoints, one resend on a new connection when the
    connection was lost (it may have died idle, before the message).  Bounded: connect_timeout
    per endpoint, timeout for the settlement, twice at most."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic,
                 connect: ConnectionFactory = amqp_connection):
        self.config = config
        self._clock = clock
        self._make = connect
        self._conn: BrokerConnection | None = None
        self.connects = 0  # connections opened

    @property
    def endpoint(self) -> str:
        conn = self._conn
        return str(conn.endpoint) if conn else ""

    def send(self, msg: Outgoing) -> SendResult:
        """Send one message; never raises (see SendResult.error)."""
        result = SendResult(tried=True)
        start = self._clock()
        try:
            self._send(msg, result)
        except Exception as exc:  # noqa: BLE001 - a bug must not end the quarantine's thread
            log.exception("unexpected error while sending a suspect alone")
            self._drop_connection()
            result.unsent = [] if result.done else [msg]
            result.error = BrokerError(Kind.PROTOCOL, f"unexpected error while sending: {exc!r}")
        result.seconds = self._clock() - start
        return result

    def _send(self, msg: Outgoing, result: SendResult) -> None:
        remaining = [msg]
        for attempt in range(2):
            try:
                conn = self._connection()
            except BrokerError as exc:
                result.unsent, result.error = remaining, exc
                return
            outcome = conn.send(remaining, self._clock() + self.config.broker.timeout)
            remaining = result.add(outcome)
            if outcome.error is None:
                result.error = None  # a resend after a lost connection worked
                return
            self._drop_connection()
            result.error = outcome.error
            if outcome.error.kind != Kind.CONNECTION_LOST or not remaining or attempt:
                break
        result.unsent = remaining
        if not remaining and result.error and result.error.kind == Kind.CONNECTION_LOST:
            result.error = None  # settled before the connection went

    def _connection(self) -> BrokerConnection:
        """The warm connection if it is alive, else a new one (failover: amqp.connect_first)."""
        if self._conn is not None:
            if self._conn.healthy():
                return self._conn
            self._drop_connection()
        conn, errors = connect_first(self.config.endpoints, self.config.broker.connect_timeout,
                                     lambda ep: self._make(self.config, ep), self._clock)
        if errors:
            log.warning("connected to %s after: %s", conn.endpoint, "; ".join(str(e) for e in errors))
        self._conn = conn
        self.connects += 1
        return conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        self._drop_connection()


class Quarantine:
    """Suspects, one at a time, on a connection of their own (a `Probe`)."""

    def __init__(self, config: Config, clock: Callable[[], float], connect: ConnectionFactory,
                 verdict: Callable[[Item, SendResult], bool]):
        #: the sender's verdict on a try (outcomes.py): True when the suspect is done with
        self._verdict = verdict
        self._items: deque[Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._probe = Probe(config, clock, connect)
        self._thread = threading.Thread(target=self._run, name="messagebus-quarantine", daemon=True)
        self._thread.start()

    def __len__(self) -> int:
        return len(self._items)

    def first(self) -> Item | None:
        items = self._items
        return items[0] if items else None

    def items(self) -> list[Item]:
        with self._cond:
            return list(self._items)

    def put(self, item: Item) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(2)  # the thread closes its connection (it may be in a probe: at most a probe's bounds)

    def _run(self) -> None:
        try:
            self._probe_suspects()
        finally:
            self._probe.close()

    def _probe_suspects(self) -> None:
        pause = PROBE_FIRST
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._stopping)
                if self._stopping:
                    return
                item = self._items[0]
            result = self._probe.send(item.msg)
            done = self._verdict(item, result)
            with self._cond:
                self._items.popleft()
                if not done:
                    self._items.append(item)
            if done:
                pause = PROBE_FIRST
                continue
            with self._cond:
                self._cond.wait_for(lambda: self._stopping, pause)
            pause = min(pause * 2, PROBE_MAX)
