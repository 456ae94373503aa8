"""What becomes of a started message (delivery/outcomes.py), against a scripted broker
(tests/support/fakebroker.py): refused, set apart as a poison suspect, resent after a crash."""

from __future__ import annotations

import logging
import time

from devkit.config import until
from koji_messagebus.amqp import BrokerError, Kind, Settlement
from koji_messagebus.delivery.result import SendResult
from koji_messagebus.delivery.ticket import Hold, Item, Ticket
from tests.support.fakebroker import msgs


def test_a_poison_message_is_set_apart_and_the_rest_keeps_flowing(sender, broker, caplog):
    poison = msgs("poison", type="BuildStateChange")[0]
    broker.poison = {poison.payload}
    s = sender()
    before = msgs("a", "b")
    after = msgs("c", "d")
    ticket = s.submit(before + [poison] + after)
    result = ticket.wait(s, time.monotonic() + 1)
    assert {m.msg_id for m in result.accepted} >= {"a", "b", "c", "d"}
    # more traffic: the main connection settles others while the poison fails alone (strikes count)
    deadline = time.monotonic() + 10
    n = 0
    while time.monotonic() < deadline and not any("poison message" in r.getMessage() for r in caplog.records):
        s.send(msgs(f"more{n}"))
        n += 1
        time.sleep(0.02)
    lost = [r.getMessage() for r in caplog.records if "poison message" in r.getMessage()]
    assert len(lost) == 1
    assert "BuildStateChange" in lost[0] and "koji.event.BuildStateChange.poison" in lost[0]
    assert poison.payload not in broker.received
    assert s.pending() == 0

def test_a_broker_wide_failure_strikes_nobody(sender, broker):
    """A suspect that fails alone while the main connection settles nothing is not struck."""
    broker.hold = True
    s = sender()
    s.shared.hard_stall = 0.1
    s.submit(msgs("a"))
    assert until(lambda: broker.connects >= 2, timeout=2)
    broker.down = True  # now everything fails: the quarantine's tries must not count
    time.sleep(1.0)
    assert s.shared.strikes.get("a", 0) <= 1  # the one strike of being first unsettled, none from quarantine
    broker.down = False
    broker.hold = False
    broker.release()
    assert until(lambda: b"a" in broker.received, timeout=8)

def test_a_reconnect_is_not_others_settling_for_the_quarantine(sender):
    """A suspect's failed try alone is struck only when the main connection settled messages since
    its last try: a (re)connect alone (it restarts the silence clock) is no sign that the broker
    takes the rest (a CI run on Python 3.9 struck a suspect twice while the broker was down)."""
    s = sender()
    sh, outcomes = s.shared, s.loop.outcomes
    msg = msgs("suspect")[0]
    item = Item(msg, Ticket(Hold.MEMORY, [msg]), tried_at=sh.clock())
    failed = SendResult(error=BrokerError(Kind.UNREACHABLE, "down"))
    time.sleep(0.01)
    sh.silent.progress = sh.clock()  # what a (re)connect does (loop.py _open)
    assert outcomes.quarantine_result(item, failed) is False
    assert sh.strikes.get("suspect") == 0
    time.sleep(0.01)
    other = Item(msgs("other")[0], Ticket(Hold.MEMORY, msgs("other")), sent_at=sh.clock())
    sh.books.inflight["t1"] = other
    outcomes.settled("t1", Settlement("accepted"))  # the main connection settles another message
    assert outcomes.quarantine_result(item, failed) is False
    assert sh.strikes.get("suspect") == 1


def test_refused_messages_are_lost_with_type_key_and_reason(sender, broker, caplog):
    bad = msgs("bad")[0]
    broker.reject = {bad.payload}
    s = sender()
    result = s.send([bad] + msgs("good"))
    assert [m.msg_id for m, _ in result.lost] == ["bad"] and [m.msg_id for m in result.accepted] == ["good"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("lost" in e and "Tag x1" in e and "koji.event.Tag.bad" in e and "rejected" in e for e in errors)

def test_after_a_crash_the_next_connection_starts_with_one_message(sender, broker):
    poison = msgs("poison")[0]
    broker.poison = {poison.payload}
    broker.hold = True
    s = sender()
    s.submit([poison] + msgs(*(f"m{i}" for i in range(30))))
    assert until(lambda: broker.pipes and broker.pipes[0].batches)
    broker.hold = False
    broker.release()  # the poison kills the session with the window in flight
    assert until(lambda: len(broker.received) == 30)
    first, second = broker.pipes[0], broker.pipes[1]
    assert first.batches[0] == 8  # only the window was on the wire when it died: at most that is resent
    assert second.batches[0] == 1  # the next connection starts with one message, then grows
    assert poison.payload not in broker.received
