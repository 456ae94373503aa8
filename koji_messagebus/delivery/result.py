"""What one send came to (`SendResult`): the sender thread's answer to a caller's ticket, and what
the outbox drain, the spool and the commands take from a send."""

from __future__ import annotations

from dataclasses import dataclass, field

from koji_messagebus.amqp import BatchOutcome, BrokerError
from koji_messagebus.format.wire import Outgoing


@dataclass
class SendResult:
    """`accepted` reached the broker; `lost` were refused by it (final); `unsent` may be retried.
    `tried` is False when the call did not touch the network (broker known down).
    `kept`: the unsent messages stay with the sender thread (in memory or as outbox rows) and are
    sent once the broker takes them; nobody needs to send them again."""

    accepted: list[Outgoing] = field(default_factory=list)
    lost: list[tuple[Outgoing, str]] = field(default_factory=list)
    unsent: list[Outgoing] = field(default_factory=list)
    error: BrokerError | None = None
    seconds: float = 0.0
    tried: bool = False
    kept: bool = False

    @property
    def done(self) -> list[Outgoing]:
        """The messages nobody needs to send again: accepted, or refused for good."""
        return self.accepted + [m for m, _ in self.lost]

    def split(self) -> tuple[list[Outgoing], list[Outgoing]]:
        """(done, unsent): what outbox_rows.drain's `send` returns."""
        return self.done, self.unsent

    def add(self, outcome: BatchOutcome) -> list[Outgoing]:
        """Take in one connection's outcome; return what it left unsettled."""
        self.accepted += outcome.accepted
        self.lost += outcome.lost
        return outcome.unsettled
