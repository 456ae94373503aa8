"""Whether the sender's broker is quiet or stalled, judged from when it last settled (issue 18).

Why apart from the thread: a slow broker is not a dead one.  Silence while messages are in flight
first makes the broker *quiet* (requests stop waiting, nothing is dropped, the connection is kept);
only a message unsettled for `timeout` + HARD_STALL gives the connection up.  These figures and
that judgement are kept here; the thread acts on them.
"""

from __future__ import annotations

from koji_messagebus.amqp import BrokerError, Kind

QUIET_STATE = 1.0  # seconds without a settlement while messages are in flight: the broker is "quiet"
#: beyond `timeout`: a message unsettled this long gives its connection up, for a connection that is gone
#: without a word when the heartbeat is off (with it on, the heartbeat says so first).  Generous: a frozen
#: broker that resumes settles what is in flight, and a copy sent again would be a duplicate
HARD_STALL = 30.0
QUIET_MIN = 0.025  # the shortest silence that counts as "the broker has gone quiet" for outbox waits
QUIET_MAX = 0.2  # and the longest (a few slow settlements must not make outbox requests wait long)


class Silence:
    """The broker's silence as the sender thread sees it (under the sender's lock).  `oldest` below
    is when the oldest message in flight was sent (None: nothing in flight)."""

    def __init__(self) -> None:
        self.progress = 0.0  # the last settlement, or the last connect (silence counts from it)
        self.last_settled = 0.0  # the last settlement only (the quarantine's "others settled")
        self.rtt = 0.001  # smoothed time from start to settlement
        self.quiet = False  # no settlement for quiet_state_after while in flight
        self.quiet_since = 0.0
        self.blocked_since = 0.0  # new requests wait for credit with nothing in flight

    @property
    def quiet_after(self) -> float:
        """Silence that counts as quiet: a few smoothed round trips, at least QUIET_MIN."""
        return min(QUIET_MAX, max(QUIET_MIN, 4 * self.rtt))

    @property
    def quiet_state_after(self) -> float:
        """Silence after which the broker is taken as quiet for every request (memory ones too)."""
        return max(QUIET_STATE, 4 * self.rtt)

    def silence(self, now: float, oldest: float | None) -> float:
        """Seconds without a settlement while messages are in flight (or new requests wait for
        credit with nothing in flight); 0 otherwise."""
        if oldest is not None:
            return now - max(self.progress, oldest)
        if self.blocked_since:
            return now - max(self.progress, self.blocked_since)
        return 0.0

    def error(self, now: float, oldest: float | None) -> BrokerError:
        """Why a request returned while the broker is quiet."""
        silent = now - self.quiet_since if self.quiet else self.silence(now, oldest)
        return BrokerError(Kind.TIMEOUT, f"no answer from the broker for {silent:.1f}s (the connection "
                           "is kept; messages are sent once it answers)")

    def went_quiet(self, now: float, silent: float) -> bool:
        """True when `silent` seconds make the broker quiet now (it was not)."""
        if self.quiet or silent < self.quiet_state_after:
            return False
        self.quiet, self.quiet_since = True, now - silent
        return True

    def settled(self, now: float, sent_at: float) -> float | None:
        """A settlement: the round trip noted; returns how long the broker had been quiet (None: it
        was not)."""
        self.progress = self.last_settled = now
        self.rtt += 0.1 * ((now - sent_at) - self.rtt)
        if not self.quiet:
            return None
        self.quiet = False
        return now - self.quiet_since
