"""The process's background outbox work, off the hub's request path: delete settled rows in
batches, and drain what the outbox still holds (an outage's rows, rows of dead processes), oldest
first, as soon as the broker is back.

It needs a database connection of its own: the hub's settings from hub.conf (`[outbox]
hub_config`, read the way the hub reads them, `hubconf.py`).  Without one (no hub.conf readable by
the hub's user), `Runtime` falls back to doing both on the request path after the broker wait, as
before: a hub runs with its hub.conf, so the fallback is for odd set-ups and tests.

Who sends which row: a row belongs to the process that stored it while it is young.  That
process's sender puts it on the wire only within `own_window` seconds of storing it, and keeps it
in flight at most timeout + HARD_STALL more (quiet.py: a frozen broker's connection is kept that
long, then given up and its OWNED rows handed back here under row locks); the drain here (and
`koji-messagebus outbox flush`) takes only rows older than `min_age` = own_window + timeout +
HARD_STALL + DELETE_SLACK, under FOR UPDATE SKIP LOCKED and the advisory drain lock.  So a row in
flight on a frozen connection is not sent again by a drain (that was 33-120 duplicates after a
30 s silent broker, issue 18).  A crash between a settlement and the delete of its row only ever
causes a resend.

A row whose storing backend is gone is a dead process's, taken at once, unless a live process
claims that backend (`claim`): the hub's connection may close while its process lives on and its
sender still holds the rows (a PostgreSQL restart, an idle-session limit, a hub thread's end, the
process's exit before its exit hook).  The drainer claims the backend on its own connection
(outbox_rows.claim_owners), so the claim ends when the process does.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from koji_messagebus.config.settings import Config
from koji_messagebus.delivery import outbox_rows
from koji_messagebus.delivery.outbox_step import OutboxStep
from koji_messagebus.delivery.quiet import HARD_STALL
from koji_messagebus.delivery.sender import SenderThread
from koji_messagebus.errors import first_line
from koji_messagebus.log import log, log_cause
from koji_messagebus.transaction import outbox

DELETE_EVERY = 0.1  # seconds between batched deletes of settled rows
DRAIN_EVERY = 1.0  # the elected drainer: seconds between looks for rows left to the drain
DELETE_SLACK = 5.0  # seconds a settled row may wait for its delete before the drain may take it
DB_RETRY = 1.0  # seconds between reconnects to the database after a failure
#: the storing backends a process remembers (a hub thread keeps one connection for its life: a few per process)
OWNERS_KEPT = 256
IDLE_CLOSE = 2.0  # seconds without work before a process that is not the elected drainer closes its connection
ELECT_EVERY = 5.0  # while busy, a process that lost the election tries again this often (the winner may be gone)


def min_age(own_window: float, timeout: float) -> float:
    """The age from which a row is the drain's (see the module docstring): past the longest its
    sender may keep it in flight."""
    return own_window + timeout + HARD_STALL + DELETE_SLACK


class Drainer:
    """One thread per process; `kick()` asks for a drain now (the broker is back).

    Idle cost: a process with nothing to delete or drain holds no database connection and runs no
    query; its thread blocks until the sender has settled or abandoned rows (`poke`).  One process
    per outbox table, elected by a session advisory lock (outbox_rows.try_lead), keeps its connection
    and looks for rows left to the drain every DRAIN_EVERY; when it dies PostgreSQL frees the lock
    and the next busy process takes it over."""

    def __init__(self, config: Config, sender: SenderThread, connect_db: Callable[[], Any],
                 clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.sender = sender
        self._connect_db = connect_db
        self.clock = clock
        self.min_age = min_age(sender.own_window, sender.timeout)
        self.step = OutboxStep(config.outbox, sender, self.min_age, clock, patient=True)
        self._cnx: Any = None
        self.leader = False
        self._wake = threading.Event()  # work may be waiting (set without any lock of ours: no lock order)
        self._stop = threading.Event()
        self._kicked = True  # look once at start: rows of processes that died
        #: the process is exiting: delete settled rows, take no other process's rows (this process's hub
        #: connections may close before its sender is done, and their rows would look abandoned)
        self.exiting = False
        self._owners: dict[int, None] = {}  # storing backends of this process's rows, oldest first
        self._owners_lock = threading.Lock()
        self._claimed: set[int] = set()  # those claimed on the current connection
        self._next_drain = 0.0
        self._next_elect = 0.0
        self._last_work = clock()
        self.deleted = 0
        self.drained = 0
        self.errors = 0
        self.connects = 0
        self._wake.set()
        self._thread = threading.Thread(target=self._run, name="messagebus-drainer", daemon=True)
        self._thread.start()
        sender.on_recovery.append(self.kick)
        sender.on_rows.append(self.poke)

    def kick(self) -> None:
        self._kicked = True
        self._wake.set()

    def claim(self, backend: int) -> None:
        """The database backend `backend` stored rows this process's sender now holds: claim it on
        our connection (soon, on this thread), so that no drain takes them as a dead process's."""
        with self._owners_lock:
            if backend in self._owners and backend in self._claimed:
                return
            self._owners.pop(backend, None)
            self._owners[backend] = None
            while len(self._owners) > OWNERS_KEPT:
                del self._owners[next(iter(self._owners))]
        self._wake.set()

    def poke(self) -> None:
        """The sender has rows for us (settled: to delete; abandoned: to send under row locks)."""
        self._wake.set()

    @property
    def connected(self) -> bool:
        return self._cnx is not None

    def close(self) -> None:
        self.finish(self.clock() + 5.0)

    def finish(self, deadline: float) -> None:
        """Process exit: stop the thread, then (on the caller's thread, by `deadline`) delete the
        rows the broker settled, send this process's abandoned rows if the broker is up, and close
        the database connection (which frees the election lock)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(max(0.0, deadline - self.clock()))
        if self._thread.is_alive():
            log.warning("the outbox drainer did not stop in time; settled rows are deleted (or resent) later")
            return
        try:
            self._delete_settled()
            if not self.sender.down and self.clock() < deadline:
                self.step.patient = False  # exiting: a slow broker's batch is given up at ~1 s, not timeout
                self._drain_abandoned(deadline)
                self._delete_settled()
        except Exception as exc:  # noqa: BLE001 - exiting: the rows stay, resent later at worst
            log.warning("outbox work at exit failed (the rows stay, sent by the drain): %s", first_line(exc))
        self._reset()

    def _run(self) -> None:
        while True:
            if self._cnx is None:
                self._wake.wait()  # idle: no connection, no query, no timer
            if self._stop.wait(DELETE_EVERY):  # a batch of deletes per tick
                break
            self._wake.clear()
            kicked, self._kicked = self._kicked, False
            try:
                self._work(kicked)
            except Exception as exc:  # noqa: BLE001 - the database may be restarting: retry
                self.errors += 1
                if outbox.is_timeout(exc):  # a lock on the table (a migration, a backup): rows stay
                    self._timed_out(exc)
                    continue
                self._db_failed(exc)
                self._reset()
                self._wake.set()
                if self._stop.wait(DB_RETRY):
                    break

    def _claim_owners(self) -> None:
        with self._owners_lock:
            new = [pid for pid in self._owners if pid not in self._claimed]
        if new:
            outbox_rows.claim_owners(self._db(), new)
            self._claimed.update(new)

    def _work(self, kicked: bool) -> None:
        self._claim_owners()
        worked = self._delete_settled() > 0
        if not self.sender.down and not self.sender.quiet:  # given-up rows go when the broker takes messages
            worked = self._drain_abandoned() > 0 or worked
        now = self.clock()
        if worked or kicked:
            self._last_work = now
        if self.exiting:
            return
        if kicked and not self.sender.down:
            self._db()
        if self._cnx is not None and not self.leader and now >= self._next_elect:
            self._elect()
        if (kicked or (self.leader and now >= self._next_drain)) and not self.sender.down:
            self._next_drain = now + DRAIN_EVERY
            self._drain()
        if (self._cnx is not None and not self.leader and now - self._last_work >= IDLE_CLOSE
                and not self.sender.pending()):
            self._reset()  # idle: no connection held (reopened on demand)

    def _elect(self) -> None:
        self._next_elect = self.clock() + ELECT_EVERY
        self.leader = outbox_rows.try_lead(self._db())
        if self.leader:
            log.debug("this process is the outbox's elected drainer")

    def _db_failed(self, exc: Exception) -> None:
        """Say what happened and what we do, one line a minute per cause (log_cause): a lost
        connection (a PostgreSQL restart) or one that cannot be made is expected now and then and
        loses nothing (WARNING); anything else is an ERROR.  The exception's first line only."""
        if not outbox.is_connection_lost(exc):
            log_cause("outbox-background", logging.ERROR, "background outbox work failed (retrying every %gs; the "
                      "rows stay in the outbox): %s", DB_RETRY, first_line(exc))
        elif self._cnx is None:
            log_cause("outbox-db-unreachable", logging.WARNING, "cannot connect to the hub's database for the "
                      "outbox's background work (%s); retrying every %gs; the rows stay in the outbox and are "
                      "sent once it is back", first_line(exc), DB_RETRY)
        else:
            log_cause("outbox-db-lost", logging.WARNING, "the outbox's database connection was lost (a PostgreSQL "
                      "restart or a cut connection: %s); reconnecting; the rows stay in the outbox and are sent "
                      "once it is back", first_line(exc))

    def _timed_out(self, exc: Exception) -> None:
        """One line a minute, the transaction rolled back, a pause of DB_RETRY; the connection is kept."""
        log_cause("outbox-locked-background", logging.WARNING, "the outbox table is locked or slow (lock_timeout "
                  "%d ms: %s); its rows stay and are sent later", outbox.AFTER_LOCK_TIMEOUT_MS, first_line(exc),
                  counted="background outbox step(s) put off")
        try:
            self._db().rollback()
        except Exception:  # noqa: BLE001 - broken after all: reconnect next time
            self._reset()
        self._stop.wait(DB_RETRY)

    def _db(self) -> Any:
        if self._cnx is None:
            self._cnx = self._connect_db()
            self.connects += 1
            self._next_elect = 0.0
        return self._cnx

    def _reset(self) -> None:
        cnx, self._cnx = self._cnx, None
        self.leader = False
        self._claimed = set()  # the claims end with the connection
        if cnx is not None:
            try:
                cnx.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def _delete_settled(self) -> int:
        if not self.sender.settled_rows:
            return 0
        deleted = self.step.delete_settled(self._db())
        self.deleted += deleted
        return deleted

    def _drain_abandoned(self, deadline: float | None = None) -> int:
        if not self.sender.abandoned_rows:
            return 0
        sent, _left = self.step.send_abandoned(self._db(), deadline)
        self.drained += sent
        return sent

    def _drain(self) -> None:
        cnx = self._db()
        while not self.sender.down:
            self._delete_settled()  # a settled row not yet deleted must not look like one left to the drain
            result = self.step.drain(cnx)
            self.drained += result.sent
            if not result.left or result.locked_out:
                return
            self._delete_settled()

