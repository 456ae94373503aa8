"""The sender thread's life and loop (delivery/loop.py), against a scripted broker
(tests/support/fakebroker.py): probing and recovery, the hard bound, a forked child, the window
and the link credit, a quiet or slow broker."""

from __future__ import annotations

import time

from devkit.config import until
from koji_messagebus.delivery.quarantine import PROBE_MAX
from koji_messagebus.delivery.ticket import Hold, State
from tests.support.fakebroker import msgs


def test_broker_down_requests_return_at_once_and_messages_go_out_on_recovery(sender, broker, caplog):
    broker.down = True
    s = sender()
    first = s.send(msgs("a"))  # the first connect fails: the request is released at once
    assert first.unsent and s.state is State.DOWN
    timings = []
    for i in range(20):
        start = time.monotonic()
        r = s.send(msgs(f"m{i}"))
        timings.append(time.monotonic() - start)
        assert r.unsent and not r.accepted
    assert max(timings) < 0.2  # at once: a wait would be the timeout (s.timeout), a loaded machine aside
    broker.down = False
    back = time.monotonic()
    assert until(lambda: len(broker.received) == 21, timeout=3)
    assert time.monotonic() - back < PROBE_MAX + 0.3  # noticed within one probe interval
    assert broker.received == [b"a"] + [f"m{i}".encode() for i in range(20)]  # oldest first
    downs = [r for r in caplog.records if "broker unavailable" in r.getMessage()]
    assert len(downs) == 1  # one line for the outage, not one per request or probe

def test_while_the_broker_is_down_owned_rows_past_own_window_leave_memory_for_the_drain(sender, broker):
    """A long outage holds own_window's messages, not the whole outage's: older rows become the
    drain's (row ids) while the broker is still down, and are not sent by the sender at its return."""
    broker.down = True
    s = sender(own_window=0.3)
    s.submit(msgs("r1", "r2"), Hold.OWNED, rows=[1, 2], born=time.monotonic())
    assert until(lambda: s.abandoned_rows == [1, 2], timeout=3)  # within SHED_EVERY after own_window
    assert s.state is State.DOWN and s.pending() == 0
    broker.down = False
    s.submit(msgs("after"))
    assert until(lambda: broker.received == [b"after"], timeout=3)  # the rows are the drain's now
    time.sleep(0.2)
    assert broker.received == [b"after"]


def test_a_connection_past_the_hard_bound_is_replaced_and_the_unsettled_resent(sender, broker):
    broker.hold = True
    s = sender()
    s.shared.hard_stall = 0.2  # timeout + HARD_STALL in production
    ticket = s.submit(msgs("a", "b", "c"))
    assert until(lambda: broker.connects >= 2, timeout=2)  # unsettled for hard_stall: a new connection
    broker.hold = False
    result = ticket.wait(s, time.monotonic() + 2)
    assert {m.msg_id for m in result.accepted} == {"a", "b", "c"}
    # the first unsettled went to the quarantine (its own connection), the rest on the new one
    assert sorted(broker.received) == [b"a", b"b", b"c"]

def test_a_forked_child_starts_its_own_thread(sender, broker):
    import os

    s = sender()
    assert s.send(msgs("parent")).accepted
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread is not here; a new one must start
        code = 1
        try:
            result = s.send(msgs("child"))
            code = 0 if result.accepted and s.shared.pid == os.getpid() else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert s.send(msgs("parent2")).accepted

def test_in_flight_follows_the_window_and_the_link_credit(sender, broker):
    broker.credit = 3
    broker.hold = True
    s = sender()
    s.submit(msgs(*(f"m{i}" for i in range(20))))
    assert until(lambda: broker.pipes and broker.pipes[0].batches)
    assert broker.pipes[0].batches[0] == 3  # the window (8) capped by the credit
    broker.hold = False
    broker.release()
    assert until(lambda: len(broker.received) == 20)
    assert max(broker.pipes[0].batches) <= 3

def test_a_silent_broker_is_quiet_requests_return_and_the_connection_is_kept(sender, broker):
    s = sender(broker_opts={"timeout": 5})
    assert s.send(msgs("warm")).accepted
    broker.hold = True  # from now on the broker says nothing (SIGSTOP)
    start = time.monotonic()
    result = s.send(msgs("a", "b"))  # without the outbox: its messages stay in memory
    assert time.monotonic() - start < s.timeout - 1  # quiet after about a second, not the timeout
    assert broker.connects == 1  # the connection is kept: nothing resent
    assert until(lambda: s.quiet) and result.kept and [m.msg_id for m in result.unsent] == ["a", "b"]
    assert "no answer from the broker" in str(result.error)
    later = s.send(msgs("c"))  # known quiet: returns at once, kept
    assert later.kept and later.unsent and s.quiet
    broker.hold = False
    broker.release()  # the broker resumes: what was in flight settles on the same connection
    assert until(lambda: len(broker.received) == 4)
    assert sorted(broker.received) == [b"a", b"b", b"c", b"warm"]  # each once
    assert broker.connects == 1 and not s.quiet and s.pending() == 0

def test_a_slow_broker_keeps_its_connection_and_nothing_is_resent(sender, broker):
    broker.delay = 1.2  # every settlement 1.2 s after its send
    s = sender(broker_opts={"timeout": 5})
    s.submit(msgs(*(f"m{i}" for i in range(12))))
    assert until(lambda: len(broker.received) == 12, timeout=8)
    assert broker.connects == 1 and len(broker.pipes) == 1
    assert sorted(broker.received) == sorted(f"m{i}".encode() for i in range(12))
