"""A caller's share of the sender: who keeps its messages (`Hold`), each message in the sender's
books (`Item`), and the `Ticket` the caller waits on for its own settlements only."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

from koji_messagebus.amqp import BrokerError
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.format.wire import Outgoing

if TYPE_CHECKING:
    from koji_messagebus.delivery.pipe import Pipe
    from koji_messagebus.delivery.sender import SenderThread


class Hold(str, Enum):
    """Who keeps a message if the broker does not take it now."""

    MEMORY = "memory"  # outbox off: this thread keeps it (bounded by max_pending) until sent
    OWNED = "owned"  # an outbox row this process stored: sent while young, its row deleted once settled
    LOCKED = "locked"  # an outbox row the caller holds locked (a drain): sent only while the caller waits


class State(str, Enum):
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


@dataclass(eq=False)
class Item:
    msg: Outgoing
    ticket: Ticket
    row: int | None = None
    born: float = 0.0  # monotonic time the outbox row was stored (OWNED)
    sent_at: float = 0.0
    tried_at: float = 0.0  # quarantine: when it was set apart or last tried alone
    queued: float = 0.0  # wall time it was handed over (status: the age of the oldest held)


class Ticket:
    """One caller's messages; the caller waits on it for its own settlements only."""

    def __init__(self, hold: Hold, messages: list[Outgoing]):
        self.hold = hold
        self.messages = messages
        self.result = SendResult()
        self.closed = False  # the caller stopped waiting
        #: the connection its messages were started on by the caller itself (leader.py):
        #: wait() first reads the settlements there (Leader.lead)
        self.lead: Pipe | None = None
        self._left = len(messages)
        self._event = threading.Event()
        if not messages:
            self._event.set()

    # ---- the sender's side (under the sender's lock) -------------------------------------------
    def _settled(self, msg: Outgoing, lost: str | None) -> None:
        if lost is None:
            self.result.accepted.append(msg)
        else:
            self.result.lost.append((msg, lost))
        self.result.tried = True
        self._left -= 1
        if self._left <= 0:
            self._event.set()

    def _release(self, error: BrokerError) -> None:
        """Stop the caller's wait now (the broker is down): what is not settled stays unsent."""
        if self.result.error is None:
            self.result.error = error
        self._event.set()

    # ---- the caller's side ---------------------------------------------------------------------
    def wait(self, sender: SenderThread, deadline: float, quiet: bool = False, patient: bool = False) -> SendResult:
        """Wait until every message is settled, the broker is down or quiet, or `deadline`
        (monotonic).  Quiet: silent for `SenderThread.quiet_state_after` (about a second) while
        messages are in flight or a (re)connect is in progress (see SenderThread.quiet_for); with
        `quiet` (the rows are committed already) for `quiet_after`, a few round trips."""
        clock = sender.clock
        lead, self.lead = self.lead, None
        if lead is not None:  # for at most one of the waits below
            after = sender.quiet_after if quiet else sender.quiet_state_after
            sender.leader.lead(self, lead, clock() + min(deadline - clock(), after / (2 if quiet else 4)))
        while True:
            left = deadline - clock()
            if left <= 0:
                break
            after = sender.quiet_after if quiet else sender.quiet_state_after
            if self._event.wait(min(left, after / (2 if quiet else 4))):
                break
            if not patient and sender.quiet_for() >= after:
                break
        return sender._close_ticket(self)
