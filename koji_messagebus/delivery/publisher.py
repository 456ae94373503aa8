"""The synchronous publisher: one warm connection per process, failover, reconnect, circuit breaker.

`Publisher.send(batch)` runs on the caller's thread; one lock serialises use of the connection.
The command line (`outbox flush`, `check`, `replay`) and the poison-message quarantine use it;
the hub's request path uses `delivery.sender.SenderThread`, which shares one connection between
threads without a lock.

Every call is bounded: connect_timeout per endpoint for opening a connection, timeout for the
settlements, at most one resend on a new connection; while the breaker is open a call returns at
once, without touching the network.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from koji_messagebus.amqp import AmqpConnection, BatchOutcome, BrokerError, Kind, connect_first
from koji_messagebus.config.sections import Endpoint as BrokerEndpoint
from koji_messagebus.config.settings import Config
from koji_messagebus.delivery.breaker import CircuitBreaker, Role
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log


class BrokerConnection(Protocol):
    """What a publisher needs of a connection (amqp.AmqpConnection; fakes in unit tests)."""

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


class Publisher:
    """Sends batches of encoded messages and waits for their settlement, on the caller's thread."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic,
                 connect: ConnectionFactory = amqp_connection):
        self.config = config
        self._clock = clock
        self._make = connect
        self._lock = threading.Lock()
        self._conn: BrokerConnection | None = None
        connect_timeout = config.broker.connect_timeout
        send = config.broker.timeout
        #: the longest one send() can take: every endpoint's connect timeout, twice (one resend), plus the sends
        self.max_seconds = 2 * (connect_timeout * max(1, len(config.endpoints)) + send)
        self.breaker = CircuitBreaker(config.broker.retry_interval, clock,
                                      probe_timeout=self.max_seconds + connect_timeout)
        self.connects = 0  # connections opened
        self.attempts = 0  # send() calls that went to the network

    @property
    def endpoint(self) -> str:
        conn = self._conn
        return str(conn.endpoint) if conn else ""

    def seconds_left(self) -> float:
        """Seconds until the broker may be tried again (0: now)."""
        return self.breaker.seconds_left()

    def send(self, batch: list[Outgoing]) -> SendResult:
        """Send a batch; never raises (see SendResult.error)."""
        result = SendResult()
        if not batch:
            return result
        role = self.breaker.acquire()
        if role is None:
            return self._deferred(batch, result, self._breaker_error())
        start = self._clock()
        # another thread may hold the connection for up to max_seconds; do not wait longer than one send
        wait = self.config.broker.timeout + self.config.broker.connect_timeout
        if not self._lock.acquire(timeout=wait):
            self.breaker.release(role)
            return self._deferred(batch, result, BrokerError(
                Kind.TIMEOUT, f"another thread held the broker connection for more than {wait:g}s"))
        try:
            if role is Role.NORMAL and self.breaker.is_open:
                # the breaker opened while this thread waited for the lock: do not try again
                return self._deferred(batch, result, self._breaker_error())
            result.tried = True
            self.attempts += 1
            try:
                self._send_locked(batch, result)
            except Exception as exc:  # noqa: BLE001 - a bug must not leave the breaker half-open
                log.exception("unexpected error while sending")
                self._drop_connection()
                done = {m.msg_id for m in result.done}
                result.unsent = [m for m in batch if m.msg_id not in done]
                result.error = BrokerError(Kind.PROTOCOL, f"unexpected error while sending: {exc!r}")
        finally:
            self._lock.release()
        if result.error and result.unsent:
            interval = self.breaker.failure(str(result.error))
            log.debug("broker failure (%s); no new try for %.1fs", result.error, interval)
        else:
            self.breaker.success()
        result.seconds = self._clock() - start
        return result

    def _deferred(self, batch: list[Outgoing], result: SendResult, error: BrokerError) -> SendResult:
        result.unsent = list(batch)
        result.error = error
        return result

    def _breaker_error(self) -> BrokerError:
        return BrokerError(Kind.BREAKER_OPEN, f"broker unavailable, next try in {self.breaker.seconds_left():.1f}s "
                           f"(last error: {self.breaker.last_error})")

    def _send_locked(self, batch: list[Outgoing], result: SendResult) -> None:
        remaining = list(batch)
        for attempt in range(2):
            try:
                conn = self._connection()
            except BrokerError as exc:
                result.unsent = remaining
                result.error = exc
                return
            deadline = self._clock() + self.config.broker.timeout
            outcome = conn.send(remaining, deadline)
            remaining = result.add(outcome)
            if outcome.error is None:
                result.error = None  # a resend after a lost connection worked
                return
            self._drop_connection()
            result.error = outcome.error
            if outcome.error.kind != Kind.CONNECTION_LOST or not remaining or attempt:
                break
            log.warning("%s; resending %d unsettled message(s) on a new connection", outcome.error,
                        len(remaining))
        result.unsent = remaining
        if not remaining and result.error and result.error.kind == Kind.CONNECTION_LOST:
            result.error = None  # everything was settled before the connection went

    def _connection(self) -> BrokerConnection:
        """The warm connection if it is alive, else a new one (failover: amqp.connect_first)."""
        if self._conn is not None:
            if self._conn.healthy():
                return self._conn
            log.info("connection to %s is gone (%s), reconnecting", self._conn.endpoint,
                     self._conn.error)
            self._drop_connection()
        conn, errors = connect_first(self.config.endpoints, self.config.broker.connect_timeout,
                                     lambda ep: self._make(self.config, ep), self._clock)
        if errors:
            log.warning("connected to %s after: %s", conn.endpoint, "; ".join(str(e) for e in errors))
        self._conn = conn
        self.connects += 1
        return conn

    def check(self) -> str:
        """Open (or reuse) the connection and attach, sending nothing; return the endpoint used."""
        with self._lock:
            conn = self._connection()
            return str(conn.endpoint)

    def route_description(self) -> str | None:
        """How the open connection addresses the exchange (`address.Route.describe`), for `check`;
        None when no connection is open or it does not say."""
        route = getattr(self._conn, "route", None)
        return route.describe() if route is not None else None

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop_connection()

