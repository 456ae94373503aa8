"""The leader path (issue 17): on an idle connection (the sender thread in select(), nothing
queued) a request starts its own messages and reads its own settlements, instead of handing them
to the thread and being woken by it: two thread hand-offs fewer (docs/reliability.md).

Why it is safe: the wire lock keeps proton to one thread at a time.  The thread holds it except
inside select(); a request only takes it when free (never blocking), and gives way at once when
anything else needs the thread (a wake byte: another request, close()).  An error met here is
never raised in a hub thread: it is left for the thread (`wire_error`), which handles it as its
own.  Opportunistic: the thread may leave select() as a request starts, and then it sends as usual.
"""

from __future__ import annotations

import select

from koji_messagebus.delivery.loop import SenderLoop
from koji_messagebus.delivery.pipe import Pipe
from koji_messagebus.delivery.sender_state import SenderState
from koji_messagebus.delivery.ticket import Ticket


class Leader:
    """See the module docstring.  Starts messages as the thread's `loop` would (take, start)."""

    def __init__(self, shared: SenderState, loop: SenderLoop):
        self.shared = shared
        self.loop = loop

    def start_here(self, ticket: Ticket) -> None:
        """On a submitting thread, holding the wire lock while the sender thread waits in select():
        start what is queued on the link as the thread would (window, strikes; books.take), and write
        it.  The thread wakes on the broker's answer and reads the settlements as always.  Anything
        left (no credit, a partial write, an error) is the thread's: it is woken."""
        sh = self.shared
        conn = sh.conn
        assert conn is not None
        try:
            credit = conn.credit()
            with sh.cond:
                items = self.loop.take(credit)
            self.loop.start(conn, items)
            if not conn.wants_write():
                with sh.cond:
                    if not sh.books.fresh and not sh.books.backlog:
                        ticket.lead = conn  # all of them on the wire: it may read its settlements itself
                        return
        except Exception as exc:  # noqa: BLE001 - never in a hub thread: the thread handles it as its own
            with sh.cond:
                sh.wire_error = exc
        with sh.cond:
            wake, sh.waiting = sh.waiting, False
        if wake:
            sh.wake()

    def lead(self, ticket: Ticket, conn: Pipe, until: float) -> None:
        """On the caller's thread, for a ticket started by start_here, while the sender thread still
        waits in select(): read the broker's answer here (until `until`, monotonic) rather than be
        woken by the thread (a hand-off back).  Holds the wire lock throughout, so the thread (which
        wakes on the same socket) waits for it; gives way at once when anything else needs the thread
        (a wake byte: another request, close()), and for good at `until`."""
        sh = self.shared
        wire = sh.wire
        if not wire.acquire(blocking=False):
            return
        try:
            with sh.cond:
                if not (sh.waiting and sh.conn is conn):  # woken meanwhile, or another connection
                    return
            fd = conn.fileno()
            while not ticket._event.is_set():
                left = until - sh.clock()
                if left <= 0:
                    return
                readable, _, _ = select.select([fd, sh.wake_r], [], [], left)
                if sh.wake_r in readable or not readable:
                    return
                conn.poll()
        except Exception as exc:  # noqa: BLE001 - never in a hub thread: the thread handles it as its own
            with sh.cond:
                sh.wire_error = exc
                wake, sh.waiting = sh.waiting, False
            if wake:
                sh.wake()
        finally:
            wire.release()
