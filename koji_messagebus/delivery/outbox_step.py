"""The outbox's work after COMMIT, written once: delete the rows the sender settled, send this
process's rows its sender gave up (under row locks), drain what is left to the drain (oldest
first, one look).  Run by the drainer on its own database connection, by a request on the hub's
connection when there is no drainer (handoff.py), and its drain by `koji-messagebus outbox flush`
(with a sender thread of its own, cli/command_sender.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

from koji_messagebus.config.sections import OutboxSettings
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.sender import Hold, SenderThread
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log


def drain_once(cnx, send: outbox_rows.SendFn, settings: OutboxSettings, min_age: float = 0.0,
               log_expired: bool = True) -> outbox_rows.DrainResult:
    """One look of the drain with the [outbox] settings; rows older than max_age are dropped and
    (unless the caller reports them itself) said at ERROR with their count."""
    result = outbox_rows.drain(cnx, send, settings.batch_size, max_age=settings.max_age, min_age=min_age,
                          keep=settings.keep)
    if result.expired and log_expired:
        log.error("dropped %d outbox message(s) older than max_age = %ss (never delivered)",
                  result.expired, settings.max_age)
    return result


class OutboxStep:
    """One process's outbox work with its sender; `cnx` is given per call (whose connection it is
    differs: the drainer's, or the hub's after a request)."""

    def __init__(self, settings: OutboxSettings, sender: SenderThread, min_age: float,
                 clock: Callable[[], float] = time.monotonic, patient: bool = False):
        self.settings = settings
        self.sender = sender
        self.min_age = min_age
        self.clock = clock
        #: wait for the broker's settlements up to timeout even when it is slow (quiet): off the
        #: hub's request path only (the drainer's thread)
        self.patient = patient

    def delete_settled(self, cnx, limit: int = 10000) -> int:
        """Delete (with keep: mark sent) the rows the broker settled; on failure they go back to
        the sender for the next try, and the error is raised."""
        rows = self.sender.take_settled_rows(limit)
        if not rows:
            return 0
        try:
            outbox_rows.delete(cnx, rows, self.settings.keep)
        except Exception:
            self.sender.return_rows(settled=rows)
            raise
        return len(rows)

    def send_abandoned(self, cnx, deadline: float | None = None, batches: int | None = None) -> tuple[int, bool]:
        """This process's rows its sender gave up (an outage, a stall): send them now under row
        locks, instead of waiting until they are min_age old.  Returns (rows sent, some left)."""
        sent = done = 0
        while not self.sender.down and (deadline is None or self.clock() < deadline) and \
                (batches is None or done < batches):
            rows = self.sender.take_abandoned_rows(self.settings.batch_size)
            if not rows:
                break
            try:
                result = outbox_rows.drain_ids(cnx, rows, self.send_locked, self.settings.keep)
            except Exception:
                self.sender.return_rows(abandoned=rows)
                raise
            if result.unsent_ids:  # still ours: tried again once the broker takes them (not left to the age rule)
                self.sender.return_rows(abandoned=result.unsent_ids)
            sent += result.sent
            done += 1
            # the rows the sender settled meanwhile: deleted now, not after the whole backlog (a drain
            # takes any row older than min_age, and would send a settled one again)
            self.delete_settled(cnx)
            if result.left:
                return sent, True  # the broker failed again: the rest waits for the next look (or the drain)
        return sent, False

    def drain(self, cnx, send: outbox_rows.SendFn | None = None, log_expired: bool = True) -> outbox_rows.DrainResult:
        """One look of the drain (rows older than min_age, or of a dead process), sent by our sender
        (`send`: send_locked, or a command's wrapper around it)."""
        return drain_once(cnx, send or self.send_locked, self.settings, self.min_age, log_expired)

    def send_locked(self, messages: list[Outgoing]) -> SendResult:
        """Send rows held under row locks through the process's sender; wait for them (bounded by
        timeout; patient: a slow broker's settlements are waited for, not given up at ~1 s)."""
        return self.sender.send(messages, Hold.LOCKED, patient=self.patient)
