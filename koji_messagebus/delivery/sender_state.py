"""What the sender's parts share: the connection, its wire lock, the condition that guards the rest,
the books and the figures.

Why one plain object rather than a class split into mixins: the thread's loop (loop.py), the
leader path (leader.py), the settlement outcomes (outcomes.py) and the callers' side (sender.py)
each hold it explicitly, so mypy checks every use and each module says what it touches.  Fields
marked "under `cond`" are read and written holding it; `conn` is used (proton is not thread-safe)
only by whoever holds `wire`.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable

from koji_messagebus.amqp import BrokerError, Kind
from koji_messagebus.config.settings import Config
from koji_messagebus.delivery.books import Books
from koji_messagebus.delivery.pipe import Pipe
from koji_messagebus.delivery.quarantine import Quarantine
from koji_messagebus.delivery.quiet import HARD_STALL, Silence
from koji_messagebus.delivery.status import StatusFile, Waits
from koji_messagebus.delivery.strikes import Strikes
from koji_messagebus.delivery.ticket import State


class SenderState:
    """See the module docstring.  One per SenderThread."""

    def __init__(self, config: Config, clock: Callable[[], float], own_window: float | None):
        self.config = config
        self.clock = clock
        self.timeout = float(config.broker.timeout)
        #: a message unsettled this long gives its connection up (see HARD_STALL)
        self.hard_stall = self.timeout + HARD_STALL
        self.cond = threading.Condition()
        #: under `cond`: queued, in flight, the window and the row lists (books.py)
        self.books = Books(int(config.broker.max_pending), self.timeout if own_window is None else own_window)
        self.silent = Silence()  # under `cond`: quiet or stalled (quiet.py)
        self.state = State.CONNECTING
        self.connecting_since = clock()
        self.error: BrokerError | None = None
        self.down_since = 0.0
        self.conn: Pipe | None = None
        self.pid = 0  # the process that started the thread (0: not started)
        self.wake_r = self.wake_w = -1
        self.waiting = False  # the thread is in select(): submit() writes a wake byte, or sends itself
        #: held by whoever uses the connection (proton is not thread-safe): the thread, except while in
        #: select(); a submitting thread takes it (never blocking) to start its messages itself
        self.wire = threading.Lock()
        self.wire_error: BaseException | None = None  # met by the leader path: the thread's to handle
        self.stopping = False
        self.closed = False  # close() was called in this process: a later submit() takes the late path
        #: a command's sender (cli/command_sender.py): send() waits up to `timeout` even for a quiet
        #: broker (a slow broker is not a dead one; a hub request returns, a command would fail)
        self.patient = False
        self.strikes = Strikes()  # poison suspects (strikes.py)
        self.quarantine: Quarantine | None = None
        #: called (on the thread, without the lock) when the broker is back after being down
        self.on_recovery: list[Callable[[], None]] = []
        #: called (on the thread, without the lock) after every connect: the first, a recovery (spool.py)
        self.on_connect: list[Callable[[], None]] = []
        self.connects = 0
        self.lost = 0
        #: status figures: settlements by outcome, the last problem (wall time, text), request waits,
        #: and the process's status file (set by the Runtime; None: no file)
        self.outcomes: Counter[str] = Counter()
        self.last_error: tuple[float, str] | None = None
        self.waits = Waits()
        self.status: StatusFile | None = None

    def silence(self, now: float) -> float:
        """Under `cond`: the broker's silence (quiet.py)."""
        return self.silent.silence(now, self.books.oldest_sent())

    def quiet_error(self) -> BrokerError:
        """Under `cond`: why a request returned while the broker is quiet."""
        return self.silent.error(self.clock(), self.books.oldest_sent())

    def down_error(self) -> BrokerError:
        since = self.clock() - self.down_since
        return BrokerError(Kind.BREAKER_OPEN, f"broker unavailable for {since:.1f}s (probed in the background; "
                           f"last error: {self.error})")

    def note_error(self, text: str) -> None:
        self.last_error = (time.time(), text)

    def wake(self) -> None:
        """Wake the thread out of select()."""
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass  # the pipe is full: the thread is awake anyway
