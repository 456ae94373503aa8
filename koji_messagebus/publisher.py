"""The process-wide publisher: one warm connection, failover, reconnect, circuit breaker.

Thread-safe (mod_wsgi runs several threads per process): one lock serialises use of the
connection.  Every call is bounded: connect_timeout for opening a connection, timeout for the
settlements, and while the breaker is open a call returns at once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from .amqp import AmqpConnection, BatchOutcome, BrokerError
from .breaker import CircuitBreaker
from .config import Config
from .wire import Outgoing

log = logging.getLogger("koji.plugin.messagebus")


@dataclass
class SendResult:
    """`accepted` reached the broker; `lost` were refused by it (final); `unsent` may be retried."""

    accepted: list[Outgoing] = field(default_factory=list)
    lost: list[tuple[Outgoing, str]] = field(default_factory=list)
    unsent: list[Outgoing] = field(default_factory=list)
    error: BrokerError | None = None
    seconds: float = 0.0


class Publisher:
    """Sends batches of encoded messages and waits for their settlement."""

    def __init__(self, config: Config, clock=time.monotonic):
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: AmqpConnection | None = None
        self.breaker = CircuitBreaker(config.get("broker", "retry_interval"), clock)
        self.connects = 0

    @property
    def endpoint(self) -> str:
        return str(self._conn.endpoint) if self._conn else ""

    def send(self, batch: list[Outgoing]) -> SendResult:
        """Send a batch; never raises for broker trouble (see SendResult.error)."""
        start = self._clock()
        result = SendResult()
        if not batch:
            return result
        role = self.breaker.acquire()
        if role is None:
            return self._deferred(batch, result, self._breaker_error())
        wait = self.config.get("broker", "timeout") + self.config.get("broker", "connect_timeout")
        if not self._lock.acquire(timeout=wait):
            self.breaker.release(role)
            return self._deferred(batch, result, BrokerError(
                "timeout", "another thread held the broker connection for too long"))
        try:
            if role == "normal" and self.breaker.is_open:
                # the breaker opened while this thread waited for the lock: do not try again
                return self._deferred(batch, result, self._breaker_error())
            self._send_locked(batch, result)
        finally:
            self._lock.release()
        if result.error and result.unsent:
            interval = self.breaker.failure(str(result.error))
            log.debug("broker failure, next try in %.1fs", interval)
        else:
            self.breaker.success()
        result.seconds = self._clock() - start
        return result

    def _deferred(self, batch: list[Outgoing], result: SendResult, error: BrokerError) -> SendResult:
        result.unsent = list(batch)
        result.error = error
        result.seconds = 0.0
        return result

    def _breaker_error(self) -> BrokerError:
        return BrokerError("breaker-open", f"broker unavailable, next try in {self.breaker.seconds_left():.1f}s "
                           f"(last error: {self.breaker.last_error})")

    def _send_locked(self, batch: list[Outgoing], result: SendResult) -> None:
        remaining = list(batch)
        for _attempt in range(2):
            try:
                conn = self._connection()
            except BrokerError as exc:
                result.unsent = remaining
                result.error = exc
                return
            deadline = self._clock() + self.config.get("broker", "timeout")
            outcome: BatchOutcome = conn.send(remaining, deadline)
            result.accepted += outcome.accepted
            result.lost += outcome.lost
            remaining = outcome.unsettled
            if outcome.error is None:
                return
            self._drop_connection()
            result.error = outcome.error
            if outcome.error.kind != "connection-lost" or not remaining:
                break
            log.warning("%s; resending %d unsettled message(s) on a new connection", outcome.error,
                        len(remaining))
        result.unsent = remaining
        if not remaining and result.error and result.error.kind == "connection-lost":
            result.error = None

    def _connection(self) -> AmqpConnection:
        """The warm connection if it is alive, else a new one (trying each endpoint in order)."""
        if self._conn is not None:
            if self._conn.healthy():
                return self._conn
            log.info("connection to %s is gone, reconnecting", self._conn.endpoint)
            self._drop_connection()
        deadline = self._clock() + self.config.get("broker", "connect_timeout")
        errors = []
        for endpoint in self.config.endpoints:
            conn = AmqpConnection(self.config, endpoint)
            try:
                conn.open(deadline)
            except BrokerError as exc:
                conn.close()
                errors.append(exc)
                if exc.kind in ("not-found", "refused"):
                    break  # the broker answered: another URL would not change the verdict
                continue
            self._conn = conn
            self.connects += 1
            return conn
        if len(errors) == 1:
            raise errors[0]
        raise BrokerError(errors[-1].kind, "; ".join(str(e) for e in errors))

    def check(self) -> str:
        """Open (or reuse) the connection and attach, sending nothing; return the endpoint used."""
        with self._lock:
            conn = self._connection()
            return str(conn.endpoint)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop_connection()
