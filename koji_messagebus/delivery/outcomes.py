"""The sender's outcomes for the messages it started: a settlement, a connection given up (its
suspect set apart, the rest resent), and the quarantine's verdicts on a suspect.

Why apart from the loop: these are what a message's end is, whoever meets it (the thread's loop,
a request reading its own settlements on the leader path, the quarantine thread); each runs under
the shared condition and says the outcome once, to the books, the ticket and the figures.
"""

from __future__ import annotations

import logging

from koji_messagebus.amqp import BrokerError, Kind, Settlement
from koji_messagebus.amqp import sender as amqp_sender
from koji_messagebus.delivery.quarantine import ConnectionFactory, Quarantine
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.sender_state import SenderState
from koji_messagebus.delivery.ticket import Item, State
from koji_messagebus.format.wire import describe
from koji_messagebus.log import log, log_cause


class Outcomes:
    """See the module docstring.  `connect` makes the quarantine's connections."""

    def __init__(self, shared: SenderState, connect: ConnectionFactory):
        self.shared = shared
        self._connect = connect

    def settled(self, tag: str, settlement: Settlement) -> None:
        """A settlement arrived (inside conn.poll(), holding the wire lock)."""
        sh = self.shared
        with sh.cond:
            in_flight = len(sh.books.inflight)
            item = sh.books.inflight.pop(tag, None)
            if item is None:
                return
            now = sh.clock()
            was_quiet = sh.silent.settled(now, item.sent_at)
            sh.books.window.settled(now - item.sent_at, in_flight, now)
            if was_quiet is not None:
                log_cause("quiet", logging.INFO, "the broker answers again after %.1fs without an answer",
                          was_quiet)
            sh.strikes.forget(item.msg.msg_id)
            sh.outcomes[settlement.outcome] += 1
            if settlement.unroutable:  # released: no queue bound for it; not an error (amqp.sender)
                amqp_sender.UNROUTABLE.note(sh.config.exchange.name, [item.msg])
            self.finish(item, settlement.lost)

    def finish(self, item: Item, lost: str | None) -> None:
        """Under the lock: a final outcome for one item."""
        sh = self.shared
        if lost is not None:
            sh.lost += 1
            sh.note_error(f"lost {item.msg.type} {item.msg.routing_key}: {lost}")
            log.error("lost %s: the broker answered %s", describe([item.msg]), lost)
        sh.books.row_done(item)
        item.ticket._settled(item.msg, lost)

    def failed(self, error: BrokerError) -> None:
        """The connection is gone: strike the first unsettled message, resend the rest of what was in
        flight on it (to the backlog's front); the next connection starts with a small window."""
        sh = self.shared
        conn, sh.conn = sh.conn, None
        if conn is not None:
            conn.close(0.0)
        now = sh.clock()
        with sh.cond:
            sh.waiting = False
            sh.state = State.CONNECTING
            sh.connecting_since = now
            sh.error = error
            sh.note_error(str(error))
            inflight = list(sh.books.inflight.values())
            sh.books.inflight.clear()
            # lost with messages in flight: one of them may be what the broker chokes on (RabbitMQ
            # 3.10 resets the connection on a poison message): restart small
            sh.books.crashed = bool(inflight)
            sh.silent.quiet = False
            suspect = None
            if inflight and error.kind not in (Kind.NOT_FOUND, Kind.AUTH, Kind.TLS):
                suspect = inflight.pop(0)
                sh.strikes.strike(suspect.msg.msg_id)
                self.set_apart(suspect)
            back = [i for i in inflight if sh.books.sendable(i, now)]
            sh.books.put_back(back)
        log_cause("resend", logging.WARNING, "%s; resending the %d message(s) that were in flight on it, "
                  "on a new connection", error, len(back))
        if suspect is not None:
            log_cause("set-apart", logging.WARNING, "set apart for a try alone on a connection of its own "
                      "(the first unsettled when the connection died): %s (id %s)", describe([suspect.msg]),
                      suspect.msg.msg_id)

    def set_apart(self, item: Item) -> None:
        """Under the lock: hand a suspect to the quarantine thread."""
        sh = self.shared
        if sh.quarantine is None:
            sh.quarantine = Quarantine(sh.config, sh.clock, self._connect, self.quarantine_result)
        item.tried_at = sh.clock()
        sh.quarantine.put(item)

    # ---- the quarantine's verdicts (called on its thread) --------------------------------------
    def quarantine_result(self, item: Item, result: SendResult) -> bool:
        """True when the suspect is done with (settled, lost, or no longer ours to send)."""
        sh = self.shared
        with sh.cond:
            previous, item.tried_at = item.tried_at, sh.clock()
            if result.accepted:
                sh.outcomes["accepted"] += 1
                sh.strikes.forget(item.msg.msg_id)
                self.finish(item, None)
                return True
            if result.lost:
                self.finish(item, result.lost[0][1])
                return True
            if not sh.books.sendable(item, sh.clock()):
                return True
            if sh.strikes.failed_alone(item.msg.msg_id, sh.silent.last_settled > previous):
                self.finish(item, f"not settled in {sh.strikes.get(item.msg.msg_id)} tries, alone on its "
                            f"own connection ({result.error}); given up as a poison message")
                return True
            return False
