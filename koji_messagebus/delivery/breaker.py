"""A circuit breaker: after a broker failure, stop trying for a while so hub requests stay fast."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from enum import Enum

MAX_FACTOR = 10


class Role(str, Enum):
    """What `acquire` lets a caller do.  A str, so `role == "probe"` keeps reading naturally."""

    NORMAL = "normal"  # the breaker is closed: try
    PROBE = "probe"  # the one caller that tries after the pause

    def __str__(self) -> str:
        return self.value


class CircuitBreaker:
    """Closed: every call may try.  Open: no call tries until `retry_at`.  Then one caller (the
    probe) tries; success closes the breaker, failure opens it again for a longer interval
    (doubling, at most MAX_FACTOR times `retry_interval`).

    A probe that never reports back (a bug, a killed thread) gives up its turn after
    `probe_timeout` seconds, so the breaker can never stay open for good.
    """

    def __init__(self, retry_interval: float, clock: Callable[[], float] = time.monotonic,
                 probe_timeout: float = 300.0):
        self.retry_interval = retry_interval
        self.probe_timeout = probe_timeout
        self._clock = clock
        self._lock = threading.Lock()
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: str = ""
        self._probe_since: float | None = None

    @property
    def is_open(self) -> bool:
        return self.failures > 0

    def acquire(self) -> Role | None:
        """May the caller try the broker now?  NORMAL while closed; PROBE for the one caller
        that tries after the interval; None while open (or while another caller probes)."""
        if not self.failures:  # the warm path: no lock (a stale read only means one more try)
            return Role.NORMAL
        with self._lock:
            if not self.failures:
                return Role.NORMAL
            now = self._clock()
            if now < self.retry_at:
                return None
            if self._probe_since is not None and now < self._probe_since + self.probe_timeout:
                return None
            self._probe_since = now
            return Role.PROBE

    def release(self, role: Role | None) -> None:
        """The caller did not try after all; a probe gives its turn back."""
        if role == Role.PROBE:
            with self._lock:
                self._probe_since = None

    def success(self) -> None:
        if not self.failures and self._probe_since is None:
            return  # the warm path: nothing to change
        with self._lock:
            self.failures = 0
            self._probe_since = None
            self.last_error = ""

    def failure(self, error: str) -> float:
        """Record a failure; return the seconds until the next try."""
        with self._lock:
            self.failures += 1
            self._probe_since = None
            self.last_error = error
            interval = self.interval(self.failures)
            self.retry_at = self._clock() + interval
            return interval

    def interval(self, failures: int) -> float:
        """The pause after `failures` consecutive failures: doubling, capped at MAX_FACTOR times."""
        if failures <= 0:
            return 0.0
        return min(self.retry_interval * 2 ** min(failures - 1, 32), self.retry_interval * MAX_FACTOR)

    def seconds_left(self) -> float:
        """Seconds until the next try may happen (0 when closed or due)."""
        if not self.failures:
            return 0.0
        return max(0.0, self.retry_at - self._clock())
