"""A circuit breaker: after a broker failure, stop trying for a while so hub requests stay fast."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MAX_FACTOR = 10


class CircuitBreaker:
    """Closed: every call may try.  Open: no call tries until `retry_at`.  Then one caller (the
    probe) tries; success closes the breaker, failure opens it again for a longer interval
    (doubling, at most MAX_FACTOR times `retry_interval`)."""

    def __init__(self, retry_interval: float, clock: Callable[[], float] = time.monotonic):
        self.retry_interval = retry_interval
        self._clock = clock
        self._lock = threading.Lock()
        self.failures = 0
        self.retry_at = 0.0
        self.last_error: str = ""
        self._probing = False

    @property
    def is_open(self) -> bool:
        return self.failures > 0

    def acquire(self) -> str | None:
        """May the caller try the broker now?  "normal" while closed; "probe" for the one caller
        that tries after the interval; None while open (or while another caller probes)."""
        with self._lock:
            if not self.failures:
                return "normal"
            if self._probing or self._clock() < self.retry_at:
                return None
            self._probing = True
            return "probe"

    def release(self, role: str | None) -> None:
        """The caller did not try after all; a probe gives its turn back."""
        if role == "probe":
            with self._lock:
                self._probing = False

    def success(self) -> None:
        with self._lock:
            self.failures = 0
            self._probing = False
            self.last_error = ""

    def failure(self, error: str) -> float:
        """Record a failure; return the seconds until the next try."""
        with self._lock:
            self.failures += 1
            self._probing = False
            self.last_error = error
            interval = min(self.retry_interval * 2 ** (self.failures - 1), self.retry_interval * MAX_FACTOR)
            self.retry_at = self._clock() + interval
            return interval

    def seconds_left(self) -> float:
        return max(0.0, self.retry_at - self._clock())
