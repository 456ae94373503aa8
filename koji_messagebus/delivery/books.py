"""The sender's books: what it holds (queued, in flight) and the outbox rows it is done with.

Why apart from the thread: which message goes next, how much may be in flight, what is kept while
the broker is down (bounded by `max_pending`) and which rows are settled or given up are one
ledger, changed under the sender's lock; the thread only moves messages between it and the wire.
Two queues, both oldest first: `fresh` (requests submitted while connected) and `backlog` (kept
while down or quiet, resent after a loss, the drain's rows).  New requests are taken first, a
share of the window (window.py) is kept for them, and the backlog is paced (window.py: `paced`),
so a request waits behind little of a backlog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence

from koji_messagebus.amqp import BrokerError
from koji_messagebus.delivery.ticket import Hold, Item, Ticket
from koji_messagebus.delivery.window import MAX_IN_FLIGHT, Window
from koji_messagebus.format.wire import Outgoing


class Books:
    """One sender's queues, in-flight map, window and row lists (under the sender's lock)."""

    def __init__(self, max_pending: int, own_window: float):
        self.max_pending = max_pending
        #: an OWNED row is put on the wire only this long after it was stored (see runtime.OWNER_GRACE)
        self.own_window = own_window
        self.fresh: deque[Item] = deque()  # requests submitted while connected: first
        self.backlog: deque[Item] = deque()  # kept while down, resent after a loss, the drain's rows
        self.inflight: dict[str, Item] = {}  # by delivery tag, oldest first
        self.window = Window(MAX_IN_FLIGHT)
        self.crashed = False  # the broker ended the last connection with messages in flight: restart small
        #: OWNED rows settled (accepted or refused for good): to delete, in batches, by whoever has a DB
        self.settled_rows: list[int] = []
        #: OWNED rows given up after own_window (never sent, or not settled): this process may still send
        #: them at once, but only under a row lock (drainer.py), never again on the sender's own
        self.abandoned_rows: list[int] = []
        #: called (under the lock: must not take locks of its own) when settled_rows or abandoned_rows grew
        self.on_rows: list[Callable[[], None]] = []

    def clear(self) -> None:
        """A forked child: the parent's messages are not ours."""
        self.fresh.clear()
        self.backlog.clear()
        self.inflight.clear()
        self.window = Window(MAX_IN_FLIGHT)
        self.crashed = False

    def __len__(self) -> int:
        return len(self.fresh) + len(self.backlog) + len(self.inflight)

    def items(self) -> list[Item]:
        return list(self.backlog) + list(self.fresh) + list(self.inflight.values())

    def firsts(self) -> list[Item | None]:
        """The oldest of each queue and of what is in flight (None: empty)."""
        return [self.fresh[0] if self.fresh else None, self.backlog[0] if self.backlog else None,
                next(iter(self.inflight.values()), None)]

    def oldest_sent(self) -> float | None:
        """When the oldest message in flight was sent (None: nothing in flight)."""
        return next(iter(self.inflight.values())).sent_at if self.inflight else None

    def put_back(self, items: Sequence[Item]) -> None:
        """At the backlog's front, in their order (a drain's locked rows, what is to be resent)."""
        self.backlog.extendleft(reversed(items))

    def take(self, credit: int, now: float, struck: Callable[[str], bool]) -> tuple[list[Item], list[Item]]:
        """The queued items to start now, within the window: new requests first (oldest first), then
        the backlog (oldest first) up to its share of the window; and those `struck` before (to set
        apart: never again on the main connection)."""
        inflight = len(self.inflight)
        items: list[Item] = []
        apart: list[Item] = []
        for queue, limit in ((self.fresh, self.window.limit(inflight, credit)),
                             (self.backlog, self.window.backlog_limit(inflight, credit))):
            while queue and inflight + len(items) < limit:
                item = queue.popleft()
                if not self.sendable(item, now):
                    continue
                if struck(item.msg.msg_id):
                    apart.append(item)
                    continue
                items.append(item)
        return items, apart

    def sendable(self, item: Item, now: float) -> bool:
        hold = item.ticket.hold
        if hold is Hold.LOCKED and item.ticket.closed:
            return False  # the drain gave the row back
        if hold is Hold.OWNED and now - item.born >= self.own_window:
            if item.row is not None:
                self.abandoned_rows.append(item.row)  # too old to send without a row lock
                item.row = None
                self._rows_waiting()
            return False
        return True

    def shed(self, now: float) -> None:
        """Drop from the backlog now what `take` would drop when it came to it: OWNED items past
        own_window become abandoned rows (an int each, sent from the table under a row lock), a
        drain's rows it gave back go.  So a long outage holds own_window's messages in memory, not
        the whole outage's (issue 18: memory back to its level after the fault)."""
        kept = deque(item for item in self.backlog if self.sendable(item, now))
        if len(kept) != len(self.backlog):
            self.backlog = kept

    def keep(self, items: Iterable[Item]) -> list[Outgoing]:
        """Broker down: keep MEMORY and OWNED items, bounded by max_pending; returns the MEMORY
        messages that did not fit (lost; OWNED rows stay in the outbox for the drain)."""
        self.backlog.extend(items)
        if len(self.backlog) <= self.max_pending:
            return []
        overflow = []
        kept: deque[Item] = deque()
        excess = len(self.backlog) - self.max_pending
        for item in self.backlog:
            if excess > 0:
                excess -= 1
                if item.ticket.hold is Hold.MEMORY:
                    overflow.append(item.msg)
                elif item.row is not None:
                    self.abandoned_rows.append(item.row)  # the row stays in the outbox for the drain
                    self._rows_waiting()
                continue
            kept.append(item)
        self.backlog = kept
        return overflow

    def release_queued(self, error: BrokerError) -> list[Item]:
        """The broker went down: every queued request returns with `error`; what is not a drain's
        locked row is kept in the backlog (returned)."""
        kept: deque[Item] = deque()
        for item in list(self.backlog) + list(self.fresh):
            item.ticket._release(error)
            if item.ticket.hold is not Hold.LOCKED:
                kept.append(item)
        self.backlog, self.fresh = kept, deque()
        return list(kept)

    def hold_back(self) -> list[Ticket]:
        """The broker is quiet: new requests join the backlog (requests after it resumes go first);
        returns the tickets of everything held, to release."""
        tickets = [i.ticket for i in list(self.fresh) + list(self.backlog) + list(self.inflight.values())]
        self.backlog.extend(self.fresh)
        self.fresh.clear()
        return tickets

    def row_done(self, item: Item) -> None:
        """A final outcome for an OWNED item: its row is to be deleted."""
        if item.ticket.hold is Hold.OWNED and item.row is not None:
            self.settled_rows.append(item.row)
            self._rows_waiting()

    def take_settled_rows(self, limit: int) -> list[int]:
        rows, self.settled_rows = self.settled_rows[:limit], self.settled_rows[limit:]
        return rows

    def take_abandoned_rows(self, limit: int) -> list[int]:
        rows, self.abandoned_rows = self.abandoned_rows[:limit], self.abandoned_rows[limit:]
        return rows

    def return_rows(self, settled: Sequence[int], abandoned: Sequence[int]) -> None:
        self.settled_rows[:0] = list(settled)
        self.abandoned_rows[:0] = list(abandoned)

    def _rows_waiting(self) -> None:
        for callback in self.on_rows:
            callback()
