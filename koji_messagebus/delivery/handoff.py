"""After the hub's COMMIT: hand the request's messages to the process's sender thread and wait
for their settlements only; nothing else on the request path when the drainer has a database.

- Outbox off: the messages go to the sender as MEMORY; if the broker does not settle them within
  `timeout` (or is known to be down, or quiet: no settlement for about a second) the request
  returns and the sender keeps them (bounded by `max_pending`) until the broker takes them.
- Outbox on: the rows are already committed, so the request may stop waiting as soon as the
  broker goes quiet (no settlement for `SenderThread.quiet_after` while messages are in flight,
  or not connected at all): its rows are sent by the sender once it can, or by the drain.
  Settled rows are deleted in batches by the drainer's own connection (drainer.py); without
  one, by a request now and then, after its broker wait, on the hub's connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from koji_messagebus.config.settings import Config
from koji_messagebus.delivery import spool
from koji_messagebus.delivery.drainer import DRAIN_EVERY, Drainer, min_age
from koji_messagebus.delivery.outbox_step import OutboxStep
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.sender import Hold, SenderThread
from koji_messagebus.delivery.ticket import Item
from koji_messagebus.errors import first_line
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import log, log_cause
from koji_messagebus.transaction import outbox
from koji_messagebus.transaction.subcalls import rollback_quietly

DELETE_BATCH = 200  # request-path fallback: delete settled rows once this many are waiting...
#: ...or once they have waited this long: 0, at the first request after they settled, since a row settled
#: but not deleted before it is min_age old would be sent again by a drain (a hub may go quiet for longer)
DELETE_AFTER = 0.0


def born(messages: list[Outgoing], clock: Callable[[], float] = time.monotonic) -> float:
    """A monotonic time no later than the rows' INSERT: the messages were encoded (`created`,
    wall clock) before preCommit stored them."""
    oldest = min(m.created for m in messages)
    return clock() - max(0.0, time.time() - oldest)


#: seconds of the request's `timeout` kept for the work after the wait (results, the log line)
POST_WAIT_RESERVE = 0.002
#: at process exit: seconds of the budget kept for the deletes and the close after the last sends
EXIT_RESERVE = 0.5
#: at process exit: the longest wait for the broker's answer to our close
CLOSE_WAIT = 0.5


class Delivery:
    """The per-process after-commit path of the sender-thread design."""

    def __init__(self, config: Config, sender: SenderThread | None = None,
                 connect_db: Callable[[], Any] | None = None):
        self.config = config
        self.sender = sender or SenderThread(config)
        self.drainer: Drainer | None = None
        if config.outbox.enabled and connect_db is not None:
            self.drainer = Drainer(config, self.sender, connect_db)
        self.min_age = min_age(self.sender.own_window, self.sender.timeout)
        self.step = OutboxStep(config.outbox, self.sender, self.min_age)
        self._last_delete = time.monotonic()
        self._drain_at = 0.0
        self.sender.on_recovery.append(self._recovered)
        self.spool = spool.for_config(config, self.sender)  # sends spooled files after each connect
        self.sender.on_late = self._late

    def _recovered(self) -> None:
        self._drain_at = 0.0  # request-path fallback: the next request drains

    def post_commit(self, messages: list[Outgoing], outbox_ids: list[int] | None, cnx: Any,
                    spent: float = 0.0, outbox_usable: bool = True, owner: int | None = None) -> SendResult:
        """Hand the request's messages to the sender and wait for their settlements; `spent` is
        what the request already spent in the plugin (collect, preCommit), so that the request's
        whole time in the plugin stays within `timeout`, not just the wait.  `outbox_usable` is
        False while preCommit found the table missing or not writable (it said so once): then the
        request path does no outbox work either.  `owner` is the database backend that stored the
        rows: the drainer claims it while the sender may hold them (drainer.py)."""
        sender = self.sender
        if owner is not None and outbox_ids and self.drainer is not None:
            self.drainer.claim(owner)
        start = time.monotonic()
        deadline = start + max(0.0, sender.timeout - spent - POST_WAIT_RESERVE)
        if not messages:
            result = SendResult()
        elif outbox_ids is None:
            result = sender.submit(messages, Hold.MEMORY).wait(sender, deadline)
            if result.unsent:
                log.debug("%d message(s) not settled yet (%s); the sender keeps them",
                          len(result.unsent), result.error)
        else:
            result = sender.submit(messages, Hold.OWNED, rows=outbox_ids, born=born(messages)).wait(
                sender, deadline, quiet=True)
            if result.unsent:
                log.debug("%d message(s) not settled yet (%s); kept in the outbox",
                          len(result.unsent), result.error)
        if messages:
            sender.waits.add(time.monotonic() - start)  # status: request wait p50/p99
        if self.drainer is None and self.config.outbox.enabled and cnx is not None and outbox_usable:
            self._request_path_outbox(cnx)
        return result

    # ---- without a database connection of our own ------------------------------------------------
    def _request_path_outbox(self, cnx: Any) -> None:
        """Deletes of settled rows and the drain, on the hub's connection (after its commit)."""
        now = time.monotonic()
        sender = self.sender
        waiting = len(sender.settled_rows)
        if waiting and (waiting >= DELETE_BATCH or now - self._last_delete >= DELETE_AFTER):
            try:
                self.step.delete_settled(cnx)
            except Exception as exc:  # noqa: BLE001 - the rows are resent by the drain at worst
                rollback_quietly(cnx)
                log_cause("outbox-delete", _level(exc),
                          "deleting sent outbox rows failed (they may be sent again): %s", _why(exc),
                          count=waiting, counted="sent row(s) not deleted")
                if outbox.is_timeout(exc):  # the table is locked: no drain now, it would wait as long
                    self._drain_at = max(self._drain_at, now + DRAIN_EVERY)
            self._last_delete = now
        if now < self._drain_at or sender.down:
            return
        self._drain_at = now + DRAIN_EVERY
        try:
            self.step.send_abandoned(cnx, batches=1)  # this process's rows its sender gave up: now
            result = self.step.drain(cnx)
        except Exception as exc:  # noqa: BLE001 - a database error (a time-out: a lock on the table): the rows stay
            rollback_quietly(cnx)
            log_cause("outbox-drain", _level(exc),
                      "outbox drain failed, messages stay in the outbox: %s", _why(exc))
            return
        if result.left and not result.locked_out:
            self._drain_at = 0.0  # more to send: the next request goes on (one batch per request)

    def shutdown(self, budget: float) -> None:
        """Process exit, within `budget` seconds: send what the sender still holds (until the last
        EXIT_RESERVE of the budget), delete the rows the broker settled, close the AMQP connection
        politely.  Outbox rows still unsent stay in the table for the elected drainer (this
        process's database backends end with it, so they are taken at once).  Messages held in
        memory (outbox off, or a request the outbox could not take) that the broker did not take are
        written to the spool (spool.py), or, without one, logged as lost: one ERROR line with their
        count, types and the reason (see docs/lifecycle.md)."""
        clock = self.sender.clock
        deadline = clock() + budget
        if self.drainer is not None:
            self.drainer.exiting = True
        if self.spool is not None:
            self.spool.stop()
        if self.sender.ours():
            self.sender.wait_idle(max(0.0, deadline - min(EXIT_RESERVE, budget / 4) - clock()))
        if self.drainer is not None:
            self.drainer.finish(deadline)
        elif self.sender.settled_rows:
            log.info("%d sent outbox row(s) not deleted at exit (no database connection of the plugin's "
                     "own); the drain deletes them (and may send them again)", len(self.sender.settled_rows))
        ours = self.sender.ours()
        self.sender.close(min(CLOSE_WAIT, max(0.0, deadline - clock())))  # a later submit() is late (_late)
        held = self.sender.held(Hold.MEMORY) if ours else []
        rows = self.sender.held(Hold.OWNED) if ours else []
        if self.spool is not None:
            self.spool.hand_over(held, budget)  # the held messages to the spool, or one ERROR line
        else:
            spool.hand_over(None, held, budget)
        if rows:
            log.warning("%d outbox message(s) not sent at process exit; they stay in the outbox and "
                        "another hub process sends them", len(rows))

    def _late(self, items: list[Item]) -> None:
        """A request committed after this process's exit closed the sender (mod_wsgi runs its
        shutdown hook while requests are still running): its memory messages go to the spool (or
        one ERROR line); its outbox rows stay for another process's drain."""
        memory = [i.msg for i in items if i.ticket.hold is Hold.MEMORY]
        rows = sum(1 for i in items if i.ticket.hold is Hold.OWNED)
        spool.hand_over(self.spool.spool if self.spool is not None else None, memory, self.sender.timeout,
                        late=True)
        if rows:
            log.info("%d outbox message(s) committed while the process exits: they stay in the outbox and "
                     "another hub process sends them", rows)

    def close(self) -> None:
        if self.spool is not None:
            self.spool.stop()
        if self.drainer is not None:
            self.drainer.close()
        self.sender.close()



def _why(exc: BaseException) -> str:
    """The real cause in words: a lock on the table is named, not only PostgreSQL's time-out text."""
    if outbox.is_timeout(exc):
        return f"the outbox table is locked or slow (lock_timeout {outbox.AFTER_LOCK_TIMEOUT_MS} ms: {first_line(exc)})"
    return first_line(exc)


def _level(exc: BaseException) -> int:
    """A lock, a time-out or a lost connection (a restart) loses nothing: WARNING; the rest ERROR."""
    return logging.WARNING if outbox.is_timeout(exc) or outbox.is_connection_lost(exc) else logging.ERROR


def database_connector(config: Config) -> Callable[[], Any] | None:
    """A function opening the hub's database from hub.conf, or None (with the reason logged at
    INFO) when hub.conf cannot be read: then the request path does the outbox's background work."""
    from koji_messagebus.config.hubconf import HubConfigError, read_database_settings

    try:
        settings = read_database_settings(config.outbox.hub_config)
    except HubConfigError as exc:
        log.info("no database connection of the plugin's own (%s); settled outbox rows are "
                 "deleted and the outbox drained by hub requests", exc)
        return None
    return settings.connect
