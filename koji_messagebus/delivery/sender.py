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
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence

from koji_messagebus.amqp import BrokerError, Kind, Settlement, connect_first
from koji_messagebus.amqp import sender as amqp_sender
from koji_messagebus.config.settings import Config
from koji_messagebus.delivery.books import Books
from koji_messagebus.delivery.heaptrim import HeapTrim
from koji_messagebus.delivery.pipe import AmqpPipe, Pipe, PipeFactory
from koji_messagebus.delivery.quarantine import PROBE_FIRST, PROBE_MAX, ConnectionFactory, Quarantine, amqp_connection
from koji_messagebus.delivery.quiet import HARD_STALL, Silence
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.status import StatusFile, Waits
from koji_messagebus.delivery.strikes import Strikes
from koji_messagebus.delivery.ticket import Hold, Item, State, Ticket
from koji_messagebus.format.wire import Outgoing, describe
from koji_messagebus.log import flush_causes, log, log_cause

IDLE_TICK = 0.5  # the connection is checked (heartbeats, a close) this often when nothing arrives
_STAY, _WAKE, _HERE = 0, 1, 2  # after submit: nothing to do, wake the thread, start the messages here

class SenderThread:
    """See the module docstring.  Thread-safe; one per process (Runtime owns it)."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic,
                 pipe: PipeFactory = AmqpPipe, connect: ConnectionFactory = amqp_connection,
                 own_window: float | None = None):
        self.config = config
        self.clock = clock
        self._pipe = pipe
        self._connect_for_quarantine = connect
        self.timeout = float(config.broker.timeout)
        #: a message unsettled this long gives its connection up (see HARD_STALL)
        self.hard_stall = self.timeout + HARD_STALL
        self.probe_max = min(PROBE_MAX, float(config.broker.retry_interval))
        #: queued, in flight, the window and the row lists (books.py)
        self._heap = HeapTrim()
        self._books = Books(int(config.broker.max_pending), self.timeout if own_window is None else own_window)
        self._cond = threading.Condition()
        self._silent = Silence()  # quiet or stalled (quiet.py)
        self._state = State.CONNECTING
        self._connecting_since = clock()
        self._error: BrokerError | None = None
        self._down_since = 0.0
        self._conn: Pipe | None = None
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._wake_r = self._wake_w = -1
        self._waiting = False  # the thread is in select(): submit() writes a wake byte, or sends itself
        #: held by whoever uses the connection (proton is not thread-safe): the thread, except while in
        #: select(); a submitting thread takes it (never blocking) to start its messages itself
        self._wire = threading.Lock()
        self._wire_error: BaseException | None = None  # met by _start_here: the thread's to handle
        self._stopping = False
        self._closed = False  # close() was called in this process: a later submit() takes the late path
        self._close_wait = 0.5
        #: a command's sender (cli/command_sender.py): send() waits up to `timeout` even for a quiet
        #: broker (a slow broker is not a dead one; a hub request returns, a command would fail)
        self.patient = False
        self._strikes = Strikes()  # poison suspects (strikes.py)
        self._quarantine: Quarantine | None = None
        #: called (on this thread, without the lock) when the broker is back after being down
        self.on_recovery: list[Callable[[], None]] = []
        #: called (on this thread, without the lock) after every connect: the first, a recovery (spool.py)
        self.on_connect: list[Callable[[], None]] = []
        #: called (on the caller's thread) with what is submitted after close(): a hub thread still in
        #: a request while its process exits (mod_wsgi's shutdown hook runs before requests end)
        self.on_late: Callable[[list[Item]], None] | None = None
        self.connects = 0
        self.lost = 0
        #: status figures: settlements by outcome, the last problem (wall time, text), request waits,
        #: and the process's status file (set by the Runtime; None: no file)
        self.outcomes: Counter[str] = Counter()
        self.last_error: tuple[float, str] | None = None
        self.waits = Waits()
        self.status: StatusFile | None = None

    # ---- the callers' side ---------------------------------------------------------------------
    @property
    def own_window(self) -> float:
        """An OWNED row is put on the wire only this long after it was stored (see runtime.OWNER_GRACE)."""
        return self._books.own_window

    @property
    def settled_rows(self) -> list[int]:
        """OWNED rows settled: to delete, in batches, by whoever has a DB (books.py)."""
        return self._books.settled_rows

    @property
    def abandoned_rows(self) -> list[int]:
        """OWNED rows given up after own_window: sent only under a row lock (drainer.py)."""
        return self._books.abandoned_rows

    @property
    def on_rows(self) -> list[Callable[[], None]]:
        """Called (under the lock: must not take locks of its own) when the row lists grew."""
        return self._books.on_rows

    @property
    def state(self) -> State:
        return self._state

    @property
    def down(self) -> bool:
        return self._state is State.DOWN

    @property
    def error(self) -> BrokerError | None:
        """The last connection failure (None: none yet): why the broker is down, or why the
        connection a caller's messages were on was given up."""
        return self._error

    @property
    def quiet_after(self) -> float:
        return self._silent.quiet_after

    @property
    def quiet_state_after(self) -> float:
        return self._silent.quiet_state_after

    @property
    def quiet(self) -> bool:
        return self._silent.quiet

    def quiet_for(self) -> float:
        """Seconds the broker has been silent while messages are in flight, or since the thread
        started connecting (a reconnect to a broker that may be frozen); 0 when idle and connected."""
        with self._cond:
            if self._state is State.CONNECTING:
                return self.clock() - self._connecting_since
            return self._silence(self.clock())

    def _silence(self, now: float) -> float:
        """Under the lock: the broker's silence (quiet.py)."""
        return self._silent.silence(now, self._books.oldest_sent())

    def _quiet_error(self) -> BrokerError:
        """Under the lock: why a request returned while the broker is quiet."""
        return self._silent.error(self.clock(), self._books.oldest_sent())

    def submit(self, messages: list[Outgoing], hold: Hold = Hold.MEMORY, rows: list[int] | None = None,
               born: float = 0.0) -> Ticket:
        """Hand messages over; returns at once.  `rows` (OWNED, LOCKED) are their outbox row ids."""
        ticket = Ticket(hold, messages)
        if not messages:
            return ticket
        now = time.time()
        items = [Item(m, ticket, rows[i] if rows else None, born, queued=now) for i, m in enumerate(messages)]
        go = _STAY
        wire = self._wire
        held = wire.acquire(blocking=False)  # free: the thread waits in select() (or is not connected)
        try:
            with self._cond:
                if self._closed and self._pid in (0, os.getpid()):
                    ticket._release(BrokerError(Kind.CONNECTION_LOST, "the hub process is exiting (its sender is "
                                                "closed)"))
                    late = True
                else:
                    late = False
                    go = self._queue(ticket, items, wire if held else None)
            if go is _HERE:
                self._start_here(ticket)
        finally:
            if held:
                wire.release()
        if late:
            self._late(items)
        elif go is _WAKE:
            self._wake()
        return ticket

    def _queue(self, ticket: Ticket, items: list[Item], wire: threading.Lock | None = None) -> int:
        """Under the lock: queue (or keep) the items; _WAKE when the thread must be woken, _HERE when
        the caller (holding `wire`) starts them on the link itself."""
        hold = ticket.hold
        self._ensure_started()
        if self._state is State.DOWN:
            ticket._release(self._down_error())
            if hold is not Hold.LOCKED:
                self._keep(items)
            return _STAY
        books = self._books
        # the connection idle, the thread in select() and nothing queued before these: sending them here
        # spares the thread's wake-up (issue 17); the thread still reads the settlements
        here = (wire is self._wire and self._waiting and self._state is State.UP and self._conn is not None
                and not self._silent.quiet and not books.fresh and not books.backlog)
        if hold is Hold.LOCKED:  # a drain holding row locks and waiting: the front of the backlog
            books.put_back(items)
        else:
            (books.backlog if self._silent.quiet else books.fresh).extend(items)
        if self._silent.quiet and not self.patient:
            ticket._release(self._quiet_error())  # known quiet: no waiting; the messages stay queued
        if here:
            return _HERE
        if self._waiting:
            self._waiting = False
            return _WAKE
        self._cond.notify()
        return _STAY

    def _start_here(self, ticket: Ticket) -> None:
        """On a submitting thread, holding the wire lock while the sender thread waits in select():
        start what is queued on the link as the thread would (window, strikes; books.take), and write
        it.  The thread wakes on the broker's answer and reads the settlements as always.  Anything
        left (no credit, a partial write, an error) is the thread's: it is woken."""
        conn = self._conn
        assert conn is not None
        try:
            credit = conn.credit()
            with self._cond:
                items = self._take(credit)
            self._start(conn, items)
            if not conn.wants_write():
                with self._cond:
                    if not self._books.fresh and not self._books.backlog:
                        ticket.lead = conn  # all of them on the wire: it may read its settlements itself
                        return
        except Exception as exc:  # noqa: BLE001 - never in a hub thread: the thread handles it as its own
            with self._cond:
                self._wire_error = exc
        with self._cond:
            wake, self._waiting = self._waiting, False
        if wake:
            self._wake()

    def _late(self, items: list[Item]) -> None:
        """Submitted after close(): nothing will send them here.  The owner (Delivery) spools or
        reports them; without one, memory messages are logged as lost (outbox rows stay)."""
        if self.on_late is not None:
            self.on_late(items)
            return
        memory = [i.msg for i in items if i.ticket.hold is Hold.MEMORY]
        if memory:
            self.lost += len(memory)
            log.error("lost %s: handed over after the sender was closed (process exit)", describe(memory))

    def send(self, messages: list[Outgoing], hold: Hold = Hold.MEMORY, quiet: bool = False) -> SendResult:
        """submit() and wait (at most `timeout`; a `patient` sender's callers ignore a quiet broker)."""
        ticket = self.submit(messages, hold)
        return ticket.wait(self, self.clock() + self.timeout, quiet, patient=self.patient)

    def take_settled_rows(self, limit: int = 10000) -> list[int]:
        with self._cond:
            return self._books.take_settled_rows(limit)

    def take_abandoned_rows(self, limit: int = 10000) -> list[int]:
        with self._cond:
            return self._books.take_abandoned_rows(limit)

    def return_rows(self, settled: Sequence[int] = (), abandoned: Sequence[int] = ()) -> None:
        """Rows taken with take_*_rows whose database work failed: back in front, for the next try."""
        with self._cond:
            self._books.return_rows(settled, abandoned)

    def pending(self) -> int:
        """Messages held (queued, in flight or in quarantine)."""
        with self._cond:
            q = self._quarantine
            return len(self._books) + (len(q) if q else 0)

    def held_summary(self) -> tuple[int, float | None]:
        """(messages held, wall time the oldest of them was handed over) for the status."""
        with self._cond:
            q = self._quarantine
            firsts = [i.queued for i in self._books.firsts() + [q.first() if q else None] if i is not None]
            held = len(self._books) + (len(q) if q else 0)
            return held, min(firsts, default=None)

    @property
    def connection(self) -> Pipe | None:
        """The connection in use, if any (status)."""
        return self._conn

    def _status_tick(self) -> None:
        """On this thread: the status file, when a figure changed (status.py)."""
        if self.status is not None:
            try:
                self.status.tick((sum(self.outcomes.values()), self.lost, self._state, self.pending(),
                                  self.last_error, self.waits.count, self.connects))
            except Exception:  # noqa: BLE001 - never stop the sender for its figures
                log.exception("status file update failed")

    def _note_error(self, text: str) -> None:
        self.last_error = (time.time(), text)

    def ours(self) -> bool:
        """True when the thread was started by this process (not a forked child's copy)."""
        return self._pid == os.getpid() and self._thread is not None

    def held(self, hold: Hold) -> list[Outgoing]:
        """The messages of `hold` this process still keeps (queued, in flight, in quarantine)."""
        with self._cond:
            q = self._quarantine
            items = self._books.items() + (q.items() if q else [])
        return [i.msg for i in items if i.ticket.hold is hold]

    def wait_up(self, timeout: float) -> Pipe:
        """Start the thread and wait (at most `timeout`) for its connection; raise the BrokerError
        that kept it from coming up.  For the commands that connect before they send (`check`,
        `outbox flush`, `replay`, `spool flush`): a hub request never waits for a connect, a command
        waits for it once, so that a wrong password is its error rather than a request's timeout."""
        deadline = self.clock() + timeout
        with self._cond:
            self._ensure_started()
        while True:
            with self._cond:
                if self._state is State.UP and self._conn is not None:
                    return self._conn
                if self._state is State.DOWN and self._error is not None:
                    raise self._error
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
        with self._cond:
            self._close_wait = min(0.5, wait)
            self._stopping = True
            self._closed = self._pid in (0, os.getpid())
            self._cond.notify_all()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            self._wake()
            thread.join(wait + 1)
        if self._quarantine is not None:
            self._quarantine.close()
        if self.status is not None:
            self.status.remove()

    def _close_ticket(self, ticket: Ticket) -> SendResult:
        """The caller stopped waiting: report what is settled; the rest is unsent (kept or not, by hold)."""
        with self._cond:
            ticket.closed = True
            result = ticket.result
            done = {id(m) for m in result.accepted} | {id(m) for m, _ in result.lost}
            result.unsent = [m for m in ticket.messages if id(m) not in done]
            if result.unsent and result.error is None:
                if self._state is not State.UP and self._error:
                    result.error = self._error
                elif self._state is State.CONNECTING:
                    result.error = BrokerError(Kind.TIMEOUT, f"no answer from the broker for "
                                               f"{self.clock() - self._connecting_since:.1f}s while connecting "
                                               "(messages kept, sent once it answers)")
                elif self._silent.quiet or self._silence(self.clock()) >= self.quiet_state_after:
                    result.error = self._quiet_error()
                else:
                    result.error = BrokerError(Kind.TIMEOUT, "the broker did not settle in time")
            return SendResult(list(result.accepted), list(result.lost), list(result.unsent), result.error,
                              tried=result.tried or self._state is State.UP,
                              kept=bool(result.unsent) and ticket.hold is not Hold.LOCKED)

    def _ensure_started(self) -> None:
        """Under the lock: start the thread in this process (again after a fork)."""
        pid = os.getpid()
        if self._pid == pid and self._thread is not None:
            return
        if self._pid and self._pid != pid:
            # a forked child: the parent's thread, connection and in-flight messages are not ours
            self._books.clear()
            self._silent.quiet = False
            self._silent.blocked_since = 0.0
            self._conn = None
            self._quarantine = None
            self._state = State.CONNECTING
            self._connecting_since = self.clock()
            self._closed = False
            self._waiting = False
            self._wire = threading.Lock()  # the parent's thread may have held it at the fork
            self._wire_error = None
            self.outcomes, self.lost, self.connects, self.last_error = Counter(), 0, 0, None  # its own figures
            self.waits = Waits()
        self._pid = pid
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._thread = threading.Thread(target=self._run, name="messagebus-sender", daemon=True)
        self._thread.start()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the pipe is full: the thread is awake anyway

    def _down_error(self) -> BrokerError:
        since = self.clock() - self._down_since
        return BrokerError(Kind.BREAKER_OPEN, f"broker unavailable for {since:.1f}s (probed in the background; "
                           f"last error: {self._error})")

    def _keep(self, items: list[Item]) -> None:
        """Under the lock, broker down: keep MEMORY and OWNED items, bounded by max_pending."""
        overflow = self._books.keep(items)
        if overflow:
            max_pending = self._books.max_pending
            self.lost += len(overflow)
            self._note_error(f"in-memory backlog full (max_pending = {max_pending}): {len(overflow)} lost")
            log.error("lost %s: in-memory backlog full (max_pending = %d); enable the outbox to "
                      "keep messages in the database", describe(overflow), max_pending)

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        backoff = PROBE_FIRST
        while True:
            with self._cond:
                if self._stopping:
                    break
            self._status_tick()
            flush_causes()  # a count whose minute is over, said from here rather than a hub request
            self._heap.note(self.pending())
            if self._conn is None:
                try:
                    self._open()
                except Exception as exc:  # noqa: BLE001 - BrokerError, or a bug: never end the thread
                    if not isinstance(exc, BrokerError):
                        log.exception("unexpected error while connecting")
                        exc = BrokerError(Kind.PROTOCOL, f"unexpected error while connecting: {exc!r}")
                    self._went_down(exc)
                    if self._pause(backoff):
                        break
                    backoff = min(backoff * 2, self.probe_max)
                    continue
                backoff = PROBE_FIRST
            with self._wire:  # released only inside _step's select()
                try:
                    self._step()
                except BrokerError as exc:
                    self._failed(exc)
                except Exception as exc:  # noqa: BLE001 - a bug must not end the thread
                    log.exception("unexpected error in the sender thread")
                    self._failed(BrokerError(Kind.PROTOCOL, f"unexpected error while sending: {exc!r}"))
        if self._conn is not None:
            self._conn.close(self._close_wait)
            self._conn = None
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _open(self) -> None:
        was_down = self._state is State.DOWN
        conn, errors = connect_first(self.config.endpoints, self.config.broker.connect_timeout,
                                     lambda ep: self._pipe(self.config, ep), self.clock)
        if errors:
            log.warning("connected to %s after: %s", conn.endpoint, "; ".join(str(e) for e in errors))
        conn.on_settled = self._settled
        self.connects += 1
        with self._cond:
            self._conn = conn
            self._state = State.UP
            self._silent.progress = self.clock()
            self._books.window.reset(self._books.crashed)
            self._books.crashed = self._silent.quiet = False
            self._silent.blocked_since = 0.0
            held = len(self._books.backlog) + len(self._books.fresh)
        if was_down:
            log.warning("broker %s is back after %.1fs; sending %d held message(s)", conn.endpoint,
                        self.clock() - self._down_since, held)
            for callback in list(self.on_recovery):
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a recovery hook must not stop the sender
                    log.exception("recovery hook failed")
        for callback in list(self.on_connect):
            try:
                callback()
            except Exception:  # noqa: BLE001 - a connect hook must not stop the sender
                log.exception("connect hook failed")

    def _pause(self, seconds: float) -> bool:
        """Sleep between probes; True when closing."""
        with self._cond:
            self._cond.wait_for(lambda: self._stopping, seconds)
            return self._stopping

    def _went_down(self, error: BrokerError) -> None:
        with self._cond:
            first = self._state is not State.DOWN
            self._error = error
            self._note_error(str(error))
            if first:
                self._state = State.DOWN
                self._down_since = self.clock()
            held = [i.msg for i in self._books.release_queued(self._down_error())]
        if first:
            log.error("broker unavailable: %s; probing every %.1fs at most in the background; held: %s",
                      error, self.probe_max, describe(held) if held else "nothing")

    def _take(self, credit: int) -> list[Item]:
        """Under the lock: the queued items to start now (books.py); those struck before are set apart."""
        now = self.clock()
        books = self._books
        if self._silent.quiet and books.inflight:
            return []  # nothing more on a connection the broker does not answer (it stays a backlog)
        items, apart = books.take(credit, now, lambda msg_id: bool(self._strikes.get(msg_id)))
        for item in apart:
            self._set_apart(item)  # struck before: never again on the main connection
        if books.fresh and not items and not books.inflight:
            self._silent.blocked_since = self._silent.blocked_since or now  # no credit: a broker in flow control
        else:
            self._silent.blocked_since = 0.0
        return items

    def _step(self) -> None:
        conn = self._conn
        assert conn is not None
        credit = conn.credit()
        with self._cond:
            items = self._take(credit)
            if not items and not self._stopping:
                self._waiting = True
        if items:
            self._start(conn, items)
            self._check()  # also while new messages keep coming
            return
        fd = conn.fileno()
        timeout = IDLE_TICK
        status_due = self.status.wake_in() if self.status is not None else None
        if status_due is not None:
            timeout = min(timeout, max(0.001, status_due))
        with self._cond:
            now = self.clock()
            silent = self._silence(now)
            if silent:  # wake when the broker becomes quiet, and at the hard bound
                if not self._silent.quiet:
                    timeout = min(timeout, self.quiet_state_after - silent)
                oldest = self._books.oldest_sent()
                if oldest is not None:
                    timeout = min(timeout, oldest + self.hard_stall - now)
            timeout = max(0.001, timeout)
        writing = [fd] if conn.wants_write() else []
        self._wire.release()  # a submitting thread may start its messages meanwhile (_start_here)
        try:
            readable, _, _ = select.select([fd, self._wake_r], writing, [], timeout)
        finally:
            self._wire.acquire()
            with self._cond:
                self._waiting = False
                error, self._wire_error = self._wire_error, None
        if error is not None:
            raise error  # met by a caller's _start_here on this connection (a bug, or the connection lost)
        if self._wake_r in readable:
            try:
                os.read(self._wake_r, 4096)
            except OSError:
                pass
        conn.poll()
        self._check()
        if not readable and not conn.healthy():  # closed, or the heartbeat says the broker is gone
            raise conn.error or BrokerError(Kind.CONNECTION_LOST, "the connection is gone")

    def _lead(self, ticket: Ticket, conn: Pipe, until: float) -> None:
        """On the caller's thread, for a ticket started by _start_here, while the sender thread still
        waits in select(): read the broker's answer here (until `until`, monotonic) rather than be
        woken by the thread (a hand-off back).  Holds the wire lock throughout, so the thread (which
        wakes on the same socket) waits for it; gives way at once when anything else needs the thread
        (a wake byte: another request, close()), and for good at `until`."""
        wire = self._wire
        if not wire.acquire(blocking=False):
            return
        try:
            with self._cond:
                if not (self._waiting and self._conn is conn):  # woken meanwhile, or another connection
                    return
            fd = conn.fileno()
            while not ticket._event.is_set():
                left = until - self.clock()
                if left <= 0:
                    return
                readable, _, _ = select.select([fd, self._wake_r], [], [], left)
                if self._wake_r in readable or not readable:
                    return
                conn.poll()
        except Exception as exc:  # noqa: BLE001 - never in a hub thread: the thread handles it as its own
            with self._cond:
                self._wire_error = exc
                wake, self._waiting = self._waiting, False
            if wake:
                self._wake()
        finally:
            wire.release()

    def _start(self, conn: Pipe, items: list[Item]) -> None:
        """Holding the wire lock: put `items` on the link and write them."""
        now = self.clock()
        for i, item in enumerate(items):
            item.sent_at = now
            try:
                tag = conn.start(item.msg.payload)
            except BaseException:
                with self._cond:  # not on the wire: back to the front, not lost
                    self._books.put_back(items[i:])
                raise
            with self._cond:
                self._books.inflight[tag] = item
        conn.poll()

    def _check(self) -> None:
        """Quiet (requests stop waiting, nothing dropped), or past the hard bound (the connection
        is given up)."""
        released: list[Ticket] = []
        with self._cond:
            now = self.clock()
            silent = self._silence(now)
            if not silent:
                return
            count = len(self._books.inflight)
            if self._silent.went_quiet(now, silent):
                released = self._books.hold_back()  # kept: new requests after the broker resumes go first
                error = self._quiet_error()
                for ticket in released if not self.patient else []:  # a command waits up to timeout
                    ticket._release(error)
            sent = self._books.oldest_sent()
            oldest = now if sent is None else sent
        if released:
            self._note_error(f"no answer from the broker for {silent:.1f}s")
            log_cause("quiet", logging.WARNING, "no answer from the broker for %.1fs with %d message(s) in "
                      "flight; requests return at once, their messages kept (the connection is kept)",
                      silent, count)
        if count and now - oldest >= self.hard_stall:
            # a frozen broker the heartbeat has not caught (or one message it never settles)
            raise BrokerError(Kind.TIMEOUT, f"no answer from the broker for {silent:.1f}s: a message unsettled "
                              f"for {now - oldest:.1f}s with {count} in flight; the connection is given up")

    def _settled(self, tag: str, settlement: Settlement) -> None:
        """A settlement arrived (inside conn.poll(), on this thread)."""
        with self._cond:
            in_flight = len(self._books.inflight)
            item = self._books.inflight.pop(tag, None)
            if item is None:
                return
            now = self.clock()
            was_quiet = self._silent.settled(now, item.sent_at)
            self._books.window.settled(now - item.sent_at, in_flight, now)
            if was_quiet is not None:
                log_cause("quiet", logging.INFO, "the broker answers again after %.1fs without an answer",
                          was_quiet)
            self._strikes.forget(item.msg.msg_id)
            self.outcomes[settlement.outcome] += 1
            if settlement.unroutable:  # released: no queue bound for it; not an error (amqp.sender)
                amqp_sender.UNROUTABLE.note(self.config.exchange.name, [item.msg])
            self._finish(item, settlement.lost)

    def _finish(self, item: Item, lost: str | None) -> None:
        """Under the lock: a final outcome for one item."""
        if lost is not None:
            self.lost += 1
            self._note_error(f"lost {item.msg.type} {item.msg.routing_key}: {lost}")
            log.error("lost %s: the broker answered %s", describe([item.msg]), lost)
        self._books.row_done(item)
        item.ticket._settled(item.msg, lost)

    def _failed(self, error: BrokerError) -> None:
        """The connection is gone: strike the first unsettled message, resend the rest of what was in
        flight on it (to the backlog's front); the next connection starts with a small window."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close(0.0)
        now = self.clock()
        with self._cond:
            self._waiting = False
            self._state = State.CONNECTING
            self._connecting_since = now
            self._error = error
            self._note_error(str(error))
            inflight = list(self._books.inflight.values())
            self._books.inflight.clear()
            # lost with messages in flight: one of them may be what the broker chokes on (RabbitMQ
            # 3.10 resets the connection on a poison message): restart small
            self._books.crashed = bool(inflight)
            self._silent.quiet = False
            suspect = None
            if inflight and error.kind not in (Kind.NOT_FOUND, Kind.AUTH, Kind.TLS):
                suspect = inflight.pop(0)
                self._strikes.strike(suspect.msg.msg_id)
                self._set_apart(suspect)
            back = [i for i in inflight if self._books.sendable(i, now)]
            self._books.put_back(back)
        log_cause("resend", logging.WARNING, "%s; resending the %d message(s) that were in flight on it, "
                  "on a new connection", error, len(back))
        if suspect is not None:
            log_cause("set-apart", logging.WARNING, "set apart for a try alone on a connection of its own "
                      "(the first unsettled when the connection died): %s (id %s)", describe([suspect.msg]),
                      suspect.msg.msg_id)

    def _set_apart(self, item: Item) -> None:
        """Under the lock: hand a suspect to the quarantine thread."""
        if self._quarantine is None:
            self._quarantine = Quarantine(self)
        item.tried_at = self.clock()
        self._quarantine.put(item)

    # ---- the quarantine's verdicts (called on its thread) --------------------------------------
    def _quarantine_result(self, item: Item, result: SendResult) -> bool:
        """True when the suspect is done with (settled, lost, or no longer ours to send)."""
        with self._cond:
            previous, item.tried_at = item.tried_at, self.clock()
            if result.accepted:
                self.outcomes["accepted"] += 1
                self._strikes.forget(item.msg.msg_id)
                self._finish(item, None)
                return True
            if result.lost:
                self._finish(item, result.lost[0][1])
                return True
            if not self._books.sendable(item, self.clock()):
                return True
            if self._strikes.failed_alone(item.msg.msg_id, self._silent.progress > previous):
                self._finish(item, f"not settled in {self._strikes.get(item.msg.msg_id)} tries, alone on its "
                             f"own connection ({result.error}); given up as a poison message")
                return True
            return False
