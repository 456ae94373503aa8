"""The per-process sender thread: one warm connection shared by every hub thread of the process.

Why a thread that owns the connection, rather than a lock around it (the design
before, removed): with the lock, each hub thread waits for the round trips of every thread
ahead of it, and a thread that is connecting to a dead broker holds every other thread.  Here hub
threads `submit()` their messages and wait on their own `Ticket`; the thread starts them on the
link at once, pipelined with whatever is already in flight, so concurrent requests share the
round trip and each waits only for its own settlements (the select() loop wakes on the broker's
socket and on a pipe that `submit()` writes to, so nothing polls).  On an idle connection (the
thread in select(), nothing queued) a request starts its own messages and reads its own
settlements instead (leader/follower, issue 17): two thread hand-offs fewer.  The wire lock keeps
proton to one thread at a time: the thread holds it except inside select(); a request only takes
it when free, and otherwise hands over as usual.

Connecting, probing and reconnecting happen on this thread only.  While the broker is down,
`submit()` answers at once (the messages are kept: in memory, bounded by `max_pending`, or in the
outbox); the thread probes with a short bounded backoff (PROBE_FIRST doubling to at most
PROBE_MAX) and sends what it kept the moment a probe succeeds.

Flow (issue 18): what is queued, in flight and done with is kept in the sender's books (books.py);
what goes on the wire is bounded by a window (window.py), a share of it kept for new requests,
and the backlog paced so that a new request's messages wait behind little of it at the broker.

A slow broker is not a dead one: the connection is given up (and what was in flight on it resent)
only when it is really gone: closed, a transport error, the heartbeat, or a message unsettled for
`timeout` + HARD_STALL.  A broker that settles nothing for QUIET_STATE seconds (or a few round
trips, whichever is longer) while messages are in flight is *quiet*: requests stop waiting and
return at once, their messages kept (in memory or as outbox rows) in the backlog, nothing more is
sent, the connection and what is in flight on it are kept, settled normally if the broker
resumes (quiet.py judges it).

Poison messages: when a connection dies, the first unsettled message (brokers settle in
order, so it is the one the broker choked on, e.g. RabbitMQ 3.10's session crash on a full
`reject-publish` queue) is handed to a quarantine thread that sends suspects one at a time on a
connection of their own, so the main stream goes on without it; the next connection starts with a
window of one message, so that the next crash resends little.  A suspect that fails alone while
the main connection settles others is struck; after MAX_STRIKES it is logged as lost with its
type, routing key and reason.  Strikes are remembered by message id, so an outbox row resent by a
later drain goes straight to quarantine (strikes.py).

Started lazily, and again after a fork (the thread and its connection belong to the pid that
started them; a forked child starts its own).

The parts, each in a module of its own over one shared state (sender_state.py): this module is the
callers' side (submit, send, the row hand-outs, what is held, waiting for the connection or for
idle); loop.py the thread's life and its select() loop; leader.py the leader path; outcomes.py
what becomes of a started message (settled, resent, set apart, the quarantine's verdicts).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from koji_messagebus.amqp import BrokerError, Kind
from koji_messagebus.config.settings import Config
from koji_messagebus.delivery.leader import Leader
from koji_messagebus.delivery.loop import SenderLoop
from koji_messagebus.delivery.outcomes import Outcomes
from koji_messagebus.delivery.pipe import AmqpPipe, Pipe, PipeFactory
from koji_messagebus.delivery.quarantine import ConnectionFactory, amqp_connection
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.sender_state import SenderState
from koji_messagebus.delivery.status import StatusFile, Waits
from koji_messagebus.delivery.ticket import Hold, Item, State, Ticket
from koji_messagebus.format.wire import Outgoing, describe
from koji_messagebus.log import log

_STAY, _WAKE, _HERE = 0, 1, 2  # after submit: nothing to do, wake the thread, start the messages here


class SenderThread:
    """See the module docstring.  Thread-safe; one per process (Runtime owns it)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic,
                 pipe: PipeFactory = AmqpPipe, connect: ConnectionFactory = amqp_connection,
                 own_window: float | None = None):
        self.config = config
        self.clock = clock
        #: what the parts share (sender_state.py), and the parts: the thread (with what becomes of a
        #: started message, outcomes.py), the leader path
        self.shared = SenderState(config, clock, own_window)
        self.timeout = self.shared.timeout
        self.loop = SenderLoop(self.shared, Outcomes(self.shared, connect), pipe)
        self.leader = Leader(self.shared, self.loop)
        #: called (on the caller's thread) with what is submitted after close(): a hub thread still in
        #: a request while its process exits (mod_wsgi's shutdown hook runs before requests end)
        self.on_late: Callable[[list[Item]], None] | None = None

    # ---- figures and settings kept in the shared state -----------------------------------------
    @property
    def hard_stall(self) -> float:
        """A message unsettled this long gives its connection up (see HARD_STALL)."""
        return self.shared.hard_stall

    @property
    def patient(self) -> bool:
        """A command's sender (cli/command_sender.py): send() waits up to `timeout` even for a quiet
        broker (a slow broker is not a dead one; a hub request returns, a command would fail)."""
        return self.shared.patient

    @patient.setter
    def patient(self, value: bool) -> None:
        self.shared.patient = value

    @property
    def status(self) -> StatusFile | None:
        """The process's status file (set by the Runtime; None: no file)."""
        return self.shared.status

    @status.setter
    def status(self, value: StatusFile | None) -> None:
        self.shared.status = value

    @property
    def on_recovery(self) -> list[Callable[[], None]]:
        """Called (on the thread, without the lock) when the broker is back after being down."""
        return self.shared.on_recovery

    @property
    def on_connect(self) -> list[Callable[[], None]]:
        """Called (on the thread, without the lock) after every connect: the first, a recovery (spool.py)."""
        return self.shared.on_connect

    @property
    def connects(self) -> int:
        return self.shared.connects

    @property
    def lost(self) -> int:
        return self.shared.lost

    @property
    def outcomes(self) -> Counter[str]:
        """Settlements by outcome (status)."""
        return self.shared.outcomes

    @property
    def last_error(self) -> tuple[float, str] | None:
        """The last problem (wall time, text)."""
        return self.shared.last_error

    @property
    def waits(self) -> Waits:
        """Request waits (status)."""
        return self.shared.waits

    # ---- the callers' side ---------------------------------------------------------------------
    @property
    def own_window(self) -> float:
        """An OWNED row is put on the wire only this long after it was stored (see runtime.OWNER_GRACE)."""
        return self.shared.books.own_window

    @property
    def settled_rows(self) -> list[int]:
        """OWNED rows settled: to delete, in batches, by whoever has a DB (books.py)."""
        return self.shared.books.settled_rows

    @property
    def abandoned_rows(self) -> list[int]:
        """OWNED rows given up after own_window: sent only under a row lock (drainer.py)."""
        return self.shared.books.abandoned_rows

    @property
    def on_rows(self) -> list[Callable[[], None]]:
        """Called (under the lock: must not take locks of its own) when the row lists grew."""
        return self.shared.books.on_rows

    @property
    def state(self) -> State:
        return self.shared.state

    @property
    def down(self) -> bool:
        return self.shared.state is State.DOWN

    @property
    def error(self) -> BrokerError | None:
        """The last connection failure (None: none yet): why the broker is down, or why the
        connection a caller's messages were on was given up."""
        return self.shared.error

    @property
    def quiet_after(self) -> float:
        return self.shared.silent.quiet_after

    @property
    def quiet_state_after(self) -> float:
        return self.shared.silent.quiet_state_after

    @property
    def quiet(self) -> bool:
        return self.shared.silent.quiet

    def quiet_for(self) -> float:
        """Seconds the broker has been silent while messages are in flight, or since the thread
        started connecting (a reconnect to a broker that may be frozen); 0 when idle and connected."""
        sh = self.shared
        with sh.cond:
            if sh.state is State.CONNECTING:
                return self.clock() - sh.connecting_since
            return sh.silence(self.clock())

    def submit(self, messages: list[Outgoing], hold: Hold = Hold.MEMORY, rows: list[int] | None = None,
               born: float = 0.0) -> Ticket:
        """Hand messages over; returns at once.  `rows` (OWNED, LOCKED) are their outbox row ids."""
        ticket = Ticket(hold, messages)
        if not messages:
            return ticket
        now = time.time()
        items = [Item(m, ticket, rows[i] if rows else None, born, queued=now) for i, m in enumerate(messages)]
        go = _STAY
        sh = self.shared
        wire = sh.wire
        held = wire.acquire(blocking=False)  # free: the thread waits in select() (or is not connected)
        try:
            with sh.cond:
                if sh.closed and sh.pid in (0, os.getpid()):
                    ticket._release(BrokerError(Kind.CONNECTION_LOST, "the hub process is exiting (its sender is "
                                                "closed)"))
                    late = True
                else:
                    late = False
                    go = self._queue(ticket, items, wire if held else None)
            if go is _HERE:
                self.leader.start_here(ticket)
        finally:
            if held:
                wire.release()
        if late:
            self._late(items)
        elif go is _WAKE:
            sh.wake()
        return ticket

    def _queue(self, ticket: Ticket, items: list[Item], wire: threading.Lock | None = None) -> int:
        """Under the lock: queue (or keep) the items; _WAKE when the thread must be woken, _HERE when
        the caller (holding `wire`) starts them on the link itself (leader.py)."""
        sh = self.shared
        hold = ticket.hold
        self.loop.ensure_started()
        if sh.state is State.DOWN:
            ticket._release(sh.down_error())
            if hold is not Hold.LOCKED:
                self._keep(items)
            return _STAY
        books = sh.books
        silent = sh.silent
        # the connection idle, the thread in select() and nothing queued before these: sending them here
        # spares the thread's wake-up (issue 17); the thread still reads the settlements
        here = (wire is sh.wire and sh.waiting and sh.state is State.UP and sh.conn is not None
                and not silent.quiet and not books.fresh and not books.backlog)
        if hold is Hold.LOCKED:  # a drain holding row locks and waiting: the front of the backlog
            books.put_back(items)
        else:
            (books.backlog if silent.quiet else books.fresh).extend(items)
        if silent.quiet and not sh.patient:
            ticket._release(sh.quiet_error())  # known quiet: no waiting; the messages stay queued
        if here:
            return _HERE
        if sh.waiting:
            sh.waiting = False
            return _WAKE
        sh.cond.notify()
        return _STAY

    def _late(self, items: list[Item]) -> None:
        """Submitted after close(): nothing will send them here.  The owner (Delivery) spools or
        reports them; without one, memory messages are logged as lost (outbox rows stay)."""
        if self.on_late is not None:
            self.on_late(items)
            return
        memory = [i.msg for i in items if i.ticket.hold is Hold.MEMORY]
        if memory:
            self.shared.lost += len(memory)
            log.error("lost %s: handed over after the sender was closed (process exit)", describe(memory))

    def send(self, messages: list[Outgoing], hold: Hold = Hold.MEMORY, quiet: bool = False,
             patient: bool = False) -> SendResult:
        """submit() and wait (at most `timeout`; a `patient` caller, or every caller of a patient
        sender, ignores a quiet broker)."""
        ticket = self.submit(messages, hold)
        return ticket.wait(self, self.clock() + self.timeout, quiet, patient=patient or self.shared.patient)

    def take_settled_rows(self, limit: int = 10000) -> list[int]:
        with self.shared.cond:
            return self.shared.books.take_settled_rows(limit)

    def take_abandoned_rows(self, limit: int = 10000) -> list[int]:
        with self.shared.cond:
            return self.shared.books.take_abandoned_rows(limit)

    def return_rows(self, settled: Sequence[int] = (), abandoned: Sequence[int] = ()) -> None:
        """Rows taken with take_*_rows whose database work failed: back in front, for the next try."""
        with self.shared.cond:
            self.shared.books.return_rows(settled, abandoned)

    def pending(self) -> int:
        """Messages held (queued, in flight or in quarantine)."""
        return self.loop.pending()

    def held_summary(self) -> tuple[int, float | None]:
        """(messages held, wall time the oldest of them was handed over) for the status."""
        sh = self.shared
        with sh.cond:
            q = sh.quarantine
            firsts = [i.queued for i in sh.books.firsts() + [q.first() if q else None] if i is not None]
            held = len(sh.books) + (len(q) if q else 0)
            return held, min(firsts, default=None)

    @property
    def connection(self) -> Pipe | None:
        """The connection in use, if any (status)."""
        return self.shared.conn

    def ours(self) -> bool:
        """True when the thread was started by this process (not a forked child's copy)."""
        return self.loop.ours()

    def held(self, hold: Hold) -> list[Outgoing]:
        """The messages of `hold` this process still keeps (queued, in flight, in quarantine)."""
        sh = self.shared
        with sh.cond:
            q = sh.quarantine
            items = sh.books.items() + (q.items() if q else [])
        return [i.msg for i in items if i.ticket.hold is hold]

    def wait_up(self, timeout: float) -> Pipe:
        """Start the thread and wait (at most `timeout`) for its connection; raise the BrokerError
        that kept it from coming up.  For the commands that connect before they send (`check`,
        `outbox flush`, `replay`, `spool flush`): a hub request never waits for a connect, a command
        waits for it once, so that a wrong password is its error rather than a request's timeout."""
        sh = self.shared
        deadline = self.clock() + timeout
        with sh.cond:
            self.loop.ensure_started()
        while True:
            with sh.cond:
                if sh.state is State.UP and sh.conn is not None:
                    return sh.conn
                if sh.state is State.DOWN and sh.error is not None:
                    raise sh.error
                if self.clock() >= deadline:
                    raise BrokerError(Kind.TIMEOUT, f"no answer from the broker for {timeout:g}s while connecting")
            time.sleep(0.01)  # once per command, while it connects

    def wait_idle(self, timeout: float) -> bool:
        """Tests and shutdown: wait until nothing is held (False on timeout)."""
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            if not self.pending():
                return True
            time.sleep(0.005)
        return not self.pending()

    def close(self, wait: float = 1.0) -> None:
        """Stop the thread and close the connection politely (waiting at most `wait` for the broker's close)."""
        self.loop.close(wait)
        sh = self.shared
        if sh.quarantine is not None:
            sh.quarantine.close()
        if sh.status is not None:
            sh.status.remove()

    def _close_ticket(self, ticket: Ticket) -> SendResult:
        """The caller stopped waiting: report what is settled; the rest is unsent (kept or not, by hold)."""
        sh = self.shared
        with sh.cond:
            ticket.closed = True
            result = ticket.result
            done = {id(m) for m in result.accepted} | {id(m) for m, _ in result.lost}
            result.unsent = [m for m in ticket.messages if id(m) not in done]
            if result.unsent and result.error is None:
                if sh.state is not State.UP and sh.error:
                    result.error = sh.error
                elif sh.state is State.CONNECTING:
                    result.error = BrokerError(Kind.TIMEOUT, f"no answer from the broker for "
                                               f"{self.clock() - sh.connecting_since:.1f}s while connecting "
                                               "(messages kept, sent once it answers)")
                elif sh.silent.quiet or sh.silence(self.clock()) >= sh.silent.quiet_state_after:
                    result.error = sh.quiet_error()
                else:
                    result.error = BrokerError(Kind.TIMEOUT, "the broker did not settle in time")
            return SendResult(list(result.accepted), list(result.lost), list(result.unsent), result.error,
                              tried=result.tried or sh.state is State.UP,
                              kept=bool(result.unsent) and ticket.hold is not Hold.LOCKED)

    def _keep(self, items: list[Item]) -> None:
        """Under the lock, broker down: keep MEMORY and OWNED items, bounded by max_pending."""
        sh = self.shared
        overflow = sh.books.keep(items)
        if overflow:
            max_pending = sh.books.max_pending
            sh.lost += len(overflow)
            sh.note_error(f"in-memory backlog full (max_pending = {max_pending}): {len(overflow)} lost")
            log.error("lost %s: in-memory backlog full (max_pending = %d); enable the outbox to "
                      "keep messages in the database", describe(overflow), max_pending)
