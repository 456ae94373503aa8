"""The sender's callers' side (delivery/sender.py), against a scripted broker
(tests/support/fakebroker.py): shared connection, no waiting for a broker known down or quiet,
outbox holds, the backlog's order, what is handed over after close()."""

from __future__ import annotations

import logging
import threading
import time

from devkit.config import make_config, until
from koji_messagebus.amqp import BrokerError
from koji_messagebus.delivery.sender import SenderThread
from koji_messagebus.delivery.ticket import Hold, State
from tests.support.fakebroker import msgs


def test_concurrent_batches_share_one_connection_and_each_gets_its_own(sender, broker):
    s = sender()
    results = {}
    barrier = threading.Barrier(8)

    def worker(n: int) -> None:
        batch = msgs(*(f"t{n}-{i}" for i in range(5)))
        barrier.wait()
        results[n] = s.send(batch)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert broker.connects == 1
    for n, result in results.items():
        assert [m.msg_id for m in result.accepted] == [f"t{n}-{i}" for i in range(5)]
        assert not result.unsent and result.error is None
    assert len(broker.received) == 40

def test_a_request_waits_at_most_timeout_for_a_silent_broker(sender, broker):
    broker.hold = True
    s = sender()
    start = time.monotonic()
    result = s.send(msgs("a", "b"))
    elapsed = time.monotonic() - start
    assert 0.9 <= elapsed < 1.3  # timeout = 1
    assert [m.msg_id for m in result.unsent] == ["a", "b"] and result.error is not None

def test_with_the_outbox_a_request_stops_waiting_once_the_broker_is_quiet(sender, broker):
    s = sender()
    assert s.send(msgs("warm")).accepted
    broker.hold = True  # from now on the broker says nothing
    start = time.monotonic()
    ticket = s.submit(msgs("a"), Hold.OWNED, rows=[1], born=time.monotonic())
    result = ticket.wait(s, time.monotonic() + 1.0, quiet=True)
    elapsed = time.monotonic() - start
    assert result.unsent and elapsed < 0.2  # quiet_after is a few round trips, at least 25 ms
    broker.hold = False
    broker.release()
    assert until(lambda: 1 in s.settled_rows)  # settled later: its row is deleted by the drainer

def test_connecting_never_costs_a_request_more_than_timeout_whatever_connect_timeout(tmp_path, broker):
    class SlowPipe:
        def __init__(self, config, endpoint):
            self.inner = broker.pipe(config, endpoint)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def open(self, deadline):
            time.sleep(3)  # a silent host: connect_timeout = 5 would take this long and more
            raise BrokerError("unreachable", "silent")

    s = SenderThread(make_config(tmp_path, connect_timeout=5, timeout=0.5), pipe=SlowPipe, connect=broker.connection)
    try:
        times = []
        barrier = threading.Barrier(4)

        def worker():
            barrier.wait()
            start = time.monotonic()
            s.send(msgs(f"w{threading.get_ident()}"))
            times.append(time.monotonic() - start)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert len(times) == 4 and max(times) < 0.7  # each waits one timeout at most, all together
    finally:
        s.close(wait=0)

def test_memory_backlog_is_bounded_and_overflow_is_logged_as_lost(sender, broker, caplog):
    broker.down = True
    s = sender(broker_opts={"max_pending": 5})
    for i in range(8):
        s.send(msgs(f"m{i}"))
    assert s.pending() == 5
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and "lost" in r.getMessage()]
    assert len(lost) == 3 and all("max_pending = 5" in m for m in lost)
    broker.down = False
    assert until(lambda: len(broker.received) == 5)
    assert broker.received == [f"m{i}".encode() for i in range(3, 8)]

def test_an_owned_row_is_sent_only_while_young(sender, broker):
    broker.down = True
    s = sender(own_window=0.3)
    s.submit(msgs("old"), Hold.OWNED, rows=[7], born=time.monotonic())
    s.submit(msgs("young"), Hold.OWNED, rows=[8], born=time.monotonic() + 0.5)
    time.sleep(0.4)
    broker.down = False
    assert until(lambda: b"young" in broker.received)
    assert b"old" not in broker.received  # its owner no longer sends it on its own...
    assert s.take_abandoned_rows() == [7]  # ...but hands it to its drainer (sent under a row lock)
    assert s.take_settled_rows() == [8]

def test_a_locked_row_given_back_by_its_drain_is_not_sent(sender, broker):
    broker.down = True
    s = sender()
    ticket = s.submit(msgs("locked"), Hold.LOCKED, rows=[3])
    result = ticket.wait(s, time.monotonic() + 0.5)
    assert result.unsent and s.pending() == 0  # not kept: the drain's transaction holds the row
    broker.down = False
    assert until(lambda: s.state is State.UP)
    assert s.send(msgs("next")).accepted
    assert broker.received == [b"next"]

def test_with_the_outbox_a_request_does_not_wait_for_a_reconnect_to_a_frozen_broker(tmp_path, broker):
    class FrozenPipe:
        def __init__(self, config, endpoint):
            self.inner = broker.pipe(config, endpoint)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def open(self, deadline):
            time.sleep(1.5)  # TCP accepted, the AMQP handshake never answered (SIGSTOP)
            raise BrokerError("timeout", "no answer")

    s = SenderThread(make_config(tmp_path, timeout=1.0), pipe=FrozenPipe, connect=broker.connection)
    try:
        start = time.monotonic()
        ticket = s.submit(msgs("a", created=time.time()), Hold.OWNED, rows=[1], born=time.monotonic())
        result = ticket.wait(s, time.monotonic() + 1.0, quiet=True)
        assert result.unsent and time.monotonic() - start < 0.3  # the row is durable: no need to wait
    finally:
        s.close(wait=0)

# ---- flow control (issue 18) ----------------------------------------------------------------------

def test_a_new_request_goes_before_the_backlog(sender, broker):
    broker.down = True
    s = sender(broker_opts={"max_pending": 1000})
    backlog = [f"b{i}" for i in range(200)]
    assert s.send(msgs(*backlog)).unsent  # the broker is down: kept, a backlog
    broker.hold = True  # what goes in flight stays there until release()
    broker.down = False
    assert until(lambda: s.state is State.UP and broker.pipes[-1].batches)
    ticket = s.submit(msgs("fresh"))
    # on the wire at once, beside the part of the backlog the window let through
    assert until(lambda: any(p == b"fresh" for _, p, _ in broker.pipes[-1]._started))
    broker.hold = False
    broker.release()
    assert ticket.wait(s, time.monotonic() + 2).accepted
    assert until(lambda: len(broker.received) == 201)
    # the backlog went out oldest first, through the window; the request was not behind it
    assert [p for p in broker.received if p != b"fresh"] == [b.encode() for b in backlog]
    assert broker.received.index(b"fresh") < 10
    assert broker.connects == 1

def test_without_the_outbox_a_request_does_not_wait_for_a_slow_connect(tmp_path, broker):
    class SlowHandshake:
        def __init__(self, config, endpoint):
            self.inner = broker.pipe(config, endpoint)

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def open(self, deadline):
            time.sleep(2.5)  # TCP accepted, the AMQP handshake answered late (a frozen broker resuming)
            self.inner.open(deadline)

    s = SenderThread(make_config(tmp_path, timeout=5.0, connect_timeout=5.0), pipe=SlowHandshake,
                     connect=broker.connection)
    try:
        start = time.monotonic()
        result = s.send(msgs("a"))
        assert time.monotonic() - start < 2.0  # quiet after about a second, not the connect (2.5 s)
        assert result.unsent and result.kept  # kept in memory...
        assert until(lambda: broker.received == [b"a"], timeout=5)  # ...and sent once connected
    finally:
        s.close(wait=0)

def test_a_drains_rows_go_before_the_rest_of_the_backlog(sender, broker):
    broker.down = True
    s = sender(broker_opts={"max_pending": 1000})
    s.send(msgs(*(f"b{i}" for i in range(100))))  # kept while down: the backlog
    broker.hold = True
    broker.down = False
    assert until(lambda: s.state is State.UP and broker.pipes[-1].batches)
    ticket = s.submit(msgs("row"), Hold.LOCKED)  # a drain holding the row's lock, waiting
    broker.hold = False
    broker.release()
    assert ticket.wait(s, time.monotonic() + 2).accepted
    assert until(lambda: len(broker.received) == 101)
    assert broker.received.index(b"row") < 20  # not behind the 100 kept messages

def test_what_is_submitted_after_close_is_handed_to_its_owner_at_once(sender, broker):
    """mod_wsgi runs its shutdown hook while requests still run: a submit after close() must not
    queue into the stopped thread (lost silently) nor wait; the owner gets the items."""
    s = sender()
    assert not s.send(msgs("a")).unsent
    s.close()
    late = []
    s.on_late = late.extend
    start = time.monotonic()
    result = s.submit(msgs("b", "c"), Hold.MEMORY).wait(s, time.monotonic() + 5)
    assert time.monotonic() - start < 1.0
    assert [i.msg.msg_id for i in late] == ["b", "c"]
    assert len(result.unsent) == 2 and result.kept and "exiting" in str(result.error)
    assert broker.received == [b"a"] and not s.pending()

def test_without_an_owner_late_memory_messages_are_logged_as_lost(sender, broker, caplog):
    s = sender()
    s.send(msgs("a"))
    s.close()
    with caplog.at_level(logging.ERROR, logger="koji.plugin.messagebus"):
        s.submit(msgs("b"), Hold.MEMORY)
        s.submit(msgs("c"), Hold.OWNED, rows=[7])  # a row stays in the outbox: not lost
    lost = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(lost) == 1 and "1 message(s)" in lost[0] and s.lost == 1
