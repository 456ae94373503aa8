"""The sender thread's life and its select() loop: started lazily (again in a forked child),
connect and probe with backoff, start what is queued on the link, wait on the broker's socket and
the wake pipe, watch for a quiet or stalled broker, and close politely.

Why its own module: this is the only code that runs on the sender thread (the settlements it
reads are said by outcomes.py); sender.py is what callers call, leader.py what a request does on
an idle connection.  `take` and `start` are shared with the leader path, which starts messages as
the thread would.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from collections import Counter

from koji_messagebus.amqp import BrokerError, Kind, connect_first
from koji_messagebus.delivery.heaptrim import HeapTrim
from koji_messagebus.delivery.outcomes import Outcomes
from koji_messagebus.delivery.pipe import Pipe, PipeFactory
from koji_messagebus.delivery.quarantine import PROBE_FIRST, PROBE_MAX
from koji_messagebus.delivery.sender_state import SenderState
from koji_messagebus.delivery.status import Waits
from koji_messagebus.delivery.ticket import Item, State, Ticket
from koji_messagebus.format.wire import describe
from koji_messagebus.log import flush_causes, log, log_cause

IDLE_TICK = 0.5  # the connection is checked (heartbeats, a close) this often when nothing arrives
SHED_EVERY = 1.0  # seconds between looks for backlog items too old to keep (Books.shed)


class SenderLoop:
    """See the module docstring.  `pipe` makes the connections (pipe.py)."""

    def __init__(self, shared: SenderState, outcomes: Outcomes, pipe: PipeFactory):
        self.shared = shared
        self.outcomes = outcomes
        self._pipe = pipe
        self.probe_max = min(PROBE_MAX, float(shared.config.broker.retry_interval))
        self._heap = HeapTrim()
        self.thread: threading.Thread | None = None
        self._close_wait = 0.5
        self._next_shed = 0.0

    # ---- the thread's life ---------------------------------------------------------------------
    def ensure_started(self) -> None:
        """Under the lock: start the thread in this process (again after a fork)."""
        sh = self.shared
        pid = os.getpid()
        if sh.pid == pid and self.thread is not None:
            return
        if sh.pid and sh.pid != pid:
            # a forked child: the parent's thread, connection and in-flight messages are not ours
            sh.books.clear()
            sh.silent.quiet = False
            sh.silent.blocked_since = 0.0
            sh.conn = None
            sh.quarantine = None
            sh.state = State.CONNECTING
            sh.connecting_since = sh.clock()
            sh.closed = False
            sh.waiting = False
            sh.wire = threading.Lock()  # the parent's thread may have held it at the fork
            sh.wire_error = None
            sh.outcomes, sh.lost, sh.connects, sh.last_error = Counter(), 0, 0, None  # its own figures
            sh.waits = Waits()
        sh.pid = pid
        sh.stopping = False
        sh.wake_r, sh.wake_w = os.pipe()
        os.set_blocking(sh.wake_r, False)
        os.set_blocking(sh.wake_w, False)
        self.thread = threading.Thread(target=self._run, name="messagebus-sender", daemon=True)
        self.thread.start()

    def ours(self) -> bool:
        """True when the thread was started by this process (not a forked child's copy)."""
        return self.shared.pid == os.getpid() and self.thread is not None

    def close(self, wait: float) -> None:
        """Stop the thread and close the connection politely (waiting at most `wait` for the broker's close)."""
        sh = self.shared
        with sh.cond:
            self._close_wait = min(0.5, wait)
            sh.stopping = True
            sh.closed = sh.pid in (0, os.getpid())
            sh.cond.notify_all()
            thread = self.thread if sh.pid == os.getpid() else None
        if thread is not None:
            sh.wake()
            thread.join(wait + 1)

    def status_tick(self) -> None:
        """On the thread: the status file, when a figure changed (status.py)."""
        sh = self.shared
        if sh.status is not None:
            try:
                sh.status.tick((sum(sh.outcomes.values()), sh.lost, sh.state, self.pending(),
                                sh.last_error, sh.waits.count, sh.connects))
            except Exception:  # noqa: BLE001 - never stop the sender for its figures
                log.exception("status file update failed")

    def pending(self) -> int:
        """Messages held (queued, in flight or in quarantine)."""
        sh = self.shared
        with sh.cond:
            q = sh.quarantine
            return len(sh.books) + (len(q) if q else 0)

    # ---- the thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        sh = self.shared
        backoff = PROBE_FIRST
        while True:
            with sh.cond:
                if sh.stopping:
                    break
            self.status_tick()
            flush_causes()  # a count whose minute is over, said from here rather than a hub request
            self._shed()
            self._heap.note(self.pending())
            if sh.conn is None:
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
            with sh.wire:  # released only inside _step's select()
                try:
                    self._step()
                except BrokerError as exc:
                    self.outcomes.failed(exc)
                except Exception as exc:  # noqa: BLE001 - a bug must not end the thread
                    log.exception("unexpected error in the sender thread")
                    self.outcomes.failed(BrokerError(Kind.PROTOCOL, f"unexpected error while sending: {exc!r}"))
        if sh.conn is not None:
            sh.conn.close(self._close_wait)
            sh.conn = None
        for fd in (sh.wake_r, sh.wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _shed(self) -> None:
        sh = self.shared
        now = sh.clock()
        if now >= self._next_shed:
            self._next_shed = now + SHED_EVERY
            with sh.cond:
                sh.books.shed(now)

    def _open(self) -> None:
        sh = self.shared
        was_down = sh.state is State.DOWN
        conn, errors = connect_first(sh.config.endpoints, sh.config.broker.connect_timeout,
                                     lambda ep: self._pipe(sh.config, ep), sh.clock)
        if errors:
            log.warning("connected to %s after: %s", conn.endpoint, "; ".join(str(e) for e in errors))
        conn.on_settled = self.outcomes.settled
        sh.connects += 1
        with sh.cond:
            sh.conn = conn
            sh.state = State.UP
            sh.silent.progress = sh.clock()
            sh.books.window.reset(sh.books.crashed)
            sh.books.crashed = sh.silent.quiet = False
            sh.silent.blocked_since = 0.0
            held = len(sh.books.backlog) + len(sh.books.fresh)
        if was_down:
            log.warning("broker %s is back after %.1fs; sending %d held message(s)", conn.endpoint,
                        sh.clock() - sh.down_since, held)
            for callback in list(sh.on_recovery):
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a recovery hook must not stop the sender
                    log.exception("recovery hook failed")
        for callback in list(sh.on_connect):
            try:
                callback()
            except Exception:  # noqa: BLE001 - a connect hook must not stop the sender
                log.exception("connect hook failed")

    def _pause(self, seconds: float) -> bool:
        """Sleep between probes; True when closing."""
        sh = self.shared
        with sh.cond:
            sh.cond.wait_for(lambda: sh.stopping, seconds)
            return sh.stopping

    def _went_down(self, error: BrokerError) -> None:
        sh = self.shared
        with sh.cond:
            first = sh.state is not State.DOWN
            sh.error = error
            sh.note_error(str(error))
            if first:
                sh.state = State.DOWN
                sh.down_since = sh.clock()
            held = [i.msg for i in sh.books.release_queued(sh.down_error())]
        if first:
            log.error("broker unavailable: %s; probing every %.1fs at most in the background; held: %s",
                      error, self.probe_max, describe(held) if held else "nothing")

    def take(self, credit: int) -> list[Item]:
        """Under the lock: the queued items to start now (books.py); those struck before are set apart."""
        sh = self.shared
        now = sh.clock()
        books = sh.books
        if sh.silent.quiet and books.inflight:
            return []  # nothing more on a connection the broker does not answer (it stays a backlog)
        items, apart = books.take(credit, now, lambda msg_id: bool(sh.strikes.get(msg_id)))
        for item in apart:
            self.outcomes.set_apart(item)  # struck before: never again on the main connection
        if books.fresh and not items and not books.inflight:
            sh.silent.blocked_since = sh.silent.blocked_since or now  # no credit: a broker in flow control
        else:
            sh.silent.blocked_since = 0.0
        return items

    def _step(self) -> None:
        sh = self.shared
        conn = sh.conn
        assert conn is not None
        credit = conn.credit()
        with sh.cond:
            items = self.take(credit)
            if not items and not sh.stopping:
                sh.waiting = True
        if items:
            self.start(conn, items)
            self._check()  # also while new messages keep coming
            return
        fd = conn.fileno()
        timeout = IDLE_TICK
        status_due = sh.status.wake_in() if sh.status is not None else None
        if status_due is not None:
            timeout = min(timeout, max(0.001, status_due))
        with sh.cond:
            now = sh.clock()
            silent = sh.silence(now)
            if silent:  # wake when the broker becomes quiet, and at the hard bound
                if not sh.silent.quiet:
                    timeout = min(timeout, sh.silent.quiet_state_after - silent)
                oldest = sh.books.oldest_sent()
                if oldest is not None:
                    timeout = min(timeout, oldest + sh.hard_stall - now)
            timeout = max(0.001, timeout)
        writing = [fd] if conn.wants_write() else []
        sh.wire.release()  # a submitting thread may start its messages meanwhile (leader.py)
        try:
            readable, _, _ = select.select([fd, sh.wake_r], writing, [], timeout)
        finally:
            sh.wire.acquire()
            with sh.cond:
                sh.waiting = False
                error, sh.wire_error = sh.wire_error, None
        if error is not None:
            raise error  # met by a caller on the leader path on this connection (a bug, or the connection lost)
        if sh.wake_r in readable:
            try:
                os.read(sh.wake_r, 4096)
            except OSError:
                pass
        conn.poll()
        self._check()
        if not readable and not conn.healthy():  # closed, or the heartbeat says the broker is gone
            raise conn.error or BrokerError(Kind.CONNECTION_LOST, "the connection is gone")

    def start(self, conn: Pipe, items: list[Item]) -> None:
        """Holding the wire lock: put `items` on the link and write them."""
        sh = self.shared
        cond, books = sh.cond, sh.books
        now = sh.clock()
        for i, item in enumerate(items):
            item.sent_at = now
            try:
                tag = conn.start(item.msg.payload)
            except BaseException:
                with cond:  # not on the wire: back to the front, not lost
                    books.put_back(items[i:])
                raise
            with cond:
                books.inflight[tag] = item
        conn.poll()

    def _check(self) -> None:
        """Quiet (requests stop waiting, nothing dropped), or past the hard bound (the connection
        is given up)."""
        sh = self.shared
        released: list[Ticket] = []
        with sh.cond:
            now = sh.clock()
            silent = sh.silence(now)
            if not silent:
                return
            count = len(sh.books.inflight)
            if sh.silent.went_quiet(now, silent):
                released = sh.books.hold_back()  # kept: new requests after the broker resumes go first
                error = sh.quiet_error()
                for ticket in released if not sh.patient else []:  # a command waits up to timeout
                    ticket._release(error)
            sent = sh.books.oldest_sent()
            oldest = now if sent is None else sent
        if released:
            sh.note_error(f"no answer from the broker for {silent:.1f}s")
            log_cause("quiet", logging.WARNING, "no answer from the broker for %.1fs with %d message(s) in "
                      "flight; requests return at once, their messages kept (the connection is kept)",
                      silent, count)
        if count and now - oldest >= sh.hard_stall:
            # a frozen broker the heartbeat has not caught (or one message it never settles)
            raise BrokerError(Kind.TIMEOUT, f"no answer from the broker for {silent:.1f}s: a message unsettled "
                              f"for {now - oldest:.1f}s with {count} in flight; the connection is given up")
