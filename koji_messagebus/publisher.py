"""The process-wide publisher: one warm connection, failover, reconnect, circuit breaker.

Thread-safe (mod_wsgi runs several threads per process): one lock serialises use of the
connection.  Every call is bounded: connect_timeout per endpoint for opening a connection,
timeout for the settlements, at most one resend on a new connection; while the breaker is open
a call returns at once, without touching the network.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from .amqp import AmqpConnection, BatchOutcome, BrokerError, connect_first
from .breaker import CircuitBreaker
from .config import Config
from .wire import Outgoing

log = logging.getLogger("koji.plugin.messagebus")

@dataclass
class SendResult:
    """`accepted` reached the broker; `lost` were refused by it (final); `unsent` may be retried.
    `tried` is False when the call did not touch the network (breaker open, lock busy)."""

    accepted: list[Outgoing] = field(default_factory=list)
    lost: list[tuple[Outgoing, str]] = field(default_factory=list)
    unsent: list[Outgoing] = field(default_factory=list)
    error: BrokerError | None = None
    seconds: float = 0.0
    tried: bool = False


class Publisher:
    """Sends batches of encoded messages and waits for their settlement."""

    def __init__(self, config: Config, clock=time.monotonic):
        self.config = config
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: AmqpConnection | None = None
        connect = config.get("broker", "connect_timeout")
        send = config.get("broker", "timeout")
        #: the longest one send() can take: every endpoint's connect timeout, twice (one resend), plus the sends
        self.max_seconds = 2 * (connect * max(1, len(config.endpoints)) + send)
        self.breaker = CircuitBreaker(config.get("broker", "retry_interval"), clock,
                                      probe_timeout=self.max_seconds + connect)
        self.connects = 0  # connections opened
        self.attempts = 0  # send() calls that went to the network

    @property
    def endpoint(self) -> str:
        conn = self._conn
        return str(conn.endpoint) if conn else ""

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
        wait = self.config.get("broker", "timeout") + self.config.get("broker", "connect_timeout")
        if not self._lock.acquire(timeout=wait):
            self.breaker.release(role)
            return self._deferred(batch, result, BrokerError(
                "timeout", f"another thread held the broker connection for more than {wait:g}s"))
        try:
            if role == "normal" and self.breaker.is_open:
                # the breaker opened while this thread waited for the lock: do not try again
                return self._deferred(batch, result, self._breaker_error())
            result.tried = True
            self.attempts += 1
            try:
                self._send_locked(batch, result)
            except Exception as exc:  # noqa: BLE001 - a bug must not leave the breaker half-open
                log.exception("messagebus: unexpected error while sending")
                self._drop_connection()
                done = {m.msg_id for m in result.accepted} | {m.msg_id for m, _ in result.lost}
                result.unsent = [m for m in batch if m.msg_id not in done]
                result.error = BrokerError("protocol", f"unexpected error while sending: {exc!r}")
        finally:
            self._lock.release()
        if result.error and result.unsent:
            interval = self.breaker.failure(str(result.error))
            log.debug("messagebus: broker failure (%s); no new try for %.1fs", result.error, interval)
        else:
            self.breaker.success()
        result.seconds = self._clock() - start
        return result

    def _deferred(self, batch: list[Outgoing], result: SendResult, error: BrokerError) -> SendResult:
        result.unsent = list(batch)
        result.error = error
        return result

    def _breaker_error(self) -> BrokerError:
        return BrokerError("breaker-open", f"broker unavailable, next try in {self.breaker.seconds_left():.1f}s "
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
            deadline = self._clock() + self.config.get("broker", "timeout")
            outcome: BatchOutcome = conn.send(remaining, deadline)
            result.accepted += outcome.accepted
            result.lost += outcome.lost
            remaining = outcome.unsettled
            if outcome.error is None:
                result.error = None  # a resend after a lost connection worked
                return
            self._drop_connection()
            result.error = outcome.error
            if outcome.error.kind != "connection-lost" or not remaining or attempt:
                break
            log.warning("messagebus: %s; resending %d unsettled message(s) on a new connection", outcome.error,
                        len(remaining))
        result.unsent = remaining
        if not remaining and result.error and result.error.kind == "connection-lost":
            result.error = None  # everything was settled before the connection went

    def _connection(self) -> AmqpConnection:
        """The warm connection if it is alive, else a new one (trying each endpoint in order,
        each with its own connect_timeout, so that a silent first host does not hide the next)."""
        if self._conn is not None:
            if self._conn.healthy():
                return self._conn
            log.info("messagebus: connection to %s is gone (%s), reconnecting", self._conn.endpoint,
                     self._conn.error)
            self._drop_connection()
        conn, errors = connect_first(self.config, lambda ep: AmqpConnection(self.config, ep), self._clock)
        if errors:
            log.warning("messagebus: connected to %s after: %s", conn.endpoint, "; ".join(str(e) for e in errors))
        self._conn = conn
        self.connects += 1
        return conn

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
