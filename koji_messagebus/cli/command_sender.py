"""A command's sender: the hub process's sender thread (delivery/sender.py), connected first and
closed at the end.

Why the hub's sender and not a synchronous one of the command's own: one sending path (issue 17).
`outbox flush`, `replay` and `spool flush` send what they hold (rows under row locks, kept rows,
spool files) with `sender.send(batch, Hold.LOCKED)`: sent only while the command waits, never
kept by the thread, with the thread's window, resend after a lost connection and poison
handling.  `check` only connects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from koji_messagebus.amqp import BrokerError, Kind
from koji_messagebus.config.settings import Config
from koji_messagebus.delivery.pipe import Pipe
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.sender import SenderThread
from koji_messagebus.delivery.ticket import Hold
from koji_messagebus.format.wire import Outgoing
from koji_messagebus.log import LOGGER_NAME

CLOSE_WAIT = 1.0  # seconds the sender waits for the broker's close at the end of a command


class _SaidByTheCommand(logging.Filter):
    """The thread's "broker unavailable ... probing in the background" line: a command does not
    probe, it stops and prints the error itself (one line, as before)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and "broker unavailable:" in str(record.msg))


def connect_timeout(config: Config) -> float:
    """The longest connect: every endpoint's connect timeout, then the attach (bounded by timeout)."""
    return float(config.broker.connect_timeout) * max(1, len(config.endpoints)) + float(config.broker.timeout)


class CommandSender:
    """A sender thread for one command: it connects at the first send (a command with nothing to
    send never touches the broker), and `close()` stops and joins the thread."""

    def __init__(self, config: Config, sender: SenderThread | None = None):
        self.config = config
        self.sender = sender or SenderThread(config)
        self.sender.patient = True  # a slow broker: wait up to timeout, do not fail the command at ~1 s
        self._conn: Pipe | None = None
        self._error: BrokerError | None = None
        self._said = _SaidByTheCommand()
        logging.getLogger(LOGGER_NAME).addFilter(self._said)

    def connect(self) -> Pipe:
        """The sender's connection, waited for once; the BrokerError that kept it from coming up."""
        if self._conn is None:
            if self._error is not None:
                raise self._error
            try:
                self._conn = self.sender.wait_up(connect_timeout(self.config))
            except BrokerError as exc:
                self._error = exc
                raise
        return self._conn

    def send(self, messages: list[Outgoing], through: Callable[[list[Outgoing]], SendResult] | None = None) \
            -> SendResult:
        """Send messages the command holds and wait for their settlements (bounded by [broker]
        timeout), `through` a caller's step (the outbox step's send_locked) or directly; never raises."""
        try:
            self.connect()
        except BrokerError as exc:
            return SendResult(unsent=list(messages), error=exc)
        failed_before = self.sender.error
        result = through(messages) if through is not None else self.sender.send(messages, Hold.LOCKED)
        failed = self.sender.error
        if result.unsent and failed is not None and failed is not failed_before and \
                (result.error is None or result.error.kind is Kind.TIMEOUT):
            # the connection the messages were on failed (e.g. RabbitMQ 3.x refusing the exchange at the
            # first message): that is the command's error, not the wait's end
            result.error = failed
        return result

    def close(self) -> None:
        self.sender.close(CLOSE_WAIT)
        logging.getLogger(LOGGER_NAME).removeFilter(self._said)

    def __enter__(self) -> CommandSender:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
