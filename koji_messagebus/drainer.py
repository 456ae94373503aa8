"""The process's background outbox work, off the hub's request path: delete settled rows in
batches, and drain what the outbox still holds (an outage's rows, rows of dead processes), oldest
first, as soon as the broker is back.

It needs a database connection of its own: the hub's settings from hub.conf (`[outbox]
hub_config`, read the way the hub reads them, `hubconf.py`).  Without one (no hub.conf readable by
the hub's user), `Runtime` falls back to doing both on the request path after the broker wait, as
before: a hub runs with its hub.conf, so the fallback is for odd set-ups and tests.

Who sends which row (so that two processes never send the same one): a row belongs to the process
that stored it while it is young.  That process's sender puts it on the wire only within
`own_window` seconds of storing it and settles it within `timeout` of the last send; the drain here
(and `koji-messagebus outbox flush`) takes only rows older than `min_age` = own_window + timeout +
DELETE_SLACK, under FOR UPDATE SKIP LOCKED and the advisory drain lock.  A crash between a
settlement and the delete of its row only ever causes a resend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from . import outbox
from .config import Config
from .log import log
from .publisher import SendResult
from .sendthread import Hold, SenderThread
from .wire import Outgoing

DELETE_EVERY = 0.1  # seconds between batched deletes of settled rows
DRAIN_EVERY = 1.0  # seconds between looks for rows left to the drain
DELETE_SLACK = 5.0  # seconds a settled row may wait for its delete before the drain may take it
DB_RETRY = 1.0  # seconds between reconnects to the database after a failure


def min_age(own_window: float, timeout: float) -> float:
    """The age from which a row is the drain's (see the module docstring)."""
    return own_window + timeout + DELETE_SLACK


class Drainer:
    """One thread per process; `kick()` asks for a drain now (the broker is back)."""

    def __init__(self, config: Config, sender: SenderThread, connect_db: Callable[[], Any],
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.sender = sender
        self._connect_db = connect_db
        self.clock = clock
        self.min_age = min_age(sender.own_window, sender.timeout)
        self._cnx: Any = None
        self._cond = threading.Condition()
        self._kicked = True  # look once at start: rows of processes that died
        self._stopping = False
        self._next_drain = 0.0
        self.deleted = 0
        self.drained = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._run, name="messagebus-drainer", daemon=True)
        self._thread.start()
        sender.on_recovery.append(self.kick)

    def kick(self) -> None:
        with self._cond:
            self._kicked = True
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(5)
        if self._cnx is not None:
            try:
                self._cnx.close()
            except Exception:  # noqa: BLE001 - closing must not raise
                pass

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or self._kicked, DELETE_EVERY)
                if self._stopping:
                    break
                kicked, self._kicked = self._kicked, False
            try:
                self._delete_settled()
                if not self.sender.down:
                    self._drain_abandoned()
                now = self.clock()
                if (kicked or now >= self._next_drain) and not self.sender.down:
                    self._next_drain = now + DRAIN_EVERY
                    self._drain()
            except Exception as exc:  # noqa: BLE001 - the database may be restarting: retry
                self.errors += 1
                if outbox.is_timeout(exc):  # a lock on the table (a migration, a backup): rows stay
                    self._timed_out(exc)
                    continue
                log.error("background outbox work failed (retrying in %gs): %s", DB_RETRY,
                          str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
                self._reset()
                with self._cond:
                    self._cond.wait_for(lambda: self._stopping, DB_RETRY)
        self._delete_settled_quietly()

    def _timed_out(self, exc: Exception) -> None:
        """One line, the transaction rolled back, a pause of DB_RETRY; the connection is kept."""
        log.warning("the outbox table is locked or slow (%s); its rows stay and are sent later: %s",
                    f"lock_timeout {outbox.AFTER_LOCK_TIMEOUT_MS} ms", str(exc).strip().splitlines()[0])
        try:
            self._db().rollback()
        except Exception:  # noqa: BLE001 - broken after all: reconnect next time
            self._reset()
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, DB_RETRY)

    def _db(self) -> Any:
        if self._cnx is None:
            self._cnx = self._connect_db()
        return self._cnx

    def _reset(self) -> None:
        cnx, self._cnx = self._cnx, None
        if cnx is not None:
            try:
                cnx.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _delete_settled(self) -> None:
        rows = self.sender.take_settled_rows()
        if not rows:
            return
        try:
            outbox.delete(self._db(), rows, self.config.get("outbox", "keep"))
        except Exception:
            with self.sender._cond:  # noqa: SLF001 - put them back for the next try
                self.sender.settled_rows[:0] = rows
            raise
        self.deleted += len(rows)

    def _drain_abandoned(self) -> None:
        """This process's rows its sender gave up (an outage, a stall): send them now, under row
        locks, instead of waiting until they are min_age old."""
        size = self.config.get("outbox", "batch_size")
        while not self.sender.down:
            rows = self.sender.take_abandoned_rows(size)
            if not rows:
                return
            try:
                result = outbox.drain_ids(self._db(), rows, self._send, self.config.get("outbox", "keep"))
            except Exception:
                with self.sender._cond:  # noqa: SLF001 - put them back for the next try
                    self.sender.abandoned_rows[:0] = rows
                raise
            self.drained += result.sent
            if result.left:
                return  # the broker failed again: the rest waits for the next look (or the drain)

    def _delete_settled_quietly(self) -> None:
        try:
            self._delete_settled()
        except Exception:  # noqa: BLE001 - shutting down: the rows are resent later at worst
            log.debug("final delete failed", exc_info=True)

    def _drain(self) -> None:
        cfg = self.config
        cnx = self._db()
        while not self.sender.down:
            result = outbox.drain(cnx, self._send, cfg.get("outbox", "batch_size"), min_age=self.min_age,
                                  max_age=cfg.get("outbox", "max_age"), keep=cfg.get("outbox", "keep"))
            self.drained += result.sent
            if result.expired:
                log.error("dropped %d outbox message(s) older than max_age = %ss (never delivered)",
                          result.expired, cfg.get("outbox", "max_age"))
            if not result.left or result.locked_out:
                return
            self._delete_settled()

    def _send(self, messages: list[Outgoing]) -> SendResult:
        ticket = self.sender.submit(messages, Hold.LOCKED)
        return ticket.wait(self.sender, self.clock() + self.sender.timeout)
