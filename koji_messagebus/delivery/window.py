"""How many messages the sender thread keeps in flight on its connection (issue 18).

Why a window: a connection that comes back with a backlog of thousands must not put them all on
the wire at once.  A broker that is slow to settle them would look stalled, and a connection lost
then costs a resend of everything in flight.  So the window starts small after each connect (1
after the broker ended the session with messages in flight, a crash that one of them may have
caused, so that the next crash costs one message), grows by one per settlement that comes
back promptly (doubling per round trip up to a threshold, then by one per round trip), and is capped
by the link's credit (what the broker said it will take) and MAX_IN_FLIGHT.  A loss halves the
threshold.  Prompt means within twice the fastest settlement seen on the connection (at least
PROMPT_FLOOR): a window that only fills the broker's queues makes settlements slower, not more
frequent, so it stops growing there; a broker that is slow by nature (its fastest settlement slow
too) still gets the window its round trip needs.  A quarter of the window is kept for new
requests: a backlog never fills it alone.

The backlog is also paced (`paced`): the broker settles in order, so a new request's messages wait
behind every backlog message in flight before them.  After an outage that was 200-450 in flight
and 100-300 ms per request (bench/results.md).  So backlog messages are put on the wire only while
fewer than `paced` are in flight: it grows by one per settlement that comes back within PACE_DELAY
(or twice the fastest of the last BASE_MEMORY seconds: a broker slow by nature is not held back),
and shrinks by one per slower one, so what waits ahead of a new request stays about PACE_DELAY of
the broker's work.  The price: a backlog takes longer to go (the broker works best on big batches).
"""

from __future__ import annotations

MAX_IN_FLIGHT = 5000  # never more in flight on one connection, whatever the credit
START = 8  # the window after a connect
AFTER_CRASH = 1  # the window after a connection died with messages in flight (a poison message?)
MIN_THRESHOLD = 512  # slow start goes on at least this far after a loss (a crash or an outage, rarely congestion)
PROMPT_FLOOR = 0.05  # seconds: a settlement this fast is prompt whatever the fastest one was
FRESH_SHARE = 4  # 1/FRESH_SHARE of the window is kept for new requests (none below FRESH_SHARE)
PACE_DELAY = 0.01  # seconds: the backlog's pace grows while settlements come back this fast, shrinks otherwise
PACE_MIN = 4  # the backlog may always have this many in flight
BASE_MEMORY = 10.0  # seconds: the pace's "fastest settlement" is the fastest of about this long


class Window:
    """The congestion window of one sender thread (used on its thread only)."""

    def __init__(self, cap: int = MAX_IN_FLIGHT):
        self.cap = cap
        self.size = float(min(START, cap))
        self.threshold = float(cap)
        self.srtt = 0.0  # smoothed settlement time (0: no sample yet)
        self.base = 0.0  # the fastest settlement on this connection (0: none yet)
        self.paced = float(min(START, cap))  # what may be in flight before backlog messages wait
        self._fastest = (0.0, 0.0)  # the fastest settlement of the last BASE_MEMORY / 2 s before, and since
        self._since = 0.0  # when the current BASE_MEMORY / 2 s began

    def reset(self, crashed: bool) -> None:
        """A new connection: slow start again; from AFTER_CRASH when the last one died with messages
        in flight (and the threshold halved, as for any loss)."""
        self.base = 0.0
        self.paced = float(min(START, self.cap))
        self._fastest, self._since = (0.0, 0.0), 0.0
        if crashed:
            self.threshold = max(float(MIN_THRESHOLD), self.size / 2)
            self.size = float(AFTER_CRASH)
        else:
            self.size = float(min(START, self.cap))

    def settled(self, seconds: float, in_flight: int, now: float = 0.0) -> None:
        """One settlement `seconds` after its send, with `in_flight` messages (it included) out, at
        `now` (monotonic; 0: the fastest settlement of the connection is the pace's too)."""
        self.base = seconds if not self.base else min(self.base, seconds)
        prompt = seconds <= max(PROMPT_FLOOR, 2 * self.base)
        self.srtt = seconds if not self.srtt else self.srtt + 0.125 * (seconds - self.srtt)
        self._pace(seconds, in_flight, now)
        if not prompt or in_flight < self.size / 2:
            return  # slow answers, or a window not in use: no growth
        self.size += 1.0 if self.size < self.threshold else 1.0 / self.size
        self.size = min(self.size, float(self.cap))

    def _pace(self, seconds: float, in_flight: int, now: float) -> None:
        before, since = self._fastest
        if now - self._since >= BASE_MEMORY / 2:
            before, since, self._since = since, seconds, now
        else:
            since = min(since, seconds) if since else seconds
        self._fastest = (before, since)
        fastest = min(before, since) if before else since
        if seconds <= max(PACE_DELAY, 2 * fastest):
            if in_flight >= self.paced / 2:  # grows only while in use
                self.paced = min(self.paced + 1.0, float(self.cap))
        else:
            self.paced = max(float(PACE_MIN), self.paced - 1.0)

    def limit(self, in_flight: int, credit: int) -> int:
        """How many may be in flight now: the window, capped by the credit left and MAX_IN_FLIGHT."""
        return max(0, min(int(self.size), self.cap, in_flight + max(0, credit)))

    def backlog_limit(self, in_flight: int, credit: int) -> int:
        """How many may be in flight before backlog messages wait: the rest is for new requests, and
        no more than the backlog's pace."""
        size = int(self.size)
        reserve = size // FRESH_SHARE if size >= FRESH_SHARE else 0
        return max(0, min(self.limit(in_flight, credit) - reserve, int(self.paced)))
